-- lab: lab testing in typed tables (issue 11). Orders and appointments typed from the documented
-- shapes (ClientFacingOrder, ClientFacingAppointment in Junction's OpenAPI spec), the newest
-- updated_at winning whatever the order of arrival; a completed order's results fetched by the
-- backfill queue into junction.lab_results, with its retry and failure states; a critical result
-- and the alerting view; the live API functions and junction_sync_lab against the mock.
-- Each delivery batch is received and drained in one transaction (the worker never sees it);
-- the backfill worker claims nothing while its own junction.api_key is empty, so the jobs are ours.
\getenv mock JUNCTION_MOCK_URL
SET junction.api_base_url = :'mock';
SET junction.api_key = 'sk_us_test_key';
SET junction.http_retries = 0;
SET timezone = 'America/New_York';   -- typing must not depend on the session's zone
INSERT INTO junction.webhook_secrets (secret, description)
VALUES ('whsec_bGFiLXRlc3Qtc2VjcmV0LTAx', 'lab test secret');
TRUNCATE junction.lab_orders, junction.lab_appointments, junction.lab_results, junction.lab_critical_results,
         junction.lab_report_parsing_jobs, junction.lab_report_results;
CREATE FUNCTION pg_temp.deliver(msg_id text, body jsonb) RETURNS bigint
LANGUAGE sql AS $$
  SELECT junction_receive(
           jsonb_build_object(
             'svix-id', msg_id,
             'svix-timestamp', extract(epoch FROM now())::bigint::text,
             'svix-signature', junction_sign_webhook('whsec_bGFiLXRlc3Qtc2VjcmV0LTAx', msg_id,
                                                     extract(epoch FROM now())::bigint, body::text)),
           body::text)
$$;
CREATE FUNCTION pg_temp.mock(method text, what text, body jsonb DEFAULT NULL) RETURNS jsonb
LANGUAGE sql AS $$ SELECT junction_api(method, '/_mock/' || what, NULL, body) $$;
-- one version of an order (the spec's ClientFacingOrder example, with our ids)
CREATE FUNCTION pg_temp.order_v(user_id text, order_id text, status text, low text, updated text)
RETURNS jsonb LANGUAGE sql AS $$
  SELECT jsonb_build_object(
    'user_id', user_id, 'id', order_id, 'team_id', 'abda283f-13ca-49dc-93fc-0a66af8a590e',
    'patient_details', jsonb_build_object('dob', '2020-01-01T00:00:00+00:00', 'gender', 'male',
                                          'first_name', 'John', 'last_name', 'Doe'),
    'patient_address', jsonb_build_object('city', 'San Francisco', 'first_line', '123 Main St.',
                                          'zip', '91189', 'state', 'CA', 'country', 'United States'),
    'lab_test', jsonb_build_object('id', '5e6f1a2b-0000-4000-8000-0000000000c1', 'slug', 'lipids-panel',
                                   'name', 'Lipids Panel', 'method', 'testkit',
                                   'lab', jsonb_build_object('slug', 'labcorp')),
    'details', jsonb_build_object('type', 'testkit', 'data', jsonb_build_object('id', 'a655f0e4-6405-4a1d-80b7-66f06c2108a7')),
    'sample_id', '123456789', 'notes', 'This is a note',
    'created_at', '2020-01-01T00:00:00Z', 'updated_at', updated,
    'events', jsonb_build_array(jsonb_build_object('created_at', '2020-01-01T00:00:00Z', 'id', 1,
                                                   'status', 'received.testkit.ordered'),
                                jsonb_build_object('created_at', updated, 'id', 2, 'status', low)),
    'status', status, 'health_insurance_id', NULL, 'requisition_form_url', NULL, 'priority', false,
    'shipping_details', NULL, 'has_abn', false, 'billing_type', 'client_bill',
    'interpretation', CASE WHEN status = 'completed' THEN 'normal' END,
    'expected_result_by_date', '2020-01-10', 'worst_case_result_by_date', '2020-01-15')
$$;
CREATE FUNCTION pg_temp.order_event(event_type text, obj jsonb) RETURNS jsonb
LANGUAGE sql AS $$
  SELECT jsonb_build_object('event_type', event_type, 'user_id', obj ->> 'user_id',
                            'client_user_id', 'lab-client', 'team_id', obj ->> 'team_id', 'data', obj)
$$;
\set alice '0190b2a0-0000-7000-8000-00000000c0a1'
\set o1 '8679b529-94d0-4b08-9bb6-75245e29b6fe'

-- 0. The fixtures (test/fixtures/lab: the documented examples), delivered as they are, in any order
\set f_order `cat test/fixtures/lab/labtest_order_updated.json`
\set f_appt1 `cat test/fixtures/lab/labtest_appointment_created.json`
\set f_appt2 `cat test/fixtures/lab/labtest_appointment_updated.json`
\set f_crit `cat test/fixtures/lab/labtest_result_critical.json`
\set f_result `cat test/fixtures/lab/lab_order_result.json`
BEGIN;
SELECT pg_temp.deliver('msg_labfx_appt2', :'f_appt2') > 0 AS delivered;
SELECT pg_temp.deliver('msg_labfx_crit', :'f_crit') > 0 AS delivered;
SELECT pg_temp.deliver('msg_labfx_order', :'f_order') > 0 AS delivered;
SELECT pg_temp.deliver('msg_labfx_appt1', :'f_appt1') > 0 AS delivered;
SELECT junction_process_inbox() AS handled;
COMMIT;
SELECT substr(headers ->> 'svix-id', 10) AS fixture, status, error FROM junction.inbox
WHERE headers ->> 'svix-id' LIKE 'msg_labfx_%' ORDER BY 1;
SELECT id, status, low_level_status, jsonb_array_length(events) AS events, lab_test_name, lab_test_method,
       sample_id, interpretation, patient_gender, critical, result_fetch_status
FROM junction.lab_orders WHERE user_id = '0190b2a0-0000-7000-8000-000000000001';
SELECT id, status, event_status, provider, updated_at AT TIME ZONE 'UTC' AS updated_utc
FROM junction.lab_appointments WHERE user_id = '0190b2a0-0000-7000-8000-000000000001';
SELECT order_id, sample_id, status, interpretation FROM junction.lab_critical_results
WHERE user_id = '0190b2a0-0000-7000-8000-000000000001';
SELECT pg_temp.mock('POST', 'lab', jsonb_build_object('results',
         jsonb_build_object('8679b529-94d0-4b08-9bb6-75245e29b6fe', :'f_result'::jsonb))) ->> 'results' AS mock_results;
SELECT junction_backfill_now() AS ran;
SELECT order_id, slug, value, unit, interpretation FROM junction.lab_results
WHERE user_id = '0190b2a0-0000-7000-8000-000000000001';
DELETE FROM junction.lab_results WHERE user_id = '0190b2a0-0000-7000-8000-000000000001';
DELETE FROM junction.lab_orders WHERE user_id = '0190b2a0-0000-7000-8000-000000000001';
DELETE FROM junction.lab_critical_results WHERE user_id = '0190b2a0-0000-7000-8000-000000000001';

-- 1. Typing: an order, from the documented example
BEGIN;
SELECT pg_temp.deliver('msg_lab_1', pg_temp.order_event('labtest.order.created',
         pg_temp.order_v(:'alice', :'o1', 'collecting_sample', 'collecting_sample.testkit.transit_customer',
                         '2020-01-03T00:00:00Z'))) > 0 AS delivered;
SELECT junction_process_inbox() AS handled;
COMMIT;
SELECT status, error FROM junction.inbox WHERE headers ->> 'svix-id' = 'msg_lab_1';
SELECT id, team_id, status, low_level_status, jsonb_array_length(events) AS events, lab_test_id,
       lab_test_slug, lab_test_name, lab_test_method, lab_slug, sample_id, priority, billing_type,
       interpretation, expected_result_by_date, worst_case_result_by_date, patient_gender,
       patient_dob, created_at AT TIME ZONE 'UTC' AS created_utc, updated_at AT TIME ZONE 'UTC' AS updated_utc,
       critical, result_fetch_status, data ->> 'notes' AS notes_in_data
FROM junction.lab_orders WHERE user_id = :'alice';
SELECT event_type, user_id = :'alice' AS alice, resource FROM junction.events WHERE svix_id = 'msg_lab_1';

-- an appointment, from the documented example (no updated_at: the newest event stands for it)
BEGIN;
SELECT pg_temp.deliver('msg_lab_appt_1', jsonb_build_object('event_type', 'labtest.appointment.created',
  'user_id', :'alice', 'client_user_id', 'lab-client', 'team_id', 'abda283f-13ca-49dc-93fc-0a66af8a590e',
  'data', '{"address": {"city": "San Francisco", "country": "United States", "first_line": "123 Main St.",
            "second_line": "Apt. 208", "state": "CA", "zip_code": "91189"},
            "can_reschedule": true, "end_at": "2022-01-01T00:00:00", "event_data": {"description": "origin"},
            "event_status": "scheduled",
            "events": [{"created_at": "2022-01-01T00:00:00Z", "status": "scheduled"}],
            "external_id": "ext-123", "iana_timezone": "America/New_York",
            "id": "657f5329-0d85-4dad-9785-61a6f31dbbc9",
            "location": {"lat": 37.7749295, "lng": -122.4194155},
            "order_id": "8679b529-94d0-4b08-9bb6-75245e29b6fe", "provider": "getlabs", "provider_id": "123",
            "start_at": "2022-01-01T00:00:00", "status": "confirmed", "type": "phlebotomy",
            "user_id": "0190b2a0-0000-7000-8000-00000000c0a1"}'::jsonb)) > 0 AS delivered;
-- a later version (the appointment completed) and a stale replay of the first, under a new svix-id
SELECT pg_temp.deliver('msg_lab_appt_2', jsonb_set(jsonb_set(jsonb_set(i.body::jsonb, '{data,status}', '"completed"'),
         '{data,event_status}', '"completed"'),
         '{data,events}', '[{"created_at": "2022-01-01T00:00:00Z", "status": "scheduled"},
                            {"created_at": "2022-01-02T00:00:00Z", "status": "completed"}]') || '{"event_type": "labtest.appointment.updated"}')
       > 0 AS delivered
FROM junction.inbox AS i WHERE i.headers ->> 'svix-id' = 'msg_lab_appt_1';
SELECT junction_process_inbox() AS handled;
SELECT pg_temp.deliver('msg_lab_appt_3', i.body::jsonb) > 0 AS delivered
FROM junction.inbox AS i WHERE i.headers ->> 'svix-id' = 'msg_lab_appt_1';
SELECT junction_process_inbox() AS handled;
COMMIT;
SELECT id, order_id, type, provider, status, event_status, start_at AT TIME ZONE 'UTC' AS start_utc,
       iana_timezone, provider_id, external_id, can_reschedule, jsonb_array_length(events) AS events,
       updated_at AT TIME ZONE 'UTC' AS updated_utc
FROM junction.lab_appointments WHERE user_id = :'alice';

-- 2. Order independence: four versions of one order, a Svix redelivery, three versions of its
--    appointment and two of its critical result, delivered in four orders and batchings (shuffled,
--    duplicated, stale); the tables end the same, and only the newest versions are kept.
CREATE TEMP TABLE lab_versions (n int, svix_id text, body jsonb);
INSERT INTO lab_versions VALUES
  (1, 'msg_lab_oi_1', pg_temp.order_event('labtest.order.created', pg_temp.order_v(:'alice', '0190b2a7-0000-7000-8000-0000000000b1', 'received', 'received.testkit.ordered', '2020-01-01T00:00:00Z'))),
  (2, 'msg_lab_oi_2', pg_temp.order_event('labtest.order.updated', pg_temp.order_v(:'alice', '0190b2a7-0000-7000-8000-0000000000b1', 'collecting_sample', 'collecting_sample.testkit.transit_customer', '2020-01-02T00:00:00Z'))),
  (3, 'msg_lab_oi_3', pg_temp.order_event('labtest.order.updated', pg_temp.order_v(:'alice', '0190b2a7-0000-7000-8000-0000000000b1', 'completed', 'completed.testkit.completed', '2020-01-05T00:00:00+00:00'))),
  (4, 'msg_lab_oi_4', pg_temp.order_event('labtest.order.updated', pg_temp.order_v(:'alice', '0190b2a7-0000-7000-8000-0000000000b1', 'sample_with_lab', 'sample_with_lab.testkit.delivered_to_lab', '2020-01-04T00:00:00Z'))),
  (5, 'msg_lab_oi_2', pg_temp.order_event('labtest.order.updated', pg_temp.order_v(:'alice', '0190b2a7-0000-7000-8000-0000000000b1', 'collecting_sample', 'collecting_sample.testkit.transit_customer', '2020-01-02T00:00:00Z'))),
  -- the order's appointment: requested, scheduled, completed (no updated_at: its newest event counts)
  (6, 'msg_lab_oi_6', jsonb_build_object('event_type', 'labtest.appointment.created', 'user_id', :'alice',
       'data', jsonb_build_object('id', '0190b2a7-0000-7000-8000-0000000000e1', 'user_id', :'alice',
                                  'order_id', '0190b2a7-0000-7000-8000-0000000000b1', 'status', 'pending', 'event_status', 'pending',
                                  'events', '[{"created_at": "2020-01-02T01:00:00Z", "status": "pending"}]'::jsonb))),
  (7, 'msg_lab_oi_7', jsonb_build_object('event_type', 'labtest.appointment.updated', 'user_id', :'alice',
       'data', jsonb_build_object('id', '0190b2a7-0000-7000-8000-0000000000e1', 'user_id', :'alice',
                                  'order_id', '0190b2a7-0000-7000-8000-0000000000b1', 'status', 'confirmed', 'event_status', 'scheduled',
                                  'events', '[{"created_at": "2020-01-02T01:00:00Z", "status": "pending"},
                                              {"created_at": "2020-01-02T02:00:00Z", "status": "scheduled"}]'::jsonb))),
  (8, 'msg_lab_oi_8', jsonb_build_object('event_type', 'labtest.appointment.updated', 'user_id', :'alice',
       'data', jsonb_build_object('id', '0190b2a7-0000-7000-8000-0000000000e1', 'user_id', :'alice',
                                  'order_id', '0190b2a7-0000-7000-8000-0000000000b1', 'status', 'completed', 'event_status', 'completed',
                                  'events', '[{"created_at": "2020-01-02T01:00:00Z", "status": "pending"},
                                              {"created_at": "2020-01-02T02:00:00Z", "status": "scheduled"},
                                              {"created_at": "2020-01-03T09:00:00Z", "status": "completed"}]'::jsonb))),
  -- a critical result, then its newer (final) version
  (9, 'msg_lab_oi_9', jsonb_build_object('event_type', 'labtest.result.critical', 'user_id', :'alice',
       'data', jsonb_build_object('order_id', '0190b2a7-0000-7000-8000-0000000000b1', 'status', 'partial',
                                  'interpretation', 'critical', 'updated_at', '2020-01-04T12:00:00Z'))),
  (10, 'msg_lab_oi_10', jsonb_build_object('event_type', 'labtest.result.critical', 'user_id', :'alice',
       'data', jsonb_build_object('order_id', '0190b2a7-0000-7000-8000-0000000000b1', 'status', 'final',
                                  'interpretation', 'critical', 'updated_at', '2020-01-05T12:00:00Z')));
CREATE TEMP TABLE lab_runs (run text, status text, low_level_status text, updated_at timestamptz,
                            result_fetch_status text, critical boolean, appointment_status text,
                            critical_status text, fingerprint text);
CREATE FUNCTION pg_temp.lab_run(run text, orders int[], batch int) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  k int := 0;
  v int;
BEGIN
  DELETE FROM junction.lab_orders WHERE id = '0190b2a7-0000-7000-8000-0000000000b1';
  DELETE FROM junction.lab_appointments WHERE id = '0190b2a7-0000-7000-8000-0000000000e1';
  DELETE FROM junction.lab_critical_results WHERE order_id = '0190b2a7-0000-7000-8000-0000000000b1';
  DELETE FROM junction.events WHERE svix_id LIKE 'msg_lab_oi_%';
  DELETE FROM junction.inbox WHERE headers ->> 'svix-id' LIKE 'msg_lab_oi_%';
  FOREACH v IN ARRAY orders LOOP
    PERFORM pg_temp.deliver(l.svix_id, l.body) FROM lab_versions AS l WHERE l.n = v;
    k := k + 1;
    IF k % batch = 0 THEN PERFORM junction_process_inbox(); END IF;
  END LOOP;
  PERFORM junction_process_inbox();
  INSERT INTO lab_runs
  SELECT run, o.status, o.low_level_status, o.updated_at, o.result_fetch_status, o.critical, a.status, c.status,
         md5((to_jsonb(o) - 'received_seq')::text || (to_jsonb(a) - 'received_seq')::text
             || (to_jsonb(c) - 'received_seq' - 'received_at')::text)
  FROM junction.lab_orders AS o
  JOIN junction.lab_appointments AS a ON a.id = '0190b2a7-0000-7000-8000-0000000000e1'
  JOIN junction.lab_critical_results AS c ON c.order_id = o.id
  WHERE o.id = '0190b2a7-0000-7000-8000-0000000000b1';
END $$;
BEGIN;
SELECT pg_temp.lab_run('in order', ARRAY[1, 2, 6, 7, 8, 4, 9, 3, 10, 5], 20);
SELECT pg_temp.lab_run('reversed, one at a time', ARRAY[10, 5, 3, 9, 4, 8, 7, 6, 2, 1], 1);
SELECT pg_temp.lab_run('shuffled, duplicated, pairs', ARRAY[4, 8, 3, 1, 10, 5, 3, 7, 2, 9, 1, 6, 4, 8], 2);
SELECT pg_temp.lab_run('shuffled, triples', ARRAY[7, 9, 2, 10, 6, 3, 1, 4, 8, 5], 3);
COMMIT;
SELECT run, status, low_level_status, updated_at AT TIME ZONE 'UTC' AS updated_utc, result_fetch_status, critical,
       appointment_status, critical_status FROM lab_runs ORDER BY run;
SELECT count(DISTINCT fingerprint) AS distinct_end_states FROM lab_runs;
-- a stale version arriving after the newest changes nothing (and does not re-queue the fetch)
UPDATE junction.lab_orders SET result_fetch_status = 'done' WHERE id = '0190b2a7-0000-7000-8000-0000000000b1';
BEGIN;
SELECT pg_temp.deliver('msg_lab_oi_stale', l.body) > 0 AS delivered FROM lab_versions AS l WHERE l.n = 2;
SELECT junction_process_inbox() AS handled;
COMMIT;
SELECT status, result_fetch_status FROM junction.lab_orders WHERE id = '0190b2a7-0000-7000-8000-0000000000b1';
-- a tie on updated_at goes to the later received
BEGIN;
SELECT pg_temp.deliver('msg_lab_oi_tie', jsonb_set(l.body, '{data,notes}', '"later, same updated_at"')) > 0 AS delivered
FROM lab_versions AS l WHERE l.n = 3;
SELECT junction_process_inbox() AS handled;
COMMIT;
SELECT status, data ->> 'notes' AS notes, result_fetch_status FROM junction.lab_orders WHERE id = '0190b2a7-0000-7000-8000-0000000000b1';
DELETE FROM junction.lab_orders WHERE id = '0190b2a7-0000-7000-8000-0000000000b1';
DELETE FROM junction.lab_appointments WHERE id = '0190b2a7-0000-7000-8000-0000000000e1';
DELETE FROM junction.lab_critical_results WHERE order_id = '0190b2a7-0000-7000-8000-0000000000b1';

-- 3. The automatic result fetch: the completed order is queued; the backfill queue fetches
--    GET /v3/order/{id}/result (the spec's LabResultsRaw example shape) into junction.lab_results.
SELECT pg_temp.mock('POST', 'lab', jsonb_build_object('results', jsonb_build_object(:'o1',
  '{"metadata": {"age": 19, "dob": "18/08/1993", "interpretation": "abnormal", "laboratory": "Quest Diagnostics",
                 "patient": "Bob Smith", "provider": "Dr. Jack Smith", "specimen_number": "123131", "status": "final",
                 "date_reported": "2020-01-01"},
    "results": [
      {"interpretation": "normal", "is_above_max_range": false, "is_below_min_range": false, "loinc": "742-7",
       "loinc_slug": "monocytes-auto-bld-vol", "max_range_value": 0.9, "min_range_value": 0.1,
       "name": "Monocytes(Absolute)", "notes": "Final", "result": "0.4", "slug": "monocytes-absolute",
       "timestamp": "2023-11-01T08:28:00+00:00", "type": "numeric", "unit": "x10E3/uL", "value": 0.4,
       "reference_range": "0.1-0.9"},
      {"interpretation": "abnormal", "is_above_max_range": true, "is_below_min_range": false, "loinc": "2093-3",
       "name": "Cholesterol, Total", "result": "240", "slug": "cholesterol-total", "type": "numeric",
       "unit": "mg/dL", "value": 240, "min_range_value": 100, "max_range_value": 199,
       "timestamp": "2023-11-01T08:28:00+00:00", "reference_range": "100-199"},
      {"interpretation": "normal", "name": "Comment", "result": "See note", "slug": "", "type": "comment",
       "value": 0}],
    "missing_results": []}'::jsonb))) ->> 'results' AS mock_results;
BEGIN;
SELECT pg_temp.deliver('msg_lab_2', pg_temp.order_event('labtest.order.updated',
         pg_temp.order_v(:'alice', :'o1', 'completed', 'completed.testkit.completed', '2020-01-06T00:00:00Z'))) > 0 AS delivered;
SELECT junction_process_inbox() AS handled;
COMMIT;
SELECT status, result_fetch_status, result_attempts FROM junction.lab_orders WHERE id = :'o1';
SELECT kind, user_id = :'alice' AS alice, resource, order_id FROM junction._backfill_claim();
-- (the claim above ran in its own statement: the job is running; put it back as the worker would)
SELECT junction._backfill_reset_running() AS reset;
SELECT junction_backfill_now() AS ran;
SELECT status, result_fetch_status, result_attempts, result_fetch_error, result_metadata ->> 'status' AS result_status,
       results_fetched_at IS NOT NULL AS fetched
FROM junction.lab_orders WHERE id = :'o1';
SELECT slug, name, value, result, type, unit, "timestamp" AT TIME ZONE 'UTC' AS ts_utc, reference_range,
       min_range_value, max_range_value, is_above_max_range, is_below_min_range, interpretation, loinc, critical
FROM junction.lab_results WHERE order_id = :'o1' ORDER BY slug;
-- a corrected result: a newer completed version re-queues the fetch; the new answer replaces the
-- old rows (a changed value replaced, a biomarker no longer reported removed)
SELECT pg_temp.mock('POST', 'lab', jsonb_build_object('results', jsonb_build_object(:'o1',
  '{"metadata": {"status": "corrected", "age": 19, "dob": "18/08/1993", "patient": "Bob Smith",
                 "specimen_number": "123131", "date_reported": "2020-01-02"},
    "results": [
      {"interpretation": "normal", "name": "Monocytes(Absolute)", "result": "0.5", "slug": "monocytes-absolute",
       "type": "numeric", "unit": "x10E3/uL", "value": 0.5, "min_range_value": 0.1, "max_range_value": 0.9,
       "is_above_max_range": false, "is_below_min_range": false}]}'::jsonb))) ->> 'results' AS mock_results;
BEGIN;
SELECT pg_temp.deliver('msg_lab_3', pg_temp.order_event('labtest.order.updated',
         pg_temp.order_v(:'alice', :'o1', 'completed', 'completed.testkit.completed', '2020-01-07T00:00:00Z'))) > 0 AS delivered;
SELECT junction_process_inbox() AS handled;
COMMIT;
SELECT result_fetch_status, result_attempts FROM junction.lab_orders WHERE id = :'o1';
-- this time as the backfill worker runs it (src/backfill.c): the claimed job as jsonb text, back
-- into a junction.backfill_job, run in its own transaction
SELECT pg_catalog.to_jsonb(j)::pg_catalog.text AS job FROM junction._backfill_claim() AS j LIMIT 1 \gset
SELECT :'job'::jsonb ->> 'kind' AS kind, :'job'::jsonb ->> 'order_id' = :'o1' AS o1;
SELECT junction._backfill_run(pg_catalog.jsonb_populate_record(NULL::junction.backfill_job, :'job'::pg_catalog.jsonb)) AS loaded;
SELECT result_fetch_status, result_metadata ->> 'status' AS result_status FROM junction.lab_orders WHERE id = :'o1';
SELECT slug, value, result, interpretation FROM junction.lab_results WHERE order_id = :'o1' ORDER BY slug;

-- retry and failure: an order whose result the API does not have (404) is retried after a
-- backoff, then failed on the third attempt with the error and SQLSTATE
\set o2 '0190b2a7-0000-7000-8000-0000000000b2'
BEGIN;
SELECT pg_temp.deliver('msg_lab_4', pg_temp.order_event('labtest.order.created',
         pg_temp.order_v(:'alice', :'o2', 'completed', 'completed.testkit.completed', '2020-02-01T00:00:00Z'))) > 0 AS delivered;
SELECT junction_process_inbox() AS handled;
COMMIT;
SELECT junction_backfill_now() AS ran;
SELECT result_fetch_status, result_attempts, result_sqlstate, result_fetch_error,
       result_next_attempt_at > now() + interval '20 seconds' AS backed_off
FROM junction.lab_orders WHERE id = :'o2';
SELECT junction_backfill_now() AS ran_while_backing_off;
UPDATE junction.lab_orders SET result_next_attempt_at = now() - interval '1 second' WHERE id = :'o2';
SELECT junction_backfill_now() AS ran;
SELECT result_fetch_status, result_attempts, result_next_attempt_at > now() + interval '100 seconds' AS backed_off_longer
FROM junction.lab_orders WHERE id = :'o2';
UPDATE junction.lab_orders SET result_next_attempt_at = now() - interval '1 second' WHERE id = :'o2';
SELECT junction_backfill_now() AS ran;
SELECT result_fetch_status, result_attempts, result_sqlstate, result_fetch_error, result_next_attempt_at
FROM junction.lab_orders WHERE id = :'o2';
SELECT junction_backfill_now() AS nothing_left;
-- a job left running by a crash goes back to pending when the worker starts
UPDATE junction.lab_orders SET result_fetch_status = 'running' WHERE id = :'o2';
SELECT junction._backfill_reset_running() AS reset;
SELECT result_fetch_status FROM junction.lab_orders WHERE id = :'o2';
UPDATE junction.lab_orders SET result_fetch_status = 'failed' WHERE id = :'o2';

-- 4. A critical result: it arrives before its order; the order is flagged when it arrives, its
--    results fetched; the alerting view shows the critical biomarker until acknowledged.
\set o3 '0190b2a7-0000-7000-8000-0000000000b3'
SELECT pg_temp.mock('POST', 'lab', jsonb_build_object('results', jsonb_build_object(:'o3',
  '{"metadata": {"status": "final", "interpretation": "critical", "age": 40, "dob": "01/01/1985",
                 "patient": "Jane Roe", "specimen_number": "777", "date_reported": "2020-03-02"},
    "results": [
      {"interpretation": "critical", "name": "Potassium", "result": "6.9", "slug": "potassium", "type": "numeric",
       "unit": "mmol/L", "value": 6.9, "min_range_value": 3.5, "max_range_value": 5.1, "is_above_max_range": true,
       "reference_range": "3.5-5.1", "timestamp": "2020-03-01T10:00:00+00:00"},
      {"interpretation": "normal", "name": "Sodium", "result": "140", "slug": "sodium", "type": "numeric",
       "unit": "mmol/L", "value": 140, "min_range_value": 135, "max_range_value": 145}]}'::jsonb))) ->> 'results' AS mock_results;
BEGIN;
SELECT pg_temp.deliver('msg_lab_crit', jsonb_build_object('event_type', 'labtest.result.critical',
  'user_id', :'alice', 'client_user_id', 'lab-client', 'team_id', 'abda283f-13ca-49dc-93fc-0a66af8a590e',
  'data', jsonb_build_object('order_id', :'o3', 'user_id', :'alice', 'sample_id', '777', 'status', 'final',
                             'interpretation', 'critical', 'team_id', 'abda283f-13ca-49dc-93fc-0a66af8a590e',
                             'created_at', '2020-03-01T12:00:00Z', 'updated_at', '2020-03-01T12:00:00Z'))) > 0 AS delivered;
SELECT junction_process_inbox() AS handled;
COMMIT;
SELECT order_id = :'o3' AS o3, sample_id, status, interpretation, updated_at AT TIME ZONE 'UTC' AS updated_utc,
       acknowledged_at FROM junction.lab_critical_results;
SELECT user_id = :'alice' AS alice, order_id = :'o3' AS o3, order_status, biomarker_slug FROM junction.lab_critical_alerts;
BEGIN;
SELECT pg_temp.deliver('msg_lab_5', pg_temp.order_event('labtest.order.updated',
         pg_temp.order_v(:'alice', :'o3', 'completed', 'completed.testkit.completed', '2020-03-02T00:00:00Z')
         || '{"interpretation": "critical"}')) > 0 AS delivered;
SELECT junction_process_inbox() AS handled;
COMMIT;
SELECT critical, interpretation, result_fetch_status FROM junction.lab_orders WHERE id = :'o3';
SELECT junction_backfill_now() AS ran;
SELECT order_status, lab_test_name, biomarker_slug, result, unit, reference_range, interpretation
FROM junction.lab_critical_alerts;
-- the README's query: critical results in the last day
SELECT count(*) AS critical_last_day FROM junction.lab_critical_alerts WHERE received_at > now() - interval '1 day';
SELECT junction_lab_acknowledge_critical(:'o3') AS acknowledged;
SELECT junction_lab_acknowledge_critical(:'o3') AS acknowledged_again;
SELECT count(*) AS open_alerts FROM junction.lab_critical_alerts;
-- a stale copy of the critical result changes nothing; a newer version re-opens the alert
BEGIN;
SELECT pg_temp.deliver('msg_lab_crit_stale', jsonb_set(i.body::jsonb, '{data,updated_at}', '"2020-02-01T00:00:00Z"')) > 0 AS delivered
FROM junction.inbox AS i WHERE i.headers ->> 'svix-id' = 'msg_lab_crit';
SELECT junction_process_inbox() AS handled;
COMMIT;
SELECT acknowledged_at IS NOT NULL AS still_acknowledged FROM junction.lab_critical_results WHERE order_id = :'o3';
BEGIN;
SELECT pg_temp.deliver('msg_lab_crit_newer', jsonb_set(jsonb_set(i.body::jsonb, '{data,updated_at}', '"2020-03-03T00:00:00Z"'),
                                                      '{data,status}', '"partial"')) > 0 AS delivered
FROM junction.inbox AS i WHERE i.headers ->> 'svix-id' = 'msg_lab_crit';
SELECT junction_process_inbox() AS handled;
COMMIT;
SELECT status, acknowledged_at FROM junction.lab_critical_results WHERE order_id = :'o3';
SELECT count(*) AS open_alerts FROM junction.lab_critical_alerts;
SELECT junction_backfill_now() AS ran;
SELECT junction_lab_acknowledge_critical(:'o3') AS acknowledged;
-- a critical result for an order already typed flags it and re-fetches its results
BEGIN;
SELECT pg_temp.deliver('msg_lab_crit2', jsonb_build_object('event_type', 'labtest.result.critical',
  'user_id', :'alice', 'data', jsonb_build_object('order_id', :'o1', 'status', 'final', 'interpretation', 'critical',
                                                  'updated_at', '2020-01-08T00:00:00Z'))) > 0 AS delivered;
SELECT junction_process_inbox() AS handled;
COMMIT;
SELECT critical, result_fetch_status, result_attempts FROM junction.lab_orders WHERE id = :'o1';
SELECT junction_backfill_now() AS ran;
SELECT result_fetch_status FROM junction.lab_orders WHERE id = :'o1';

-- 4b. Lab report parsing jobs (the documented example): the furthest status wins whatever the
--     order; the completed job's results land in junction.lab_report_results
\set f_job1 `cat test/fixtures/lab/lab_report_parsing_job_created.json`
\set f_job2 `cat test/fixtures/lab/lab_report_parsing_job_updated.json`
BEGIN;
SELECT pg_temp.deliver('msg_lab_job_2', :'f_job2') > 0 AS delivered;
SELECT junction_process_inbox() AS handled;
SELECT pg_temp.deliver('msg_lab_job_1', :'f_job1') > 0 AS delivered;
SELECT pg_temp.deliver('msg_lab_job_p', jsonb_set(:'f_job1'::jsonb, '{data,status}', '"processing"')) > 0 AS delivered;
SELECT junction_process_inbox() AS handled;
COMMIT;
SELECT id, status, failure_reason, needs_human_review, is_reviewed, metadata ->> 'lab_name' AS lab_name,
       data #>> '{data,metadata,specimen_number}' AS specimen
FROM junction.lab_report_parsing_jobs;
SELECT job_id, position, test_name, value, value_number, type, units, min_reference_range, max_reference_range,
       source_panel_name, interpretation, is_above_max_range, loinc, loinc_name, loinc_confidence
FROM junction.lab_report_results ORDER BY position;
-- a pending_review job (human review): its status wins over processing; its results replace none yet
BEGIN;
SELECT pg_temp.deliver('msg_lab_job_3', jsonb_set(jsonb_set(:'f_job1'::jsonb, '{data,status}', '"pending_review"'),
                                                  '{data,id}', '"0190b2a7-0000-7000-8000-0000000000d1"')) > 0 AS delivered;
SELECT pg_temp.deliver('msg_lab_job_4', jsonb_set(jsonb_set(:'f_job1'::jsonb, '{data,status}', '"processing"'),
                                                  '{data,id}', '"0190b2a7-0000-7000-8000-0000000000d1"')) > 0 AS delivered;
SELECT junction_process_inbox() AS handled;
COMMIT;
SELECT status, (SELECT count(*) FROM junction.lab_report_results AS r WHERE r.job_id = j.id) AS results
FROM junction.lab_report_parsing_jobs AS j WHERE id = '0190b2a7-0000-7000-8000-0000000000d1';

-- 4c. Partial results: an order update whose newest event is *.partial_results queues a fetch;
--     a second partial (one more event) queues it again
\set o4 '0190b2a7-0000-7000-8000-0000000000b4'
SELECT pg_temp.mock('POST', 'lab', jsonb_build_object('results', jsonb_build_object(:'o4',
  '{"metadata": {"status": "partial"}, "results": [{"name": "Glucose", "slug": "glucose", "result": "91",
    "value": 91, "type": "numeric", "unit": "mg/dL", "interpretation": "normal"}]}'::jsonb))) ->> 'results' AS mock_results;
BEGIN;
SELECT pg_temp.deliver('msg_lab_partial_1', pg_temp.order_event('labtest.order.updated',
         pg_temp.order_v(:'alice', :'o4', 'sample_with_lab', 'sample_with_lab.walk_in_test.partial_results', '2020-05-01T00:00:00Z'))) > 0 AS delivered;
SELECT junction_process_inbox() AS handled;
COMMIT;
SELECT status, low_level_status, result_fetch_status FROM junction.lab_orders WHERE id = :'o4';
SELECT junction_backfill_now() AS ran;
SELECT result_fetch_status, result_metadata ->> 'status' AS result_status,
       (SELECT count(*) FROM junction.lab_results WHERE order_id = :'o4') AS results
FROM junction.lab_orders WHERE id = :'o4';
BEGIN;
SELECT pg_temp.deliver('msg_lab_partial_2', pg_temp.order_event('labtest.order.updated',
         jsonb_set(pg_temp.order_v(:'alice', :'o4', 'sample_with_lab', 'sample_with_lab.walk_in_test.partial_results', '2020-05-01T00:00:00Z'),
                   '{events}', pg_temp.order_v(:'alice', :'o4', 'sample_with_lab', 'sample_with_lab.walk_in_test.partial_results', '2020-05-01T00:00:00Z') -> 'events'
                               || '[{"id": 3, "created_at": "2020-05-02T00:00:00Z", "status": "sample_with_lab.walk_in_test.partial_results"}]'::jsonb)))
       > 0 AS delivered;
SELECT junction_process_inbox() AS handled;
COMMIT;
SELECT low_level_status, jsonb_array_length(events) AS events, result_fetch_status FROM junction.lab_orders WHERE id = :'o4';
SELECT junction_backfill_now() AS ran;

-- 5. Malformed lab events are quarantined with the event type and the JSON path
BEGIN;
SELECT pg_temp.deliver('msg_lab_bad_id', pg_temp.order_event('labtest.order.created',
         pg_temp.order_v(:'alice', 'order-7', 'received', 'received.testkit.ordered', '2020-01-01T00:00:00Z'))) > 0 AS delivered;
SELECT pg_temp.deliver('msg_lab_bad_date', pg_temp.order_event('labtest.order.created',
         pg_temp.order_v(:'alice', '0190b2a7-0000-7000-8000-0000000000b9', 'received', 'received.testkit.ordered', 'yesterday-ish'))) > 0 AS delivered;
SELECT pg_temp.deliver('msg_lab_no_id', jsonb_build_object('event_type', 'labtest.appointment.updated',
         'user_id', :'alice', 'data', '{"status": "pending"}'::jsonb)) > 0 AS delivered;
SELECT pg_temp.deliver('msg_lab_crit_bad', jsonb_build_object('event_type', 'labtest.result.critical',
         'user_id', :'alice', 'data', '{"order_id": 12}'::jsonb)) > 0 AS delivered;
SELECT pg_temp.deliver('msg_lab_job_bad', jsonb_build_object('event_type', 'lab_report.parsing_job.updated',
         'user_id', :'alice', 'data', '{"id": "8eb0217f-4683-4a3c-adca-faf95ac65739", "status": "completed", "is_reviewed": "maybe"}'::jsonb)) > 0 AS delivered;
SELECT junction_process_inbox() AS handled;
COMMIT;
SELECT substr(headers ->> 'svix-id', 9) AS delivery, status, sqlstate, error
FROM junction.inbox WHERE headers ->> 'svix-id' IN ('msg_lab_bad_id', 'msg_lab_bad_date', 'msg_lab_no_id', 'msg_lab_crit_bad', 'msg_lab_job_bad')
ORDER BY 1;

-- 6. The live API and junction_sync_lab: 120 orders in the mock (two pages of 100), one user's 2
SELECT pg_temp.mock('POST', 'lab', jsonb_build_object('orders',
  (SELECT jsonb_agg(pg_temp.order_v(CASE WHEN i <= 2 THEN '0190b2a0-0000-7000-8000-00000000c0b2'
                                         ELSE '0190b2a0-0000-7000-8000-00000000c0b3' END,
                                    format('0190b2a7-0000-7000-8000-%s', lpad(to_hex(4096 + i), 12, '0')),
                                    CASE WHEN i IN (1, 3) THEN 'completed' ELSE 'received' END,
                                    CASE WHEN i IN (1, 3) THEN 'completed.testkit.completed' ELSE 'received.testkit.ordered' END,
                                    '2020-04-01T00:00:00Z') ORDER BY i)
   FROM generate_series(1, 120) AS i),
  'results', jsonb_build_object('0190b2a7-0000-7000-8000-000000001001',
    '{"metadata": {"status": "final"}, "results": [{"name": "Glucose", "slug": "glucose", "result": "99",
      "value": 99, "type": "numeric", "unit": "mg/dL", "interpretation": "normal"}]}'::jsonb))) AS mock_state;
SELECT jsonb_array_length(junction_lab_orders()) AS all_orders;
SELECT jsonb_array_length(junction_lab_orders('0190b2a0-0000-7000-8000-00000000c0b2')) AS bobs_orders;
SELECT junction_lab_order('0190b2a7-0000-7000-8000-000000001002') ->> 'status' AS status;
SELECT junction_lab_results('0190b2a7-0000-7000-8000-000000001001') #>> '{results,0,slug}' AS first_slug;
SELECT state, message FROM (SELECT split_part(expect_error('SELECT junction_lab_order(''0190b2a7-0000-7000-8000-0000000000ff'')'), ':', 1) AS state,
                                   expect_error('SELECT junction_lab_order(''0190b2a7-0000-7000-8000-0000000000ff'')') LIKE '%404%' AS message) AS e;
SELECT junction_sync_lab('0190b2a0-0000-7000-8000-00000000c0b2') AS loaded;
SELECT id, status, result_fetch_status FROM junction.lab_orders
WHERE user_id = '0190b2a0-0000-7000-8000-00000000c0b2' ORDER BY id;
SELECT slug, value FROM junction.lab_results WHERE user_id = '0190b2a0-0000-7000-8000-00000000c0b2';
-- a second sync rewrites the same versions (a tie: the later received wins); the fetch is not re-queued
SELECT junction_sync_lab('0190b2a0-0000-7000-8000-00000000c0b2') AS loaded_again;
SELECT result_fetch_status, count(*) FROM junction.lab_orders
WHERE user_id = '0190b2a0-0000-7000-8000-00000000c0b2' GROUP BY 1 ORDER BY 1;

-- another user's 118 orders: one completed order's result cannot be fetched yet (404); the sync
-- loads the rest and leaves that one pending for the backfill worker, with the error
SELECT junction_sync_lab('0190b2a0-0000-7000-8000-00000000c0b3') AS loaded;
SELECT count(*) AS orders, count(*) FILTER (WHERE status = 'completed') AS completed
FROM junction.lab_orders WHERE user_id = '0190b2a0-0000-7000-8000-00000000c0b3';
SELECT id, result_fetch_status, result_attempts, result_sqlstate, result_fetch_error FROM junction.lab_orders
WHERE user_id = '0190b2a0-0000-7000-8000-00000000c0b3' AND result_fetch_status IS NOT NULL;

-- 7. The README's queries
-- pending orders (not completed, cancelled or failed), oldest first
SELECT id, status, low_level_status FROM junction.lab_orders
WHERE status NOT IN ('completed', 'cancelled', 'failed')
ORDER BY updated_at, id LIMIT 3;
-- results out of range
SELECT o.lab_test_name, r.name, r.result, r.unit, r.reference_range,
       CASE WHEN r.is_above_max_range THEN 'high' WHEN r.is_below_min_range THEN 'low' END AS flag
FROM junction.lab_results AS r JOIN junction.lab_orders AS o ON o.user_id = r.user_id AND o.id = r.order_id
WHERE r.is_above_max_range OR r.is_below_min_range
ORDER BY r.name;
-- 8. By themselves: the "junction backfill" background worker fetches a completed order's results
--    once it has a key (it claims nothing without one, which is why the jobs above were ours).
--    The 404 order of section 6 is parked first, so the worker has only this job. Waits at most 30 s.
UPDATE junction.lab_orders SET result_fetch_status = 'failed' WHERE id = '0190b2a7-0000-7000-8000-000000001003';
\set o5 '0190b2a7-0000-7000-8000-0000000000b5'
SELECT pg_temp.mock('POST', 'lab', jsonb_build_object('results', jsonb_build_object(:'o5',
  '{"metadata": {"status": "final"}, "results": [{"name": "Ferritin", "slug": "ferritin", "result": "12",
    "value": 12, "type": "numeric", "unit": "ng/mL", "min_range_value": 30, "max_range_value": 400,
    "is_below_min_range": true, "interpretation": "abnormal"}]}'::jsonb))) ->> 'results' AS mock_results;
ALTER SYSTEM SET junction.api_base_url = :'mock';
ALTER SYSTEM SET junction.api_key = 'sk_us_test_key';
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);
SELECT pg_temp.deliver('msg_lab_auto', pg_temp.order_event('labtest.order.updated',
         pg_temp.order_v(:'alice', :'o5', 'completed', 'completed.walk_in_test.completed', '2020-06-01T00:00:00Z'))) > 0 AS delivered;
DO $$
DECLARE
    deadline timestamptz := clock_timestamp() + interval '30 seconds';
    st text;
BEGIN
    LOOP
        SELECT result_fetch_status INTO st FROM junction.lab_orders WHERE id = '0190b2a7-0000-7000-8000-0000000000b5';
        EXIT WHEN st IN ('done', 'failed') OR clock_timestamp() > deadline;
        PERFORM pg_sleep(0.1);
    END LOOP;
    RAISE NOTICE 'worker lab result fetch: %', coalesce(st, 'no order row');
END
$$;
SELECT status, result_fetch_status, result_attempts, result_metadata ->> 'status' AS result_status
FROM junction.lab_orders WHERE id = :'o5';
SELECT slug, result, unit, is_below_min_range, interpretation FROM junction.lab_results WHERE order_id = :'o5';
ALTER SYSTEM RESET junction.api_base_url;
ALTER SYSTEM RESET junction.api_key;
SELECT pg_reload_conf();
RESET junction.http_retries;
RESET timezone;
