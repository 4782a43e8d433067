#!/usr/bin/env bash
# fault_concurrent_sync.sh — junction_sync's fast path (plain INSERTs into an empty range) under a
# concurrent writer of the same samples. Session A loads 10 days of dense heartrate and keeps its
# transaction open; session B starts the same sync, finds no committed sample in the range, takes
# the fast path, waits on A's uncommitted keys, gets unique_violation when A commits, rolls back
# and loads everything again with ON CONFLICT. Checks: both calls succeed, B asked for the first
# page twice (the fallback really ran), B's later rows win, and the table equals a single clean run.
# Then four sessions at once on an empty range: all succeed, same table.
set -uo pipefail
. "$(dirname "$0")/lib_fault.sh"
W=/tmp/junction-fault-sync.$$
MOCK_PID=
trap 'jx_cluster_stop; [ -n "$MOCK_PID" ] && kill "$MOCK_PID" 2>/dev/null; rm -rf "$W"' EXIT
mkdir -p "$W"; chmod 755 "$W"
python3 "$ROOT/test/mock_junction.py" --port 0 --portfile "$W/mock.port" --dense > "$W/mock.log" 2>&1 &
MOCK_PID=$!
for i in $(seq 1 50); do [ -s "$W/mock.port" ] && break; sleep 0.1; done
MOCK="http://127.0.0.1:$(cat "$W/mock.port")"
JX_PORT=${JX_SYNC_PORT:-5442} jx_cluster_start "$W/pg" junction_fault "junction.auto_backfill = off"
psql -qX -v ON_ERROR_STOP=1 -c "CREATE EXTENSION junction" >/dev/null
USER_ID=5f0b1d6e-8a40-4f5e-9b0c-0d1a2b3c4d5e
# (no progress NOTICE: the outputs below are compared as they are)
SET="SET junction.api_base_url = '$MOCK'; SET junction.api_key = 'sk_us_test_key'; SET junction.sync_progress_after = -1;"
SYNC="SELECT rows_loaded FROM junction_sync('$USER_ID', ARRAY['heartrate'], '2025-03-01', '2025-03-10 23:59:59')"
# the table's content without the delivery order (received_seq)
state() { psql -qXAt -c "SELECT count(*) || ' ' || md5(string_agg((to_jsonb(s) - 'received_seq')::text, '|' ORDER BY time))
                         FROM junction.samples s WHERE user_id = '$USER_ID'"; }
page_requests() { curl -sf "$MOCK/_mock/requests?path_prefix=/v2/timeseries/$USER_ID/heartrate&limit=1000" |
                  python3 -c 'import json,sys; print(len(json.load(sys.stdin)))'; }

# reference: one clean run
psql -qXAt -v ON_ERROR_STOP=1 -c "$SET" -c "$SYNC" > "$W/ref.out"
REF=$(state); PAGES=$(page_requests)
check "reference run loaded 100,000 samples in 10 pages" "[ \"\$(cat $W/ref.out)\" = 100000 ] && [ $PAGES -eq 10 ]"

# A holds its rows uncommitted while B starts
psql -qX -c "TRUNCATE junction.samples" >/dev/null
curl -sf -X DELETE "$MOCK/_mock/requests" >/dev/null
psql -qXAt -v ON_ERROR_STOP=1 > "$W/a.out" 2>&1 <<SQL &
$SET
BEGIN;
$SYNC;
SELECT max(received_seq) AS a_max FROM junction.samples \gset
SELECT set_config('application_name', 'sync_a_done', false);
SELECT pg_sleep(3);
COMMIT;
SELECT :a_max;
SQL
A=$!
for i in $(seq 1 200); do
    [ "$(psql -qXAt -c "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'sync_a_done'")" = 1 ] && break
    sleep 0.1
done
psql -qXAt -v ON_ERROR_STOP=1 -c "$SET" -c "$SYNC" > "$W/b.out" 2>&1; B_RC=$?
wait $A; A_RC=$?
A_MAX=$(tail -1 "$W/a.out")
check "session A succeeded (100,000 rows)" "[ $A_RC -eq 0 ] && [ \"\$(head -1 $W/a.out)\" = 100000 ]"
check "session B succeeded (100,000 rows written after its fallback)" "[ $B_RC -eq 0 ] && [ \"\$(cat $W/b.out)\" = 100000 ]"
check "B started its load twice: the fast path, then ON CONFLICT (3 first-page requests with A's)" "[ \$(first_page_requests $USER_ID heartrate) -eq 3 ]"
check "B's rows won (every received_seq above A's)" \
      "[ \"\$(psql -qXAt -c \"SELECT count(*) FROM junction.samples WHERE received_seq <= $A_MAX\")\" = 0 ]"
check "the table equals the clean run" "[ \"\$(state)\" = \"$REF\" ]"

# four sessions at once into an empty range
psql -qX -c "TRUNCATE junction.samples" >/dev/null
pids=()
for s in 1 2 3 4; do
    psql -qXAt -v ON_ERROR_STOP=1 -c "$SET" -c "$SYNC" > "$W/c$s.out" 2>&1 & pids+=($!)
done
ok=0
for p in "${pids[@]}"; do wait "$p" && ok=$((ok + 1)); done
check "four concurrent first backfills all succeeded" "[ $ok -eq 4 ]"
check "and the table equals the clean run" "[ \"\$(state)\" = \"$REF\" ]"
grep -h ERROR "$W"/*.out | head -5

echo "fault_concurrent_sync: $CHECKS_PASSED passed, $CHECKS_FAILED failed"
[ "$CHECKS_FAILED" -eq 0 ]
