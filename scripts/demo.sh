#!/usr/bin/env bash
# Demo: builds and installs logical_audit, starts an upstream PostgreSQL 15 (wal_level=logical) and a
# downstream one with the extension preloaded, subscribes the downstream to a publication of the
# upstream's pgbench tables, runs a short pgbench on the upstream, waits until everything is
# audited, and prints the subscription's status and a sample of the audit rows.
# Run as root on Debian 12; installs what it needs. UP_PORT, DOWN_PORT, PGBENCH_SECONDS and
# CATCHUP_TIMEOUT change how it runs.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
source "$here/scripts/lib.sh"
UP_PORT=${UP_PORT:-5571}
DOWN_PORT=${DOWN_PORT:-5572}
PGBENCH_SECONDS=${PGBENCH_SECONDS:-10}
CATCHUP_TIMEOUT=${CATCHUP_TIMEOUT:-120}

install_packages
work=$(make_work_copy "$here")
install_extension "$work"

# Stops whatever cluster was started, and removes the work copy.
cleanup() {
	for cluster in upstream downstream; do
		if [ -f "$work/$cluster/postmaster.pid" ]; then
			as_postgres "pg_ctl -D '$work/$cluster' -m fast stop >/dev/null" || true
		fi
	done
	rm -rf "$work"
}
trap cleanup EXIT

# Creates and starts a cluster: start_cluster NAME PORT [postgresql.conf lines...]
start_cluster() {
	local name=$1 port=$2
	shift 2
	as_postgres "initdb -D '$work/$name' -A trust >/dev/null"
	printf '%s\n' "port = $port" "unix_socket_directories = '$work'" "listen_addresses = ''" "$@" \
		>>"$work/$name/postgresql.conf"
	as_postgres "pg_ctl -D '$work/$name' -l '$work/$name.log' -w start >/dev/null"
}

# Runs SQL from stdin on a cluster: psql_on PORT [psql options...]
psql_on() {
	local port=$1
	shift
	as_postgres "psql -X -q -h '$work' -p $port -d postgres -v ON_ERROR_STOP=1 $*"
}

echo "== upstream on port $UP_PORT (wal_level = logical), downstream on port $DOWN_PORT (logical_audit preloaded)"
start_cluster upstream "$UP_PORT" "wal_level = logical"
start_cluster downstream "$DOWN_PORT" "shared_preload_libraries = 'logical_audit'"

as_postgres "pgbench -i -q -s 1 -h '$work' -p $UP_PORT postgres" >"$work/pgbench-init.log" 2>&1 ||
	{ cat "$work/pgbench-init.log"; exit 1; }
psql_on "$UP_PORT" <<'SQL'
CREATE PUBLICATION bench_pub FOR ALL TABLES;
SQL

psql_on "$DOWN_PORT" <<SQL
CREATE EXTENSION logical_audit;
SELECT logical_audit.create_subscription(
	name         => 'bench',
	conninfo     => 'host=$work port=$UP_PORT dbname=postgres',
	publications => ARRAY['bench_pub'],
	slot_name    => NULL,
	create_slot  => true,
	enabled      => true,
	options      => '{}'::jsonb);
SQL

echo "== an annotated change, then pgbench for ${PGBENCH_SECONDS}s on the upstream"
psql_on "$UP_PORT" <<'SQL'
BEGIN;
SELECT pg_logical_emit_message(true, 'audit', '{"user": "alice", "reason": "yearly reset"}') \g /dev/null
UPDATE pgbench_branches SET bbalance = 0;
COMMIT;
SQL
bench_out=$(as_postgres "pgbench -n -T $PGBENCH_SECONDS -c 2 -h '$work' -p $UP_PORT postgres" 2>&1) ||
	{ echo "$bench_out"; exit 1; }
grep -E 'transactions actually processed|^tps' <<<"$bench_out" || true

target=$(psql_on "$UP_PORT" -At <<<'SELECT pg_current_wal_lsn()')
echo "== waiting (at most ${CATCHUP_TIMEOUT}s) until the downstream has audited up to upstream LSN $target"
deadline=$((SECONDS + CATCHUP_TIMEOUT))
until [ "$(psql_on "$DOWN_PORT" -At <<<"SELECT flushed_lsn >= '$target' FROM logical_audit.status WHERE name = 'bench'" 2>/dev/null)" = t ]; do
	if [ $SECONDS -ge $deadline ]; then
		echo "TIMEOUT: the audit worker did not catch up with upstream LSN $target in ${CATCHUP_TIMEOUT}s" >&2
		psql_on "$DOWN_PORT" -x <<<'SELECT * FROM logical_audit.status' >&2 || true
		echo "-- last lines of the downstream log:" >&2
		tail -n 20 "$work/downstream.log" >&2 || true
		exit 1
	fi
	sleep 0.5
done

psql_on "$DOWN_PORT" <<'SQL'
\echo
\echo '== SELECT * FROM logical_audit.status'
\x on
SELECT * FROM logical_audit.status;
\x off
\echo '== the annotated transaction (who and why, from an ''audit'' logical message) and its first changes'
SELECT t.xid, t.commit_time, t.change_count, t.annotations
  FROM logical_audit.transaction t WHERE t.annotations IS NOT NULL;
SELECT c.ordinal, c.op, c.table_name, c.new_row
  FROM logical_audit.change c JOIN logical_audit.transaction t USING (subscription, commit_lsn)
 WHERE t.annotations IS NOT NULL ORDER BY c.ordinal LIMIT 3;
\echo '== the last three pgbench transactions audited'
SELECT xid, commit_lsn, commit_time, change_count
  FROM logical_audit.transaction ORDER BY commit_lsn DESC LIMIT 3;
\echo '== their changes (changed_columns from the row''s latest audited image)'
SELECT c.commit_lsn, c.ordinal, c.op, c.table_name, c.changed_columns, c.new_row
  FROM logical_audit.change c
 WHERE c.commit_lsn IN (SELECT commit_lsn FROM logical_audit.transaction ORDER BY commit_lsn DESC LIMIT 3)
 ORDER BY c.commit_lsn DESC, c.ordinal;
\echo '== the audited history of branch 1: logical_audit.history(''public'', ''pgbench_branches'', ''{"bid": 1}'')'
SELECT commit_time, op, changed_columns, new_row
  FROM logical_audit.history('public', 'pgbench_branches', '{"bid": 1}') ORDER BY commit_lsn DESC LIMIT 3;
SQL

history_up=$(psql_on "$UP_PORT" -At <<<'SELECT count(*) FROM pgbench_history')
history_audited=$(psql_on "$DOWN_PORT" -At <<<"SELECT count(*) FROM logical_audit.change WHERE table_name = 'pgbench_history' AND op = 'INSERT'")
echo "== pgbench_history rows upstream: $history_up, audited inserts: $history_audited"
if [ "$history_up" != "$history_audited" ]; then
	echo "MISMATCH: every upstream pgbench_history row should be audited exactly once" >&2
	exit 1
fi
