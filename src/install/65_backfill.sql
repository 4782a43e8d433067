-- ---------------------------------------------------------------------------------------------
-- The backfill queue: historical.data.* completions (junction.backfills), workout stream
-- notifications (junction.workout_streams) and lab orders whose results are due
-- (junction.lab_orders.result_fetch_status, src/install/37_lab.sql). The worker runs claim / run / failed in three
-- transactions; junction_backfill_now() runs the same loop in the caller's transaction.
-- ---------------------------------------------------------------------------------------------
CREATE TYPE junction.backfill_job AS (
    kind       text,          -- 'range' (junction.backfills), 'workout_stream' (junction.workout_streams), 'lab_result'
    user_id    uuid,
    provider   text,
    resource   text,
    start_date timestamptz,
    end_date   timestamptz,
    workout_id uuid,
    order_id   uuid           -- 'lab_result' (junction.lab_orders): the order whose results to fetch
);
COMMENT ON TYPE junction.backfill_job IS 'one claimed backfill: a range of one resource, one workout stream, or one lab order''s results';

-- Claim at most one due job: mark it running and count the attempt. Nothing is claimed while
-- no API key is configured (the jobs would only fail).
CREATE FUNCTION junction._backfill_claim()
RETURNS SETOF junction.backfill_job
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT junction._api_key_configured(false) THEN
        RETURN;
    END IF;
    -- lab results first: a completed (or critical) order is waited for by a clinician
    RETURN QUERY
    UPDATE junction.lab_orders AS t
    SET result_fetch_status = 'running', result_attempts = t.result_attempts + 1
    FROM (SELECT o.user_id, o.id
          FROM junction.lab_orders AS o
          WHERE o.result_fetch_status = 'pending'
            AND (o.result_next_attempt_at IS NULL OR o.result_next_attempt_at <= clock_timestamp()
                 OR o.result_attempts = 0)
          ORDER BY coalesce(o.result_next_attempt_at, o.updated_at), o.user_id, o.id
          LIMIT 1
          FOR UPDATE SKIP LOCKED) AS c
    WHERE t.user_id = c.user_id AND t.id = c.id
    RETURNING 'lab_result'::text, t.user_id, NULL::text, 'lab_result'::text,
              NULL::timestamptz, NULL::timestamptz, NULL::uuid, t.id;
    IF FOUND THEN
        RETURN;
    END IF;
    RETURN QUERY
    UPDATE junction.backfills AS t
    SET fetch_status = 'running', attempts = t.attempts + 1, updated_at = now()
    FROM (SELECT b.user_id, b.provider, b.resource
          FROM junction.backfills AS b
          WHERE b.fetch_status = 'pending'
            AND (b.next_attempt_at IS NULL OR b.next_attempt_at <= clock_timestamp() OR b.attempts = 0)
          ORDER BY coalesce(b.next_attempt_at, b.completed_at), b.user_id, b.provider, b.resource
          LIMIT 1
          FOR UPDATE SKIP LOCKED) AS c
    WHERE t.user_id = c.user_id AND t.provider = c.provider AND t.resource = c.resource
    RETURNING 'range'::text, t.user_id, t.provider, t.resource, t.start_date, t.end_date, NULL::uuid, NULL::uuid;
    IF FOUND THEN
        RETURN;
    END IF;
    RETURN QUERY
    UPDATE junction.workout_streams AS t
    SET fetch_status = 'running', attempts = t.attempts + 1, updated_at = now()
    FROM (SELECT w.user_id, w.workout_id
          FROM junction.workout_streams AS w
          WHERE w.fetch_status = 'pending'
            AND (w.next_attempt_at IS NULL OR w.next_attempt_at <= clock_timestamp() OR w.attempts = 0)
          ORDER BY coalesce(w.next_attempt_at, w.updated_at), w.user_id, w.workout_id
          LIMIT 1
          FOR UPDATE SKIP LOCKED) AS c
    WHERE t.user_id = c.user_id AND t.workout_id = c.workout_id
    RETURNING 'workout_stream'::text, t.user_id, t.provider, 'workout_stream'::text,
              NULL::timestamptz, NULL::timestamptz, t.workout_id, NULL::uuid;
END
$$;
COMMENT ON FUNCTION junction._backfill_claim() IS
  'claim one due backfill job (FOR UPDATE SKIP LOCKED), mark it running, count the attempt; none while no API key is configured';

-- Run a claimed job: load exactly that user/provider/resource/range, or fetch that workout
-- stream; mark it done (unless a newer event re-queued it meanwhile). Returns rows loaded.
CREATE FUNCTION junction._backfill_run(kind text, user_id uuid, provider text, resource text,
                                       start_date timestamptz, end_date timestamptz, workout_id uuid)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n bigint;
BEGIN
    IF kind = 'range' THEN
        IF NOT EXISTS (SELECT FROM junction.resources AS r
                       WHERE r.name = _backfill_run.resource AND r.event_prefix = 'daily.data') THEN
            -- a resource we do not type (yet): nothing to fetch, and retrying will not help
            UPDATE junction.backfills AS b
            SET fetch_status = 'unsupported', rows_loaded = 0, next_attempt_at = NULL, updated_at = now(),
                fetch_error = format('resource %s is not in junction.resources', quote_literal(_backfill_run.resource))
            WHERE b.user_id = _backfill_run.user_id AND b.provider = _backfill_run.provider
              AND b.resource = _backfill_run.resource AND b.fetch_status = 'running';
            RETURN 0;
        END IF;
        -- streams of a historical pull are queued, one job each
        n := junction._sync_resource(user_id, resource, start_date, end_date, provider, false);
        UPDATE junction.backfills AS b
        SET fetch_status = 'done', rows_loaded = n, fetch_error = NULL, sqlstate = NULL,
            next_attempt_at = NULL, updated_at = now()
        WHERE b.user_id = _backfill_run.user_id AND b.provider = _backfill_run.provider
          AND b.resource = _backfill_run.resource AND b.fetch_status = 'running';
        RETURN n;
    ELSIF kind = 'workout_stream' THEN
        IF workout_id IS NULL THEN
            RAISE EXCEPTION 'a workout_stream job needs a workout_id' USING ERRCODE = '22004';
        END IF;
        UPDATE junction.workout_streams AS s
        SET data = @extschema@.junction_fetch_workout_stream(_backfill_run.workout_id),
            fetch_status = 'done', fetch_error = NULL, sqlstate = NULL, next_attempt_at = NULL,
            fetched_at = now(), updated_at = now()
        WHERE s.user_id = _backfill_run.user_id AND s.workout_id = _backfill_run.workout_id
          AND s.fetch_status = 'running';
        GET DIAGNOSTICS n = ROW_COUNT;      -- 0 if a newer notification re-queued it meanwhile
        RETURN n;
    END IF;
    RAISE EXCEPTION 'unknown backfill job kind %', coalesce(quote_literal(kind), 'NULL') USING ERRCODE = '22023';
END
$$;
COMMENT ON FUNCTION junction._backfill_run(text, uuid, text, text, timestamptz, timestamptz, uuid) IS
  'run one claimed backfill job (a range of a resource, or a workout stream) and mark it done; returns rows loaded';

CREATE FUNCTION junction._backfill_run(job junction.backfill_job)
RETURNS bigint
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT CASE WHEN job.kind = 'lab_result'
                   THEN junction._lab_result_run(job.user_id, junction._require(job.order_id, 'order_id'))
                   ELSE junction._backfill_run(job.kind, job.user_id, job.provider, job.resource,
                                               job.start_date, job.end_date, job.workout_id) END $$;
COMMENT ON FUNCTION junction._backfill_run(junction.backfill_job) IS
  'junction._backfill_run for a claimed job row (a lab_result job: junction._lab_result_run)';

-- Record a failed run: back to pending with a backoff (30 s, 2 min) while attempts < 3, else
-- failed. Returns the job's new fetch_status (null if it was re-queued meanwhile).
CREATE FUNCTION junction._backfill_failed(kind text, user_id uuid, provider text, resource text,
                                          start_date timestamptz, end_date timestamptz, workout_id uuid,
                                          error text, sqlstate text)
RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
-- start_date and end_date are unused: a running job is found by its key alone, and the job's
-- fields travel together (junction.backfill_job), so the extra plpgsql_check warnings are off.
-- @plpgsql_check_options: extra_warnings = off
DECLARE
    max_attempts constant integer := 3;
    status       text;
BEGIN
    IF kind = 'range' THEN
        UPDATE junction.backfills AS b
        SET fetch_status = CASE WHEN b.attempts < max_attempts THEN 'pending' ELSE 'failed' END,
            next_attempt_at = CASE WHEN b.attempts < max_attempts
                                   THEN clock_timestamp() + interval '30 seconds' * power(4, b.attempts - 1) END,
            fetch_error = left(coalesce(error, 'unknown error'), 2000),
            sqlstate = _backfill_failed.sqlstate, updated_at = now()
        WHERE b.user_id = _backfill_failed.user_id AND b.provider = _backfill_failed.provider
          AND b.resource = _backfill_failed.resource AND b.fetch_status = 'running'
        RETURNING b.fetch_status INTO status;
    ELSIF kind = 'workout_stream' THEN
        UPDATE junction.workout_streams AS s
        SET fetch_status = CASE WHEN s.attempts < max_attempts THEN 'pending' ELSE 'failed' END,
            next_attempt_at = CASE WHEN s.attempts < max_attempts
                                   THEN clock_timestamp() + interval '30 seconds' * power(4, s.attempts - 1) END,
            fetch_error = left(coalesce(error, 'unknown error'), 2000),
            sqlstate = _backfill_failed.sqlstate, updated_at = now()
        WHERE s.user_id = _backfill_failed.user_id AND s.workout_id = _backfill_failed.workout_id
          AND s.fetch_status = 'running'
        RETURNING s.fetch_status INTO status;
    ELSE
        RAISE EXCEPTION 'unknown backfill job kind %', coalesce(quote_literal(kind), 'NULL') USING ERRCODE = '22023';
    END IF;
    RETURN status;
END
$$;
COMMENT ON FUNCTION junction._backfill_failed(text, uuid, text, text, timestamptz, timestamptz, uuid, text, text) IS
  'record a failed backfill run: pending again after a backoff while attempts < 3, else failed with the error and SQLSTATE';

CREATE FUNCTION junction._backfill_failed(job junction.backfill_job, error text, sqlstate text)
RETURNS text
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT CASE WHEN job.kind = 'lab_result'
                   THEN junction._lab_result_failed(job.user_id, job.order_id, error, sqlstate)
                   ELSE junction._backfill_failed(job.kind, job.user_id, job.provider, job.resource,
                                                  job.start_date, job.end_date, job.workout_id, error,
                                                  sqlstate) END $$;
COMMENT ON FUNCTION junction._backfill_failed(junction.backfill_job, text, text) IS
  'junction._backfill_failed for a claimed job row (a lab_result job: junction._lab_result_failed)';


-- At worker start nothing can be running: a job left running was interrupted (crash, restart).
CREATE FUNCTION junction._backfill_reset_running()
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    a integer;
    b integer;
BEGIN
    UPDATE junction.backfills SET fetch_status = 'pending', updated_at = now() WHERE fetch_status = 'running';
    GET DIAGNOSTICS a = ROW_COUNT;
    UPDATE junction.workout_streams SET fetch_status = 'pending', updated_at = now() WHERE fetch_status = 'running';
    GET DIAGNOSTICS b = ROW_COUNT;
    a := a + b;
    UPDATE junction.lab_orders SET result_fetch_status = 'pending' WHERE result_fetch_status = 'running';
    GET DIAGNOSTICS b = ROW_COUNT;
    RETURN a + b;
END
$$;
COMMENT ON FUNCTION junction._backfill_reset_running() IS
  'put running backfill jobs back to pending (the worker calls it at start); returns how many';

CREATE FUNCTION junction_backfill_now(max_jobs integer DEFAULT 10)
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    job   junction.backfill_job;
    ran   integer := 0;
    msg   text;
    state text;
BEGIN
    IF max_jobs IS NULL OR max_jobs < 0 THEN
        RAISE EXCEPTION 'max_jobs must be >= 0' USING ERRCODE = '22023';
    END IF;
    IF NOT junction._api_key_configured(false) THEN
        RAISE EXCEPTION 'junction.api_key is not set' USING ERRCODE = '28000',
            HINT = 'As a superuser, put the key in a file only the database user can read, then: ALTER SYSTEM SET junction.api_key_file = ''/path/to/file''; SELECT pg_reload_conf();';
    END IF;
    WHILE ran < max_jobs LOOP
        SELECT * INTO job FROM junction._backfill_claim();
        EXIT WHEN NOT FOUND;
        BEGIN
            PERFORM junction._backfill_run(job);
        EXCEPTION WHEN OTHERS THEN
            -- the run's partial work is rolled back; the claim (attempt count) stays
            GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, state = RETURNED_SQLSTATE;
            PERFORM junction._backfill_failed(job, msg, state);
        END;
        ran := ran + 1;
    END LOOP;
    RETURN ran;
END
$$;
COMMENT ON FUNCTION junction_backfill_now(integer) IS
  'run up to max_jobs due backfill jobs now, in this transaction (what the backfill worker does); returns jobs run';
