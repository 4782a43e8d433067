#!/usr/bin/env bash
# fault_hostile_api.sh — the API client against a hostile or careless Junction (the mock):
# keys configured from files never reach the log; answers echoing the key or a signing secret are
# redacted in every message and in the server log; a failing call with a secret literal is logged
# without its statement; an answer that is not UTF-8 is refused (22021); an answer over
# junction.http_max_response_size is refused (54000) with and without Content-Length, and the
# peak memory of a call just under the limit is measured and bounded.
set -uo pipefail
. "$(dirname "$0")/lib_fault.sh"
W=/tmp/junction-fault-hostile.$$
RND=$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
KEY=sk_us_h1key_$RND                      # the data API key: must never be logged
MKEY=mg_h1mkey_$RND                       # the Management key: same
DECOY=sk_us_decoy_$RND                    # set the old way, to show that the old way logs
S1=whsec_$(head -c 24 /dev/urandom | base64)         # stored in junction.webhook_secrets
S1BODY=${S1#whsec_}
S2=whsec_$(head -c 32 /dev/urandom | base64)         # passed to webhook create as a literal
S3=whsec_$(head -c 32 /dev/urandom | base64)         # passed to rotate as a literal
SHAPE=whsec_$(head -c 24 /dev/urandom | base64)      # known nowhere: only its shape is redacted
ORG=0190b2a0-0000-7000-8000-0000000000a1; TEAM=0190b2a0-0000-7000-8000-0000000000b2
mkdir -p "$W"
python3 "$ROOT/test/mock_junction.py" --port 0 --portfile "$W/mock.port" --api-key "$KEY" \
    --management-key "$MKEY" > "$W/mock.log" 2>&1 &
MOCK_PID=$!
trap 'jx_cluster_stop; kill $MOCK_PID 2>/dev/null; rm -rf "$W"' EXIT
for i in $(seq 1 50); do [ -s "$W/mock.port" ] && break; sleep 0.1; done
MOCK="http://127.0.0.1:$(cat "$W/mock.port")"
JX_PORT=5449 jx_cluster_start "$W/pg" junction_hostile "junction.api_base_url = '$MOCK'
junction.management_base_url = '$MOCK'
junction.org_id = '$ORG'
junction.team_id = '$TEAM'
junction.auto_backfill = off"
LOG=$W/pg/server.log
q() { psql -qXAt -d junction_hostile -c "$1" 2>&1; }
has() { [[ "$1" == *"$2"* ]]; }          # literal substring
starts() { [[ "$1" == "$2"* ]]; }        # literal prefix
fault() { curl -sf -X POST "$MOCK/_mock/faults" -d "$1" >/dev/null; }
psql -qX -v ON_ERROR_STOP=1 -d junction_hostile >/dev/null <<SQL
CREATE EXTENSION junction;
INSERT INTO junction.webhook_secrets(secret) VALUES ('$S1');
-- sqlstate|message|detail|hint of a statement (caught here, so not logged)
CREATE FUNCTION jx_err(sql text) RETURNS text LANGUAGE plpgsql AS \$\$
DECLARE s text; m text; d text; h text;
BEGIN
    EXECUTE sql;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS s = RETURNED_SQLSTATE, m = MESSAGE_TEXT, d = PG_EXCEPTION_DETAIL, h = PG_EXCEPTION_HINT;
    RETURN concat_ws('|', s, m, d, h);
END \$\$;
CREATE FUNCTION jx_hwm() RETURNS bigint LANGUAGE sql AS
  \$\$ SELECT (regexp_match(pg_read_file('/proc/self/status'), 'VmHWM:\s+(\d+) kB'))[1]::bigint \$\$;
SQL

echo "== 4a: keys from files"
# the old way logs the key: shown with a decoy, so that the grep below is known to work
q "ALTER SYSTEM SET junction.api_key = '$DECOY'" >/dev/null; q "SELECT pg_reload_conf()" >/dev/null; sleep 1
check "ALTER SYSTEM SET junction.api_key logs the key (decoy found in the server log)" "grep -q '$DECOY' '$LOG'"
q "ALTER SYSTEM RESET junction.api_key" >/dev/null
mkdir -p "$W/keys"; chown postgres: "$W/keys"
printf '%s\n' "$KEY" > "$W/keys/api.key"; printf '  %s \n\n' "$MKEY" > "$W/keys/mgmt.key"
chown postgres: "$W/keys/api.key" "$W/keys/mgmt.key"; chmod 600 "$W/keys/api.key" "$W/keys/mgmt.key"
q "ALTER SYSTEM SET junction.api_key_file = '$W/keys/api.key'" >/dev/null
q "ALTER SYSTEM SET junction.management_key_file = '$W/keys/mgmt.key'" >/dev/null
q "SELECT pg_reload_conf()" >/dev/null; sleep 1
check "data API call with junction.api_key_file succeeds against the mock" \
    "[ \"\$(q \"SELECT jsonb_typeof(junction_api('GET', '/v2/user'))\")\" = object ]"
check "Management API call with junction.management_key_file (whitespace-padded) succeeds" \
    "[ \"\$(q 'SELECT count(*) >= 0 FROM junction_webhooks()')\" = t ]"
check "the key file is what is sent: the mock saw only valid keys" \
    "curl -s '$MOCK/_mock/requests' | python3 -c 'import json,sys; r=json.load(sys.stdin); sys.exit(0 if r and all(e[\"api_key\"] in (\"valid\",\"absent\") and e[\"management_key\"] in (\"valid\",\"absent\") for e in r) else 1)'"
check "the base URL is derived from the key in the file (sk_us_: sandbox US)" \
    "[ \"\$(q \"SET junction.api_base_url = ''; SELECT junction._api_base_url(false)\")\" = https://api.sandbox.us.junction.com ]"
chmod 644 "$W/keys/api.key"
r=$(q "SELECT jx_err(\$\$SELECT junction_api('GET', '/v2/user')\$\$)"); echo "   $r"
check "a key file readable by group/others: F0000, 'group or world access', hint chmod 600" \
'starts "$r" "F0000|junction.api_key_file \"$W/keys/api.key\" has group or world access|" && has "$r" "|chmod 600"'
chmod 600 "$W/keys/api.key"; : > "$W/keys/empty.key"; chown postgres: "$W/keys/empty.key"; chmod 600 "$W/keys/empty.key"
r=$(q "SET junction.api_key_file = '$W/keys/empty.key'; SELECT jx_err(\$\$SELECT junction_api('GET', '/v2/user')\$\$)"); echo "   $r"
check "an empty key file: F0000 'is empty' with a hint" 'starts "$r" "F0000|" && has "$r" "is empty|" && has "$r" "|Write the key"'
r=$(q "SET junction.api_key_file = '$W/keys/missing.key'; SELECT jx_err(\$\$SELECT junction_api('GET', '/v2/user')\$\$)"); echo "   $r"
check "a missing key file: 58P01 'could not open' with a hint" 'starts "$r" "58P01|could not open junction.api_key_file" && has "$r" "No such file" && has "$r" "|Write the key"'
r=$(q "SET junction.api_key = 'sk_us_other'; SELECT jx_err(\$\$SELECT junction_api('GET', '/v2/user')\$\$)"); echo "   $r"
check "key and key file both set: F0000 naming both, hint ALTER SYSTEM RESET" \
'starts "$r" "F0000|both junction.api_key and junction.api_key_file are set|" && has "$r" "ALTER SYSTEM RESET junction.api_key"'
q "CREATE ROLE jx_nobody LOGIN" >/dev/null
r=$(psql -qXAt -U jx_nobody -d junction_hostile -c 'SHOW junction.api_key_file' 2>&1); echo "   $r"
check "a non-superuser cannot read junction.api_key_file" 'has "$r" "must be superuser" && ! has "$r" "$W"'

echo "== 4b: answers echoing the key or a secret are redacted"
fault '{"path_prefix": "/v2/user", "responses": [{"status": 401, "template": true, "body": "{\"detail\": \"Invalid API key {api_key} for team (marker-4b-data)\"}"}]}'
r=$(q "SELECT jx_err(\$\$SELECT junction_api('GET', '/v2/user')\$\$)"); echo "   $r"
check "data API 401 echoing the key: 28000, detail 'Invalid API key [redacted] for team'" \
'starts "$r" "28000|junction API GET /v2/user failed with HTTP 401|Invalid API key [redacted] for team (marker-4b-data)|" && ! has "$r" "$KEY"'
fault '{"path_prefix": "/v2/user", "responses": [{"status": 401, "template": true, "body": "{\"detail\": \"Invalid API key {api_key} for team (marker-4b-logged)\"}"}]}'
q "SELECT junction_api('GET', '/v2/user')" >/dev/null
check "the same error reached the server log, redacted" "grep -q 'Invalid API key \[redacted\] for team (marker-4b-logged)' '$LOG'"
fault "{\"path_prefix\": \"/v2/user\", \"responses\": [{\"status\": 400, \"body\": \"{\\\"detail\\\": \\\"stored $S1BODY, full $S1, unknown $SHAPE (marker-4b-secret)\\\"}\"}]}"
r=$(q "SELECT jx_err(\$\$SELECT junction_api('GET', '/v2/user')\$\$)"); echo "   $r"
check "a stored secret (with and without whsec_) and an unknown whsec_ shape are redacted: 22023" \
'starts "$r" "22023|" && has "$r" "|stored [redacted], full [redacted], unknown whsec_[redacted] (marker-4b-secret)" && ! has "$r" "$S1BODY" && ! has "$r" "${SHAPE#whsec_}"'
fault '{"path_prefix": "/v1/", "responses": [{"status": 422, "template": true, "body": "{\"detail\": \"rejected {request_body} with {management_key} (marker-4b-mgmt)\"}"}]}'
r=$(q "SELECT jx_err(\$\$SELECT junction_webhook_create('https://example.com/h', secret => '$S2')\$\$)"); echo "   $r"
check "Management API 422 echoing the request body (the new secret) and the key: 22023, both redacted" \
'starts "$r" "22023|junction Management API POST " && has "$r" "failed with HTTP 422|rejected " && has "$r" "\"secret\": \"[redacted]\"" && has "$r" " with [redacted] (marker-4b-mgmt)" && ! has "$r" "$S2" && ! has "$r" "${S2#whsec_}" && ! has "$r" "$MKEY"'
check "junction._redact() is the same function in SQL" \
    "[ \"\$(q \"SELECT junction._redact('a $KEY b $MKEY c $S1BODY d ' || 'x', ARRAY['xyz_secret_1'])\")\" = 'a [redacted] b [redacted] c [redacted] d x' ]"

echo "== 4c: a failing call with a secret literal is logged without its statement"
q "SELECT 'whsec_ctl$RND'::integer" >/dev/null
check "control: a failing plain statement is logged with its text (log_min_error_statement = error)" \
    "grep -q 'STATEMENT:.*whsec_ctl$RND' '$LOG'"
fault '{"path_prefix": "/v1/", "responses": [{"status": 500, "body": "{\"detail\": \"boom (marker-4c-create)\"}"}]}'
q "SET junction.http_retries = 0; SELECT junction_webhook_create('https://example.com/h', secret => '$S2')" >/dev/null
check "webhook_create with secret => literal failing (HTTP 500): the error is logged" "grep -q 'marker-4c-create' '$LOG'"
q "SET junction.http_retries = 0; SELECT * FROM junction_webhook_secret_rotate('ep_doesnotexist', new_secret => '$S3')" >/dev/null
check "secret_rotate with new_secret => literal failing (HTTP 404): the error is logged" \
    "grep -q 'junction Management API GET .*ep_doesnotexist/secret failed with HTTP 404' '$LOG'"
q "SELECT * FROM junction_webhook_set_headers('ep_doesnotexist', '{\"Authorization\": \"Bearer tok$RND\"}')" >/dev/null
check "set_headers with a header value failing: the value is not logged" "! grep -q 'tok$RND' '$LOG'"
check "neither secret literal (nor its base64 body) is anywhere in the server log" \
    "! grep -qF -e '$S2' -e '$S3' -e '${S2#whsec_}' -e '${S3#whsec_}' '$LOG'"

echo "== 5: answers that are not UTF-8"
fault "{\"path_prefix\": \"/v2/user\", \"responses\": [{\"status\": 200, \"body_b64\": \"$(printf '{"users": [{"name": "Oura \xff\xfe"}]}' | base64 -w0)\"}]}"
r=$(q "SELECT jx_err(\$\$SELECT junction_api('GET', '/v2/user')\$\$)"); echo "   $r"
check "a 2xx answer with invalid UTF-8: 22021, message without the bytes" \
'starts "$r" "22021|junction API GET /v2/user returned an answer that is not valid UTF-8|The answer has 32 bytes; the first invalid byte sequence starts at byte 27. Nothing was stored.|"'
fault "{\"path_prefix\": \"/v2/user\", \"responses\": [{\"status\": 500, \"body_b64\": \"$(printf '{"detail": "bad \xc3\x28"}' | base64 -w0)\"}]}"
r=$(q "SET junction.http_retries = 0; SELECT jx_err(\$\$SELECT junction_api('GET', '/v2/user')\$\$)"); echo "   $r"
check "an error answer with invalid UTF-8: its status's SQLSTATE (38000), a note instead of the bytes" \
'[ "$r" = "38000|junction API GET /v2/user failed with HTTP 500|(the answer of 20 bytes is not valid UTF-8; first invalid byte sequence at byte 17)|" ]'
fault "{\"path_prefix\": \"/v2/user\", \"responses\": [{\"status\": 200, \"body_b64\": \"$(printf '{"users": [], "note": "caf\xc3\xa9 \xe2\x9c\x93"}' | base64 -w0)\"}]}"
check "a valid multi-byte UTF-8 answer still parses" \
    "[ \"\$(q \"SELECT junction_api('GET', '/v2/user') ->> 'note'\")\" = 'café ✓' ]"

echo "== 6a: answers over junction.http_max_response_size"
check "default junction.http_max_response_size is 16MB" "[ \"\$(q 'SHOW junction.http_max_response_size')\" = 16MB ]"
fault '{"path_prefix": "/v2/user", "responses": [{"status": 200, "generate": {"bytes": 5242880}}]}'
r=$(q "SET junction.http_max_response_size = '1MB'; SELECT jx_err(\$\$SELECT junction_api('GET', '/v2/user')\$\$)"); echo "   $r"
check "5 MB with Content-Length, limit 1 MB: 54000, refused from Content-Length, hint names the setting" \
'starts "$r" "54000|junction API GET /v2/user: the answer is larger than junction.http_max_response_size (1024 kB)|Content-Length is 5242880 bytes; the transfer was refused before its body was read.|" && has "$r" "raise junction.http_max_response_size"'
fault '{"path_prefix": "/v2/user", "responses": [{"status": 200, "generate": {"bytes": 5242880}, "chunked": true}]}'
r=$(q "SET junction.http_max_response_size = '1MB'; SELECT jx_err(\$\$SELECT junction_api('GET', '/v2/user')\$\$)"); echo "   $r"
check "5 MB chunked (no Content-Length), limit 1 MB: 54000, aborted after 1 MB" \
'starts "$r" "54000|" && has "$r" "|The transfer was aborted after 1048576 bytes.|" && has "$r" "raise junction.http_max_response_size"'
fault '{"path_prefix": "/v2/user", "responses": [{"status": 500, "generate": {"bytes": 5242880}, "chunked": true}]}'
r=$(q "SET junction.http_retries = 0; SET junction.http_max_response_size = '1MB'; SELECT jx_err(\$\$SELECT junction_api('GET', '/v2/user')\$\$)"); echo "   $r"
check "an error answer over the limit is refused the same way (54000)" 'starts "$r" "54000|"'
check "the same connection still works afterwards" "[ \"\$(q \"SELECT jsonb_typeof(junction_api('GET', '/v2/user'))\")\" = object ]"

# memory: a fresh backend per measurement; VmHWM (peak RSS) before and after one call
measure() {  # bytes, shape, chunked, limit setting -> "delta_kB|outcome"
    fault "{\"path_prefix\": \"/v2/big\", \"responses\": [{\"status\": 200, \"generate\": {\"bytes\": $1, \"shape\": \"$2\"}, \"chunked\": $3}]}"
    psql -qXAt -d junction_hostile <<SQL 2>&1
SET junction.http_max_response_size = '$4';
-- warm up (libcurl and OpenSSL initialisation, plpgsql) before the baseline
SELECT jx_err(\$\$SELECT junction_api('GET', '/v2/user')\$\$) AS w \gset
SELECT jx_hwm() AS b \gset
SELECT coalesce(nullif(jx_err(\$\$SELECT pg_column_size(junction_api('GET', '/v2/big'))\$\$), 'no error'), 'ok') AS o \gset
SELECT (jx_hwm() - :b) || '|' || split_part(:'o', '|', 1);
SQL
}
UNDER=$((16 * 1024 * 1024 - 65536))
m1=$(measure $UNDER samples false 16MB); d1=${m1%%|*}
echo "   answer of $UNDER bytes (timeseries samples, Content-Length) under the 16 MB default: peak RSS +$((d1 / 1024)) MB = $(awk "BEGIN {printf \"%.1f\", $d1 * 1024 / $UNDER}") x the answer"
check "an answer just under the limit is accepted, and the backend's peak RSS grows by at most 20 x its size" \
    "[ '${m1#*|}' = ok ] && [ $d1 -le $((UNDER * 20 / 1024)) ]"
m2=$(measure $((8 * 1024 * 1024)) numbers false 16MB); d2=${m2%%|*}
echo "   answer of 8 MB (one-digit numbers, the most values per byte): peak RSS +$((d2 / 1024)) MB = $(awk "BEGIN {printf \"%.1f\", $d2 * 1024 / (8 * 1048576)}") x the answer"
check "the worst shape stays within 50 x its size" "[ '${m2#*|}' = ok ] && [ $d2 -le $((8 * 1024 * 50)) ]"
m3=$(measure $((100 * 1024 * 1024)) samples true 16MB); d3=${m3%%|*}
echo "   answer of 100 MB chunked (the issue's case) against the 16 MB default: refused with ${m3#*|}, peak RSS +$((d3 / 1024)) MB"
check "a 100 MB chunked answer is refused (54000) and the backend grows by less than 2 x the limit" \
    "[ '${m3#*|}' = 54000 ] && [ $d3 -lt $((2 * 16 * 1024)) ]"
m4=$(measure $((100 * 1024 * 1024)) samples false 16MB); d4=${m4%%|*}
echo "   answer of 100 MB with Content-Length: refused with ${m4#*|}, peak RSS +$((d4 / 1024)) MB"
check "a 100 MB answer with Content-Length is refused (54000) without reading it (growth < 2 MB)" \
    "[ '${m4#*|}' = 54000 ] && [ $d4 -lt 2048 ]"

echo "== the log"
check "the data API key is nowhere in the server log" "! grep -qF '$KEY' '$LOG'"
check "the Management key is nowhere in the server log" "! grep -qF '$MKEY' '$LOG'"
check "the stored signing secret is nowhere in the server log" "! grep -qF -e '$S1' -e '$S1BODY' '$LOG'"
check "neither key is in postgresql.auto.conf" "! grep -qF -e '$KEY' -e '$MKEY' '$W/pg/data/postgresql.auto.conf'"
check "no crash in the server log" "! grep -qE 'terminated by signal|PANIC' '$LOG'"
echo "$CHECKS_PASSED passed, $CHECKS_FAILED failed"
[ $CHECKS_FAILED -eq 0 ]
