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
# The REST API path, against the mock Junction API on 127.0.0.1 (the demo never leaves this machine).
echo "== junction_sync from the (mock) Junction API, then a historical pull followed up by the backfill worker"
python3 "$ROOT/test/mock_junction.py" --port 0 --portfile "$DIR/mock.port" >/dev/null 2>&1 &
MOCK_PID=$!
trap 'kill $MOCK_PID 2>/dev/null' EXIT
for i in $(seq 1 50); do [ -s "$DIR/mock.port" ] && break; sleep 0.1; done
psql -qX -v ON_ERROR_STOP=1 -v mock="http://127.0.0.1:$(cat "$DIR/mock.port")" -v secret="$SECRET" <<'SQL'
ALTER SYSTEM SET junction.api_base_url = :'mock';
ALTER SYSTEM SET junction.api_key = 'sk_us_test_key';
SELECT pg_reload_conf();
SET junction.api_base_url = :'mock';
SET junction.api_key = 'sk_us_test_key';
\echo one call loads three days of activity, sleep and heart rate through the webhook upsert path:
SELECT * FROM junction_sync('0190b2a0-0000-7000-8000-0000000000d1', ARRAY['activity', 'sleep', 'heartrate'],
                            '2025-06-01', '2025-06-03 23:59:59');
\echo a historical.data.steps.created webhook: the backfill worker fetches that range by itself
SELECT junction_receive(jsonb_build_object('svix-id', 'msg_demo_hist', 'svix-timestamp', extract(epoch FROM now())::bigint::text,
         'svix-signature', junction_sign_webhook(:'secret', 'msg_demo_hist', extract(epoch FROM now())::bigint, b)), b) > 0 AS received
FROM (SELECT '{"event_type":"historical.data.steps.created","user_id":"0190b2a0-0000-7000-8000-0000000000d1","client_user_id":"demo","team_id":"0190b2a0-0000-7000-8000-00000000aaaa","data":{"user_id":"0190b2a0-0000-7000-8000-0000000000d1","provider":"apple_health_kit","start_date":"2025-06-01T00:00:00+00:00","end_date":"2025-06-07T23:59:59+00:00","is_final":true}}' AS b) x;
DO $$
DECLARE deadline timestamptz := clock_timestamp() + interval '20 seconds'; st text;
BEGIN
  LOOP
    SELECT fetch_status INTO st FROM junction.backfills WHERE user_id = '0190b2a0-0000-7000-8000-0000000000d1' AND resource = 'steps';
    EXIT WHEN st IN ('done', 'failed') OR clock_timestamp() > deadline;
    PERFORM pg_sleep(0.1);
  END LOOP;
END $$;
SELECT resource, provider, start_date::date, end_date::date, fetch_status, rows_loaded
  FROM junction.backfills WHERE user_id = '0190b2a0-0000-7000-8000-0000000000d1';
SELECT resource, count(*) AS samples FROM junction.samples
 WHERE user_id = '0190b2a0-0000-7000-8000-0000000000d1' GROUP BY 1 ORDER BY 1;
-- the demo's API settings point at the mock, which stops with this script: remove them again
ALTER SYSTEM RESET junction.api_base_url;
ALTER SYSTEM RESET junction.api_key;
SELECT pg_reload_conf();
SQL

cat <<EOF

junction is running: psql -h $DIR -p $JX_PORT -U postgres junction
stop it with:        runuser -u postgres -- $PG_BIN/pg_ctl -D $DIR/data stop
EOF
