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
-- Typing, API and webhook functions changed later in 0.2.0: one provider rule (junction._provider),
-- one paging helper (junction._timeseries_page), plpgsql_check's findings fixed
-- ---------------------------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION junction._provider(obj jsonb)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $fn$
    SELECT coalesce(
        obj OPERATOR(pg_catalog.#>>) '{source,provider}'::pg_catalog.text[],
        obj OPERATOR(pg_catalog.#>>) '{source,slug}'::pg_catalog.text[],
        obj OPERATOR(pg_catalog.->>) 'source_provider'::pg_catalog.text,
        CASE
          WHEN pg_catalog.jsonb_typeof(obj OPERATOR(pg_catalog.->) 'provider'::pg_catalog.text)
               OPERATOR(pg_catalog.=) 'string'::pg_catalog.text
            THEN obj OPERATOR(pg_catalog.->>) 'provider'::pg_catalog.text
          WHEN pg_catalog.jsonb_typeof(obj OPERATOR(pg_catalog.->) 'provider'::pg_catalog.text)
               OPERATOR(pg_catalog.=) 'object'::pg_catalog.text
            THEN obj OPERATOR(pg_catalog.#>>) '{provider,slug}'::pg_catalog.text[]
        END,
        obj OPERATOR(pg_catalog.->>) 'slug'::pg_catalog.text)
$fn$;
COMMENT ON FUNCTION junction._provider(jsonb) IS
  'the provider slug of a Junction object: source.provider, source.slug, source_provider, provider (a string, or an object''s slug), slug';

CREATE OR REPLACE FUNCTION junction._timeseries_page(res junction.resources, user_id uuid, start_date timestamptz,
                                          end_date timestamptz, provider text, cursor text,
                                          OUT groups jsonb, OUT next_cursor text)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    path text := replace(res.rest_path, '{user_id}', coalesce(user_id::text, ''));
    page jsonb;
BEGIN
    page := junction._fetch_page(res, user_id, start_date, end_date, provider, cursor);
    groups := junction._check_groups(page, path);
    next_cursor := junction._next_cursor(page, cursor, path);
    IF next_cursor IS NOT NULL THEN
        PERFORM junction._fetch_page(res, user_id, start_date, end_date, provider, next_cursor, true);
    END IF;
END
$$;
COMMENT ON FUNCTION junction._timeseries_page(junction.resources, uuid, timestamptz, timestamptz, text, text) IS
  'one page of a timeseries read: its checked groups and the next cursor (whose page is already requested)';

CREATE OR REPLACE FUNCTION junction._apply_deliveries(ids bigint[], svix_ids text[])
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'
AS $fn$
DECLARE
    accepted   integer;
    summaries  junction.typing_item[];
    timeseries junction.typing_item[];
    streams    junction.typing_item[];
    conns      junction.typing_item[];
    backfills  junction.typing_item[];
BEGIN
    IF cardinality(ids) IS DISTINCT FROM cardinality(svix_ids) THEN
        RAISE EXCEPTION '_apply_deliveries: % inbox ids but % svix ids',
            coalesce(cardinality(ids), 0), coalesce(cardinality(svix_ids), 0)
            USING ERRCODE = '22023';
    END IF;
    IF array_position(ids, NULL) IS NOT NULL OR array_position(svix_ids, NULL) IS NOT NULL THEN
        RAISE EXCEPTION '_apply_deliveries: null inbox id or svix id' USING ERRCODE = '22004';
    END IF;

    -- Parse, validate and classify each delivery once, insert the events, collect the new ones.
    WITH classified AS MATERIALIZED (
        SELECT * FROM junction._classify_deliveries(ids, svix_ids)
    ), inserted AS (
        INSERT INTO junction.events AS ev
            (svix_id, inbox_id, event_type, user_id, client_user_id, team_id, provider, resource,
             received_at, payload)
        SELECT c.svix_id, c.inbox_id, c.event_type, c.user_id, c.client_user_id, c.team_id,
               c.provider, c.resource, c.received_at, c.payload
        FROM classified AS c
        ON CONFLICT (svix_id) DO NOTHING
        RETURNING ev.svix_id
    )
    SELECT count(*),
           array_agg(c.item ORDER BY c.inbox_id) FILTER (WHERE c.family = 'summary'),
           array_agg(c.item ORDER BY c.inbox_id) FILTER (WHERE c.family = 'timeseries'),
           array_agg(c.item ORDER BY c.inbox_id) FILTER (WHERE c.family = 'stream'),
           array_agg(c.item ORDER BY c.inbox_id) FILTER (WHERE c.family = 'connection'),
           array_agg(c.item ORDER BY c.inbox_id) FILTER (WHERE c.family = 'historical')
      INTO accepted, summaries, timeseries, streams, conns, backfills
    FROM (SELECT cl.inbox_id, cl.family,
                 ROW(cl.inbox_id, cl.user_id, cl.resource, cl.event_type, cl.received_at, cl.obj)::junction.typing_item AS item
          FROM classified AS cl
          JOIN inserted AS ins ON ins.svix_id = cl.svix_id) AS c;

    -- Type the new events: one statement per target table.
    IF summaries IS NOT NULL THEN PERFORM junction._upsert_summaries(summaries); END IF;
    IF timeseries IS NOT NULL THEN PERFORM junction._upsert_samples(timeseries); END IF;
    IF streams IS NOT NULL THEN PERFORM junction._upsert_workout_streams(streams); END IF;
    IF conns IS NOT NULL THEN PERFORM junction._upsert_connections(conns); END IF;
    IF backfills IS NOT NULL THEN PERFORM junction._upsert_backfills(backfills); END IF;

    UPDATE junction.inbox
    SET status = 'processed', processed_at = clock_timestamp(), attempts = attempts + 1,
        error = NULL, sqlstate = NULL
    WHERE id = ANY (ids);

    RETURN accepted;
END
$fn$;
COMMENT ON FUNCTION junction._apply_deliveries(bigint[], text[]) IS
  'accept verified inbox rows (ids with their svix ids): parse, record events, type new ones, mark processed; raises on bad input';

CREATE OR REPLACE FUNCTION junction._backfill_failed(kind text, user_id uuid, provider text, resource text,
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

CREATE OR REPLACE FUNCTION junction._introspect(path text, user_id uuid, provider text)
RETURNS SETOF jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    page   jsonb;
    pages  jsonb[] := '{}'::jsonb[];
    nc     text;
BEGIN
    LOOP
        page := @extschema@.junction_api('GET', path, jsonb_strip_nulls(jsonb_build_object(
                    'user_id', user_id, 'provider', nullif(provider, ''), 'next_cursor', nc)));
        IF jsonb_typeof(page -> 'data') IS DISTINCT FROM 'array' THEN
            RAISE EXCEPTION 'junction API GET %: response has no "data" array', path USING ERRCODE = '22P02';
        END IF;
        pages := array_append(pages, page -> 'data');
        nc := junction._next_cursor(page, nc, path);
        EXIT WHEN nc IS NULL;
    END LOOP;
    RETURN QUERY
    SELECT jsonb_build_object('user_id', x.uid, 'provider', x.providers)
    FROM (SELECT d.elem ->> 'user_id' AS uid,
                 jsonb_object_agg(e.key, e.value ORDER BY p.ord, d.ord) AS providers,
                 min(p.ord * 1000000 + d.ord) AS first_seen
          FROM unnest(pages) WITH ORDINALITY AS p(data, ord)
          CROSS JOIN LATERAL jsonb_array_elements(p.data) WITH ORDINALITY AS d(elem, ord)
          CROSS JOIN LATERAL jsonb_each(CASE jsonb_typeof(d.elem -> 'provider')
                                          WHEN 'object' THEN d.elem -> 'provider'
                                          ELSE '{}' END) AS e
          GROUP BY d.elem ->> 'user_id') AS x
    ORDER BY x.first_seen;
END
$$;
COMMENT ON FUNCTION junction._introspect(text, uuid, text) IS
  'all pages of an introspection endpoint, merged to one {user_id, provider: {...}} per user';

CREATE OR REPLACE FUNCTION junction._summary_upsert_sql(resource text)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    res         junction.resources;
    tbl         regclass;
    id_type     text;
    target_cols text;
    select_cols text;
    set_cols    text;
BEGIN
    SELECT * INTO res FROM junction.resources AS r WHERE r.name = resource AND r.kind = 'summary';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'not a summary resource: %', coalesce(quote_literal(resource), 'NULL')
            USING ERRCODE = '22023';
    END IF;
    tbl := format('junction.%I', res.table_name)::regclass;
    SELECT format_type(a.atttypid, a.atttypmod) INTO id_type
    FROM pg_attribute AS a WHERE a.attrelid = tbl AND a.attname = 'id';

    SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum),
           string_agg(CASE a.attname
                        WHEN 'user_id' THEN 'w.user_id'
                        WHEN 'id' THEN 'w.id'
                        WHEN 'provider' THEN
                          'junction._provider(w.obj)'
                        WHEN 'source_type' THEN
                          'coalesce(w.obj #>> ''{source,type}'', w.obj ->> ''source_type'', ''unknown'')'
                        WHEN 'source_app_id' THEN
                          'coalesce(w.obj #>> ''{source,app_id}'', w.obj ->> ''source_app_id'')'
                        WHEN 'source_device_id' THEN
                          'coalesce(w.obj #>> ''{source,device_id}'', w.obj ->> ''source_device_id'')'
                        WHEN 'data' THEN 'w.obj'
                        WHEN 'received_seq' THEN 'w.received_seq'
                        ELSE CASE
                          WHEN NOT res.nested_fields ? a.attname THEN 'r.' || quote_ident(a.attname)
                          WHEN a.atttypid = 'jsonb'::regtype THEN
                            format('w.obj #> %L', p.path)
                          ELSE
                            format('(w.obj #>> %L)::%s', p.path, format_type(a.atttypid, a.atttypmod))
                        END
                      END, ', ' ORDER BY a.attnum),
           string_agg(format('%1$I = excluded.%1$I', a.attname), ', ' ORDER BY a.attnum)
             FILTER (WHERE a.attname NOT IN ('user_id', 'id'))
      INTO target_cols, select_cols, set_cols
    FROM pg_attribute AS a
    CROSS JOIN LATERAL (
        SELECT array_agg(x)::text AS path
        FROM jsonb_array_elements_text(res.nested_fields -> a.attname) AS x
    ) AS p
    WHERE a.attrelid = tbl AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '';

    -- Dedupe inside the batch on the winning order, then upsert guarded by the same order.
    RETURN format($q$
INSERT INTO %1$s AS t (%2$s)
SELECT %3$s
FROM (SELECT DISTINCT ON (i.user_id, (i.obj ->> %4$L)::%5$s)
             i.received_seq, i.user_id, (i.obj ->> %4$L)::%5$s AS id, i.obj
      FROM unnest($1) AS i
      WHERE i.resource = $2
      ORDER BY i.user_id, (i.obj ->> %4$L)::%5$s,
               coalesce((i.obj ->> 'updated_at')::timestamptz, '-infinity') DESC,
               i.received_seq DESC) AS w
CROSS JOIN LATERAL jsonb_populate_record(NULL::%1$s, w.obj) AS r
ON CONFLICT (user_id, id) DO UPDATE SET %6$s
WHERE (coalesce(excluded.updated_at, '-infinity'), excluded.received_seq)
    > (coalesce(t.updated_at, '-infinity'), t.received_seq)$q$,
        tbl, target_cols, select_cols, res.id_field, id_type, set_cols);
END
$fn$;
COMMENT ON FUNCTION junction._summary_upsert_sql(text) IS
  'the INSERT ... ON CONFLICT statement that loads one summary resource ($1 typing_item[], $2 resource)';

CREATE OR REPLACE FUNCTION junction._sync_timeseries(res junction.resources, user_id uuid, start_date timestamptz,
                                          end_date timestamptz, provider text, conflicts boolean)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    groups jsonb;
    items  junction.typing_item[];
    nc     text;
    total  bigint := 0;
BEGIN
    LOOP
        SELECT t.groups, t.next_cursor INTO groups, nc
        FROM junction._timeseries_page(res, user_id, start_date, end_date, provider, nc) AS t;
        items := junction._page_items(user_id, res.name, groups);
        IF items IS NOT NULL THEN
            total := total + junction._upsert_samples(items, conflicts);
        END IF;
        EXIT WHEN nc IS NULL;
    END LOOP;
    RETURN total;
END
$$;
COMMENT ON FUNCTION junction._sync_timeseries(junction.resources, uuid, timestamptz, timestamptz, text, boolean) IS
  'fetch every page of one timeseries resource over a range and load it into junction.samples';

CREATE OR REPLACE FUNCTION junction._upsert_backfills(items junction.typing_item[])
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'
AS $fn$
DECLARE
    n bigint;
BEGIN
    INSERT INTO junction.backfills AS t
        (user_id, provider, resource, start_date, end_date, completed_at, fetch_status,
         attempts, updated_at, received_seq, data)
    SELECT DISTINCT ON (i.user_id, p.provider, i.resource)
           i.user_id, p.provider, i.resource,
           (i.obj ->> 'start_date')::timestamptz, (i.obj ->> 'end_date')::timestamptz,
           i.received_at, 'pending', 0, now(), i.received_seq, i.obj
    FROM unnest(items) AS i
    CROSS JOIN LATERAL (
        SELECT junction._provider(i.obj) AS provider
    ) AS p
    ORDER BY i.user_id, p.provider, i.resource, i.received_seq DESC
    ON CONFLICT (user_id, provider, resource) DO UPDATE
    SET start_date = excluded.start_date, end_date = excluded.end_date,
        completed_at = excluded.completed_at, fetch_status = 'pending', fetch_error = NULL,
        rows_loaded = NULL, attempts = 0, updated_at = now(),
        received_seq = excluded.received_seq, data = excluded.data
    WHERE excluded.received_seq > t.received_seq;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$fn$;
COMMENT ON FUNCTION junction._upsert_backfills(junction.typing_item[]) IS
  'record completed historical pulls (fetch_status pending); the latest received wins per user, provider, resource';

CREATE OR REPLACE FUNCTION junction._upsert_connections(items junction.typing_item[])
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'
AS $fn$
DECLARE
    n bigint;
BEGIN
    WITH item AS (
        SELECT i.user_id, i.received_seq, i.received_at, i.obj, i.event_type,
               junction._provider(i.obj) AS provider,
               CASE i.event_type
                 WHEN 'provider.connection.created' THEN 'connected'
                 WHEN 'provider.connection.error' THEN 'error'
                 ELSE i.obj ->> 'status' END AS status
        FROM unnest(items) AS i
    ), latest AS (
        SELECT DISTINCT ON (user_id, provider) *
        FROM item ORDER BY user_id, provider, received_seq DESC
    ), latest_connected AS (
        -- the latest version that speaks for external_user_id and resource_availability: a
        -- provider.connection.created event, or a REST connection object (Junction's full view,
        -- which carries them whatever the status)
        SELECT DISTINCT ON (user_id, provider) *
        FROM item WHERE status = 'connected' OR event_type IS NULL
        ORDER BY user_id, provider, received_seq DESC
    )
    INSERT INTO junction.connections AS t
        (user_id, provider, status, external_user_id, resource_availability, error_type,
         error_message, error_details, connected_at, updated_at, received_seq, connected_seq, data)
    SELECT l.user_id, l.provider, l.status,
           c.obj ->> 'external_user_id', c.obj -> 'resource_availability',
           CASE WHEN l.status <> 'connected'
                THEN coalesce(l.obj ->> 'error_type', l.obj #>> '{error_details,error_type}') END,
           CASE WHEN l.status <> 'connected'
                THEN coalesce(l.obj ->> 'message', l.obj #>> '{error_details,error_message}',
                              CASE jsonb_typeof(l.obj -> 'error_details')
                                WHEN 'string' THEN l.obj ->> 'error_details' END) END,
           CASE WHEN l.status <> 'connected' AND jsonb_typeof(l.obj -> 'error_details') = 'string'
                THEN l.obj ->> 'error_details' END,
           CASE WHEN c.event_type IS NULL AND c.obj ->> 'created_on' IS NOT NULL
                THEN (c.obj ->> 'created_on')::timestamptz ELSE c.received_at END,
           l.received_at, l.received_seq, c.received_seq, l.obj
    FROM latest AS l
    LEFT JOIN latest_connected AS c USING (user_id, provider)
    ORDER BY l.user_id, l.provider
    ON CONFLICT (user_id, provider) DO UPDATE
    SET status        = CASE WHEN excluded.received_seq > t.received_seq THEN excluded.status ELSE t.status END,
        error_type    = CASE WHEN excluded.received_seq > t.received_seq THEN excluded.error_type ELSE t.error_type END,
        error_message = CASE WHEN excluded.received_seq > t.received_seq THEN excluded.error_message ELSE t.error_message END,
        error_details = CASE WHEN excluded.received_seq > t.received_seq THEN excluded.error_details ELSE t.error_details END,
        updated_at    = CASE WHEN excluded.received_seq > t.received_seq THEN excluded.updated_at ELSE t.updated_at END,
        data          = CASE WHEN excluded.received_seq > t.received_seq THEN excluded.data ELSE t.data END,
        received_seq  = greatest(excluded.received_seq, t.received_seq),
        external_user_id = CASE WHEN excluded.connected_seq > coalesce(t.connected_seq, -1)
                                THEN excluded.external_user_id ELSE t.external_user_id END,
        resource_availability = CASE WHEN excluded.connected_seq > coalesce(t.connected_seq, -1)
                                THEN excluded.resource_availability ELSE t.resource_availability END,
        connected_at  = CASE WHEN excluded.connected_seq > coalesce(t.connected_seq, -1)
                                THEN excluded.connected_at ELSE t.connected_at END,
        connected_seq = greatest(excluded.connected_seq, t.connected_seq)
    WHERE excluded.received_seq > t.received_seq
       OR excluded.connected_seq > coalesce(t.connected_seq, -1);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$fn$;
COMMENT ON FUNCTION junction._upsert_connections(junction.typing_item[]) IS
  'upsert provider connections: status and error from the latest event, connection details from the latest connected one';

CREATE OR REPLACE FUNCTION junction._upsert_summaries(items junction.typing_item[])
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'
AS $fn$
-- The EXECUTEd text comes from junction._summary_upsert_sql, built from the resource registry and
-- the table's catalog (identifiers quote_ident'ed, values passed with USING): no caller's text
-- reaches it, so plpgsql_check's security warning (unsanitized text in EXECUTE) is off here.
-- @plpgsql_check_options: security_warnings = off
DECLARE
    res   text;
    n     bigint;
    total bigint := 0;
BEGIN
    FOR res IN SELECT DISTINCT i.resource FROM unnest(items) AS i ORDER BY 1 LOOP
        -- one statement per summary table; _summary_upsert_sql rejects non-summary resources
        EXECUTE junction._summary_upsert_sql(res) USING items, res;
        GET DIAGNOSTICS n = ROW_COUNT;
        total := total + n;
    END LOOP;
    RETURN total;
END
$fn$;
COMMENT ON FUNCTION junction._upsert_summaries(junction.typing_item[]) IS
  'upsert summary objects (and devices) into their tables; newest updated_at wins, then the latest received';

CREATE OR REPLACE FUNCTION junction._upsert_workout_streams(items junction.typing_item[])
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'
AS $fn$
DECLARE
    n bigint;
BEGIN
    INSERT INTO junction.workout_streams AS t
        (user_id, workout_id, provider, source_type, provider_id, sport_id, sport_name, sport_slug,
         notification, received_seq)
    SELECT DISTINCT ON (i.user_id, (i.obj ->> 'workout_id')::uuid)
           i.user_id, (i.obj ->> 'workout_id')::uuid,
           junction._provider(i.obj),
           coalesce(i.obj #>> '{source,type}', 'unknown'),
           i.obj ->> 'provider_id', (i.obj #>> '{sport,id}')::integer,
           i.obj #>> '{sport,name}', i.obj #>> '{sport,slug}', i.obj, i.received_seq
    FROM unnest(items) AS i
    ORDER BY i.user_id, (i.obj ->> 'workout_id')::uuid, i.received_seq DESC
    ON CONFLICT (user_id, workout_id) DO UPDATE
    SET provider = excluded.provider, source_type = excluded.source_type,
        provider_id = excluded.provider_id, sport_id = excluded.sport_id,
        sport_name = excluded.sport_name, sport_slug = excluded.sport_slug,
        notification = excluded.notification, received_seq = excluded.received_seq,
        fetch_status = 'pending', fetch_error = NULL, attempts = 0, updated_at = now()
    WHERE excluded.received_seq > t.received_seq;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$fn$;
COMMENT ON FUNCTION junction._upsert_workout_streams(junction.typing_item[]) IS
  'record workout stream notifications (fetch_status pending); the latest received wins per workout';

CREATE OR REPLACE FUNCTION junction_fetch(resource text, user_id uuid, start_date timestamptz,
                               end_date timestamptz, provider text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    res    junction.resources := junction._api_resource(resource);
    groups jsonb;
    nc     text;
    pages  integer := 0;
    provs  text[] := '{}'::text[];     -- providers, in order of first appearance
    owners text[] := '{}'::text[];     -- pieces[i] holds groups of provider owners[i], in page order
    pieces text[] := '{}'::text[];
    sel    text[];
    parts  text[] := '{}'::text[];
    p      text;
    e      record;
BEGIN
    IF res.kind = 'stream' THEN
        RAISE EXCEPTION 'workout streams are read per workout, not per user and date range'
            USING ERRCODE = '22023', HINT = 'SELECT junction_fetch_workout_stream(workout_id);';
    END IF;
    IF res.kind <> 'timeseries' THEN
        RETURN junction._fetch_page(res, user_id, start_date, end_date, provider, NULL);
    END IF;
    -- grouped timeseries: every page, then one {"groups": {provider: [groups of every page]}}
    LOOP
        SELECT t.groups, t.next_cursor INTO groups, nc
        FROM junction._timeseries_page(res, user_id, start_date, end_date, provider, nc) AS t;
        pages := pages + 1;
        EXIT WHEN nc IS NULL AND pages = 1;         -- one page: it is the answer
        -- several pages: collect each provider's groups as JSON text (no sorting, no re-nesting
        -- of megabytes of jsonb), and parse the whole answer once at the end
        FOR e IN SELECT g.key, g.value::text AS txt FROM jsonb_each(groups) AS g
                 WHERE jsonb_array_length(g.value) > 0 LOOP
            IF NOT e.key = ANY (provs) THEN
                provs := array_append(provs, e.key);
            END IF;
            owners := array_append(owners, e.key);
            pieces := array_append(pieces, substr(e.txt, 2, length(e.txt) - 2));   -- without [ ]
        END LOOP;
        EXIT WHEN nc IS NULL;
    END LOOP;
    IF pages = 1 THEN
        RETURN jsonb_build_object('groups', groups);
    END IF;
    FOREACH p IN ARRAY provs LOOP
        sel := '{}';
        FOR i IN 1 .. cardinality(pieces) LOOP
            IF owners[i] = p THEN
                sel := array_append(sel, pieces[i]);
            END IF;
        END LOOP;
        parts := array_append(parts, to_json(p)::text || ':[' || array_to_string(sel, ',') || ']');
    END LOOP;
    RETURN ('{"groups":{' || array_to_string(parts, ',') || '}}')::jsonb;
END
$$;
COMMENT ON FUNCTION junction_fetch(text, uuid, timestamptz, timestamptz, text) IS
  'one Data Access API read: a summary response ({activity: [...]}), a profile object, or a timeseries as {groups: {provider: [groups of all pages]}}';

CREATE OR REPLACE FUNCTION junction_webhook_update(id text, url text DEFAULT NULL,
                                        description text DEFAULT NULL,
                                        filter_types text[] DEFAULT NULL,
                                        rate_limit integer DEFAULT NULL,
                                        disabled boolean DEFAULT NULL,
                                        clear text[] DEFAULT NULL)
RETURNS junction.webhook_endpoint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p text := junction._webhook_path(id);
    b jsonb := '{}'::jsonb;
    c text;
BEGIN
    FOREACH c IN ARRAY coalesce(clear, '{}'::text[]) LOOP
        IF c IS NULL OR c NOT IN ('rate_limit', 'filter_types') THEN
            RAISE EXCEPTION USING ERRCODE = '22023',
                MESSAGE = format('cannot clear %s', coalesce(quote_literal(c), 'NULL')),
                HINT = 'clear may name rate_limit (no limit) and filter_types (every event type).';
        END IF;
        b := b || jsonb_build_object(c, NULL);
    END LOOP;
    IF (rate_limit IS NOT NULL AND b ? 'rate_limit')
       OR (filter_types IS NOT NULL AND b ? 'filter_types') THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'a field cannot be both set and cleared';
    END IF;
    IF url IS NOT NULL THEN
        b := b || jsonb_build_object('url', url);
    END IF;
    IF description IS NOT NULL THEN
        b := b || jsonb_build_object('description', description);
    END IF;
    IF filter_types IS NOT NULL THEN
        b := b || jsonb_build_object('filter_types',
                                     CASE WHEN cardinality(filter_types) > 0 THEN to_jsonb(filter_types)
                                          ELSE 'null'::jsonb END);
    END IF;
    IF rate_limit IS NOT NULL THEN
        b := b || jsonb_build_object('rate_limit', rate_limit);
    END IF;
    IF disabled IS NOT NULL THEN
        b := b || jsonb_build_object('disabled', disabled);
    END IF;
    IF b = '{}' THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'nothing to update',
            HINT = 'Give at least one of url, description, filter_types, rate_limit, disabled, clear.';
    END IF;
    RETURN junction._webhook_row(junction._management('PATCH', p, NULL, b));
END
$$;
COMMENT ON FUNCTION junction_webhook_update(text, text, text, text[], integer, boolean, text[]) IS
  'change the given fields of a webhook endpoint (only those are sent); filter_types => ''{}'' or clear => ''{filter_types}'': every event type; clear => ''{rate_limit}'': no limit';

CREATE OR REPLACE FUNCTION junction_webhooks(page_size integer DEFAULT NULL)
RETURNS SETOF junction.webhook_endpoint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p      text := junction._webhooks_path();
    page   jsonb;
    cur    text;
    seen   text[] := '{}'::text[];
BEGIN
    IF page_size IS NOT NULL AND page_size < 1 THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'page_size must be positive';
    END IF;
    LOOP
        page := junction._management('GET', p,
                    jsonb_strip_nulls(jsonb_build_object('limit', page_size, 'next_cursor', cur)));
        RETURN QUERY SELECT * FROM jsonb_populate_recordset(NULL::junction.webhook_endpoint,
                                                            coalesce(page -> 'data', '[]'));
        cur := nullif(page ->> 'next_cursor', '');
        EXIT WHEN cur IS NULL;
        IF cur = ANY (seen) THEN
            RAISE EXCEPTION USING ERRCODE = '38000',
                MESSAGE = 'junction Management API returned the same next_cursor twice';
        END IF;
        seen := seen || cur;
    END LOOP;
END
$$;
COMMENT ON FUNCTION junction_webhooks(integer) IS
  'every webhook endpoint of the team (junction.org_id, junction.team_id, junction.environment), all pages';

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
                   -- floating time (README, "Floating time"): the offset suffix is meaningless for these
                   src.provider OPERATOR(pg_catalog.=) ANY (ARRAY['abbott_libreview', 'freestyle_libre',
                                                               'freestyle_libre_ble']::pg_catalog.text[]) AS floating
            FROM pg_catalog.unnest(items) AS i
            CROSS JOIN LATERAL (
                SELECT junction._provider(i.obj) AS provider,
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
COMMENT ON FUNCTION junction._sample_rows(junction.typing_item[]) IS
  'the junction.samples rows of timeseries groups ({source, data[]}), deduped on the key, latest received first';

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
-- 35 typing: junction._apply_deliveries' validation and classification in their own function
-- ---------------------------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION junction._classify_deliveries(ids bigint[], svix_ids text[])
RETURNS TABLE (svix_id text, inbox_id bigint, received_at timestamptz, payload jsonb, event_type text,
               family text, resource text, user_id uuid, team_id uuid, client_user_id text,
               provider text, obj jsonb)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'
AS $fn$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH delivery AS (
        SELECT DISTINCT ON (d.svix_id) d.svix_id, d.inbox_id
        FROM unnest(ids, svix_ids) AS d(inbox_id, svix_id)
        ORDER BY d.svix_id, d.inbox_id
    ), parsed AS MATERIALIZED (
        SELECT d.svix_id, i.id AS inbox_id, i.received_at, i.body::jsonb AS payload
        FROM delivery AS d
        JOIN junction.inbox AS i ON i.id = d.inbox_id
    ), classified AS MATERIALIZED (
        SELECT p.svix_id, p.inbox_id, p.received_at, p.payload, e.event_type, k.family, k.resource,
               u.user_id, u.team_id, p.payload ->> 'client_user_id' AS client_user_id, v.provider,
               -- the object to type; validating it here raises for bad input before anything is typed
               CASE
                 WHEN k.family IS NULL THEN NULL
                 WHEN coalesce(jsonb_typeof(x.data), 'null') = 'null' THEN
                   junction._fail('23502', format('%s: missing data', e.event_type))::jsonb
                 WHEN jsonb_typeof(x.data) <> 'object' THEN
                   junction._fail('22023', format('%s: data must be an object, not %s',
                                                  e.event_type, jsonb_typeof(x.data)))::jsonb
                 WHEN r.id_field IS NOT NULL
                      AND coalesce(jsonb_typeof(x.data -> r.id_field), 'null') = 'null' THEN
                   junction._fail('23502', format('%s: missing data.%s', e.event_type, r.id_field))::jsonb
                 WHEN k.family = 'timeseries'
                      AND coalesce(jsonb_typeof(x.data -> 'data'), 'null') = 'null' THEN
                   junction._fail('23502', format('%s: missing data.data (the samples)', e.event_type))::jsonb
                 WHEN k.family = 'timeseries' AND jsonb_typeof(x.data -> 'data') <> 'array' THEN
                   junction._fail('22023', format('%s: data.data must be an array, not %s',
                                                  e.event_type, jsonb_typeof(x.data -> 'data')))::jsonb
                 WHEN v.provider IS NULL THEN
                   junction._fail('23502', format('%s: missing provider (data.%s)', e.event_type,
                       CASE WHEN k.family IN ('connection', 'historical') OR k.resource = 'device'
                            THEN 'provider' ELSE 'source.provider' END))::jsonb
                 ELSE x.data
               END AS obj
        FROM parsed AS p
        CROSS JOIN LATERAL (
            SELECT CASE
                     WHEN jsonb_typeof(p.payload) <> 'object' THEN
                       junction._fail('22023', format('webhook body is a JSON %s, not an object',
                                                      jsonb_typeof(p.payload)))
                     WHEN coalesce(jsonb_typeof(p.payload -> 'event_type'), 'null') = 'null' THEN
                       junction._fail('23502', 'webhook body has no event_type')
                     WHEN jsonb_typeof(p.payload -> 'event_type') <> 'string' THEN
                       junction._fail('22023', format('event_type must be a string, not %s',
                                                      left((p.payload -> 'event_type')::text, 100)))
                     WHEN length(p.payload ->> 'event_type') NOT BETWEEN 1 AND 255 THEN
                       junction._fail('22001', format('event_type must be 1 to 255 characters, got %s',
                                                      length(p.payload ->> 'event_type')))
                     ELSE p.payload ->> 'event_type'
                   END AS event_type,
                   p.payload -> 'data' AS data
            OFFSET 0
        ) AS e
        CROSS JOIN LATERAL (SELECT e.data AS data, string_to_array(e.event_type, '.') AS parts OFFSET 0) AS x
        LEFT JOIN junction.resources AS r
               ON cardinality(x.parts) >= 3
              AND r.name = x.parts[cardinality(x.parts) - 1]
              AND r.event_prefix = array_to_string(x.parts[1:cardinality(x.parts) - 2], '.')
              AND x.parts[cardinality(x.parts)] IN ('created', 'updated')
        CROSS JOIN LATERAL (
            SELECT CASE
                     WHEN r.kind IS NOT NULL THEN r.kind
                     WHEN e.event_type ~ '^historical\.data\.[a-z0-9_]+\.created$' THEN 'historical'
                     WHEN e.event_type IN ('provider.connection.created', 'provider.connection.error')
                       THEN 'connection'
                   END AS family,
                   CASE WHEN cardinality(x.parts) >= 3 THEN x.parts[cardinality(x.parts) - 1] END AS resource
            OFFSET 0
        ) AS k
        CROSS JOIN LATERAL (
            SELECT coalesce(CASE jsonb_typeof(p.payload -> 'user_id')
                              WHEN 'string' THEN p.payload ->> 'user_id' END,
                            x.data ->> 'user_id') AS user_id,
                   p.payload ->> 'team_id' AS team_id
            OFFSET 0
        ) AS ut
        CROSS JOIN LATERAL (
            SELECT CASE
                     WHEN ut.user_id IS NULL THEN
                       CASE WHEN k.family IS NOT NULL THEN
                         junction._fail('23502', format('%s: missing user_id', e.event_type)) END
                     WHEN ut.user_id !~* '^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$' THEN
                       junction._fail('22P02', format('%s: user_id %s is not a uuid', e.event_type,
                                                      quote_literal(left(ut.user_id, 100))))
                     ELSE ut.user_id
                   END::uuid AS user_id,
                   CASE
                     WHEN ut.team_id IS NULL THEN NULL
                     WHEN ut.team_id !~* '^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$' THEN
                       junction._fail('22P02', format('%s: team_id %s is not a uuid', e.event_type,
                                                      quote_literal(left(ut.team_id, 100))))
                     ELSE ut.team_id
                   END::uuid AS team_id
            OFFSET 0
        ) AS u
        CROSS JOIN LATERAL (
            SELECT junction._provider(x.data) AS provider
            OFFSET 0
        ) AS v
    )
    SELECT c.svix_id, c.inbox_id, c.received_at, c.payload, c.event_type, c.family, c.resource,
           c.user_id, c.team_id, c.client_user_id, c.provider, c.obj
    FROM classified AS c;
END
$fn$;
COMMENT ON FUNCTION junction._classify_deliveries(bigint[], text[]) IS
  'parse, validate and classify verified inbox rows (ids with their svix ids), one row per distinct svix id; raises on bad input';

-- ---------------------------------------------------------------------------------------------
-- 99 grants: the new functions, like every function in schema junction, are not PUBLIC's
-- ---------------------------------------------------------------------------------------------
REVOKE ALL ON FUNCTION junction._require(anyelement, text), junction._redact(text, text[]),
                       junction._raise_http_error(boolean, text, text, integer, jsonb, text[]),
                       junction._api_key_configured(boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION junction._provider(jsonb), junction._classify_deliveries(bigint[], text[]),
                       junction._timeseries_page(junction.resources, uuid, timestamptz, timestamptz, text, text)
    FROM PUBLIC;
-- the schema's grants in a fresh install's order: junction_receiver (20_inbox.sql), then
-- junction_admin (70_webhooks.sql)
REVOKE USAGE ON SCHEMA junction FROM junction_admin;
GRANT USAGE ON SCHEMA junction TO junction_admin;
