// The replication connection to an upstream walsender over libpq, driven without blocking.
//
// libpq runs in non-blocking mode and every wait is on the connection's socket and the process
// latch (the receive loop's through a wait event set kept for the connection), so interrupts
// (stop, reload, cancel, statement_timeout) and postmaster death are served while the upstream is
// slow. Replication commands are built with names quoted as identifiers and values as literals the
// replication grammar understands; SQL queries use the server's own quoting. Nothing here holds an
// object with a destructor.
#include "stream/connection.hpp"

#include "pg.hpp"

namespace logical_audit::stream {

namespace {

// Settings the audit relies on: text forms of values must be those to_jsonb produces upstream.
constexpr const char *kSessionOptions =
    "-c datestyle=ISO -c intervalstyle=postgres -c extra_float_digits=3 -c bytea_output=hex -c TimeZone=UTC";

// The connection attempt's time limit when wal_receiver_timeout is disabled.
constexpr long kDefaultConnectTimeoutMs = 60000;

// Closes the hole a hostile search_path would open in the queries sent on this connection.
constexpr const char *kSecureSearchPath = "SELECT pg_catalog.set_config('search_path', '', false)";

// How long a connection attempt may take.
long connect_timeout_ms() {
	return wal_receiver_timeout > 0 ? wal_receiver_timeout : kDefaultConnectTimeoutMs;
}

// The connection's last libpq error, without its trailing newline, in palloc'd memory.
char *connection_error(PGconn *conn) {
	const char *message = PQerrorMessage(conn);
	return pchomp(message != nullptr && message[0] != '\0' ? message : "connection lost");
}

// Raises the error for a connection that broke while doing something.
[[noreturn]] void connection_failed(PGconn *conn, const char *what) {
	ereport(ERROR, (errcode(ERRCODE_CONNECTION_FAILURE), errmsg("%s", what), errdetail("%s", connection_error(conn))));
	pg_unreachable();
}

// The wait of the receive loop, made once per connection: building a wait event set costs an epoll
// descriptor and three system calls, which a wait per burst of messages would pay each time.
WaitEventSet *receive_wait_set = nullptr;
PGconn *receive_wait_conn = nullptr;

// Forgets the receive loop's wait event set, closing its epoll descriptor.
void free_receive_wait() {
	if (receive_wait_set != nullptr)
		FreeWaitEventSet(receive_wait_set);
	receive_wait_set = nullptr;
	receive_wait_conn = nullptr;
}

// The receive loop's wait event set for this connection: latch, postmaster death, readable socket.
WaitEventSet *receive_wait(PGconn *conn) {
	if (receive_wait_conn == conn && receive_wait_set != nullptr)
		return receive_wait_set;
	pgsocket socket = PQsocket(conn);
	if (socket == PGINVALID_SOCKET)
		connection_failed(conn, "lost the connection to the upstream server");
	free_receive_wait();
#if PG_VERSION_NUM >= 170000
	WaitEventSet *set = CreateWaitEventSet(nullptr, 3);
#else
	WaitEventSet *set = CreateWaitEventSet(TopMemoryContext, 3);
#endif
	AddWaitEventToSet(set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, nullptr);
	AddWaitEventToSet(set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, nullptr, nullptr);
	AddWaitEventToSet(set, WL_SOCKET_READABLE, socket, nullptr, nullptr);
	receive_wait_set = set;
	receive_wait_conn = conn;
	return set;
}

// Waits for the socket events asked for, the latch or the timeout (-1: none); serves interrupts.
int wait_socket(PGconn *conn, int socket_events, long timeout_ms) {
	pgsocket socket = PQsocket(conn);
	if (socket == PGINVALID_SOCKET)
		connection_failed(conn, "lost the connection to the upstream server");
	int events = WL_EXIT_ON_PM_DEATH | WL_LATCH_SET | socket_events | (timeout_ms >= 0 ? WL_TIMEOUT : 0);
	int rc = WaitLatchOrSocket(MyLatch, events, socket, timeout_ms, PG_WAIT_EXTENSION);
	if (rc & WL_LATCH_SET) {
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
	return rc;
}

// Drives PQconnectPoll until the connection is up or failed, within the connect timeout.
void poll_connection(PGconn *conn) {
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), connect_timeout_ms());
	// libpq's protocol: start as if PQconnectPoll had asked to wait for writing.
	PostgresPollingStatusType status = PGRES_POLLING_WRITING;
	while (status != PGRES_POLLING_OK && status != PGRES_POLLING_FAILED) {
		long remaining = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);
		if (remaining <= 0)
			ereport(ERROR, (errcode(ERRCODE_CONNECTION_FAILURE), errmsg("could not connect to the upstream server"),
			                errdetail("The connection attempt timed out after %ld ms.", connect_timeout_ms())));
		int io = status == PGRES_POLLING_READING ? WL_SOCKET_READABLE : WL_SOCKET_WRITEABLE;
		// The socket changes when libpq moves on to the next host of a list: ask for it each time.
		if (wait_socket(conn, io, remaining) & io)
			status = PQconnectPoll(conn);
	}
	if (PQstatus(conn) != CONNECTION_OK)
		connection_failed(conn, "could not connect to the upstream server");
}

// Pushes out whatever libpq has buffered, waiting on the socket while it cannot.
void flush(PGconn *conn) {
	for (;;) {
		int rc = PQflush(conn);
		if (rc == 0)
			return;
		if (rc < 0)
			connection_failed(conn, "could not send data to the upstream server");
		// The server may be waiting for us to read before it reads more: consume as libpq asks.
		int events = wait_socket(conn, WL_SOCKET_WRITEABLE | WL_SOCKET_READABLE, -1);
		if ((events & WL_SOCKET_READABLE) && PQconsumeInput(conn) == 0)
			connection_failed(conn, "could not receive data from the upstream server");
	}
}

// The next result of the running command, waiting for it without blocking; nullptr at the end.
PGresult *next_result(PGconn *conn) {
	while (PQisBusy(conn)) {
		if (wait_socket(conn, WL_SOCKET_READABLE, -1) & WL_SOCKET_READABLE) {
			if (PQconsumeInput(conn) == 0)
				connection_failed(conn, "could not receive data from the upstream server");
		}
	}
	return PQgetResult(conn);
}

// Whether a result is an error, as opposed to data, a command's completion or a copy.
bool is_error(const PGresult *result) {
	ExecStatusType status = PQresultStatus(result);
	return status == PGRES_FATAL_ERROR || status == PGRES_BAD_RESPONSE || status == PGRES_NONFATAL_ERROR;
}

// The upstream's SQLSTATE of an error result, or connection failure for errors libpq made up.
int result_sqlstate(const PGresult *result) {
	const char *state = PQresultErrorField(result, PG_DIAG_SQLSTATE);
	if (state == nullptr || strlen(state) != 5)
		return ERRCODE_CONNECTION_FAILURE;
	return MAKE_SQLSTATE(state[0], state[1], state[2], state[3], state[4]);
}

// A palloc'd copy of a result's error field, or nullptr.
char *error_field(const PGresult *result, int field) {
	const char *value = PQresultErrorField(result, field);
	return value != nullptr && value[0] != '\0' ? pstrdup(value) : nullptr;
}

// The command's first word (its verb), for messages: they never quote the whole command.
char *command_verb(const char *command) {
	size_t length = strcspn(command, " \t\n(");
	return pnstrdup(command, Min(length, static_cast<size_t>(NAMEDATALEN)));
}

// Frees an error result and raises it with the upstream's SQLSTATE, message, detail and hint,
// after "what failed".
[[noreturn]] void report_result_error(PGconn *conn, PGresult *result, const char *what) {
	int sqlstate = result_sqlstate(result);
	char *primary = error_field(result, PG_DIAG_MESSAGE_PRIMARY);
	char *detail = error_field(result, PG_DIAG_MESSAGE_DETAIL);
	char *hint = error_field(result, PG_DIAG_MESSAGE_HINT);
	if (primary == nullptr)
		primary = pchomp(PQresultErrorMessage(result)[0] != '\0' ? PQresultErrorMessage(result) : PQerrorMessage(conn));
	PQclear(result);
	ereport(ERROR, (errcode(sqlstate), errmsg("%s: %s", what, primary), detail != nullptr ? errdetail("%s", detail) : 0,
	                hint != nullptr ? errhint("%s", hint) : 0));
	pg_unreachable();
}

// Frees a result of the wrong kind and raises a protocol violation.
[[noreturn]] void report_unexpected(PGresult *result, const char *command, ExecStatusType expected) {
	const char *got = result != nullptr ? PQresStatus(PQresultStatus(result)) : "no result";
	char *verb = command_verb(command);
	PQclear(result);
	ereport(ERROR,
	        (errcode(ERRCODE_PROTOCOL_VIOLATION), errmsg("unexpected result of %s from the upstream server", verb),
	         errdetail("Expected %s, got %s.", PQresStatus(expected), got)));
	pg_unreachable();
}

// Whether a result puts the connection in a copy mode: no end-of-results marker follows it then.
bool is_copy(const PGresult *result) {
	ExecStatusType status = PQresultStatus(result);
	return status == PGRES_COPY_BOTH || status == PGRES_COPY_OUT || status == PGRES_COPY_IN;
}

// Collects the results of the command sent: the first error if any, else the last result.
PGresult *collect_results(PGconn *conn) {
	PGresult *kept = nullptr;
	while (PGresult *result = next_result(conn)) {
		if (kept != nullptr && is_error(kept)) {
			PQclear(result);
			continue;
		}
		PQclear(kept);
		kept = result;
		if (is_copy(result))
			break;
	}
	return kept;
}

// Raises a protocol violation for a result whose shape is not what the command returns.
[[noreturn]] void report_bad_shape(PGresult *result, const char *command) {
	char *verb = command_verb(command);
	int rows = PQntuples(result);
	int columns = PQnfields(result);
	PQclear(result);
	ereport(ERROR,
	        (errcode(ERRCODE_PROTOCOL_VIOLATION), errmsg("unexpected result of %s from the upstream server", verb),
	         errdetail("Got %d rows of %d columns.", rows, columns)));
	pg_unreachable();
}

// Runs a command that returns one row of at least min_columns columns.
PGresult *exec_row(PGconn *conn, const char *command, int min_columns) {
	PGresult *result = exec(conn, command, PGRES_TUPLES_OK);
	if (PQntuples(result) != 1 || PQnfields(result) < min_columns)
		report_bad_shape(result, command);
	return result;
}

// Parses an LSN the upstream sent; a malformed one frees the result and is a protocol violation.
XLogRecPtr parse_lsn(PGresult *result, int column, const char *command) {
	bool error = false;
	XLogRecPtr lsn = pg_lsn_in_internal(PQgetvalue(result, 0, column), &error);
	if (!error)
		return lsn;
	char *text = pstrdup(PQgetvalue(result, 0, column));
	char *verb = command_verb(command);
	PQclear(result);
	ereport(ERROR,
	        (errcode(ERRCODE_PROTOCOL_VIOLATION),
	         errmsg("invalid LSN in the result of %s from the upstream server", verb), errdetail("Got \"%s\".", text)));
	pg_unreachable();
}

// Appends a name quoted as an identifier, always: the replication grammar has keywords of its own
// (LOGICAL, SLOT, WAIT...) that quote_identifier would leave bare.
void append_identifier(StringInfo out, const char *name) {
	appendStringInfoChar(out, '"');
	for (const char *c = name; *c != '\0'; c++) {
		if (*c == '"')
			appendStringInfoChar(out, '"');
		appendStringInfoChar(out, *c);
	}
	appendStringInfoChar(out, '"');
}

// Appends a string literal for a replication command: the replication grammar knows only '' for
// a quote, not E'' strings, so backslashes stay as they are.
void append_literal(StringInfo out, const char *value) {
	appendStringInfoChar(out, '\'');
	for (const char *c = value; *c != '\0'; c++) {
		if (*c == '\'')
			appendStringInfoChar(out, '\'');
		appendStringInfoChar(out, *c);
	}
	appendStringInfoChar(out, '\'');
}

// The non-null elements of a text[] as C strings; returns their count.
int text_elements(ArrayType *array, char ***out) {
	Datum *elements;
	bool *nulls;
	int count;
	deconstruct_array(array, TEXTOID, -1, false, TYPALIGN_INT, &elements, &nulls, &count);
	char **names = static_cast<char **>(palloc0(sizeof(char *) * (count + 1)));
	int kept = 0;
	for (int i = 0; i < count; i++)
		if (!nulls[i])
			names[kept++] = TextDatumGetCString(elements[i]);
	*out = names;
	return kept;
}

// The publication_names option value: each name quoted as an identifier, separated by commas.
char *publication_list(ArrayType *publications) {
	char **names;
	int count = text_elements(publications, &names);
	StringInfoData list;
	initStringInfo(&list);
	for (int i = 0; i < count; i++) {
		if (i > 0)
			appendStringInfoChar(&list, ',');
		append_identifier(&list, names[i]);
	}
	return list.data;
}

// Appends " name 'value'" options pgoutput takes as booleans, for those that are set.
void append_flags(StringInfo cmd, const StreamOptions &options) {
	if (options.messages)
		appendStringInfoString(cmd, ", messages 'true'");
	if (options.binary)
		appendStringInfoString(cmd, ", binary 'true'");
	if (options.streaming)
		appendStringInfoString(cmd, ", streaming 'on'");
	if (options.two_phase)
		appendStringInfoString(cmd, ", two_phase 'on'");
}

// Appends the output plugin and the options of CREATE_REPLICATION_SLOT: an option list from
// PostgreSQL 15 on, the older keywords before.
void append_slot_options(StringInfo cmd, int server_version, const SlotOptions &options) {
	if (server_version >= 150000) {
		appendStringInfo(cmd, " LOGICAL pgoutput (SNAPSHOT '%s'%s)", options.export_snapshot ? "export" : "nothing",
		                 options.two_phase ? ", TWO_PHASE" : "");
		return;
	}
	appendStringInfo(cmd, " LOGICAL pgoutput %s%s", options.export_snapshot ? "EXPORT_SNAPSHOT" : "NOEXPORT_SNAPSHOT",
	                 options.two_phase ? " TWO_PHASE" : "");
}

// Rejects a conninfo libpq cannot parse. Without this check a string without '=' would be taken
// for a database name and connect to a local server.
void check_conninfo(const char *conninfo) {
	char *error = nullptr;
	PQconninfoOption *options = PQconninfoParse(conninfo, &error);
	if (options != nullptr) {
		PQconninfoFree(options);
		return;
	}
	char *detail = error ? pstrdup(error) : pstrdup("out of memory");
	PQfreemem(error);
	detail[strcspn(detail, "\n")] = '\0';
	ereport(ERROR, (errcode(ERRCODE_SYNTAX_ERROR), errmsg("invalid connection string syntax"), errdetail("%s", detail),
	                errhint("A conninfo is a list of keyword=value settings or a URI.")));
}

// Starts the connection: the user's conninfo first, then what the audit needs, which wins.
PGconn *start_connection(const char *conninfo, const char *application_name, bool replication) {
	const char *keys[6];
	const char *values[6];
	int n = 0;
	keys[n] = "dbname";
	values[n++] = conninfo;
	if (replication) {
		keys[n] = "replication";
		values[n++] = "database";
	}
	// The upstream keeps an identifier's length of it; a longer one would only swell the startup
	// packet (a subscription named before names were limited).
	char name[NAMEDATALEN];
	strlcpy(name, application_name, pg_mbcliplen(application_name, strlen(application_name), NAMEDATALEN - 1) + 1);
	keys[n] = "application_name";
	values[n++] = name;
	keys[n] = "options";
	values[n++] = kSessionOptions;
	// Text values then arrive in the local encoding, as the audit stores them.
	keys[n] = "client_encoding";
	values[n++] = GetDatabaseEncodingName();
	keys[n] = nullptr;
	values[n] = nullptr;
	PGconn *conn = PQconnectStartParams(keys, values, /* expand_dbname */ 1);
	if (conn == nullptr)
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("could not connect to the upstream server"),
		                errdetail("libpq could not allocate a connection.")));
	return conn;
}

// Readies a new connection: non-blocking mode and a safe search_path.
void finish_connection(PGconn *conn) {
	if (PQsetnonblocking(conn, 1) != 0)
		connection_failed(conn, "could not set the upstream connection to non-blocking mode");
	PQclear(exec(conn, kSecureSearchPath, PGRES_TUPLES_OK));
}

// Handles the end of the copy: the upstream's error if it sent one, else -1.
int end_of_copy(PGconn *conn) {
	PGresult *result = next_result(conn);
	if (result != nullptr && is_error(result))
		report_result_error(conn, result, "the upstream server ended the replication stream with an error");
	// CopyDone from the upstream (PGRES_COPY_IN now) or the command's completion: the stream ended.
	PQclear(result);
	return -1;
}

} // namespace

PGconn *connect(const char *conninfo, const char *application_name, bool replication) {
	check_conninfo(conninfo);
	PGconn *conn = start_connection(conninfo, application_name, replication);
	// A cancel or a failure while connecting must not leak the socket: close it, then re-raise.
	PG_TRY();
	{
		if (PQstatus(conn) == CONNECTION_BAD)
			connection_failed(conn, "could not connect to the upstream server");
		poll_connection(conn);
		finish_connection(conn);
	}
	PG_CATCH();
	{
		PQfinish(conn);
		PG_RE_THROW();
	}
	PG_END_TRY();
	return conn;
}

void disconnect(PGconn *conn) {
	if (conn == nullptr)
		return;
	if (conn == receive_wait_conn)
		free_receive_wait();
	PQfinish(conn);
}

PGresult *exec(PGconn *conn, const char *command, ExecStatusType expected) {
	if (PQsendQuery(conn, command) == 0)
		connection_failed(conn, "could not send a command to the upstream server");
	flush(conn);
	PGresult *result = collect_results(conn);
	if (result != nullptr && is_error(result))
		report_result_error(conn, result, psprintf("%s on the upstream server failed", command_verb(command)));
	if (result == nullptr || PQresultStatus(result) != expected)
		report_unexpected(result, command, expected);
	return result;
}

SystemIdentity identify_system(PGconn *conn) {
	const char *command = "IDENTIFY_SYSTEM";
	PGresult *result = exec_row(conn, command, 3);
	SystemIdentity identity{};
	strlcpy(identity.systemid, PQgetvalue(result, 0, 0), sizeof identity.systemid);
	identity.timeline = static_cast<TimeLineID>(strtoul(PQgetvalue(result, 0, 1), nullptr, 10));
	identity.xlogpos = parse_lsn(result, 2, command);
	PQclear(result);
	return identity;
}

bool slot_exists(PGconn *conn, const char *slot_name, char *plugin_out, size_t plugin_size) {
	char *query = psprintf("SELECT plugin FROM pg_catalog.pg_replication_slots WHERE slot_name = %s "
	                       "AND slot_type = 'logical'",
	                       quote_literal_cstr(slot_name));
	PGresult *result = exec(conn, query, PGRES_TUPLES_OK);
	bool exists = PQntuples(result) > 0;
	if (exists && plugin_out != nullptr && plugin_size > 0)
		strlcpy(plugin_out, PQgetvalue(result, 0, 0), plugin_size);
	PQclear(result);
	pfree(query);
	return exists;
}

bool prepared_upstream(PGconn *conn, uint32 xid) {
	char *query = psprintf("SELECT 1 FROM pg_catalog.pg_prepared_xacts WHERE transaction::text = '%u' "
	                       "AND database = pg_catalog.current_database()",
	                       xid);
	PGresult *result = exec(conn, query, PGRES_TUPLES_OK);
	bool prepared = PQntuples(result) > 0;
	PQclear(result);
	pfree(query);
	return prepared;
}

SlotHealth slot_health(PGconn *conn, const char *slot_name) {
	char *query = psprintf("SELECT coalesce(wal_status, ''), coalesce(safe_wal_size, -1) "
	                       "FROM pg_catalog.pg_replication_slots WHERE slot_name = %s",
	                       quote_literal_cstr(slot_name));
	PGresult *result = exec(conn, query, PGRES_TUPLES_OK);
	SlotHealth health{PQntuples(result) > 0, "", -1};
	if (health.found && PQnfields(result) >= 2) {
		strlcpy(health.wal_status, PQgetvalue(result, 0, 0), sizeof health.wal_status);
		health.safe_wal_size = strtoll(PQgetvalue(result, 0, 1), nullptr, 10);
	}
	PQclear(result);
	pfree(query);
	return health;
}

CreatedSlot create_slot(PGconn *conn, const char *slot_name, const SlotOptions &options) {
	StringInfoData cmd;
	initStringInfo(&cmd);
	appendStringInfoString(&cmd, "CREATE_REPLICATION_SLOT ");
	append_identifier(&cmd, slot_name);
	append_slot_options(&cmd, PQserverVersion(conn), options);
	PGresult *result = exec_row(conn, cmd.data, 3);
	CreatedSlot slot{};
	slot.consistent_point = parse_lsn(result, 1, cmd.data);
	if (options.export_snapshot && PQgetisnull(result, 0, 2)) {
		PQclear(result);
		ereport(ERROR, (errcode(ERRCODE_PROTOCOL_VIOLATION),
		                errmsg("the upstream server exported no snapshot with replication slot \"%s\"", slot_name)));
	}
	if (options.export_snapshot)
		strlcpy(slot.snapshot_name, PQgetvalue(result, 0, 2), sizeof slot.snapshot_name);
	PQclear(result);
	pfree(cmd.data);
	return slot;
}

void drop_slot(PGconn *conn, const char *slot_name, bool missing_ok) {
	if (missing_ok && !slot_exists(conn, slot_name))
		return;
	StringInfoData cmd;
	initStringInfo(&cmd);
	appendStringInfoString(&cmd, "DROP_REPLICATION_SLOT ");
	append_identifier(&cmd, slot_name);
	// WAIT: a slot still held by a walsender that is going away is dropped once it is free.
	appendStringInfoString(&cmd, " WAIT");
	PQclear(exec(conn, cmd.data, PGRES_COMMAND_OK));
	pfree(cmd.data);
}

char *missing_publications(PGconn *conn, ArrayType *publications) {
	char **names;
	int count = text_elements(publications, &names);
	StringInfoData query;
	initStringInfo(&query);
	appendStringInfoString(&query, "SELECT n.name FROM pg_catalog.unnest(ARRAY[");
	for (int i = 0; i < count; i++)
		appendStringInfo(&query, "%s%s", i > 0 ? ", " : "", quote_literal_cstr(names[i]));
	appendStringInfoString(&query, "]::pg_catalog.text[]) WITH ORDINALITY AS n(name, i) WHERE NOT EXISTS "
	                               "(SELECT FROM pg_catalog.pg_publication p WHERE p.pubname = n.name) ORDER BY n.i");
	PGresult *result = exec(conn, query.data, PGRES_TUPLES_OK);
	StringInfoData missing;
	initStringInfo(&missing);
	for (int row = 0; row < PQntuples(result); row++) {
		if (row > 0)
			appendStringInfoString(&missing, ", ");
		append_identifier(&missing, PQgetvalue(result, row, 0));
	}
	PQclear(result);
	pfree(query.data);
	return missing.len > 0 ? missing.data : nullptr;
}

void start_replication(PGconn *conn, const StreamOptions &options) {
	StringInfoData cmd;
	initStringInfo(&cmd);
	appendStringInfoString(&cmd, "START_REPLICATION SLOT ");
	append_identifier(&cmd, options.slot_name);
	appendStringInfo(&cmd, " LOGICAL %X/%X (proto_version '%d', publication_names ", LSN_FORMAT_ARGS(options.start_lsn),
	                 options.proto_version);
	append_literal(&cmd, publication_list(options.publications));
	append_flags(&cmd, options);
	appendStringInfoChar(&cmd, ')');
	PQclear(exec(conn, cmd.data, PGRES_COPY_BOTH));
	pfree(cmd.data);
}

int receive(PGconn *conn, char **buffer) {
	*buffer = nullptr;
	int size = PQgetCopyData(conn, buffer, /* async */ 1);
	// Read from the socket only when libpq has no whole message buffered: one recv() serves many.
	if (size == 0) {
		if (PQconsumeInput(conn) == 0)
			connection_failed(conn, "could not receive data from the upstream server");
		size = PQgetCopyData(conn, buffer, /* async */ 1);
	}
	if (size >= 0)
		return size;
	if (size == -1)
		return end_of_copy(conn);
	connection_failed(conn, "could not receive data from the upstream server");
}

void send(PGconn *conn, const char *data, int size) {
	for (;;) {
		int rc = PQputCopyData(conn, data, size);
		if (rc == 1)
			break;
		if (rc < 0)
			connection_failed(conn, "could not send data to the upstream server");
		// 0: libpq's buffer is full in non-blocking mode; make room and try again.
		flush(conn);
	}
	flush(conn);
}

int wait(PGconn *conn, long timeout_ms) {
	WaitEvent event;
	if (WaitEventSetWait(receive_wait(conn), timeout_ms, &event, 1, PG_WAIT_EXTENSION) == 0)
		return WL_TIMEOUT;
	if (event.events & WL_LATCH_SET) {
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
	return event.events;
}

} // namespace logical_audit::stream
