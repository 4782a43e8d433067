#!/usr/bin/env bash
# fault_hostile_inbox.sh — no single inbox row, whatever it holds, stops or
# slows the drain, and no setting-less memory cliff:
#   1. the table's constraints reject what no delivery can be (infinite
#      received_at, headers that are not an object);
#   2. with the constraints dropped (rows from before them), hostile rows —
#      infinite/null fields, headers as array/scalar/null/odd values/huge,
#      empty, junk, deeply nested, \u0000, over-long svix-id, bodies that are
#      not objects or have no string event_type, a bad uuid — are each
#      quarantined with their exact reason and SQLSTATE by the worker, the
#      good deliveries behind them are processed, the worker never restarts;
#   3. invalid encoding: in a SQL_ASCII database (the one real path for bytes
#      that are not UTF-8 into a text column) such a body is quarantined 22021;
#   4. a bad row in a batch costs O(log batch) typing subtransactions, not one
#      per row (counted in XIDs), and C-visible bad JSON costs none;
#   5. 20 signed 20 MB deliveries: the worker's peak RSS stays under 1 GB.
set -uo pipefail
. "$(dirname "$0")/lib_fault.sh"
W=/tmp/junction-fault-hostile.$$
trap 'jx_cluster_stop; [ -n "${KEEP:-}" ] || rm -rf "$W"' EXIT
JX_PORT=5449 fault_setup "$W" "junction.batch_size = 500"
q() { psql -qXAt -d ${2:-junction_fault} -c "$1" 2>&1; }
qe() { q "$@"; true; }   # for statements that must fail: their error text
worker_pid() { psql -qXAt -d postgres -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'junction worker'"; }
pid0=$(worker_pid)

# --- 1. constraints ---------------------------------------------------------------------------
check "an infinite received_at is rejected by inbox_received_at_finite" \
    "qe \"INSERT INTO junction.inbox (received_at, headers, body) VALUES ('infinity', '{}', '{}')\" | grep -q 'inbox_received_at_finite'"
check "headers that are a JSON array are rejected by inbox_headers_object" \
    "qe \"INSERT INTO junction.inbox (headers, body) VALUES ('[1]', '{}')\" | grep -q 'inbox_headers_object'"

# --- 2. hostile rows that got in anyway ------------------------------------------------------------
psql -qX -v ON_ERROR_STOP=1 -d junction_fault >/dev/null <<SQL
ALTER TABLE junction.inbox DROP CONSTRAINT inbox_received_at_finite,
                           DROP CONSTRAINT inbox_headers_object,
                           ALTER COLUMN headers DROP NOT NULL,
                           ALTER COLUMN body DROP NOT NULL,
                           ALTER COLUMN received_at DROP NOT NULL;
CREATE TABLE hostile (name text PRIMARY KEY, inbox_id bigint, want text);
CREATE FUNCTION sig(id text, body text) RETURNS jsonb LANGUAGE sql AS \$\$
  SELECT jsonb_build_object('svix-id', id, 'svix-timestamp', extract(epoch FROM now())::bigint::text,
           'svix-signature', junction_sign_webhook('$SECRET', id, extract(epoch FROM now())::bigint, coalesce(body, '')))
\$\$;
-- put(name, received_at, headers, body, expected 'status|sqlstate|error')
CREATE FUNCTION put(name text, at timestamptz, h jsonb, b text, want text) RETURNS void LANGUAGE sql AS \$\$
  WITH i AS (INSERT INTO junction.inbox (received_at, headers, body) VALUES (at, h, b) RETURNING id)
  INSERT INTO hostile SELECT name, id, want FROM i
\$\$;
BEGIN;
SELECT put('received_infinity', 'infinity', sig('msg_h01', jx_test_body(1)), jx_test_body(1),
  'quarantined|22008|received_at is infinity: the svix-timestamp cannot be checked against it');
SELECT put('received_minus_infinity', '-infinity', sig('msg_h02', jx_test_body(2)), jx_test_body(2),
  'quarantined|22008|received_at is -infinity: the svix-timestamp cannot be checked against it');
SELECT put('received_null', NULL, sig('msg_h03', jx_test_body(3)), jx_test_body(3),
  'quarantined|23502|inbox row has no received_at (received_at is null)');
SELECT put('headers_array', now(), jsonb_build_array(sig('msg_h04', jx_test_body(4))), jx_test_body(4),
  'quarantined|22023|headers must be a JSON object, not an array');
SELECT put('headers_scalar', now(), '"svix-id: msg_h05"', jx_test_body(5),
  'quarantined|22023|headers must be a JSON object, not a scalar');
SELECT put('headers_null', now(), NULL, jx_test_body(6),
  'quarantined|23502|inbox row has no headers (headers is null)');
SELECT put('body_null', now(), sig('msg_h07', NULL), NULL,
  'quarantined|23502|inbox row has no body (body is null)');
SELECT put('timestamp_is_number', now(),
  jsonb_set(sig('msg_h08', jx_test_body(8)), '{svix-timestamp}', to_jsonb(extract(epoch FROM now())::bigint)), jx_test_body(8),
  'quarantined|28000|webhook signature check failed: missing_header');
SELECT put('signature_is_object', now(),
  jsonb_set(sig('msg_h09', jx_test_body(9)), '{svix-signature}', jsonb_build_object('v1', 'x')), jx_test_body(9),
  'quarantined|28000|webhook signature check failed: missing_header');
SELECT put('headers_huge', now(),
  sig('msg_h10', jx_test_body(10)) || (SELECT jsonb_object_agg('x-pad-' || g, repeat('h', 50)) FROM generate_series(1, 100000) g),
  jx_test_body(10), 'processed||');
SELECT put('body_empty', now(), sig('msg_h11', ''), '',
  'quarantined|22P02|webhook body is not valid JSON: The input string ended unexpectedly.');
SELECT put('body_junk', now(), sig('msg_h12', E'junk\x01\x02\x7f' || repeat('é', 10)), E'junk\x01\x02\x7f' || repeat('é', 10),
  'quarantined|22P02|webhook body is not valid JSON: Token "junk" is invalid.');
SELECT put('body_deeply_nested', now(), sig('msg_h13', repeat('[', 200000) || repeat(']', 200000)),
  repeat('[', 200000) || repeat(']', 200000), 'quarantined|54001|stack depth limit exceeded');
SELECT put('body_nul_escape', now(), sig('msg_h14', '{"event_type": "x\u0000y"}'), '{"event_type": "x\u0000y"}',
  'quarantined|22P05|webhook body is not valid JSON: \u0000 cannot be converted to text.');
SELECT put('svix_id_long', now(), sig(repeat('m', 300), jx_test_body(15)), jx_test_body(15),
  'quarantined|22001|svix-id header is 300 bytes long, more than 256');
SELECT put('body_array', now(), sig('msg_h16', '[{"event_type": "daily.data.steps.created"}]'), '[{"event_type": "daily.data.steps.created"}]',
  'quarantined|22023|webhook body is a JSON array, not an object');
SELECT put('body_string', now(), sig('msg_h17', '"hello"'), '"hello"',
  'quarantined|22023|webhook body is a JSON string, not an object');
SELECT put('event_type_number', now(), sig('msg_h18', '{"event_type": 42, "data": {}}'), '{"event_type": 42, "data": {}}',
  'quarantined|22023|event_type must be a string, not number');
SELECT put('event_type_last_null', now(), sig('msg_h19', '{"event_type": "daily.data.steps.created", "event_type": null}'),
  '{"event_type": "daily.data.steps.created", "event_type": null}', 'quarantined|23502|webhook body has no event_type');
SELECT put('event_type_nested_only', now(), sig('msg_h20', '{"data": {"event_type": "daily.data.steps.created"}}'),
  '{"data": {"event_type": "daily.data.steps.created"}}', 'quarantined|23502|webhook body has no event_type');
SELECT put('truncated_json', now(), sig('msg_h21', left(jx_test_body(21), 100)), left(jx_test_body(21), 100),
  'quarantined|22P02|webhook body is not valid JSON: The input string ended unexpectedly.');
SELECT put('user_not_uuid', now(), sig('msg_h22', jsonb_set(jx_test_body(22)::jsonb, '{user_id}', '"u-22"')::text),
  jsonb_set(jx_test_body(22)::jsonb, '{user_id}', '"u-22"')::text,
  'quarantined|22P02|daily.data.steps.created: user_id "u-22" is not a uuid');
-- the deliveries behind them
INSERT INTO junction.inbox (headers, body)
SELECT d.headers, d.body FROM generate_series(0, 999) i, LATERAL jx_test_delivery(i, '$SECRET', extract(epoch FROM now())::bigint) d;
COMMIT;
SQL
check "worker drains the hostile rows and the 1,000 behind them (deadline 120 s)" "wait_drained junction_fault 120"
while IFS=$'\t' read -r name got want; do
    check "hostile row '$name' -> $want" '[ "$got" = "$want" ] || { echo "       got: $got"; false; }'
done < <(psql -qXAt -d junction_fault -F $'\t' -c "
  SELECT h.name, concat_ws('|', i.status, coalesce(i.sqlstate, ''), coalesce(i.error, '')), h.want
    FROM hostile h JOIN junction.inbox i ON i.id = h.inbox_id ORDER BY h.inbox_id")
check "all 1,000 deliveries behind them processed" \
    "[ \$(q \"SELECT count(*) FROM junction.inbox WHERE headers->>'svix-id' LIKE 'msg_test_%' AND status = 'processed'\") = 1000 ]"
check "the same worker process drained it all (pid $pid0 -> $(worker_pid))" "[ -n '$pid0' ] && [ '$pid0' = '$(worker_pid)' ]"
check "the worker logged no error" "! grep -E 'junction worker: (ERROR|FATAL)' '$W/pg/server.log'"
psql -qX -d junction_fault >/dev/null <<SQL
DELETE FROM junction.inbox WHERE status = 'quarantined' OR received_at IS NULL OR NOT isfinite(received_at) OR jsonb_typeof(headers) IS DISTINCT FROM 'object';
ALTER TABLE junction.inbox ALTER COLUMN headers SET NOT NULL, ALTER COLUMN body SET NOT NULL, ALTER COLUMN received_at SET NOT NULL,
  ADD CONSTRAINT inbox_received_at_finite CHECK (isfinite(received_at)),
  ADD CONSTRAINT inbox_headers_object CHECK (jsonb_typeof(headers) = 'object');
SQL

# --- 3. invalid encoding ------------------------------------------------------------------------
# In a UTF8 database every way into a text column (literals, COPY, binary input, convert_from)
# validates the bytes, so invalid UTF-8 cannot reach the inbox there.  A SQL_ASCII database
# stores whatever bytes arrive: that is the real path, and there the drain checks bodies as UTF-8.
psql -qX -v ON_ERROR_STOP=1 -d postgres >/dev/null <<SQL
CREATE DATABASE junction_ascii ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0;
\c junction_ascii
SET client_encoding = 'SQL_ASCII';
CREATE EXTENSION junction;
INSERT INTO junction.webhook_secrets(secret) VALUES ('$SECRET');
CREATE FUNCTION sig(id text, body text) RETURNS jsonb LANGUAGE sql AS \$\$
  SELECT jsonb_build_object('svix-id', id, 'svix-timestamp', extract(epoch FROM now())::bigint::text,
           'svix-signature', junction_sign_webhook('$SECRET', id, extract(epoch FROM now())::bigint, body))
\$\$;
-- chr() in a single-byte database gives the raw byte
CREATE TABLE bodies AS SELECT
  '{"event_type": "labtest.order.created", "user_id": "0190b2a0-0000-7000-8000-000000000001", "data": {"id": "0190b2a7-0000-7000-8000-0000000000f1", "note": "caf' || chr(233) || '"}}' AS latin1,
  '{"event_type": "labtest.order.created", "user_id": "0190b2a0-0000-7000-8000-000000000001", "data": {"id": "0190b2a7-0000-7000-8000-0000000000f2", "note": "caf' || chr(195) || chr(169) || '"}}' AS utf8;
INSERT INTO junction.inbox (headers, body)
SELECT sig('msg_enc_latin1', latin1), latin1 FROM bodies UNION ALL
SELECT sig('msg_enc_utf8', utf8), utf8 FROM bodies UNION ALL
SELECT sig('msg_enc_' || chr(255), utf8), utf8 FROM bodies;
SELECT junction_process_inbox();
SQL
echo "       latin1 row: $(q "SELECT concat_ws('|', status, sqlstate, error) FROM junction.inbox WHERE headers->>'svix-id' = 'msg_enc_latin1'" junction_ascii)"
check "a Latin-1 body in a SQL_ASCII database is quarantined 22021 with the offset and bytes" \
    "[ \$(q \"SELECT concat_ws('|', status, sqlstate, error) = 'quarantined|22021|webhook body is not valid UTF8: invalid byte sequence at byte ' || (position(chr(233) IN body) - 1) || ': 0xe9 0x22 0x7d 0x7d' FROM junction.inbox WHERE headers->>'svix-id' = 'msg_enc_latin1'\" junction_ascii) = t ]"
check "an invalid svix-id is quarantined 22021" \
    "[ \"\$(q \"SELECT status || '|' || sqlstate || '|' || error FROM junction.inbox WHERE id = 3\" junction_ascii)\" = 'quarantined|22021|svix-id header is not valid UTF8: invalid byte sequence at byte 8: 0xff' ]"
check "the valid UTF-8 body next to them is processed" \
    "[ \"\$(q \"SELECT status FROM junction.inbox WHERE headers->>'svix-id' = 'msg_enc_utf8'\" junction_ascii)\" = processed ]"
check "no event was recorded for the invalid bodies" \
    "[ \"\$(q \"SELECT string_agg(svix_id, ',') FROM junction.events\" junction_ascii)\" = msg_enc_utf8 ]"

# --- 4. subtransactions: XIDs one drain of 500 rows consumes ------------------------------------------
# (in junction_clean, which no worker serves; each XID-assigning subtransaction takes one)
xids_for() {  # SQL that inserts the batch -> XIDs the drain took (top-level included)
    psql -qX -v ON_ERROR_STOP=1 -d junction_clean -c "DELETE FROM junction.inbox; $1" >/dev/null
    local t0 t1
    t0=$(q "SELECT txid_current()" junction_clean)
    q "SELECT junction_process_inbox(500)" junction_clean >/dev/null
    t1=$(q "SELECT txid_current()" junction_clean)
    echo $((t1 - t0 - 1))
}
ins="INSERT INTO junction.inbox (headers, body) SELECT d.headers,
       CASE WHEN i % 100 = 31 THEN BAD ELSE d.body END
     FROM generate_series(START, START + 499) i, LATERAL jx_test_delivery(i, '$SECRET', extract(epoch FROM now())::bigint) d;"
# a signature over the bad body, so it is the typing, not the signature check, that refuses it
resign="UPDATE junction.inbox SET headers = jsonb_set(headers, '{svix-signature}', to_jsonb(junction_sign_webhook('$SECRET', headers->>'svix-id', (headers->>'svix-timestamp')::bigint, body)));"
# (fresh deliveries each time, so every good row is new and its typing writes)
i1=${ins//START/5000}; i2=${ins//START/6000}; i3=${ins//START/7000}
x_clean=$(xids_for "${i1/BAD/d.body}")
truncated="left(d.body, 60)"; bad_uuid="jsonb_set(d.body::jsonb, '{user_id}', '\"u-bad\"')::text"
x_c=$(xids_for "${i2/BAD/$truncated} $resign")
check "5 truncated bodies in 500 cost no extra typing subtransaction ($x_c XIDs vs $x_clean clean)" "[ '$x_c' = '$x_clean' ]"
check "and exactly those 5 quarantined 22P02 by the C pre-check, 495 processed" \
    "[ \"\$(q \"SELECT count(*) FILTER (WHERE status = 'quarantined' AND sqlstate = '22P02' AND error LIKE 'webhook body is not valid JSON: %') || '|' || count(*) FILTER (WHERE status = 'processed') FROM junction.inbox\" junction_clean)\" = '5|495' ]"
x_sql=$(xids_for "${i3/BAD/$bad_uuid} $resign")
echo "       XIDs for 500 rows: clean $x_clean, 5 truncated bodies $x_c, 5 bad uuids $x_sql"
check "5 bad uuids in 500: bisected, at most 2*5*log2(500) subtransactions, not 500 ($x_sql XIDs)" "[ $x_sql -le 92 ] && [ $x_sql -gt $x_clean ]"
check "and exactly those 5 quarantined with their own reason" \
    "[ \"\$(q \"SELECT count(*) FILTER (WHERE sqlstate = '22P02' AND error ~ '^daily\\.data\\.[a-z]+\\.created: user_id \\\"u-bad\\\" is not a uuid\$') || '|' || count(*) FROM junction.inbox WHERE status = 'quarantined'\" junction_clean)\" = '5|5' ]"
check "the other 495 processed" \
    "[ \$(q \"SELECT count(*) FROM junction.inbox WHERE status = 'processed'\" junction_clean) = 495 ]"

# --- 5. memory: 20 signed 20 MB deliveries ---------------------------------------------------------
pid=$(worker_pid)
hwm0=$(awk '/^VmHWM:/ {print $2}' /proc/$pid/status)
psql -qX -v ON_ERROR_STOP=1 -d junction_fault >/dev/null <<SQL
CREATE TABLE big AS SELECT string_agg(md5(g::text), '') AS pad FROM generate_series(1, 655360) g;
BEGIN;
INSERT INTO junction.inbox (headers, body)
SELECT sig('msg_big_' || k, b.body), b.body
  FROM generate_series(1, 20) k, big,
       LATERAL (SELECT jsonb_set(jx_test_body(9 + 30 * k)::jsonb, '{data,padding}', to_jsonb(k || big.pad))::text AS body) b;
COMMIT;
SQL
t0=$SECONDS
check "20 deliveries of 20 MB drained (deadline 300 s)" "wait_drained junction_fault 300"
secs=$((SECONDS - t0))
hwm=$(awk '/^VmHWM:/ {print $2}' /proc/$pid/status)
echo "       20 x $(q "SELECT octet_length(body) FROM junction.inbox WHERE headers->>'svix-id' = 'msg_big_1'") bytes in ${secs} s; worker VmHWM $((hwm0 / 1024)) MB before -> $((hwm / 1024)) MB peak"
check "all 20 processed" \
    "[ \$(q \"SELECT count(*) FROM junction.inbox WHERE headers->>'svix-id' LIKE 'msg_big_%' AND status = 'processed'\") = 20 ]"
check "the worker's peak RSS stayed under 1 GB ($((hwm / 1024)) MB, pid $pid)" "[ '$pid' = '$(worker_pid)' ] && [ $hwm -lt 1048576 ]"
check "no crash in the server log" "! grep -qE 'terminated by signal|PANIC' '$W/pg/server.log'"
echo "$CHECKS_PASSED passed, $CHECKS_FAILED failed"
[ $CHECKS_FAILED -eq 0 ]
