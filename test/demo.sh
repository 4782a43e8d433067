#!/usr/bin/env bash
# test/demo.sh — the README's first command.  As root on Debian 12: installs
# what it needs, builds and installs junction, starts a local Postgres (kept
# running) with the extension preloaded, and runs the main job on sample data:
# signed Junction deliveries go into junction.inbox, the background worker
# verifies and types them, and the typed tables are shown.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/test/cluster.sh"
DIR=${JX_DEMO_DIR:-/tmp/junction-demo}
export JX_PORT=${JX_PORT:-5432}

[ "$(id -u)" -eq 0 ] || { echo "run as root (it installs packages and starts Postgres as the postgres user)"; exit 2; }
jx_install_deps
jx_build_install "$ROOT"
[ -d "$DIR/data" ] && (cd / && runuser -u postgres -- $PG_BIN/pg_ctl -D "$DIR/data" -m fast -w stop >/dev/null 2>&1 || true)
jx_cluster_start "$DIR" junction
SECRET=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw

psql -qX -v ON_ERROR_STOP=1 -v secret="$SECRET" <<'SQL'
CREATE EXTENSION junction;
INSERT INTO junction.webhook_secrets(secret, description) VALUES (:'secret', 'demo secret');
\echo
\echo == Signature verification on a sample delivery
SELECT junction_verify_webhook(:'secret',
         jsonb_build_object('svix-id', 'msg_demo', 'svix-timestamp', extract(epoch FROM now())::bigint::text,
                            'svix-signature', junction_sign_webhook(:'secret', 'msg_demo', extract(epoch FROM now())::bigint, '{"demo":1}')),
         '{"demo":1}') AS good,
       junction_verify_webhook(:'secret', '{"svix-id":"msg_demo","svix-timestamp":"1700000000","svix-signature":"v1,AAAA"}', '{"demo":1}') AS stale;
SQL

# Sample deliveries: every fixture, signed now, as a receiver would store them.
psql -qX -v ON_ERROR_STOP=1 -v secret="$SECRET" <<SQL
\i $ROOT/test/fixtures/fixtures.sql
SELECT count(junction_receive(
         jsonb_build_object('svix-id', 'msg_' || name, 'svix-timestamp', extract(epoch FROM now())::bigint::text,
                            'svix-signature', junction_sign_webhook(:'secret', 'msg_' || name, extract(epoch FROM now())::bigint, body)),
         body)) AS deliveries_received
FROM fixture;
-- and one forged delivery, which will be quarantined
SELECT junction_receive('{"svix-id":"msg_forged","svix-timestamp":"$(date +%s)","svix-signature":"v1,Zm9yZ2VkZm9yZ2VkZm9yZ2VkZm9yZ2VkZm9yZ2VkZm9yZ2U="}',
                        '{"event_type":"daily.data.steps.created"}') AS forged_id;
SQL

echo "== Waiting for the background worker (no manual call)"
for i in $(seq 1 100); do
    p=$(psql -XAtc "SELECT pending FROM junction.status")
    [ "$p" = "0" ] && break; sleep 0.1
done
psql -X <<'SQL'
SELECT pending, quarantined, processed_last_minute, worker_pids, waiting_reason FROM junction.status;
SELECT status, count(*) FROM junction.inbox GROUP BY 1 ORDER BY 1;
SELECT id, error, sqlstate FROM junction.inbox WHERE status = 'quarantined';
SELECT split_part(event_type, '.', 1) AS family, count(*) FROM junction.events GROUP BY 1 ORDER BY 1;
SELECT resource, provider, count(*) AS samples, min(time) AS first, max(time) AS last
  FROM junction.samples GROUP BY 1, 2 ORDER BY 1, 2 LIMIT 12;
SELECT id, calendar_date, steps, calories_total, provider FROM junction.activity ORDER BY calendar_date LIMIT 5;
SELECT user_id, provider, status, error_type FROM junction.connections ORDER BY 2;
SQL
cat <<EOF

junction is running: psql -h $DIR -p $JX_PORT -U postgres junction
stop it with:        runuser -u postgres -- $PG_BIN/pg_ctl -D $DIR/data stop
EOF
