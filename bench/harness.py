#!/usr/bin/env python3
"""The workloads, consumers and measurements of bench/run.sh (issue 5), against running clusters.

run.sh starts the upstream and downstream servers and calls this script (as root, with Debian's
python3-psycopg). For each workload it creates one pgoutput slot per consumer, generates the
workload, takes the end LSN of its last commit (pg_walinspect), then runs the consumers one at a
time, each from its own slot's start to that LSN:
  a  pg_recvlogical --plugin=pgoutput -o proto_version=1 ... -f /dev/null --endpos=END
  b  CREATE SUBSCRIPTION (copy_data false, the pre-created slot, streaming on) into the database
     apply_target of the downstream, which holds plain copies of the tables; done when the
     subscription's replication origin reaches END (the apply worker has committed the last
     transaction)
  c  the Python prototype through bench/prototype_consumer.py (decodes and counts, writes nothing)
  d  logical_audit.create_subscription(..., create_slot => false) with default options; done when
     logical_audit.status.flushed_lsn reaches END
While a consumer runs, a sampler thread reads /proc every 20 ms for the walsender (the slot's
active_pid) and the consumer process (the apply worker, the audit worker, or the client, whose
rusage is taken when it exits). The lag tests run pgbench at a fixed rate while b or d streams live.
Workload H (--history N,...) updates random keys of a 1M-row table, once per N: before its run of
d, the store gets N synthetic change rows of that table (set-based, in days of history), and after
it the store's size per change, history() and table_as_of() latencies and the time to drop a day.
With --perf, perf record samples the audit worker (d) through each workload and a flat profile of
its hottest functions lands beside the results (perf-<workload>.txt).
"""
import argparse
import datetime
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time

import psycopg

HERE = os.path.dirname(os.path.abspath(__file__))
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
POLL = 0.02  # seconds between completion checks and between /proc samples
CONSUMERS = {
    "a": "pg_recvlogical",
    "b": "builtin_subscription",
    "c": "python_prototype",
    "d": "logical_audit",
}
PUBLICATION = "bench_pub"

# Sizes per mode: W1 rows (each shape), W1 repetitions, pgbench transactions per client (W2, two
# clients), W3 rows of 1 MB, W4 rows, lag test seconds, time limit of one consumer.
MODES = {
    "quick": dict(w1_rows=100_000, w1_runs=1, w2_tx=3_000, w3_rows=200, w4_rows=500_000, lag_s=10, timeout=180),
    "medium": dict(w1_rows=1_000_000, w1_runs=1, w2_tx=10_000, w3_rows=1_000, w4_rows=2_000_000, lag_s=20,
                   timeout=900),
    "full": dict(w1_rows=1_000_000, w1_runs=3, w2_tx=20_000, w3_rows=2_000, w4_rows=5_000_000, lag_s=30,
                 timeout=1200),
}
PGBENCH_SCALE = 10
W3_UPDATE_ROUNDS = 5
LAG_RATE = 2000
# Workload H: hist's rows, its random-key UPDATEs, and the shape of the synthetic history.
H_KEYS = 1_000_000
H_UPDATES = 200_000
H_TXN = 1000  # changes per transaction, upstream and in the synthetic history
H_PER_DAY = 1_000_000  # synthetic changes per day (partition) of history
H_HISTORY_CALLS = 1000

# The synthetic history: change j (0-based) is of key j % keys + 1, in transaction t = j / txn at
# ordinal j % txn + 1, and follows change j - keys (same ordinal, transaction t - keys / txn), the
# first of its key when j < keys. Transaction t commits at base + t * step, at LSN 16 * (t + 1):
# below every real upstream LSN.
H_ROW = "jsonb_build_object('id', j %% %(keys)s + 1, 'a', j / %(keys)s + 1, 'b', left(md5(j::text), 10))"
H_COMMIT = "(SELECT %(base)s + {t} * %(step)s AS time, '0/0'::pg_lsn + 16 * ({t} + 1) AS lsn)"
H_PREFILL_TXN = """
INSERT INTO logical_audit.transaction_data (commit_time, commit_lsn, end_lsn, xid, audited_at, change_count,
                                            subscription_id)
SELECT c.time, c.lsn, c.lsn + 8, (t + 1000)::text::xid8, c.time, %(txn)s, %(sub)s
FROM generate_series(%(lo)s::int, %(hi)s::int) t CROSS JOIN LATERAL {commit} c
""".format(commit=H_COMMIT.format(t="t"))
H_PREFILL_CHANGE = """
INSERT INTO logical_audit.change_data (commit_time, commit_lsn, subscription_id, relation_id, ordinal,
                                       prev_ordinal, prev_time, prev_lsn, op, new_row, changed_columns)
SELECT c.time, c.lsn, %(sub)s, %(rel)s, o, CASE WHEN NOT first_change THEN o END,
       CASE WHEN NOT first_change THEN c.time - %(keys)s / %(txn)s * %(step)s END,
       CASE WHEN NOT first_change THEN c.lsn - 16 * (%(keys)s / %(txn)s) END, 'U', {row},
       CASE WHEN NOT first_change THEN '{{a,b}}'::text[] END
FROM generate_series(%(lo)s::int, %(hi)s::int) t CROSS JOIN LATERAL generate_series(1, %(txn)s::int) o
CROSS JOIN LATERAL (SELECT t::bigint * %(txn)s + o - 1 AS j, t::bigint * %(txn)s + o - 1 < %(keys)s AS first_change) x
CROSS JOIN LATERAL {commit} c
""".format(row=H_ROW, commit=H_COMMIT.format(t="t"))
# Each key's last synthetic change.
H_PREFILL_IMAGE = """
INSERT INTO logical_audit.row_image (relation_id, commit_time, commit_lsn, ordinal, row_key, image, partial)
SELECT %(rel)s, c.time, c.lsn, j %% %(txn)s + 1, jsonb_build_object('id', i + 1), {row}, false
FROM generate_series(0, least(%(n)s, %(keys)s) - 1) i
CROSS JOIN LATERAL (SELECT ((%(n)s - 1 - i) / %(keys)s) * %(keys)s + i AS j) x
CROSS JOIN LATERAL {commit} c
""".format(row=H_ROW, commit=H_COMMIT.format(t="j / %(txn)s"))

SCHEMA = """
CREATE TABLE narrow (id bigint PRIMARY KEY, n int, md5 text, ts timestamptz);
CREATE TABLE toasty (id int PRIMARY KEY, n int, body text);
CREATE TABLE lag_probe (id bigserial PRIMARY KEY, aid int);
CREATE TABLE hist (id int PRIMARY KEY, a int, b text);
"""

# Procedures generating W1 and W3 in transactions of per_txn rows.
GENERATORS = """
CREATE PROCEDURE gen_narrow(total bigint, per_txn int) LANGUAGE plpgsql AS $$
DECLARE s bigint := 1;
BEGIN
	WHILE s <= total LOOP
		INSERT INTO narrow SELECT i, (i % 1000)::int, md5(i::text), now()
		  FROM generate_series(s, least(s + per_txn - 1, total)) i;
		COMMIT;
		s := s + per_txn;
	END LOOP;
END $$;
-- A body is its id and 1 MB of random hex, which pglz leaves uncompressed, as it would a
-- document or an image: every copy of it (WAL, table, audit row) is the full megabyte.
CREATE PROCEDURE gen_toasty(total int, per_txn int) LANGUAGE plpgsql AS $$
DECLARE s int := 1; block text;
BEGIN
	SELECT string_agg(md5(random()::text), '') INTO block FROM generate_series(1, 32768);
	WHILE s <= total LOOP
		INSERT INTO toasty SELECT i, 0, i || ':' || block
		  FROM generate_series(s, least(s + per_txn - 1, total)) i;
		COMMIT;
		s := s + per_txn;
	END LOOP;
END $$;
-- H: single-row UPDATEs of random keys of hist, per_txn to a transaction.
-- (The key is drawn first: random() in the WHERE clause would be evaluated per row, a seq scan.)
CREATE PROCEDURE gen_hist(total int, per_txn int, keys int) LANGUAGE plpgsql AS $$
DECLARE k int;
BEGIN
	FOR i IN 1..total LOOP
		k := 1 + floor(random() * keys)::int;
		UPDATE hist SET a = a + 1, b = left(md5(random()::text), 10) WHERE id = k;
		IF i % per_txn = 0 THEN
			COMMIT;
		END IF;
	END LOOP;
END $$;
"""

# The lag test's transaction: one account update as in pgbench's TPC-B-like script (REPLICA
# IDENTITY FULL, so the old row travels too) and one probe row. Light enough that this 2-core
# machine sustains 2,000 tps with a consumer streaming beside it.
LAG_SCRIPT = """\\set aid random(1, 100000 * :scale)
\\set delta random(-5000, 5000)
BEGIN;
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
INSERT INTO lag_probe (aid) VALUES (:aid);
END;
"""


def short_count(n):
    """20000000 as 20M, 0 as 0."""
    for div, unit in ((1_000_000, "M"), (1_000, "k")):
        if n and n % div == 0:
            return "%d%s" % (n // div, unit)
    return str(n)


def log(msg):
    """A progress line on stderr, so stdout keeps the result tables."""
    print(msg, file=sys.stderr, flush=True)


def lsn_int(text):
    """An LSN 'X/Y' as an integer."""
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


class Db:
    """One autocommit connection with small query helpers."""

    def __init__(self, host, port, dbname):
        self.dsn = "host=%s port=%d dbname=%s user=postgres" % (host, port, dbname)
        self.conn = psycopg.connect(self.dsn, autocommit=True)

    def run(self, sql, params=None):
        """Executes sql; returns all rows when it returns any."""
        with self.conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall() if cur.description else None

    def one(self, sql, params=None):
        """The first column of the first row, or None."""
        rows = self.run(sql, params)
        return rows[0][0] if rows else None

    def close(self):
        self.conn.close()


def proc_cpu_us(pid):
    """User plus system CPU time of a process in µs, or None when it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) * 1_000_000 // CLOCK_TICKS


def proc_memory_kb(pid):
    """VmHWM and RssAnon of a process in kB, or None when it is gone."""
    out = {}
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmHWM", "RssAnon"):
                    out[key] = int(value.split()[0])
    except OSError:
        return None
    return out


class Sampler(threading.Thread):
    """Samples CPU time and memory of the watched processes every POLL seconds.

    Processes exit at the end of a run (a walsender when its client leaves), so the last sample
    is the figure used. RssAnon (private memory) is tracked as a sampled peak; VmHWM also counts
    the shared buffers a backend has touched.
    """

    def __init__(self):
        super().__init__(daemon=True)
        self.pids, self.cpu_us, self.hwm_kb, self.anon_peak_kb, self.restarts = {}, {}, {}, {}, {}
        self.lock = threading.Lock()
        self.halt = threading.Event()

    def watch(self, role, pid):
        """Starts sampling pid as role (a new pid for a role counts as a restart, its CPU added)."""
        with self.lock:
            old = self.pids.get(role)
            if old == pid:
                return
            if old is not None:
                self.restarts[role] = self.restarts.get(role, 0) + 1
                self.cpu_us[role + "_done"] = self.cpu_us.get(role + "_done", 0) + self.cpu_us.get(role, 0)
                self.cpu_us[role] = 0
            self.pids[role] = pid
        self.sample()

    def sample(self):
        """Reads /proc once for every watched process."""
        with self.lock:
            for role, pid in self.pids.items():
                cpu, mem = proc_cpu_us(pid), proc_memory_kb(pid)
                if cpu is not None:
                    self.cpu_us[role] = cpu
                if mem:
                    self.hwm_kb[role] = max(self.hwm_kb.get(role, 0), mem.get("VmHWM", 0))
                    self.anon_peak_kb[role] = max(self.anon_peak_kb.get(role, 0), mem.get("RssAnon", 0))

    def total_cpu_us(self, role):
        """CPU time of role over all its processes, or None when none was seen."""
        if role not in self.pids:
            return None
        return self.cpu_us.get(role, 0) + self.cpu_us.get(role + "_done", 0)

    def run(self):
        while not self.halt.wait(POLL):
            self.sample()

    def stop(self):
        self.sample()
        self.halt.set()
        self.join()


class ClientConsumer:
    """A consumer that is a client process (pg_recvlogical, the prototype): done when it exits."""

    def __init__(self, argv, out_prefix):
        self.stdout = open(out_prefix + ".out", "w+")
        self.stderr = open(out_prefix + ".err", "w+")
        self.proc = subprocess.Popen(argv, stdout=self.stdout, stderr=self.stderr)
        self.exit_time = self.status = self.rusage = None
        self.waiter = threading.Thread(target=self._wait, daemon=True)
        self.waiter.start()

    def _wait(self):
        _, status, rusage = os.wait4(self.proc.pid, 0)
        self.exit_time = time.monotonic()
        self.status, self.rusage = status, rusage
        self.proc.returncode = os.waitstatus_to_exitcode(status)

    def pid(self):
        return self.proc.pid

    def done(self, end):
        if self.exit_time is None:
            return None
        if self.proc.returncode != 0:
            self.stderr.seek(0)
            raise RuntimeError("exited with %d: %s" % (self.proc.returncode, self.stderr.read()[-2000:]))
        return self.exit_time

    def kill(self):
        if self.exit_time is None:
            self.proc.kill()
            self.waiter.join(5)

    def finish(self, sampler):
        """The client's own CPU and peak RSS from its rusage, and what it printed."""
        self.kill()
        self.stdout.seek(0)
        out = self.stdout.read().strip()
        extra = {}
        if self.rusage is not None:
            extra["consumer_cpu_us"] = int((self.rusage.ru_utime + self.rusage.ru_stime) * 1e6)
            extra["consumer_vmhwm_kb"] = self.rusage.ru_maxrss
        if out.startswith("{"):
            extra["client_report"] = json.loads(out.splitlines()[-1])
        return extra


class BuiltinConsumer:
    """PostgreSQL's own subscription into apply_target on the downstream."""

    def __init__(self, h, name, slot, upstream_conninfo):
        self.h, self.name = h, name
        h.target.run("CREATE SUBSCRIPTION %s CONNECTION '%s' PUBLICATION %s WITH (copy_data = false, "
                     "create_slot = false, slot_name = '%s', enabled = true, streaming = on)"
                     % (name, upstream_conninfo, PUBLICATION, slot))

    def pid(self):
        return self.h.target.one("SELECT pid FROM pg_stat_subscription WHERE subname = %s AND relid IS NULL",
                                 (self.name,))

    def done(self, end):
        reached = self.h.target.one(
            "SELECT o.remote_lsn >= %s::pg_lsn FROM pg_replication_origin_status o "
            "JOIN pg_subscription s ON o.external_id = 'pg_' || s.oid WHERE s.subname = %s", (end, self.name))
        return time.monotonic() if reached else None

    def live(self):
        return self.h.target.one("SELECT received_lsn IS NOT NULL FROM pg_stat_subscription "
                                 "WHERE subname = %s AND relid IS NULL", (self.name,))

    def finish(self, sampler):
        t = self.h.target
        t.run("ALTER SUBSCRIPTION %s DISABLE" % self.name)
        t.run("ALTER SUBSCRIPTION %s SET (slot_name = NONE)" % self.name)
        t.run("DROP SUBSCRIPTION %s" % self.name)
        return {}


class AuditConsumer:
    """logical_audit with its default options, or those given with --audit-options."""

    def __init__(self, h, name, slot, upstream_conninfo, options, enabled=True):
        self.h, self.name = h, name
        h.audit.run("SELECT logical_audit.create_subscription(name => %s, conninfo => %s, publications => %s, "
                    "slot_name => %s, create_slot => false, enabled => %s, options => %s::jsonb)",
                    (name, upstream_conninfo, [PUBLICATION], slot, enabled, options))
        self.id = h.audit.one("SELECT subscription_id FROM logical_audit.store WHERE name = %s", (name,))

    def start(self):
        """Starts the worker of a subscription created disabled."""
        self.h.audit.run("SELECT logical_audit.start(%s)", (self.name,))
        return self

    def pid(self):
        return self.h.audit.one("SELECT pid FROM logical_audit.status WHERE name = %s", (self.name,))

    def done(self, end):
        row = self.h.audit.run("SELECT coalesce(flushed_lsn >= %s::pg_lsn, false), state, last_error "
                               "FROM logical_audit.status WHERE name = %s", (end, self.name))
        if row and row[0][0]:
            return time.monotonic()
        return None

    def describe(self):
        return self.h.audit.run("SELECT state, received_lsn::text, flushed_lsn::text, transactions, changes, "
                                "last_error FROM logical_audit.status WHERE name = %s", (self.name,))

    def live(self):
        return self.h.audit.one("SELECT state = 'streaming' FROM logical_audit.status WHERE name = %s",
                                (self.name,))

    def finish(self, sampler):
        a = self.h.audit
        row = a.run("SELECT transactions, changes, last_error FROM logical_audit.status WHERE name = %s",
                    (self.name,))
        a.run("SELECT logical_audit.stop(%s)", (self.name,))
        a.run("SELECT logical_audit.drop_subscription(%s, drop_slot => false)", (self.name,))
        extra = {}
        if row:
            extra["client_report"] = {"transactions": row[0][0], "rows": row[0][1], "last_error": row[0][2]}
        return extra


class Profiler:
    """perf record of one process from the moment its pid is known, then a flat report of it."""

    def __init__(self, out_prefix):
        self.out_prefix, self.proc = out_prefix, None

    def attach(self, pid):
        if self.proc is None:
            self.proc = subprocess.Popen(["perf", "record", "-q", "-g", "-F", "999", "-p", str(pid), "-o",
                                          self.out_prefix + ".data"], stdout=subprocess.DEVNULL)

    def finish(self):
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait()
        with open(self.out_prefix + ".txt", "w") as out:
            subprocess.run(["perf", "report", "-i", self.out_prefix + ".data", "--stdio", "--no-children",
                            "-g", "none", "--percent-limit", "0.5", "--sort", "symbol"],
                           stdout=out, stderr=subprocess.DEVNULL)
        log("profile of the audit worker: %s.txt" % self.out_prefix)


class Harness:
    def __init__(self, args):
        self.args = args
        self.cfg = MODES[args.mode]
        self.pg_bin = args.pg_bin
        self.up_conninfo = "host=%s port=%d dbname=bench user=postgres" % (args.host, args.up_port)
        self.results, self.lag_results, self.errors = [], [], []
        self.consumers = [c for c in args.consumers.split(",") if c]
        self.only = set(args.only.split(",")) if args.only else None
        # H runs when asked for: with --history, or named by --only (then with no history held).
        asked = args.history is not None or (self.only and "H" in self.only)
        self.history = [int(n) for n in (args.history or "0").split(",")] if asked else []
        if any(n < 0 or n % H_TXN for n in self.history):
            raise SystemExit("--history: counts of change rows, multiples of %d" % H_TXN)
        self.logdir = os.path.join(args.out_dir, "logs")
        os.makedirs(self.logdir, exist_ok=True)

    # ---- setup -----------------------------------------------------------------------------
    def pgbench(self, port, dbname, *extra, env_options=None):
        """Runs pgbench as a client of one cluster; returns its output."""
        env = dict(os.environ)
        if env_options:
            env["PGOPTIONS"] = env_options
        argv = [os.path.join(self.pg_bin, "pgbench"), "-h", self.args.host, "-p", str(port), "-U", "postgres",
                *extra, dbname]
        res = subprocess.run(argv, env=env, capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError("pgbench %s failed: %s" % (" ".join(extra), res.stderr[-2000:]))
        return res.stdout + res.stderr

    def setup(self):
        a = self.args
        log("== setup: databases, tables, pgbench scale %d on both sides, publication" % PGBENCH_SCALE)
        Db(a.host, a.up_port, "postgres").run("CREATE DATABASE bench")
        Db(a.host, a.down_port, "postgres").run("CREATE DATABASE apply_target")
        self.up = Db(a.host, a.up_port, "bench")
        self.upmon = Db(a.host, a.up_port, "bench")  # polled while a consumer runs
        self.target = Db(a.host, a.down_port, "apply_target")
        self.audit = Db(a.host, a.down_port, "postgres")
        self.up.run(SCHEMA)
        self.up.run(GENERATORS)
        self.up.run("CREATE EXTENSION pg_walinspect")
        self.target.run(SCHEMA)
        self.target.run("CREATE EXTENSION pg_walinspect")
        for port, db in ((a.up_port, "bench"), (a.down_port, "apply_target")):
            self.pgbench(port, db, "-i", "-q", "-I", "dtgp", "-s", str(PGBENCH_SCALE))
        for t in ("pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history"):
            self.up.run("ALTER TABLE %s REPLICA IDENTITY FULL" % t)
        self.up.run("CREATE PUBLICATION %s FOR ALL TABLES" % PUBLICATION)
        self.audit.run("CREATE EXTENSION logical_audit")
        self.audit.run("CREATE EXTENSION pg_walinspect")
        if any(self.selected(w[0]) for w in self.workloads() if w[6] is not None):
            self.fill_hist()
        self.warm_shared_buffers()
        self.lag_script = os.path.join(self.logdir, "lag_probe.pgbench")
        with open(self.lag_script, "w") as f:
            f.write(LAG_SCRIPT)

    def warm_shared_buffers(self):
        """Has the downstream touch each of its shared buffers once (a table of one row per page, read
        into the buffers, then dropped), as a server that has run for a while has: the kernel's first
        touch of shared memory would otherwise fall on whichever consumer first needs more buffers
        than those before it."""
        d = self.audit
        pages = d.one("SELECT setting::bigint FROM pg_settings WHERE name = 'shared_buffers'")
        d.run("CREATE EXTENSION pg_prewarm")
        d.run("CREATE UNLOGGED TABLE bench_warm (filler text) WITH (fillfactor = 10)")
        d.run("INSERT INTO bench_warm SELECT repeat('x', 800) FROM generate_series(1, %s)", (pages,))
        d.run("SELECT pg_prewarm('bench_warm', 'buffer')")
        d.run("DROP TABLE bench_warm")
        d.run("DROP EXTENSION pg_prewarm")

    # ---- workloads ---------------------------------------------------------------------------
    def workloads(self):
        """(name, rows, tables to empty first, generator, upstream settings, runs, history held) per workload."""
        c = self.cfg
        n1, n3, tx2 = c["w1_rows"], c["w3_rows"], c["w2_tx"]
        sync_off = "SET synchronous_commit = off"
        gen_w1 = lambda per: lambda: self.up.run(sync_off) or self.up.run("CALL gen_narrow(%s, %s)", (n1, per))

        def gen_w2():
            self.pgbench(self.args.up_port, "bench", "-n", "-c", "2", "-j", "2", "-t", str(tx2),
                         env_options="-c synchronous_commit=off")

        def gen_w3():
            self.up.run(sync_off)
            self.up.run("CALL gen_toasty(%s, 10)", (n3,))
            for _ in range(W3_UPDATE_ROUNDS):
                self.up.run("UPDATE toasty SET n = n + 1")

        def gen_w4():
            self.up.run(sync_off)
            self.up.run("CALL gen_narrow(%s, %s)", (c["w4_rows"], c["w4_rows"]))

        def gen_h():
            self.up.run(sync_off)
            self.up.run("CALL gen_hist(%s, %s, %s)", (H_UPDATES, H_TXN, H_KEYS))

        runs = c["w1_runs"]
        return [
            ("W1-1txn", n1, ["narrow"], gen_w1(n1), {}, runs, None),
            ("W1-1000", n1, ["narrow"], gen_w1(1000), {}, runs, None),
            ("W1-1row", n1, ["narrow"], gen_w1(1), {}, runs, None),
            ("W2", tx2 * 2 * 4, [], gen_w2, {}, 1, None),
            ("W3", n3 * (1 + W3_UPDATE_ROUNDS), ["toasty"], gen_w3, {}, 1, None),
            ("W4", c["w4_rows"], ["narrow"], gen_w4, {"logical_decoding_work_mem": "64kB"}, 1, None),
        ] + [("H-" + short_count(n), H_UPDATES, [], gen_h, {}, 1, n) for n in self.history]

    def selected(self, name):
        """Whether --only names the workload (H names all of H's)."""
        return not self.only or name in self.only or (name.startswith("H-") and "H" in self.only)

    def checkpoint_both(self):
        self.up.run("CHECKPOINT")
        self.audit.run("CHECKPOINT")

    def end_of_last_commit(self, start):
        """The end LSN of the last commit record written since start (nothing else commits)."""
        flush = self.up.one("SELECT pg_current_wal_flush_lsn()::text")
        for window in (1 << 20, 64 << 20, None):
            lo = start if window is None else self.up.one(
                "SELECT greatest(%s::pg_lsn, %s::pg_lsn - %s)::text", (start, flush, window))
            end = self.up.one(
                "SELECT end_lsn::text FROM pg_get_wal_records_info(%s, %s) WHERE resource_manager = 'Transaction' "
                "AND record_type = 'COMMIT' ORDER BY start_lsn DESC LIMIT 1", (lo, flush))
            if end:
                return end
        raise RuntimeError("no commit record between %s and %s" % (start, flush))

    def set_upstream(self, settings):
        """ALTER SYSTEM for the given settings (None resets them) and reloads the upstream."""
        for key, value in settings.items():
            if value is None:
                self.up.run("ALTER SYSTEM RESET %s" % key)
            else:
                self.up.run("ALTER SYSTEM SET %s = '%s'" % (key, value))
        self.up.run("SELECT pg_reload_conf()")
        time.sleep(0.2)

    def drop_slot(self, slot):
        """Drops an upstream slot once no walsender holds it."""
        deadline = time.monotonic() + 30
        while True:
            row = self.up.run("SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", (slot,))
            if not row:
                return
            if row[0][0] is None:
                self.up.run("SELECT pg_drop_replication_slot(%s)", (slot,))
                return
            if time.monotonic() > deadline:
                self.up.run("SELECT pg_terminate_backend(%s)", (row[0][0],))
            time.sleep(0.1)

    def run_workload(self, name, rows, tables, generate, settings, run, history=None):
        log("== %s run %d: %d rows" % (name, run, rows))
        for t in tables:
            self.up.run("TRUNCATE %s" % t)
        self.checkpoint_both()
        slots = {c: "bench_%s" % c for c in self.consumers}
        for slot in slots.values():
            self.up.run("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
        start = self.up.one("SELECT pg_current_wal_lsn()::text")
        t0 = time.monotonic()
        generate()
        gen_s = time.monotonic() - t0
        self.up.run("CHECKPOINT")  # flushes the WAL and keeps a checkpoint out of the measurements
        end = self.end_of_last_commit(start)
        wal_bytes = lsn_int(end) - lsn_int(start)
        self.current_rows, self.current_wal, self.current_start = rows, wal_bytes, start
        log("   generated in %.1f s; WAL %s .. %s (%.1f MB)" % (gen_s, start, end, wal_bytes / 1e6))
        if settings:
            self.set_upstream(settings)
        try:
            for c in self.consumers:
                res = dict(workload=name, run=run, consumer=CONSUMERS[c], rows=rows, wal_bytes=wal_bytes,
                           start_lsn=start, end_lsn=end, generate_s=round(gen_s, 3))
                try:
                    res.update(self.measure(c, name, run, slots[c], end, tables, history))
                    log("   %-21s %8.2f s %12s rows/s" % (res["consumer"], res["seconds"],
                                                          "{:,.0f}".format(res["rows_per_s"])))
                except Exception as e:  # one failing consumer must not end the run
                    res["error"] = str(e)[-2000:]
                    self.errors.append("%s run %d %s: %s" % (name, run, CONSUMERS[c], res["error"]))
                    log("   %-21s FAILED: %s" % (CONSUMERS[c], res["error"]))
                self.results.append(res)
        finally:
            if settings:
                self.set_upstream({k: None for k in settings})
            for slot in slots.values():
                self.drop_slot(slot)

    # ---- one consumer ------------------------------------------------------------------------
    def start_consumer(self, c, tag, slot, end, enabled=True):
        a = self.args
        if c == "a":
            argv = [os.path.join(self.pg_bin, "pg_recvlogical"), "-h", a.host, "-p", str(a.up_port), "-U", "postgres",
                    "-d", "bench", "--slot", slot, "--start", "--no-loop", "-f", "/dev/null", "--endpos", end,
                    "-o", "proto_version=1", "-o", "publication_names=" + PUBLICATION]
            return ClientConsumer(argv, os.path.join(self.logdir, tag + "_a"))
        if c == "c":
            argv = ["/usr/bin/python3", os.path.join(HERE, "prototype_consumer.py"), "--seed", a.seed,
                    "--dsn", self.up_conninfo, "--slot", slot, "--publication", PUBLICATION, "--end", end]
            return ClientConsumer(argv, os.path.join(self.logdir, tag + "_c"))
        name = "bench_%s_%s" % (c, tag.lower().replace("-", "_"))
        if c == "b":
            return BuiltinConsumer(self, name, slot, self.up_conninfo)
        return AuditConsumer(self, name, slot, self.up_conninfo, self.args.audit_options, enabled)

    def prepare_downstream(self, c, tables):
        if c == "b":
            for t in tables:
                self.target.run("TRUNCATE %s" % t)
        if c == "d":
            self.audit.run("TRUNCATE logical_audit.change_data, logical_audit.transaction_data, "
                           "logical_audit.message_data, logical_audit.row_image")
        self.audit.run("CHECKPOINT")

    def measure(self, c, name, run, slot, end, tables, history=None):
        """Runs consumer c from its slot to end; returns its metrics. With history (H), d's store is
        prefilled with that many change rows before the clock starts, and measured after the run."""
        self.prepare_downstream(c, tables)
        held, figures = None, {}
        if c == "d" and history is not None:
            held = self.start_consumer(c, "%s_%d" % (name, run), slot, end, enabled=False)
            try:
                figures = self.prefill_history(held, history)
            except Exception:
                held.finish(None)
                raise
        sampler = Sampler()
        sampler.start()
        t0 = time.monotonic()
        consumer = held.start() if held else self.start_consumer(c, "%s_%d" % (name, run), slot, end)
        profiler = None
        if self.args.perf and c == "d" and run == 1:
            profiler = Profiler(os.path.join(self.args.out_dir, "perf-%s" % name))
        deadline = t0 + self.cfg["timeout"]
        ws_pid = None
        try:
            while True:
                if ws_pid is None:
                    ws_pid = self.upmon.one("SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s",
                                            (slot,))
                    if ws_pid:
                        sampler.watch("walsender", ws_pid)
                pid = consumer.pid()
                if pid:
                    sampler.watch("consumer", pid)
                    if profiler:
                        profiler.attach(pid)
                t1 = consumer.done(end)
                if t1:
                    break
                if time.monotonic() > deadline:
                    state = consumer.describe() if hasattr(consumer, "describe") else ""
                    raise RuntimeError("did not reach %s within %d s %s" % (end, self.cfg["timeout"], state))
                time.sleep(POLL)
        finally:
            sampler.stop()
            if profiler:
                profiler.finish()
            extra = consumer.finish(sampler)
        seconds = t1 - t0
        rows = self.current_rows
        out = dict(seconds=round(seconds, 3), rows_per_s=rows / seconds,
                   wal_mb_per_s=self.current_wal / 1e6 / seconds,
                   walsender_cpu_us=sampler.total_cpu_us("walsender"),
                   consumer_cpu_us=sampler.total_cpu_us("consumer"),
                   consumer_vmhwm_kb=sampler.hwm_kb.get("consumer"),
                   consumer_anon_peak_kb=sampler.anon_peak_kb.get("consumer"),
                   consumer_restarts=sampler.restarts.get("consumer", 0))
        out.update({k: v for k, v in extra.items() if v is not None})
        report = out.pop("client_report", None)
        if report:
            out["counted_rows"] = report.get("rows")
            if report.get("last_error"):
                out["last_error"] = report["last_error"]
            if out["counted_rows"] != rows:
                self.errors.append("%s run %d %s: counted %s rows, expected %d"
                                   % (name, run, CONSUMERS[c], out["counted_rows"], rows))
        for key in ("walsender_cpu_us", "consumer_cpu_us"):
            if out.get(key) is not None:
                out[key.replace("_us", "_us_per_row")] = out[key] / rows
        if held:
            out.update(figures)
            try:
                out.update(self.held_figures(held, history, rows, figures))
            except Exception as e:  # the ingest figures stand
                out["history_error"] = str(e)[-2000:]
                self.errors.append("%s run %d %s figures: %s" % (name, run, CONSUMERS[c], out["history_error"]))
        return out

    # ---- H: the history the store already holds ------------------------------------------------
    def fill_hist(self):
        """Fills hist with H_KEYS rows on both sides (before any slot: no workload's WAL has them)."""
        for db in (self.up, self.target):
            db.run("TRUNCATE hist")
            db.run("INSERT INTO hist SELECT i, 0, left(md5(i::text), 10) FROM generate_series(1, %s) i", (H_KEYS,))
            db.run("VACUUM ANALYZE hist")

    def prefill_history(self, sub, n):
        """Gives the (disabled) subscription's store n synthetic changes of public.hist, as its worker
        would have written them, H_PER_DAY a day over the days before today, in daily partitions."""
        a = self.audit
        a.run("SELECT logical_audit.set_partition_interval(%s, '1 day')", (sub.name,))
        if n == 0:
            return {}
        txns, per_day = n // H_TXN, H_PER_DAY // H_TXN
        days = -(-txns // per_day)
        if 16 * (txns + 1) >= lsn_int(self.current_start):
            raise RuntimeError("the synthetic LSNs would reach the upstream's (%s)" % self.current_start)
        log("   prefill: %s synthetic changes of public.hist over %d days" % ("{:,}".format(n), days))
        t0 = time.monotonic()
        rel = a.one("INSERT INTO logical_audit.relation (subscription_id, schema_name, table_name) "
                    "VALUES (%s, 'public', 'hist') RETURNING id", (sub.id,))
        base = a.one("SELECT (date_trunc('day', now() AT TIME ZONE 'UTC') - %s * interval '1 day') "
                     "AT TIME ZONE 'UTC'", (days,))
        for d in range(days):
            a.run("SELECT logical_audit.create_partitions(%s, %s::timestamptz + %s * interval '1 day')",
                  (sub.id, base, d))
        params = dict(sub=sub.id, rel=rel, base=base, step=datetime.timedelta(days=1) / per_day, n=n, keys=H_KEYS,
                      txn=H_TXN)
        failures = []

        def fill(first_day):  # every other day, on a connection of its own: two cores
            db = Db(self.args.host, self.args.down_port, "postgres")
            try:
                for d in range(first_day, days, 2):
                    p = dict(params, lo=d * per_day, hi=min(txns, (d + 1) * per_day) - 1)
                    db.run(H_PREFILL_TXN, p)
                    db.run(H_PREFILL_CHANGE, p)
            except Exception as e:
                failures.append(e)
            finally:
                db.close()
        threads = [threading.Thread(target=fill, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if failures:
            raise failures[0]
        a.run(H_PREFILL_IMAGE, params)
        a.run("CHECKPOINT")  # as prepare_downstream did: no checkpoint in the measurement
        seconds = time.monotonic() - t0
        log("   prefilled in %.1f s (%s change rows/s)" % (seconds, "{:,.0f}".format(n / seconds)))
        return dict(history_rows=n, history_days=days, history_from=base, prefill_s=round(seconds, 3),
                    prefill_rows_per_s=n / seconds)

    def held_figures(self, sub, n, rows, prefill):
        """After an H run of d: the store's size per change row, history() on random keys,
        table_as_of() now and in the middle of the history, and the time to drop its oldest day."""
        a, out = self.audit, {}
        changes = a.one("SELECT count(*) FROM logical_audit.change_data WHERE subscription_id = %s", (sub.id,))
        if changes != n + rows:
            self.errors.append("H %d: %d change rows in the store, expected %d" % (n, changes, n + rows))
        store = a.one("SELECT sum(bytes)::bigint FROM logical_audit.partitions WHERE subscription_id = %s",
                      (sub.id,))
        out.update(change_rows=changes, store_bytes=store, bytes_per_change=store / changes,
                   row_image_bytes=a.one("SELECT pg_total_relation_size('logical_audit.row_image')"))
        rng = random.Random(n)
        times, counts = [], []
        for _ in range(H_HISTORY_CALLS):
            t0 = time.monotonic()
            counts.append(a.one("SELECT count(*) FROM logical_audit.history('public', 'hist', "
                                "jsonb_build_object('id', %s), %s)", (rng.randint(1, H_KEYS), sub.name)))
            times.append(time.monotonic() - t0)
        times.sort()
        pick = lambda q: times[min(len(times) - 1, int(q * len(times)))]
        out.update(history_calls=len(times), history_p50_ms=pick(0.50) * 1e3, history_p99_ms=pick(0.99) * 1e3,
                   history_rows_min=min(counts), history_rows_mean=sum(counts) / len(counts))
        if n >= H_KEYS and min(counts) < n // H_KEYS:
            self.errors.append("H %d: a history() of %d rows, every key has at least %d"
                               % (n, min(counts), n // H_KEYS))
        log("   history(): p50 %.2f ms, p99 %.2f ms, %.1f rows a key" % (out["history_p50_ms"], out["history_p99_ms"],
                                                                       out["history_rows_mean"]))
        ats = [("now", a.one("SELECT now()"))]
        if n:  # the middle of the synthetic history
            ats.append(("mid", prefill["history_from"] + datetime.timedelta(hours=12 * prefill["history_days"])))
        for label, at in ats:
            t0 = time.monotonic()
            count = a.one("SELECT count(*) FROM logical_audit.table_as_of('public', 'hist', %s, %s)", (at, sub.name))
            out.update({"as_of_%s_s" % label: time.monotonic() - t0, "as_of_%s_rows" % label: count})
            log("   table_as_of(%s): %.2f s, %s rows" % (label, out["as_of_%s_s" % label], "{:,}".format(count)))
        if n:
            oldest = a.run("SELECT partition::text, audit_table FROM logical_audit.partitions p "
                           "WHERE subscription_id = %s AND from_time = (SELECT min(from_time) "
                           "FROM logical_audit.partitions WHERE subscription_id = p.subscription_id)", (sub.id,))
            day = [p for p, _ in oldest]
            out["drop_day_rows"] = a.one("SELECT count(*) FROM %s" % [p for p, kind in oldest if kind == "change"][0])
            t0 = time.monotonic()
            a.run("DROP TABLE %s" % ", ".join(day))
            out["drop_day_ms"] = (time.monotonic() - t0) * 1e3
            log("   dropped the oldest day (%s change rows) in %.1f ms" % ("{:,}".format(out["drop_day_rows"]),
                                                                         out["drop_day_ms"]))
        return out

    # ---- lag under a steady load ----------------------------------------------------------------
    def lag_test(self, c):
        seconds = self.cfg["lag_s"]
        log("== lag: %s streaming live, pgbench -R %d -T %d" % (CONSUMERS[c], LAG_RATE, seconds))
        self.up.run("TRUNCATE lag_probe")
        self.prepare_downstream(c, ["lag_probe"])
        self.up.run("CHECKPOINT")
        slot = "bench_lag_%s" % c
        self.up.run("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
        consumer = self.start_consumer(c, "lag", slot, None)
        try:
            deadline = time.monotonic() + 30
            while not consumer.live():
                if time.monotonic() > deadline:
                    raise RuntimeError("%s did not start streaming" % CONSUMERS[c])
                time.sleep(0.1)
            start = self.up.one("SELECT pg_current_wal_lsn()::text")
            down_start = self.audit.one("SELECT pg_current_wal_lsn()::text")
            out = self.pgbench(self.args.up_port, "bench", "-n", "-c", "4", "-j", "2", "-R", str(LAG_RATE),
                               "-T", str(seconds), "-D", "scale=%d" % PGBENCH_SCALE, "-f", self.lag_script)
            end = self.end_of_last_commit(start)
            deadline = time.monotonic() + self.cfg["timeout"]
            while not consumer.done(end):
                if time.monotonic() > deadline:
                    raise RuntimeError("did not catch up to %s" % end)
                time.sleep(POLL)
            caught_up = time.monotonic()
            confirm_s = self.wait_confirmed(slot, end) - caught_up
            lags = self.collect_lags(c, down_start)
        finally:
            consumer.finish(None)
            self.drop_slot(slot)
        lines = [l.strip() for l in out.splitlines() if l.startswith("tps") or "latency average" in l]
        tps = [float(l.split()[2]) for l in lines if l.startswith("tps")]
        res = dict(consumer=CONSUMERS[c], seconds=seconds, rate=LAG_RATE, tps=tps[0] if tps else None,
                   transactions=len(lags), pgbench=" / ".join(lines), confirm_ms=round(confirm_s * 1e3, 1))
        if lags:
            lags.sort()
            pick = lambda q: lags[min(len(lags) - 1, int(q * len(lags)))]
            res.update(p50_ms=round(pick(0.50) * 1e3, 2), p99_ms=round(pick(0.99) * 1e3, 2),
                       max_ms=round(lags[-1] * 1e3, 2))
        log("   %s" % json.dumps(res))
        self.lag_results.append(res)

    def wait_confirmed(self, slot, end):
        """When (monotonic) the upstream slot's confirmed_flush_lsn reaches end, looked at every 5 ms.

        Called once the consumer has end durable: the difference is how late the upstream learns of it,
        which decides when it may recycle WAL and what its lag monitors show.
        """
        deadline = time.monotonic() + 60
        while not self.up.one("SELECT confirmed_flush_lsn >= %s::pg_lsn FROM pg_replication_slots "
                              "WHERE slot_name = %s", (end, slot)):
            if time.monotonic() > deadline:
                raise RuntimeError("the upstream slot %s was not confirmed up to %s" % (slot, end))
            time.sleep(0.005)
        return time.monotonic()

    def local_commits_sql(self, start, end):
        """A query of (xid, local commit time) for the downstream's commits between two of its LSNs.

        A commit record carries the local commit time first in its description; the commit
        timestamp (pg_xact_commit_timestamp) of a replicated transaction is the upstream's.
        """
        return ("SELECT xid, split_part(description, ';', 1)::timestamptz AS local_commit "
                "FROM pg_get_wal_records_info('%s', '%s') WHERE resource_manager = 'Transaction' "
                "AND record_type = 'COMMIT'" % (start, end))

    def collect_lags(self, c, down_start):
        """Seconds from each upstream commit to the local commit of what the consumer wrote for it."""
        down_end = self.audit.one("SELECT pg_current_wal_insert_lsn()::text")
        deadline = time.monotonic() + 10
        while not self.audit.one("SELECT pg_current_wal_flush_lsn() >= %s::pg_lsn", (down_end,)):
            if time.monotonic() > deadline:  # the WAL writer flushes within wal_writer_delay
                raise RuntimeError("the downstream did not flush its WAL to %s" % down_end)
            time.sleep(0.05)
        commits = self.local_commits_sql(down_start, down_end)
        if c == "d":
            rows = self.audit.run("WITH c AS (%s) SELECT extract(epoch FROM c.local_commit - t.commit_time)::float8 "
                                  "FROM logical_audit.transaction_data t JOIN c ON c.xid = t.xmin "
                                  "WHERE t.change_count > 0" % commits)
            return [r[0] for r in rows]
        upstream = dict(self.up.run("SELECT id, extract(epoch FROM pg_xact_commit_timestamp(xmin))::float8 "
                                    "FROM lag_probe"))
        applied = self.target.run("WITH c AS (%s) SELECT p.id, extract(epoch FROM c.local_commit)::float8 "
                                  "FROM lag_probe p JOIN c ON c.xid = p.xmin" % commits)
        return [t - upstream[i] for i, t in applied if i in upstream]

    # ---- the whole run -------------------------------------------------------------------------
    def run(self):
        self.setup()
        for name, rows, tables, generate, settings, runs, history in self.workloads():
            if not self.selected(name):
                continue
            for run in range(1, runs + 1):
                self.run_workload(name, rows, tables, generate, settings, run, history)
        if not self.only or "lag" in self.only:
            for c in ("b", "d"):
                if c in self.consumers:
                    try:
                        self.lag_test(c)
                    except Exception as e:
                        self.errors.append("lag %s: %s" % (CONSUMERS[c], e))
                        log("   lag %s FAILED: %s" % (CONSUMERS[c], e))


def interrupted(signum, frame):
    """SIGTERM (run.sh's cleanup) ends the run through the report of what was measured."""
    raise KeyboardInterrupt("terminated")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=sorted(MODES), default="full")
    p.add_argument("--host", required=True, help="socket directory of both clusters")
    p.add_argument("--up-port", type=int, required=True)
    p.add_argument("--down-port", type=int, required=True)
    p.add_argument("--seed", required=True, help="the prototype's seed_consumer.py")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--pg-bin", required=True)
    p.add_argument("--work", help="the clusters' directory (for the record)")
    p.add_argument("--only", help="comma-separated workloads to run (W1-1txn,W1-1000,W1-1row,W2,W3,W4,H,lag)")
    p.add_argument("--consumers", default="a,b,c,d", help="comma-separated consumers among a,b,c,d")
    p.add_argument("--audit-options", default="{}", help="options of the logical_audit subscription (jsonb)")
    p.add_argument("--history", help="comma-separated counts of change rows held before each run of H (0,20000000)")
    p.add_argument("--perf", action="store_true", help="profile the audit worker with perf (perf-<workload>.txt)")
    args = p.parse_args()
    h = Harness(args)
    started = time.time()
    signal.signal(signal.SIGTERM, interrupted)
    try:
        h.run()
    except KeyboardInterrupt:
        h.errors.append("interrupted: the run is incomplete")
    finally:
        import report
        report.write_all(h, args, started)
    sys.exit(1 if h.errors else 0)


if __name__ == "__main__":
    sys.dont_write_bytecode = True  # leave the repository's bench/ as it is
    sys.path.insert(0, HERE)
    main()
