#!/usr/bin/env bash
# bench_backfill_workers.sh — the backfill workers' throughput: two users' 90-day dense heart-rate
# backfills (2 x 900,000 samples, 90 pages each, one page and its checkpoint per transaction),
# queued at once, run by junction.backfill_workers = 1 and then = 2 on the same cluster (restarted
# in between), against the same mock (warm: every page from its cache, so the mock's own Python
# page generation is not what is measured), in the same run. Prints samples/s and the ratio.
# Target: 2 workers >= 1.5x one worker on 2 cores. Also prints one job's rate beside junction_sync
# of the same range in the same run (the cost of committing every page).
# As root. Its own cluster (port $JX_PORT, default 5436) and mock; JX_SKIP_BUILD=1 skips the build;
# JX_BENCH_CONF adds postgresql.conf lines (e.g. 'junction.daily = off').
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/test/cluster.sh"
W=/tmp/junction-bench-bfw.$$
MOCK_PID=
cleanup() { jx_cluster_stop; [ -n "$MOCK_PID" ] && kill "$MOCK_PID" 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
[ -n "${JX_SKIP_BUILD:-}" ] || { jx_install_deps; jx_build_install "$ROOT"; }
mkdir -p "$W"; chmod 755 "$W"
python3 "$ROOT/test/mock_junction.py" --port 0 --portfile "$W/mock.port" --dense > "$W/mock.log" 2>&1 &
MOCK_PID=$!
for i in $(seq 1 50); do [ -s "$W/mock.port" ] && break; sleep 0.1; done
MOCK="http://127.0.0.1:$(cat "$W/mock.port")"
export JX_PORT=${JX_PORT:-5436}
jx_cluster_start "$W/pg" junction_bench "fsync = on
shared_buffers = 1GB
max_wal_size = 4GB
junction.backfill_workers = 1
junction.api_base_url = '$MOCK'
junction.api_key = 'sk_us_test_key'
${JX_BENCH_CONF:-}"
psql -qX -v ON_ERROR_STOP=1 -c "CREATE EXTENSION junction" >/dev/null
U1=5f0b1d6e-8a40-4f5e-9b0c-0d1a2b3c4d5e
U2=5f0b1d6e-8a40-4f5e-9b0c-0d1a2b3c4d5f
q() { psql -qXAt -v ON_ERROR_STOP=1 -c "$1"; }
restart_with() {  # backfill workers
    sed -i "s/^junction.backfill_workers = .*/junction.backfill_workers = $1/" "$JX_DIR/data/postgresql.conf"
    (cd / && runuser -u postgres -- $PG_BIN/pg_ctl -D "$JX_DIR/data" -m fast -w restart >/dev/null)
    for i in $(seq 1 100); do
        [ "$(q "SELECT coalesce(array_length(backfill_pids, 1), 0) FROM junction.status" 2>/dev/null)" = "$1" ] && return 0
        sleep 0.1
    done
    echo "the backfill workers did not start"; exit 1
}
# queue the users' jobs at once; seconds until all are done
run_jobs() {  # users...
    q "TRUNCATE junction.samples, junction.backfills; CHECKPOINT" >/dev/null
    local t0 t1 vals="" u
    for u in "$@"; do
        vals="$vals${vals:+, }('$u', 'apple_health_kit', 'heartrate', '2025-01-01', '2025-03-31 23:59:59', clock_timestamp(), junction._next_received_seq(), '{}')"
    done
    t0=$(date +%s.%N)
    q "INSERT INTO junction.backfills (user_id, provider, resource, start_date, end_date, completed_at, received_seq, data) VALUES $vals" >/dev/null
    local running=0 r
    while [ "$(q "SELECT count(*) FROM junction.backfills WHERE fetch_status <> 'done'")" != 0 ]; do
        [ "$(q "SELECT count(*) FROM junction.backfills WHERE fetch_status = 'failed'")" = 0 ] || { echo "a job failed"; exit 1; }
        r=$(q "SELECT count(*) FROM junction.backfills WHERE fetch_status = 'running'")
        [ "$r" -gt "$running" ] && running=$r
        sleep 0.05
    done
    t1=$(date +%s.%N)
    awk -v a="$t0" -v b="$t1" -v r="$running" 'BEGIN { printf "%.3f %d\n", b - a, r }'
}
rows() { q "SELECT count(*) FROM junction.samples"; }
rate() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.0f", n / s }'; }

restart_with 1
run_jobs $U1 $U2 >/dev/null     # warm-up: from here on the mock serves its cached pages
T_SYNC=$(psql -qXAt -v ON_ERROR_STOP=1 <<SQL | tail -1
TRUNCATE junction.samples; CHECKPOINT;
SELECT clock_timestamp() AS t0 \gset
SELECT rows_loaded FROM junction_sync('$U1', ARRAY['heartrate'], '2025-01-01', '2025-03-31 23:59:59');
SELECT round(extract(epoch FROM clock_timestamp() - :'t0')::numeric, 3);
SQL
)
N_SYNC=$(rows)
read -r T1_ONE _ < <(run_jobs $U1); N1_ONE=$(rows)
read -r T1 P1 < <(run_jobs $U1 $U2); N1=$(rows)
restart_with 2
read -r T2 P2 < <(run_jobs $U1 $U2); N2=$(rows)
R_SYNC=$(rate "$N_SYNC" "$T_SYNC"); R1_ONE=$(rate "$N1_ONE" "$T1_ONE"); R1=$(rate "$N1" "$T1"); R2=$(rate "$N2" "$T2")

# What two writers get on this machine without junction: the same typed rows (user 1's 900,000
# samples, as loaded) inserted into junction.samples under a new user id by one backend, then
# under two new ids by two backends at once; and a CPU-only query (md5 of 3 million numbers) run
# by one backend, then by two at once. Each ratio is what a second writer adds here, the ceiling
# of the 2-worker ratio above.
q "DROP TABLE IF EXISTS bench_stage; CREATE TABLE bench_stage AS SELECT * FROM junction.samples WHERE user_id = '$U1'" >/dev/null
N_STAGE=$(q "SELECT count(*) FROM bench_stage")
X1=5f0b1d6e-8a40-4f5e-9b0c-0d1a2b3c4e01
X2=5f0b1d6e-8a40-4f5e-9b0c-0d1a2b3c4e02
INSERT_AS="INSERT INTO junction.samples (user_id, resource, provider, source_type, type, workout_id, time, time_end, value, unit,
                                          timezone_offset, local_time, floating, extra, received_seq)
           SELECT '%s', resource, provider, source_type, type, workout_id, time, time_end, value, unit, timezone_offset,
                  local_time, floating, extra, received_seq FROM bench_stage"
CPU_Q="SELECT count(DISTINCT md5(g::text)) FROM generate_series(1, 3000000) AS g"
timed() {  # seconds for the given commands, each in its own backend, all at once
    local t0 t1 c pids=""
    t0=$(date +%s.%N)
    for c in "$@"; do psql -qXAt -v ON_ERROR_STOP=1 -c "$c" >/dev/null & pids="$pids $!"; done
    wait $pids
    t1=$(date +%s.%N)
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }'
}
q "TRUNCATE junction.samples; CHECKPOINT" >/dev/null
TI1=$(timed "$(printf "$INSERT_AS" $X1)")
q "TRUNCATE junction.samples; CHECKPOINT" >/dev/null
TI2=$(timed "$(printf "$INSERT_AS" $X1)" "$(printf "$INSERT_AS" $X2)")
# the same two inserts into an UNLOGGED copy of the table (same key): no WAL
q "CREATE UNLOGGED TABLE bench_nowal (LIKE junction.samples INCLUDING ALL)" >/dev/null
NOWAL_AS=$(printf "$INSERT_AS" '%s' | sed 's/INSERT INTO junction.samples/INSERT INTO bench_nowal/')
TU1=$(timed "$(printf "$NOWAL_AS" $X1)")
q "TRUNCATE bench_nowal; CHECKPOINT" >/dev/null
TU2=$(timed "$(printf "$NOWAL_AS" $X1)" "$(printf "$NOWAL_AS" $X2)")
q "DROP TABLE bench_nowal" >/dev/null
TC1=$(timed "$CPU_Q")
TC2=$(timed "$CPU_Q" "$CPU_Q")
q "DROP TABLE bench_stage" >/dev/null
echo "== backfill workers: 90 days of dense heart rate per user, one page per transaction"
printf '%-58s %8.3f s %10s samples/s\n' "junction_sync, one user, one call (anchor)" "$T_SYNC" "$R_SYNC"
printf '%-58s %8.3f s %10s samples/s   = %s of junction_sync\n' "backfill job, one user, 1 worker (checkpoint per page)" "$T1_ONE" "$R1_ONE" \
    "$(awk -v a="$R1_ONE" -v b="$R_SYNC" 'BEGIN { printf "%.2f", a / b }')"
printf '%-58s %8.3f s %10s samples/s   (at most %s job(s) running at once)\n' "2 users, junction.backfill_workers = 1 (anchor)" "$T1" "$R1" "$P1"
printf '%-58s %8.3f s %10s samples/s   = %sx one worker (target >= 1.5; at most %s running at once)\n' "2 users, junction.backfill_workers = 2" "$T2" "$R2" \
    "$(awk -v a="$R2" -v b="$R1" 'BEGIN { printf "%.2f", a / b }')" "$P2"
echo "this machine's own second writer (no junction, in the same run):"
printf '%-58s %8.3f s %10s rows/s\n' "  plain INSERT of $N_STAGE typed samples, 1 backend" "$TI1" "$(rate "$N_STAGE" "$TI1")"
printf '%-58s %8.3f s %10s rows/s   = %sx one backend\n' "  the same into 2 new users, 2 backends at once" "$TI2" "$(rate $((2 * N_STAGE)) "$TI2")" \
    "$(awk -v a="$TI1" -v b="$TI2" 'BEGIN { printf "%.2f", 2 * a / b }')"
printf '%-58s %8.3f s   then 2 at once: %.3f s = %sx\n' "  the same into an UNLOGGED copy (no WAL), 1 backend" "$TU1" "$TU2" \
    "$(awk -v a="$TU1" -v b="$TU2" 'BEGIN { printf "%.2f", 2 * a / b }')"
printf '%-58s %8.3f s   then 2 at once: %.3f s = %sx\n' "  CPU only (md5 of 3 M numbers), 1 backend" "$TC1" "$TC2" \
    "$(awk -v a="$TC1" -v b="$TC2" 'BEGIN { printf "%.2f", 2 * a / b }')"
echo "2 workers / 1 worker = $(awk -v a="$R2" -v b="$R1" 'BEGIN { printf "%.2f", a / b }') against the machine's 2-writer INSERT ratio of $(awk -v a="$TI1" -v b="$TI2" 'BEGIN { printf "%.2f", 2 * a / b }')"
[ "$N1" = "$N2" ] || { echo "row counts differ: $N1 vs $N2"; exit 1; }
