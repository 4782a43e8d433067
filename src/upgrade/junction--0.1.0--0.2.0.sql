-- junction 0.1.0 -> 0.2.0 (ALTER EXTENSION junction UPDATE TO '0.2.0').
-- After it, the extension's objects equal a fresh 0.2.0 install's (test/fault_upgrade.sh checks
-- this: every difference it finds is named there, object by object). Ordered by subsystem, in
-- the order of the 0.1.0 layout (src/sql/*.sql, now src/install/). Every schema change to src/install after a release goes into the next
-- upgrade script.
\echo Use "ALTER EXTENSION junction UPDATE" to load this file. \quit

-- ---------------------------------------------------------------------------------------------
-- 00 schema: junction._require (entry points refuse NULL instead of returning NULL)
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION junction._require(value anyelement, what text)
RETURNS anyelement
-- VOLATILE, so that the planner never folds a call with a constant NULL (coalesce($1,
-- junction._require(NULL::jsonb, ...)) must raise only when $1 is NULL)
LANGUAGE plpgsql VOLATILE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF value IS NULL THEN
        RAISE EXCEPTION '% must not be null', what USING ERRCODE = '22004',
            HINT = 'Nothing was stored or sent; pass a value (see the junction README for this function).';
    END IF;
    RETURN value;
END
$$;
COMMENT ON FUNCTION junction._require(anyelement, text) IS
  'value, or error 22004 "<what> must not be null": for entry points that must not turn NULL into silence';

-- ---------------------------------------------------------------------------------------------
-- 10 inbox: the two new CHECK constraints, and junction_receive without STRICT
-- ---------------------------------------------------------------------------------------------
-- 0.1.0 had no such constraints, so rows that break them may exist (a receiver could store
-- headers '[]'; a superuser any received_at). The upgrade loses no row and no value:
--  1. such a row still pending is quarantined as the drain quarantines it (same reason and
--     SQLSTATE), so it is not verified against the value step 2 gives it;
--  2. headers that are not an object are kept, wrapped: {"junction_upgrade_original_headers": <them>};
--     an infinite received_at becomes the upgrade's time (the row had arrived by then), and
--     the original is noted in error;
--  3. then the constraints are added, validated, as a fresh install has them.
UPDATE junction.inbox
   SET status = 'quarantined', attempts = attempts + 1, processed_at = now(),
       sqlstate = CASE WHEN NOT isfinite(received_at) THEN '22008' ELSE '22023' END,
       error = CASE WHEN NOT isfinite(received_at)
                    THEN format('received_at is %s: the svix-timestamp cannot be checked against it', received_at)
                    ELSE format('headers must be a JSON object, not %s',
                                CASE jsonb_typeof(headers) WHEN 'array' THEN 'an array' ELSE 'a scalar' END)
               END
 WHERE status = 'pending' AND (NOT isfinite(received_at) OR jsonb_typeof(headers) <> 'object');
UPDATE junction.inbox
   SET error = concat_ws('; ', error, format('upgrade to 0.2.0: received_at was %s, set to the upgrade time', received_at)),
       received_at = now()
 WHERE NOT isfinite(received_at);
UPDATE junction.inbox
   SET error = concat_ws('; ', error, 'upgrade to 0.2.0: headers were not an object, kept under junction_upgrade_original_headers'),
       headers = jsonb_build_object('junction_upgrade_original_headers', headers)
 WHERE jsonb_typeof(headers) <> 'object';
ALTER TABLE junction.inbox
    ADD CONSTRAINT inbox_received_at_finite CHECK (isfinite(received_at)),
    ADD CONSTRAINT inbox_headers_object CHECK (jsonb_typeof(headers) = 'object');

CREATE OR REPLACE FUNCTION junction_receive(headers jsonb, body text)
RETURNS bigint
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    -- coalesce calls junction._require (which raises) only for a NULL: nothing on the hot path
    INSERT INTO junction.inbox (headers, body)
    VALUES (coalesce($1, junction._require(NULL::jsonb, 'headers')),
            coalesce($2, junction._require(NULL::text, 'body')))
    RETURNING id
$$;

-- ---------------------------------------------------------------------------------------------
-- 30 typing: junction._sample_rows qualifies every name (it is inlined, so it has no SET clause)
-- ---------------------------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION junction._sample_rows(items junction.typing_item[])
RETURNS SETOF junction.samples
LANGUAGE sql STABLE
AS $fn$
    SELECT DISTINCT ON (s.user_id, s.time, s.resource, s.provider, s.source_type, s.type, s.workout_id)
           s.user_id, s.resource, s.provider, s.source_type, s.type, s.workout_id, s.time, s.time_end,
           s.value, s.unit, s.timezone_offset, s.local_time, s.floating, s.extra, s.received_seq
    FROM (
        SELECT g.user_id, g.resource, g.provider, g.source_type, g.workout_id, g.floating,
               g.received_seq, e.ord, e.type, e.time, e.time_end, e.value, e.unit,
               e.timezone_offset, e.local_time, e.extra
        FROM (
            SELECT i.received_seq, i.user_id, i.resource, i.obj,
                   -- a lookup, not a join: a hash join would copy each (large) item into its table
                   (SELECT r.value_kind FROM junction.resources AS r
                     WHERE r.name OPERATOR(pg_catalog.=) i.resource) AS value_kind,
                   src.provider, src.source_type, src.workout_id, src.source_extra,
                   -- floating time (junction-api.md 2.6): the offset suffix is meaningless for these
                   src.provider OPERATOR(pg_catalog.=) ANY (ARRAY['abbott_libreview', 'freestyle_libre',
                                                               'freestyle_libre_ble']::pg_catalog.text[]) AS floating
            FROM pg_catalog.unnest(items) AS i
            CROSS JOIN LATERAL (
                SELECT coalesce(i.obj OPERATOR(pg_catalog.#>>) '{source,provider}'::pg_catalog.text[],
                                i.obj OPERATOR(pg_catalog.#>>) '{source,slug}'::pg_catalog.text[]) AS provider,
                       coalesce(i.obj OPERATOR(pg_catalog.#>>) '{source,type}'::pg_catalog.text[], 'unknown') AS source_type,
                       coalesce((i.obj OPERATOR(pg_catalog.#>>) '{source,workout_id}'::pg_catalog.text[])::pg_catalog.uuid,
                                '00000000-0000-0000-0000-000000000000'::pg_catalog.uuid) AS workout_id,
                       nullif(pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
                           'source_app_id'::pg_catalog.text, i.obj OPERATOR(pg_catalog.#>) '{source,app_id}'::pg_catalog.text[],
                           'source_device_id'::pg_catalog.text, i.obj OPERATOR(pg_catalog.#>) '{source,device_id}'::pg_catalog.text[],
                           'source_sport'::pg_catalog.text, i.obj OPERATOR(pg_catalog.#>) '{source,sport}'::pg_catalog.text[])),
                              '{}'::pg_catalog.jsonb) AS source_extra
                OFFSET 0
            ) AS src
            OFFSET 0
        ) AS g
        -- the samples of data[], typed in C (src/samples.c)
        CROSS JOIN LATERAL junction._group_samples(g.obj, g.resource, g.value_kind, g.floating,
                                                   g.source_extra) AS e
    ) AS s
    -- dedupe on the key, latest received first; time sorts before the text columns (cheaper), and
    -- one fixed order makes concurrent drains lock rows in the same order
    ORDER BY s.user_id, s.time, s.resource, s.provider, s.source_type, s.type, s.workout_id,
             s.received_seq DESC, s.ord DESC
$fn$;

-- ---------------------------------------------------------------------------------------------
-- 40 worker: junction_process_inbox without STRICT, with its own search_path
-- ---------------------------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION junction_process_inbox(max_rows integer DEFAULT 1000) RETURNS integer
AS 'MODULE_PATHNAME', 'junction_process_inbox' LANGUAGE C VOLATILE
-- the drain's SQL (src/drain.c) resolves names: never through a schema the caller's path adds
SET search_path = pg_catalog, pg_temp;

-- ---------------------------------------------------------------------------------------------
-- 50 API client: the C redaction, HTTP error and key check, for the SQL wrappers
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION junction._redact(s text, extra text[] DEFAULT NULL) RETURNS text
AS 'MODULE_PATHNAME', 'junction_redact_sql' LANGUAGE C VOLATILE;

CREATE FUNCTION junction._raise_http_error(management boolean, method text, path text,
                                           status integer, body jsonb, redact text[] DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'junction_raise_http_error_sql' LANGUAGE C VOLATILE;

CREATE FUNCTION junction._api_key_configured(management boolean DEFAULT false) RETURNS boolean
AS 'MODULE_PATHNAME', 'junction_api_key_configured_sql' LANGUAGE C STABLE STRICT;

-- ---------------------------------------------------------------------------------------------
-- 60 API: one HTTP error path; NULL arguments are refused, not STRICT; backfill sees key files
-- ---------------------------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION junction._raise_http(method text, path text, status integer, body jsonb)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- one implementation (src/http.c), so the detail is redacted as junction_api redacts it
    PERFORM junction._raise_http_error(false, method, path, status, body);
END
$$;

CREATE OR REPLACE FUNCTION junction._api_resource(resource text)
RETURNS junction.resources
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    res junction.resources;
BEGIN
    PERFORM junction._require(resource, 'resource');
    SELECT * INTO res
    FROM junction.resources AS r
    WHERE r.name = lower(resource)
       OR (r.kind = 'timeseries' AND r.rest_segment = lower(resource))
    ORDER BY r.name = lower(resource) DESC
    LIMIT 1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown Junction resource %', coalesce(quote_literal(resource), 'NULL')
            USING ERRCODE = '22023',
                  HINT = 'SELECT name, kind FROM junction.resources ORDER BY kind, name; lists the valid names (event names; body_weight and body_fat are accepted for weight and fat).';
    END IF;
    RETURN res;
END
$$;

CREATE OR REPLACE FUNCTION junction_fetch_workout_stream(workout_id uuid)
RETURNS jsonb
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT @extschema@.junction_api('GET', format('/v2/timeseries/workouts/%s/stream',
                                                   junction._require(workout_id, 'workout_id'))) $$;

CREATE OR REPLACE FUNCTION junction_fetch_sleep_stream(sleep_id uuid)
RETURNS jsonb
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT @extschema@.junction_api('GET', format('/v2/timeseries/sleep/%s/stream',
                                                   junction._require(sleep_id, 'sleep_id'))) $$;

CREATE OR REPLACE FUNCTION junction_user(user_id uuid)
RETURNS jsonb
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT @extschema@.junction_api('GET', '/v2/user/' || junction._require(user_id, 'user_id')) $$;

CREATE OR REPLACE FUNCTION junction_user_resolve(client_user_id text)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM junction._require(client_user_id, 'client_user_id');
    IF client_user_id = '' THEN
        RAISE EXCEPTION 'client_user_id must not be empty' USING ERRCODE = '22023';
    END IF;
    RETURN @extschema@.junction_api('GET', '/v2/user/resolve/' || junction._url_segment(client_user_id));
END
$$;

CREATE OR REPLACE FUNCTION junction_user_create(client_user_id text, fallback_time_zone text DEFAULT NULL,
                                     fallback_birth_date date DEFAULT NULL,
                                     ingestion_start date DEFAULT NULL, ingestion_end date DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r record;
BEGIN
    PERFORM junction._require(client_user_id, 'client_user_id');
    IF client_user_id = '' THEN
        RAISE EXCEPTION 'client_user_id must not be empty' USING ERRCODE = '22023';
    END IF;
    SELECT * INTO r FROM junction._api_request(false, 'POST', '/v2/user', NULL,
        jsonb_strip_nulls(jsonb_build_object(
            'client_user_id', client_user_id,
            'fallback_time_zone', fallback_time_zone,
            'fallback_birth_date', fallback_birth_date,
            'ingestion_start', ingestion_start,
            'ingestion_end', ingestion_end)));
    IF r.status BETWEEN 200 AND 299 THEN
        RETURN r.body;
    END IF;
    -- Junction answers a duplicate client_user_id with 400 {"detail": {"user_id": ..., ...}}
    IF r.status = 400 AND jsonb_typeof(r.body -> 'detail') = 'object'
       AND (r.body #>> '{detail,user_id}') ~* '^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$' THEN
        RETURN @extschema@.junction_user((r.body #>> '{detail,user_id}')::uuid);
    END IF;
    IF r.status = 400 AND r.body::text ~* 'already exist' THEN
        RETURN @extschema@.junction_user_resolve(client_user_id);
    END IF;
    PERFORM junction._raise_http('POST', '/v2/user', r.status, r.body);
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION junction_user_delete(user_id uuid)
RETURNS jsonb
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT @extschema@.junction_api('DELETE', '/v2/user/' || junction._require(user_id, 'user_id')) $$;

CREATE OR REPLACE FUNCTION junction_connections(user_id uuid)
RETURNS SETOF jsonb
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT p
    FROM jsonb_array_elements(@extschema@.junction_api('GET', '/v2/user/providers/'
                                                       || junction._require(user_id, 'user_id')) -> 'providers') AS p
$$;

CREATE OR REPLACE FUNCTION junction_connection_deregister(user_id uuid, provider text)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    answer jsonb;
BEGIN
    PERFORM junction._require(user_id, 'user_id');
    PERFORM junction._require(provider, 'provider');
    IF provider = '' THEN
        RAISE EXCEPTION 'provider must not be empty' USING ERRCODE = '22023';
    END IF;
    answer := @extschema@.junction_api('DELETE', format('/v2/user/%s/%s', user_id,
                                                        junction._url_segment(provider)));
    -- Junction sends no event for a deregistration: drop our copy of the connection now.
    DELETE FROM junction.connections AS c
    WHERE c.user_id = junction_connection_deregister.user_id
      AND c.provider = junction_connection_deregister.provider;
    RETURN answer;
END
$$;

CREATE OR REPLACE FUNCTION junction._backfill_claim()
RETURNS SETOF junction.backfill_job
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT junction._api_key_configured(false) THEN
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
    RETURNING 'range'::text, t.user_id, t.provider, t.resource, t.start_date, t.end_date, NULL::uuid;
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
              NULL::timestamptz, NULL::timestamptz, t.workout_id;
END
$$;

CREATE OR REPLACE FUNCTION junction_backfill_now(max_jobs integer DEFAULT 10)
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

COMMENT ON FUNCTION junction._backfill_claim() IS
  'claim one due backfill job (FOR UPDATE SKIP LOCKED), mark it running, count the attempt; none while no API key is configured';

-- ---------------------------------------------------------------------------------------------
-- 70 webhooks: the Management API errors through the same C code; secret-taking calls are
-- logged without their statement
-- ---------------------------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION junction._management(method text, path text, query jsonb DEFAULT NULL,
                                     body jsonb DEFAULT NULL, redact text[] DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    m      text := upper(method);
    st     integer;
    res    jsonb;
BEGIN
    -- (the C client would send a GET with a body as a POST)
    IF m = 'GET' AND body IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'a GET request has no body; pass query instead';
    END IF;
    SELECT r.status, r.body INTO st, res FROM junction._api_request(true, m, path, query, body) r;
    IF st BETWEEN 200 AND 299 THEN
        RETURN res;
    END IF;
    PERFORM junction._raise_http_error(true, m, path, st, res, redact);
    RETURN NULL;  -- not reached
END
$$;

CREATE OR REPLACE FUNCTION junction_webhook_create(url text, filter_types text[] DEFAULT NULL,
                                        description text DEFAULT '',
                                        rate_limit integer DEFAULT NULL,
                                        disabled boolean DEFAULT false,
                                        secret text DEFAULT NULL)
RETURNS junction.webhook_endpoint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
-- a failing call is logged without its statement, which may hold the secret as a literal
SET log_min_error_statement = panic
AS $$
DECLARE
    b jsonb;
BEGIN
    IF url IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22004', MESSAGE = 'url must not be null';
    END IF;
    PERFORM junction._check_new_secret(secret, 'secret');
    b := jsonb_build_object('url', url, 'description', coalesce(description, ''),
                            'disabled', coalesce(disabled, false));
    IF rate_limit IS NOT NULL THEN
        b := b || jsonb_build_object('rate_limit', rate_limit);
    END IF;
    IF cardinality(filter_types) > 0 THEN
        b := b || jsonb_build_object('filter_types', to_jsonb(filter_types));
    END IF;
    IF secret IS NOT NULL THEN
        b := b || jsonb_build_object('secret', secret);
    END IF;
    RETURN junction._webhook_row(
        junction._management('POST', junction._webhooks_path(), NULL, b, ARRAY[secret]));
END
$$;

CREATE OR REPLACE FUNCTION junction_webhook_set_headers(id text, headers jsonb)
RETURNS TABLE (name text, value text, sensitive boolean)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
-- a failing call is logged without its statement, which may hold the secret as a literal
SET log_min_error_statement = panic
AS $$
BEGIN
    IF headers IS NULL OR jsonb_typeof(headers) <> 'object'
       OR EXISTS (SELECT FROM jsonb_each(headers) e WHERE jsonb_typeof(e.value) <> 'string') THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'headers must be a JSON object of strings',
            HINT = 'For example ''{"X-Receiver-Token": "..."}''; ''{}'' removes every header.';
    END IF;
    PERFORM junction._management('PUT', junction._webhook_path(id, '/headers'), NULL,
                                 jsonb_build_object('headers', headers),
                                 ARRAY(SELECT e.value FROM jsonb_each_text(headers) e
                                        WHERE length(e.value) >= 4));
    RETURN QUERY SELECT * FROM junction._webhook_headers(id);
END
$$;

CREATE OR REPLACE FUNCTION junction_webhook_secret_rotate(id text, new_secret text DEFAULT NULL,
                                               grace interval DEFAULT '24 hours')
RETURNS TABLE (webhook_id text, secret_added boolean, previous_secrets integer,
               previous_expire_at timestamptz)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
-- a failing call is logged without its statement, which may hold the secret as a literal
SET log_min_error_statement = panic
AS $$
#variable_conflict use_column
DECLARE
    p   text := junction._webhook_path(id);
    old text;
    r   record;
BEGIN
    PERFORM junction._check_grace(grace);
    PERFORM junction._check_new_secret(new_secret, 'new_secret');
    PERFORM junction._webhook_lock(id);
    -- adopt the secret being replaced, so it keeps verifying through the grace period
    -- even if it was added by hand or never synced
    old := junction._management('GET', p || '/secret') ->> 'key';
    IF old IS NOT NULL AND old <> '' AND junction._secret_is_valid(old) THEN
        INSERT INTO junction.webhook_secrets AS s (secret, description, webhook_id)
        VALUES (old, 'Junction webhook ' || id, id)
        ON CONFLICT (secret) DO UPDATE
           SET expires_at = NULL, webhook_id = EXCLUDED.webhook_id,
               description = coalesce(s.description, EXCLUDED.description);
    END IF;
    PERFORM junction._management('POST', p || '/secret/rotate', NULL,
                                 CASE WHEN new_secret IS NULL THEN '{}'::jsonb
                                      ELSE jsonb_build_object('key', new_secret) END,
                                 ARRAY[new_secret, old]);
    SELECT * INTO r FROM junction._webhook_secret_sync(id, grace);
    IF NOT r.secret_added THEN
        RAISE WARNING 'Junction still reports the previous signing secret of webhook %', id
            USING HINT = 'Call junction_webhook_secret_sync() again in a moment.';
    END IF;
    RETURN QUERY SELECT r.webhook_id, r.secret_added, r.previous_secrets, r.previous_expire_at;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- 99 grants: the new functions, like every function in schema junction, are not PUBLIC's
-- ---------------------------------------------------------------------------------------------
REVOKE ALL ON FUNCTION junction._require(anyelement, text), junction._redact(text, text[]),
                       junction._raise_http_error(boolean, text, text, integer, jsonb, text[]),
                       junction._api_key_configured(boolean) FROM PUBLIC;
