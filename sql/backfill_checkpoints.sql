-- backfill_checkpoints: the backfill queue's state machine, step by step, against the mock
-- Junction API: a claim marks a job running for this backend; each step loads one page and
-- commits its checkpoint (cursor, pages_done, rows_loaded); a failure keeps the checkpoint and
-- the retry resumes there, into the same rows as a clean run; claims are fair across users; a
-- worker start resets only the jobs of backends that are gone; junction.backfill_progress and
-- junction.status show it all; a 429 pauses every data API request (junction._api_pause).
\getenv mock JUNCTION_MOCK_URL
SET junction.api_base_url = :'mock';
SET junction.api_key = 'sk_us_test_key';
SET timezone = 'UTC';
SET datestyle = 'ISO, YMD';
TRUNCATE junction.backfills, junction.workout_streams;
CREATE FUNCTION pg_temp.mock(method text, what text, body jsonb DEFAULT NULL) RETURNS jsonb
LANGUAGE sql AS $$ SELECT junction_api(method, '/_mock/' || what, NULL, body) $$;
SELECT pg_temp.mock('POST', 'reset') IS NOT NULL AS reset;
-- one page per day: a 5-day range is 5 pages
SELECT pg_temp.mock('POST', 'config', '{"page_days": 1}') IS NOT NULL AS configured;
\set u1 '3f1c2a9e-0000-4000-8000-00000000b001'
\set u2 '3f1c2a9e-0000-4000-8000-00000000b002'
CREATE FUNCTION pg_temp.queue(u uuid, resource text, provider text, completed timestamptz) RETURNS void
LANGUAGE sql AS $$
  INSERT INTO junction.backfills (user_id, provider, resource, start_date, end_date, completed_at, received_seq, data)
  VALUES (u, provider, resource, '2025-04-01', '2025-04-05 23:59:59', completed, junction._next_received_seq(), '{}');
$$;
CREATE FUNCTION pg_temp.fingerprint(u uuid) RETURNS text
LANGUAGE sql AS $$
  SELECT count(*) || ' ' || md5(string_agg(format('%s|%s|%s|%s', time, value, provider, source_type), ',' ORDER BY time, provider, source_type))
  FROM junction.samples WHERE user_id = u AND resource = 'heartrate'
$$;

-- ---------------------------------------------------------------------------------------------
-- 1. A clean run (junction_backfill_now) of 5 pages, the reference.
-- ---------------------------------------------------------------------------------------------
SELECT pg_temp.queue(:'u1', 'heartrate', 'apple_health_kit', now());
SELECT junction_backfill_now() AS ran;
SELECT fetch_status, pages_done, cursor IS NULL AS no_cursor, rows_loaded > 0 AS rows, attempts, fast
FROM junction.backfills;
SELECT pg_temp.fingerprint(:'u1') AS clean \gset
DELETE FROM junction.samples WHERE user_id = :'u1';
TRUNCATE junction.backfills;

-- ---------------------------------------------------------------------------------------------
-- 2. Step by step: claim, two pages, a failure on the third, the retry resumes at the third.
-- ---------------------------------------------------------------------------------------------
SELECT pg_temp.queue(:'u1', 'heartrate', 'apple_health_kit', now());
SELECT state, reason, pid, pages_done, rows_loaded, due_at IS NOT NULL AS due FROM junction.backfill_progress;
SELECT to_jsonb(j) AS job FROM junction._backfill_claim() AS j \gset
SELECT fetch_status, claimed_by = pg_backend_pid() AS mine, started_at IS NOT NULL AS started, attempts
FROM junction.backfills;
SELECT junction._backfill_step(jsonb_populate_record(NULL::junction.backfill_job, :'job')) AS finished;
SELECT fetch_status, pages_done, cursor IS NOT NULL AS has_cursor, rows_loaded = run_rows AS run_rows_ok, fast
FROM junction.backfills;
SELECT rows_loaded AS rows_after_1 FROM junction.backfills \gset
SELECT junction._backfill_step(jsonb_populate_record(NULL::junction.backfill_job, :'job')) AS finished;
SELECT pages_done, rows_loaded > :rows_after_1 AS grew FROM junction.backfills;
SELECT rows_loaded AS rows_after_2 FROM junction.backfills \gset
-- the progress view: this backend runs it, 2 pages, a rate
SELECT kind, state, reason, pid = pg_backend_pid() AS mine, pages_done, rows_loaded > 0 AS rows,
       rows_per_second > 0 AS rate, started_at <= last_page_at AS ordered, due_at
FROM junction.backfill_progress;
-- page 3 fails (503, no retry left): the failure is recorded, the checkpoint stays
SET junction.http_retries = 0;
SELECT pg_temp.mock('POST', 'faults', '{"path_prefix": "/v2/timeseries", "responses": [{"status": 503, "body": "{\"detail\": \"busy\"}"}]}') IS NOT NULL AS fault;
SELECT set_config('jx.job', :'job', false) IS NOT NULL AS job_set;
DO $$
DECLARE
    job junction.backfill_job := jsonb_populate_record(NULL::junction.backfill_job, current_setting('jx.job')::jsonb);
    msg text;
    st  text;
BEGIN
    BEGIN
        PERFORM junction._backfill_step(job);
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, st = RETURNED_SQLSTATE;
        RAISE NOTICE 'step failed: % %', st, msg;
        RAISE NOTICE 'now %', junction._backfill_failed(job, msg, st);
    END;
END
$$;
RESET junction.http_retries;
SELECT fetch_status, pages_done, cursor IS NOT NULL AS has_cursor, rows_loaded = :rows_after_2 AS rows_kept,
       attempts, sqlstate, next_attempt_at > now() AS backed_off
FROM junction.backfills;
SELECT state, reason, pid, pages_done FROM junction.backfill_progress;
-- due again: claimed again, it resumes at page 3 and finishes with the clean run's rows
UPDATE junction.backfills SET next_attempt_at = now() - interval '1 second';
SELECT count(*) AS claimed FROM junction._backfill_claim();
SELECT attempts FROM junction.backfills;
DO $$
DECLARE
    job junction.backfill_job;
    steps integer := 1;
BEGIN
    SELECT 'range', b.user_id, b.provider, b.resource, b.start_date, b.end_date, NULL INTO job FROM junction.backfills AS b;
    WHILE NOT junction._backfill_step(job) LOOP
        steps := steps + 1;
    END LOOP;
    RAISE NOTICE 'resumed: % more steps', steps;
END
$$;
SELECT fetch_status, pages_done, cursor IS NULL AS no_cursor, attempts, fetch_error FROM junction.backfills;
SELECT pg_temp.fingerprint(:'u1') = :'clean' AS same_as_clean_run;
SELECT count(*) AS queued FROM junction.backfill_progress;

-- a job re-queued by a newer completion while it runs starts over: cursor and counters reset
UPDATE junction.backfills SET fetch_status = 'running', cursor = 'abc', pages_done = 3;
SELECT junction._upsert_backfills(ARRAY[ROW(junction._next_received_seq(), :'u1'::uuid, 'heartrate', 'historical.data.heartrate.created', now(),
         '{"provider": "apple_health_kit", "start_date": "2025-04-01", "end_date": "2025-04-02"}')::junction.typing_item]) AS requeued;
SELECT fetch_status, cursor, pages_done, rows_loaded, fast FROM junction.backfills;
TRUNCATE junction.backfills;
DELETE FROM junction.samples WHERE user_id IN (:'u1', :'u2');

-- ---------------------------------------------------------------------------------------------
-- 3. Fairness: user 1 has 3 jobs queued first, user 2 one job queued last. The claims go 1, 2, 1:
--    user 2 is not behind all of user 1's jobs, even with one worker.
-- ---------------------------------------------------------------------------------------------
SELECT pg_temp.queue(:'u1', r, 'apple_health_kit', now() - interval '1 hour' + n * interval '1 minute')
FROM unnest(ARRAY['heartrate', 'steps', 'calories_active']) WITH ORDINALITY AS x(r, n);
SELECT pg_temp.queue(:'u2', 'heartrate', 'apple_health_kit', now());
SELECT user_id = :'u2' AS second_user, resource FROM junction._backfill_claim();
-- that job ends; the other user, served never, goes next
UPDATE junction.backfills SET fetch_status = 'done' WHERE fetch_status = 'running';
SELECT user_id = :'u2' AS second_user, resource FROM junction._backfill_claim();
SELECT user_id = :'u2' AS second_user, resource FROM junction._backfill_claim();
-- with user 2's job still running, user 1's next job still goes out (the fewest running first)
SELECT user_id = :'u2' AS second_user, resource FROM junction._backfill_claim();
SELECT count(*) AS claimed FROM junction._backfill_claim();

-- ---------------------------------------------------------------------------------------------
-- 4. A worker start resets only the jobs of backends that are gone.
-- ---------------------------------------------------------------------------------------------
UPDATE junction.backfills SET fetch_status = 'running', claimed_by = 2147483000 WHERE user_id = :'u2';
UPDATE junction.backfills AS b SET fetch_status = 'running',
       claimed_by = (SELECT min(w.pid) FROM junction._worker_state() AS w WHERE w.kind = 'backfill')
WHERE b.user_id = :'u1' AND b.resource = 'steps';
SELECT junction._backfill_reset_running() AS reset;
SELECT user_id = :'u2' AS second_user, resource, fetch_status FROM junction.backfills ORDER BY 1, 2;

-- ---------------------------------------------------------------------------------------------
-- 5. junction.status: the backfill workers (junction.backfill_workers = 2 by default) and the
--    queue's totals; no API pause.
-- ---------------------------------------------------------------------------------------------
SELECT array_length(backfill_pids, 1) AS backfill_workers, backfill_pid = backfill_pids[1] AS first,
       backfills_running, backfills_pending, backfills_failed, api_paused_until
FROM junction.status;
SELECT current_setting('junction.backfill_workers') AS backfill_workers_setting;
TRUNCATE junction.backfills;

-- ---------------------------------------------------------------------------------------------
-- 6. A 429 pauses every data API request of every backend (shared memory), for its Retry-After.
-- ---------------------------------------------------------------------------------------------
SELECT pauses AS pauses_before FROM junction._api_pause() \gset
SELECT pg_temp.mock('POST', 'faults', '{"path_prefix": "/v2/summary/sleep", "responses": [{"status": 429, "headers": {"Retry-After": "1"}, "body": "{\"detail\": \"slow down\"}"}]}') IS NOT NULL AS fault;
SELECT junction_fetch('sleep', :'u1', '2025-04-01', '2025-04-02') IS NOT NULL AS fetched_after_429;
SELECT pauses - :pauses_before AS new_pauses, paused_until IS NULL AS pause_over FROM junction._api_pause();
SELECT pg_temp.mock('POST', 'reset') IS NOT NULL AS reset;

-- ---------------------------------------------------------------------------------------------
-- 7. junction_sync_queue: a long junction_sync as backfill jobs (checkpointed, resumable, visible)
-- ---------------------------------------------------------------------------------------------
TRUNCATE junction.backfills;
DELETE FROM junction.connections WHERE user_id = :'u1';
\set VERBOSITY default
SELECT provider, resource, start_date, end_date FROM junction_sync_queue(:'u1', ARRAY['heartrate'], '2025-04-01', '2025-04-03 23:59:59');
SELECT provider, resource, start_date, end_date FROM junction_sync_queue(:'u1', ARRAY['no_such_resource'], '2025-04-01', '2025-04-03', 'oura');
SELECT provider, resource, start_date, end_date FROM junction_sync_queue(:'u1', ARRAY['heartrate'], '2025-04-03', '2025-04-01', 'oura');
\set VERBOSITY terse
SELECT provider, resource, start_date, end_date FROM junction_sync_queue(:'u1', ARRAY['heartrate', 'sleep'], '2025-04-01', '2025-04-03 23:59:59', 'apple_health_kit');
SELECT kind, resource, provider, state, reason, start_date, end_date FROM junction.backfill_progress ORDER BY resource;
SELECT junction_backfill_now() AS ran;
SELECT resource, fetch_status, pages_done, rows_loaded > 0 AS rows FROM junction.backfills ORDER BY resource;
SELECT count(*) > 0 AS samples FROM junction.samples WHERE user_id = :'u1' AND resource = 'heartrate';
-- with no provider: one job per connected provider
INSERT INTO junction.connections (user_id, provider, status, updated_at, received_seq, data)
VALUES (:'u1', 'oura', 'connected', now(), junction._next_received_seq(), '{}'),
       (:'u1', 'garmin', 'connected', now(), junction._next_received_seq(), '{}'),
       (:'u1', 'withings', 'error', now(), junction._next_received_seq(), '{}');
SELECT provider, resource, start_date, end_date FROM junction_sync_queue(:'u1', ARRAY['steps'], '2025-04-01', '2025-04-01 23:59:59');
DELETE FROM junction.connections WHERE user_id = :'u1';
TRUNCATE junction.backfills;
DELETE FROM junction.samples WHERE user_id = :'u1';
SELECT pg_temp.mock('POST', 'reset') IS NOT NULL AS reset;
