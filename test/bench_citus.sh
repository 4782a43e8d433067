#!/usr/bin/env bash
# bench_citus.sh — the cost of distribution: junction on a local 3-node Citus cluster (a
# coordinator and two workers, all on this machine's cores) beside single-node junction, in the
# same run, on the same corpus:
#   1. drain: N deliveries of test/sql/deliveries.sql (70% timeseries of 20 samples, 30%
#      summaries, 2% redeliveries) inserted into the inbox and drained by the background worker
#      (junction.daily on, its queue included), deliveries/s; best of ROUNDS, alternating.
#      Target: Citus >= 0.5 of single node.
#   2. junction_sync: USERS users x DAYS days of heart rate and steps from the mock API, rows/s.
#      WORKERS: junction.workers on both (default 1); SHARDS (default 4), BATCH: see below.
#   3. the coordinator's own share: Svix verification of the same N deliveries in one statement
#      (junction_webhook_is_valid), deliveries/s — what one coordinator can verify at most,
#      whatever the number of workers.
# All nodes share the cores here: the ratio is what distribution costs, not what it gains.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/test/cluster.sh"
. "$ROOT/test/lib_citus.sh"
N=${N:-10000}
ROUNDS=${ROUNDS:-3}
USERS=${USERS:-4}
DAYS=${DAYS:-10}
SECRET=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw
W=/tmp/junction-bench-citus.$$
MOCK_PID=
trap 'jx_cluster_stop; jx_citus_stop; [ -n "$MOCK_PID" ] && kill "$MOCK_PID" 2>/dev/null; rm -rf "$W"' EXIT
[ -n "${JX_NO_INSTALL:-}" ] || { jx_install_deps; jx_build_install "$ROOT"; }
jx_citus_install
mkdir -p "$W"; chmod 755 "$W"
python3 "$ROOT/test/mock_junction.py" --port 0 --portfile "$W/mock.port" > "$W/mock.log" 2>&1 &
MOCK_PID=$!
for i in $(seq 1 50); do [ -s "$W/mock.port" ] && break; sleep 0.1; done
CONF="fsync = on
junction.api_base_url = 'http://127.0.0.1:$(cat "$W/mock.port")'
junction.api_key = 'sk_us_test_key'
junction.backfill_workers = 0
junction.batch_size = ${BATCH:-500}
junction.workers = ${WORKERS:-1}"
DB=junction_bench
JX_PORT=$(jx_free_port) jx_cluster_start "$W/single" $DB "$CONF"
S_HOST=$PGHOST S_PORT=$PGPORT
# the coordinator settings the README recommends for junction's workers: connections to the
# workers kept across transactions, one per worker node per statement
jx_citus_start "$W/citus" $DB "$CONF
citus.max_cached_conns_per_worker = 8
citus.max_adaptive_executor_pool_size = 1"
s() { PGHOST=$S_HOST PGPORT=$S_PORT psql -qXAt -v ON_ERROR_STOP=1 -d $DB "$@"; }
c() { psql -qXAt -v ON_ERROR_STOP=1 -d $DB "$@"; }
for f in s c; do
    $f >/dev/null <<SQL
CREATE EXTENSION junction;
INSERT INTO junction.webhook_secrets (secret) VALUES ('$SECRET');
\i $ROOT/test/sql/deliveries.sql
CREATE TABLE d AS SELECT i, x.headers, x.body FROM generate_series(1, $N) i,
  LATERAL jx_test_delivery(i, '$SECRET', extract(epoch FROM now())::bigint) x;
SQL
done
# SHARDS: the shard count (default 4, what the README's figures use; NULL: citus.shard_count,
# 32). A batch of deliveries touches most users, so each of its statements runs on most shards:
# fewer shards, fewer tasks per statement.
c -c "SELECT count(*) FROM junction_distribute(${SHARDS:-4})" >/dev/null

drain() {  # psql function -> seconds
    $1 -c "TRUNCATE junction.events, junction.samples, junction.activity, junction.sleep, junction.body,
                    junction.daily, junction.daily_parts, junction.inbox" >/dev/null
    $1 -c "CHECKPOINT" >/dev/null
    $1 <<'SQL'
INSERT INTO junction.inbox (headers, body) SELECT headers, body FROM d ORDER BY i;
SELECT round(jx_wait_drained(clock_timestamp())::numeric, 3);
SQL
}
sync_rate() {  # psql function -> "rows seconds"
    $1 -c "TRUNCATE junction.samples, junction.daily, junction.daily_parts" >/dev/null
    # the drain's dirty pages written out first, as the drain's are: not charged to the sync
    $1 -c "CHECKPOINT" >/dev/null
    $1 <<SQL
\set t0 \`date +%s.%N\`
SELECT sum(r.rows_loaded) AS n FROM generate_series(1, $USERS) u,
       LATERAL junction_sync(('5f0b1d6e-8a40-4f5e-9b0c-' || lpad(u::text, 12, '0'))::uuid, ARRAY['heartrate', 'steps'],
                             '2025-01-01', '2025-01-01'::date + $DAYS) r \gset
\set t1 \`date +%s.%N\`
SELECT :n || ' ' || round((:t1 - :t0)::numeric, 3);
SQL
}
best_s=0; best_c=0; best_ss=0; best_sc=0
for r in $(seq 1 "$ROUNDS"); do
    ts=$(drain s); tc=$(drain c)
    ds=$(python3 -c "print(round($N/$ts))"); dc=$(python3 -c "print(round($N/$tc))")
    read -r ns tss <<<"$(sync_rate s)"; read -r nc tsc <<<"$(sync_rate c)"
    ys=$(python3 -c "print(round($ns/$tss))"); yc=$(python3 -c "print(round($nc/$tsc))")
    echo "round $r: drain single $ds/s, Citus $dc/s; junction_sync single $ys rows/s, Citus $yc rows/s ($nc rows)"
    [ "$ds" -gt "$best_s" ] && best_s=$ds
    [ "$dc" -gt "$best_c" ] && best_c=$dc
    [ "$ys" -gt "$best_ss" ] && best_ss=$ys
    [ "$yc" -gt "$best_sc" ] && best_sc=$yc
done
verify() {  # psql function -> deliveries/s of the signature check alone
    $1 <<SQL
\set t0 \`date +%s.%N\`
SELECT count(*) FILTER (WHERE junction_webhook_is_valid('$SECRET', headers, body)) AS ok FROM d \gset
\set t1 \`date +%s.%N\`
SELECT round($N / (:t1 - :t0));
SQL
}
vc=$(verify c)
placement=$(c -c "SELECT string_agg(n.nodeport || ':' || s.n, ' ' ORDER BY n.nodeport)
                   FROM (SELECT p.groupid, sum(r.result::bigint) AS n
                         FROM run_command_on_shards('junction.samples', 'SELECT count(*) FROM %s') r
                         JOIN pg_dist_placement p USING (shardid) GROUP BY 1) s JOIN pg_dist_node n USING (groupid)")
echo "drain ($N deliveries, ${WORKERS:-1} inbox worker(s), batches of ${BATCH:-500}, $(c -c "SELECT count(*) FROM pg_dist_shard WHERE logicalrelid = 'junction.samples'::regclass") shards, best of $ROUNDS): Citus $best_c/s vs single node $best_s/s = $(python3 -c "print(f'{$best_c/$best_s:.2f}')") (target >= 0.5)"
echo "junction_sync ($USERS users x $DAYS days, best of $ROUNDS): Citus $best_sc rows/s vs single node $best_ss rows/s = $(python3 -c "print(f'{$best_sc/$best_ss:.2f}')")"
echo "coordinator ceiling: Svix verification alone $vc deliveries/s (one backend), $(python3 -c "print(f'{$vc/$best_c:.0f}')")x the Citus drain"
echo "samples per worker node (port:rows): $placement"
