#!/usr/bin/env bash
# test/run-tests.sh — every test junction has, on a throwaway cluster.
# As root on Debian 12: installs what it needs, builds, installs, starts a
# cluster with junction and pg_cron preloaded, runs the pg_regress suite and
# the other test programs, prints "N passed, N failed", cleans up, and exits
# non-zero on any failure.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/test/cluster.sh"
WORK=${JX_WORK:-/tmp/junction-test.$$}
PASSED=0; FAILED=0

cleanup() {
    jx_cluster_stop
    [ -n "${MOCK_PID:-}" ] && kill "$MOCK_PID" 2>/dev/null
    [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

# Record one test program's outcome.
record() {  # name, exit code
    if [ "$2" -eq 0 ]; then PASSED=$((PASSED+1)); echo "ok   - $1"; else FAILED=$((FAILED+1)); echo "FAIL - $1"; fi
}

[ "$(id -u)" -eq 0 ] || { echo "run as root (it installs packages and starts Postgres as the postgres user)"; exit 2; }
jx_install_deps
jx_build_install "$ROOT" || { echo "build failed"; echo "0 passed, 1 failed"; exit 1; }

# 1. the stand-alone sanitizer harness for the pure-C signature code
make -C "$ROOT/test" -s sigtest >/dev/null && "$ROOT/test/build/sigtest" "$ROOT/test/svix-vectors/vectors.tsv"
record "sigtest (ASan/UBSan, svix vectors through the C core)" $?
make -C "$ROOT/test" -s httptest >/dev/null && "$ROOT/test/build/httptest"
record "httptest (ASan/UBSan, Retry-After parsing and backoff)" $?
bash "$ROOT/test/mock_junction_selftest.sh" > "$WORK.mock-selftest.log" 2>&1
rc=$?; record "mock Junction API self-test" $rc; [ $rc -eq 0 ] || tail -20 "$WORK.mock-selftest.log"; rm -f "$WORK.mock-selftest.log"

# 2. pg_regress on a cluster whose worker serves the regress database, with the
#    mock Junction API on a free 127.0.0.1 port (tests read it with \getenv)
mkdir -p "$WORK"
python3 "$ROOT/test/mock_junction.py" --port 0 --portfile "$WORK/mock.port" > "$WORK/mock.log" 2>&1 &
MOCK_PID=$!
for i in $(seq 1 50); do [ -s "$WORK/mock.port" ] && break; sleep 0.1; done
export JUNCTION_MOCK_URL="http://127.0.0.1:$(cat "$WORK/mock.port")"
# junction_sync's progress NOTICE depends on how long a resource takes: off for the expected outputs
jx_cluster_start "$WORK/pg" junction_regress "junction.sync_progress_after = -1"
make -C "$ROOT" -s PG_CONFIG=$PG_CONFIG with_llvm=no installcheck > "$WORK/regress.log" 2>&1
rc=$?
grep -E '\.\.\. ' "$WORK/regress.log" || true
ntests=$(grep -cE '\.\.\. +(ok|FAILED|failed)' "$WORK/regress.log"; true)
nfail=$(grep -cE '\.\.\. +(FAILED|failed)' "$WORK/regress.log"; true)
PASSED=$((PASSED + ntests - nfail)); FAILED=$((FAILED + nfail))
if [ $rc -ne 0 ]; then
    [ "$nfail" -eq 0 ] && FAILED=$((FAILED+1))
    [ -f "$ROOT/regression.diffs" ] && head -200 "$ROOT/regression.diffs"
fi
echo "regress: $((ntests - nfail)) of $ntests passed"

# the workers idled quietly before CREATE EXTENSION and never logged an error
# (a shutdown's "terminating background worker" is the only expected FATAL)
worker_errors=$(grep -E 'junction (worker|backfill): (ERROR|FATAL|PANIC)' "$WORK/pg/server.log" | grep -v 'terminating background worker' || true)
[ -z "$worker_errors" ]; record "no error logged by a junction worker during the regress suite" $?
[ -z "$worker_errors" ] || echo "$worker_errors" | head -10

# 3. fault and reliability programs (each prints its own checks; exit code decides)
for t in "$ROOT"/test/fault_*.sh; do
    [ -e "$t" ] || continue
    bash "$t" > "$WORK/$(basename "$t").log" 2>&1
    rc=$?; record "$(basename "$t")" $rc
    [ $rc -eq 0 ] || tail -30 "$WORK/$(basename "$t").log"
done

if grep -E 'PANIC|server process .* was terminated by signal (11|6)' "$WORK/pg/server.log" >/dev/null 2>&1; then
    echo "server log shows a crash:"; grep -E 'PANIC|terminated by signal' "$WORK/pg/server.log" | head
    FAILED=$((FAILED+1))
fi
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
