-- daily: consolidation into junction.daily (one number per user, local day and metric) by the
-- team's source priorities, else the default rule. Cases from real situations, each delivered as
-- signed webhooks through the drain (inside one transaction, so the worker never sees them), then
-- junction_sync and the backfill path, the junction.daily setting, and order independence.
\getenv mock JUNCTION_MOCK_URL
SET junction.api_base_url = :'mock';
SET junction.api_key = 'sk_us_test_key';
SET timezone = 'UTC';
SET datestyle = 'ISO, YMD';
\set secret 'whsec_ZGFpbHktY29uc29saWRhdGlvbi1zZWNyZXQ='
INSERT INTO junction.webhook_secrets (secret, description) VALUES (:'secret', 'daily test secret')
ON CONFLICT DO NOTHING;
TRUNCATE junction.daily, junction.daily_parts, junction.source_priorities, junction.samples, junction.activity,
         junction.sleep, junction.body, junction.workouts;
SELECT pg_catalog.set_config('daily.secret', :'secret', false) IS NOT NULL AS secret_set;

-- Every message this test sends, in sending order (replayed at the end in other orders).
CREATE TABLE daily_sent (n serial PRIMARY KEY, svix_id text, body text);
-- Sign and drain messages (event type, user, data) in one transaction; returns deliveries handled.
CREATE FUNCTION pg_temp.send(msgs jsonb) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
  m jsonb; id text; body text; ts bigint := extract(epoch FROM now())::bigint; total integer := 0; n integer;
BEGIN
  FOR m IN SELECT x FROM jsonb_array_elements(msgs) AS x LOOP
    id := 'msg_daily_' || md5(m::text);
    body := jsonb_build_object('event_type', m ->> 0, 'user_id', m ->> 1, 'client_user_id', 'daily',
                               'team_id', '0190b2a0-0000-7000-8000-00000000aaaa', 'data', m -> 2)::text;
    INSERT INTO daily_sent (svix_id, body) VALUES (id, body);
    INSERT INTO junction.inbox (headers, body)
    VALUES (jsonb_build_object('svix-id', id, 'svix-timestamp', ts::text,
                               'svix-signature', junction_sign_webhook(current_setting('daily.secret'), id, ts, body)),
            body);
  END LOOP;
  LOOP
    n := junction_process_inbox(100);
    EXIT WHEN n = 0;
    total := total + n;
  END LOOP;
  RETURN total;
END $$;
-- A user's consolidated days.
CREATE FUNCTION pg_temp.days(u uuid, metrics text[] DEFAULT NULL)
RETURNS TABLE (calendar_date date, metric text, value double precision, unit text, provider text,
               source_type text, resource text, candidates integer)
LANGUAGE sql AS $$
  SELECT d.calendar_date, d.metric, round(d.value::numeric, 2)::double precision, d.unit, d.provider,
         d.source_type, d.resource, d.candidates
  FROM junction.daily AS d
  WHERE d.user_id = u AND (metrics IS NULL OR d.metric = ANY (metrics))
  ORDER BY 1, 2
$$;
-- A timeseries group: provider, source type, resource's unit, [start, minutes, value, offset] samples.
CREATE FUNCTION pg_temp.grp(provider text, source_type text, unit text, samples jsonb) RETURNS jsonb
LANGUAGE sql AS $$
  SELECT jsonb_build_object('source', jsonb_build_object('provider', provider, 'type', source_type),
           'data', jsonb_agg(jsonb_build_object(
              'start', s ->> 0, 'timestamp', s ->> 0,
              'end', to_char(((s ->> 0)::timestamptz + make_interval(mins => (s ->> 1)::int)) AT TIME ZONE 'UTC',
                             'YYYY-MM-DD"T"HH24:MI:SS"+00:00"'),
              'value', s -> 2, 'unit', unit, 'timezone_offset', s -> 3, 'type', NULL)))
  FROM jsonb_array_elements(samples) AS s
$$;
\set ann  '0190b2a0-0000-7000-8000-0000000da001'
\set ben  '0190b2a0-0000-7000-8000-0000000da002'
\set cat  '0190b2a0-0000-7000-8000-0000000da003'
\set dan  '0190b2a0-0000-7000-8000-0000000da004'
\set eve  '0190b2a0-0000-7000-8000-0000000da005'

-- The metrics and the default rule.
SELECT count(DISTINCT metric) >= 25 AS metrics, count(*) FILTER (WHERE NOT builtin) AS user_rows
FROM junction.daily_metrics;
SELECT p, s, junction.default_source_rank(p, s) AS rank
FROM (VALUES ('oura', 'ring'), ('garmin', 'watch'), ('apple_health_kit', 'watch'), ('apple_health_kit', 'phone'),
             ('apple_health_kit', 'app'), ('apple_health_kit', 'multiple_sources'), ('garmin', 'unknown'),
             ('health_connect', 'unknown'), ('dexcom_v3', 'automatic')) AS x(p, s)
ORDER BY 3, 1, 2;

-- 1. Phone plus watch in HealthKit: both count the same walk (09:00-10:00, and the phone also
--    10:00-10:30). One source wins (the watch: a device before a phone); never their sum.
BEGIN;
SELECT pg_temp.send(jsonb_build_array(
  jsonb_build_array('daily.data.steps.created', :'ann', pg_temp.grp('apple_health_kit', 'watch', 'count',
    '[["2026-11-02T09:00:00+00:00", 30, 1800, 3600], ["2026-11-02T09:30:00+00:00", 30, 1700, 3600]]')),
  jsonb_build_array('daily.data.steps.created', :'ann', pg_temp.grp('apple_health_kit', 'phone', 'count',
    '[["2026-11-02T09:00:00+00:00", 30, 1600, 3600], ["2026-11-02T09:30:00+00:00", 30, 1650, 3600],
      ["2026-11-02T10:00:00+00:00", 30, 400, 3600]]')),
  jsonb_build_array('daily.data.heartrate.created', :'ann', pg_temp.grp('apple_health_kit', 'watch', 'bpm',
    '[["2026-11-02T09:00:00+00:00", 0, 60, 3600], ["2026-11-02T09:05:00+00:00", 0, 90, 3600]]')))) AS handled;
COMMIT;
SELECT * FROM pg_temp.days(:'ann');
-- the sources' own sums, for comparison: 3500 (watch), 3650 (phone)
SELECT source_type, sum(value) FROM junction.samples WHERE user_id = :'ann' AND resource = 'steps'
GROUP BY 1 ORDER BY 1;

-- 2. Garmin plus Oura sleep, the same night; Garmin also took a nap. No priorities yet: both are
--    devices of their own cloud (rank 10), so the names decide (garmin). Garmin's day sums its two
--    sessions; the score is the longest session's.
BEGIN;
SELECT pg_temp.send(jsonb_build_array(
  jsonb_build_array('daily.data.sleep.created', :'ben', jsonb_build_object(
    'id', '0190b2a0-2222-7000-8000-000000000001', 'user_id', :'ben', 'calendar_date', '2026-11-02',
    'bedtime_start', '2026-11-01T22:30:00+00:00', 'bedtime_stop', '2026-11-02T06:30:00+00:00',
    'total', 25200, 'deep', 5400, 'rem', 6000, 'light', 13800, 'awake', 1800, 'score', 81, 'efficiency', 88,
    'average_hrv', 52, 'respiratory_rate', 14.5, 'hr_resting', 51, 'type', 'long_sleep',
    'source', jsonb_build_object('provider', 'oura', 'type', 'ring'), 'updated_at', '2026-11-02T07:00:00+00:00')),
  jsonb_build_array('daily.data.sleep.created', :'ben', jsonb_build_object(
    'id', '0190b2a0-2222-7000-8000-000000000002', 'user_id', :'ben', 'calendar_date', '2026-11-02',
    'bedtime_start', '2026-11-01T22:40:00+00:00', 'bedtime_stop', '2026-11-02T06:20:00+00:00',
    'total', 24000, 'deep', 4800, 'rem', 5400, 'light', 13800, 'awake', 3600, 'score', 74, 'efficiency', 84,
    'type', 'long_sleep',
    'source', jsonb_build_object('provider', 'garmin', 'type', 'watch'), 'updated_at', '2026-11-02T07:00:00+00:00')),
  jsonb_build_array('daily.data.sleep.created', :'ben', jsonb_build_object(
    'id', '0190b2a0-2222-7000-8000-000000000003', 'user_id', :'ben', 'calendar_date', '2026-11-02',
    'bedtime_start', '2026-11-02T13:00:00+00:00', 'bedtime_stop', '2026-11-02T13:30:00+00:00',
    'total', 1500, 'deep', 0, 'rem', 0, 'light', 1500, 'awake', 300, 'score', 40, 'efficiency', 80,
    'type', 'short_sleep',
    'source', jsonb_build_object('provider', 'garmin', 'type', 'watch'), 'updated_at', '2026-11-02T14:00:00+00:00')))) AS handled;
COMMIT;
SELECT * FROM pg_temp.days(:'ben');

-- 3. A priority change, then a rebuild. Junction's priorities (the mock's default list puts oura
--    first) come into junction.source_priorities; the rebuild makes oura win every sleep metric.
SELECT junction_sync_source_priorities() > 0 AS synced;
SELECT resource, provider, source_type, priority, origin, data -> 'source' ->> 'slug' AS slug
FROM junction.source_priorities WHERE resource = 'sleep' ORDER BY priority LIMIT 3;
-- the stored days do not move until a rebuild
SELECT provider, count(*) FROM junction.daily WHERE user_id = :'ben' GROUP BY 1;
SELECT junction_rebuild_daily() > 0 AS rebuilt;
SELECT * FROM pg_temp.days(:'ben');
-- the team overrides one resource: garmin first for sleep (a team row beats Junction's)
INSERT INTO junction.source_priorities (resource, provider, priority) VALUES ('sleep', 'garmin', 0);
SELECT junction_rebuild_daily(:'ben') > 0 AS rebuilt;
SELECT metric, provider, value FROM pg_temp.days(:'ben', '{sleep_total,sleep_score}');
-- Junction's priorities change at Junction (garmin moved to the end); a new sync replaces only
-- Junction's rows, the team's override stays
SELECT jsonb_array_length(junction_api('PATCH', '/v2/team/source/priorities', NULL,
         '{"sleep": ["oura", "withings", "garmin"]}')) > 0 AS patched;
SELECT junction_sync_source_priorities() > 0 AS synced;
SELECT provider, priority, origin FROM junction.source_priorities
WHERE resource = 'sleep' AND provider IN ('garmin', 'oura') ORDER BY 3, 2;
DELETE FROM junction.source_priorities WHERE origin = 'team';
SELECT junction_rebuild_daily(:'ben') > 0 AS rebuilt;
SELECT metric, provider, value FROM pg_temp.days(:'ben', '{sleep_total,sleep_score}');
-- the API's validation of data_type, and the error for an answer that is not a list (nothing
-- of Junction's is lost: the transaction rolls back)
SELECT expect_error($$SELECT junction_api('GET', '/v2/team/source/priorities', '{"data_type": "steps"}')$$) LIKE '%422%' AS rejected;
SELECT junction_api('POST', '/_mock/faults', NULL, '{"path_prefix": "/v2/team/source/priorities",
         "responses": [{"status": 200, "body": {"priorities": []}}]}') IS NOT NULL AS fault_set;
SELECT expect_error('SELECT junction_sync_source_priorities()');
SELECT count(*) > 0 AS kept FROM junction.source_priorities WHERE origin = 'junction';
-- The specification leaves the objects' fields open (an array of objects, additionalProperties);
-- whatever names the provider is read (a string, an object's slug, source.provider or
-- source.slug, slug), a source type when given, a priority (else the position in the list).
SELECT junction_api('POST', '/_mock/faults', NULL, '{"path_prefix": "/v2/team/source/priorities", "responses": [
         {"status": 200, "body": [{"provider": "garmin", "priority": 2}, {"provider": "oura", "priority": 1}]},
         {"status": 200, "body": [{"source": {"provider": "withings"}, "source_type": "scale"}, {"slug": "omron"}]},
         {"status": 200, "body": [{"source": {"slug": "oura", "name": "Oura"}}, "not an object", {"id": 7}]},
         {"status": 200, "body": []},
         {"status": 200, "body": [{"provider": {"slug": "polar", "name": "Polar"}, "priority": 3},
                                  {"provider": "polar", "priority": 9}]}]}') IS NOT NULL AS fault_set;
SELECT junction_sync_source_priorities() AS stored;
SELECT resource, provider, source_type, priority FROM junction.source_priorities ORDER BY 1, 4, 2;
SELECT junction_sync_source_priorities() > 0 AS synced_again;

-- 4. A late correction: the activity summary of a day arrives, then its correction (newer
--    updated_at), then the first version again (a Svix retry): the day follows the newest version.
--    A later correction moves the summary to the next day: the first day loses its values.
BEGIN;
SELECT pg_temp.send(jsonb_build_array(
  jsonb_build_array('daily.data.activity.created', :'cat', jsonb_build_object(
    'id', '0190b2a0-3333-7000-8000-000000000001', 'user_id', :'cat', 'calendar_date', '2026-11-03',
    'steps', 4000, 'calories_active', 300, 'calories_total', 2100, 'distance', 3100, 'floors_climbed', 4,
    'heart_rate', jsonb_build_object('resting_bpm', 58),
    'source', jsonb_build_object('provider', 'garmin', 'type', 'watch'), 'updated_at', '2026-11-03T12:00:00+00:00')))) AS handled;
COMMIT;
SELECT metric, value FROM pg_temp.days(:'cat', '{steps,calories_total,resting_heart_rate}');
BEGIN;
SELECT pg_temp.send(jsonb_build_array(
  jsonb_build_array('daily.data.activity.updated', :'cat', jsonb_build_object(
    'id', '0190b2a0-3333-7000-8000-000000000001', 'user_id', :'cat', 'calendar_date', '2026-11-03',
    'steps', 11250, 'calories_active', 640, 'calories_total', 2460, 'distance', 8800, 'floors_climbed', 9,
    'heart_rate', jsonb_build_object('resting_bpm', 57),
    'source', jsonb_build_object('provider', 'garmin', 'type', 'watch'), 'updated_at', '2026-11-03T23:59:00+00:00')))) AS handled;
COMMIT;
SELECT metric, value FROM pg_temp.days(:'cat', '{steps,calories_total,resting_heart_rate}');
-- the stale version again, under a new svix id: no change
BEGIN;
SELECT pg_temp.send(jsonb_build_array(
  jsonb_build_array('daily.data.activity.created', :'cat', jsonb_build_object(
    'id', '0190b2a0-3333-7000-8000-000000000001', 'user_id', :'cat', 'calendar_date', '2026-11-03',
    'steps', 4000, 'calories_active', 300, 'calories_total', 2100, 'distance', 3100,
    'source', jsonb_build_object('provider', 'garmin', 'type', 'watch'), 'updated_at', '2026-11-03T12:00:01+00:00',
    'retry', true)))) AS handled;
COMMIT;
SELECT metric, value FROM pg_temp.days(:'cat', '{steps,calories_total,resting_heart_rate}');
BEGIN;
SELECT pg_temp.send(jsonb_build_array(
  jsonb_build_array('daily.data.activity.updated', :'cat', jsonb_build_object(
    'id', '0190b2a0-3333-7000-8000-000000000001', 'user_id', :'cat', 'calendar_date', '2026-11-04',
    'steps', 11300, 'calories_total', 2470,
    'source', jsonb_build_object('provider', 'garmin', 'type', 'watch'), 'updated_at', '2026-11-04T08:00:00+00:00')))) AS handled;
COMMIT;
SELECT calendar_date, metric, value FROM pg_temp.days(:'cat');

-- 5. A user in UTC+13 (Tonga) near midnight: samples at 23:30 and 00:30 local are on two days,
--    though both are on the same UTC day; and a sample without an offset is on its UTC day.
BEGIN;
SELECT pg_temp.send(jsonb_build_array(
  jsonb_build_array('daily.data.steps.created', :'dan', pg_temp.grp('oura', 'ring', 'count',
    '[["2026-11-01T10:30:00+00:00", 20, 700, 46800], ["2026-11-01T11:30:00+00:00", 20, 250, 46800],
      ["2026-11-01T11:55:00+00:00", 5, 50, 46800]]')),
  jsonb_build_array('daily.data.heartrate.created', :'dan', pg_temp.grp('oura', 'ring', 'bpm',
    '[["2026-11-01T10:59:00+00:00", 0, 55, 46800], ["2026-11-01T11:01:00+00:00", 0, 75, 46800],
      ["2026-11-01T23:00:00+00:00", 0, 65, null]]')))) AS handled;
COMMIT;
SELECT * FROM pg_temp.days(:'dan');
SELECT time, local_time, value FROM junction.samples WHERE user_id = :'dan' ORDER BY resource, time;

-- 6. A resource with no priority: glucose from a CGM (dexcom_v3, automatic) and from HealthKit
--    (a manual entry, app). The team has no timeseries priorities at Junction, so the default rule
--    decides: the CGM. Then the team ranks HealthKit first for glucose alone.
SELECT jsonb_array_length(junction_api('PATCH', '/v2/team/source/priorities', NULL,
         '{"timeseries": []}')) > 0 AS patched;
SELECT junction_sync_source_priorities() > 0 AS synced;
BEGIN;
SELECT pg_temp.send(jsonb_build_array(
  jsonb_build_array('daily.data.glucose.created', :'eve', pg_temp.grp('dexcom_v3', 'automatic', 'mmol/L',
    '[["2026-11-05T08:00:00+00:00", 0, 5.5, 0], ["2026-11-05T08:05:00+00:00", 0, 6.5, 0]]')),
  jsonb_build_array('daily.data.glucose.created', :'eve', pg_temp.grp('apple_health_kit', 'app', 'mmol/L',
    '[["2026-11-05T12:00:00+00:00", 0, 7.4, 0]]')))) AS handled;
COMMIT;
SELECT count(*) AS timeseries_priorities FROM junction.source_priorities
WHERE resource IN ('glucose', 'timeseries');
SELECT junction.source_priority('glucose', 'timeseries', 'dexcom_v3', 'automatic') AS dexcom,
       junction.source_priority('glucose', 'timeseries', 'apple_health_kit', 'app') AS healthkit;
SELECT * FROM pg_temp.days(:'eve');
INSERT INTO junction.source_priorities (resource, provider, source_type, priority)
VALUES ('glucose', 'apple_health_kit', 'app', -1);
SELECT junction_rebuild_daily(:'eve') > 0 AS rebuilt;
SELECT * FROM pg_temp.days(:'eve');
DELETE FROM junction.source_priorities WHERE origin = 'team';
SELECT junction_rebuild_daily() > 0 AS rebuilt;

-- Workouts and body: counts, durations, the newest weigh-in.
BEGIN;
SELECT pg_temp.send(jsonb_build_array(
  jsonb_build_array('daily.data.workouts.created', :'eve', jsonb_build_object(
    'id', '0190b2a0-5555-7000-8000-000000000001', 'user_id', :'eve', 'calendar_date', '2026-11-05',
    'time_start', '2026-11-05T07:00:00+00:00', 'time_end', '2026-11-05T07:45:00+00:00',
    'sport', jsonb_build_object('id', 1, 'name', 'Running', 'slug', 'running'),
    'source', jsonb_build_object('provider', 'garmin', 'type', 'watch'), 'updated_at', '2026-11-05T08:00:00+00:00')),
  jsonb_build_array('daily.data.workouts.created', :'eve', jsonb_build_object(
    'id', '0190b2a0-5555-7000-8000-000000000002', 'user_id', :'eve', 'calendar_date', '2026-11-05',
    'time_start', '2026-11-05T18:00:00+00:00', 'time_end', '2026-11-05T18:30:00+00:00',
    'sport', jsonb_build_object('id', 2, 'name', 'Cycling', 'slug', 'cycling'),
    'source', jsonb_build_object('provider', 'garmin', 'type', 'watch'), 'updated_at', '2026-11-05T19:00:00+00:00')),
  jsonb_build_array('daily.data.body.created', :'eve', jsonb_build_object(
    'id', '0190b2a0-5555-7000-8000-000000000003', 'user_id', :'eve', 'calendar_date', '2026-11-05',
    'weight', 70.2, 'fat', 21.5,
    'source', jsonb_build_object('provider', 'withings', 'type', 'scale'), 'updated_at', '2026-11-05T07:00:00+00:00')),
  jsonb_build_array('daily.data.body.created', :'eve', jsonb_build_object(
    'id', '0190b2a0-5555-7000-8000-000000000004', 'user_id', :'eve', 'calendar_date', '2026-11-05',
    'weight', 69.8,
    'source', jsonb_build_object('provider', 'withings', 'type', 'scale'), 'updated_at', '2026-11-05T21:00:00+00:00')))) AS handled;
COMMIT;
SELECT metric, value, unit, provider, candidates FROM pg_temp.days(:'eve', '{workout_count,workout_duration,weight,body_fat}');

-- 7. Vitals, labs and typed timeseries. Blood pressure: two numbers per sample (systolic and
--    diastolic, the day's means), a cuff before a reading typed into an app; a reading corrected
--    later moves both. Cholesterol: the sample's type says which lipid. IgE and IgG: per
--    allergen; the day's highest. Stand hours: the stood ones only. Workout duration samples
--    (minutes) sum to seconds, as the workouts summary's.
\set gus '0190b2a0-0000-7000-8000-0000000da007'
CREATE FUNCTION pg_temp.grpx(provider text, source_type text, samples jsonb) RETURNS jsonb
LANGUAGE sql AS $$
  SELECT jsonb_build_object('source', jsonb_build_object('provider', provider, 'type', source_type), 'data', samples)
$$;
BEGIN;
SELECT pg_temp.send(jsonb_build_array(
  jsonb_build_array('daily.data.blood_pressure.created', :'gus', pg_temp.grpx('withings', 'cuff',
    '[{"timestamp": "2026-11-07T07:00:00+00:00", "systolic": 120, "diastolic": 80, "unit": "mmHg", "timezone_offset": 3600},
      {"timestamp": "2026-11-07T19:00:00+00:00", "systolic": 130, "diastolic": 84, "unit": "mmHg", "timezone_offset": 3600}]')),
  jsonb_build_array('daily.data.blood_pressure.created', :'gus', pg_temp.grpx('apple_health_kit', 'app',
    '[{"timestamp": "2026-11-07T12:00:00+00:00", "systolic": 150, "diastolic": 95, "unit": "mmHg", "timezone_offset": 3600},
      {"timestamp": "2026-11-08T12:00:00+00:00", "systolic": 118, "unit": "mmHg", "timezone_offset": 3600}]')),
  jsonb_build_array('daily.data.cholesterol.created', :'gus', pg_temp.grpx('apple_health_kit', 'lab',
    '[{"timestamp": "2026-11-07T09:00:00+00:00", "type": "total", "value": 5.2, "unit": "mmol/L", "timezone_offset": 3600},
      {"timestamp": "2026-11-07T09:00:00+00:00", "type": "ldl", "value": 3.1, "unit": "mmol/L", "timezone_offset": 3600},
      {"timestamp": "2026-11-07T09:30:00+00:00", "type": "ldl", "value": 3.3, "unit": "mmol/L", "timezone_offset": 3600},
      {"timestamp": "2026-11-07T09:00:00+00:00", "type": "hdl", "value": 1.4, "unit": "mmol/L", "timezone_offset": 3600},
      {"timestamp": "2026-11-07T09:00:00+00:00", "type": "triglycerides", "value": 1.5, "unit": "mmol/L", "timezone_offset": 3600}]')),
  jsonb_build_array('daily.data.ige.created', :'gus', pg_temp.grpx('apple_health_kit', 'lab',
    '[{"timestamp": "2026-11-07T09:00:00+00:00", "type": "peanut", "value": 2.5, "unit": "FSU", "timezone_offset": 3600},
      {"timestamp": "2026-11-07T09:00:00+00:00", "type": "egg_white", "value": 0.4, "unit": "FSU", "timezone_offset": 3600}]')),
  jsonb_build_array('daily.data.igg.created', :'gus', pg_temp.grpx('apple_health_kit', 'lab',
    '[{"timestamp": "2026-11-07T09:00:00+00:00", "type": "peanut", "value": 1.0, "unit": "FSU", "timezone_offset": 3600}]')),
  jsonb_build_array('daily.data.stand_hour.created', :'gus', pg_temp.grpx('apple_health_kit', 'watch',
    (SELECT jsonb_agg(jsonb_build_object('start', to_char(t, 'YYYY-MM-DD"T"HH24:MI:SS"+00:00"'),
                                         'timestamp', to_char(t, 'YYYY-MM-DD"T"HH24:MI:SS"+00:00"'),
                                         'end', to_char(t + interval '1 hour', 'YYYY-MM-DD"T"HH24:MI:SS"+00:00"'),
                                         'type', CASE WHEN h IN (2, 4) THEN 'idle' ELSE 'stood' END,
                                         'value', 1, 'unit', 'count', 'timezone_offset', 3600))
     FROM generate_series(1, 5) AS h, LATERAL (SELECT '2026-11-07 08:00'::timestamp + make_interval(hours => h) AS t) AS x))),
  jsonb_build_array('daily.data.workout_duration.created', :'gus', pg_temp.grpx('garmin', 'watch',
    '[{"start": "2026-11-07T06:00:00+00:00", "timestamp": "2026-11-07T06:00:00+00:00", "end": "2026-11-07T06:45:00+00:00",
       "value": 45, "unit": "min", "intensity": "high", "timezone_offset": 3600},
      {"start": "2026-11-07T17:00:00+00:00", "timestamp": "2026-11-07T17:00:00+00:00", "end": "2026-11-07T17:15:00+00:00",
       "value": 15, "unit": "min", "intensity": "low", "timezone_offset": 3600}]')))) AS handled;
COMMIT;
SELECT * FROM pg_temp.days(:'gus');
-- the evening reading corrected (the same sample, resent with other numbers): both means move
BEGIN;
SELECT pg_temp.send(jsonb_build_array(
  jsonb_build_array('daily.data.blood_pressure.updated', :'gus', pg_temp.grpx('withings', 'cuff',
    '[{"timestamp": "2026-11-07T19:00:00+00:00", "systolic": 140, "diastolic": 90, "unit": "mmHg", "timezone_offset": 3600}]')))) AS handled;
COMMIT;
SELECT metric, value, provider, candidates FROM pg_temp.days(:'gus', '{blood_pressure_systolic,blood_pressure_diastolic}');
-- (a sample has no version: the latest received wins, Junction's rule, so the replays below, which
-- reorder deliveries, leave this correction out)
DELETE FROM daily_sent WHERE body LIKE '%daily.data.blood_pressure.updated%';
-- the hours behind them: one row per part of each sample's number
SELECT resource, part, provider, source_type, n, sum FROM junction.daily_parts
WHERE user_id = :'gus' AND resource IN ('blood_pressure', 'cholesterol') ORDER BY 1, 2, 3, hour;

-- one row per user and day, one column per metric
SELECT calendar_date, steps, sleep_total, sleep_score, weight, body_fat, workout_count, glucose_average
FROM junction.daily_wide WHERE user_id IN (:'ben', :'eve') ORDER BY user_id, calendar_date;
SELECT calendar_date, blood_pressure_systolic, blood_pressure_diastolic, cholesterol_ldl, triglycerides, ige_max,
       stand_hour, workout_duration
FROM junction.daily_wide WHERE user_id = :'gus' ORDER BY calendar_date;
-- every metric of the registry has its column, and every column its metric
SELECT count(DISTINCT m.metric) AS metrics,
       (SELECT count(*) FROM pg_attribute AS a WHERE a.attrelid = 'junction.daily_wide'::regclass AND a.attnum > 0
          AND a.attname NOT IN ('user_id', 'calendar_date', 'updated_at')) AS metric_columns
FROM junction.daily_metrics AS m;
SELECT coalesce(m.metric, a.attname::text) AS missing, m.metric IS NULL AS column_without_metric
FROM (SELECT DISTINCT metric FROM junction.daily_metrics) AS m
FULL JOIN (SELECT a.attname FROM pg_attribute AS a WHERE a.attrelid = 'junction.daily_wide'::regclass
             AND a.attnum > 0 AND a.attname NOT IN ('user_id', 'calendar_date', 'updated_at')) AS a
  ON a.attname = m.metric
WHERE m.metric IS NULL OR a.attname IS NULL;
-- the timeseries left out: text (note) and a waveform (electrocardiogram_voltage)
SELECT r.name FROM junction.resources AS r
WHERE r.kind = 'timeseries' AND NOT EXISTS (SELECT FROM junction.daily_metrics AS m WHERE m.resource = r.name)
ORDER BY 1;

-- junction.daily = off: the upserts leave junction.daily alone; a rebuild catches up.
SET junction.daily = off;
BEGIN;
SELECT pg_temp.send(jsonb_build_array(
  jsonb_build_array('daily.data.steps.created', :'dan', pg_temp.grp('oura', 'ring', 'count',
    '[["2026-11-02T01:00:00+00:00", 30, 999, 46800]]')))) AS handled;
COMMIT;
SELECT value FROM pg_temp.days(:'dan', '{steps}') WHERE calendar_date = '2026-11-02';
RESET junction.daily;
SELECT junction_rebuild_daily(:'dan') > 0 AS rebuilt;
SELECT value FROM pg_temp.days(:'dan', '{steps}') WHERE calendar_date = '2026-11-02';

-- junction.daily_defer = on (what the inbox workers run with): the upserts queue the hours and
-- days; junction._daily_flush recomputes them, the same values as in place. (In one transaction,
-- so that the worker, which flushes the queue too, never sees these rows.)
BEGIN;
SET LOCAL junction.daily_defer = on;
SELECT pg_temp.send(jsonb_build_array(
  jsonb_build_array('daily.data.steps.created', :'dan', pg_temp.grp('oura', 'ring', 'count',
    '[["2026-11-02T02:00:00+00:00", 30, 1, 46800]]')),
  jsonb_build_array('daily.data.activity.created', :'dan', jsonb_build_object(
    'id', '0190b2a0-4444-7000-8000-000000000001', 'user_id', :'dan', 'calendar_date', '2026-11-02',
    'steps', 1500, 'source', jsonb_build_object('provider', 'garmin', 'type', 'watch'),
    'updated_at', '2026-11-02T12:00:00+00:00')))) AS handled;
SELECT (SELECT count(*) FROM junction.daily_pending_hours WHERE user_id = :'dan') AS hours_queued,
       (SELECT count(*) FROM junction.daily_pending_days WHERE user_id = :'dan') AS days_queued;
SELECT metric, value, provider, candidates FROM pg_temp.days(:'dan', '{steps}') WHERE calendar_date = '2026-11-02';
SELECT junction._daily_flush() AS flushed;
SELECT metric, value, provider, candidates FROM pg_temp.days(:'dan', '{steps}') WHERE calendar_date = '2026-11-02';
SELECT count(*) AS still_queued FROM junction.daily_pending_hours WHERE user_id = :'dan';
COMMIT;
-- the worker does it by itself: a delivery committed to the inbox is drained, queued and its day
-- recomputed (deadline 30 s)
\set fay '0190b2a0-0000-7000-8000-0000000da006'
INSERT INTO junction.inbox (headers, body)
SELECT jsonb_build_object('svix-id', 'msg_daily_worker', 'svix-timestamp', extract(epoch FROM now())::bigint::text,
         'svix-signature', junction_sign_webhook(current_setting('daily.secret'), 'msg_daily_worker',
                                                 extract(epoch FROM now())::bigint, b.body)), b.body
FROM (SELECT jsonb_build_object('event_type', 'daily.data.heartrate.created', 'user_id', :'fay',
             'data', pg_temp.grp('polar', 'chest_strap', 'bpm', '[["2026-11-06T07:00:00+00:00", 0, 140, 0],
                                                                  ["2026-11-06T07:01:00+00:00", 0, 150, 0]]'))::text AS body) AS b;
INSERT INTO daily_sent (svix_id, body) SELECT 'msg_daily_worker', body FROM junction.inbox
WHERE headers ->> 'svix-id' = 'msg_daily_worker';
DO $$
BEGIN
  FOR i IN 1..300 LOOP
    EXIT WHEN EXISTS (SELECT FROM junction.daily WHERE user_id = '0190b2a0-0000-7000-8000-0000000da006');
    PERFORM pg_sleep(0.1);
  END LOOP;
END $$;
SELECT status FROM junction.inbox WHERE headers ->> 'svix-id' = 'msg_daily_worker';
SELECT * FROM pg_temp.days(:'fay');

-- junction_sync (and the backfill queue, which loads through the same function) maintains
-- junction.daily too: after a sync the stored days equal a rebuild's.
SELECT junction_user_create('daily-sync') ->> 'user_id' AS syncu \gset
SELECT sum(rows_loaded) > 0 AS loaded
FROM junction_sync(:'syncu', '{activity,sleep,steps,blood_pressure,cholesterol,ige,stand_hour,workout_duration}',
                   '2025-06-02', '2025-06-03 23:59:59');
CREATE TEMP TABLE daily_after_sync AS
SELECT calendar_date, metric, value, provider, source_type, resource, candidates
FROM junction.daily WHERE user_id = :'syncu';
SELECT count(*) > 0 AS days, count(DISTINCT metric) > 5 AS metrics FROM daily_after_sync;
-- the mock's resources of several parts: each of their metrics has its days
SELECT metric, count(*) > 0 AS days FROM daily_after_sync
WHERE resource IN ('blood_pressure', 'cholesterol', 'ige', 'stand_hour', 'workout_duration')
GROUP BY 1 ORDER BY 1;
SELECT junction_rebuild_daily(:'syncu') > 0 AS rebuilt;
SELECT count(*) AS differences FROM (
  (SELECT * FROM daily_after_sync EXCEPT ALL
   SELECT calendar_date, metric, value, provider, source_type, resource, candidates FROM junction.daily WHERE user_id = :'syncu')
  UNION ALL
  (SELECT calendar_date, metric, value, provider, source_type, resource, candidates FROM junction.daily WHERE user_id = :'syncu'
   EXCEPT ALL SELECT * FROM daily_after_sync)) AS x;
-- a backfill job of one resource, run by hand as the worker would (claimed: running)
INSERT INTO junction.backfills (user_id, provider, resource, start_date, end_date, completed_at, received_seq, data, fetch_status)
VALUES (:'syncu', 'withings', 'body', '2025-06-02', '2025-06-03 23:59:59', now(), junction._next_received_seq(), '{}', 'running');
SELECT junction._backfill_run('range', :'syncu', 'withings', 'body', '2025-06-02', '2025-06-03 23:59:59', NULL) > 0 AS loaded;
SELECT (SELECT count(DISTINCT calendar_date) FROM junction.body WHERE user_id = :'syncu' AND weight IS NOT NULL) AS body_days,
       (SELECT count(*) FROM junction.daily WHERE user_id = :'syncu' AND metric = 'weight') AS weight_days;
DELETE FROM junction.backfills WHERE user_id = :'syncu';
DELETE FROM junction.daily WHERE user_id = :'syncu';

-- Order independence: every message above (but the sync's), shuffled with duplicates in batches
-- of 3, and reversed and sent twice in batches of 50, leaves the same junction.daily as in order.
CREATE TEMP TABLE daily_runs (run text, md5 text, nrows bigint);
CREATE FUNCTION pg_temp.replay(run text, order_sql text, size integer) RETURNS void LANGUAGE plpgsql AS $$
DECLARE ts bigint := extract(epoch FROM now())::bigint; n integer;
BEGIN
  TRUNCATE junction.daily, junction.daily_parts, junction.samples, junction.activity, junction.sleep, junction.body,
           junction.workouts, junction.events, junction.inbox;
  EXECUTE format($q$
    INSERT INTO junction.inbox (headers, body)
    SELECT jsonb_build_object('svix-id', svix_id, 'svix-timestamp', %s::text,
             'svix-signature', junction_sign_webhook(current_setting('daily.secret'), svix_id, %s, body)), body
    FROM (%s) AS x$q$, ts, ts, order_sql);
  LOOP
    n := junction_process_inbox(size);
    EXIT WHEN n = 0;
  END LOOP;
  INSERT INTO daily_runs
  SELECT run, md5(string_agg(format('%s|%s|%s|%s|%s|%s|%s|%s|%s', d.user_id, d.calendar_date, d.metric,
                                    round(d.value::numeric, 6), d.unit, d.provider, d.source_type, d.resource,
                                    d.candidates), ',' ORDER BY d.user_id, d.calendar_date, d.metric)), count(*)
  FROM junction.daily AS d;
END $$;
BEGIN;
SELECT pg_temp.replay('in order', 'SELECT svix_id, body FROM daily_sent ORDER BY n', 100);
COMMIT;
BEGIN;
SELECT setseed(0.12);
SELECT pg_temp.replay('shuffled + duplicates',
  'SELECT svix_id, body FROM (SELECT svix_id, body, random() AS pos FROM daily_sent
                              UNION ALL SELECT svix_id, body, random() + 0.3 FROM daily_sent WHERE random() < 0.5) y
   ORDER BY pos', 3);
COMMIT;
BEGIN;
SELECT pg_temp.replay('reversed, twice', 'SELECT svix_id, body FROM daily_sent, generate_series(1, 2) ORDER BY n DESC', 50);
COMMIT;
BEGIN;
SELECT pg_temp.replay('one at a time, reversed', 'SELECT svix_id, body FROM daily_sent ORDER BY n DESC', 1);
COMMIT;
SELECT run, nrows, md5 = first_value(md5) OVER (ORDER BY run = 'in order' DESC) AS same_as_in_order
FROM daily_runs ORDER BY run;
-- and a rebuild from the typed tables gives the same again
SELECT junction_rebuild_daily() > 0 AS rebuilt;
SELECT md5(string_agg(format('%s|%s|%s|%s|%s|%s|%s|%s|%s', d.user_id, d.calendar_date, d.metric,
                             round(d.value::numeric, 6), d.unit, d.provider, d.source_type, d.resource,
                             d.candidates), ',' ORDER BY d.user_id, d.calendar_date, d.metric))
       = (SELECT md5 FROM daily_runs WHERE run = 'in order') AS rebuild_same
FROM junction.daily AS d;

-- Many users and days: a year of one metric over every user is an index scan (plain or bitmap,
-- whichever the statistics of the moment favour), on the index made for it.
CREATE FUNCTION pg_temp.scan_of(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  line text;
  found text := 'no index';
BEGIN
  FOR line IN EXECUTE 'EXPLAIN (COSTS OFF) ' || q LOOP
    IF line LIKE '%Seq Scan%' THEN
      RETURN 'sequential scan';
    END IF;
    IF line ~ 'Index Scan (using|on) ' THEN
      found := 'index ' || substring(line FROM 'Index Scan (?:using|on) (\w+)');
    END IF;
  END LOOP;
  RETURN found;
END $$;
SET enable_seqscan = off;
SELECT pg_temp.scan_of($q$SELECT user_id, calendar_date, value FROM junction.daily
WHERE metric = 'steps' AND calendar_date BETWEEN '2026-01-01' AND '2026-12-31'$q$) AS one_metric_a_year;
SELECT pg_temp.scan_of(format($q$SELECT calendar_date, metric, value FROM junction.daily
WHERE user_id = %L AND calendar_date BETWEEN '2026-01-01' AND '2026-12-31'$q$, :'ben')) AS one_user_a_year;
RESET enable_seqscan;

-- Float sums in a fixed order. 1e16 + 1 rounds back to 1e16, so (1e16 + 1) - 1e16 = 0 while
-- (-1e16 + 1e16) + 1 = 1: a sum of these terms depends on their order. The rows are written in
-- an order that is not the key's (physically last first), and read with sequential scans, so a
-- sum taken in the order the plan reads gives 1. Taken in key order (time within an hour, hour
-- within a day) it is 0 whatever the order of writing and reading.
\set fu '0190b2a0-0000-7000-8000-00000000f10a'
INSERT INTO junction.samples (user_id, resource, provider, time, value, received_seq)
VALUES (:'fu', 'steps', 'fitbit', '2026-03-01 08:20', -1e16, 1),
       (:'fu', 'steps', 'fitbit', '2026-03-01 08:00', 1e16, 2),
       (:'fu', 'steps', 'fitbit', '2026-03-01 08:10', 1, 3),
       (:'fu', 'steps', 'fitbit', '2026-03-01 11:00', -1e16, 4),
       (:'fu', 'steps', 'fitbit', '2026-03-01 09:00', 1e16, 5),
       (:'fu', 'steps', 'fitbit', '2026-03-01 10:00', 1, 6);
SET enable_indexscan = off;
SET enable_bitmapscan = off;
SELECT sum(value) AS read_order_sum FROM junction.samples WHERE user_id = :'fu' AND time < '2026-03-01 09:00';
-- the hours one at a time, in an order that is not theirs: junction.daily_parts' rows too are
-- written out of order
SELECT cardinality(junction._daily_parts_refresh(ARRAY[ROW(:'fu', 'steps', h)::junction.daily_hour])) AS days
FROM unnest(ARRAY['2026-03-01 08:00', '2026-03-01 09:00', '2026-03-01 11:00', '2026-03-01 10:00']::timestamptz[]) AS h;
SELECT hour, n, sum FROM junction.daily_parts WHERE user_id = :'fu' ORDER BY hour;
SELECT sum(sum) AS read_order_day_sum FROM junction.daily_parts WHERE user_id = :'fu' AND hour >= '2026-03-01 09:00';
SELECT junction._daily_refresh(ARRAY[ROW(:'fu', '2026-03-01', 'steps')::junction.daily_key], true) AS written;
SELECT metric, value, candidates FROM junction.daily WHERE user_id = :'fu';
-- the rebuild computes the same
SELECT junction_rebuild_daily(:'fu') > 0 AS rebuilt;
SELECT hour, n, sum FROM junction.daily_parts WHERE user_id = :'fu' ORDER BY hour;
SELECT metric, value FROM junction.daily WHERE user_id = :'fu';
RESET enable_indexscan;
RESET enable_bitmapscan;
DELETE FROM junction.samples WHERE user_id = :'fu';
SELECT junction_rebuild_daily(:'fu') AS rebuilt_without_samples;

-- A deferred upsert that touches an hour or day already queued adds a row of its own for it
-- (the queue has no unique key): a flush in another session cannot see that row before the
-- upsert commits, so it cannot take the key, recompute it without the upsert's rows and drop it,
-- as it could when a queued key was passed over (ON CONFLICT DO NOTHING). A flush takes both rows
-- and recomputes the key once. In one transaction (the queue is the workers' too).
BEGIN;
SET LOCAL junction.daily_defer = on;
INSERT INTO junction.daily_pending_hours (user_id, resource, hour) VALUES (:'fu', 'steps', '2026-03-01 08:00');
INSERT INTO junction.daily_pending_days (user_id, calendar_date, resource) VALUES (:'fu', '2026-03-01', 'sleep');
SELECT junction._daily_touch(ARRAY[ROW(:'fu', 'steps', '2026-03-01 08:00')::junction.daily_hour,
                                   ROW(:'fu', 'steps', '2026-03-01 08:00')::junction.daily_hour],
                             ARRAY[ROW(:'fu', '2026-03-01', 'sleep')::junction.daily_key]) AS touched;
SELECT (SELECT count(*) FROM junction.daily_pending_hours WHERE user_id = :'fu') AS hour_rows,
       (SELECT count(*) FROM junction.daily_pending_days WHERE user_id = :'fu') AS day_rows;
SELECT junction._daily_flush() >= 4 AS flushed;
SELECT (SELECT count(*) FROM junction.daily_pending_hours WHERE user_id = :'fu') AS hour_rows_left,
       (SELECT count(*) FROM junction.daily_pending_days WHERE user_id = :'fu') AS day_rows_left;
ROLLBACK;

-- clean up
TRUNCATE junction.daily, junction.daily_parts, junction.samples, junction.activity, junction.sleep, junction.body,
         junction.workouts, junction.events, junction.inbox, junction.source_priorities;
DROP TABLE daily_sent;
DELETE FROM junction.webhook_secrets WHERE secret = :'secret';
SELECT junction_api('POST', '/_mock/reset') ->> 'ok' AS mock_reset;
