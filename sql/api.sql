-- api: the Junction REST API from SQL, against the mock Junction API (test/mock_junction.py,
-- URL in $JUNCTION_MOCK_URL): reads and paging, HTTP failure handling, users, connections,
-- introspection, junction_sync (webhook and API rows identical), the backfill queue (by hand and
-- by the worker), privileges, pg_cron. Runs after setup, in the database the worker serves.
\getenv mock JUNCTION_MOCK_URL
SET junction.api_base_url = :'mock';
SET junction.api_key = 'sk_us_test_key';
SET timezone = 'UTC';
SET datestyle = 'ISO, YMD';
\set secret 'whsec_anVuY3Rpb24tYXBpLXN5bmMtc2VjcmV0'
INSERT INTO junction.webhook_secrets (secret, description) VALUES (:'secret', 'api test secret')
ON CONFLICT DO NOTHING;
-- The queues and connections start empty (earlier tests may have left rows in them).
TRUNCATE junction.connections, junction.backfills, junction.workout_streams;

-- Helpers. The mock's control endpoints (/_mock/...) are reachable through junction_api.
CREATE FUNCTION pg_temp.mock(method text, what text, body jsonb DEFAULT NULL) RETURNS jsonb
LANGUAGE sql AS $$ SELECT junction_api(method, '/_mock/' || what, NULL, body) $$;
-- requests the mock logged since the last pg_temp.mock('DELETE', 'requests') under a path prefix
CREATE FUNCTION pg_temp.requests(prefix text) RETURNS bigint
LANGUAGE sql AS $$
  SELECT jsonb_array_length(junction_api('GET', '/_mock/requests', jsonb_build_object('path_prefix', prefix)))
$$;
-- queue scripted responses for a path prefix
CREATE FUNCTION pg_temp.fault(prefix text, responses jsonb) RETURNS void
LANGUAGE sql AS $$
  SELECT pg_temp.mock('POST', 'faults', jsonb_build_object('path_prefix', prefix, 'responses', responses));
  SELECT NULL::void
$$;
-- run a statement; its SQLSTATE, message, detail and hint, whether any of them (or the context)
-- shows the API key, and how long it took
CREATE FUNCTION pg_temp.try(q text, OUT state text, OUT message text, OUT detail text, OUT hint text,
                            OUT key_shown boolean, OUT seconds double precision)
LANGUAGE plpgsql AS $$
DECLARE
    t0  timestamptz := clock_timestamp();
    ctx text;
BEGIN
    EXECUTE q;
    state := 'ok';
    key_shown := false;
    seconds := extract(epoch FROM clock_timestamp() - t0);
EXCEPTION WHEN OTHERS OR query_canceled THEN
    GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, message = MESSAGE_TEXT,
                            detail = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT,
                            ctx = PG_EXCEPTION_CONTEXT;
    seconds := extract(epoch FROM clock_timestamp() - t0);
    key_shown := position('sk_us_' IN concat_ws('|', message, detail, hint, ctx)) > 0;
END
$$;
-- one signed webhook delivery, as a receiver stores it
CREATE FUNCTION pg_temp.deliver(msg_id text, body text) RETURNS bigint
LANGUAGE sql AS $$
  SELECT junction_receive(
           jsonb_build_object(
             'svix-id', msg_id,
             'svix-timestamp', extract(epoch FROM now())::bigint::text,
             'svix-signature', junction_sign_webhook('whsec_anVuY3Rpb24tYXBpLXN5bmMtc2VjcmV0', msg_id,
                                                     extract(epoch FROM now())::bigint, body)),
           body)
$$;
SELECT pg_temp.mock('POST', 'reset');

-- ---------------------------------------------------------------------------------------------
-- 1. Users: create is idempotent, resolve, get, delete, list every page.
-- ---------------------------------------------------------------------------------------------
SELECT pg_temp.mock('DELETE', 'requests');
SELECT junction_user_create('api-alice', fallback_time_zone => 'Europe/Paris') ->> 'user_id' AS alice \gset
SELECT :'alice' AS alice;
-- the second create answers 400 "already exists" at Junction and returns the same user
SELECT u ->> 'user_id' AS user_id, u ->> 'client_user_id' AS client_user_id,
       u #>> '{fallback_time_zone,id}' AS tz
FROM junction_user_create('api-alice') AS u;
SELECT x ->> 'method' AS method, x ->> 'path' AS path, x ->> 'status' AS status
FROM jsonb_array_elements(junction_api('GET', '/_mock/requests')) AS x ORDER BY (x ->> 'seq')::int;
-- client ids are percent-encoded in paths: slashes, dots, spaces, non-ASCII
SELECT (junction_user_create('api/bob ü ../x?y') ->> 'user_id')
     = (junction_user_resolve('api/bob ü ../x?y') ->> 'user_id') AS resolved_same;
SELECT junction_user(:'alice') ->> 'client_user_id' AS client_user_id;
SELECT junction_user_create('api-doomed') ->> 'user_id' AS doomed \gset
SELECT junction_user_delete(:'doomed');
SELECT state, message FROM pg_temp.try(format('SELECT junction_user(%L)', :'doomed'));
SELECT state, message FROM pg_temp.try($$SELECT junction_user_resolve('nobody')$$);
SELECT state, message FROM pg_temp.try($$SELECT junction_user_create('')$$);

-- ---------------------------------------------------------------------------------------------
-- 2. Connections and introspection (before the bulk users, so team-wide reads stay small).
-- ---------------------------------------------------------------------------------------------
SELECT c ->> 'slug' AS slug, c ->> 'status' AS status, c #>> '{error_details,error_type}' AS error_type
FROM junction_connections(:'alice') AS c ORDER BY 1;
SELECT junction_connection_deregister(:'alice', 'garmin');
SELECT state, message FROM pg_temp.try(format('SELECT junction_connection_deregister(%L, %L)', :'alice', 'garmin'));
SELECT j ->> 'success' AS success, j -> 'refreshed_sources' AS refreshed, j -> 'failed_sources' AS failed
FROM junction_user_refresh(:'alice') AS j;
-- introspection follows next_cursor (the mock pages 2 user/provider pairs at a time) and
-- merges one user's providers from every page into one row
SELECT pg_temp.mock('DELETE', 'requests');
SELECT r ->> 'user_id' = :'alice' AS is_alice,
       (SELECT array_agg(k ORDER BY k) FROM jsonb_object_keys(r -> 'provider') AS k) AS providers,
       r #>> '{provider,oura,sleep,last_attempt,status}' AS oura_sleep,
       r #>> '{provider,freestyle_libre,glucose,last_attempt,status}' AS libre_glucose
FROM junction_introspect_resources(:'alice') AS r;
SELECT pg_temp.requests('/v2/introspect/resources') AS pages;
SELECT (SELECT array_agg(k ORDER BY k) FROM jsonb_object_keys(r -> 'provider') AS k) AS providers,
       r #>> '{provider,withings,pulled,weight,status}' AS withings_weight,
       r #> '{provider,apple_health_kit,not_pulled}' AS ahk_not_pulled
FROM junction_introspect_historical_pulls(:'alice', 'withings') AS r
UNION ALL
SELECT (SELECT array_agg(k ORDER BY k) FROM jsonb_object_keys(r -> 'provider') AS k),
       r #>> '{provider,withings,pulled,weight,status}', r #> '{provider,apple_health_kit,not_pulled}'
FROM junction_introspect_historical_pulls(:'alice', 'apple_health_kit') AS r;
-- team-wide: every user, each once (api-alice and the api/bob user)
SELECT count(*) AS users, count(DISTINCT r ->> 'user_id') AS distinct_users,
       sum((SELECT count(*) FROM jsonb_object_keys(r -> 'provider'))) AS user_providers
FROM junction_introspect_historical_pulls() AS r;

-- Every page of GET /v2/user: 1200 more users make 1202, three pages of at most 500.
SELECT jsonb_array_length(pg_temp.mock('POST', 'users', '{"count": 1200, "prefix": "bulk-"}') -> 'user_ids') AS bulk;
SELECT pg_temp.mock('DELETE', 'requests');
SELECT count(*) AS users, count(DISTINCT u ->> 'user_id') AS distinct_ids,
       count(*) FILTER (WHERE u ->> 'client_user_id' = 'api-alice') AS alice
FROM junction_users() AS u;
SELECT x -> 'query' AS query FROM jsonb_array_elements(junction_api('GET', '/_mock/requests')) AS x
ORDER BY (x ->> 'seq')::int;

-- ---------------------------------------------------------------------------------------------
-- 3. junction_fetch: every summary, profile, every timeseries, the streams.
-- ---------------------------------------------------------------------------------------------
-- summaries: the response as Junction sends it; date endpoints get YYYY-MM-DD, the others datetimes
SELECT pg_temp.mock('DELETE', 'requests');
SELECT r.name, r.response_key,
       (SELECT array_agg(k) FROM jsonb_object_keys(f) AS k) AS keys,
       jsonb_array_length(f -> r.response_key) AS objects,
       f #>> ARRAY[r.response_key, '0', 'calendar_date'] AS first_day
FROM junction.resources AS r
CROSS JOIN LATERAL junction_fetch(r.name, :'alice', '2025-06-01 00:00:00+00', '2025-06-03 12:30:00.5+00') AS f
WHERE r.kind = 'summary' AND r.response_key IS NOT NULL
ORDER BY r.name;
SELECT split_part(x ->> 'path', '/', 4) AS resource, x -> 'query' AS query
FROM jsonb_array_elements(junction_api('GET', '/_mock/requests')) AS x ORDER BY 1;
-- profile: a bare object; none for that provider is NULL; devices (the mock has no such route)
SELECT f ->> 'user_id' = :'alice' AS mine, f #>> '{source,provider}' AS provider,
       (SELECT array_agg(k ORDER BY k) FROM jsonb_object_keys(f) AS k) AS keys
FROM junction_fetch('profile', :'alice', NULL, NULL) AS f;
SELECT junction_fetch('profile', :'alice', NULL, NULL, 'garmin') IS NULL AS no_garmin_profile;
SELECT state, message FROM pg_temp.try(format($$SELECT junction_fetch('device', %L, NULL, NULL)$$, :'alice'));
-- every timeseries over two days: {"groups": {provider: [groups]}}; REST names body_weight/body_fat
-- are accepted for the event names weight/fat
SELECT r.name, r.rest_segment,
       (SELECT array_agg(e.key ORDER BY e.key) FROM jsonb_each(f -> 'groups') AS e) AS providers,
       (SELECT count(*) FROM jsonb_each(f -> 'groups') AS e, jsonb_array_elements(e.value) AS g) AS groups,
       (SELECT sum(jsonb_array_length(g -> 'data')) FROM jsonb_each(f -> 'groups') AS e,
               jsonb_array_elements(e.value) AS g) AS samples,
       (SELECT array_agg(k ORDER BY k) FROM jsonb_object_keys(f) AS k) AS keys
FROM junction.resources AS r
CROSS JOIN LATERAL junction_fetch(r.name, :'alice', '2025-06-01', '2025-06-02 23:59:59') AS f
WHERE r.kind = 'timeseries'
ORDER BY r.name;
SELECT junction_fetch('body_weight', :'alice', '2025-06-01', '2025-06-01 23:59:59')
     = junction_fetch('weight', :'alice', '2025-06-01', '2025-06-01 23:59:59') AS rest_name_ok;
-- paging to the end: 30 days of heartrate are 5 pages of at most 7 days; all groups of all pages
SELECT pg_temp.mock('DELETE', 'requests');
SELECT (SELECT count(*) FROM jsonb_array_elements(f #> '{groups,apple_health_kit}')) AS groups,
       (SELECT sum(jsonb_array_length(g -> 'data')) FROM jsonb_array_elements(f #> '{groups,apple_health_kit}') AS g) AS samples,
       f #>> '{groups,apple_health_kit,0,data,0,timestamp}' AS first,
       f #>> '{groups,apple_health_kit,-1,data,-1,timestamp}' AS last
FROM junction_fetch('heartrate', :'alice', '2025-05-01', '2025-05-30 23:59:59') AS f;
SELECT count(*) AS pages, count(*) FILTER (WHERE x -> 'query' ? 'next_cursor') AS with_cursor
FROM jsonb_array_elements(junction_api('GET', '/_mock/requests')) AS x;
-- two providers on every page: each provider's groups of all pages, in page order
SELECT e.key AS provider, jsonb_array_length(e.value) AS groups,
       (SELECT sum(jsonb_array_length(g -> 'data')) FROM jsonb_array_elements(e.value) AS g) AS samples,
       e.value #>> '{0,data,0,timestamp}' AS first, e.value #>> '{-1,data,-1,timestamp}' AS last
FROM junction_fetch('calories_active', :'alice', '2025-05-01', '2025-05-30 23:59:59') AS f,
     jsonb_each(f -> 'groups') AS e
ORDER BY 1;
-- streams: a workout's parallel arrays, a sleep's sample lists
SELECT junction_fetch('workouts', :'alice', '2025-06-01', '2025-06-01') #>> '{workouts,0,id}' AS workout \gset
SELECT junction_fetch('sleep', :'alice', '2025-06-01', '2025-06-01') #>> '{sleep,0,id}' AS sleep \gset
SELECT (SELECT array_agg(k ORDER BY k) FROM jsonb_object_keys(s) AS k) AS keys,
       jsonb_array_length(s -> 'time') = jsonb_array_length(s -> 'heartrate') AS parallel
FROM junction_fetch_workout_stream(:'workout') AS s;
SELECT (SELECT array_agg(k ORDER BY k) FROM jsonb_object_keys(s) AS k) AS keys,
       jsonb_array_length(s -> 'hypnogram') > 0 AS has_hypnogram
FROM junction_fetch_sleep_stream(:'sleep') AS s;
-- wrong names and arguments
SELECT state, message, hint FROM pg_temp.try(format($$SELECT junction_fetch('stepz', %L, now(), now())$$, :'alice'));
SELECT state, message, hint FROM pg_temp.try(format($$SELECT junction_fetch('workout_stream', %L, now(), now())$$, :'alice'));
SELECT state, message FROM pg_temp.try(format($$SELECT junction_fetch('steps', %L, NULL, now())$$, :'alice'));
SELECT state, message FROM pg_temp.try(format($$SELECT junction_fetch('steps', %L, '2025-06-02', '2025-06-01')$$, :'alice'));
SELECT state, message FROM pg_temp.try($$SELECT junction_fetch('steps', NULL, now(), now())$$);

-- ---------------------------------------------------------------------------------------------
-- 4. HTTP failures: retries, timeouts, cancel, auth, bad JSON -- and the key is never shown.
-- ---------------------------------------------------------------------------------------------
\set act_sql 'SELECT junction_fetch(''activity'', ' :'alice' '::uuid, ''2025-06-01'', ''2025-06-01'')'
-- 429 with Retry-After: 1, then success: waited about a second, two requests
SELECT pg_temp.mock('DELETE', 'requests');
SELECT pg_temp.fault('/v2/summary/activity', '[{"status": 429, "headers": {"Retry-After": "1"}}]');
SELECT state, seconds >= 0.9 AS waited_retry_after, seconds < 5 AS promptly FROM pg_temp.try(:'act_sql');
SELECT pg_temp.requests('/v2/summary/activity') AS requests;
-- 503 twice, then success: three requests
SELECT pg_temp.mock('DELETE', 'requests');
SELECT pg_temp.fault('/v2/summary/activity', '[{"status": 503}, {"status": 503}]');
SELECT state FROM pg_temp.try(:'act_sql');
SELECT pg_temp.requests('/v2/summary/activity') AS requests;
-- retries exhausted: 1 + junction.http_retries attempts, then 38000 with Junction's detail
SET junction.http_retries = 2;
SELECT pg_temp.mock('DELETE', 'requests');
SELECT pg_temp.fault('/v2/summary/activity', '[{"status": 503, "body": {"detail": "overloaded"}}, {"status": 503, "body": {"detail": "overloaded"}}, {"status": 503, "body": {"detail": "overloaded"}}]');
SELECT state, message, detail, key_shown FROM pg_temp.try(:'act_sql');
SELECT pg_temp.requests('/v2/summary/activity') AS requests;
-- a page in the middle of a timeseries fails for good: the whole read fails, nothing half-done
SELECT pg_temp.mock('DELETE', 'requests');
SELECT pg_temp.fault('/v2/timeseries/', '[{"status": 200}, {"status": 500}, {"status": 500}, {"status": 500}]');
SELECT state, message FROM pg_temp.try(format($$SELECT junction_fetch('heartrate', %L, '2025-05-01', '2025-05-30')$$, :'alice'));
SELECT pg_temp.requests('/v2/timeseries/') AS requests;
RESET junction.http_retries;
-- timeout: each attempt is cut at junction.http_timeout; 08006 after 1 + retries attempts, quickly
SET junction.http_timeout = '300ms';
SET junction.http_retries = 1;
SELECT pg_temp.fault('/v2/summary/activity', '[{"delay_ms": 20000}, {"delay_ms": 20000}]');
SELECT state, message LIKE '%failed: Operation timed out after%' AS timed_out, detail, key_shown,
       seconds < 8 AS promptly
FROM pg_temp.try(:'act_sql');
RESET junction.http_timeout;
RESET junction.http_retries;
SELECT pg_temp.mock('DELETE', 'faults');
-- cancel: statement_timeout interrupts a slow answer at once
SELECT pg_temp.fault('/v2/summary/activity', '[{"delay_ms": 20000}]');
SET statement_timeout = '1s';
SELECT state, seconds < 8 AS promptly FROM pg_temp.try(:'act_sql');
RESET statement_timeout;
SELECT pg_temp.mock('DELETE', 'faults');
-- 401: a wrong key; the hint says which setting, neither key appears anywhere
SET junction.api_key = 'sk_us_wrong_key';
SELECT state, message, detail, hint, key_shown FROM pg_temp.try(:'act_sql');
SELECT state, message, key_shown FROM pg_temp.try($$SELECT * FROM junction_users()$$);
SET junction.api_key = 'sk_us_test_key';
-- no key at all
SET junction.api_key = '';
SELECT state, message, hint, key_shown FROM pg_temp.try(:'act_sql');
SET junction.api_key = 'sk_us_test_key';
-- 404, 422, malformed JSON, a body of the wrong shape
SELECT state, message, detail, key_shown FROM pg_temp.try($$SELECT junction_user('00000000-0000-0000-0000-000000000000')$$);
SELECT state, message, detail, key_shown FROM pg_temp.try(format($$SELECT junction_fetch('activity', %L, '2025-06-01', '2125-06-01')$$, :'alice'));
SELECT pg_temp.fault('/v2/summary/activity', '[{"status": 200, "body": "{\"activity\": [tru"}]');
SELECT state, message, detail, key_shown FROM pg_temp.try(:'act_sql');
SELECT pg_temp.fault('/v2/timeseries/', '[{"status": 200, "body": {"data": []}}]');
SELECT state, message FROM pg_temp.try(format($$SELECT junction_fetch('steps', %L, '2025-06-01', '2025-06-01')$$, :'alice'));
SELECT pg_temp.fault('/v2/summary/sleep', '[{"status": 200, "body": {"sleeps": []}}]');
SELECT state, message FROM pg_temp.try(format($$SELECT * FROM junction_sync(%L, '{sleep}', '2025-06-01', '2025-06-01')$$, :'alice'));
-- a server whose next_cursor never advances is caught
SELECT pg_temp.fault('/v2/timeseries/', '[{"status": 200, "body": {"groups": {}, "next_cursor": "abc"}}, {"status": 200, "body": {"groups": {}, "next_cursor": "abc"}}]');
SELECT state, message FROM pg_temp.try(format($$SELECT junction_fetch('steps', %L, '2025-06-01', '2025-06-01')$$, :'alice'));
SELECT pg_temp.mock('DELETE', 'faults');

-- 4b. Prefetch (junction_sync asks for page n+1 before loading page n): the next identical
--     junction_api call in the transaction takes the answer; anything else abandons it.
\set act_q '{"start_date": "2025-06-02", "end_date": "2025-06-02"}'
SELECT '/v2/summary/activity/' || :'alice' AS act_path \gset
-- taken: one request
SELECT pg_temp.mock('DELETE', 'requests') IS NOT NULL AS cleared;
BEGIN;
SELECT junction._api_prefetch(:'act_path', :'act_q');
SELECT pg_sleep(0.3);  -- the mock has answered by now
SELECT jsonb_array_length(junction_api('GET', :'act_path', :'act_q') -> 'activity') AS activities;
COMMIT;
SELECT pg_temp.requests('/v2/summary/activity') AS requests;
-- abandoned at the end of its transaction: the same call afterwards asks again
SELECT pg_temp.mock('DELETE', 'requests') IS NOT NULL AS cleared;
BEGIN;
SELECT junction._api_prefetch(:'act_path', :'act_q');
SELECT pg_sleep(0.3);
COMMIT;
SELECT jsonb_array_length(junction_api('GET', :'act_path', :'act_q') -> 'activity') AS activities;
SELECT pg_temp.requests('/v2/summary/activity') AS requests;
-- abandoned by another request in between
SELECT pg_temp.mock('DELETE', 'requests') IS NOT NULL AS cleared;
BEGIN;
SELECT junction._api_prefetch(:'act_path', :'act_q');
SELECT pg_sleep(0.3);
SELECT jsonb_typeof(junction_api('GET', '/v2/summary/sleep/' || :'alice', :'act_q')) AS other;
SELECT jsonb_array_length(junction_api('GET', :'act_path', :'act_q') -> 'activity') AS activities;
COMMIT;
SELECT pg_temp.requests('/v2/summary/activity') AS requests;
-- a prefetched 503 counts as the first attempt: retried, then the answer
SELECT pg_temp.mock('DELETE', 'requests') IS NOT NULL AS cleared;
SELECT pg_temp.fault('/v2/summary/activity', '[{"status": 503}]');
BEGIN;
SELECT junction._api_prefetch(:'act_path', :'act_q');
SELECT jsonb_array_length(junction_api('GET', :'act_path', :'act_q') -> 'activity') AS activities;
COMMIT;
SELECT pg_temp.requests('/v2/summary/activity') AS requests;
-- an answer fetched with one key is never returned under another: the wrong key gets its 401
BEGIN;
SELECT junction._api_prefetch(:'act_path', :'act_q');
SELECT pg_sleep(0.3);
SET LOCAL junction.api_key = 'sk_us_wrong_key';
SELECT state, message, key_shown FROM pg_temp.try(format('SELECT junction_api(''GET'', %L, %L)', :'act_path', :'act_q'));
COMMIT;
-- waiting for a slow prefetched answer: statement_timeout still interrupts it at once, and the
-- next transaction is unaffected
SELECT pg_temp.fault('/v2/summary/activity', '[{"delay_ms": 20000}]');
BEGIN;
SELECT junction._api_prefetch(:'act_path', :'act_q');
SET LOCAL statement_timeout = '1s';
SELECT state, seconds < 8 AS promptly FROM pg_temp.try(format('SELECT junction_api(''GET'', %L, %L)', :'act_path', :'act_q'));
COMMIT;
SELECT jsonb_array_length(junction_api('GET', :'act_path', :'act_q') -> 'activity') AS activities;
SELECT pg_temp.mock('DELETE', 'faults') IS NOT NULL AS cleared;
-- only for the data API, GET, with a valid path
SELECT state, message FROM pg_temp.try($$SELECT junction._api_prefetch('v2/no-slash')$$);

-- ---------------------------------------------------------------------------------------------
-- 5. Connections into junction.connections: reconcile with Junction's list.
-- ---------------------------------------------------------------------------------------------
-- a connection Junction no longer lists (deregistered elsewhere) and one of an unknown user
INSERT INTO junction.connections (user_id, provider, status, updated_at, received_seq, data) VALUES
  (:'alice', 'fitbit', 'connected', now(), 0, '{}'),
  ('00000000-0000-0000-0000-00000000dead', 'oura', 'connected', now(), 0, '{}');
SELECT junction_refresh_connections(:'alice');
SELECT provider, status, external_user_id IS NOT NULL AS has_external_id, error_type, error_message,
       resource_availability ? 'sleep' AS sleep_available, data ->> 'slug' = provider AS data_is_rest_object
FROM junction.connections WHERE user_id = :'alice' ORDER BY provider;
-- every user in the table: the unknown user is skipped with a warning, its row kept
SELECT junction_refresh_connections();
SELECT user_id = :'alice' AS alice, count(*) FROM junction.connections GROUP BY 1 ORDER BY 1;
DELETE FROM junction.connections WHERE user_id = '00000000-0000-0000-0000-00000000dead';
-- deregistering removes our copy too
SELECT junction_connection_deregister(:'alice', 'withings');
SELECT array_agg(provider ORDER BY provider) AS providers FROM junction.connections WHERE user_id = :'alice';

-- ---------------------------------------------------------------------------------------------
-- 6. junction_sync: rows per resource, and the rows equal what webhooks carrying the same
--    objects produce.
-- ---------------------------------------------------------------------------------------------
-- Everything users can see of alice's typed rows, one jsonb per row, without received_seq
-- (the delivery order) and the workout_streams bookkeeping.
CREATE TEMP VIEW alice_rows AS
          SELECT 'activity' AS tbl, to_jsonb(t) - 'received_seq' AS r FROM junction.activity t WHERE user_id = :'alice'
UNION ALL SELECT 'sleep', to_jsonb(t) - 'received_seq' FROM junction.sleep t WHERE user_id = :'alice'
UNION ALL SELECT 'sleep_cycle', to_jsonb(t) - 'received_seq' FROM junction.sleep_cycle t WHERE user_id = :'alice'
UNION ALL SELECT 'workouts', to_jsonb(t) - 'received_seq' FROM junction.workouts t WHERE user_id = :'alice'
UNION ALL SELECT 'body', to_jsonb(t) - 'received_seq' FROM junction.body t WHERE user_id = :'alice'
UNION ALL SELECT 'profile', to_jsonb(t) - 'received_seq' FROM junction.profile t WHERE user_id = :'alice'
UNION ALL SELECT 'meals', to_jsonb(t) - 'received_seq' FROM junction.meals t WHERE user_id = :'alice'
UNION ALL SELECT 'menstrual_cycles', to_jsonb(t) - 'received_seq' FROM junction.menstrual_cycles t WHERE user_id = :'alice'
UNION ALL SELECT 'electrocardiograms', to_jsonb(t) - 'received_seq' FROM junction.electrocardiograms t WHERE user_id = :'alice'
UNION ALL SELECT 'samples', to_jsonb(t) - 'received_seq' FROM junction.samples t WHERE user_id = :'alice';

-- 6a. Webhooks first: one event per summary object and per timeseries group Junction returns
--     for 2025-06-02 (every summary, every timeseries), delivered signed and drained.
CREATE TEMP TABLE webhook AS
SELECT row_number() OVER (ORDER BY x.resource, x.ord) AS n, x.resource,
       jsonb_build_object('event_type', 'daily.data.' || x.resource || '.created', 'user_id', :'alice',
                          'client_user_id', 'api-alice', 'team_id', 'c0cabae0-fd64-5215-9e31-b06e6b89d58e',
                          'data', x.obj)::text AS body
FROM (SELECT r.name AS resource, o.ord, o.obj
      FROM junction.resources AS r
      CROSS JOIN LATERAL junction_fetch(r.name, :'alice', '2025-06-02', '2025-06-02 23:59:59') AS f
      CROSS JOIN LATERAL jsonb_array_elements(CASE
               WHEN r.kind = 'timeseries' THEN (SELECT coalesce(jsonb_agg(g), '[]') FROM jsonb_each(f -> 'groups') AS e,
                                                       jsonb_array_elements(e.value) AS g)
               WHEN r.response_key IS NULL THEN jsonb_build_array(f)
               ELSE f -> r.response_key END) WITH ORDINALITY AS o(obj, ord)
      WHERE r.kind IN ('summary', 'timeseries') AND r.event_prefix = 'daily.data') AS x;
SELECT count(*) AS events, count(DISTINCT resource) AS resources FROM webhook;
BEGIN;
SELECT count(pg_temp.deliver('msg_api_' || n, body)) AS delivered FROM webhook;
SELECT junction_process_inbox(100000) >= 0 AS drained;
COMMIT;
SELECT count(*) AS processed FROM junction.inbox
WHERE headers ->> 'svix-id' LIKE 'msg_api_%' AND status = 'processed';
CREATE TEMP TABLE from_webhooks AS SELECT * FROM alice_rows;
SELECT tbl, count(*) FROM from_webhooks GROUP BY 1 ORDER BY 1;

-- 6b. The same day through junction_sync over the webhook rows: every row is rewritten (a later
--     received_seq) and nothing changes.
SELECT sum(rows_loaded) AS rows_loaded, count(*) AS resources
FROM junction_sync(:'alice', NULL, '2025-06-02', '2025-06-02 23:59:59');
SELECT (SELECT count(*) FROM (SELECT * FROM alice_rows EXCEPT ALL SELECT * FROM from_webhooks) d) AS only_api,
       (SELECT count(*) FROM (SELECT * FROM from_webhooks EXCEPT ALL SELECT * FROM alice_rows) d) AS only_webhooks;

-- 6c. Into empty tables: junction_sync alone gives exactly the webhook rows.
DELETE FROM junction.activity WHERE user_id = :'alice';
DELETE FROM junction.sleep WHERE user_id = :'alice';
DELETE FROM junction.sleep_cycle WHERE user_id = :'alice';
DELETE FROM junction.workouts WHERE user_id = :'alice';
DELETE FROM junction.body WHERE user_id = :'alice';
DELETE FROM junction.profile WHERE user_id = :'alice';
DELETE FROM junction.meals WHERE user_id = :'alice';
DELETE FROM junction.menstrual_cycles WHERE user_id = :'alice';
DELETE FROM junction.electrocardiograms WHERE user_id = :'alice';
DELETE FROM junction.samples WHERE user_id = :'alice';
SELECT * FROM junction_sync(:'alice', NULL, '2025-06-02', '2025-06-02 23:59:59') ORDER BY resource;
SELECT (SELECT count(*) FROM (SELECT * FROM alice_rows EXCEPT ALL SELECT * FROM from_webhooks) d) AS only_api,
       (SELECT count(*) FROM (SELECT * FROM from_webhooks EXCEPT ALL SELECT * FROM alice_rows) d) AS only_webhooks,
       (SELECT count(*) FROM alice_rows) AS rows;
-- and a webhook redelivered later wins again, still with the same values
BEGIN;
SELECT count(pg_temp.deliver('msg_api_again_' || n, body)) AS delivered FROM webhook WHERE resource IN ('activity', 'heartrate');
SELECT junction_process_inbox(100000) >= 0 AS drained;
COMMIT;
SELECT (SELECT count(*) FROM (SELECT * FROM alice_rows EXCEPT ALL SELECT * FROM from_webhooks) d) AS only_api,
       (SELECT count(*) FROM (SELECT * FROM from_webhooks EXCEPT ALL SELECT * FROM alice_rows) d) AS only_webhooks;

-- 6d. Arguments: names are resolved (REST names too), unknown ones rejected; providers filter.
SELECT * FROM junction_sync(:'alice', ARRAY['body_weight', 'weight', 'fat', 'profile'], '2025-06-03', '2025-06-03 23:59:59');
SELECT * FROM junction_sync(:'alice', ARRAY['steps'], '2025-06-03', '2025-06-03 23:59:59', 'oura');
SELECT * FROM junction_sync(:'alice', ARRAY['steps'], '2025-06-03', '2025-06-03 23:59:59', 'apple_health_kit');
SELECT state, message FROM pg_temp.try(format($$SELECT * FROM junction_sync(%L, '{steps,bogus}')$$, :'alice'));
-- workout streams on request: the range's workouts' streams are fetched and stored
SELECT * FROM junction_sync(:'alice', ARRAY['workout_stream'], '2025-06-03', '2025-06-04 23:59:59');
SELECT provider, sport_slug IS NOT NULL AS has_sport, fetch_status, jsonb_array_length(data -> 'time') > 0 AS has_data
FROM junction.workout_streams WHERE user_id = :'alice' ORDER BY workout_id;
TRUNCATE junction.workout_streams;

-- 6e. A first backfill takes the fast path (plain INSERTs in one subtransaction, 6c above). A key
--     that exists after all, here a sample far outside the range that a scripted page also
--     carries, makes it roll back and load again with ON CONFLICT: the page is fetched twice and
--     the later received value wins.
CREATE TEMP TABLE alice_heartrate AS SELECT * FROM junction.samples WHERE user_id = :'alice' AND resource = 'heartrate';
DELETE FROM junction.samples WHERE user_id = :'alice' AND resource = 'heartrate';
CREATE FUNCTION pg_temp.far_sample(u uuid) RETURNS void LANGUAGE sql AS $$
  INSERT INTO junction.samples (user_id, resource, provider, source_type, time, value, unit, received_seq)
  VALUES (u, 'heartrate', 'oura', 'ring', '2025-01-01 00:00:00+00', 50, 'bpm',
          junction._next_received_seq());
  SELECT NULL::void
$$;
\set page '{"groups": {"oura": [{"source": {"provider": "oura", "type": "ring"}, "data": [{"timestamp": "2025-06-05T00:00:00+00:00", "value": 70, "unit": "bpm"}, {"timestamp": "2025-01-01T00:00:00+00:00", "value": 99, "unit": "bpm"}]}]}, "next_cursor": null}'
SELECT pg_temp.far_sample(:'alice');
SELECT pg_temp.mock('DELETE', 'requests') IS NOT NULL AS cleared;
SELECT pg_temp.fault('/v2/timeseries/' || :'alice' || '/heartrate/grouped',
                     jsonb_build_array(jsonb_build_object('body', :'page'::jsonb), jsonb_build_object('body', :'page'::jsonb)));
SELECT * FROM junction_sync(:'alice', ARRAY['heartrate'], '2025-06-05', '2025-06-05 23:59:59');
SELECT pg_temp.requests('/v2/timeseries/' || :'alice' || '/heartrate') AS page_requests;
SELECT time, value FROM junction.samples WHERE user_id = :'alice' AND resource = 'heartrate' ORDER BY time;
-- With the subtransaction-id cache of this backend full (64 writing subtransactions), no fast
-- path: one fetch, straight to ON CONFLICT.
DELETE FROM junction.samples WHERE user_id = :'alice' AND resource = 'heartrate';
SELECT pg_temp.far_sample(:'alice');
SELECT pg_temp.mock('DELETE', 'requests') IS NOT NULL AS cleared;
SELECT pg_temp.fault('/v2/timeseries/' || :'alice' || '/heartrate/grouped', jsonb_build_array(jsonb_build_object('body', :'page'::jsonb)));
CREATE TEMP TABLE subxact_filler (i int);
BEGIN;
SELECT junction._subxact_room() AS room_before;
DO $$ BEGIN FOR i IN 1..64 LOOP BEGIN INSERT INTO subxact_filler VALUES (i); EXCEPTION WHEN OTHERS THEN NULL; END; END LOOP; END $$;
SELECT junction._subxact_room() AS room_after_64;
SELECT * FROM junction_sync(:'alice', ARRAY['heartrate'], '2025-06-05', '2025-06-05 23:59:59');
COMMIT;
SELECT pg_temp.requests('/v2/timeseries/' || :'alice' || '/heartrate') AS page_requests;
SELECT time, value FROM junction.samples WHERE user_id = :'alice' AND resource = 'heartrate' ORDER BY time;
DELETE FROM junction.samples WHERE user_id = :'alice' AND resource = 'heartrate';
INSERT INTO junction.samples SELECT * FROM alice_heartrate;

-- ---------------------------------------------------------------------------------------------
-- 7. The backfill queue by hand: historical.data.* completions -> junction_backfill_now().
--    (The worker claims nothing while its junction.api_key is empty, so these rows are ours.)
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION pg_temp.historical(resource text, provider text, start_date text, end_date text) RETURNS text
LANGUAGE sql AS $$
  SELECT jsonb_build_object('event_type', 'historical.data.' || resource || '.created',
                            'user_id', '275971e2-aa53-53d5-b5cf-08e1bad37c39', 'client_user_id', 'api-alice',
                            'team_id', 'c0cabae0-fd64-5215-9e31-b06e6b89d58e',
                            'data', jsonb_build_object('user_id', '275971e2-aa53-53d5-b5cf-08e1bad37c39',
                                                       'provider', provider, 'start_date', start_date,
                                                       'end_date', end_date, 'is_final', true))::text
$$;
SELECT :'alice' = '275971e2-aa53-53d5-b5cf-08e1bad37c39' AS helper_user_ok;
BEGIN;
SELECT pg_temp.deliver('msg_hist_steps', pg_temp.historical('steps', 'apple_health_kit', '2025-04-01T00:00:00+00:00', '2025-04-03T23:59:59+00:00')) > 0 AS delivered;
SELECT pg_temp.deliver('msg_hist_sleep', pg_temp.historical('sleep', 'oura', '2025-04-01T00:00:00+00:00', '2025-04-03T23:59:59+00:00')) > 0 AS delivered;
SELECT pg_temp.deliver('msg_hist_weight', pg_temp.historical('weight', 'withings', '2025-04-01T00:00:00+00:00', '2025-04-03T23:59:59+00:00')) > 0 AS delivered;
SELECT pg_temp.deliver('msg_hist_streams', pg_temp.historical('workout_stream', 'garmin', '2025-04-01T00:00:00+00:00', '2025-04-02T23:59:59+00:00')) > 0 AS delivered;
SELECT pg_temp.deliver('msg_hist_future', pg_temp.historical('brainwaves', 'oura', '2025-04-01T00:00:00+00:00', '2025-04-03T23:59:59+00:00')) > 0 AS delivered;
SELECT junction_process_inbox(100000) >= 0 AS drained;
COMMIT;
SELECT resource, provider, start_date, end_date, fetch_status, attempts FROM junction.backfills ORDER BY resource;
-- without a key nothing is claimed (and junction_backfill_now says why)
SET junction.api_key = '';
SELECT count(*) AS claimed FROM junction._backfill_claim();
SELECT state, message, hint FROM pg_temp.try('SELECT junction_backfill_now()');
SET junction.api_key = 'sk_us_test_key';
-- one job at a time; then the rest (the workout_stream range queues one stream job per workout)
SELECT junction_backfill_now(1) AS ran;
SELECT junction_backfill_now() AS ran;
SELECT junction_backfill_now() AS ran;
SELECT resource, provider, fetch_status, rows_loaded, attempts, fetch_error FROM junction.backfills ORDER BY resource;
SELECT provider, fetch_status, attempts, jsonb_array_length(data -> 'time') > 0 AS has_data, fetched_at IS NOT NULL AS fetched
FROM junction.workout_streams WHERE user_id = :'alice' ORDER BY workout_id;
-- the rows loaded are exactly that provider's, that resource's, that range's
SELECT resource, provider, min(time), max(time), count(*) FROM junction.samples
WHERE user_id = :'alice' AND time < '2025-05-01' GROUP BY 1, 2 ORDER BY 1, 2;
SELECT count(*) AS sleeps FROM junction.sleep WHERE user_id = :'alice' AND calendar_date < '2025-05-01';
-- a failing fetch: pending again after a backoff, then failed on the third attempt
SET junction.http_retries = 0;
BEGIN;
SELECT pg_temp.deliver('msg_hist_hr', pg_temp.historical('heartrate', 'apple_health_kit', '2025-04-01T00:00:00+00:00', '2025-04-01T23:59:59+00:00')) > 0 AS delivered;
SELECT junction_process_inbox(100000) >= 0 AS drained;
COMMIT;
SELECT pg_temp.fault('/v2/timeseries/', '[{"status": 502, "body": {"detail": "bad gateway"}}, {"status": 502, "body": {"detail": "bad gateway"}}, {"status": 502, "body": {"detail": "bad gateway"}}]');
SELECT junction_backfill_now() AS ran;
SELECT fetch_status, attempts, sqlstate, fetch_error, next_attempt_at > now() + interval '20 seconds' AS backed_off
FROM junction.backfills WHERE resource = 'heartrate';
SELECT junction_backfill_now() AS ran_while_backing_off;
UPDATE junction.backfills SET next_attempt_at = now() - interval '1 second' WHERE resource = 'heartrate';
SELECT junction_backfill_now() AS ran;
SELECT fetch_status, attempts, next_attempt_at > now() + interval '100 seconds' AS backed_off_longer
FROM junction.backfills WHERE resource = 'heartrate';
UPDATE junction.backfills SET next_attempt_at = now() - interval '1 second' WHERE resource = 'heartrate';
SELECT junction_backfill_now() AS ran;
SELECT fetch_status, attempts, sqlstate, fetch_error, next_attempt_at FROM junction.backfills WHERE resource = 'heartrate';
RESET junction.http_retries;
-- a newer completion re-queues a job even while it runs: the run stops at its next step (it
-- loads nothing more of the old range, as if it had not started) and does not mark it done
BEGIN;
SELECT pg_temp.deliver('msg_hist_hr2', pg_temp.historical('heartrate', 'apple_health_kit', '2025-04-01T00:00:00+00:00', '2025-04-01T23:59:59+00:00')) > 0 AS delivered;
SELECT junction_process_inbox(100000) >= 0 AS drained;
SELECT kind, user_id = :'alice' AS alice, provider, resource, start_date, end_date, workout_id FROM junction._backfill_claim();
SELECT pg_temp.deliver('msg_hist_hr3', pg_temp.historical('heartrate', 'apple_health_kit', '2025-04-02T00:00:00+00:00', '2025-04-02T00:30:00+00:00')) > 0 AS delivered;
SELECT junction_process_inbox(100000) >= 0 AS drained;
SELECT fetch_status, attempts, start_date, end_date FROM junction.backfills WHERE resource = 'heartrate';
SELECT junction._backfill_run('range', :'alice', 'apple_health_kit', 'heartrate', '2025-04-01', '2025-04-01 23:59:59', NULL) AS loaded;
SELECT fetch_status, rows_loaded FROM junction.backfills WHERE resource = 'heartrate';
COMMIT;
SELECT junction_backfill_now() AS ran;
SELECT fetch_status, rows_loaded, attempts FROM junction.backfills WHERE resource = 'heartrate';
-- at worker start, running jobs go back to pending
UPDATE junction.backfills SET fetch_status = 'running' WHERE resource IN ('steps', 'sleep');
SELECT junction._backfill_reset_running() AS reset;
SELECT resource, fetch_status FROM junction.backfills WHERE resource IN ('steps', 'sleep') ORDER BY 1;
UPDATE junction.backfills SET fetch_status = 'done' WHERE resource IN ('steps', 'sleep');
-- the job row and the worker's calls with it
SELECT state, message FROM pg_temp.try($$SELECT junction._backfill_run('bogus', NULL, NULL, NULL, NULL, NULL, NULL)$$);

-- ---------------------------------------------------------------------------------------------
-- 8. Privileges: a non-superuser can neither see nor set the key or base URL, nor call the API.
-- ---------------------------------------------------------------------------------------------
CREATE ROLE jx_api_nobody LOGIN;
SELECT p.oid::regprocedure AS callable_by_nobody
FROM pg_proc AS p
WHERE (p.proname ~ '^junction_(api|fetch|user|users|connection|introspect|sync|refresh|backfill|schedule|unschedule)'
       OR (p.pronamespace = 'junction'::regnamespace AND p.proname ~ '^_(api|fetch|backfill|sync|url|raise|page|queue|load|refresh|introspect|next_cursor|check)'))
  AND has_function_privilege('jx_api_nobody', p.oid, 'EXECUTE');
SELECT count(*) >= 20 AS api_functions_checked
FROM pg_proc AS p
WHERE p.proname ~ '^junction_(api|fetch|user|users|connection|introspect|sync|refresh|backfill|schedule|unschedule)';
SET ROLE jx_api_nobody;
SHOW junction.api_key;
SHOW junction.api_base_url;
SELECT current_setting('junction.api_key');
SELECT current_setting('junction.api_base_url');
SET junction.api_key = 'sk_us_mine';
SET junction.api_base_url = 'http://127.0.0.1:1';
SELECT count(*) AS visible FROM pg_settings WHERE name IN ('junction.api_key', 'junction.api_base_url');
SELECT junction_fetch('steps', '00000000-0000-0000-0000-000000000000', now(), now());
SELECT junction_api('GET', '/v2/user');
SELECT * FROM junction_sync('00000000-0000-0000-0000-000000000000');
SELECT junction_backfill_now();
SELECT * FROM junction._backfill_claim();
RESET ROLE;
DROP ROLE jx_api_nobody;
-- superusers see the base URL, and the key only by name (SHOW ALL never lists it)
SELECT current_setting('junction.api_base_url') = :'mock' AS base_url_visible;
SELECT count(*) AS listed FROM pg_settings WHERE name = 'junction.api_key';

-- ---------------------------------------------------------------------------------------------
-- 9. pg_cron: the nightly resync job.
-- ---------------------------------------------------------------------------------------------
DROP EXTENSION IF EXISTS pg_cron;
SELECT state, message, hint FROM pg_temp.try('SELECT junction_schedule_sync()');
CREATE EXTENSION pg_cron;
SELECT junction_schedule_sync() > 0 AS scheduled;
SELECT jobname, schedule, command, database = current_database() AS this_db, username, active FROM cron.job;
-- again with other settings: the same job, replaced
SELECT junction_schedule_sync('30 4 * * *', 3) > 0 AS rescheduled;
SELECT jobname, schedule, command FROM cron.job;
SELECT state, message FROM pg_temp.try($$SELECT junction_schedule_sync('0 3 * * *', 0)$$);
-- run the job's command now, as pg_cron would (one row: the users synced)
SELECT command AS cron_command FROM cron.job WHERE jobname = 'junction-nightly-sync' \gset
:cron_command;
SELECT user_id = :'alice' AS alice, rows_loaded > 0 AS loaded, error FROM junction_sync_all(1, false);
-- a failing user is reported and the others go on; a wrong key stops the whole run
INSERT INTO junction.connections (user_id, provider, status, updated_at, received_seq, data)
VALUES ('00000000-0000-0000-0000-00000000dead', 'oura', 'connected', now(), 0, '{}');
SELECT pg_temp.fault('/v2/summary/activity/00000000-0000-0000-0000-00000000dead', '[{"status": 404, "body": {"detail": "User not found"}}]');
SELECT user_id = :'alice' AS alice, rows_loaded > 0 AS loaded, error FROM junction_sync_all(1, false) ORDER BY 1;
SET junction.api_key = 'sk_us_wrong_key';
SELECT state, message FROM pg_temp.try('SELECT * FROM junction_sync_all(1, false)');
SET junction.api_key = 'sk_us_test_key';
DELETE FROM junction.connections WHERE user_id = '00000000-0000-0000-0000-00000000dead';
SELECT junction_unschedule_sync() AS unscheduled;
SELECT count(*) AS jobs FROM cron.job;
DROP EXTENSION pg_cron;

-- ---------------------------------------------------------------------------------------------
-- 10. Backfill by itself: the "junction backfill" background worker (src/worker.c) claims and
--     runs the job a historical.data.* event queues, once it has a key (it claims nothing without
--     one, which is why sections 7 and 8 had the queue to themselves). Waits at most 30 s.
-- ---------------------------------------------------------------------------------------------
ALTER SYSTEM SET junction.api_base_url = :'mock';
ALTER SYSTEM SET junction.api_key = 'sk_us_test_key';
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);
SELECT pg_temp.deliver('msg_hist_auto', pg_temp.historical('calories_basal', 'apple_health_kit', '2025-03-01T00:00:00+00:00', '2025-03-02T23:59:59+00:00')) > 0 AS delivered;
DO $$
DECLARE
    deadline timestamptz := clock_timestamp() + interval '30 seconds';
    st text;
BEGIN
    LOOP
        SELECT fetch_status INTO st FROM junction.backfills WHERE resource = 'calories_basal';
        EXIT WHEN st IN ('done', 'failed') OR clock_timestamp() > deadline;
        PERFORM pg_sleep(0.1);
    END LOOP;
    RAISE NOTICE 'worker backfill: %', coalesce(st, 'no backfill row');
END
$$;
SELECT resource, provider, fetch_status, rows_loaded, attempts FROM junction.backfills WHERE resource = 'calories_basal';
SELECT count(*) AS samples FROM junction.samples
WHERE user_id = :'alice' AND resource = 'calories_basal' AND time < '2025-04-01';
ALTER SYSTEM RESET junction.api_base_url;
ALTER SYSTEM RESET junction.api_key;
SELECT pg_reload_conf();
