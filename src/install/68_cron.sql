-- pg_cron: the nightly resync as one scheduled job (minute granularity; see the README).

CREATE FUNCTION junction_schedule_sync(schedule text DEFAULT '0 3 * * *', days integer DEFAULT 2,
                                       job_name text DEFAULT 'junction-nightly-sync')
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    command text;
    job_id  bigint;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_extension WHERE extname = 'pg_cron') THEN
        RAISE EXCEPTION 'pg_cron is not installed in this database' USING ERRCODE = '0A000',
            HINT = 'Add pg_cron to shared_preload_libraries, set cron.database_name to this database, restart, then CREATE EXTENSION pg_cron;';
    END IF;
    IF days IS NULL OR days < 1 THEN
        RAISE EXCEPTION 'days must be at least 1' USING ERRCODE = '22023';
    END IF;
    IF coalesce(job_name, '') = '' OR coalesce(schedule, '') = '' THEN
        RAISE EXCEPTION 'schedule and job_name must not be empty' USING ERRCODE = '22023';
    END IF;
    command := format('SELECT count(*) FROM %I.junction_sync_all(%s)', '@extschema@', days);
    IF current_database() = current_setting('cron.database_name', true) THEN
        EXECUTE 'SELECT cron.schedule($1, $2, $3)' INTO job_id USING job_name, schedule, command;
    ELSE
        EXECUTE 'SELECT cron.schedule_in_database($1, $2, $3, $4)' INTO job_id
            USING job_name, schedule, command, current_database();
    END IF;
    RETURN job_id;
END
$$;
COMMENT ON FUNCTION junction_schedule_sync(text, integer, text) IS
  'create or replace the pg_cron job that runs junction_sync_all(days) on schedule; returns the cron job id';

CREATE FUNCTION junction_unschedule_sync(job_name text DEFAULT 'junction-nightly-sync')
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    done boolean;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_extension WHERE extname = 'pg_cron') THEN
        RAISE EXCEPTION 'pg_cron is not installed in this database' USING ERRCODE = '0A000';
    END IF;
    EXECUTE 'SELECT cron.unschedule($1)' INTO done USING job_name;
    RETURN done;
END
$$;
COMMENT ON FUNCTION junction_unschedule_sync(text) IS 'remove the pg_cron job junction_schedule_sync created';
