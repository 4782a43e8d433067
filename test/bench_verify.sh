#!/usr/bin/env bash
# bench_verify.sh — verifications/s of junction_verify_webhook in SQL over
# 100,000 rows of ~2 KB bodies, beside a bare OpenSSL HMAC-SHA256 loop over
# the same bodies measured in the same run.  Target: SQL >= 30% of bare.
# As root; starts its own cluster (or set JX_SKIP_CLUSTER=1 with PG* pointing at one).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/test/cluster.sh"
N=${N:-100000}
WORK=/tmp/junction-bench-verify.$$
trap 'jx_cluster_stop; rm -rf "$WORK"' EXIT
[ -n "${JX_NO_INSTALL:-}" ] || { jx_install_deps; jx_build_install "$ROOT"; }
mkdir -p "$WORK"
JX_PORT=5441 jx_cluster_start "$WORK/pg" junction_bench "junction.workers = 0"
psql -qX -v ON_ERROR_STOP=1 <<SQL
CREATE EXTENSION junction;
CREATE TABLE d AS
SELECT i, 'msg_' || lpad(i::text, 10, '0') AS id, 1760000000 AS ts,
       -- ~2 KB of Junction-shaped JSON (a heartrate batch), different per row
       (SELECT '{"event_type":"daily.data.heartrate.created","user_id":"0190b2a0-0000-7000-8000-000000000001","data":{"source":{"provider":"oura","type":"ring"},"data":['
          || string_agg(format('{"timestamp":"2026-11-01T%s:00+00:00","unit":"bpm","value":%s}', lpad((k % 24)::text, 2, '0') || ':' || lpad((k % 60)::text, 2, '0'), 60 + (i + k) % 50), ',')
          || ']}}' FROM generate_series(1, 27) k) AS body
FROM generate_series(1, $N) i;
CREATE TABLE t AS
SELECT i, jsonb_build_object('svix-id', id, 'svix-timestamp', ts::text,
         'svix-signature', junction_sign_webhook('whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', id, ts, body)) AS headers, body
FROM d;
VACUUM ANALYZE t;
\copy (SELECT body FROM d ORDER BY i) TO '$WORK/bodies.txt'
SQL
gcc -O2 -o "$WORK/bench_hmac" "$ROOT/test/bench_hmac.c" -lcrypto
avg=$(psql -XAtc "SELECT round(avg(octet_length(body))) FROM t")
run_sql() {
psql -XAt <<'SQL'
DO $$
DECLARE t0 timestamptz; n bigint; ok bigint;
BEGIN
  t0 := clock_timestamp();
  SELECT count(*), count(*) FILTER (WHERE junction_verify_webhook('whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', headers, body, to_timestamp(1760000000)) = 'ok')
    INTO n, ok FROM t;
  IF ok <> n THEN RAISE EXCEPTION 'only % of % verified', ok, n; END IF;
  RAISE NOTICE '%', round(n / extract(epoch FROM clock_timestamp() - t0));
END $$;
SQL
}
best_sql=0; best_bare=0
for r in 1 2 3; do
    s=$(run_sql 2>&1 | sed -n 's/.*NOTICE:  //p'); b=$("$WORK/bench_hmac" "$WORK/bodies.txt")
    echo "run $r: sql ${s}/s  bare ${b}/s"
    [ "$s" -gt "$best_sql" ] && best_sql=$s; [ "$b" -gt "$best_bare" ] && best_bare=$b
done
ratio=$(python3 -c "print(f'{$best_sql/$best_bare:.2f}')")
echo "bench_verify: $N rows, avg body ${avg} B: junction_verify_webhook ${best_sql}/s vs bare OpenSSL HMAC ${best_bare}/s = ${ratio} (target >= 0.30)"
python3 -c "import sys; sys.exit(0 if $best_sql >= 0.30*$best_bare else 1)"
