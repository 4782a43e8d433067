#!/usr/bin/env bash
# bench_latency.sh — latency from a receiver's commit to the typed rows, at a
# steady 500 deliveries/s (pgbench --rate, one delivery per transaction, the
# realistic mix of test/sql/deliveries.sql), with fsync on.  Latency of a
# delivery = its inbox processed_at (clock time when the worker finished typing its batch, just before the commit) minus
# received_at (the receiver's transaction).  Target: p50 <= 20 ms, p99 <= 100 ms.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/test/cluster.sh"
RATE=${RATE:-500}; SECS=${SECS:-20}
W=/tmp/junction-bench-latency.$$
trap 'jx_cluster_stop; rm -rf "$W"' EXIT
[ -n "${JX_NO_INSTALL:-}" ] || { jx_install_deps; jx_build_install "$ROOT"; }
mkdir -p "$W"
JX_PORT=5446 jx_cluster_start "$W/pg" junction_bench "fsync = on
junction.poll_interval = 1000"
N=$((RATE * SECS + 2000))
psql -qX -v ON_ERROR_STOP=1 <<SQL
CREATE EXTENSION junction;
INSERT INTO junction.webhook_secrets(secret) VALUES ('whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw');
\i $ROOT/test/sql/deliveries.sql
-- pre-signed deliveries (signed now; the run is well inside the tolerance)
CREATE TABLE d AS SELECT i, x.headers, x.body FROM generate_series(1, $N) i,
  LATERAL jx_test_delivery(i, 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', extract(epoch FROM now())::bigint) x;
CREATE UNIQUE INDEX ON d (i);
CREATE SEQUENCE dseq;
SQL
cat > "$W/receive.sql" <<'SQL'
INSERT INTO junction.inbox (headers, body) SELECT headers, body FROM d WHERE i = (SELECT nextval('dseq'));
SQL
/usr/bin/pgbench -n -f "$W/receive.sql" -R "$RATE" -T "$SECS" -c 4 -j 2 junction_bench
for i in $(seq 1 300); do [ "$(psql -XAtc "SELECT count(*) FROM junction.inbox WHERE status = 'pending'")" = 0 ] && break; sleep 0.1; done
psql -X <<'SQL'
SELECT count(*) AS deliveries,
       round(count(*) / extract(epoch FROM max(received_at) - min(received_at))) AS offered_per_s,
       round(1000 * percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM processed_at - received_at))::numeric, 1) AS p50_ms,
       round(1000 * percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM processed_at - received_at))::numeric, 1) AS p99_ms,
       round(1000 * max(extract(epoch FROM processed_at - received_at))::numeric, 1) AS max_ms
  FROM junction.inbox WHERE status = 'processed';
SQL
