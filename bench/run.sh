#!/usr/bin/env bash
# End-to-end benchmark (issue 5): logical_audit against pg_recvlogical (the receive ceiling),
# PostgreSQL's built-in subscription and the Python prototype, on the same upstream WAL.
#
# Builds and installs the extension from the repository's work tree, starts an upstream and a
# downstream PostgreSQL 15 (same tuning for every consumer), and lets bench/harness.py generate
# each workload after every consumer's slot exists, then time each consumer alone from its slot's
# start to the workload's last commit. Prints a table with ratios and the issue's targets, and
# writes results.json, results.csv and rows_per_s.png to OUT_DIR.
#
# Usage (as root on Debian 12; installs the Debian packages it needs):
#   bench/run.sh [--quick | --medium | --full] [--only W1-1txn,W4,...] [--consumers a,b,c,d]
#                [--audit-options '{"row_history": false}'] [--history 0,20000000,...] [--perf]
#   --quick   scaled-down workloads, one run of each, 10 s lag tests (about 3 minutes)
#   --medium  full-size W1 to W3 with one run each, W4 at 2M rows, 20 s lag tests
#   --full    the issue's sizes, W1 three times (medians), 30 s lag tests (the default)
#   --history run workload H (random-key UPDATEs of a 1M-row table) once per count, with logical_audit's
#             store prefilled with that many synthetic change rows of the table before its run
#             (--only H alone runs it with none held)
#   --perf    profile the audit worker with perf through each workload's first run: a flat
#             profile per workload (perf-W1-1000.txt, ...) in OUT_DIR
# Environment: UP_PORT (5581), DOWN_PORT (5582), OUT_DIR (build-bench/e2e in the repository),
#   SEED (the prototype, ../shared/seed/seed_consumer.py beside the repository),
#   BENCH_REF (build that git revision instead of the work tree, e.g. BENCH_REF=HEAD~1),
#   KEEP=1 (leave the clusters' directory in place after the run, for a look at the logs).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
source "$here/scripts/lib.sh"
PACKAGES+=(gnuplot-nox)
UP_PORT=${UP_PORT:-5581}
DOWN_PORT=${DOWN_PORT:-5582}
OUT_DIR=${OUT_DIR:-$here/build-bench/e2e}
SEED=${SEED:-$(cd "$here/.." && pwd)/shared/seed/seed_consumer.py}

harness_args=()
mode=full
while [ $# -gt 0 ]; do
	case $1 in
	--quick | --medium | --full) mode=${1#--} ;;
	--only | --consumers | --audit-options | --history) harness_args+=("$1" "$2"); shift ;;
	--perf) harness_args+=("$1"); PACKAGES+=(linux-perf) ;;
	-h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
	esac
	shift
done
[ "$(id -u)" -eq 0 ] || { echo "run as root: it installs packages and the extension" >&2; exit 1; }
[ -f "$SEED" ] || { echo "the Python prototype is not at $SEED (set SEED)" >&2; exit 1; }

started=$SECONDS
install_packages
if [ -n "${BENCH_REF:-}" ]; then
	work=$(mktemp -d "${TMPDIR:-/tmp}/logical_audit_bench.XXXXXX")
	git -C "$here" archive "$BENCH_REF" | tar -xf - -C "$work"
	chown -R postgres:postgres "$work"
	chmod 755 "$work"
else
	work=$(make_work_copy "$here")
fi

# Stops both clusters (whatever state the run ended in) and removes the work directory.
cleanup() {
	local rc=$?
	if [ -n "${harness_pid:-}" ] && kill -0 "$harness_pid" 2>/dev/null; then
		kill -TERM "$harness_pid" 2>/dev/null || true # it prints and writes what it has measured
		wait "$harness_pid" 2>/dev/null || true
	fi
	for cluster in upstream downstream; do
		if [ -f "$work/$cluster/postmaster.pid" ]; then
			as_postgres "pg_ctl -D '$work/$cluster' -m immediate stop >/dev/null 2>&1" || true
		fi
	done
	if [ "${KEEP:-0}" = 1 ] || [ $rc -ne 0 ]; then
		mkdir -p "$OUT_DIR"
		cp "$work"/upstream.log "$work"/downstream.log "$OUT_DIR"/ 2>/dev/null || true
	fi
	if [ "${KEEP:-0}" = 1 ]; then
		echo "(clusters kept in $work)"
	else
		rm -rf "$work"
	fi
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== build and install logical_audit (${BENCH_REF:-work tree})"
install_extension "$work"

# The tuning every consumer shares. Autovacuum is off so that nothing but the workload commits
# upstream (the end LSN is the workload's last commit) and nothing runs beside a measurement.
# Commit timestamps on both sides give the lag tests each transaction's upstream and local commit.
common_conf=("shared_buffers = 1GB" "max_wal_size = 8GB" "checkpoint_timeout = 30min"
	"synchronous_commit = on" "autovacuum = off" "track_commit_timestamp = on" "max_worker_processes = 16"
	"log_min_messages = warning" "log_checkpoints = off" "log_line_prefix = '%m [%p] '")

# Creates and starts a cluster: start_cluster NAME PORT [postgresql.conf lines...]
start_cluster() {
	local name=$1 port=$2
	shift 2
	as_postgres "initdb -D '$work/$name' -A trust -E UTF8 --no-locale >/dev/null"
	printf '%s\n' "port = $port" "unix_socket_directories = '$work'" "listen_addresses = ''" \
		"${common_conf[@]}" "$@" >>"$work/$name/postgresql.conf"
	as_postgres "pg_ctl -D '$work/$name' -l '$work/$name.log' -w start >/dev/null"
}

echo "== upstream on port $UP_PORT, downstream on port $DOWN_PORT"
# wal_sender_timeout: the prototype never answers keepalives; 5 min keeps it connected while a
# walsender decodes a large transaction before sending its first change.
start_cluster upstream "$UP_PORT" "wal_level = logical" "max_replication_slots = 20" "max_wal_senders = 20" \
	"wal_sender_timeout = 5min"
# wal_retrieve_retry_interval: PostgreSQL's launcher starts at most one apply worker per interval
# (5 s by default), which would add seconds to a subscription created soon after the previous one.
# wal_init_zero: a fresh cluster would zero-fill a new 16 MB WAL segment for each 16 MB written,
# where a server in its steady state recycles old ones; that cost would fall on whichever consumer
# writes the most WAL.
start_cluster downstream "$DOWN_PORT" "shared_preload_libraries = 'logical_audit'" "wal_init_zero = off" \
	"max_logical_replication_workers = 8" "wal_retrieve_retry_interval = 100ms"

mkdir -p "$OUT_DIR"
/usr/bin/python3 "$here/bench/harness.py" --mode "$mode" --host "$work" --up-port "$UP_PORT" \
	--down-port "$DOWN_PORT" --seed "$SEED" --out-dir "$OUT_DIR" --pg-bin "$PG_BIN" \
	--work "$work" "${harness_args[@]}" &
harness_pid=$!
wait "$harness_pid"
harness_pid=
echo "== done in $((SECONDS - started)) s (mode $mode); results in $OUT_DIR"
