// The replication connection to an upstream walsender over libpq, driven without blocking.
//
// Every wait watches the latch and postmaster death (WL_EXIT_ON_PM_DEATH) and serves interrupts, so
// a stop request (SIGTERM), a reload (SIGHUP) or a cancel is served while waiting on the network.
// Failures raise ERROR (ERRCODE_CONNECTION_FAILURE for a lost or refused upstream, the upstream's
// own SQLSTATE for a refused command); no message ever contains the conninfo or its password.
// The connection is a plain PGconn pointer: nothing here has a destructor, so an ERROR's longjmp
// abandons nothing; the caller closes the connection in its error cleanup.
#pragma once

#include "pg.hpp"

namespace logical_audit::stream {

// What IDENTIFY_SYSTEM reports.
struct SystemIdentity {
	char systemid[32];
	TimeLineID timeline;
	XLogRecPtr xlogpos;
};

// Opens a connection with replication=database (replication true) or a plain one, after the
// user's conninfo so the settings the audit needs (DateStyle ISO, IntervalStyle postgres,
// extra_float_digits 3, bytea_output hex, TimeZone UTC, application_name) win.
PGconn *connect(const char *conninfo, const char *application_name, bool replication);

// Closes a connection; accepts nullptr.
void disconnect(PGconn *conn);

// Runs one command and returns its only result, which must have the expected status; the caller
// PQclear()s it.
PGresult *exec(PGconn *conn, const char *command, ExecStatusType expected);

// IDENTIFY_SYSTEM on a replication connection.
SystemIdentity identify_system(PGconn *conn);

// A slot's health, as the upstream's pg_replication_slots shows it.
struct SlotHealth {
	bool found;
	char wal_status[16]; // reserved, extended, unreserved or lost ('' when NULL)
	int64 safe_wal_size; // bytes of WAL that may still be written before the slot is lost; -1 when NULL
};

// The health of a slot upstream (on a replication connection before streaming, or a plain one).
SlotHealth slot_health(PGconn *conn, const char *slot_name);

// Whether a transaction with that xid is prepared upstream, in the connection's database.
bool prepared_upstream(PGconn *conn, uint32 xid);

// Whether a logical slot of that name exists upstream, and its plugin.
bool slot_exists(PGconn *conn, const char *slot_name, char *plugin_out = nullptr, size_t plugin_size = 0);

// How a slot is created.
struct SlotOptions {
	bool two_phase;       // prepared transactions are decoded at PREPARE
	bool export_snapshot; // export the snapshot of the consistent point, to copy the tables as of it
};

// What CREATE_REPLICATION_SLOT reports.
struct CreatedSlot {
	XLogRecPtr consistent_point;         // streaming from here follows the snapshot exactly
	char snapshot_name[NAMEDATALEN + 1]; // the exported snapshot, or "" when none was asked for
};

// CREATE_REPLICATION_SLOT "name" LOGICAL pgoutput. An exported snapshot can be imported (SET
// TRANSACTION SNAPSHOT) only until the next command on this connection, or until it closes.
CreatedSlot create_slot(PGconn *conn, const char *slot_name, const SlotOptions &options);

// DROP_REPLICATION_SLOT "name" WAIT; missing_ok ignores a slot that does not exist.
void drop_slot(PGconn *conn, const char *slot_name, bool missing_ok);

// Names of the given publications that do not exist upstream, as a palloc'd comma-separated
// list, or nullptr when all exist.
char *missing_publications(PGconn *conn, ArrayType *publications);

// What START_REPLICATION asks pgoutput for.
struct StreamOptions {
	const char *slot_name;
	XLogRecPtr start_lsn;
	int proto_version;
	ArrayType *publications; // text[]
	bool messages;
	bool binary;
	bool streaming;
	bool two_phase;
};

// START_REPLICATION SLOT "slot" LOGICAL start (options...), every name quoted; on return the
// connection is in CopyBoth mode.
void start_replication(PGconn *conn, const StreamOptions &options);

// Receives one CopyData message without blocking: its length (>0) with *buffer set (free it with
// PQfreemem), 0 when nothing is ready, or -1 when the upstream ended the copy. ERROR on failure.
int receive(PGconn *conn, char **buffer);

// Sends one CopyData message and flushes it, waiting on the socket (with interrupts) if needed.
void send(PGconn *conn, const char *data, int size);

// Waits until the socket is readable, the latch is set, or timeout_ms passes; returns the events
// that ended the wait (WL_TIMEOUT when none). Resets the latch and serves interrupts. The wait event
// set it uses lives until disconnect().
int wait(PGconn *conn, long timeout_ms);

} // namespace logical_audit::stream
