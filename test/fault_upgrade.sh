#!/usr/bin/env bash
# fault_upgrade.sh — an install of an earlier release (JX_UPGRADE_FROM, default 0.1.0: the whole
# chain of upgrade scripts; fault_upgrade_previous.sh runs it from the previous release), with data, upgraded in place
# with ALTER EXTENSION junction UPDATE while the worker serves it, ends exactly like a fresh
# install of the current version: the same extension objects, definitions, constraints,
# comments and privileges (test/sql/extension_facts.sql, diffed; every object that differs
# is named), the same pg_dump --schema-only; no data lost; the worker goes on draining.
# Negative controls: deliberate small differences (a NOT VALID constraint, a lost SET clause,
# STRICT, a grant, a comment, a body, a member) each make the comparison fail.
set -uo pipefail
. "$(dirname "$0")/lib_fault.sh"
W=/tmp/junction-fault-upgrade.${JX_UPGRADE_FROM:-0.1.0}.$$
trap 'jx_cluster_stop; [ -n "${KEEP:-}" ] || rm -rf "$W"' EXIT
OLD=${JX_UPGRADE_FROM:-0.1.0}
NEW=$(sed -n "s/^default_version = '\(.*\)'/\1/p" "$ROOT/junction.control")
FACTS=$ROOT/test/sql/extension_facts.sql
q() { psql -qXAt -d "$1" -c "$2"; }

mkdir -p "$W"
JX_PORT=${JX_UPGRADE_PORT:-5453} jx_cluster_start "$W/pg" junction_fault "junction.batch_size = 500"
psql -qX -d postgres -c "CREATE DATABASE junction_clean" -c "CREATE DATABASE junction_mutant" >/dev/null
# junction_fault: the old release, served by the worker; junction_clean: a fresh install of the
# current one (the reference, drained synchronously); junction_mutant: upgraded, for the controls
for db in junction_fault junction_clean junction_mutant; do
    v=$OLD; [ $db = junction_clean ] && v=$NEW
    psql -qX -v ON_ERROR_STOP=1 -d $db >/dev/null <<SQL || { echo "FAIL - setup of $db"; exit 1; }
CREATE EXTENSION junction VERSION '$v';
INSERT INTO junction.webhook_secrets(secret) VALUES ('$SECRET');
\i $ROOT/test/sql/deliveries.sql
CREATE TABLE loaded (chunk integer PRIMARY KEY);
SQL
done
check "junction_fault runs $OLD, junction_clean $NEW (≠ $OLD)" \
    "[ \$(q junction_fault 'SELECT extversion FROM pg_extension WHERE extname = \$\$junction\$\$') = $OLD ] && [ \$(q junction_clean 'SELECT extversion FROM pg_extension WHERE extname = \$\$junction\$\$') = $NEW ] && [ $NEW != $OLD ]"

# ---- data under the old release, drained by the (new) worker ----
load_chunks junction_fault 0 2000
check "the worker drains $OLD's inbox (deadline 120 s)" "wait_drained junction_fault 120"
q junction_fault "SELECT * FROM jx_typed_fingerprint()" > "$W/before.fp"
MAXID=$(q junction_fault "SELECT max(id) FROM junction.inbox")
q junction_fault "SELECT count(*), md5(string_agg(concat_ws('|', id, received_at, headers, md5(body), status, attempts, error, sqlstate, processed_at), ',' ORDER BY id)) FROM junction.inbox" > "$W/before.inbox"

# ---- the update. From 0.1.0: in one transaction with rows 0.1.0 accepted and 0.2.0's constraints
#      refuse (headers that are no object, an infinite received_at); they are kept, quarantined ----
if [ $OLD = 0.1.0 ]; then REFUSED=3; else REFUSED=0; fi
if [ $REFUSED -gt 0 ]; then
psql -qX -v ON_ERROR_STOP=1 -d junction_fault > "$W/update.out" 2>&1 <<'SQL'
BEGIN;
SELECT junction_receive('[]', '{"event_type": "x"}');
SELECT junction_receive('"scalar"', '{"event_type": "y"}');
INSERT INTO junction.inbox (received_at, headers, body) VALUES ('infinity', '{"svix-id": "msg_upgrade_inf"}', '{}');
CREATE TEMP TABLE bad AS SELECT id FROM junction.inbox WHERE status = 'pending';
ALTER EXTENSION junction UPDATE;
COMMIT;
SQL
else
psql -qX -v ON_ERROR_STOP=1 -d junction_fault -c "ALTER EXTENSION junction UPDATE" > "$W/update.out" 2>&1
fi
rc=$?; cat "$W/update.out"
check "ALTER EXTENSION junction UPDATE from $OLD succeeds (with $REFUSED rows that break newer constraints)" "[ $rc -eq 0 ]"
check "extversion is now $NEW" "[ \$(q junction_fault 'SELECT extversion FROM pg_extension WHERE extname = \$\$junction\$\$') = $NEW ]"

# ---- 1. the extension's objects equal a fresh install's ----
compare_facts() {  # db, label: diff db's facts against junction_clean's, name the objects that differ
    psql -qX -d "$1" -f "$FACTS" > "$W/$2.facts" 2>&1
    diff -u "$W/clean.facts" "$W/$2.facts" > "$W/$2.diff"
}
psql -qX -d junction_clean -f "$FACTS" > "$W/clean.facts"
check "the facts query describes the extension ($(wc -l < "$W/clean.facts") facts)" "[ \$(wc -l < '$W/clean.facts') -gt 1000 ]"
if compare_facts junction_fault upgraded; then
    check "upgraded extension objects equal a fresh $NEW install's" true
else
    check "upgraded extension objects equal a fresh $NEW install's" false
    echo "objects that differ (- fresh $NEW, + upgraded from $OLD):"
    grep -E '^[-+][^-+]' "$W/upgraded.diff" | sed -E 's/^([-+])(.*) \| .*/\1 \2/' | sort -u | sed 's/^/    /'
    head -150 "$W/upgraded.diff"
fi
# pg_dump leaves extension members out; it still shows the rest of the database, the extension
# itself, and any privilege on a member that differs from the extension's initial privileges
dump() { $PG_BIN/pg_dump --schema-only -d "$1" | grep -vE '^(--|SET |SELECT pg_catalog.set_config|\\(un)?restrict |$)'; }
dump junction_clean > "$W/clean.dump"; dump junction_fault > "$W/upgraded.dump"
check "pg_dump --schema-only of upgraded and fresh databases equal (normalised)" "diff -u '$W/clean.dump' '$W/upgraded.dump'"

# ---- 2. the data survived ----
q junction_fault "SELECT * FROM jx_typed_fingerprint()" > "$W/after.fp"
# tables new in this release appear, empty (left out of the comparison); junction.daily (0.3.0) is
# built by the update from the typed tables, which stay as they were
check "typed tables unchanged by the update (new tables empty, junction.daily new)" \
    "diff <(grep -v '|0|d41d8cd98f00b204e9800998ecf8427e\$' '$W/before.fp') <(grep -v '|0|d41d8cd98f00b204e9800998ecf8427e\$' '$W/after.fp' | grep -vE '^daily[a-z_]*[|]')"
DAILY_FP="SELECT count(*) || ' ' || md5(string_agg(d::text, ',' ORDER BY d::text)) FROM (SELECT user_id, calendar_date, metric, value, provider, source_type, resource, candidates FROM junction.daily) d"
daily_updated=$(q junction_fault "$DAILY_FP")
daily_rebuilt=$(psql -qXAt -d junction_fault -c "BEGIN" -c "SELECT junction_rebuild_daily() IS NULL" -c "$DAILY_FP" -c "ROLLBACK" | tail -1)
echo "junction.daily after the update: $daily_updated; rebuilt: $daily_rebuilt"
check "the update builds junction.daily from the stored data, as a rebuild does" \
    "[ '${daily_updated%% *}' -gt 0 ] && [ '$daily_updated' = '$daily_rebuilt' ]"
check "inbox rows from before unchanged by the update" \
    "[ \"\$(q junction_fault \"SELECT count(*), md5(string_agg(concat_ws('|', id, received_at, headers, md5(body), status, attempts, error, sqlstate, processed_at), ',' ORDER BY id)) FROM junction.inbox WHERE id <= $MAXID\")\" = \"\$(cat '$W/before.inbox')\" ]"
if [ $REFUSED -gt 0 ]; then
psql -qX -d junction_fault -c "SELECT id, received_at = (SELECT max(processed_at) FROM junction.inbox WHERE error LIKE '%upgrade to%') AS at_upgrade, headers, status, sqlstate, error FROM junction.inbox WHERE error LIKE '%upgrade to%' ORDER BY id"
check "the 3 refused rows: kept, quarantined, originals noted" \
    "[ \$(q junction_fault \"SELECT count(*) FROM junction.inbox WHERE status = 'quarantined' AND error LIKE '%upgrade to 0.2.0%' AND isfinite(received_at) AND jsonb_typeof(headers) = 'object'\") = 3 ]"
check "wrapped headers keep their original value" \
    "[ \"\$(q junction_fault \"SELECT string_agg(headers->>'junction_upgrade_original_headers', ',' ORDER BY id) FROM junction.inbox WHERE headers ? 'junction_upgrade_original_headers'\")\" = '[],scalar' ]"
check "the infinite received_at is noted and quarantined as the drain does (22008)" \
    "[ \$(q junction_fault \"SELECT count(*) FROM junction.inbox WHERE headers->>'svix-id' = 'msg_upgrade_inf' AND sqlstate = '22008' AND error LIKE '%received_at was infinity%'\") = 1 ]"
fi

# ---- the worker goes on draining: new deliveries are processed and typed ----
load_chunks junction_fault 2000 3000
check "the worker drains deliveries made after the update (deadline 120 s)" "wait_drained junction_fault 120"
check "every good delivery processed (3000), only the $REFUSED refused rows quarantined" \
    "[ \"\$(q junction_fault \"SELECT count(*) FILTER (WHERE status = 'processed'), count(*) FILTER (WHERE status = 'quarantined') FROM junction.inbox\")\" = '3000|$REFUSED' ]"
load_chunks junction_clean 0 3000
q junction_clean "SELECT junction_process_inbox(3000)" >/dev/null
q junction_fault "SELECT * FROM jx_typed_fingerprint()" > "$W/fault.fp"
q junction_clean "SELECT * FROM jx_typed_fingerprint()" > "$W/clean.fp"
cat "$W/fault.fp"
check "typed tables identical to a fresh $NEW install given the same deliveries" "diff '$W/fault.fp' '$W/clean.fp'"
check "typed tables grew after the update" "! diff -q '$W/before.fp' '$W/fault.fp' >/dev/null"
worker_errors=$(grep -E 'junction (worker|backfill): (ERROR|FATAL|PANIC)' "$W/pg/server.log" | grep -v 'terminating background worker' || true)
check "no error logged by a junction worker" "[ -z \"\$worker_errors\" ]"
[ -z "$worker_errors" ] || echo "$worker_errors" | head

# ---- 3. negative controls: the comparison sees each of these small differences ----
# the old releases typed freestyle_libre_ble as floating time: the update rewrites such rows with an
# offset into instants (08:00 wall clock at +05:00 is 03:00 UTC) and leaves those without one
q junction_mutant "INSERT INTO junction.samples (user_id, resource, provider, time, time_end, timezone_offset, local_time, floating, received_seq) VALUES
  ('5f0b1d6e-8a40-4f5e-9b0c-0d1a2b3c4d5e', 'glucose', 'freestyle_libre_ble', '2025-01-01 08:00+00', '2025-01-01 08:05+00', 18000, '2025-01-01 08:00', true, 1),
  ('5f0b1d6e-8a40-4f5e-9b0c-0d1a2b3c4d5e', 'glucose', 'freestyle_libre_ble', '2025-01-01 09:00+00', NULL, NULL, '2025-01-01 09:00', true, 2),
  ('5f0b1d6e-8a40-4f5e-9b0c-0d1a2b3c4d5e', 'glucose', 'freestyle_libre', '2025-01-01 10:00+00', NULL, 18000, '2025-01-01 10:00', true, 3)" >/dev/null
# meals typed by an old release from their foods only have no totals: the update sums the foods
# (400 + 2.5 kcal; carbs 75 + 0.5), keeps a meal's own top-level totals, and keeps a meal whose food
# value is not a number (with a WARNING) instead of failing the update
q junction_mutant "INSERT INTO junction.meals (user_id, id, provider, energy_kcal, carbs, data, received_seq) VALUES
  ('5f0b1d6e-8a40-4f5e-9b0c-0d1a2b3c4d5e', '0190b2a7-0000-7000-8000-000000000001', 'my_fitness_pal', NULL, NULL,
   '{\"data\": {\"starter\": {\"energy\": {\"value\": 400.0}, \"macros\": {\"carbs\": 75.0}}, \"coffee\": {\"energy\": {\"value\": 2.5}, \"macros\": {\"carbs\": 0.5}}}}', 1),
  ('5f0b1d6e-8a40-4f5e-9b0c-0d1a2b3c4d5e', '0190b2a7-0000-7000-8000-000000000002', 'my_fitness_pal', 10, 1,
   '{\"energy\": {\"value\": 10}, \"macros\": {\"carbs\": 1}, \"data\": {\"starter\": {\"energy\": {\"value\": 400.0}, \"macros\": {\"carbs\": 75.0}}}}', 2),
  ('5f0b1d6e-8a40-4f5e-9b0c-0d1a2b3c4d5e', '0190b2a7-0000-7000-8000-000000000003', 'my_fitness_pal', NULL, NULL,
   '{\"data\": {\"starter\": {\"energy\": {\"value\": \"lots\"}}}}', 3)" >/dev/null
# lab events an old release kept in junction.events only: the update types them (a completed
# order queues its result fetch; an appointment; a critical result flags its order) and keeps a
# malformed one in junction.events only (with a WARNING) instead of failing the update
q junction_mutant "INSERT INTO junction.events (svix_id, inbox_id, event_type, user_id, received_at, payload) VALUES
  ('msg_up_lab_1', 1, 'labtest.order.created', '5f0b1d6e-8a40-4f5e-9b0c-0d1a2b3c4d5e', now(),
   '{\"data\": {\"id\": \"0190b2a7-0000-7000-8000-0000000000c1\", \"status\": \"received\", \"updated_at\": \"2025-01-01T00:00:00+00:00\"}}'),
  ('msg_up_lab_2', 2, 'labtest.order.updated', '5f0b1d6e-8a40-4f5e-9b0c-0d1a2b3c4d5e', now(),
   '{\"data\": {\"id\": \"0190b2a7-0000-7000-8000-0000000000c1\", \"status\": \"completed\", \"updated_at\": \"2025-01-02T00:00:00+00:00\"}}'),
  ('msg_up_lab_3', 3, 'labtest.result.critical', '5f0b1d6e-8a40-4f5e-9b0c-0d1a2b3c4d5e', now(),
   '{\"data\": {\"order_id\": \"0190b2a7-0000-7000-8000-0000000000c1\"}}'),
  ('msg_up_lab_4', 4, 'labtest.appointment.created', '5f0b1d6e-8a40-4f5e-9b0c-0d1a2b3c4d5e', now(),
   '{\"data\": {\"id\": \"0190b2a7-0000-7000-8000-0000000000c2\", \"status\": \"confirmed\", \"events\": [{\"created_at\": \"2025-01-01T00:00:00+00:00\", \"status\": \"scheduled\"}]}}'),
  ('msg_up_lab_5', 5, 'labtest.order.created', '5f0b1d6e-8a40-4f5e-9b0c-0d1a2b3c4d5e', now(),
   '{\"data\": {\"id\": \"o1\"}}'),
  ('msg_up_job_1', 7, 'lab_report.parsing_job.updated', '5f0b1d6e-8a40-4f5e-9b0c-0d1a2b3c4d5e', now(),
   '{\"data\": {\"id\": \"0190b2a7-0000-7000-8000-0000000000c3\", \"status\": \"completed\", \"data\": {\"results\": [{\"test_name\": \"Glucose\", \"value\": \"90\"}]}}}'),
  ('msg_up_sense_1', 6, 'continuous_query.result_table.changed', '5f0b1d6e-8a40-4f5e-9b0c-0d1a2b3c4d5e', now(),
   '{\"data\": [{\"query_id\": \"4ba57107-aea7-407a-9877-6f1adc80dccd\", \"query_slug\": \"sleep-analysis-v1\", \"data\": {\"group_key.0\": [\"2025-02-17T00:00:00\"], \"mean.sleep_score\": [76.75]}}]}')" >/dev/null
# an untyped event 0.2.0 stored without a user: 0.3.0 keys events by (user_id, svix_id), and the
# update gives it the nil uuid as its home
q junction_mutant "INSERT INTO junction.events (svix_id, inbox_id, event_type, user_id, received_at, payload) VALUES
  ('msg_up_nouser', 8, 'team.unknown.created', NULL, now(), '{\"data\": {}}')" >/dev/null
q junction_mutant "ALTER EXTENSION junction UPDATE" >/dev/null
check "an event stored without a user is kept, under the nil uuid, and events are keyed (user_id, svix_id)" \
    "[ \"\$(q junction_mutant \"SELECT user_id FROM junction.events WHERE svix_id = 'msg_up_nouser'\")\" = 00000000-0000-0000-0000-000000000000 ] &&
     [ \"\$(q junction_mutant \"SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'events_pkey'\")\" = 'PRIMARY KEY (user_id, svix_id)' ]"
q junction_mutant "SELECT 'order', id, status, critical, result_fetch_status FROM junction.lab_orders
                   UNION ALL SELECT 'appointment', id, status, NULL, NULL FROM junction.lab_appointments
                   UNION ALL SELECT 'critical', order_id, NULL, NULL, NULL FROM junction.lab_critical_results
                   UNION ALL SELECT 'parsing job', id, status || ' ' || (SELECT count(*) FROM junction.lab_report_results), NULL, NULL
                             FROM junction.lab_report_parsing_jobs
                   UNION ALL SELECT 'sense', NULL, query_slug || ' ' || (group_key ->> 0) || ' ' || (data ->> 'mean.sleep_score'), NULL, NULL
                             FROM junction.sense_results ORDER BY 1" > "$W/lab.out"
cat "$W/lab.out"
check "the update types the lab and Sense events stored by the old release, and skips a malformed one" \
    "[ \"\$(cat '$W/lab.out')\" = 'appointment|0190b2a7-0000-7000-8000-0000000000c2|confirmed||
critical|0190b2a7-0000-7000-8000-0000000000c1|||
order|0190b2a7-0000-7000-8000-0000000000c1|completed|t|pending
parsing job|0190b2a7-0000-7000-8000-0000000000c3|completed 1||
sense||sleep-analysis-v1 2025-02-17T00:00:00 76.75||' ]"
q junction_mutant "TRUNCATE junction.events, junction.lab_orders, junction.lab_appointments, junction.lab_critical_results, junction.sense_results, junction.lab_report_parsing_jobs, junction.lab_report_results"
q junction_mutant "SELECT id, energy_kcal, carbs FROM junction.meals ORDER BY received_seq" > "$W/meals.out"
cat "$W/meals.out"
check "the update sums the foods of stored meals without totals, and only of those" \
    "[ \"\$(cat '$W/meals.out')\" = '0190b2a7-0000-7000-8000-000000000001|402.5|75.5
0190b2a7-0000-7000-8000-000000000002|10|1
0190b2a7-0000-7000-8000-000000000003||' ]"
q junction_mutant "TRUNCATE junction.meals"
q junction_mutant "SELECT provider, time AT TIME ZONE 'UTC', time_end AT TIME ZONE 'UTC', local_time, floating FROM junction.samples ORDER BY received_seq" > "$W/ble.out"
cat "$W/ble.out"
check "the update makes stored freestyle_libre_ble samples with an offset instants, and only those" \
    "[ \"\$(cat '$W/ble.out')\" = 'freestyle_libre_ble|2025-01-01 03:00:00|2025-01-01 03:05:00|2025-01-01 08:00:00|f
freestyle_libre_ble|2025-01-01 09:00:00||2025-01-01 09:00:00|t
freestyle_libre|2025-01-01 10:00:00||2025-01-01 10:00:00|t' ]"
q junction_mutant "TRUNCATE junction.samples"
check "control: a second (empty) upgraded database equals the fresh one" "compare_facts junction_mutant mutant"
mutant() {  # description, SQL: applied in a transaction that is rolled back after the facts are read
    psql -qX -d junction_mutant -c "BEGIN" -c "$2" -f "$FACTS" -c "ROLLBACK" > "$W/mutant.facts" 2>&1
    if diff "$W/clean.facts" "$W/mutant.facts" > "$W/mutant.diff"; then
        check "control: comparison fails for $1" false
    else
        check "control: comparison fails for $1 ($(grep -cE '^[<>]' "$W/mutant.diff") lines, e.g. $(grep -E '^[<>]' "$W/mutant.diff" | head -1 | cut -c1-90))" true
    fi
}
mutant "a NOT VALID constraint" "ALTER TABLE junction.inbox DROP CONSTRAINT inbox_headers_object, ADD CONSTRAINT inbox_headers_object CHECK (jsonb_typeof(headers) = 'object') NOT VALID"
mutant "a missing SET clause" "ALTER FUNCTION junction_webhook_create(text, text[], text, integer, boolean, text) RESET log_min_error_statement"
mutant "STRICT" "ALTER FUNCTION junction_process_inbox(integer) STRICT"
mutant "a grant to PUBLIC" "GRANT EXECUTE ON FUNCTION junction._redact(text, text[]) TO PUBLIC"
mutant "an old comment" "COMMENT ON FUNCTION junction._backfill_claim() IS 'none while junction.api_key is empty'"
mutant "a function body" "CREATE OR REPLACE FUNCTION junction._require(value anyelement, what text) RETURNS anyelement LANGUAGE plpgsql VOLATILE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS \$\$BEGIN RETURN value; END\$\$"
mutant "an object left out of the extension" "ALTER EXTENSION junction DROP FUNCTION junction._redact(text, text[])"
mutant "a missing index" "DROP INDEX junction.inbox_pending"
# and pg_dump's comparison sees a privilege on a member that differs from the extension's own
q junction_mutant "GRANT EXECUTE ON FUNCTION junction._redact(text, text[]) TO PUBLIC"
dump junction_mutant > "$W/mutant.dump"
q junction_mutant "REVOKE EXECUTE ON FUNCTION junction._redact(text, text[]) FROM PUBLIC"
check "control: pg_dump comparison fails for a grant to PUBLIC" "! diff '$W/clean.dump' '$W/mutant.dump' > '$W/mutant.dumpdiff' && grep -q 'GRANT.*_redact.*PUBLIC' '$W/mutant.dumpdiff'"

echo "$CHECKS_PASSED passed, $CHECKS_FAILED failed"
[ $CHECKS_FAILED -eq 0 ]
