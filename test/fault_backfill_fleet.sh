#!/usr/bin/env bash
# fault_backfill_fleet.sh — the backfill workers (junction.backfill_workers = 2) under faults, against
# the mock Junction API (one page per day, dense heart rate: 90 days = 90 pages):
#   1. kill -9 of the backfill worker running a 90-page job once it has committed page 40: the job
#      resumes from its checkpoint (the first page is asked for once, never again), and the table
#      equals a clean run;
#   2. a 503 storm from page 50: the job fails its attempt, keeps pages 1-49+, and the retry resumes
#      there; the table equals a clean run;
#   3. two workers on one user's jobs: both work at once, no job runs twice, the tables equal
#      a junction_sync of the same ranges;
#   4. fairness: user B's single job, queued after user A's 60, starts before most of A's;
#   5. a 429 seen by one backend pauses another backend's next request (the shared pause).
set -uo pipefail
. "$(dirname "$0")/lib_fault.sh"
W=/tmp/junction-fault-fleet.$$
MOCK_PID=
trap 'jx_cluster_stop; [ -n "$MOCK_PID" ] && kill "$MOCK_PID" 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$W"' EXIT
mkdir -p "$W"; chmod 755 "$W"
python3 "$ROOT/test/mock_junction.py" --port 0 --portfile "$W/mock.port" --page-days 1 --dense > "$W/mock.log" 2>&1 &
MOCK_PID=$!
for i in $(seq 1 50); do [ -s "$W/mock.port" ] && break; sleep 0.1; done
MOCK="http://127.0.0.1:$(cat "$W/mock.port")"
JX_PORT=${JX_FLEET_PORT:-5438} jx_cluster_start "$W/pg" junction_fault "junction.backfill_workers = 2
junction.api_base_url = '$MOCK'
junction.api_key = 'sk_us_test_key'
junction.http_retries = 1"
psql -qX -v ON_ERROR_STOP=1 -c "CREATE EXTENSION junction" >/dev/null
q() { psql -qXAt -c "$1"; }
A=5f0b1d6e-8a40-4f5e-9b0c-0d1a2b3c4d5e
B=5f0b1d6e-8a40-4f5e-9b0c-0d1a2b3c4d5f
# queue a job the way a historical.data.* event does (user, resource, provider, start, end)
queue() { q "INSERT INTO junction.backfills (user_id, provider, resource, start_date, end_date, completed_at, received_seq, data)
             VALUES ('$1', '$3', '$2', '$4', '$5', clock_timestamp(), junction._next_received_seq(), '{}')" >/dev/null; }
fp() { q "SELECT count(*) || ' ' || md5(string_agg((to_jsonb(s) - 'received_seq')::text, '|' ORDER BY resource, time, provider, source_type))
          FROM junction.samples s WHERE user_id = '$1'"; }
status() { q "SELECT fetch_status FROM junction.backfills WHERE user_id = '$1' AND resource = '$2'"; }
pages() { q "SELECT pages_done FROM junction.backfills WHERE user_id = '$1' AND resource = '$2'"; }
reset_mock_log() { curl -sf -X DELETE "$MOCK/_mock/requests" >/dev/null; }

# the reference: a clean 90-day run of user A's heart rate, by junction_sync in one call
psql -qXAt -c "SET junction.sync_progress_after = 0" \
     -c "SELECT rows_loaded FROM junction_sync('$A', ARRAY['heartrate'], '2025-01-01', '2025-03-31 23:59:59')" > "$W/ref.rows" 2> "$W/ref.notice"
REF=$(fp $A)
check "reference: junction_sync loaded 90 days of heart rate ($(cat $W/ref.rows) rows)" "[ \$(cat $W/ref.rows) -gt 10000 ]"
check "junction_sync reports its progress per resource (junction.sync_progress_after = 0): $(head -1 $W/ref.notice)" \
    "grep -Eq '^NOTICE:  junction_sync: heartrate of user $A: [0-9]+ rows in [0-9.]+ s \([0-9]+ rows/s\), resource 1 of 1\$' '$W/ref.notice'"
psql -qXAt -c "SELECT rows_loaded FROM junction_sync('$A', ARRAY['heartrate', 'steps'], '2025-01-01', '2025-01-01 23:59:59')" > /dev/null 2> "$W/short.notice"
check "a short junction_sync (under the default 5 s per resource) reports nothing" "[ ! -s '$W/short.notice' ]"
q "DELETE FROM junction.samples" >/dev/null

# ---- 1. kill -9 at page 40 of 90 ----
reset_mock_log
queue $A heartrate apple_health_kit 2025-01-01 '2025-03-31 23:59:59'
check "a backfill worker runs the job and commits pages (deadline 60 s)" "wait_for 60 '[ \"\$(pages $A heartrate)\" -ge 40 ] 2>/dev/null'"
PID=$(q "SELECT claimed_by FROM junction.backfills WHERE user_id = '$A' AND resource = 'heartrate'")
AT=$(pages $A heartrate)
kill -9 "$PID"
echo "       killed backend $PID at page $AT"
wait_up
check "after the crash the job resumes and finishes (deadline 120 s)" "wait_for 120 '[ \"\$(status $A heartrate)\" = done ]'"
check "the first page was asked for once: the job resumed, it did not start over" "[ \$(first_page_requests $A heartrate) -eq 1 ]"
check "90 pages committed in all" "[ \$(pages $A heartrate) -eq 90 ]"
check "the table equals the clean run" "[ \"\$(fp $A)\" = \"$REF\" ]"

# ---- 2. a 503 storm from page 50 ----
q "DELETE FROM junction.samples; TRUNCATE junction.backfills" >/dev/null
reset_mock_log
queue $A heartrate apple_health_kit 2025-01-01 '2025-03-31 23:59:59'
wait_for 60 "[ \"\$(pages $A heartrate)\" -ge 49 ] 2>/dev/null"
curl -sf -X POST "$MOCK/_mock/faults" -H 'Content-Type: application/json' \
     -d '{"path_prefix": "/v2/timeseries", "repeat": 40, "responses": [{"status": 503, "body": "{\"detail\": \"storm\"}"}]}' >/dev/null
check "the storm fails the attempt: pending again, with its checkpoint (deadline 30 s)" \
    "wait_for 30 '[ \"\$(q \"SELECT fetch_status || sqlstate || (pages_done >= 49) || (cursor IS NOT NULL) FROM junction.backfills\")\" = pending38000truetrue ]'"
STORM_AT=$(pages $A heartrate)
curl -sf -X DELETE "$MOCK/_mock/faults" >/dev/null
q "UPDATE junction.backfills SET next_attempt_at = now()" >/dev/null
check "the retry resumes at page $((STORM_AT + 1)) and finishes (deadline 120 s)" "wait_for 120 '[ \"\$(status $A heartrate)\" = done ]'"
check "the first page was asked for once in all" "[ \$(first_page_requests $A heartrate) -eq 1 ]"
check "the table equals the clean run" "[ \"\$(fp $A)\" = \"$REF\" ]"

# ---- 3. two workers on one user's jobs ----
q "DELETE FROM junction.samples; TRUNCATE junction.backfills" >/dev/null
RES="heartrate steps calories_active distance respiratory_rate hrv"
for r in $RES; do
    q "SELECT rows_loaded FROM junction_sync('$B', ARRAY['$r'], '2025-01-01', '2025-01-20 23:59:59', 'apple_health_kit')" >/dev/null
done
REF_B=$(fp $B)
q "DELETE FROM junction.samples" >/dev/null
reset_mock_log
q "CREATE TABLE seen (pid integer, resource text)" >/dev/null
for r in $RES; do queue $B $r apple_health_kit 2025-01-01 '2025-01-20 23:59:59'; done
deadline=$((SECONDS + 120))
while [ $SECONDS -lt $deadline ]; do
    q "INSERT INTO seen SELECT claimed_by, resource FROM junction.backfills WHERE fetch_status = 'running'" >/dev/null
    [ "$(q "SELECT count(*) FROM junction.backfills WHERE fetch_status <> 'done'")" = 0 ] && break
    sleep 0.05
done
check "all 6 jobs done (deadline 120 s)" "[ \$(q \"SELECT count(*) FROM junction.backfills WHERE fetch_status = 'done'\") -eq 6 ]"
check "two workers ran them (distinct pids seen running: $(q 'SELECT count(DISTINCT pid) FROM seen'))" "[ \$(q 'SELECT count(DISTINCT pid) FROM seen') -eq 2 ]"
check "no job ran under two workers" "[ \$(q 'SELECT count(*) FROM (SELECT resource FROM seen GROUP BY resource HAVING count(DISTINCT pid) > 1) x') -eq 0 ]"
twice=0
for r in $RES; do [ "$(first_page_requests $B $r)" -eq 1 ] || twice=1; done
check "each job's first page asked for once" "[ $twice -eq 0 ]"
check "the tables equal junction_sync of the same ranges" "[ \"\$(fp $B)\" = \"$REF_B\" ]"

# ---- 4. fairness: B's single job behind A's 60 ----
q "DELETE FROM junction.samples; TRUNCATE junction.backfills" >/dev/null
# A's 60 jobs (30 resources from 2 providers) then B's one, in one transaction
q "INSERT INTO junction.backfills (user_id, provider, resource, start_date, end_date, completed_at, received_seq, data)
   SELECT '$A', p, r.name, '2025-01-01', '2025-01-01 23:59:59', clock_timestamp(), junction._next_received_seq(), '{}'
   FROM (SELECT name FROM junction.resources WHERE kind = 'timeseries' ORDER BY name LIMIT 30) r,
        unnest(ARRAY['apple_health_kit', 'fitbit']) p;
   INSERT INTO junction.backfills (user_id, provider, resource, start_date, end_date, completed_at, received_seq, data)
   VALUES ('$B', 'apple_health_kit', 'heartrate', '2025-01-01', '2025-01-01 23:59:59', clock_timestamp(), junction._next_received_seq(), '{}')" >/dev/null
finished() { q "SELECT count(*) FROM junction.backfills WHERE fetch_status = 'done'"; }
check "61 jobs done (deadline 180 s)" "wait_for 180 '[ \$(finished) -eq 61 ]'"
BEHIND=$(q "SELECT count(*) FROM junction.backfills a, junction.backfills b
            WHERE a.user_id = '$A' AND b.user_id = '$B' AND a.started_at < b.started_at")
check "B's job started after only $BEHIND of A's 60 (at most 1: the first claim, A's, is due first)" "[ $BEHIND -le 1 ]"

# ---- 5. a 429 in one backend pauses another's next request ----
curl -sf -X POST "$MOCK/_mock/faults" -H 'Content-Type: application/json' \
     -d '{"path_prefix": "/v2/summary/sleep", "responses": [{"status": 429, "headers": {"Retry-After": "3"}, "body": "{\"detail\": \"slow down\"}"}]}' >/dev/null
psql -qXAt -c "SELECT junction_fetch('sleep', '$A', '2025-01-01', '2025-01-02') IS NOT NULL" > "$W/s1.out" 2>&1 &
S1=$!
wait_for 10 "[ \$(q 'SELECT pauses FROM junction._api_pause()') -ge 1 ]"
t0=$(date +%s.%N)
psql -qXAt -c "SELECT junction_fetch('body', '$B', '2025-01-01', '2025-01-02') IS NOT NULL" > "$W/s2.out" 2>&1
t1=$(date +%s.%N)
wait $S1
WAITED=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
check "both requests succeeded" "[ \"\$(cat $W/s1.out)\" = t ] && [ \"\$(cat $W/s2.out)\" = t ]"
check "the other backend's request waited out the pause (${WAITED} s of Retry-After 3)" "awk -v w=$WAITED 'BEGIN { exit !(w >= 2.0) }'"

echo "$CHECKS_PASSED passed, $CHECKS_FAILED failed"
[ "$CHECKS_FAILED" -eq 0 ]
