#!/usr/bin/env bash
# fault_malformed.sh — 10,000 malformed deliveries (garbage JSON, non-JSON,
# wrong types, missing fields, non-uuid ids, over-long strings, 5 MB bodies,
# missing headers, bad signatures) interleaved with 10,000 good ones.  Every
# malformed one ends quarantined with a reason and SQLSTATE, every good one
# processed, and the same worker process keeps draining throughout.
set -uo pipefail
. "$(dirname "$0")/lib_fault.sh"
W=/tmp/junction-fault-malformed.$$
trap 'jx_cluster_stop; rm -rf "$W"' EXIT
JX_PORT=5445 fault_setup "$W" "junction.batch_size = 500"
pid0=$(psql -qXAt -d postgres -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'junction worker'")

psql -qX -v ON_ERROR_STOP=1 -d junction_fault >/dev/null <<'SQL'
-- the bad bodies: nine kinds round-robin, the first 20 are 5 MB
CREATE TABLE bad AS
SELECT i, kind, 'msg_bad_' || lpad(i::text, 6, '0') AS id,
       CASE kind
         WHEN 'five_mb'         THEN '{"event_type":"daily.data.steps.created","data":' || repeat('9', 5 * 1024 * 1024)
         WHEN 'garbage_json'    THEN '{"event_type": "daily.data.steps.created", "data": [' || repeat('x', i % 100)
         WHEN 'not_json'        THEN 'hello ' || i
         WHEN 'wrong_type'      THEN jsonb_set(jx_test_body(i * 10)::jsonb, '{data,data,0,value}', '"abc"')::text
         WHEN 'no_event_type'   THEN (jx_test_body(i * 10)::jsonb - 'event_type')::text
         WHEN 'bad_uuid'        THEN jsonb_set(jx_test_body(i * 10 + 7)::jsonb, '{user_id}', '"not-a-uuid"')::text
         WHEN 'long_provider'   THEN jsonb_set(jx_test_body(i * 10)::jsonb, '{data,source,provider}', to_jsonb(repeat('p', 5000)))::text
         WHEN 'missing_data'    THEN (jx_test_body(i * 10 + 7)::jsonb - 'data')::text
         ELSE jx_test_body(i * 10)
       END AS body
FROM (SELECT i, CASE WHEN i < 20 THEN 'five_mb'
                     ELSE (ARRAY['garbage_json','not_json','wrong_type','no_event_type','bad_uuid',
                                 'long_provider','missing_data','missing_headers','bad_signature'])[1 + i % 9] END AS kind
      FROM generate_series(0, 9999) i) s;
-- headers as the receiver got them, signed at insert time
CREATE FUNCTION bad_headers(kind text, id text, body text) RETURNS jsonb LANGUAGE sql AS $$
  SELECT CASE kind
    WHEN 'missing_headers' THEN jsonb_build_object('svix-id', id)
    WHEN 'bad_signature'   THEN jsonb_build_object('svix-id', id, 'svix-timestamp', extract(epoch FROM now())::bigint::text,
                                 'svix-signature', junction_sign_webhook('whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD', id, extract(epoch FROM now())::bigint, body))
    ELSE jsonb_build_object('svix-id', id, 'svix-timestamp', extract(epoch FROM now())::bigint::text,
           'svix-signature', junction_sign_webhook('whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', id, extract(epoch FROM now())::bigint, body))
  END $$;
SQL
# interleave 20 rounds of 500 good then 500 bad deliveries, each its own transaction
for c in $(seq 0 19); do
    psql -qX -v ON_ERROR_STOP=1 -d junction_fault >/dev/null <<SQL
INSERT INTO junction.inbox (headers, body)
SELECT d.headers, d.body FROM generate_series($((c*500)), $((c*500+499))) i,
     LATERAL jx_test_delivery(i, '$SECRET', extract(epoch FROM now())::bigint) d;
INSERT INTO junction.inbox (headers, body)
SELECT bad_headers(kind, id, body), body FROM bad WHERE i BETWEEN $((c*500)) AND $((c*500+499)) ORDER BY i;
SQL
done
check "worker drains everything (deadline 300 s)" "wait_drained junction_fault 300"
psql -qX -d junction_fault <<'SQL'
SELECT b.kind, i.status, i.sqlstate, count(*), min(left(i.error, 70)) AS a_reason
  FROM junction.inbox i JOIN bad b ON b.id = i.headers->>'svix-id'
 GROUP BY 1, 2, 3 ORDER BY 1, 2, 3;
SQL
q() { psql -qXAt -d junction_fault -c "$1"; }
check "all 10,000 malformed deliveries quarantined" \
    "[ \$(q \"SELECT count(*) FROM junction.inbox WHERE headers->>'svix-id' LIKE 'msg_bad_%' AND status = 'quarantined'\") = 10000 ]"
check "each quarantined row has a reason and a SQLSTATE" \
    "[ \$(q \"SELECT count(*) FROM junction.inbox WHERE status = 'quarantined' AND (error IS NULL OR sqlstate !~ '^[0-9A-Z]{5}\$')\") = 0 ]"
check "signature failures are 28000, the rest are data errors" \
    "[ \$(q \"SELECT count(*) FROM junction.inbox i JOIN bad b ON b.id = i.headers->>'svix-id' WHERE (b.kind IN ('missing_headers','bad_signature')) <> (i.sqlstate = '28000')\") = 0 ]"
check "all 10,000 good deliveries processed" \
    "[ \$(q \"SELECT count(*) FROM junction.inbox WHERE headers->>'svix-id' LIKE 'msg_test_%' AND status = 'processed'\") = 10000 ]"
check "no event was recorded for a malformed delivery" \
    "[ \$(q \"SELECT count(*) FROM junction.events WHERE svix_id LIKE 'msg_bad_%'\") = 0 ]"
pid1=$(psql -qXAt -d postgres -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'junction worker'")
check "the same worker process drained it all (pid $pid0 -> $pid1)" "[ -n '$pid0' ] && [ '$pid0' = '$pid1' ]"
check "no crash in the server log" "! grep -qE 'terminated by signal|PANIC' '$W/pg/server.log'"
echo "$CHECKS_PASSED passed, $CHECKS_FAILED failed"
[ $CHECKS_FAILED -eq 0 ]
