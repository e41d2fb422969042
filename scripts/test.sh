#!/usr/bin/env bash
# Runs the whole test suite: unit tests, pg_regress, TAP and a 60-second fuzz run.
# Run as root on Debian 12; installs what it needs. The last line gives the totals.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
source "$here/scripts/lib.sh"
FUZZ_SECONDS=${FUZZ_SECONDS:-60}

install_packages
work=$(make_work_copy "$here")
echo "== build in $work"
install_extension "$work"
as_postgres "cmake -S '$work' -B '$work/build' -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null && cmake --build '$work/build' -j2 >/dev/null"
as_postgres "CXX=clang++-14 CC=clang-14 cmake -S '$work' -B '$work/build-fuzz' -DLOGICAL_AUDIT_FUZZ=ON >/dev/null && cmake --build '$work/build-fuzz' >/dev/null"

echo "== fuzz_decoder for ${FUZZ_SECONDS}s (in the background)"
as_postgres "mkdir -p '$work/build-fuzz/corpus' && python3 '$work/test/fuzz/make_corpus.py' '$work/test/data' '$work/build-fuzz/corpus'"
as_postgres "cd '$work/build-fuzz' && ./fuzz_decoder -max_total_time=$FUZZ_SECONDS -print_final_stats=1 corpus > fuzz.log 2>&1" &
fuzz_pid=$!

echo "== ctest"
ctest_status=0
as_postgres "cd '$work/build' && ctest --output-on-failure -j2" | tee "$work/ctest.log" || ctest_status=$?

fuzz_status=0
wait "$fuzz_pid" || fuzz_status=$?
grep -E 'stat::number_of_executed_units|Done [0-9]+ runs' "$work/build-fuzz/fuzz.log" || true
[ $fuzz_status -eq 0 ] || tail -40 "$work/build-fuzz/fuzz.log"

total=$(sed -n 's/.*tests failed out of \([0-9]*\).*/\1/p' "$work/ctest.log" | tail -1)
failed=$(sed -n 's/.* \([0-9]*\) tests failed out of.*/\1/p' "$work/ctest.log" | tail -1)
total=${total:-0} failed=${failed:-1}
[ "$ctest_status" -eq 0 ] || [ "$failed" -gt 0 ] || failed=1
total=$((total + 1))
[ $fuzz_status -eq 0 ] || failed=$((failed + 1))
[ "$failed" -eq 0 ] && rm -rf "$work"
echo "$((total - failed)) passed, $failed failed"
[ "$failed" -eq 0 ]
