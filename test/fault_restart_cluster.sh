#!/usr/bin/env bash
# fault_restart_cluster.sh — stop the whole cluster with -m immediate (no
# shutdown checkpoint: crash recovery on start) several times while 50,000
# deliveries arrive, with two inbox workers and a manual junction_process_inbox()
# loop draining side by side (SKIP LOCKED: no blocking, no double work).
# Same checks as the worker-kill test (attempts = 1 proves no row was handled twice).
set -uo pipefail
. "$(dirname "$0")/lib_fault.sh"
N=${N:-50000}
W=/tmp/junction-fault-restart.$$
trap 'jx_cluster_stop; rm -rf "$W"' EXIT
JX_PORT=5444 fault_setup "$W" "junction.batch_size = 500
junction.workers = 2"

load_chunks junction_fault 0 "$N" &
loader=$!
# a manual drain beside the two workers, for as long as the load runs
( while kill -0 $loader 2>/dev/null; do
      psql -qXAt -d junction_fault -c "SELECT junction_process_inbox(200)" >/dev/null 2>&1 || sleep 0.3
  done ) &
manual=$!
restarts=0
while kill -0 $loader 2>/dev/null; do
    sleep 1.$((RANDOM % 9))
    kill -0 $loader 2>/dev/null || break
    (cd / && runuser -u postgres -- $PG_BIN/pg_ctl -D "$W/pg/data" -m immediate -w stop >/dev/null 2>&1)
    (cd / && runuser -u postgres -- $PG_BIN/pg_ctl -D "$W/pg/data" -l "$W/pg/server.log" -w start >/dev/null 2>&1)
    restarts=$((restarts+1))
done
wait $loader; lrc=$?
wait $manual
echo "cluster restarted $restarts times during the load"
check "loader finished" "[ $lrc -eq 0 ]"
check "the cluster was restarted at least 3 times" "[ $restarts -ge 3 ]"
wait_up
wait_drained junction_fault 300 >/dev/null
check "two inbox workers were running" \
    "[ \$(psql -qXAt -d postgres -c \"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'junction worker'\") = 2 ]"
final_checks "$N"
