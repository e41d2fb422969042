// Google Benchmark of the pgoutput decoder over captured walsender streams (test/data/bench_*.bin).
//
// A stream file is a sequence of frames: a 4-byte big-endian length, then one CopyData message as
// the walsender sent it ('w' XLogData or 'k' keepalive). Each stream is loaded once; an iteration
// decodes every frame's envelope and pgoutput message with a fresh Decoder and reads every column
// value of every tuple, as a consumer would. Bytes are CopyData bytes (the frame lengths are not
// counted), items are CopyData messages, rows are Insert, Update and Delete messages.
//
// The streams are read from $LOGICAL_AUDIT_BENCH_DATA when set, else from the source tree's test/data.
#include "pgoutput/decoder.hpp"

#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

using namespace logical_audit::pgoutput;

namespace {

const char *const kStreamNames[] = {"bench_narrow_inserts", "bench_wide_rows", "bench_updates_full"};

// One CopyData message within a loaded stream.
struct Frame {
	size_t offset;
	size_t size;
};

// A stream file held in memory, its frames, and what one pass over it holds.
struct Stream {
	std::string name;
	std::string error; // why the stream cannot be benchmarked; empty when it can
	std::vector<uint8_t> bytes;
	std::vector<Frame> frames;
	size_t copy_data_bytes = 0;
	size_t rows = 0;
};

// What one decoding pass over a stream saw.
struct Pass {
	size_t rows = 0;
	size_t touched = 0; // sum over all column values of size and kind, so no read is dead code
	size_t failed_frame = 0;
	DecodeError error;
	bool ok = true;
};

// The directory holding the streams.
std::string data_dir() {
	const char *env = std::getenv("LOGICAL_AUDIT_BENCH_DATA");
	return env != nullptr && *env != '\0' ? std::string(env) : std::string(TEST_DATA_DIR);
}

// Reads a whole file into out; false when it cannot be read.
bool read_file(const std::string &path, std::vector<uint8_t> &out) {
	std::ifstream in(path, std::ios::binary | std::ios::ate);
	if (!in)
		return false;
	out.resize(static_cast<size_t>(in.tellg()));
	in.seekg(0);
	return static_cast<bool>(in.read(reinterpret_cast<char *>(out.data()), static_cast<std::streamsize>(out.size())));
}

// Splits the loaded bytes into frames; false when the last frame is truncated.
bool split_frames(Stream &s) {
	size_t pos = 0;
	const size_t end = s.bytes.size();
	while (pos < end) {
		if (end - pos < 4)
			return false;
		const uint8_t *p = s.bytes.data() + pos;
		size_t len = static_cast<size_t>(p[0]) << 24 | static_cast<size_t>(p[1]) << 16 |
		             static_cast<size_t>(p[2]) << 8 | static_cast<size_t>(p[3]);
		pos += 4;
		if (len > end - pos)
			return false;
		s.frames.push_back({pos, len});
		s.copy_data_bytes += len;
		pos += len;
	}
	return true;
}

// Adds the size and kind of every column value of a tuple to sum.
inline void touch_tuple(const TupleData &tuple, size_t &sum) {
	for (ColumnValue c : tuple)
		sum += c.data.size() + static_cast<size_t>(c.kind);
}

// Reads the tuples of a row message; counts the row. Other messages are left as decoded.
inline void touch_message(const Message &m, Pass &pass) {
	if (const Insert *i = std::get_if<Insert>(&m)) {
		touch_tuple(i->new_tuple, pass.touched);
	} else if (const Update *u = std::get_if<Update>(&m)) {
		touch_tuple(u->old_tuple, pass.touched);
		touch_tuple(u->new_tuple, pass.touched);
	} else if (const Delete *d = std::get_if<Delete>(&m)) {
		touch_tuple(d->old_tuple, pass.touched);
	} else {
		return;
	}
	pass.rows++;
}

// Decodes one frame: the CopyData envelope, then the pgoutput message of an XLogData.
inline bool decode_frame(Decoder &decoder, const uint8_t *data, size_t size, Pass &pass) {
	CopyData envelope;
	if (!decode_copy_data(data, size, envelope, pass.error))
		return false;
	const XLogData *xlog = std::get_if<XLogData>(&envelope);
	if (xlog == nullptr)
		return true;
	Message message;
	if (!decoder.decode(xlog->data, xlog->size, message, pass.error))
		return false;
	touch_message(message, pass);
	return true;
}

// Decodes every frame of a stream from the start of a new connection.
Pass decode_stream(const Stream &s) {
	Pass pass;
	Decoder decoder;
	const uint8_t *base = s.bytes.data();
	for (size_t i = 0; i < s.frames.size(); i++) {
		if (!decode_frame(decoder, base + s.frames[i].offset, s.frames[i].size, pass)) {
			pass.ok = false;
			pass.failed_frame = i;
			break;
		}
	}
	return pass;
}

// Describes a failed pass for SkipWithError.
std::string describe_failure(const Pass &pass) {
	return "frame " + std::to_string(pass.failed_frame) + ": " + pass.error.message + " at offset " +
	       std::to_string(pass.error.offset) + ": " + pass.error.reason;
}

// Loads, frames and checks one stream file; sets s.error when it cannot be benchmarked.
void load_stream(Stream &s, const std::string &dir) {
	std::string path = dir + "/" + s.name + ".bin";
	if (!read_file(path, s.bytes)) {
		s.error = "cannot read " + path;
		return;
	}
	if (!split_frames(s) || s.frames.empty()) {
		s.error = path + ": empty or truncated frame";
		return;
	}
	Pass pass = decode_stream(s);
	if (!pass.ok)
		s.error = path + ": " + describe_failure(pass);
	s.rows = pass.rows;
}

// The benchmark of one stream: whole-stream decoding passes.
void bm_decode(benchmark::State &state, const Stream *s) {
	if (!s->error.empty()) {
		state.SkipWithError(s->error.c_str());
		return;
	}
	for (auto _ : state) {
		Pass pass = decode_stream(*s);
		benchmark::DoNotOptimize(pass.touched);
		if (!pass.ok) {
			state.SkipWithError("decoding failed in a timed pass");
			return;
		}
	}
	auto passes = static_cast<int64_t>(state.iterations());
	state.SetBytesProcessed(passes * static_cast<int64_t>(s->copy_data_bytes));
	state.SetItemsProcessed(passes * static_cast<int64_t>(s->frames.size()));
	state.counters["rows/s"] =
	    benchmark::Counter(static_cast<double>(passes) * static_cast<double>(s->rows), benchmark::Counter::kIsRate);
	state.SetLabel(std::to_string(s->frames.size()) + " msgs, " + std::to_string(s->rows) + " rows");
}

} // namespace

// Loads the streams, then runs the benchmarks selected on the command line.
int main(int argc, char **argv) {
	benchmark::Initialize(&argc, argv);
	if (benchmark::ReportUnrecognizedArguments(argc, argv))
		return 1;
	std::string dir = data_dir();
	benchmark::AddCustomContext("stream_dir", dir);
	static std::vector<Stream> streams(std::size(kStreamNames));
	for (size_t i = 0; i < streams.size(); i++) {
		streams[i].name = kStreamNames[i];
		load_stream(streams[i], dir);
		benchmark::RegisterBenchmark(("decode/" + streams[i].name).c_str(), bm_decode, &streams[i])
		    ->Unit(benchmark::kMicrosecond)
		    ->UseRealTime();
	}
	benchmark::RunSpecifiedBenchmarks();
	benchmark::Shutdown();
	return 0;
}
