// capture_stream: records the CopyData messages of a logical replication stream into a file.
//
// It runs START_REPLICATION on a replication=database connection, answers keepalives that ask for
// a reply, and writes every XLogData and keepalive it receives, each framed as a 4-byte big-endian
// length followed by the raw CopyData bytes, until the stream reaches --endpos. The bytes are the
// golden input of the decoder's unit tests (test/data).
#include "pgoutput/decoder.hpp"

#include <libpq-fe.h>

#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <poll.h>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace logical_audit::capture {

using pgoutput::Lsn;

struct Options {
	std::string conninfo;
	std::string slot;
	Lsn startpos = 0;
	Lsn endpos = 0;
	bool have_endpos = false;
	std::vector<std::pair<std::string, std::string>> plugin_options;
	std::string outfile;
	int timeout_seconds = 120;
};

// Raised for any failure; main prints it and exits nonzero.
struct Failure : std::runtime_error {
	using std::runtime_error::runtime_error;
};

// Prints the command line synopsis.
void usage(FILE *out) {
	std::fprintf(out, "usage: capture_stream -d CONNINFO -S SLOT [--startpos LSN] --endpos LSN\n"
	                  "                      [-o NAME=VALUE]... -f OUTFILE [--timeout SECONDS]\n"
	                  "Records a pgoutput replication stream as length-prefixed CopyData messages.\n");
}

// Parses an LSN written as two hexadecimal halves, "16/B374D848".
Lsn parse_lsn(const std::string &text) {
	unsigned int hi = 0, lo = 0;
	char extra = 0;
	if (std::sscanf(text.c_str(), "%X/%X%c", &hi, &lo, &extra) != 2)
		throw Failure("invalid LSN \"" + text + "\"");
	return (static_cast<Lsn>(hi) << 32) | lo;
}

// Formats an LSN the way PostgreSQL prints it.
std::string format_lsn(Lsn lsn) {
	char buf[32];
	std::snprintf(buf, sizeof buf, "%X/%X", static_cast<unsigned>(lsn >> 32), static_cast<unsigned>(lsn));
	return buf;
}

// Splits a NAME=VALUE plugin option.
std::pair<std::string, std::string> parse_plugin_option(const std::string &text) {
	size_t eq = text.find('=');
	if (eq == std::string::npos || eq == 0)
		throw Failure("plugin option \"" + text + "\" is not NAME=VALUE");
	return {text.substr(0, eq), text.substr(eq + 1)};
}

// Returns the argument after argv[i], advancing i.
std::string next_arg(int argc, char **argv, int &i) {
	if (i + 1 >= argc)
		throw Failure(std::string("option ") + argv[i] + " needs a value");
	return argv[++i];
}

// Parses the command line into options; checks that the required ones are present.
Options parse_args(int argc, char **argv) {
	Options o;
	for (int i = 1; i < argc; i++) {
		std::string a = argv[i];
		if (a == "-d" || a == "--dbname")
			o.conninfo = next_arg(argc, argv, i);
		else if (a == "-S" || a == "--slot")
			o.slot = next_arg(argc, argv, i);
		else if (a == "--startpos")
			o.startpos = parse_lsn(next_arg(argc, argv, i));
		else if (a == "--endpos") {
			o.endpos = parse_lsn(next_arg(argc, argv, i));
			o.have_endpos = true;
		} else if (a == "-o" || a == "--option")
			o.plugin_options.push_back(parse_plugin_option(next_arg(argc, argv, i)));
		else if (a == "-f" || a == "--file")
			o.outfile = next_arg(argc, argv, i);
		else if (a == "--timeout")
			o.timeout_seconds = std::atoi(next_arg(argc, argv, i).c_str());
		else
			throw Failure("unknown argument \"" + a + "\"");
	}
	if (o.conninfo.empty() || o.slot.empty() || !o.have_endpos || o.outfile.empty())
		throw Failure("-d, -S, --endpos and -f are required");
	if (o.timeout_seconds <= 0)
		throw Failure("--timeout must be a positive number of seconds");
	return o;
}

// Quotes a string literal for the replication command grammar, which only knows doubled quotes.
std::string quote_literal(const std::string &s) {
	std::string out = "'";
	for (char c : s) {
		if (c == '\'')
			out += '\'';
		out += c;
	}
	return out + "'";
}

// Quotes an identifier (slot or option name).
std::string quote_identifier(const std::string &s) {
	std::string out = "\"";
	for (char c : s) {
		if (c == '"')
			out += '"';
		out += c;
	}
	return out + "\"";
}

// Builds the START_REPLICATION command for the slot, start position and plugin options.
std::string start_command(const Options &o) {
	std::string cmd = "START_REPLICATION SLOT " + quote_identifier(o.slot) + " LOGICAL " + format_lsn(o.startpos);
	if (o.plugin_options.empty())
		return cmd;
	cmd += " (";
	for (size_t i = 0; i < o.plugin_options.size(); i++) {
		if (i > 0)
			cmd += ", ";
		cmd += quote_identifier(o.plugin_options[i].first) + " " + quote_literal(o.plugin_options[i].second);
	}
	return cmd + ")";
}

// The protocol version requested by the plugin options (1 when absent).
int protocol_version(const Options &o) {
	for (const auto &opt : o.plugin_options)
		if (opt.first == "proto_version")
			return std::atoi(opt.second.c_str());
	return 1;
}

// Owns the connection; closes it on every path.
class Connection {
public:
	explicit Connection(const std::string &conninfo) : conn_(PQconnectdb(conninfo.c_str())) {
		if (conn_ == nullptr)
			throw Failure("out of memory while connecting");
		if (PQstatus(conn_) != CONNECTION_OK)
			throw Failure(std::string("could not connect: ") + PQerrorMessage(conn_));
	}
	~Connection() { PQfinish(conn_); }
	Connection(const Connection &) = delete;
	Connection &operator=(const Connection &) = delete;
	PGconn *get() const { return conn_; }
	std::string error() const { return PQerrorMessage(conn_); }

private:
	PGconn *conn_;
};

// Writes the framed messages; removes the file unless finished.
class FrameWriter {
public:
	explicit FrameWriter(const std::string &path) : path_(path), file_(std::fopen(path.c_str(), "wb")) {
		if (file_ == nullptr)
			throw Failure("could not open \"" + path + "\": " + std::strerror(errno));
	}
	~FrameWriter() {
		if (file_ != nullptr) {
			std::fclose(file_);
			std::remove(path_.c_str());
		}
	}
	FrameWriter(const FrameWriter &) = delete;
	FrameWriter &operator=(const FrameWriter &) = delete;

	// Appends one CopyData message with its length prefix.
	void write(const char *data, size_t size) {
		uint8_t len[4] = {static_cast<uint8_t>(size >> 24), static_cast<uint8_t>(size >> 16),
		                  static_cast<uint8_t>(size >> 8), static_cast<uint8_t>(size)};
		if (std::fwrite(len, 1, 4, file_) != 4 || std::fwrite(data, 1, size, file_) != size)
			throw Failure("could not write \"" + path_ + "\": " + std::strerror(errno));
		frames_++;
	}

	// Flushes and closes the file, keeping it.
	void finish() {
		FILE *f = file_;
		file_ = nullptr;
		if (std::fclose(f) != 0)
			throw Failure("could not close \"" + path_ + "\": " + std::strerror(errno));
	}

	size_t frames() const { return frames_; }

private:
	std::string path_;
	FILE *file_;
	size_t frames_ = 0;
};

// Follows transaction boundaries in the decoded stream so the capture can prove it ends on one.
class TransactionTracker {
public:
	explicit TransactionTracker(int protocol_version) : decoder_(protocol_version) {}

	// Decodes one pgoutput message and updates whether a transaction or stream block is open.
	void feed(const uint8_t *data, size_t size) {
		pgoutput::Message m;
		pgoutput::DecodeError e;
		if (!decoder_.decode(data, size, m, e))
			throw Failure(std::string("could not decode ") + e.message + " message: " + e.reason + " at offset " +
			              std::to_string(e.offset));
		char type = static_cast<char>(data[0]);
		if (type == 'B' || type == 'b')
			in_transaction_ = true;
		else if (type == 'C' || type == 'P' || type == 'K' || type == 'r')
			in_transaction_ = false;
		messages_++;
	}

	// True when the stream so far ends between transactions and outside a streamed block.
	bool at_boundary() const { return !in_transaction_ && !decoder_.in_stream(); }
	size_t messages() const { return messages_; }

private:
	pgoutput::Decoder decoder_;
	bool in_transaction_ = false;
	size_t messages_ = 0;
};

// The state of one capture run.
class Capture {
public:
	Capture(const Options &o, Connection &c, FrameWriter &w)
	    : opts_(o), conn_(c), writer_(w), tracker_(protocol_version(o)) {}

	// Starts streaming and records messages until endpos is reached.
	void run() {
		start();
		deadline_ = std::time(nullptr) + opts_.timeout_seconds;
		while (!done_)
			receive_one();
		end_copy();
	}

	const TransactionTracker &tracker() const { return tracker_; }

private:
	// Sends START_REPLICATION and checks that the server entered COPY BOTH mode.
	void start() {
		PGresult *res = PQexec(conn_.get(), start_command(opts_).c_str());
		ExecStatusType status = PQresultStatus(res);
		PQclear(res);
		if (status != PGRES_COPY_BOTH)
			throw Failure("could not start replication: " + conn_.error());
	}

	// Waits for and handles one CopyData message (or returns after waiting for input).
	void receive_one() {
		char *buf = nullptr;
		int len = PQgetCopyData(conn_.get(), &buf, 1);
		if (len == 0) {
			wait_for_input();
			return;
		}
		if (len == -1)
			throw Failure("the server ended the stream before endpos " + format_lsn(opts_.endpos));
		if (len < 0)
			throw Failure("could not read copy data: " + conn_.error());
		try {
			handle(reinterpret_cast<const uint8_t *>(buf), static_cast<size_t>(len));
		} catch (...) {
			PQfreemem(buf);
			throw;
		}
		PQfreemem(buf);
	}

	// Blocks until the socket is readable or the deadline passes, then reads what arrived.
	void wait_for_input() {
		long left = static_cast<long>(deadline_ - std::time(nullptr));
		if (left <= 0)
			throw Failure("timed out before reaching endpos " + format_lsn(opts_.endpos) + " (received up to " +
			              format_lsn(received_) + ")");
		pollfd pfd{PQsocket(conn_.get()), POLLIN, 0};
		if (poll(&pfd, 1, static_cast<int>(left * 1000)) < 0 && errno != EINTR)
			throw Failure(std::string("poll failed: ") + std::strerror(errno));
		if (PQconsumeInput(conn_.get()) == 0)
			throw Failure("could not receive data: " + conn_.error());
	}

	// Records one CopyData message and decides whether the capture is complete.
	void handle(const uint8_t *data, size_t size) {
		pgoutput::CopyData cd;
		pgoutput::DecodeError e;
		if (!pgoutput::decode_copy_data(data, size, cd, e))
			throw Failure(std::string("malformed ") + e.message + ": " + e.reason);
		if (const auto *k = std::get_if<pgoutput::Keepalive>(&cd))
			handle_keepalive(*k, data, size);
		else
			handle_xlogdata(std::get<pgoutput::XLogData>(cd), data, size);
	}

	// Writes a keepalive, replies when asked, and stops once the server has sent endpos.
	void handle_keepalive(const pgoutput::Keepalive &k, const uint8_t *data, size_t size) {
		writer_.write(reinterpret_cast<const char *>(data), size);
		if (k.reply_requested)
			send_status(false);
		if (k.wal_end >= opts_.endpos)
			done_ = true;
	}

	// Writes an XLogData message unless it lies past endpos, as pg_recvlogical does.
	void handle_xlogdata(const pgoutput::XLogData &x, const uint8_t *data, size_t size) {
		if (x.wal_start > opts_.endpos) {
			done_ = true;
			return;
		}
		tracker_.feed(x.data, x.size);
		writer_.write(reinterpret_cast<const char *>(data), size);
		if (x.wal_start > received_)
			received_ = x.wal_start;
		if (x.wal_start >= opts_.endpos)
			done_ = true;
	}

	// Sends a standby status update reporting everything received as written, flushed, applied.
	void send_status(bool reply_requested) {
		uint8_t msg[pgoutput::kStandbyStatusSize];
		pgoutput::encode_standby_status(msg, received_, received_, received_, pgoutput::now_timestamp(),
		                                reply_requested);
		if (PQputCopyData(conn_.get(), reinterpret_cast<const char *>(msg), sizeof msg) <= 0 ||
		    PQflush(conn_.get()) != 0)
			throw Failure("could not send standby status update: " + conn_.error());
	}

	// Ends the copy: sends CopyDone, drains what the server still sends, and checks the results.
	void end_copy() {
		send_status(false);
		if (PQputCopyEnd(conn_.get(), nullptr) <= 0 || PQflush(conn_.get()) != 0)
			throw Failure("could not end copy: " + conn_.error());
		char *buf = nullptr;
		int len;
		while ((len = PQgetCopyData(conn_.get(), &buf, 0)) > 0)
			PQfreemem(buf);
		if (len == -2)
			throw Failure("could not read copy data after copy end: " + conn_.error());
		check_results();
	}

	// Reads the command results that follow the copy; any error fails the capture.
	void check_results() {
		PGresult *res;
		while ((res = PQgetResult(conn_.get())) != nullptr) {
			ExecStatusType status = PQresultStatus(res);
			PQclear(res);
			if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK)
				throw Failure("replication ended with an error: " + conn_.error());
		}
	}

	const Options &opts_;
	Connection &conn_;
	FrameWriter &writer_;
	TransactionTracker tracker_;
	Lsn received_ = 0;
	std::time_t deadline_ = 0;
	bool done_ = false;
};

// Runs one capture and reports what was written.
void run(const Options &o) {
	Connection conn(o.conninfo);
	FrameWriter writer(o.outfile);
	Capture capture(o, conn, writer);
	capture.run();
	if (!capture.tracker().at_boundary())
		throw Failure("the capture ends inside a transaction or streamed block; is endpos too early?");
	writer.finish();
	std::printf("%s: %zu copy data messages, %zu pgoutput messages, up to %s\n", o.outfile.c_str(), writer.frames(),
	            capture.tracker().messages(), format_lsn(o.endpos).c_str());
}

} // namespace logical_audit::capture

// Parses the command line and runs the capture; exits 1 on failure, 2 on bad usage.
int main(int argc, char **argv) {
	using namespace logical_audit::capture;
	if (argc == 2 && (std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0)) {
		usage(stdout);
		return 0;
	}
	Options opts;
	try {
		opts = parse_args(argc, argv);
	} catch (const Failure &e) {
		std::fprintf(stderr, "capture_stream: %s\n", e.what());
		usage(stderr);
		return 2;
	}
	try {
		run(opts);
	} catch (const std::exception &e) {
		std::fprintf(stderr, "capture_stream: %s\n", e.what());
		return 1;
	}
	return 0;
}
