#!/usr/bin/env bash
# Builds and runs the decoder benchmark over the captured streams of test/data, times the Python
# prototype's decoder over the same streams, and prints both side by side against the targets
# (at least 1 GB/s on narrow inserts, at least 50 times the prototype's throughput).
#
# Usage: bench/run_decoder_bench.sh  (from the repository root, as any user who can write to it)
#
# Needs (Debian 12 packages): cmake, g++, libbenchmark-dev, python3. Nothing else: the build uses
# -DLOGICAL_AUDIT_BENCH_ONLY=ON (no PostgreSQL headers, libpq or GTest), and the prototype is
# imported with a stub psycopg module. The prototype is ../shared/seed/seed_consumer.py beside the
# repository unless SEED says otherwise.
#
# Environment (all optional): BUILD_DIR (default build-bench), SEED (prototype path), PYTHON
# (default /usr/bin/python3, else python3 from PATH), MIN_TIME and PROTO_MIN_TIME (seconds per
# repetition for ours and the prototype, default 1), REPETITIONS (default 5; both report the
# median), LOGICAL_AUDIT_BENCH_DATA (directory of the stream files, default test/data).
set -euo pipefail

cd "$(dirname "$0")/.."
build_dir=${BUILD_DIR:-build-bench}
seed=${SEED:-../shared/seed/seed_consumer.py}
# The system interpreter (Debian's optimized build) when there is one, as the prototype's README asks.
python=${PYTHON:-$(command -v /usr/bin/python3 || command -v python3)}
data_dir=${LOGICAL_AUDIT_BENCH_DATA:-test/data}
streams=(bench_narrow_inserts bench_wide_rows bench_updates_full)

found=0
for s in "${streams[@]}"; do
	if [[ -f $data_dir/$s.bin ]]; then
		found=$((found + 1))
	else
		echo "warning: $data_dir/$s.bin is missing; its row will say so" >&2
	fi
done
if [[ $found -eq 0 ]]; then
	echo "error: no benchmark stream in $data_dir (expected ${streams[*]/%/.bin})" >&2
	exit 1
fi
if [[ ! -f $seed ]]; then
	echo "error: prototype not found at $seed (set SEED)" >&2
	exit 1
fi

echo "== build ($build_dir)"
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -DLOGICAL_AUDIT_BENCH_ONLY=ON >/dev/null
cmake --build "$build_dir" --target decoder_bench -j "$(nproc)"

echo "== decoder_bench"
LOGICAL_AUDIT_BENCH_DATA=$(cd "$data_dir" && pwd)
export LOGICAL_AUDIT_BENCH_DATA
json=$build_dir/decoder_bench.json
"$build_dir/decoder_bench" --benchmark_min_time="${MIN_TIME:-1}" --benchmark_repetitions="${REPETITIONS:-5}" \
	--benchmark_display_aggregates_only=true --benchmark_format=console \
	--benchmark_out="$json" --benchmark_out_format=json

echo "== prototype ($("$python" --version 2>&1))"
proto=$build_dir/prototype_bench.txt
"$python" bench/prototype_bench.py "$seed" --min-time "${PROTO_MIN_TIME:-1}" --repetitions "${REPETITIONS:-5}" |
	tee "$proto"

echo "== comparison (MB = 10^6 bytes, medians of the repetitions, bytes and messages are CopyData messages)"
"$python" - "$json" "$proto" "${streams[@]}" <<'EOF'
import json
import sys

json_path, proto_path, streams = sys.argv[1], sys.argv[2], sys.argv[3:]
GBPS_TARGET, SPEEDUP_TARGET = 1e9, 50.0


def ours_by_stream():
    """decoder_bench's median (or single) run per stream, or its error message."""
    out = {}
    for b in json.load(open(json_path))["benchmarks"]:
        stream = b["run_name"].split("/")[1]
        if b.get("error_occurred"):
            out[stream] = b.get("error_message", "error")
        elif b.get("aggregate_name") == "median" or (b["run_type"] == "iteration" and stream not in out):
            out[stream] = b
    return out


def proto_by_stream():
    """The prototype's result line per stream, as a dict or an error message."""
    out = {}
    for line in open(proto_path):
        fields = line.split()
        if len(fields) < 2 or not fields[1].startswith("stream="):
            continue
        stream = fields[1][len("stream="):]
        if fields[2].startswith("error="):
            out[stream] = line.split("error=", 1)[1].strip()
        else:
            out[stream] = dict(f.split("=", 1) for f in fields[1:])
    return out


ours, proto = ours_by_stream(), proto_by_stream()
row = "{:<22} {:>11} {:>13} {:>11} {:>13} {:>9}  {}"
print(row.format("stream", "ours MB/s", "ours msgs/s", "proto MB/s", "proto msgs/s", "speedup", "targets"))
verdicts = []
for s in streams:
    o, p = ours.get(s, "not run"), proto.get(s, "not run")
    if isinstance(o, str) or isinstance(p, str):
        print("{:<22} ours: {}; prototype: {}".format(s, o if isinstance(o, str) else "ok",
                                                      p if isinstance(p, str) else "ok"))
        verdicts.append(None)
        continue
    bps, mps = o["bytes_per_second"], o["items_per_second"]
    pbps, pmps = float(p["mb_per_s"]) * 1e6, float(p["msgs_per_s"])
    speedup = bps / pbps
    checks = [("{:.0f}x".format(SPEEDUP_TARGET), speedup >= SPEEDUP_TARGET)]
    if s == "bench_narrow_inserts":
        checks.insert(0, ("1 GB/s", bps >= GBPS_TARGET))
    verdicts.append(all(ok for _, ok in checks))
    print(row.format(s, "{:,.0f}".format(bps / 1e6), "{:,.0f}".format(mps), "{:,.1f}".format(pbps / 1e6),
                     "{:,.0f}".format(pmps), "{:,.1f}x".format(speedup),
                     ", ".join(name + (" met" if ok else " NOT met") for name, ok in checks)))
verdict = "NOT met" if False in verdicts else "not all measured" if None in verdicts else "met"
print("targets (>= 1 GB/s on narrow inserts, >= 50x the prototype on every stream): " + verdict)
EOF
echo "(raw results: $json, $proto)"
