#!/usr/bin/env bash
# bench_memory.sh — the inbox worker's memory across 1,000,000 deliveries (the
# realistic mix), loaded in chunks while the worker drains.  Prints the worker's
# RssAnon (private heap: what a leak grows) and VmRSS (which also counts shared
# buffers it touched) after a 50,000-delivery warm-up and at the end.
# Target: growth < 10 MB.  Not part of the test command (it takes minutes).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/test/cluster.sh"
N=${N:-1000000}; CHUNK=10000
W=/tmp/junction-bench-memory.$$
trap 'jx_cluster_stop; rm -rf "$W"' EXIT
[ -n "${JX_NO_INSTALL:-}" ] || { jx_install_deps; jx_build_install "$ROOT"; }
mkdir -p "$W"
JX_PORT=5448 jx_cluster_start "$W/pg" junction_bench "junction.inbox_retention = 0"
psql -qX -v ON_ERROR_STOP=1 >/dev/null <<SQL
CREATE EXTENSION junction;
INSERT INTO junction.webhook_secrets(secret) VALUES ('whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw');
\i $ROOT/test/sql/deliveries.sql
-- a pool of 20,000 distinct bodies; each delivery gets a fresh svix-id
CREATE TABLE pool AS SELECT i, jx_test_body(i) AS body FROM generate_series(0, 19999) i;
SQL
pid=$(psql -XAtc "SELECT pid FROM pg_stat_activity WHERE backend_type = 'junction worker'")
mem() { awk '/^(RssAnon|VmRSS):/ {printf "%s %d ", $1, $2/1024} END {print "MB"}' /proc/$pid/status; }
load() {  # from, to
    psql -qX -v ON_ERROR_STOP=1 >/dev/null <<SQL
INSERT INTO junction.inbox (headers, body)
SELECT jsonb_build_object('svix-id', 'msg_mem_' || g, 'svix-timestamp', extract(epoch FROM now())::bigint::text,
         'svix-signature', junction_sign_webhook('whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', 'msg_mem_' || g, extract(epoch FROM now())::bigint, p.body)),
       p.body
FROM generate_series($1, $2) g JOIN pool p ON p.i = g % 20000;
SQL
}
wait_low() { while [ "$(psql -XAtc "SELECT count(*) > $1 FROM junction.inbox WHERE status = 'pending'")" = t ]; do sleep 0.5; done; }
for ((s = 0; s < 50000; s += CHUNK)); do load $s $((s + CHUNK - 1)); wait_low 20000; done
wait_low 0
psql -qXAt -c "SELECT junction._trim_inbox('0', 1000000)" >/dev/null
warm=$(mem); echo "after 50,000 deliveries:    $warm"
t0=$SECONDS
for ((s = 50000; s < N; s += CHUNK)); do
    load $s $((s + CHUNK - 1)); wait_low 20000
    if (( (s / CHUNK) % 10 == 0 )); then
        psql -qXAt -c "SELECT junction._trim_inbox('0', 1000000)" >/dev/null
        echo "after $s deliveries: $(mem)"
    fi
done
wait_low 0
end=$(mem); echo "after $N deliveries: $end ($((SECONDS - t0)) s)"
field() { echo "$1" | awk -v k="$2:" '{for (i = 1; i < NF; i++) if ($i == k) print $(i+1)}'; }
a0=$(field "$warm" RssAnon); a1=$(field "$end" RssAnon); v0=$(field "$warm" VmRSS); v1=$(field "$end" VmRSS)
echo "bench_memory: worker RssAnon ${a0} MB after 50,000 deliveries (anchor) -> ${a1} MB after $N: growth $((a1 - a0)) MB (VmRSS ${v0} -> ${v1} MB; target < 10 MB)"
[ $((a1 - a0)) -lt 10 ]
