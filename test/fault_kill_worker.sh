#!/usr/bin/env bash
# fault_kill_worker.sh — kill -9 the junction worker again and again while
# 50,000 deliveries arrive (each kill makes the postmaster reset every backend,
# as a real crash does).  Afterwards: every delivery processed, none lost, none
# applied twice, typed tables equal to a clean run.
set -uo pipefail
. "$(dirname "$0")/lib_fault.sh"
N=${N:-50000}
W=/tmp/junction-fault-kill.$$
trap 'jx_cluster_stop; rm -rf "$W"' EXIT
JX_PORT=5443 fault_setup "$W" "junction.batch_size = 500
restart_after_crash = on"

load_chunks junction_fault 0 "$N" &
loader=$!
kills=0
while kill -0 $loader 2>/dev/null; do
    sleep 1.$((5 + RANDOM % 5))
    pid=$(psql -qXAt -d postgres -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'junction worker'" 2>/dev/null | head -1)
    if [ -n "$pid" ]; then kill -9 "$pid" 2>/dev/null && kills=$((kills+1)); wait_up; fi
done
wait $loader; lrc=$?
echo "worker killed $kills times during the load"
check "loader finished" "[ $lrc -eq 0 ]"
check "the worker was killed at least 5 times" "[ $kills -ge 5 ]"
wait_up
final_checks "$N"
