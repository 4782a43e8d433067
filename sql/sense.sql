-- sense: Junction Sense continuous queries (issue 11). continuous_query.result_table.changed
-- deltas (the documented ContinuousQueryResultTableChanges shape: {query_id, query_slug,
-- data: {column: [values]}}, group key columns group_key.N) upserted into junction.sense_results
-- by (user, query, group key), the later received winning; a registered query's columns typed
-- (checked on arrival, read through its view); the whole result table refetched from the mock.
\getenv mock JUNCTION_MOCK_URL
SET junction.api_base_url = :'mock';
SET junction.api_key = 'sk_us_test_key';
SET junction.http_retries = 0;
INSERT INTO junction.webhook_secrets (secret, description)
VALUES ('whsec_c2Vuc2UtdGVzdC1zZWNyZXQtMDE=', 'sense test secret');
TRUNCATE junction.sense_results, junction.sense_queries;
CREATE FUNCTION pg_temp.deliver(msg_id text, body jsonb) RETURNS bigint
LANGUAGE sql AS $$
  SELECT junction_receive(
           jsonb_build_object(
             'svix-id', msg_id,
             'svix-timestamp', extract(epoch FROM now())::bigint::text,
             'svix-signature', junction_sign_webhook('whsec_c2Vuc2UtdGVzdC1zZWNyZXQtMDE=', msg_id,
                                                     extract(epoch FROM now())::bigint, body::text)),
           body::text)
$$;
CREATE FUNCTION pg_temp.changed(changes jsonb) RETURNS jsonb LANGUAGE sql AS $$
  SELECT jsonb_build_object('event_type', 'continuous_query.result_table.changed',
                            'user_id', '0190b2a0-0000-7000-8000-00000000e5e1', 'client_user_id', 'sense-client',
                            'team_id', 'abda283f-13ca-49dc-93fc-0a66af8a590e', 'data', changes)
$$;
\set u '0190b2a0-0000-7000-8000-00000000e5e1'

-- 1. The documented example: one change set, one row
BEGIN;
SELECT pg_temp.deliver('msg_sense_1', pg_temp.changed('[{"query_id": "4ba57107-aea7-407a-9877-6f1adc80dccd",
  "query_slug": "sleep-analysis-v1",
  "data": {"group_key.0": ["2025-02-17T00:00:00"], "mean.efficiency": [98.22], "mean.sleep_score": [76.75],
           "min.sleep_score": [61.0], "newest.chronotype": ["third"]}}]')) > 0 AS delivered;
SELECT junction_process_inbox() AS handled;
COMMIT;
SELECT status, error FROM junction.inbox WHERE headers ->> 'svix-id' = 'msg_sense_1';
SELECT query_slug, query_id, group_key, data FROM junction.sense_results WHERE user_id = :'u';

-- 2. Deltas: a later event changes one day and adds two (two group key columns here); a second
--    change set of another query in the same event; the later received wins per group key
BEGIN;
SELECT pg_temp.deliver('msg_sense_2', pg_temp.changed('[
  {"query_id": "4ba57107-aea7-407a-9877-6f1adc80dccd", "query_slug": "sleep-analysis-v1",
   "data": {"group_key.0": ["2025-02-17T00:00:00", "2025-02-18T00:00:00", "2025-02-19T00:00:00"],
            "mean.efficiency": [97.0, 91.5, 88.0], "mean.sleep_score": [80.0, 70.25, 66.0],
            "min.sleep_score": [62.0, 55.0, 50.0], "newest.chronotype": ["third", "third", "second"]}},
  {"query_id": "0190b2a4-0000-7000-8000-000000000052", "query_slug": "steps-by-source",
   "data": {"group_key.1": ["oura", "apple_health_kit"], "group_key.0": ["2025-02-17T00:00:00", "2025-02-17T00:00:00"],
            "sum.steps": [8120, 10234]}}]')) > 0 AS delivered;
SELECT junction_process_inbox() AS handled;
COMMIT;
SELECT query_slug, group_key, data ->> 'mean.sleep_score' AS mean_sleep_score, data ->> 'sum.steps' AS steps
FROM junction.sense_results WHERE user_id = :'u' ORDER BY 1, 2;
-- a redelivery (same svix-id) changes nothing; the same rows in one batch keep the later received
BEGIN;
SELECT pg_temp.deliver('msg_sense_1', pg_temp.changed('[{"query_id": "4ba57107-aea7-407a-9877-6f1adc80dccd",
  "query_slug": "sleep-analysis-v1",
  "data": {"group_key.0": ["2025-02-17T00:00:00"], "mean.efficiency": [98.22], "mean.sleep_score": [76.75],
           "min.sleep_score": [61.0], "newest.chronotype": ["third"]}}]')) > 0 AS delivered;
SELECT pg_temp.deliver('msg_sense_3', pg_temp.changed('[{"query_id": "4ba57107-aea7-407a-9877-6f1adc80dccd",
  "query_slug": "sleep-analysis-v1", "data": {"group_key.0": ["2025-02-19T00:00:00"], "mean.sleep_score": [60.0]}}]')) > 0 AS delivered;
SELECT pg_temp.deliver('msg_sense_4', pg_temp.changed('[{"query_id": "4ba57107-aea7-407a-9877-6f1adc80dccd",
  "query_slug": "sleep-analysis-v1", "data": {"group_key.0": ["2025-02-19T00:00:00"], "mean.sleep_score": [61.5]}}]')) > 0 AS delivered;
SELECT junction_process_inbox() AS handled;
COMMIT;
SELECT group_key, data FROM junction.sense_results
WHERE user_id = :'u' AND query_slug = 'sleep-analysis-v1' ORDER BY group_key;

-- 3. Known columns: registered types are checked on arrival and read through a typed view
SELECT junction_sense_define('sleep-analysis-v1',
         '{"group_key.0": "timestamp", "mean.sleep_score": "double precision", "newest.chronotype": "text"}') AS view;
SELECT user_id = :'u' AS u, "group_key.0", "mean.sleep_score", "newest.chronotype", data ? 'mean.efficiency' AS untyped_kept
FROM junction.sense_sleep_analysis_v1 ORDER BY 2;
SELECT pg_typeof("group_key.0") AS group_key_type, pg_typeof("mean.sleep_score") AS score_type
FROM junction.sense_sleep_analysis_v1 LIMIT 1;
-- a value of the wrong type is quarantined, naming the query, the column and the row
BEGIN;
SELECT pg_temp.deliver('msg_sense_bad_type', pg_temp.changed('[{"query_id": "4ba57107-aea7-407a-9877-6f1adc80dccd",
  "query_slug": "sleep-analysis-v1", "data": {"group_key.0": ["2025-02-20T00:00:00", "2025-02-21T00:00:00"],
  "mean.sleep_score": [70, "high"]}}]')) > 0 AS delivered;
SELECT junction_process_inbox() AS handled;
COMMIT;
-- a query without group_key.N columns needs its group key registered; ragged columns, a data
-- object instead of an array and a bad query id are quarantined; an empty change set is fine
BEGIN;
SELECT pg_temp.deliver('msg_sense_no_key', pg_temp.changed('[{"query_id": "0190b2a4-0000-7000-8000-000000000053",
  "query_slug": "custom", "data": {"day": ["2025-02-17"], "n": [3]}}]')) > 0 AS delivered;
SELECT pg_temp.deliver('msg_sense_ragged', pg_temp.changed('[{"query_id": "0190b2a4-0000-7000-8000-000000000053",
  "query_slug": "ragged", "data": {"group_key.0": ["2025-02-17", "2025-02-18"], "n": [3]}}]')) > 0 AS delivered;
SELECT pg_temp.deliver('msg_sense_object', jsonb_set(pg_temp.changed('[]'), '{data}', '{"query_slug": "x"}')) > 0 AS delivered;
SELECT pg_temp.deliver('msg_sense_empty', pg_temp.changed('[{"query_id": "0190b2a4-0000-7000-8000-000000000054",
  "query_slug": "nothing-new", "data": {}}]')) > 0 AS delivered;
SELECT pg_temp.deliver('msg_sense_bad_id', pg_temp.changed('[{"query_id": 7, "query_slug": "x", "data": {"group_key.0": []}}]')) > 0 AS delivered;
SELECT junction_process_inbox() AS handled;
COMMIT;
SELECT substr(headers ->> 'svix-id', 11) AS delivery, status, sqlstate, error FROM junction.inbox
WHERE headers ->> 'svix-id' IN ('msg_sense_bad_type', 'msg_sense_no_key', 'msg_sense_ragged', 'msg_sense_object', 'msg_sense_bad_id',
                               'msg_sense_empty')
ORDER BY 1;
SELECT junction_sense_define('custom', '{"day": "date", "n": "integer"}', ARRAY['day']) AS view;
BEGIN;
SELECT junction_replay(ARRAY(SELECT id FROM junction.inbox WHERE headers ->> 'svix-id' = 'msg_sense_no_key')) AS replayed;
SELECT junction_process_inbox() AS handled;
COMMIT;
SELECT status FROM junction.inbox WHERE headers ->> 'svix-id' = 'msg_sense_no_key';
SELECT day, n FROM junction.sense_custom;
SELECT expect_error($$SELECT junction_sense_define('custom', '{"n": "no_such_type"}')$$) AS bad_type;

-- 4. The whole result table, refetched from the API into the same table: rows the table no
--    longer has are removed, the others replaced
SELECT junction_api('POST', '/_mock/sense', NULL, jsonb_build_object('user_id', :'u', 'query', 'sleep-analysis-v1',
  'table', '{"group_key.0": ["2025-02-18T00:00:00", "2025-02-19T00:00:00", "2025-02-20T00:00:00"],
             "mean.sleep_score": [71.0, 62.0, 75.5], "newest.chronotype": ["third", "second", "second"]}'::jsonb)) AS mock;
SELECT jsonb_array_length(junction_sense_result_table(:'u', 'sleep-analysis-v1') -> 'group_key.0') AS rows_in_api;
SELECT junction_sync_sense(:'u', 'sleep-analysis-v1') AS loaded;
SELECT "group_key.0", "mean.sleep_score", "newest.chronotype" FROM junction.sense_sleep_analysis_v1 ORDER BY 1;
SELECT count(*) AS steps_rows_untouched FROM junction.sense_results WHERE user_id = :'u' AND query_slug = 'steps-by-source';
SELECT state FROM (SELECT split_part(expect_error($$SELECT junction_sync_sense('0190b2a0-0000-7000-8000-00000000e5e1', 'unknown-query')$$), ':', 1) AS state) AS e;
RESET junction.http_retries;
