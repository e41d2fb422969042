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
// With protocol 2, a large transaction arrives streamed while it runs upstream: the data messages
// of its stream blocks go to its spool file as received, and its Stream Commit audits them from
// there like the messages of any other transaction. With protocol 3 (two-phase), a prepared
// transaction's messages go to a spool file made durable at its Prepare, and its Commit Prepared
// audits them from there.
//
// Everything here is plain data: an ERROR anywhere unwinds to the worker's retry loop, which calls
// session_cleanup().
#include "audit/decode_error.hpp"
#include "audit/row_image.hpp"
#include "audit/row_jsonb.hpp"
#include "pgoutput/decoder.hpp"
#include "stream/connection.hpp"
#include "worker/session.hpp"
#include "worker/slot_health.hpp"
#include "worker/store_upkeep.hpp"
#include "worker/snapshot.hpp"

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

// How long the upstream must stay silent before the session flushes its last commits itself: in
// a busy stream the WAL writer flushes them (as for PostgreSQL's apply worker), where a flush at
// each pause between two messages would cost the worker a WAL write and an fdatasync every time.
constexpr long kIdleFlushMs = 10;

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
	XLogRecPtr reported; // the flushed position the latest status update carried
	bool ping_sent;
	po::Xid preparing;                 // the transaction between Begin Prepare and Prepare, or kInvalidXid
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
	slot_set_positions(w.slot, {session.received, session.flushed, session.upstream, send_time, session.last_receipt});
}

// Milliseconds from now until a time, at least 0.
long ms_until(TimestampTz when) {
	TimestampTz now = GetCurrentTimestamp();
	return when <= now ? 0 : static_cast<long>((when - now) / 1000);
}

// Sends a standby status update: written = received, flushed = applied = the durable position.
void send_status(bool request_reply) {
	uint8_t message[po::kStandbyStatusSize];
	po::encode_standby_status(message, session.received, session.flushed, session.flushed, po::now_timestamp(),
	                          request_reply);
	stream::send(session.conn, reinterpret_cast<const char *>(message), sizeof message);
	session.last_status = GetCurrentTimestamp();
	session.reported = session.flushed;
}

// How soon after a status update the next one may report a flushed position that moved.
constexpr long kProgressReportMs = 100;

// Reports a flushed position that moved since the last status update as soon as the rate limit
// allows, as PostgreSQL's apply worker does, so the upstream releases WAL and its lag monitors
// tell the truth; returns how long to wait before it can (-1: nothing to report).
long report_progress() {
	if (session.flushed <= session.reported)
		return -1;
	long wait_ms = ms_until(TimestampTzPlusMilliseconds(session.last_status, kProgressReportMs));
	if (wait_ms == 0)
		send_status(false);
	return wait_ms == 0 ? -1 : wait_ms;
}

// When the next periodic status update is due (with wal_receiver_status_interval > 0).
TimestampTz status_due() {
	return TimestampTzPlusMilliseconds(session.last_status, wal_receiver_status_interval * 1000);
}

// Sends the periodic status update when it is due; also while the session is too busy to read.
void send_status_if_due() {
	if (wal_receiver_status_interval > 0 && GetCurrentTimestamp() >= status_due())
		send_status(false);
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
void apply_row(WorkerContext &w, audit::Op op, po::Oid relation_id, po::OldTuple old_kind,
               const po::TupleData &old_tuple, const po::TupleData *new_tuple) {
	require_transaction(w, audit::op_name(op));
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
	audit::complete_change(w.writer, relation, row, old_kind, old_tuple, new_tuple,
	                       w.subscription->options.row_history);
	audit::writer_change(w.writer, row);
	session.changes++;
}

// Records one TRUNCATE row per truncated relation.
void apply_truncate(WorkerContext &w, const po::Truncate &m) {
	require_transaction(w, "truncate");
	for (uint32_t i = 0; i < m.relation_ids.size(); i++) {
		const audit::AuditRelation *relation = find_relation(w, m.relation_ids[i]);
		audit::ChangeRow row = {audit::Op::Truncate, relation->nspname_text, relation->relname_text, {(Datum)0, true},
		                        {(Datum)0, true},    {(Datum)0, true},       {(Datum)0, true},       {(Datum)0, true}};
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
// commit the local WAL is flushed past, and, when nothing awaits a flush or a commit and no
// streamed transaction is in progress, everything received. Returns whether it moved.
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
	if (session.npending == 0 && !audit::writer_local_open(w.writer) && !audit::writer_in_transaction(w.writer) &&
	    !audit::spool_any(w.spool))
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
	slot_add_progress(w.slot,
	                  {session.flushed, session.group_commit_time, session.group_transactions, session.group_changes});
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

// Starts auditing an upstream transaction.
void apply_begin(WorkerContext &w, const po::Begin &m) {
	position.xid = m.xid;
	session.changes = 0;
	SetCurrentStatementStartTimestamp(); // audited_at, and the local transaction's now()
	note_group_start(w);
	audit::writer_begin(w.writer, m);
}

void apply(WorkerContext &w, const po::Message &message);

// Messages replayed between two looks at the clock.
constexpr int kReplayBatch = 10000;

// The fields of a Prepare or Stream Prepare message, else nullptr.
const po::PrepareFields *prepare_fields(const po::Message &message) {
	if (auto *m = std::get_if<po::Prepare>(&message))
		return m;
	return std::get_if<po::StreamPrepare>(&message);
}

// Applies the spooled messages of a streamed or prepared transaction, in the order they arrived,
// each decoded as it came (inside a stream block of that transaction or not). A prepared
// transaction's file ends with its Prepare, which marks the upstream transaction as prepared; with
// apply_changes false, only that is read, into *prepare (its gid copied into the caller's memory).
// False when there is no such file.
bool replay(WorkerContext &w, po::Xid xid, bool prepared, bool apply_changes, po::PrepareFields *prepare) {
	if (!audit::spool_replay_start(w.spool, xid, prepared))
		return false;
	po::Decoder decoder(session.decoder.protocol_version());
	MemoryContext caller = MemoryContextSwitchTo(w.replay_context);
	XLogRecPtr lsn;
	const uint8_t *data;
	size_t size;
	bool in_stream;
	for (int n = 1; audit::spool_replay_next(w.spool, &lsn, &data, &size, &in_stream); n++) {
		po::Message message;
		po::DecodeError error;
		position.lsn = lsn;
		position.relation = nullptr;
		if (in_stream)
			decoder.resume_stream(xid);
		else
			decoder.reset();
		if (!decoder.decode(data, size, message, error))
			audit::report_decode_error(error);
		if (const po::PrepareFields *p = prepare_fields(message)) {
			*prepare = *p;
			MemoryContextSwitchTo(caller);
			prepare->gid = std::string_view(pnstrdup(p->gid.data(), p->gid.size()), p->gid.size());
			MemoryContextSwitchTo(w.replay_context);
			if (apply_changes)
				audit::writer_prepared(w.writer, p->gid, p->prepare_time, false);
		} else if (apply_changes) {
			apply(w, message);
		}
		MemoryContextSwitchTo(caller);
		MemoryContextReset(w.replay_context);
		CHECK_FOR_INTERRUPTS();
		if (n % kReplayBatch == 0)
			send_status_if_due();
		MemoryContextSwitchTo(w.replay_context);
	}
	MemoryContextSwitchTo(caller);
	MemoryContextReset(w.replay_context);
	return true;
}

// Audits a streamed transaction at its commit: its spooled changes, then its commit, as one
// upstream transaction. The spool file goes once it is read: if the local commit fails, the
// upstream streams the transaction again from its first segment.
void apply_stream_commit(WorkerContext &w, const po::StreamCommit &m) {
	po::PrepareFields unused{};
	apply_begin(w, po::Begin{m.commit_lsn, m.commit_time, m.xid});
	if (!replay(w, m.xid, false, true, &unused))
		ereport(ERROR, (errcode(ERRCODE_PROTOCOL_VIOLATION),
		                errmsg("stream commit of transaction %u, which streamed nothing in this session", m.xid)));
	audit::spool_remove(w.spool, m.xid, false);
	apply_commit(w, po::Commit{m.flags, m.commit_lsn, m.end_lsn, m.commit_time});
}

// Starts spooling a transaction that will be prepared: its messages go to its file until Prepare.
void apply_begin_prepare(WorkerContext &w, const po::BeginPrepare &m) {
	if (audit::writer_in_transaction(w.writer) || session.preparing != po::kInvalidXid)
		ereport(ERROR, (errcode(ERRCODE_PROTOCOL_VIOLATION), errmsg("unexpected pgoutput begin prepare message"),
		                errdetail("The message arrived inside an open transaction.")));
	position.xid = m.xid;
	session.preparing = m.xid;
	audit::spool_open(w.spool, m.xid, true);
}

// Ends a prepared transaction's file with its Prepare (or Stream Prepare) message and makes it
// durable; then the local transaction records the upstream position at the PREPARE's end, for the
// upstream sends only the COMMIT PREPARED or ROLLBACK PREPARED after that.
void apply_prepare(WorkerContext &w, const po::PrepareFields &m, const po::XLogData &x, bool streamed) {
	if (streamed)
		audit::spool_open(w.spool, m.xid, false);
	else if (session.preparing != m.xid)
		ereport(ERROR,
		        (errcode(ERRCODE_PROTOCOL_VIOLATION), errmsg("prepare of transaction %u without its begin", m.xid)));
	position.xid = m.xid;
	audit::spool_write(w.spool, m.xid, x.wal_start, x.data, x.size, false);
	audit::spool_prepare(w.spool, m.xid);
	session.preparing = po::kInvalidXid;
	SetCurrentStatementStartTimestamp();
	note_group_start(w);
	audit::writer_progress(w.writer, m.end_lsn, m.prepare_time);
	session.group_transactions++;
	if (group_full())
		commit_group(w);
}

// Commits the local transaction now and waits for its flush: the caller then removes a prepared
// transaction's file, which nothing could rebuild.
void commit_durably(WorkerContext &w) {
	commit_group(w);
	flush_pending();
	advance_flushed(w);
}

// Audits a prepared transaction at its COMMIT PREPARED, from its file: gid and prepare time on
// its transaction row.
void apply_commit_prepared(WorkerContext &w, const po::CommitPrepared &m) {
	po::PrepareFields prepare{};
	apply_begin(w, po::Begin{m.commit_lsn, m.commit_time, m.xid});
	if (!replay(w, m.xid, true, true, &prepare))
		ereport(ERROR, (errcode(ERRCODE_DATA_CORRUPTED),
		                errmsg("no spooled changes for prepared transaction %u (gid \"%.*s\")", m.xid,
		                       static_cast<int>(m.gid.size()), m.gid.data()),
		                errdetail("The spool file of its PREPARE is missing from the data directory.")));
	apply_commit(w, po::Commit{m.flags, m.commit_lsn, m.end_lsn, m.commit_time});
	commit_durably(w);
	audit::spool_remove(w.spool, m.xid, true);
}

// Records a ROLLBACK PREPARED: a transaction row marked rolled back, without changes, under its
// PREPARE's LSN. A prepared transaction whose PREPARE this subscription never received (prepared
// before two-phase decoding was enabled) leaves no record.
void apply_rollback_prepared(WorkerContext &w, const po::RollbackPrepared &m) {
	po::PrepareFields prepare{};
	if (!replay(w, m.xid, true, false, &prepare) || prepare.prepare_lsn == InvalidXLogRecPtr) {
		ereport(LOG, (errmsg("rollback of prepared transaction %u (gid \"%.*s\") whose prepare was not received", m.xid,
		                     static_cast<int>(m.gid.size()), m.gid.data())));
		return;
	}
	apply_begin(w, po::Begin{prepare.prepare_lsn, m.rollback_time, m.xid});
	audit::writer_prepared(w.writer, m.gid, m.prepare_time, true);
	apply_commit(w, po::Commit{0, prepare.prepare_lsn, m.rollback_end_lsn, m.rollback_time});
	commit_durably(w);
	audit::spool_remove(w.spool, m.xid, true);
}

// Whether a message type carries an xid.
template <typename T, typename = void>
struct HasXid : std::false_type {};
template <typename T>
struct HasXid<T, std::void_t<decltype(T::xid)>> : std::true_type {};

// The xid a data message of a stream block carries.
po::Xid data_xid(const po::Message &message) {
	return std::visit(
	    [](const auto &m) -> po::Xid {
		    if constexpr (HasXid<std::decay_t<decltype(m)>>::value)
			    return m.xid;
		    else
			    return po::kInvalidXid;
	    },
	    message);
}

// Learns a Relation or Type message (any other is left alone) now, in a local transaction of its
// own when none is open: its types are looked up in the catalogs.
void learn_description(WorkerContext &w, const po::Message &message) {
	if (!std::holds_alternative<po::Relation>(message) && !std::holds_alternative<po::Type>(message))
		return;
	MemoryContext caller = CurrentMemoryContext;
	bool own = !IsTransactionState();
	if (own) {
		StartTransactionCommand();
		PushActiveSnapshot(GetTransactionSnapshot()); // as the writer's transactions have one
	}
	MemoryContextSwitchTo(caller);
	if (auto *m = std::get_if<po::Relation>(&message))
		audit::relations_add(w.relations, *m);
	else if (auto *m = std::get_if<po::Type>(&message))
		audit::relations_add_type(w.relations, *m);
	if (own) {
		PopActiveSnapshot();
		CommitTransactionCommand();
	}
	MemoryContextSwitchTo(caller);
}

// Where the description of a relation goes: the file of the transaction being prepared.
struct DescribeTarget {
	audit::Spool *spool;
	XLogRecPtr lsn;
};

// Appends one message of a relation's description to the prepared transaction's file.
void spool_description(void *arg, const uint8_t *data, size_t size) {
	auto *target = static_cast<DescribeTarget *>(arg);
	audit::spool_write(target->spool, session.preparing, target->lsn, data, size, false);
}

// Writes the shape of a relation a change names into the prepared transaction's file, the first
// time (an unknown relation is left to the replay, which reports it).
void describe_relation(WorkerContext &w, po::Oid relation_id, XLogRecPtr lsn) {
	const audit::AuditRelation *relation = audit::relations_find(w.relations, relation_id);
	if (relation == nullptr || !audit::spool_describe(w.spool, relation_id))
		return;
	DescribeTarget target{w.spool, lsn};
	audit::relations_describe(w.relations, relation, spool_description, &target);
}

// Whether a message type names one relation.
template <typename T, typename = void>
struct HasRelationId : std::false_type {};
template <typename T>
struct HasRelationId<T, std::void_t<decltype(T::relation_id)>> : std::true_type {};

// Spools a message of a transaction being prepared. Its Relation and Type messages belong to the
// session too (the upstream counts them as sent, whatever becomes of the transaction): they are
// learnt now. Before a change, the file gets the shape of each relation it names, the first time:
// a COMMIT PREPARED that comes in a later session knows nothing of what was announced before.
void spool_prepared(WorkerContext &w, const po::Message &message, const po::XLogData &x) {
	learn_description(w, message);
	if (auto *m = std::get_if<po::Truncate>(&message)) {
		for (uint32_t i = 0; i < m->relation_ids.size(); i++)
			describe_relation(w, m->relation_ids[i], x.wal_start);
	} else {
		std::visit(
		    [&](const auto &m) {
			    using T = std::decay_t<decltype(m)>;
			    if constexpr (std::is_same_v<T, po::Relation>)
				    (void)audit::spool_describe(w.spool, m.relation_id); // the message itself describes it
			    else if constexpr (HasRelationId<T>::value)
				    describe_relation(w, m.relation_id, x.wal_start);
		    },
		    message);
	}
	audit::spool_write(w.spool, session.preparing, x.wal_start, x.data, x.size, false);
}

// Spools a data message of a stream block. Its Relation and Type messages are learnt now as well:
// once the transaction's Stream Prepare (or Stream Commit) is sent, the upstream counts them as
// sent to the session and does not repeat them before the next change of their relation. (They
// cannot contradict what the session knows: the transaction holds its relations' locks, and a DDL
// it made and rolled back makes the upstream announce the relation again.)
void spool_streamed(WorkerContext &w, const po::Message &message, const po::XLogData &x) {
	learn_description(w, message);
	audit::spool_write(w.spool, data_xid(message), x.wal_start, x.data, x.size, true);
}

// Spools a data message of a stream block or of a transaction being prepared; a
// non-transactional logical message, which belongs to no transaction, is applied at once.
void spool_message(WorkerContext &w, const po::Message &message, const po::XLogData &x) {
	auto *m = std::get_if<po::LogicalMessage>(&message);
	if (m != nullptr && !m->transactional())
		apply_message(w, *m);
	else if (session.decoder.in_stream())
		spool_streamed(w, message, x);
	else
		spool_prepared(w, message, x);
}

// An overload set of handlers, one per message type, for std::visit.
template <typename... Handlers>
struct Overloaded : Handlers... {
	using Handlers::operator()...;
};
template <typename... Handlers>
Overloaded(Handlers...) -> Overloaded<Handlers...>;

// Raises the error for a message that arrived where the protocol does not send it.
void unexpected_message() {
	ereport(ERROR, (errcode(ERRCODE_PROTOCOL_VIOLATION),
	                errmsg("unexpected pgoutput message in protocol version %d", session.decoder.protocol_version()),
	                errdetail("The message arrived where the protocol does not send it.")));
}

// Applies one decoded pgoutput message: one handler per message type, and the compiler checks
// that every type has one (no catch-all). Prepare and Stream Prepare are handled before, where
// they end a spooled transaction.
void apply(WorkerContext &w, const po::Message &message) {
	std::visit(Overloaded{
	               [&](const po::Begin &m) { apply_begin(w, m); },
	               [&](const po::Commit &m) { apply_commit(w, m); },
	               [&](const po::Origin &m) { audit::writer_origin(w.writer, m); },
	               [&](const po::Relation &m) {
		               require_transaction(w, "relation"); // its types are looked up in the catalogs
		               audit::relations_add(w.relations, m);
	               },
	               [&](const po::Type &m) { audit::relations_add_type(w.relations, m); },
	               [&](const po::Insert &m) {
		               apply_row(w, audit::Op::Insert, m.relation_id, po::OldTuple::None, {}, &m.new_tuple);
	               },
	               [&](const po::Update &m) {
		               apply_row(w, audit::Op::Update, m.relation_id, m.old_kind, m.old_tuple, &m.new_tuple);
	               },
	               [&](const po::Delete &m) {
		               apply_row(w, audit::Op::Delete, m.relation_id, m.old_kind, m.old_tuple, nullptr);
	               },
	               [&](const po::Truncate &m) { apply_truncate(w, m); },
	               [&](const po::LogicalMessage &m) { apply_message(w, m); },
	               [&](const po::StreamStart &m) {
		               position.xid = m.xid;
		               audit::spool_open(w.spool, m.xid, m.first_segment);
	               },
	               [&](const po::StreamStop &) { audit::spool_close(w.spool); },
	               [&](const po::StreamCommit &m) { apply_stream_commit(w, m); },
	               [&](const po::StreamAbort &m) {
		               position.xid = m.xid;
		               audit::spool_abort(w.spool, m.xid, m.subxid);
	               },
	               [&](const po::BeginPrepare &m) { apply_begin_prepare(w, m); },
	               [&](const po::Prepare &) { unexpected_message(); },
	               [&](const po::StreamPrepare &) { unexpected_message(); },
	               [&](const po::CommitPrepared &m) {
		               position.xid = m.xid;
		               apply_commit_prepared(w, m);
	               },
	               [&](const po::RollbackPrepared &m) {
		               position.xid = m.xid;
		               apply_rollback_prepared(w, m);
	               },
	           },
	           message);
}

// Notes a WAL position the upstream sent. The upstream's end of WAL is never behind it: after a
// reconnect the first messages may carry older positions (a transaction that began before the
// audited position is sent from its first change), which must not make status show negative lag.
void note_received(XLogRecPtr lsn) {
	session.received = Max(session.received, lsn);
	session.upstream = Max(session.upstream, session.received);
}

// Handles XLogData: decodes and applies the pgoutput message it carries.
void handle_xlogdata(WorkerContext &w, const po::XLogData &x) {
	note_received(Max(x.wal_start, x.wal_end));
	position.lsn = x.wal_start;
	position.relation = nullptr;
	po::Message message;
	po::DecodeError error;
	if (!session.decoder.decode(x.data, x.size, message, error))
		audit::report_decode_error(error);
	if (auto *p = std::get_if<po::Prepare>(&message))
		apply_prepare(w, *p, x, false);
	else if (auto *p = std::get_if<po::StreamPrepare>(&message))
		apply_prepare(w, *p, x, true);
	else if ((session.decoder.in_stream() && !std::holds_alternative<po::StreamStart>(message)) ||
	         session.preparing != po::kInvalidXid)
		spool_message(w, message, x);
	else
		apply(w, message);
}

// Handles a keepalive: when idle and flushed, everything the upstream sent is audited and durable,
// so its end of WAL is confirmed and an idle publication never holds WAL upstream.
void handle_keepalive(WorkerContext &w, const po::Keepalive &k) {
	session.last_receipt = GetCurrentTimestamp();
	note_received(k.wal_end);
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
		audit::report_decode_error(error);
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
		// An orphan of a crashed server must not go on writing spool files the next one would not know.
		if (!PostmasterIsAlive())
			proc_exit(1);
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

// Sends the periodic status update and watches for a silent upstream; returns how long to wait.
long keep_alive() {
	TimestampTz now = GetCurrentTimestamp();
	long wait_ms = 1000;
	long progress_ms = report_progress();
	if (progress_ms >= 0)
		wait_ms = progress_ms;
	if (wal_receiver_status_interval > 0) {
		send_status_if_due();
		wait_ms = Min(wait_ms, ms_until(status_due()));
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

// Whether the COMMIT PREPARED or ROLLBACK PREPARED of a prepared transaction is audited already:
// its transaction row (the only one with its xid, gid and prepare time) exists, at or after the
// PREPARE, where the primary key finds it.
bool prepared_audited(WorkerContext &w, po::Xid xid, const po::PrepareFields &prepare) {
	char *gid = pnstrdup(prepare.gid.data(), prepare.gid.size());
	Oid types[5] = {INT4OID, LSNOID, TEXTOID, TEXTOID, TIMESTAMPTZOID};
	Datum values[5] = {Int32GetDatum(w.subscription->id), LSNGetDatum(prepare.prepare_lsn),
	                   CStringGetTextDatum(psprintf("%u", xid)), CStringGetTextDatum(gid),
	                   TimestampTzGetDatum(prepare.prepare_time)};
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	SPI_connect();
	int rc = SPI_execute_with_args("SELECT 1 FROM logical_audit.transaction_data WHERE subscription_id = $1 AND "
	                               "commit_lsn >= $2 AND xid = $3::xid8 AND gid = $4 AND prepare_time = $5",
	                               5, types, values, nullptr, true, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not look up prepared transaction %u: %s", xid, SPI_result_code_string(rc));
	bool audited = SPI_processed > 0;
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	return audited;
}

// Removes the files of prepared transactions that are audited already: a crash between the local
// commit of a COMMIT PREPARED (or ROLLBACK PREPARED) and the removal of its file leaves one, which
// the upstream will never ask for again. A transaction still prepared upstream is not looked at
// (its file is not read); the others are few: those whose end is audited, or about to arrive.
// Runs on the replication connection before streaming starts.
void remove_audited_prepared(WorkerContext &w) {
	MemoryContext caller = MemoryContextSwitchTo(w.message_context);
	int count;
	po::Xid *xids = audit::spool_prepared_xids(w.spool, &count);
	for (int i = 0; i < count; i++) {
		po::PrepareFields prepare{};
		if (!stream::prepared_upstream(session.conn, xids[i]) && replay(w, xids[i], true, false, &prepare) &&
		    prepared_audited(w, xids[i], prepare)) {
			ereport(LOG, (errmsg("removing the spool file of prepared transaction %u (gid \"%.*s\"), audited already",
			                     xids[i], static_cast<int>(prepare.gid.size()), prepare.gid.data())));
			audit::spool_remove(w.spool, xids[i], true);
		}
	}
	MemoryContextSwitchTo(caller);
	MemoryContextReset(w.message_context);
}

// Connects and starts streaming from the replication origin's position.
void start(WorkerContext &w) {
	const Subscription *sub = w.subscription;
	session.conn = stream::connect(sub->conninfo, sub->name, true);
	stream::SystemIdentity upstream = stream::identify_system(session.conn);
	// Flushed first: a commit of an earlier session may still be in the local WAL buffers only.
	XLogRecPtr origin_lsn = replorigin_session_get_progress(true);
	if (sub->options.snapshot && origin_lsn == InvalidXLogRecPtr)
		origin_lsn = take_snapshot(w, session.conn);
	position.lsn = origin_lsn;
	check_slot_at_start(w, session.conn, origin_lsn, upstream.xlogpos);
	stream::StreamOptions options{};
	options.slot_name = sub->slot_name;
	options.start_lsn = origin_lsn;
	// Protocol 2 streams large transactions (PostgreSQL 14 on); protocol 1 sends each whole at commit.
	// Protocol 3 (PostgreSQL 15 on) decodes prepared transactions at their PREPARE.
	options.streaming = sub->options.streaming && PQserverVersion(session.conn) >= 140000;
	options.two_phase = sub->options.two_phase;
	if (options.two_phase && PQserverVersion(session.conn) < 150000)
		ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
		                errmsg("option \"two_phase\" needs an upstream running PostgreSQL 15 or later")));
	options.proto_version = options.two_phase ? 3 : options.streaming ? 2 : 1;
	options.publications = sub->publications;
	options.messages = sub->options.messages;
	audit::spool_remove_all(w.spool); // what an earlier session spooled is streamed again
	options.binary = sub->options.binary;
	session.decoder = po::Decoder(options.proto_version);
	remove_audited_prepared(w);
	keep_store(w, true);
	stream::start_replication(session.conn, options);
	session.received = session.flushed = session.upstream = session.reported = origin_lsn;
	session.npending = 0;
	session.preparing = po::kInvalidXid;
	session.group_transactions = 0;
	session.group_changes = 0;
	session.group_commit_time = 0;
	session.last_receipt = session.last_status = GetCurrentTimestamp();
	session.ping_sent = false;
}

// How often an idle session looks for stream files that no transaction in progress owns.
constexpr long kSweepMs = 10000;

// Removes, at most every kSweepMs while idle, stream files that outlived their transaction.
void sweep_spool_if_due(WorkerContext &w) {
	static TimestampTz last_sweep = 0;
	TimestampTz now = GetCurrentTimestamp();
	if (!TimestampDifferenceExceeds(last_sweep, now, kSweepMs))
		return;
	last_sweep = now;
	audit::spool_sweep(w.spool);
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

	slot_set_state(w.slot, WorkerState::Connecting);
	start(w);
	slot_set_state(w.slot, WorkerState::Streaming);
	publish_status(w, 0);
	for (;;) {
		Drained drained = drain(w);
		if (drained == Drained::Ended)
			ereport(ERROR, (errcode(ERRCODE_CONNECTION_FAILURE), errmsg("the upstream ended the replication stream")));
		// Nothing more ready: commit what the local transaction holds rather than wait with it.
		if (drained == Drained::Empty && !audit::writer_in_transaction(w.writer)) {
			commit_group(w);
			sweep_spool_if_due(w);
			check_slot_if_due(w, session.flushed, session.upstream);
			keep_store(w, false);
		}
		if (advance_flushed(w))
			publish_status(w, 0);
		long wait_ms = keep_alive();
		if (session.npending > 0)
			wait_ms = Min(wait_ms, kIdleFlushMs);
		// libpq may hold more messages than the socket shows: wait only when it had none left. An
		// upstream silent for that long finds the commits made durable now, not by the WAL writer.
		if (drained == Drained::Empty && stream::wait(session.conn, wait_ms) == WL_TIMEOUT)
			flush_pending();
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
