"""Turns bench/harness.py's measurements into the printed table, the targets of issue 5,
results.json, results.csv and a gnuplot chart (rows_per_s.png)."""
import csv
import json
import os
import platform
import shutil
import statistics
import subprocess
import time

ORDER = ["pg_recvlogical", "builtin_subscription", "python_prototype", "logical_audit"]
SHORT = {"pg_recvlogical": "a", "builtin_subscription": "b", "python_prototype": "c", "logical_audit": "d"}
METRICS = ["seconds", "rows_per_s", "wal_mb_per_s", "walsender_cpu_us_per_row", "consumer_cpu_us_per_row",
           "consumer_vmhwm_kb", "consumer_anon_peak_kb"]


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def add_ratios(runs):
    """Adds ratio_a, ratio_b and ratio_c to each run's row: its rows/s over that same run's a, b and c."""
    by_run = {}
    for r in runs:
        by_run.setdefault((r["workload"], r["run"]), {})[r["consumer"]] = r
    for group in by_run.values():
        for r in group.values():
            for key, base in (("ratio_a", "pg_recvlogical"), ("ratio_b", "builtin_subscription"),
                              ("ratio_c", "python_prototype")):
                b = group.get(base, {}).get("rows_per_s")
                if r.get("rows_per_s") and b:
                    r[key] = r["rows_per_s"] / b


def summarize(runs):
    """One row per (workload, consumer): medians over the runs (ratios: medians of per-run ratios)."""
    groups = {}
    for r in runs:
        groups.setdefault((r["workload"], r["consumer"]), []).append(r)
    workloads = []
    for r in runs:
        if r["workload"] not in workloads:
            workloads.append(r["workload"])
    out = []
    for w in workloads:
        for c in ORDER:
            rs = groups.get((w, c))
            if not rs:
                continue
            row = dict(workload=w, consumer=c, runs=len(rs), failed=sum(1 for r in rs if "error" in r),
                       rows=rs[0]["rows"], wal_mb=rs[0]["wal_bytes"] / 1e6)
            for m in METRICS + ["ratio_a", "ratio_b", "ratio_c"]:
                row[m] = median([r.get(m) for r in rs])
            out.append(row)
    return out


def fmt(value, spec, width):
    return ("{:" + spec + "}").format(value).rjust(width) if value is not None else "-".rjust(width)


def print_table(summary, lag):
    print()
    print("Catch-up from each consumer's slot to the workload's last commit (medians; x(a), x(b): rows/s over")
    print("the same run's pg_recvlogical and built-in subscription; CPU from /proc; MB = 10^6 bytes)")
    head = "{:<8} {:<21} {:>9} {:>8} {:>7} {:>11} {:>7} {:>6} {:>6} {:>8} {:>8} {:>8} {:>8}"
    print(head.format("workload", "consumer", "rows", "WAL MB", "sec", "rows/s", "MB/s", "x(a)", "x(b)",
                      "ws us/r", "cons us/r", "HWM MB", "anon MB"))
    for r in summary:
        kb = lambda k: r[k] / 1024 if r.get(k) is not None else None
        print("{:<8} {:<21} {} {} {} {} {} {} {} {} {} {} {}".format(
            r["workload"], r["consumer"] + (" (%d failed)" % r["failed"] if r["failed"] else ""),
            fmt(r["rows"], ",d", 9), fmt(r["wal_mb"], ",.0f", 8), fmt(r["seconds"], ".2f", 7),
            fmt(r["rows_per_s"], ",.0f", 11), fmt(r["wal_mb_per_s"], ".1f", 7), fmt(r["ratio_a"], ".2f", 6),
            fmt(r["ratio_b"], ".2f", 6), fmt(r["walsender_cpu_us_per_row"], ".2f", 8),
            fmt(r["consumer_cpu_us_per_row"], ".2f", 9), fmt(kb("consumer_vmhwm_kb"), ",.0f", 8),
            fmt(kb("consumer_anon_peak_kb"), ",.0f", 8)))
    if lag:
        print()
        print("Apply lag while streaming live under pgbench -R %s (per upstream transaction: the local commit of"
              % lag[0]["rate"])
        print("its audit rows / applied rows, from the downstream's commit record, minus its upstream commit time;")
        print("confirmed: how long after the consumer had the last commit durable the upstream slot was confirmed)")
        for l in lag:
            print("  {:<21} {:>7} txns at {:>6} tps  p50 {:>8} ms  p99 {:>8} ms  max {:>8} ms  confirmed {:>8} ms".format(
                l["consumer"], l.get("transactions", 0), fmt(l.get("tps"), ",.0f", 6), l.get("p50_ms", "-"),
                l.get("p99_ms", "-"), l.get("max_ms", "-"), l.get("confirm_ms", "-")))


def history_rows(runs):
    """One row per run of H: logical_audit's figures and the built-in subscription's rows/s on its WAL."""
    out = []
    for r in runs:
        if r["workload"].startswith("H-") and r["consumer"] == "logical_audit":
            key = (r["workload"], r["run"], "builtin_subscription")
            b = [x for x in runs if (x["workload"], x["run"], x["consumer"]) == key]
            row = {k: v for k, v in r.items() if k not in ("start_lsn", "end_lsn")}
            row["builtin_rows_per_s"] = b[0].get("rows_per_s") if b else None
            out.append(row)
    return out


def print_history(rows):
    if not rows:
        return
    print()
    print("History already held (H: %s random-key UPDATEs of a 1M-row table in 1000-row transactions, the store"
          % "{:,}".format(rows[0]["rows"]))
    print("of logical_audit prefilled with synthetic change rows of the table in daily partitions; bytes: heap,")
    print("indexes and TOAST of the subscription's change, transaction and message partitions over its change rows)")
    print("{:<8} {:>12} {:>9} {:>11} {:>12} {:>12} {:>6} {:>10} {:>10} {:>11}".format(
        "workload", "held rows", "prefill s", "prefill r/s", "audit rows/s", "builtin r/s", "x(b)", "B/change",
        "image MB", "change rows"))
    for r in rows:
        print("{:<8} {} {} {} {} {} {} {} {} {}".format(
            r["workload"], fmt(r.get("history_rows", 0), ",d", 12), fmt(r.get("prefill_s"), ".1f", 9),
            fmt(r.get("prefill_rows_per_s"), ",.0f", 11), fmt(r.get("rows_per_s"), ",.0f", 12),
            fmt(r.get("builtin_rows_per_s"), ",.0f", 12), fmt(r.get("ratio_b"), ".2f", 6),
            fmt(r.get("bytes_per_change"), ",.1f", 10),
            fmt(r["row_image_bytes"] / 1e6 if r.get("row_image_bytes") else None, ",.1f", 10),
            fmt(r.get("change_rows"), ",d", 11)))
    print()
    print("Reading it back (client-side; history(): %s calls on random keys, count(*) of each; table_as_of():"
          % "{:,}".format(rows[0].get("history_calls", 0)))
    print("count(*) at now() and at the middle of the synthetic history; drop: DROP TABLE of the oldest day's")
    print("partitions)")
    print("{:<8} {:>10} {:>10} {:>9} {:>11} {:>11} {:>11} {:>11} {:>10} {:>10}".format(
        "workload", "hist p50ms", "hist p99ms", "rows/key", "as_of now s", "rows", "as_of mid s", "rows",
        "drop ms", "day rows"))
    for r in rows:
        print("{:<8} {} {} {} {} {} {} {} {} {}".format(
            r["workload"], fmt(r.get("history_p50_ms"), ".2f", 10), fmt(r.get("history_p99_ms"), ".2f", 10),
            fmt(r.get("history_rows_mean"), ".1f", 9), fmt(r.get("as_of_now_s"), ".2f", 11),
            fmt(r.get("as_of_now_rows"), ",d", 11), fmt(r.get("as_of_mid_s"), ".2f", 11),
            fmt(r.get("as_of_mid_rows"), ",d", 11), fmt(r.get("drop_day_ms"), ",.1f", 10),
            fmt(r.get("drop_day_rows"), ",d", 10)))


def evaluate_targets(summary, lag):
    """The issue's targets for logical_audit, each met / NOT met / not measured, with the figure."""
    get = {(r["workload"], r["consumer"]): r for r in summary}
    targets = []

    def check(name, value, limit, higher_is_better, unit):
        if value is None:
            targets.append(dict(target=name, status="not measured"))
            return
        ok = value >= limit if higher_is_better else value < limit
        targets.append(dict(target=name, status="met" if ok else "NOT met", value=round(value, 3), limit=limit,
                            unit=unit))

    for w in ("W1-1txn", "W1-1000"):
        d = get.get((w, "logical_audit"), {})
        check("%s: logical_audit >= 1.0x built-in subscription" % w, d.get("ratio_b"), 1.0, True, "x")
        check("%s: logical_audit >= 0.7x pg_recvlogical" % w, d.get("ratio_a"), 0.7, True, "x")
    d = get.get(("W1-1row", "logical_audit"), {})
    check("W1-1row: logical_audit >= 1.0x built-in subscription", d.get("ratio_b"), 1.0, True, "x")
    for r in summary:
        if r["consumer"] == "logical_audit":
            check("%s: logical_audit >= 1.5x Python prototype" % r["workload"], r.get("ratio_c"), 1.5, True, "x")
    d = get.get(("W4", "logical_audit"), {})
    anon = d.get("consumer_anon_peak_kb")
    check("W4: audit worker peak private memory (RssAnon) < 100 MB", anon / 1024 if anon else None, 100, False,
          "MB")
    audit_lag = [l for l in lag if l["consumer"] == "logical_audit"]
    p99 = audit_lag[0].get("p99_ms") if audit_lag else None
    name = "lag p99 < 1 s under pgbench -R 2000"
    if audit_lag and audit_lag[0].get("tps"):
        name += " (the load reached %.0f tps)" % audit_lag[0]["tps"]
    check(name, p99, 1000, False, "ms")
    return targets


def print_targets(targets, errors):
    print()
    print("Targets of issue 5 (logical_audit):")
    for t in targets:
        figure = "" if "value" not in t else "  (%s %s, limit %s)" % (t["value"], t["unit"], t["limit"])
        print("  %-12s %s%s" % (t["status"], t["target"], figure))
    if errors:
        print()
        print("Errors:")
        for e in errors:
            print("  " + e.replace("\n", " ")[:400])


def write_csv(path, runs, lag):
    cols = ["workload", "consumer", "run", "rows", "wal_bytes", "start_lsn", "end_lsn", "generate_s", "seconds",
            "rows_per_s", "wal_mb_per_s", "ratio_a", "ratio_b", "ratio_c", "walsender_cpu_us",
            "walsender_cpu_us_per_row", "consumer_cpu_us", "consumer_cpu_us_per_row", "consumer_vmhwm_kb",
            "consumer_anon_peak_kb", "consumer_restarts", "counted_rows", "error", "lag_transactions",
            "lag_p50_ms", "lag_p99_ms", "lag_max_ms", "confirm_ms", "history_rows", "prefill_s", "change_rows",
            "bytes_per_change", "row_image_bytes", "history_p50_ms", "history_p99_ms", "as_of_now_s", "as_of_mid_s",
            "drop_day_ms"]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in runs:
            w.writerow(r)
        for l in lag:
            w.writerow(dict(workload="lag", consumer=l["consumer"], run=1, seconds=l["seconds"], rows_per_s=l.get("tps"),
                            lag_transactions=l.get("transactions"), lag_p50_ms=l.get("p50_ms"),
                            lag_p99_ms=l.get("p99_ms"), lag_max_ms=l.get("max_ms"), confirm_ms=l.get("confirm_ms")))


def draw_chart(out_dir, summary):
    """rows_per_s.png: clustered bars of median rows/s per workload and consumer (log scale)."""
    gnuplot = shutil.which("gnuplot")
    workloads = []
    for r in summary:
        if r["workload"] not in workloads:
            workloads.append(r["workload"])
    if not gnuplot or not workloads:
        return None
    get = {(r["workload"], r["consumer"]): r.get("rows_per_s") for r in summary}
    dat = os.path.join(out_dir, "rows_per_s.dat")
    with open(dat, "w") as f:
        f.write("# workload " + " ".join(ORDER) + "\n")
        for w in workloads:
            f.write(w + " " + " ".join("%.0f" % get[(w, c)] if get.get((w, c)) else "?" for c in ORDER) + "\n")
    png = os.path.join(out_dir, "rows_per_s.png")
    n = len(ORDER)
    plots = []
    for i, c in enumerate(ORDER):
        plots.append("'%s' using %d:xtic(1) title '%s (%s)'" % (dat, i + 2, c, SHORT[c]))
    for i, c in enumerate(ORDER):
        offset = (i - (n - 1) / 2) / (n + 1)
        label = "(sprintf(column(%d) < 10000 ? '%%.1fk' : '%%.0fk', column(%d) / 1000))" % (i + 2, i + 2)
        plots.append("'%s' using ($0%+.3f):%d:%s with labels rotate left offset 0,0.4 font ',8' notitle"
                     % (dat, offset, i + 2, label))
    script = "\n".join([
        "set terminal pngcairo size 1400,750 noenhanced font ',11'",
        "set output '%s'" % png,
        "set datafile missing '?'",
        "set title 'Catch-up throughput per workload (median rows/s, log scale; higher is better)'",
        "set style data histograms",
        "set style histogram clustered gap 1",
        "set style fill solid 0.85 border -1",
        "set boxwidth 0.95",
        "set logscale y",
        "set yrange [100:*]",
        "set ylabel 'rows/s'",
        "set grid ytics",
        "set key outside bottom center horizontal",
        "plot " + ", \\\n     ".join(plots),
        ""])
    gp = os.path.join(out_dir, "rows_per_s.gp")
    with open(gp, "w") as f:
        f.write(script)
    res = subprocess.run([gnuplot, gp], capture_output=True, text=True)
    if res.returncode != 0 and "pngcairo" in res.stderr:
        with open(gp, "w") as f:
            f.write(script.replace("pngcairo", "png"))
        res = subprocess.run([gnuplot, gp], capture_output=True, text=True)
    if res.returncode != 0:
        print("gnuplot failed: " + res.stderr[-500:])
        return None
    return png


def write_all(h, args, started):
    """Prints the tables and targets and writes the result files; safe after a partial run."""
    runs, lag = h.results, h.lag_results
    add_ratios(runs)
    summary = summarize(runs)
    print_table(summary, lag)
    history = history_rows(runs)
    print_history(history)
    targets = evaluate_targets(summary, lag)
    print_targets(targets, h.errors)
    try:
        version = h.up.one("SHOW server_version")
    except Exception:
        version = None
    doc = dict(mode=args.mode, started_at=time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
               duration_s=round(time.time() - started, 1),
               machine=dict(cpus=os.cpu_count(), kernel=platform.release(), python=platform.python_version()),
               postgres=version, sizes=h.cfg, runs=runs, summary=summary, lag=lag, history=history, targets=targets,
               errors=h.errors)
    with open(os.path.join(args.out_dir, "results.json"), "w") as f:
        json.dump(doc, f, indent=1, default=str)
    write_csv(os.path.join(args.out_dir, "results.csv"), runs, lag)
    png = draw_chart(args.out_dir, summary)
    print()
    print("results: %s, %s%s" % (os.path.join(args.out_dir, "results.json"), os.path.join(args.out_dir, "results.csv"),
                                 ", " + png if png else ""))
