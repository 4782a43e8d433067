#!/usr/bin/env bash
# fault_restart_cluster.sh — stop the whole cluster with -m immediate (no
# shutdown checkpoint: crash recovery on start) several times while 50,000
# deliveries arrive.  Same checks as the worker-kill test.
set -uo pipefail
. "$(dirname "$0")/lib_fault.sh"
N=${N:-50000}
W=/tmp/junction-fault-restart.$$
trap 'jx_cluster_stop; rm -rf "$W"' EXIT
JX_PORT=5444 fault_setup "$W" "junction.batch_size = 500"

load_chunks junction_fault 0 "$N" &
loader=$!
restarts=0
while kill -0 $loader 2>/dev/null; do
    sleep 1.$((RANDOM % 9))
    kill -0 $loader 2>/dev/null || break
    (cd / && runuser -u postgres -- $PG_BIN/pg_ctl -D "$W/pg/data" -m immediate -w stop >/dev/null 2>&1)
    (cd / && runuser -u postgres -- $PG_BIN/pg_ctl -D "$W/pg/data" -l "$W/pg/server.log" -w start >/dev/null 2>&1)
    restarts=$((restarts+1))
done
wait $loader; lrc=$?
echo "cluster restarted $restarts times during the load"
check "loader finished" "[ $lrc -eq 0 ]"
check "the cluster was restarted at least 3 times" "[ $restarts -ge 3 ]"
wait_up
final_checks "$N"
