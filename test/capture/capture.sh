#!/usr/bin/env bash
# Recaptures the golden pgoutput streams in test/data from a throw-away PostgreSQL 15 cluster.
#
# For each scenario it creates a database, runs scenarios/<name>.schema.sql (tables and
# publications), creates a pgoutput slot, runs scenarios/<name>.sql, takes endpos from
# pg_current_wal_lsn() and records the stream with capture_stream into test/data/<name>.bin.
#
# Run as root (the server then runs as the postgres OS user) or as an unprivileged user.
# Environment:
#   PGBINDIR        PostgreSQL 15 server binaries (default: /usr/lib/postgresql/15/bin)
#   PGPORT          port of the throw-away cluster (default: 5511)
#   CAPTURE_STREAM  a built capture_stream; when unset it is built with cmake in build-capture/
# Arguments: scenario names to capture (default: all).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
scenarios_dir=$here/scenarios
data_dir=$root/test/data
pgbin=${PGBINDIR:-/usr/lib/postgresql/15/bin}
port=${PGPORT:-5511}

# Runs a command as the postgres OS user when we are root, else as ourselves.
as_server_user() {
	if [ "$(id -u)" = 0 ]; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

# Builds capture_stream unless CAPTURE_STREAM names one.
build_capture_stream() {
	if [ -n "${CAPTURE_STREAM:-}" ]; then
		return
	fi
	cmake -S "$root" -B "$root/build-capture" >/dev/null
	cmake --build "$root/build-capture" --target capture_stream >/dev/null
	CAPTURE_STREAM=$root/build-capture/capture_stream
}

# Creates and starts the cluster in a temporary directory; stop_cluster runs on exit.
start_cluster() {
	workdir=$(mktemp -d)
	chmod 755 "$workdir"
	pgdata=$workdir/data
	sockdir=$workdir/sock
	mkdir -p "$pgdata" "$sockdir"
	if [ "$(id -u)" = 0 ]; then
		chown -R postgres: "$workdir"
	fi
	trap stop_cluster EXIT
	as_server_user "$pgbin/initdb" -D "$pgdata" -A trust -U postgres -E UTF8 --locale=C >/dev/null
	cat >>"$pgdata/postgresql.conf" <<-EOF
		port = $port
		listen_addresses = ''
		unix_socket_directories = '$sockdir'
		wal_level = logical
		max_prepared_transactions = 10
		logical_decoding_work_mem = 64kB
		timezone = 'UTC'
		fsync = off
	EOF
	as_server_user "$pgbin/pg_ctl" -D "$pgdata" -l "$workdir/server.log" -w start >/dev/null
}

# Stops the cluster and removes its directory; shows the server log after a failure.
stop_cluster() {
	local status=$?
	if [ "$status" != 0 ] && [ -f "${workdir:-}/server.log" ]; then
		tail -n 20 "$workdir/server.log" >&2
	fi
	if [ -n "${pgdata:-}" ] && [ -f "$pgdata/postmaster.pid" ]; then
		as_server_user "$pgbin/pg_ctl" -D "$pgdata" -m fast -w stop >/dev/null || true
	fi
	if [ -n "${workdir:-}" ]; then
		rm -rf "$workdir"
	fi
}

# Runs psql against database $1 with the remaining arguments.
sql() {
	local db=$1
	shift
	as_server_user "$pgbin/psql" -X -q -v ON_ERROR_STOP=1 -h "$sockdir" -p "$port" -U postgres -d "$db" "$@"
}

# Captures one scenario: $1 name, $2 two_phase slot (true/false), then plugin options NAME=VALUE.
capture() {
	local name=$1 two_phase=$2
	shift 2
	local db=$name slot=${name}_slot opts=() opt endpos
	for opt in "$@"; do
		opts+=(-o "$opt")
	done
	sql postgres -c "CREATE DATABASE $db"
	sql "$db" -f "$scenarios_dir/$name.schema.sql"
	sql "$db" -c "SELECT pg_create_logical_replication_slot('$slot', 'pgoutput', false, $two_phase)" >/dev/null
	sql "$db" -f "$scenarios_dir/$name.sql" >/dev/null
	# pg_current_wal_lsn() is the write position, and an abort's WAL is written lazily: a
	# checkpoint first writes out everything so far, so the last abort lies before endpos.
	sql "$db" -c "CHECKPOINT"
	endpos=$(sql "$db" -At -c "SELECT pg_current_wal_lsn()")
	"$CAPTURE_STREAM" -d "host=$sockdir port=$port user=postgres dbname=$db replication=database" \
		-S "$slot" --endpos "$endpos" "${opts[@]}" -f "$data_dir/$name.bin"
	sql "$db" -c "SELECT pg_drop_replication_slot('$slot')" >/dev/null
}

# Captures the scenario $1 with its plugin options.
capture_named() {
	case $1 in
	v1_changes)
		capture v1_changes false proto_version=1 publication_names=pub_changes,pub_inserts messages=true ;;
	v1_binary)
		capture v1_binary false proto_version=1 publication_names=pub_binary binary=true ;;
	v2_streaming)
		capture v2_streaming false proto_version=2 publication_names=pub_stream streaming=on messages=true ;;
	v3_two_phase)
		capture v3_two_phase true proto_version=3 publication_names=pub_two_phase two_phase=on streaming=on ;;
	bench_narrow_inserts | bench_wide_rows | bench_updates_full)
		capture "$1" false proto_version=1 publication_names=pub_bench ;;
	*)
		echo "capture.sh: unknown scenario \"$1\"" >&2
		return 1
		;;
	esac
}

all=(v1_changes v1_binary v2_streaming v3_two_phase bench_narrow_inserts bench_wide_rows bench_updates_full)
if [ $# -gt 0 ]; then
	all=("$@")
fi
build_capture_stream
mkdir -p "$data_dir"
start_cluster
for name in "${all[@]}"; do
	capture_named "$name"
done
