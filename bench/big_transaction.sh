#!/usr/bin/env bash
# One very large upstream transaction through logical_audit: memory and exactly once.
#
# Starts an upstream (logical_decoding_work_mem = 64kB, so the walsender streams the transaction
# while it runs) and a downstream with logical_audit, inserts ROWS narrow rows in one transaction,
# and measures the worker while it audits them: time, rows/s, peak VmHWM and RssAnon (sampled from
# /proc every 0.2 s), peak size of its spool files. Then it does it again, killing the downstream
# (kill -9 of the postmaster and the worker) in the middle of the stream, and checks that every
# row is audited exactly once after the restart.
#
# Usage (as root on Debian 12): bench/big_transaction.sh [ROWS]   (default 5000000)
# Environment: UP_PORT (5591), DOWN_PORT (5592).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
source "$here/scripts/lib.sh"
ROWS=${1:-5000000}
UP_PORT=${UP_PORT:-5591}
DOWN_PORT=${DOWN_PORT:-5592}
[ "$(id -u)" -eq 0 ] || { echo "run as root: it installs packages and the extension" >&2; exit 1; }

install_packages
work=$(make_work_copy "$here")
cleanup() {
	for cluster in upstream downstream; do
		[ -f "$work/$cluster/postmaster.pid" ] && as_postgres "pg_ctl -D '$work/$cluster' -m immediate stop >/dev/null 2>&1"
	done
	rm -rf "$work"
}
trap cleanup EXIT
echo "== build and install logical_audit"
install_extension "$work"

# Creates and starts a cluster: start_cluster NAME PORT [postgresql.conf lines...]
start_cluster() {
	local name=$1 port=$2
	shift 2
	as_postgres "initdb -D '$work/$name' -A trust -E UTF8 --no-locale >/dev/null"
	printf '%s\n' "port = $port" "unix_socket_directories = '$work'" "listen_addresses = ''" \
		"shared_buffers = 1GB" "max_wal_size = 8GB" "autovacuum = off" "log_min_messages = warning" \
		"$@" >>"$work/$name/postgresql.conf"
	as_postgres "pg_ctl -D '$work/$name' -l '$work/$name.log' -w start >/dev/null"
}

# Runs SQL on a cluster and prints the result unaligned: sql PORT 'SQL'
sql() {
	as_postgres "psql -X -At -h '$work' -p $1 -d postgres -v ON_ERROR_STOP=1 -c \"$2\""
}

# A kB figure of the worker's /proc status, 0 when there is no worker.
proc_kb() {
	local pid=$1 field=$2
	awk -v f="$field:" '$1 == f { print $2 }' "/proc/$pid/status" 2>/dev/null || echo 0
}

start_cluster upstream "$UP_PORT" "wal_level = logical" "logical_decoding_work_mem = 64kB"
start_cluster downstream "$DOWN_PORT" "shared_preload_libraries = 'logical_audit'"
sql "$UP_PORT" "CREATE TABLE narrow (id bigint PRIMARY KEY, n int, s text, t timestamptz);
	CREATE PUBLICATION big_pub FOR TABLE narrow;" >/dev/null
sql "$DOWN_PORT" "CREATE EXTENSION logical_audit" >/dev/null

# One run: audit: run NAME KILL(0/1). Prints one result line.
run() {
	local name=$1 kill_mid=$2
	sql "$DOWN_PORT" "SELECT logical_audit.create_subscription('$name', 'host=$work port=$UP_PORT dbname=postgres',
		ARRAY['big_pub'])" >/dev/null
	until [ "$(sql "$DOWN_PORT" "SELECT state FROM logical_audit.status WHERE name = '$name'")" = streaming ]; do sleep 0.2; done
	local id pid first
	id=$(sql "$DOWN_PORT" "SELECT id FROM logical_audit.subscription WHERE name = '$name'")
	pid=$(sql "$DOWN_PORT" "SELECT pid FROM logical_audit.status WHERE name = '$name'")
	sql "$UP_PORT" "TRUNCATE narrow" >/dev/null
	local start=$SECONDS
	sql "$UP_PORT" "INSERT INTO narrow SELECT i, i % 1000, md5(i::text), now() FROM generate_series(1, $ROWS) i" >/dev/null &
	local insert_pid=$! hwm=0 anon=0 spool=0 killed=no target=
	while :; do
		local h a s
		h=$(proc_kb "$pid" VmHWM) a=$(proc_kb "$pid" RssAnon)
		s=$(du -sk "$work/downstream/pg_logical_audit" 2>/dev/null | cut -f1)
		[ "${h:-0}" -gt "$hwm" ] && hwm=$h
		[ "${a:-0}" -gt "$anon" ] && anon=$a
		[ "${s:-0}" -gt "$spool" ] && spool=$s
		if [ "$kill_mid" = 1 ] && [ $killed = no ] && [ "${s:-0}" -gt $((ROWS / 20)) ]; then
			echo "   kill -9 of the downstream with ${s} kB spooled"
			kill -KILL "$(head -1 "$work/downstream/postmaster.pid")" "$pid"
			# Orphaned children of the killed postmaster may hold its shared memory for a moment.
			until as_postgres "pg_ctl -D '$work/downstream' -l '$work/downstream.log' -w start >/dev/null 2>&1"; do
				sleep 0.5
			done
			until [ "$(sql "$DOWN_PORT" "SELECT state FROM logical_audit.status WHERE name = '$name'")" = streaming ]; do sleep 0.2; done
			pid=$(sql "$DOWN_PORT" "SELECT pid FROM logical_audit.status WHERE name = '$name'")
			killed=yes
		fi
		if [ -z "$target" ] && ! kill -0 "$insert_pid" 2>/dev/null; then
			wait "$insert_pid"
			target=$(sql "$UP_PORT" "SELECT pg_current_wal_lsn()")
		fi
		[ -n "$target" ] && [ "$(sql "$DOWN_PORT" "SELECT flushed_lsn >= '$target' FROM logical_audit.status WHERE name = '$name'")" = t ] && break
		sleep 0.2
	done
	local seconds=$((SECONDS - start)) check
	check=$(sql "$DOWN_PORT" "SELECT count(*) || ' rows, ' || count(DISTINCT new_row->>'id') || ' distinct ids, '
		|| count(DISTINCT commit_lsn) || ' transaction(s)' FROM logical_audit.change WHERE subscription = '$name' AND op = 'INSERT'")
	printf '%-10s %9d rows  %4d s  %7d rows/s  VmHWM %6d kB  RssAnon peak %6d kB  spool peak %7d kB  killed: %s\n' \
		"$name" "$ROWS" "$seconds" $((ROWS / (seconds > 0 ? seconds : 1))) "$hwm" "$anon" "$spool" "$killed"
	echo "   audited: $check"
	[ "$check" = "$ROWS rows, $ROWS distinct ids, 1 transaction(s)" ] || { echo "   NOT exactly once" >&2; return 1; }
	[ -z "$(ls "$work/downstream/pg_logical_audit/" | grep "^$id-")" ] || { echo "   spool files left" >&2; return 1; }
	sql "$DOWN_PORT" "SELECT logical_audit.drop_subscription('$name')" >/dev/null
}

echo "== $ROWS rows in one transaction (insert time included: the stream overlaps it)"
run plain 0
run killed 1
