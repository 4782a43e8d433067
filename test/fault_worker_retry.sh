#!/usr/bin/env bash
# fault_worker_retry.sh — the inbox worker rolls back and retries work that a
# transient error ended, without exiting:
#   1. a deadlock: the worker's batch waits on a session's lock on junction.samples
#      while the session waits on the worker's lock on junction.events (40P01);
#   2. a cancel (57014, which is also how Citus ends the victim of a distributed
#      deadlock) while the batch waits on a lock;
#   3. a cancel of junction.daily's recomputation (the flush after a batch);
#   0. (first) a cancel of the idle worker.
# Each time: one LOG line naming the work and the SQLSTATE, no ERROR, the same
# worker process throughout, and in the end every delivery typed once and the
# typed tables equal to a clean run.
set -uo pipefail
. "$(dirname "$0")/lib_fault.sh"
W=/tmp/junction-fault-retry.$$
trap 'jx_cluster_stop; rm -rf "$W"' EXIT
JX_PORT=5447 fault_setup "$W" "junction.batch_size = 200"
LOG=$W/pg/server.log
q() { psql -qXAt -d junction_fault "$@"; }

worker_pid() { q -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'junction worker'" | head -1; }
# the worker waits on a heavyweight lock (the session's)
worker_waits() { [ "$(q -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'junction worker' AND wait_event_type = 'Lock'")" = 1 ]; }
# a session of ours holds mode on tbl
session_holds() { [ "$(q -c "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation WHERE c.relname = '$1' AND l.mode = '$2' AND l.granted AND l.pid <> pg_backend_pid()")" -ge 1 ]; }
retry_lines() { grep -c "junction: $1 was rolled back and is retried in [0-9]* ms: .*(SQLSTATE $2)" "$LOG"; }

wait_for 30 '[ -n "$(worker_pid)" ]'
PID0=$(worker_pid)
echo "       worker pid $PID0"

# ---- 0. a cancel of the idle worker (it used to end the worker: the cancel was raised outside
# any handler) ----
q -c "SELECT pg_cancel_backend($PID0)" >/dev/null
check "a cancel of the idle worker is caught: a LOG line, the worker goes on" \
    "wait_for 10 '[ \$(retry_lines \"the worker.s idle wait\" 57014) -ge 1 ]' && sleep 0.5 && [ \"\$(worker_pid)\" = '$PID0' ]"

# ---- 1. a deadlock ----
# the session takes junction.samples, waits (in SQL) until the worker waits on it, then asks for
# junction.events, which the worker's batch holds: a cycle.  The session's deadlock_timeout is
# long, so the worker (waiting first, with the default 1 s) is the one that finds it.
q > "$W/deadlock.out" 2>&1 <<'SQL' &
BEGIN;
SET LOCAL deadlock_timeout = '60s';
LOCK TABLE junction.samples IN SHARE MODE;
DO $$
BEGIN
  FOR i IN 1..1200 LOOP
    PERFORM pg_stat_clear_snapshot();
    EXIT WHEN EXISTS (SELECT 1 FROM pg_stat_activity
                       WHERE backend_type = 'junction worker' AND wait_event_type = 'Lock');
    PERFORM pg_sleep(0.05);
  END LOOP;
END $$;
LOCK TABLE junction.events IN SHARE MODE;
SELECT 'session got junction.events';
COMMIT;
SQL
sess=$!
wait_for 30 "session_holds samples ShareLock"
load_chunks junction_fault 0 500
wait $sess
cat "$W/deadlock.out"
check "the deadlock happened and the session went on (the worker was the victim)" \
    "grep -q 'session got junction.events' '$W/deadlock.out' && [ \$(retry_lines 'an inbox batch' 40P01) -ge 1 ]"
grep "rolled back and is retried" "$LOG" | tail -1
check "after the deadlock the worker drained the batch (deadline 60 s)" "wait_drained junction_fault 60"

# A session takes tbl, cancels the worker once it waits on that lock, and lets go; meanwhile the
# deliveries [from, to) arrive.  The session's output goes to out.
cancel_while_waiting() {  # tbl, out, from, to
    q > "$2" 2>&1 <<SQL &
BEGIN;
LOCK TABLE junction.$1 IN SHARE MODE;
DO \$\$
DECLARE canceled boolean := false;
BEGIN
  FOR i IN 1..1200 LOOP
    PERFORM pg_stat_clear_snapshot();
    SELECT pg_cancel_backend(pid) INTO canceled FROM pg_stat_activity
     WHERE backend_type = 'junction worker' AND wait_event_type = 'Lock';
    EXIT WHEN canceled;
    PERFORM pg_sleep(0.05);
  END LOOP;
  RAISE NOTICE 'canceled the worker: %', coalesce(canceled, false);
END \$\$;
SELECT pg_sleep(0.5);
COMMIT;
SQL
    local sess=$!
    wait_for 30 "session_holds $1 ShareLock"
    load_chunks junction_fault "$3" "$4"
    wait $sess
    cat "$2"
}

# ---- 2. a cancel while the batch waits on a lock ----
cancel_while_waiting samples "$W/cancel.out" 500 1000
check "a cancel of the waiting batch is rolled back and retried" \
    "grep -q 'canceled the worker: t' '$W/cancel.out' && [ \$(retry_lines 'an inbox batch' 57014) -ge 1 ]"
check "after the cancel the worker drained the batch (deadline 60 s)" "wait_drained junction_fault 60"

# ---- 3. a cancel of junction.daily's recomputation ----
cancel_while_waiting daily_parts "$W/daily.out" 1000 1500
check "a cancel of junction.daily's recomputation is rolled back and retried" \
    "grep -q 'canceled the worker: t' '$W/daily.out' && [ \$(retry_lines 'a junction.daily recomputation' 57014) -ge 1 ]"
check "the cancel's log line carries the hint naming Citus' deadlock victims" \
    "grep -A1 'SQLSTATE 57014' '$LOG' | grep -q 'HINT:.*distributed deadlock'"

check "the same worker process throughout (pid $PID0)" "[ \"\$(worker_pid)\" = '$PID0' ]"
check "no junction worker ERROR in the server log" "! grep -E 'junction worker: (ERROR|FATAL|PANIC)' '$LOG' | grep -q ."
grep -E 'junction worker: (ERROR|FATAL|PANIC)' "$LOG" | head -5
final_checks 1500
