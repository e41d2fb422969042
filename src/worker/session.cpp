// A replication session: connects to the upstream, starts pgoutput from the replication origin's
// position, audits each transaction through the writer, answers keepalives and reports progress.
//
// Upstream transactions are grouped: the local transaction stays open across upstream commits while
// more messages are ready, up to kGroupTransactions, kGroupChanges or kGroupMs, then commits with
// the origin's progress at the last one's end. Local commits are asynchronous (the worker runs with
// synchronous_commit off); like PostgreSQL's apply worker, the session remembers each commit's end
// of WAL with the upstream position it covers, and reports an upstream position as flushed (to the
// upstream and in status) only once the local WAL is flushed past its commit. When everything
// received is committed and flushed, it is the latest position the upstream reported.
//
// Everything here is plain data: an ERROR anywhere unwinds to the worker's retry loop, which calls
// session_cleanup().
#include "audit/row_image.hpp"
#include "pgoutput/decoder.hpp"
#include "stream/connection.hpp"
#include "worker/session.hpp"

#include "pg.hpp"

namespace logical_audit::worker {

namespace {

namespace po = pgoutput;

// A local transaction holds at most this many upstream transactions (or lone messages), this many
// changes, and stays open at most this long (while messages keep arriving).
constexpr int kGroupTransactions = 1000;
constexpr int64 kGroupChanges = 100000;
constexpr int kGroupMs = 200;

// Local commits whose flush is awaited, at most; a newer one then takes the place of the last.
constexpr int kMaxPending = 256;

// While local commits await their flush, the session looks at the flush position this often.
constexpr long kFlushPollMs = 50;

// A local commit and the upstream position that is durable once the local WAL is flushed past it.
struct PendingFlush {
	XLogRecPtr local_end;
	XLogRecPtr upstream_lsn;
};

// The state of the current session. Static so that session_cleanup can reach it after a longjmp.
struct Session {
	PGconn *conn;
	char *buffer; // the CopyData message being handled (libpq memory)
	po::Decoder decoder;
	XLogRecPtr received; // the latest WAL position the upstream sent
	XLogRecPtr flushed;  // the position up to which everything is audited and durable locally
	XLogRecPtr upstream; // the upstream's end of WAL, from the latest message
	TimestampTz last_receipt;
	TimestampTz last_status;
	bool ping_sent;
	int64 changes;                     // changes of the open upstream transaction
	int group_transactions;            // upstream transactions and lone messages in the local transaction
	int64 group_changes;               // their changes
	TimestampTz group_start;           // when the local transaction started
	TimestampTz group_commit_time;     // upstream commit time of its latest transaction, or 0
	PendingFlush pending[kMaxPending]; // oldest first
	int npending;
};

Session session;

// Where the apply is, for the error context of every error raised while applying.
struct ApplyPosition {
	const char *subscription;
	XLogRecPtr lsn;
	po::Xid xid;
	const audit::AuditRelation *relation;
	bool committing; // inserting the last buffered rows and committing the local transaction
};

ApplyPosition position;

// Adds "subscription, LSN, xid, relation" to every error raised while a message is applied.
void apply_error_context(void *) {
	if (position.committing)
		errcontext("committing the audit of subscription \"%s\" up to LSN %X/%X", position.subscription,
		           LSN_FORMAT_ARGS(session.received));
	else if (position.relation != nullptr)
		errcontext("auditing subscription \"%s\" at LSN %X/%X, xid %u, relation \"%s.%s\"", position.subscription,
		           LSN_FORMAT_ARGS(position.lsn), position.xid, position.relation->nspname, position.relation->relname);
	else
		errcontext("auditing subscription \"%s\" at LSN %X/%X, xid %u", position.subscription,
		           LSN_FORMAT_ARGS(position.lsn), position.xid);
}

// Copies the session's positions and times into the shared status slot.
void publish_status(WorkerContext &w, TimestampTz send_time) {
	LWLockAcquire(shared_lock(), LW_EXCLUSIVE);
	w.slot->received_lsn = session.received;
	w.slot->flushed_lsn = session.flushed;
	w.slot->upstream_lsn = session.upstream;
	if (send_time != 0)
		w.slot->last_msg_send_time = send_time;
	w.slot->last_msg_receipt_time = session.last_receipt;
	LWLockRelease(shared_lock());
}

// Sends a standby status update: written = received, flushed = applied = the durable position.
void send_status(bool request_reply) {
	uint8_t message[po::kStandbyStatusSize];
	po::encode_standby_status(message, session.received, session.flushed, session.flushed, po::now_timestamp(),
	                          request_reply);
	stream::send(session.conn, reinterpret_cast<const char *>(message), sizeof message);
	session.last_status = GetCurrentTimestamp();
}

// Raises the error for a message the decoder rejected.
void report_malformed(const po::DecodeError &error) {
	ereport(ERROR, (errcode(ERRCODE_PROTOCOL_VIOLATION), errmsg("malformed pgoutput %s message", error.message),
	                errdetail("%c%s at byte offset %zu.", pg_toupper(static_cast<unsigned char>(error.reason[0])),
	                          error.reason + 1, error.offset)));
}

// The relation a change names; an id no Relation message announced is a protocol violation.
const audit::AuditRelation *find_relation(WorkerContext &w, po::Oid relation_id) {
	const audit::AuditRelation *relation = audit::relations_find(w.relations, relation_id);
	if (relation == nullptr)
		ereport(ERROR, (errcode(ERRCODE_PROTOCOL_VIOLATION), errmsg("change for unknown relation id %u", relation_id),
		                errdetail("No Relation message announced that relation earlier in the stream.")));
	position.relation = relation;
	return relation;
}

// A change must arrive between Begin and Commit.
void require_transaction(WorkerContext &w, const char *what) {
	if (!audit::writer_in_transaction(w.writer))
		ereport(ERROR, (errcode(ERRCODE_PROTOCOL_VIOLATION), errmsg("%s message outside a transaction", what)));
}

// Converts an old tuple when the upstream sent one: the whole row ('O') or its key columns ('K').
NullableDatum old_row(const audit::AuditRelation *relation, po::OldTuple kind, const po::TupleData &tuple) {
	Datum unchanged;
	bool unchanged_isnull;
	if (kind == po::OldTuple::None)
		return {(Datum)0, true};
	return {audit::tuple_to_jsonb(relation, tuple, kind == po::OldTuple::Key, &unchanged, &unchanged_isnull), false};
}

// Records one row change: INSERT (new row), UPDATE (old row when sent, new row), DELETE (old row).
void apply_row(WorkerContext &w, const char *op, po::Oid relation_id, po::OldTuple old_kind,
               const po::TupleData &old_tuple, const po::TupleData *new_tuple) {
	require_transaction(w, op);
	const audit::AuditRelation *relation = find_relation(w, relation_id);
	audit::ChangeRow row = {op,
	                        relation->nspname_text,
	                        relation->relname_text,
	                        old_row(relation, old_kind, old_tuple),
	                        {(Datum)0, true},
	                        {(Datum)0, true},
	                        {(Datum)0, true},
	                        {(Datum)0, true}};
	if (new_tuple != nullptr)
		row.new_row.value =
		    audit::tuple_to_jsonb(relation, *new_tuple, false, &row.unchanged_toast.value, &row.unchanged_toast.isnull);
	row.new_row.isnull = new_tuple == nullptr;
	audit::complete_change(w.writer, relation, row, old_kind, old_tuple, new_tuple);
	audit::writer_change(w.writer, row);
	session.changes++;
}

// Records one TRUNCATE row per truncated relation.
void apply_truncate(WorkerContext &w, const po::Truncate &m) {
	require_transaction(w, "truncate");
	for (uint32_t i = 0; i < m.relation_ids.size(); i++) {
		const audit::AuditRelation *relation = find_relation(w, m.relation_ids[i]);
		audit::ChangeRow row = {"TRUNCATE",       relation->nspname_text, relation->relname_text, {(Datum)0, true},
		                        {(Datum)0, true}, {(Datum)0, true},       {(Datum)0, true},       {(Datum)0, true}};
		audit::writer_change(w.writer, row);
		session.changes++;
	}
}

// Remembers a local commit until the local WAL is flushed past it. When all slots are taken, the
// newest commit takes the last one's place: its upstream position then waits for the later flush.
void remember_commit(const audit::LocalCommit &commit) {
	if (session.npending == kMaxPending)
		session.npending--;
	session.pending[session.npending++] = {commit.local_end, commit.upstream_lsn};
}

// Moves the flushed position to what is durable locally: the upstream position of every local
// commit the local WAL is flushed past, and, when nothing awaits a flush or a commit, everything
// received. Returns whether it moved.
bool advance_flushed(WorkerContext &w) {
	XLogRecPtr before = session.flushed;
	XLogRecPtr durable = GetFlushRecPtr(nullptr);
	int done = 0;
	for (; done < session.npending && session.pending[done].local_end <= durable; done++)
		session.flushed = Max(session.flushed, session.pending[done].upstream_lsn);
	if (done > 0) {
		session.npending -= done;
		memmove(session.pending, session.pending + done, sizeof(PendingFlush) * session.npending);
	}
	if (session.npending == 0 && !audit::writer_local_open(w.writer) && !audit::writer_in_transaction(w.writer))
		session.flushed = Max(session.flushed, session.received);
	return session.flushed != before;
}

// Flushes the local WAL past every pending commit: one flush when idle instead of one per commit.
void flush_pending() {
	if (session.npending > 0)
		XLogFlush(session.pending[session.npending - 1].local_end);
}

// Commits the local transaction, if one is open, and publishes what it audited.
void commit_group(WorkerContext &w) {
	if (!audit::writer_local_open(w.writer))
		return;
	position.committing = true; // rows of several upstream transactions may be inserted now
	remember_commit(audit::writer_commit_local(w.writer));
	position.committing = false;
	advance_flushed(w);
	w.made_progress = true;
	LWLockAcquire(shared_lock(), LW_EXCLUSIVE);
	if (session.group_commit_time != 0)
		w.slot->last_commit_time = session.group_commit_time;
	w.slot->transactions += session.group_transactions;
	w.slot->changes += session.group_changes;
	w.slot->flushed_lsn = session.flushed;
	LWLockRelease(shared_lock());
	session.group_transactions = 0;
	session.group_changes = 0;
	session.group_commit_time = 0;
}

// Whether the local transaction holds enough to be committed now, although more messages wait.
bool group_full() {
	return session.group_transactions >= kGroupTransactions || session.group_changes >= kGroupChanges ||
	       TimestampDifferenceExceeds(session.group_start, GetCurrentTimestamp(), kGroupMs);
}

// Notes when the local transaction starts, before a message that will open it.
void note_group_start(WorkerContext &w) {
	if (!audit::writer_local_open(w.writer))
		session.group_start = GetCurrentStatementStartTimestamp();
}

// Ends the upstream transaction in the local one, which is committed when it is full.
void apply_commit(WorkerContext &w, const po::Commit &m) {
	require_transaction(w, "commit");
	audit::writer_commit(w.writer, m);
	session.group_transactions++;
	session.group_changes += session.changes;
	session.group_commit_time = m.commit_time;
	session.changes = 0;
	if (group_full())
		commit_group(w);
}

// Records a logical message; a lone (non-transactional) one counts as a transaction of the group.
void apply_message(WorkerContext &w, const po::LogicalMessage &m) {
	bool lone = !audit::writer_in_transaction(w.writer);
	if (lone) {
		SetCurrentStatementStartTimestamp();
		note_group_start(w);
	}
	audit::writer_message(w.writer, m);
	if (lone && !m.transactional()) {
		session.group_transactions++;
		if (group_full())
			commit_group(w);
	}
}

// Applies one decoded pgoutput message.
void apply(WorkerContext &w, const po::Message &message) {
	if (auto *m = std::get_if<po::Insert>(&message)) {
		apply_row(w, "INSERT", m->relation_id, po::OldTuple::None, {}, &m->new_tuple);
	} else if (auto *m = std::get_if<po::Update>(&message)) {
		apply_row(w, "UPDATE", m->relation_id, m->old_kind, m->old_tuple, &m->new_tuple);
	} else if (auto *m = std::get_if<po::Delete>(&message)) {
		apply_row(w, "DELETE", m->relation_id, m->old_kind, m->old_tuple, nullptr);
	} else if (auto *m = std::get_if<po::Begin>(&message)) {
		position.xid = m->xid;
		session.changes = 0;
		SetCurrentStatementStartTimestamp(); // audited_at, and the local transaction's now()
		note_group_start(w);
		audit::writer_begin(w.writer, *m);
	} else if (auto *m = std::get_if<po::Commit>(&message)) {
		apply_commit(w, *m);
	} else if (auto *m = std::get_if<po::Relation>(&message)) {
		require_transaction(w, "relation"); // its types are looked up in the catalogs
		audit::relations_add(w.relations, *m);
	} else if (auto *m = std::get_if<po::Type>(&message)) {
		audit::relations_add_type(w.relations, *m);
	} else if (auto *m = std::get_if<po::Truncate>(&message)) {
		apply_truncate(w, *m);
	} else if (auto *m = std::get_if<po::LogicalMessage>(&message)) {
		apply_message(w, *m);
	} else if (auto *m = std::get_if<po::Origin>(&message)) {
		audit::writer_origin(w.writer, *m);
	} else {
		ereport(ERROR,
		        (errcode(ERRCODE_PROTOCOL_VIOLATION), errmsg("unexpected pgoutput message in protocol version 1"),
		         errdetail("Streamed and two-phase transactions were not requested.")));
	}
}

// Handles XLogData: decodes and applies the pgoutput message it carries.
void handle_xlogdata(WorkerContext &w, const po::XLogData &x) {
	session.received = Max(session.received, Max(x.wal_start, x.wal_end));
	session.upstream = Max(session.upstream, x.wal_end);
	position.lsn = x.wal_start;
	position.relation = nullptr;
	po::Message message;
	po::DecodeError error;
	if (!session.decoder.decode(x.data, x.size, message, error))
		report_malformed(error);
	apply(w, message);
}

// Handles a keepalive: when idle and flushed, everything the upstream sent is audited and durable,
// so its end of WAL is confirmed and an idle publication never holds WAL upstream.
void handle_keepalive(WorkerContext &w, const po::Keepalive &k) {
	session.last_receipt = GetCurrentTimestamp();
	session.upstream = Max(session.upstream, k.wal_end);
	session.received = Max(session.received, k.wal_end);
	if (advance_flushed(w))
		w.made_progress = true;
	if (k.reply_requested)
		send_status(false);
	publish_status(w, k.send_time);
}

// Handles one CopyData message from the upstream.
void handle_copy_data(WorkerContext &w, const char *data, int size) {
	po::CopyData copy;
	po::DecodeError error;
	session.ping_sent = false;
	if (!po::decode_copy_data(reinterpret_cast<const uint8_t *>(data), size, copy, error))
		report_malformed(error);
	if (auto *x = std::get_if<po::XLogData>(&copy))
		handle_xlogdata(w, *x);
	else
		handle_keepalive(w, std::get<po::Keepalive>(copy));
}

// Messages handled between two looks at the clock (status updates, timeouts), so that a long
// backlog neither delays them nor a stop request.
constexpr int kDrainBatch = 1000;

// What draining found: nothing more ready now, more ready, or the end of the stream.
enum class Drained { Empty, More, Ended };

// Handles up to kDrainBatch CopyData messages libpq has ready. The receipt time is taken once per
// batch, after it: a batch takes far less than any timeout.
Drained drain(WorkerContext &w) {
	Drained drained = Drained::More;
	int handled = 0;
	for (; handled < kDrainBatch; handled++) {
		CHECK_FOR_INTERRUPTS();
		int size = stream::receive(session.conn, &session.buffer);
		if (size <= 0) {
			drained = size == 0 ? Drained::Empty : Drained::Ended;
			break;
		}
		MemoryContext old = MemoryContextSwitchTo(w.message_context);
		handle_copy_data(w, session.buffer, size);
		MemoryContextSwitchTo(old);
		MemoryContextReset(w.message_context);
		PQfreemem(session.buffer);
		session.buffer = nullptr;
	}
	if (handled > 0)
		session.last_receipt = GetCurrentTimestamp();
	return drained;
}

// Milliseconds from now until a time, at least 0.
long ms_until(TimestampTz when) {
	TimestampTz now = GetCurrentTimestamp();
	return when <= now ? 0 : static_cast<long>((when - now) / 1000);
}

// Sends the periodic status update and watches for a silent upstream; returns how long to wait.
long keep_alive() {
	TimestampTz now = GetCurrentTimestamp();
	long wait_ms = 1000;
	if (wal_receiver_status_interval > 0) {
		TimestampTz due = TimestampTzPlusMilliseconds(session.last_status, wal_receiver_status_interval * 1000);
		if (now >= due)
			send_status(false);
		wait_ms = Min(wait_ms,
		              ms_until(TimestampTzPlusMilliseconds(session.last_status, wal_receiver_status_interval * 1000)));
	}
	if (wal_receiver_timeout > 0) {
		TimestampTz silent_until = TimestampTzPlusMilliseconds(session.last_receipt, wal_receiver_timeout);
		if (now >= silent_until)
			ereport(ERROR,
			        (errcode(ERRCODE_CONNECTION_FAILURE),
			         errmsg("terminating the replication connection: the upstream sent nothing for %d ms",
			                wal_receiver_timeout),
			         errhint("The upstream server may be down or the network broken; see wal_receiver_timeout.")));
		// Half way to the timeout, ask the upstream to answer, as PostgreSQL's own receivers do.
		TimestampTz ping_at = TimestampTzPlusMilliseconds(session.last_receipt, wal_receiver_timeout / 2);
		if (now >= ping_at && !session.ping_sent) {
			send_status(true);
			session.ping_sent = true;
		}
		wait_ms = Min(wait_ms, ms_until(session.ping_sent ? silent_until : ping_at));
	}
	return wait_ms;
}

// Connects and starts streaming from the replication origin's position.
void start(WorkerContext &w) {
	const Subscription *sub = w.subscription;
	session.conn = stream::connect(sub->conninfo, sub->name, true);
	stream::identify_system(session.conn);
	// Flushed first: a commit of an earlier session may still be in the local WAL buffers only.
	XLogRecPtr origin_lsn = replorigin_session_get_progress(true);
	stream::StreamOptions options{};
	options.slot_name = sub->slot_name;
	options.start_lsn = origin_lsn;
	options.proto_version = 1;
	options.publications = sub->publications;
	options.messages = sub->messages;
	stream::start_replication(session.conn, options);
	session.decoder = po::Decoder(1);
	session.received = session.flushed = origin_lsn;
	session.npending = 0;
	session.group_transactions = 0;
	session.group_changes = 0;
	session.group_commit_time = 0;
	session.last_receipt = session.last_status = GetCurrentTimestamp();
	session.ping_sent = false;
}

// Reloads the configuration when a SIGHUP arrived.
void reload_config() {
	if (!ConfigReloadPending)
		return;
	ConfigReloadPending = false;
	ProcessConfigFile(PGC_SIGHUP);
}

} // namespace

void run_session(WorkerContext &w) {
	ErrorContextCallback callback;
	position = {w.subscription->name, InvalidXLogRecPtr, 0, nullptr, false};
	callback.callback = apply_error_context;
	callback.arg = nullptr;
	callback.previous = error_context_stack;
	error_context_stack = &callback;

	set_state(w.slot, WorkerState::Connecting);
	start(w);
	set_state(w.slot, WorkerState::Streaming);
	publish_status(w, 0);
	for (;;) {
		Drained drained = drain(w);
		if (drained == Drained::Ended)
			ereport(ERROR, (errcode(ERRCODE_CONNECTION_FAILURE), errmsg("the upstream ended the replication stream")));
		// Nothing more ready: commit what the local transaction holds rather than wait with it, and
		// make the commits durable now rather than when the WAL writer gets to them.
		if (drained == Drained::Empty && !audit::writer_in_transaction(w.writer)) {
			commit_group(w);
			flush_pending();
		}
		if (advance_flushed(w))
			publish_status(w, 0);
		long wait_ms = keep_alive();
		if (session.npending > 0)
			wait_ms = Min(wait_ms, kFlushPollMs);
		// libpq may hold more messages than the socket shows: wait only when it had none left.
		if (drained == Drained::Empty)
			stream::wait(session.conn, wait_ms);
		reload_config();
	}
}

void session_cleanup() {
	if (session.buffer != nullptr)
		PQfreemem(session.buffer);
	session.buffer = nullptr;
	stream::disconnect(session.conn);
	session.conn = nullptr;
}

} // namespace logical_audit::worker
