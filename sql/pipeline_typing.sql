-- pipeline_typing: every fixture through junction_receive -> junction_process_inbox -> typed tables.
-- Assumes CREATE EXTENSION junction ran in an earlier test. Inbox inserts and the drain share one
-- transaction, so a running background worker cannot take the rows first.

INSERT INTO junction.webhook_secrets (secret, description)
VALUES ('whsec_anVuY3Rpb24tcGlwZWxpbmUtdHlwaW5n', 'pipeline_typing test secret');

-- Test users: user 1 gets the fixtures as written; the others get copies (user id replaced).
\set u1 '0190b2a0-0000-7000-8000-000000000001'
\set u2 '0190b2a0-0000-7000-8000-000000000002'
\set u3 '0190b2a0-0000-7000-8000-000000000003'
\set u4 '0190b2a0-0000-7000-8000-000000000004'
\set u5 '0190b2a0-0000-7000-8000-000000000005'
\set u6 '0190b2a0-0000-7000-8000-000000000006'
\set ECHO none
\i test/fixtures/fixtures.sql
\set ECHO all
SELECT count(*) AS fixtures FROM fixture;

-- One signed delivery, exactly as a receiver stores it.
CREATE FUNCTION pg_temp.deliver(msg_id text, body text) RETURNS bigint
LANGUAGE sql AS $$
  SELECT junction_receive(
           jsonb_build_object(
             'svix-id', msg_id,
             'svix-timestamp', extract(epoch FROM now())::bigint::text,
             'svix-signature', junction_sign_webhook('whsec_anVuY3Rpb24tcGlwZWxpbmUtdHlwaW5n', msg_id,
                                                     extract(epoch FROM now())::bigint, body)),
           body)
$$;

-- Everything users can see in the typed tables, one jsonb per row. Columns that hold now() are
-- dropped; received_seq is kept (the "same svix-id" check compares it, the others drop it).
CREATE TEMP VIEW typed_state AS
          SELECT 'activity' AS tbl, to_jsonb(t) AS r FROM junction.activity t
UNION ALL SELECT 'sleep', to_jsonb(t) FROM junction.sleep t
UNION ALL SELECT 'sleep_cycle', to_jsonb(t) FROM junction.sleep_cycle t
UNION ALL SELECT 'workouts', to_jsonb(t) FROM junction.workouts t
UNION ALL SELECT 'body', to_jsonb(t) FROM junction.body t
UNION ALL SELECT 'profile', to_jsonb(t) FROM junction.profile t
UNION ALL SELECT 'meals', to_jsonb(t) FROM junction.meals t
UNION ALL SELECT 'menstrual_cycles', to_jsonb(t) FROM junction.menstrual_cycles t
UNION ALL SELECT 'electrocardiograms', to_jsonb(t) FROM junction.electrocardiograms t
UNION ALL SELECT 'devices', to_jsonb(t) FROM junction.devices t
UNION ALL SELECT 'workout_streams', to_jsonb(t) - 'updated_at' FROM junction.workout_streams t
UNION ALL SELECT 'connections', to_jsonb(t) - '{updated_at,connected_at}'::text[] FROM junction.connections t
UNION ALL SELECT 'backfills', to_jsonb(t) - '{updated_at,completed_at}'::text[] FROM junction.backfills t
UNION ALL SELECT 'samples', to_jsonb(t) FROM junction.samples t;

-- ---------------------------------------------------------------------------------------------
-- 1. All fixtures, in name order, drained in one go. The session time zone is not UTC on purpose:
--    a timestamp without offset must still be read as UTC.
-- ---------------------------------------------------------------------------------------------
SET timezone = 'America/Los_Angeles';
BEGIN;
SELECT count(pg_temp.deliver('msg_pt_' || f.name, f.body)) AS delivered
FROM (SELECT name, body FROM fixture ORDER BY name) AS f;
SELECT junction_process_inbox(100000) > 0 AS drained;
COMMIT;
SET timezone = 'UTC';

SELECT status, count(*), count(error) AS with_error FROM junction.inbox
WHERE headers ->> 'svix-id' LIKE 'msg_pt_%' GROUP BY status ORDER BY status;

-- Rows per table.
SELECT tbl, count(*) FROM typed_state WHERE r ->> 'user_id' = :'u1' GROUP BY tbl ORDER BY tbl;
SELECT count(*) AS events FROM junction.events WHERE svix_id LIKE 'msg_pt_%';

-- The registry: 10 summaries (incl. device), 1 stream, 50 timeseries ...
SELECT kind, count(*) FROM junction.resources GROUP BY kind ORDER BY kind;
-- ... and every one of them has typed rows (expected: no rows).
SELECT r.name, r.kind
FROM junction.resources AS r
WHERE (xpath('/row/n/text()', query_to_xml(
         CASE r.kind
           WHEN 'timeseries' THEN format('SELECT count(*) AS n FROM junction.samples WHERE resource = %L', r.name)
           ELSE format('SELECT count(*) AS n FROM junction.%I', r.table_name)
         END, false, true, '')))[1]::text::int = 0
ORDER BY r.name;

-- Events by family; untyped ones keep their payload.
SELECT split_part(event_type, '.', 1) AS family, count(*) FROM junction.events
WHERE svix_id LIKE 'msg_pt_%' GROUP BY 1 ORDER BY 1;
SELECT event_type, resource, provider, user_id IS NOT NULL AS has_user, client_user_id, team_id,
       jsonb_typeof(payload -> 'data') AS data_type
FROM junction.events
WHERE svix_id LIKE 'msg_pt_%'
  AND (event_type !~ '^daily\.data\.' OR resource NOT IN (SELECT name FROM junction.resources))
ORDER BY event_type;

-- ---------------------------------------------------------------------------------------------
-- 2. Samples.
-- ---------------------------------------------------------------------------------------------
SELECT resource, provider, source_type, count(*) AS samples, count(DISTINCT type) AS types,
       count(time_end) AS intervals, count(value) AS numeric_values, min(time) AS first
FROM junction.samples WHERE user_id = :'u1'
GROUP BY resource, provider, source_type ORDER BY resource, provider;

-- The odd ones: no value, text value, meaningful type at one instant, workout ids, extra fields.
SELECT resource, type, workout_id, time, time_end, value, unit, timezone_offset, extra
FROM junction.samples
WHERE user_id = :'u1'
  AND resource IN ('blood_pressure', 'note', 'cholesterol', 'ige', 'igg', 'electrocardiogram_voltage',
                   'workout_distance', 'workout_swimming_stroke', 'insulin_injection', 'stand_hour',
                   'heart_rate_alert', 'sleep_breathing_disturbance', 'body_temperature',
                   'workout_duration', 'stress_level')
ORDER BY resource, time, type;

-- Weight is stored under its event name, not the REST name body_weight.
SELECT resource, value, unit FROM junction.samples
WHERE user_id = :'u1' AND resource IN ('weight', 'body_weight', 'fat', 'body_fat')
ORDER BY resource, time;

-- Floating time (LibreView / FreeStyle Libre): time is the wall clock read as UTC, local_time the
-- wall clock; one libre feed has no offset suffix at all. Other providers: time is an instant and
-- local_time = time + timezone_offset. A non-libre timestamp without suffix (water 16:00) is UTC.
SELECT provider, time, local_time, floating, timezone_offset, value
FROM junction.samples WHERE user_id = :'u1' AND resource IN ('glucose', 'water')
ORDER BY resource, provider, time;

-- A re-sent sample: the later delivery's value (90) replaced 88.
SELECT time, value, extra FROM junction.samples WHERE user_id = :'u1' AND resource = 'heartrate' ORDER BY time;

-- ---------------------------------------------------------------------------------------------
-- 3. Summaries, devices, streams.
-- ---------------------------------------------------------------------------------------------
SELECT id, provider, source_type, calendar_date, steps, calories_total, calories_active, distance,
       floors_climbed, heart_rate_avg_bpm, heart_rate_resting_bpm, time_zone, timezone_offset, updated_at
FROM junction.activity WHERE user_id = :'u1' ORDER BY id;
SELECT id, provider, source_type, calendar_date, bedtime_start, bedtime_stop, type, duration, total, deep,
       rem, score, hr_lowest, efficiency, state, average_hrv, data -> 'sleep_stream' AS sleep_stream
FROM junction.sleep WHERE user_id = :'u1' ORDER BY id;
SELECT id, sleep_id, provider, source_type, session_start, stage_start_offset_second, stage_type, time_zone
FROM junction.sleep_cycle WHERE user_id = :'u1' ORDER BY id;
SELECT id, provider, provider_id, title, calendar_date, time_start, sport_id, sport_name, sport_slug,
       average_hr, distance, hr_zones, moving_time, device_watts, data #>> '{map,summary_polyline}' AS polyline
FROM junction.workouts WHERE user_id = :'u1' ORDER BY id;
SELECT id, provider, source_type, weight, fat, body_mass_index, lean_body_mass_kilogram, updated_at
FROM junction.body WHERE user_id = :'u1' ORDER BY id;
SELECT id, provider, height, birth_date, gender, sex, wheelchair_use FROM junction.profile WHERE user_id = :'u1' ORDER BY id;
SELECT id, provider, provider_id, "timestamp", name, energy_kcal, carbs, protein, fats_total, fibre,
       sugar, cholesterol, data -> 'data' ? 'Chicken burrito bowl' AS food_items_kept
FROM junction.meals WHERE user_id = :'u1' ORDER BY id;
SELECT id, provider, source_type, source_app_id, period_start, period_end, cycle_end, is_predicted,
       jsonb_array_length(data -> 'menstrual_flow') AS flow_days
FROM junction.menstrual_cycles WHERE user_id = :'u1' ORDER BY id;
SELECT id, provider, source_type, source_app_id, source_device_model, session_start, voltage_sample_count,
       heart_rate_mean, sampling_frequency_hz, classification
FROM junction.electrocardiograms WHERE user_id = :'u1' ORDER BY id;
SELECT id, provider, source_type, app_id, device_manufacturer, device_model, device_version, device_id
FROM junction.devices WHERE user_id = :'u1' ORDER BY id;
SELECT workout_id, id = workout_id AS id_is_workout_id, provider, source_type, provider_id, sport_slug,
       fetch_status, attempts, data IS NULL AS not_fetched_yet
FROM junction.workout_streams WHERE user_id = :'u1' ORDER BY workout_id;

-- ---------------------------------------------------------------------------------------------
-- 4. Connections and backfills.
-- ---------------------------------------------------------------------------------------------
SELECT provider, status, external_user_id,
       (SELECT string_agg(k, ',' ORDER BY k) FROM jsonb_object_keys(resource_availability) AS k) AS resources,
       resource_availability #>> '{body,status}' AS body_scope, error_type, error_message, error_details,
       connected_at IS NOT NULL AS has_connected_at
FROM junction.connections
WHERE user_id = :'u1'
ORDER BY provider;
SELECT provider, resource, start_date, end_date, fetch_status, fetch_error, rows_loaded, attempts,
       completed_at = (SELECT i.received_at FROM junction.inbox i JOIN junction.events e ON e.inbox_id = i.id
                       WHERE e.svix_id = 'msg_pt_historical_' || b.resource) AS completed_at_is_received_at
FROM junction.backfills AS b WHERE user_id = :'u1' ORDER BY provider, resource;

-- ---------------------------------------------------------------------------------------------
-- 5. Ordering: v1, v2, v3 of one activity (increasing updated_at) and two body versions without
--    updated_at (the later received wins).
-- ---------------------------------------------------------------------------------------------
SELECT id, steps, calories_active, updated_at, data ->> 'calendar_date' AS calendar_date
FROM junction.activity WHERE user_id = :'u1' AND id = '0190b2a1-0000-7000-8000-000000000011';
SELECT id, provider, weight, updated_at FROM junction.body
WHERE user_id = :'u1' AND id = '0190b2a1-0000-7000-8000-000000000015';

-- ---------------------------------------------------------------------------------------------
-- 6. Duplicates. Same svix-ids again: nothing changes, not even received_seq.
-- ---------------------------------------------------------------------------------------------
CREATE TEMP TABLE state_before AS SELECT * FROM typed_state;
BEGIN;
SELECT count(pg_temp.deliver('msg_pt_' || f.name, f.body)) AS redelivered
FROM (SELECT name, body FROM fixture WHERE name IN ('activity_v2', 'steps', 'connection_error',
                                                    'sense_result_table_changed', 'device_created')
      ORDER BY name) AS f;
SELECT junction_process_inbox(100000) IS NOT NULL AS drained;
COMMIT;
SELECT count(*) AS events FROM junction.events WHERE svix_id LIKE 'msg_pt_%';
SELECT status, count(*) FROM junction.inbox
WHERE headers ->> 'svix-id' LIKE 'msg_pt_%' GROUP BY status ORDER BY status;
-- expected: no rows
(SELECT * FROM typed_state EXCEPT ALL SELECT * FROM state_before)
UNION ALL
(SELECT * FROM state_before EXCEPT ALL SELECT * FROM typed_state);

-- New svix-ids for every fixture (Junction re-sending the same content): 78 more events, and the
-- typed tables are identical apart from which delivery they remember (received_seq).
BEGIN;
SELECT count(pg_temp.deliver('msg_pt_again_' || f.name, f.body)) AS resent
FROM (SELECT name, body FROM fixture ORDER BY name) AS f;
SELECT junction_process_inbox(100000) > 0 AS drained;
COMMIT;
SELECT count(*) AS events FROM junction.events WHERE svix_id LIKE 'msg_pt_%';
-- expected: no rows
(SELECT tbl, r - '{received_seq,connected_seq}'::text[] FROM typed_state EXCEPT ALL SELECT tbl, r - '{received_seq,connected_seq}'::text[] FROM state_before)
UNION ALL
(SELECT tbl, r - '{received_seq,connected_seq}'::text[] FROM state_before EXCEPT ALL SELECT tbl, r - '{received_seq,connected_seq}'::text[] FROM typed_state);

-- ---------------------------------------------------------------------------------------------
-- 7. Reordering. The activity versions for two more users: user 2 drains after each delivery in
--    the order v3, v1, v2; user 3 receives v2, v3, v1 and drains once. Same result as user 1.
-- ---------------------------------------------------------------------------------------------
BEGIN;
SELECT pg_temp.deliver('msg_pt_u2_activity_v3', replace(body, :'u1',
                       :'u2')) > 0 AS received FROM fixture WHERE name = 'activity_v3';
SELECT junction_process_inbox(100000) > 0 AS drained;
SELECT pg_temp.deliver('msg_pt_u2_activity_v1', replace(body, :'u1',
                       :'u2')) > 0 AS received FROM fixture WHERE name = 'activity_v1';
SELECT junction_process_inbox(100000) > 0 AS drained;
SELECT pg_temp.deliver('msg_pt_u2_activity_v2', replace(body, :'u1',
                       :'u2')) > 0 AS received FROM fixture WHERE name = 'activity_v2';
SELECT junction_process_inbox(100000) > 0 AS drained;
SELECT count(pg_temp.deliver('msg_pt_u3_' || f.name, replace(f.body, :'u1',
                                                          :'u3')))
FROM (SELECT name, body FROM fixture WHERE name IN ('activity_v1', 'activity_v2', 'activity_v3')
      ORDER BY CASE name WHEN 'activity_v2' THEN 1 WHEN 'activity_v3' THEN 2 ELSE 3 END) AS f;
SELECT junction_process_inbox(100000) > 0 AS drained;
COMMIT;
SELECT user_id, id, steps, updated_at, event_type
FROM junction.activity AS a
JOIN LATERAL (SELECT event_type FROM junction.events e WHERE e.inbox_id = a.received_seq) AS e ON true
WHERE user_id IN (:'u1', :'u2', :'u3') AND id = '0190b2a1-0000-7000-8000-000000000011' ORDER BY user_id;
-- the three users hold one and the same version (expected: 3 rows, 1 version)
SELECT count(*) AS users, count(DISTINCT (a.steps, a.calories_active, a.updated_at, a.data - 'user_id')) AS versions
FROM junction.activity AS a
WHERE a.user_id IN (:'u1', :'u2', :'u3') AND a.id = '0190b2a1-0000-7000-8000-000000000011';

-- The whole fixture set for user 5, received in name order but applied in reverse order, one
-- delivery per call, then all again as one batch: the same tables as user 1.
BEGIN;
CREATE TEMP TABLE u5 AS
SELECT f.name, pg_temp.deliver('msg_pt_u5_' || f.name, replace(f.body, :'u1',
                                                              :'u5')) AS inbox_id
FROM (SELECT name, body FROM fixture ORDER BY name) AS f;
SELECT sum(junction._apply_deliveries(ARRAY[inbox_id], ARRAY['msg_pt_u5_' || name])) AS accepted
FROM (SELECT * FROM u5 ORDER BY name DESC) AS s;
SELECT junction._apply_deliveries(array_agg(inbox_id ORDER BY name), array_agg('msg_pt_u5_' || name ORDER BY name)) AS accepted
FROM u5;
COMMIT;
-- expected: no rows
WITH u1 AS (SELECT tbl, r - '{received_seq,connected_seq}'::text[] AS r FROM typed_state
            WHERE r ->> 'user_id' = :'u1'),
     u5 AS (SELECT tbl, replace((r - '{received_seq,connected_seq}'::text[])::text, :'u5',
                                :'u1')::jsonb AS r FROM typed_state
            WHERE r ->> 'user_id' = :'u5')
(SELECT * FROM u1 EXCEPT ALL SELECT * FROM u5) UNION ALL (SELECT * FROM u5 EXCEPT ALL SELECT * FROM u1);
SELECT count(*) AS user5_rows FROM typed_state WHERE r ->> 'user_id' = :'u5';

-- A re-sent sample applied before the original it replaces: the later received (90) still wins.
BEGIN;
CREATE TEMP TABLE u4 AS
SELECT f.name, pg_temp.deliver('msg_pt_u4_' || f.name, replace(f.body, :'u1',
                                                              :'u4')) AS inbox_id
FROM (SELECT name, body FROM fixture WHERE name IN ('heartrate', 'heartrate_resent') ORDER BY name) AS f;
SELECT junction._apply_deliveries(ARRAY[inbox_id], ARRAY['msg_pt_u4_' || name]) AS accepted
FROM u4 WHERE name = 'heartrate_resent';
SELECT junction._apply_deliveries(ARRAY[inbox_id], ARRAY['msg_pt_u4_' || name]) AS accepted
FROM u4 WHERE name = 'heartrate';
COMMIT;
SELECT time, value FROM junction.samples
WHERE user_id = :'u4' AND resource = 'heartrate' ORDER BY time;

-- ---------------------------------------------------------------------------------------------
-- 8. Bad input is quarantined row by row with its reason; the good row of the batch still lands.
-- ---------------------------------------------------------------------------------------------
BEGIN;
CREATE TEMP TABLE bad AS
SELECT b.name, pg_temp.deliver('msg_pt_bad_' || b.name, b.body) AS inbox_id
FROM (VALUES
  ('a_not_json', '{"event_type": "daily.data.steps.created", '),
  ('b_no_event_type', '{"user_id": "0190b2a0-0000-7000-8000-000000000001", "data": {}}'),
  ('c_user_not_uuid', '{"event_type": "daily.data.steps.created", "user_id": "user-42", "data": {"source": {"provider": "oura", "type": "ring"}, "data": []}}'),
  ('d_value_not_number', '{"event_type": "daily.data.steps.created", "user_id": "0190b2a0-0000-7000-8000-000000000006", "data": {"source": {"provider": "oura", "type": "ring"}, "data": [{"timestamp": "2025-06-10T08:00:00+00:00", "unit": "count", "value": "abc"}]}}'),
  ('e_summary_without_id', '{"event_type": "daily.data.activity.created", "user_id": "0190b2a0-0000-7000-8000-000000000006", "data": {"calendar_date": "2025-06-10", "source": {"provider": "oura"}}}'),
  ('f_timeseries_without_data', '{"event_type": "daily.data.steps.created", "user_id": "0190b2a0-0000-7000-8000-000000000006", "data": {"source": {"provider": "oura", "type": "ring"}}}'),
  ('g_provider_too_long', '{"event_type": "daily.data.steps.created", "user_id": "0190b2a0-0000-7000-8000-000000000006", "data": {"source": {"provider": "' || repeat('x', 300) || '"}, "data": [{"timestamp": "2025-06-10T08:00:00+00:00", "unit": "count", "value": 1}]}}'),
  ('h_sample_without_timestamp', '{"event_type": "daily.data.steps.created", "user_id": "0190b2a0-0000-7000-8000-000000000006", "data": {"source": {"provider": "oura", "type": "ring"}, "data": [{"unit": "count", "value": 1}]}}'),
  ('i_bad_date', '{"event_type": "daily.data.sleep.created", "user_id": "0190b2a0-0000-7000-8000-000000000006", "data": {"id": "0190b2a1-0000-7000-8000-000000000099", "calendar_date": "yesterday-ish", "source": {"provider": "oura"}}}'),
  ('z_good', '{"event_type": "daily.data.steps.created", "user_id": "0190b2a0-0000-7000-8000-000000000006", "data": {"source": {"provider": "oura", "type": "ring"}, "data": [{"timestamp": "2025-06-10T08:00:00+00:00", "start": "2025-06-10T08:00:00+00:00", "end": "2025-06-10T08:15:00+00:00", "unit": "count", "value": 42}]}}')
) AS b(name, body)
ORDER BY b.name;
SELECT junction_process_inbox(100000) > 0 AS drained;
COMMIT;
SELECT b.name, i.status, i.sqlstate, i.error
FROM bad AS b JOIN junction.inbox AS i ON i.id = b.inbox_id ORDER BY b.name;
SELECT svix_id FROM junction.events WHERE svix_id LIKE 'msg_pt_bad_%' ORDER BY svix_id;
SELECT user_id, resource, provider, time, value FROM junction.samples
WHERE user_id = :'u6';

-- ---------------------------------------------------------------------------------------------
-- 9. Adding a timeseries resource is one registry row: a later blood_ketones event gets typed
--    (the one received before the row existed stays an untyped event).
-- ---------------------------------------------------------------------------------------------
INSERT INTO junction.resources (name, kind, table_name, rest_path, rest_segment, response_key,
                                is_interval, value_kind, unit)
VALUES ('blood_ketones', 'timeseries', 'samples', '/v2/timeseries/{user_id}/blood_ketones/grouped',
        'blood_ketones', 'groups', false, 'number', 'mmol/L');
BEGIN;
SELECT pg_temp.deliver('msg_pt_u6_future_resource', replace(body, :'u1', :'u6')) > 0 AS received
FROM fixture WHERE name = 'future_resource';
SELECT junction_process_inbox(100000) > 0 AS drained;
COMMIT;
SELECT user_id = :'u6' AS user6, resource, provider, time, local_time, floating, value, unit
FROM junction.samples WHERE resource = 'blood_ketones' ORDER BY user_id;
DELETE FROM junction.samples WHERE resource = 'blood_ketones';
DELETE FROM junction.resources WHERE name = 'blood_ketones';

DROP TABLE state_before, u4, u5, bad;
DROP VIEW typed_state;
DELETE FROM junction.webhook_secrets WHERE description = 'pipeline_typing test secret';
