-- ---------------------------------------------------------------------------------------------
-- The backfill queue: lab orders whose results are due (junction.lab_orders.result_fetch_status,
-- src/install/37_lab.sql), historical.data.* completions (junction.backfills) and workout stream
-- notifications (junction.workout_streams). junction.backfill_workers workers each claim a job
-- (SKIP LOCKED, fairly across users), then run it one step (one page) per transaction: every
-- committed page is a checkpoint (cursor, pages_done, rows_loaded) that a crash, a restart or a
-- failure resumes from. A failure is recorded in a transaction of its own.
-- junction_backfill_now() runs the same loop in the caller's transaction.
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

-- Claim at most one due job: mark it running for this backend and count the attempt. Fair across
-- users: the user with the fewest jobs running goes first, then the one whose last job started
-- longest ago (never: first), then the job due first. Nothing is claimed while no API key is
-- configured (the jobs would only fail). The candidates are read first, without a lock; each is
-- then locked by its key (SKIP LOCKED: another worker's claim is passed over, not waited for) and
-- claimed if it is still due. Every locking statement names one user, so on Citus each is routed
-- to the one shard that holds the job.
CREATE FUNCTION junction._backfill_claim()
RETURNS SETOF junction.backfill_job
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c  record;
    -- a value, not a call, in the claiming UPDATEs: Citus runs no VOLATILE function in an UPDATE
    -- of a distributed table
    ts timestamptz;
    -- users being claimed by another backend (see below)
    busy  uuid[] := '{}'::uuid[];
    fair  boolean := true;
    tried integer;
BEGIN
    IF NOT junction._api_key_configured(false) THEN
        RETURN;
    END IF;
    -- lab results first: a completed (or critical) order is waited for by a clinician
    FOR c IN
        SELECT o.user_id, o.id
        FROM junction.lab_orders AS o
        WHERE o.result_fetch_status = 'pending'
          AND (o.result_next_attempt_at IS NULL OR o.result_next_attempt_at <= clock_timestamp()
               OR o.result_attempts = 0)
        ORDER BY coalesce(o.result_next_attempt_at, o.updated_at), o.user_id, o.id
        LIMIT 16
    LOOP
        PERFORM FROM junction.lab_orders AS o
        WHERE o.user_id = c.user_id AND o.id = c.id AND o.result_fetch_status = 'pending'
        FOR UPDATE SKIP LOCKED;
        CONTINUE WHEN NOT FOUND;
        RETURN QUERY
        UPDATE junction.lab_orders AS t
        SET result_fetch_status = 'running', result_attempts = t.result_attempts + 1,
            result_claimed_by = pg_backend_pid()
        WHERE t.user_id = c.user_id AND t.id = c.id
        RETURNING 'lab_result'::text, t.user_id, NULL::text, 'lab_result'::text,
                  NULL::timestamptz, NULL::timestamptz, NULL::uuid, t.id;
        RETURN;
    END LOOP;
    -- A user one of whose jobs another backend is claiming right now (the row locked, or no longer
    -- pending) is served: while that claim is uncommitted its job still reads as pending here, and
    -- without this two workers woken together would both take the same user's first jobs. Such
    -- users' jobs are passed over while another user has one due; then taken, if nothing else is.
    LOOP
        tried := 0;
        FOR c IN
        WITH due AS (
            SELECT DISTINCT b.user_id
            FROM junction.backfills AS b
            WHERE b.fetch_status = 'pending'
              AND (b.next_attempt_at IS NULL OR b.next_attempt_at <= clock_timestamp() OR b.attempts = 0)
              AND (NOT fair OR b.user_id <> ALL (busy))
        ), users AS (
            SELECT r.user_id, count(*) FILTER (WHERE r.fetch_status = 'running') AS running,
                   max(r.started_at) AS last_started
            FROM junction.backfills AS r
            WHERE r.user_id IN (SELECT due.user_id FROM due)
            GROUP BY r.user_id
        )
        SELECT b.user_id, b.provider, b.resource
        FROM junction.backfills AS b
        JOIN users AS u ON u.user_id = b.user_id
        WHERE b.fetch_status = 'pending'
          AND (b.next_attempt_at IS NULL OR b.next_attempt_at <= clock_timestamp() OR b.attempts = 0)
        ORDER BY u.running, u.last_started NULLS FIRST, coalesce(b.next_attempt_at, b.completed_at),
                 b.user_id, b.provider, b.resource
        LIMIT 16
    LOOP
        tried := tried + 1;
        CONTINUE WHEN fair AND c.user_id = ANY (busy);
        PERFORM FROM junction.backfills AS b
        WHERE b.user_id = c.user_id AND b.provider = c.provider AND b.resource = c.resource
          AND b.fetch_status = 'pending'
        FOR UPDATE SKIP LOCKED;
        IF NOT FOUND THEN
            busy := busy || c.user_id;
            CONTINUE;
        END IF;
        ts := clock_timestamp();
        RETURN QUERY
        UPDATE junction.backfills AS t
        SET fetch_status = 'running', attempts = t.attempts + 1, updated_at = now(),
            started_at = ts, claimed_by = pg_backend_pid(), run_rows = 0
        WHERE t.user_id = c.user_id AND t.provider = c.provider AND t.resource = c.resource
        RETURNING 'range'::text, t.user_id, t.provider, t.resource, t.start_date, t.end_date, NULL::uuid, NULL::uuid;
        RETURN;
    END LOOP;
        -- every candidate tried (each new one adds its user to busy, or was a busy user's): again
        -- without those users, and once they are all there is, with them
        CONTINUE WHEN fair AND tried > 0;
        EXIT WHEN NOT fair OR cardinality(busy) = 0;
        fair := false;
    END LOOP;
    FOR c IN
        SELECT w.user_id, w.workout_id
        FROM junction.workout_streams AS w
        WHERE w.fetch_status = 'pending'
          AND (w.next_attempt_at IS NULL OR w.next_attempt_at <= clock_timestamp() OR w.attempts = 0)
        ORDER BY coalesce(w.next_attempt_at, w.updated_at), w.user_id, w.workout_id
        LIMIT 16
    LOOP
        PERFORM FROM junction.workout_streams AS w
        WHERE w.user_id = c.user_id AND w.workout_id = c.workout_id AND w.fetch_status = 'pending'
        FOR UPDATE SKIP LOCKED;
        CONTINUE WHEN NOT FOUND;
        RETURN QUERY
        UPDATE junction.workout_streams AS t
        SET fetch_status = 'running', attempts = t.attempts + 1, updated_at = now(), claimed_by = pg_backend_pid()
        WHERE t.user_id = c.user_id AND t.workout_id = c.workout_id
        RETURNING 'workout_stream'::text, t.user_id, t.provider, 'workout_stream'::text,
                  NULL::timestamptz, NULL::timestamptz, t.workout_id, NULL::uuid;
        RETURN;
    END LOOP;
END
$$;
COMMENT ON FUNCTION junction._backfill_claim() IS
  'claim one due backfill job (candidates read unlocked, then each locked by key with SKIP LOCKED; fewest running jobs per user first, then the user served longest ago), mark it running for this backend, count the attempt; none while no API key is configured';

-- One step of a claimed job, in the caller's transaction: the next page of a timeseries range
-- (from the job's cursor), or the whole of any other job (a summary range, the workouts of a
-- stream range, one workout stream). The page and its checkpoint (cursor, pages_done,
-- rows_loaded, last_page_at) commit together, so a page is never loaded twice into a different
-- result, and a loaded page resets the failure count. Returns true when the job needs no
-- further step: done, unsupported, or no longer running here (a newer event re-queued it).
CREATE FUNCTION junction._backfill_step(kind text, user_id uuid, provider text, resource text,
                                        start_date timestamptz, end_date timestamptz, workout_id uuid)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    b      junction.backfills;
    res    junction.resources;
    groups jsonb;
    items  junction.typing_item[];
    nc     text;
    use_fast boolean;
    n      bigint := 0;
    page_at timestamptz;
BEGIN
    IF kind = 'range' THEN
        SELECT * INTO b FROM junction.backfills AS x
        WHERE x.user_id = _backfill_step.user_id AND x.provider = _backfill_step.provider
          AND x.resource = _backfill_step.resource AND x.fetch_status = 'running'
        FOR UPDATE;
        IF NOT FOUND THEN
            RETURN true;                    -- re-queued by a newer event meanwhile
        END IF;
        IF NOT EXISTS (SELECT FROM junction.resources AS r
                       WHERE r.name = _backfill_step.resource AND r.event_prefix = 'daily.data') THEN
            -- a resource we do not type (yet): nothing to fetch, and retrying will not help
            UPDATE junction.backfills AS x
            SET fetch_status = 'unsupported', rows_loaded = 0, next_attempt_at = NULL, updated_at = now(),
                fetch_error = format('resource %s is not in junction.resources', quote_literal(_backfill_step.resource))
            WHERE x.user_id = b.user_id AND x.provider = b.provider AND x.resource = b.resource;
            RETURN true;
        END IF;
        res := junction._api_resource(resource);
        IF res.kind = 'timeseries' THEN
            -- the first-backfill fast path (plain INSERTs) is decided at the first page: the user
            -- has no sample of this resource in or near the range. A page that meets a key after
            -- all (a concurrent writer, one key on two pages) rolls back to ON CONFLICT, for good.
            use_fast := coalesce(b.fast, NOT EXISTS (
                SELECT FROM junction.samples AS x
                WHERE x.user_id = b.user_id AND x.resource = res.name
                  AND x.time >= b.start_date - interval '2 days'
                  AND x.time <= coalesce(b.end_date, 'infinity') + interval '2 days'));
            SELECT t.groups, t.next_cursor INTO groups, nc
            FROM junction._timeseries_page(res, user_id, start_date, end_date, provider, b.cursor,
                                           use_fast AND junction._samples_bulk_ok()) AS t;
            items := junction._page_items(user_id, res.name, groups);
            IF items IS NOT NULL AND use_fast AND junction._subxact_room() THEN
                BEGIN
                    n := junction._upsert_samples(items, false);
                EXCEPTION WHEN unique_violation THEN
                    use_fast := false;
                    n := junction._upsert_samples(items, true);
                END;
            ELSIF items IS NOT NULL THEN
                n := junction._upsert_samples(items, true);
            END IF;
        ELSE
            -- one request (a summary range; the workouts whose streams are queued, one job each)
            n := junction._sync_resource(user_id, resource, start_date, end_date, provider, false);
        END IF;
        page_at := clock_timestamp();
        UPDATE junction.backfills AS x
        SET cursor = nc, pages_done = x.pages_done + 1, rows_loaded = coalesce(x.rows_loaded, 0) + n,
            run_rows = x.run_rows + n,
            fast = use_fast, last_page_at = page_at, attempts = 1,
            fetch_status = CASE WHEN nc IS NULL THEN 'done' ELSE 'running' END,
            fetch_error = NULL, sqlstate = NULL, next_attempt_at = NULL, updated_at = now()
        WHERE x.user_id = b.user_id AND x.provider = b.provider AND x.resource = b.resource;
        RETURN nc IS NULL;
    ELSIF kind = 'workout_stream' THEN
        IF workout_id IS NULL THEN
            RAISE EXCEPTION 'a workout_stream job needs a workout_id' USING ERRCODE = '22004';
        END IF;
        UPDATE junction.workout_streams AS s
        SET data = @extschema@.junction_fetch_workout_stream(_backfill_step.workout_id),
            fetch_status = 'done', fetch_error = NULL, sqlstate = NULL, next_attempt_at = NULL,
            fetched_at = now(), updated_at = now()
        WHERE s.user_id = _backfill_step.user_id AND s.workout_id = _backfill_step.workout_id
          AND s.fetch_status = 'running';   -- no row if a newer notification re-queued it meanwhile
        RETURN true;
    END IF;
    RAISE EXCEPTION 'unknown backfill job kind %', coalesce(quote_literal(kind), 'NULL') USING ERRCODE = '22023';
END
$$;
COMMENT ON FUNCTION junction._backfill_step(text, uuid, text, text, timestamptz, timestamptz, uuid) IS
  'one checkpointed step of a claimed backfill job (the next timeseries page from the cursor, or the whole of any other job); true when no further step is needed';

CREATE FUNCTION junction._backfill_step(job junction.backfill_job)
RETURNS boolean
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT CASE WHEN job.kind = 'lab_result'
                   -- one step: fetch and load the order's results (whatever the row count)
                   THEN (SELECT true FROM junction._lab_result_run(job.user_id,
                                                                 junction._require(job.order_id, 'order_id')) AS n)
                   ELSE junction._backfill_step(job.kind, job.user_id, job.provider, job.resource,
                                                job.start_date, job.end_date, job.workout_id) END $$;
COMMENT ON FUNCTION junction._backfill_step(junction.backfill_job) IS
  'junction._backfill_step for a claimed job row (a lab_result job: junction._lab_result_run, in one step)';

-- Run a claimed job to the end in the caller's transaction (junction_backfill_now): its steps
-- one after another. Returns the rows this call loaded.
CREATE FUNCTION junction._backfill_run(kind text, user_id uuid, provider text, resource text,
                                       start_date timestamptz, end_date timestamptz, workout_id uuid)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    before bigint;
    after  bigint;
BEGIN
    IF kind = 'range' THEN
        SELECT coalesce(b.rows_loaded, 0) INTO before FROM junction.backfills AS b
        WHERE b.user_id = _backfill_run.user_id AND b.provider = _backfill_run.provider
          AND b.resource = _backfill_run.resource;
    END IF;
    WHILE NOT junction._backfill_step(kind, user_id, provider, resource, start_date, end_date, workout_id) LOOP
    END LOOP;
    IF kind = 'range' THEN
        SELECT coalesce(b.rows_loaded, 0) INTO after FROM junction.backfills AS b
        WHERE b.user_id = _backfill_run.user_id AND b.provider = _backfill_run.provider
          AND b.resource = _backfill_run.resource;
        RETURN after - coalesce(before, 0);
    END IF;
    RETURN CASE WHEN EXISTS (SELECT FROM junction.workout_streams AS s
                             WHERE s.user_id = _backfill_run.user_id AND s.workout_id = _backfill_run.workout_id
                               AND s.fetch_status = 'done') THEN 1 ELSE 0 END;
END
$$;
COMMENT ON FUNCTION junction._backfill_run(text, uuid, text, text, timestamptz, timestamptz, uuid) IS
  'run one claimed backfill job to the end in this transaction (its steps in a row); returns rows loaded';

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
-- failed. The checkpoint stays: the retry resumes at the page that failed, and a page loaded
-- since the claim has reset attempts to 1. Returns the job's new fetch_status (null if it was
-- re-queued meanwhile).
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
    failed_at    constant timestamptz := clock_timestamp();
BEGIN
    IF kind = 'range' THEN
        UPDATE junction.backfills AS b
        SET fetch_status = CASE WHEN b.attempts < max_attempts THEN 'pending' ELSE 'failed' END,
            -- the time outside the CASE (Citus: no non-IMMUTABLE function inside one); + null is null
            next_attempt_at = failed_at + CASE WHEN b.attempts < max_attempts
                                               THEN interval '30 seconds' * power(4, b.attempts - 1) END,
            fetch_error = left(coalesce(error, 'unknown error'), 2000),
            sqlstate = _backfill_failed.sqlstate, updated_at = now()
        WHERE b.user_id = _backfill_failed.user_id AND b.provider = _backfill_failed.provider
          AND b.resource = _backfill_failed.resource AND b.fetch_status = 'running'
        RETURNING b.fetch_status INTO status;
    ELSIF kind = 'workout_stream' THEN
        UPDATE junction.workout_streams AS s
        SET fetch_status = CASE WHEN s.attempts < max_attempts THEN 'pending' ELSE 'failed' END,
            -- the time outside the CASE (Citus: no non-IMMUTABLE function inside one); + null is null
            next_attempt_at = failed_at + CASE WHEN s.attempts < max_attempts
                                               THEN interval '30 seconds' * power(4, s.attempts - 1) END,
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


-- At a backfill worker's start: a job left running by a backend that is gone (a crash, a restart)
-- goes back to pending, and resumes from its checkpoint. Jobs that live workers run stay theirs.
CREATE FUNCTION junction._backfill_reset_running()
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    live integer[];
    a    integer;
    b    integer;
BEGIN
    SELECT coalesce(array_agg(w.pid), '{}') INTO live
    FROM junction._worker_state() AS w
    WHERE w.kind = 'backfill' AND w.pid <> pg_backend_pid();
    UPDATE junction.backfills SET fetch_status = 'pending', claimed_by = NULL, updated_at = now()
    WHERE fetch_status = 'running' AND (claimed_by IS NULL OR claimed_by <> ALL (live));
    GET DIAGNOSTICS a = ROW_COUNT;
    UPDATE junction.workout_streams SET fetch_status = 'pending', claimed_by = NULL, updated_at = now()
    WHERE fetch_status = 'running' AND (claimed_by IS NULL OR claimed_by <> ALL (live));
    GET DIAGNOSTICS b = ROW_COUNT;
    a := a + b;
    UPDATE junction.lab_orders SET result_fetch_status = 'pending', result_claimed_by = NULL
    WHERE result_fetch_status = 'running' AND (result_claimed_by IS NULL OR result_claimed_by <> ALL (live));
    GET DIAGNOSTICS b = ROW_COUNT;
    RETURN a + b;
END
$$;
COMMENT ON FUNCTION junction._backfill_reset_running() IS
  'put running backfill jobs whose backend is no live backfill worker back to pending (a worker calls it at start); returns how many';

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

-- ---------------------------------------------------------------------------------------------
-- Progress: every running and queued job, from the job tables (each step commits its checkpoint,
-- so this is current to the last page).
-- ---------------------------------------------------------------------------------------------
CREATE VIEW junction.backfill_progress AS
SELECT 'range'::text AS kind, b.user_id, b.provider, b.resource, NULL::uuid AS workout_id,
       b.fetch_status AS state,
       CASE WHEN b.fetch_status = 'running' THEN NULL
            WHEN b.pages_done > 0 AND b.cursor IS NOT NULL THEN 'resume'
            WHEN b.attempts > 0 THEN 'retry'
            ELSE 'new' END AS reason,
       CASE WHEN b.fetch_status = 'running' THEN b.claimed_by END AS pid,
       b.pages_done, coalesce(b.rows_loaded, 0) AS rows_loaded, b.run_rows,
       CASE WHEN b.fetch_status = 'running' AND b.last_page_at > b.started_at
            THEN round((b.run_rows / extract(epoch FROM b.last_page_at - b.started_at))::numeric, 1) END
         AS rows_per_second,
       b.started_at, b.last_page_at, b.attempts,
       CASE WHEN b.fetch_status <> 'pending' THEN NULL
            WHEN b.attempts = 0 OR b.next_attempt_at IS NULL THEN b.completed_at
            ELSE b.next_attempt_at END AS due_at,
       b.start_date, b.end_date, b.fetch_error
FROM junction.backfills AS b
WHERE b.fetch_status IN ('running', 'pending')
UNION ALL
SELECT 'workout_stream', s.user_id, s.provider, 'workout_stream', s.workout_id,
       s.fetch_status,
       CASE WHEN s.fetch_status = 'running' THEN NULL
            WHEN s.attempts > 0 THEN 'retry'
            ELSE 'new' END,
       CASE WHEN s.fetch_status = 'running' THEN s.claimed_by END,
       NULL, NULL, NULL, NULL, NULL, NULL, s.attempts,
       CASE WHEN s.fetch_status <> 'pending' THEN NULL
            WHEN s.attempts = 0 OR s.next_attempt_at IS NULL THEN s.updated_at
            ELSE s.next_attempt_at END,
       NULL, NULL, s.fetch_error
FROM junction.workout_streams AS s
WHERE s.fetch_status IN ('running', 'pending')
UNION ALL
SELECT 'lab_result', o.user_id, NULL, 'lab_result', NULL,
       o.result_fetch_status,
       CASE WHEN o.result_fetch_status = 'running' THEN NULL
            WHEN o.result_attempts > 0 THEN 'retry'
            ELSE 'new' END,
       CASE WHEN o.result_fetch_status = 'running' THEN o.result_claimed_by END,
       NULL, NULL, NULL, NULL, NULL, NULL, o.result_attempts,
       CASE WHEN o.result_fetch_status <> 'pending' THEN NULL
            WHEN o.result_attempts = 0 OR o.result_next_attempt_at IS NULL THEN o.updated_at
            ELSE o.result_next_attempt_at END,
       NULL, NULL, o.result_fetch_error
FROM junction.lab_orders AS o
WHERE o.result_fetch_status IN ('running', 'pending');
COMMENT ON VIEW junction.backfill_progress IS
  'every running backfill job (a range, a workout stream, a lab order''s results: its backend pid, pages and rows so far, the rate of this run, started, last page at) and the queue (pending: new, retry after a failure, or resume from a checkpoint; due_at: when it is or was due)';

CREATE VIEW junction.status AS
SELECT q.pending,
       q.quarantined,
       q.oldest_pending_age,
       q.processed_last_minute,
       w.worker_pids,
       w.last_heartbeat,
       w.backfill_pid,
       CASE
         WHEN NOT q.has_secret THEN
           'no webhook secret: INSERT INTO junction.webhook_secrets(secret) VALUES (''whsec_...'')'
         WHEN w.worker_pids IS NULL THEN
           'no worker running: add junction to shared_preload_libraries and set junction.database = '''
           || current_database() || ''', or call junction_process_inbox()'
         WHEN current_setting('junction.database', true) <> current_database() THEN
           'the workers serve database ' || current_setting('junction.database', true)
           || ', not this one; call junction_process_inbox()'
         WHEN q.pending > 0 THEN 'draining'
         ELSE 'idle'
       END AS waiting_reason,
       w.backfill_pids,
       bp.backfills_running,
       bp.backfills_pending,
       bf.backfills_failed,
       bf.api_paused_until
FROM (SELECT (SELECT count(*) FROM junction.inbox WHERE status = 'pending') AS pending,
             (SELECT count(*) FROM junction.inbox WHERE status = 'quarantined') AS quarantined,
             (SELECT now() - min(received_at) FROM junction.inbox WHERE status = 'pending')
               AS oldest_pending_age,
             (SELECT count(*) FROM junction.inbox
               WHERE status = 'processed' AND processed_at > now() - interval '1 minute')
               AS processed_last_minute,
             EXISTS (SELECT FROM junction.webhook_secrets
                      WHERE expires_at IS NULL OR expires_at > now()) AS has_secret) q,
     (SELECT array_agg(pid ORDER BY slot) FILTER (WHERE kind = 'inbox') AS worker_pids,
             max(heartbeat) FILTER (WHERE kind = 'inbox') AS last_heartbeat,
             (array_agg(pid ORDER BY slot) FILTER (WHERE kind = 'backfill'))[1] AS backfill_pid,
             array_agg(pid ORDER BY slot) FILTER (WHERE kind = 'backfill') AS backfill_pids
        FROM junction._worker_state()) w,
     (SELECT count(*) FILTER (WHERE state = 'running') AS backfills_running,
             count(*) FILTER (WHERE state = 'pending') AS backfills_pending
        FROM junction.backfill_progress) bp,
     (SELECT (SELECT count(*) FROM junction.backfills WHERE fetch_status = 'failed')
             + (SELECT count(*) FROM junction.workout_streams WHERE fetch_status = 'failed')
             + (SELECT count(*) FROM junction.lab_orders WHERE result_fetch_status = 'failed') AS backfills_failed,
             (SELECT a.paused_until FROM junction._api_pause() AS a) AS api_paused_until) bf;
COMMENT ON VIEW junction.status IS
  'inbox backlog, quarantine, throughput, worker pids and heartbeat, and why work is waiting; the backfill workers, their queue (running, pending, failed jobs) and the API pause after a 429';


-- ---------------------------------------------------------------------------------------------
-- junction_sync for long ranges: queue the ranges as backfill jobs (checkpointed, resumable,
-- visible in junction.backfill_progress) instead of loading them in the caller's transaction.
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION junction_sync_queue(user_id uuid, resources text[] DEFAULT NULL,
                                    start_date timestamptz DEFAULT now() - interval '7 days',
                                    end_date timestamptz DEFAULT now(), provider text DEFAULT NULL)
RETURNS SETOF junction.backfill_job
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    uid   uuid := user_id;
    names text[];
    provs text[];
BEGIN
    IF uid IS NULL THEN
        RAISE EXCEPTION 'user_id must not be null' USING ERRCODE = '22004';
    END IF;
    IF start_date IS NULL OR end_date IS NULL OR start_date > end_date THEN
        RAISE EXCEPTION 'start_date and end_date must be given, start_date <= end_date' USING ERRCODE = '22023';
    END IF;
    IF resources IS NULL THEN
        SELECT array_agg(x.name ORDER BY x.name) INTO names
        FROM junction.resources AS x
        WHERE x.kind IN ('summary', 'timeseries') AND x.event_prefix = 'daily.data';
    ELSE
        SELECT array_agg(DISTINCT (junction._api_resource(q.name)).name) INTO names
        FROM unnest(resources) AS q(name);
    END IF;
    IF junction_sync_queue.provider IS NOT NULL THEN
        provs := ARRAY[junction_sync_queue.provider];
    ELSE
        -- a job is per provider: every provider the user is connected to
        SELECT array_agg(DISTINCT c.provider) INTO provs
        FROM junction.connections AS c WHERE c.user_id = uid AND c.status = 'connected';
        IF provs IS NULL THEN
            RAISE EXCEPTION 'user % has no connected provider in junction.connections', uid
                USING ERRCODE = '22023',
                      HINT = 'Pass provider => ''<slug>'', or load the connections first: SELECT junction_refresh_connections(user_id);';
        END IF;
    END IF;
    RETURN QUERY
    INSERT INTO junction.backfills AS t
        (user_id, provider, resource, start_date, end_date, completed_at, fetch_status, attempts,
         updated_at, received_seq, data)
    SELECT uid, p.p, n.n, junction_sync_queue.start_date, junction_sync_queue.end_date, now(),
           'pending', 0, now(), junction._next_received_seq(),
           jsonb_build_object('queued_by', 'junction_sync_queue', 'start_date', junction_sync_queue.start_date,
                              'end_date', junction_sync_queue.end_date)
    FROM unnest(provs) AS p(p), unnest(names) AS n(n)
    ORDER BY 2, 3
    ON CONFLICT ON CONSTRAINT backfills_pkey DO UPDATE
    SET start_date = excluded.start_date, end_date = excluded.end_date,
        completed_at = excluded.completed_at, fetch_status = 'pending', fetch_error = NULL, sqlstate = NULL,
        rows_loaded = NULL, attempts = 0, next_attempt_at = NULL, updated_at = now(),
        received_seq = excluded.received_seq, data = excluded.data,
        cursor = NULL, pages_done = 0, fast = NULL, claimed_by = NULL
    RETURNING 'range'::text, t.user_id, t.provider, t.resource, t.start_date, t.end_date, NULL::uuid, NULL::uuid;
    PERFORM junction._wake_at_commit();
END
$$;
COMMENT ON FUNCTION junction_sync_queue(uuid, text[], timestamptz, timestamptz, text) IS
  'queue what junction_sync would load (per provider: the one given, else every connected one) as backfill jobs, and return them: the backfill workers load them page by page, each page committed with its checkpoint; replaces a queued job of the same user, provider and resource';
