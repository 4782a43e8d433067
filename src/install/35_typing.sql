-- Typing: accepted webhook messages -> junction.events and the typed tables, set-based.
--
-- The C drain verifies signatures and then calls junction._apply_deliveries(ids, svix_ids) once
-- per batch (and once per row if the batch raises). Everything below runs a fixed number of
-- statements per call: one INSERT per target table, never one per event or per sample.
-- The _upsert_* functions are the one load path for typed rows: the REST loader (junction_sync)
-- feeds them the same items, with a received_seq from junction._next_received_seq().
--
-- All functions run with TimeZone = UTC, so a timestamp without an offset suffix is read as UTC
-- whatever the session's time zone.

-- One parsed object to load: a summary, a timeseries group {source, data[]}, a connection, ...
CREATE TYPE junction.typing_item AS (
    received_seq bigint,       -- ordering key: the inbox id for webhooks
    user_id      uuid,         -- Junction user id
    resource     text,         -- event resource name: activity, steps, weight, device, ...
    event_type   text,         -- the event type, or null for REST loads
    received_at  timestamptz,  -- when we received it
    obj          jsonb         -- the event's data object (or one element of a REST response)
);
COMMENT ON TYPE junction.typing_item IS
  'one object for the junction._upsert_* functions: ordering key, user, resource, event type, receive time, data';

-- A day whose junction.daily values the upserts recompute (38_daily.sql): the user, the local
-- day and the typed resource that changed.
CREATE TYPE junction.daily_key AS (
    user_id       uuid,
    calendar_date date,
    resource      text
);
COMMENT ON TYPE junction.daily_key IS 'a (user, local day, resource) whose junction.daily values are recomputed';
-- An hour of one user's samples of one resource whose junction.daily_parts rows are recomputed.
CREATE TYPE junction.daily_hour AS (
    user_id  uuid,
    resource text,
    hour     timestamptz
);
COMMENT ON TYPE junction.daily_hour IS 'a (user, resource, UTC hour) whose junction.daily_parts rows are recomputed from junction.samples';

-- Raise an error from inside an expression (used to validate rows set-based, without loops).
CREATE FUNCTION junction._fail(code text, message text)
RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = code, MESSAGE = message;
END
$$;
COMMENT ON FUNCTION junction._fail(text, text) IS 'raise message with SQLSTATE code; never returns';

-- The provider of a Junction object: one rule for validation, typing and junction.events. It reads
-- every place Junction puts it: source.provider and source.slug (timeseries, summaries),
-- source_provider (older summaries), provider as a string (historical pulls, devices) or as an
-- object's slug (connection events), and a top-level slug (REST connection objects). SQL, so that
-- it is inlined into the set-based statements that call it; hence no SET clause, and every name
-- qualified (operators included).
CREATE FUNCTION junction._provider(obj jsonb)
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

-- The received_seq for rows loaded from the REST API: drawn from the inbox id sequence, so
-- "later received" orders webhook and REST data alike.
CREATE FUNCTION junction._next_received_seq()
RETURNS bigint
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT nextval(pg_get_serial_sequence('junction.inbox', 'id')) $$;
COMMENT ON FUNCTION junction._next_received_seq() IS
  'a received_seq for REST loads, from the inbox id sequence (orders REST and webhook data together)';

-- ---------------------------------------------------------------------------------------------
-- Summaries: one generic upsert per summary table, generated from the registry and the catalog.
-- Columns named like a field of the object are filled by jsonb_populate_record; nested ones come
-- from resources.nested_fields; user_id, id, provider, source_*, data, received_seq are set here.
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION junction._summary_upsert_sql(resource text)
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
    sum_cols    text;
    set_cols    text;
    parts_join  text := '';
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
                          WHEN res.parts_field IS NOT NULL THEN
                            -- the top-level object's value if there is one, else the parts' sum
                            format('CASE WHEN jsonb_typeof(w.obj -> %L) = ''object'' THEN (w.obj #>> %L)::%s ELSE parts.%I END',
                                   res.nested_fields -> a.attname ->> 0, p.path,
                                   format_type(a.atttypid, a.atttypmod), a.attname)
                          ELSE
                            format('(w.obj #>> %L)::%s', p.path, format_type(a.atttypid, a.atttypmod))
                        END
                      END, ', ' ORDER BY a.attnum),
           -- the sums over the parts, every one computed (so a bad part fails whatever the top level says)
           string_agg(format('sum((part.value #>> %1$L)::%2$s)::%2$s AS %3$I', p.path,
                             format_type(a.atttypid, a.atttypmod), a.attname), ', ' ORDER BY a.attnum)
             FILTER (WHERE res.parts_field IS NOT NULL AND res.nested_fields ? a.attname
                     AND a.atttypid <> 'jsonb'::regtype),
           string_agg(format('%1$I = excluded.%1$I', a.attname), ', ' ORDER BY a.attnum)
             FILTER (WHERE a.attname NOT IN ('user_id', 'id'))
      INTO target_cols, select_cols, sum_cols, set_cols
    FROM pg_attribute AS a
    CROSS JOIN LATERAL (
        SELECT array_agg(x)::text AS path
        FROM jsonb_array_elements_text(res.nested_fields -> a.attname) AS x
    ) AS p
    WHERE a.attrelid = tbl AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '';

    IF sum_cols IS NOT NULL THEN
        parts_join := format($q$
CROSS JOIN LATERAL (
    SELECT %1$s
    FROM jsonb_each(CASE jsonb_typeof(w.obj -> %2$L)
                      WHEN 'object' THEN w.obj -> %2$L
                      WHEN 'null' THEN NULL
                      ELSE junction._fail('22023', format('data.%%s must be an object (name -> part), not %%s',
                                                          %2$L, jsonb_typeof(w.obj -> %2$L)))::jsonb
                    END) AS part) AS parts$q$, sum_cols, res.parts_field);
    END IF;

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
CROSS JOIN LATERAL jsonb_populate_record(NULL::%1$s, w.obj) AS r%7$s
ON CONFLICT (user_id, id) DO UPDATE SET %6$s
WHERE (coalesce(excluded.updated_at, '-infinity'), excluded.received_seq)
    > (coalesce(t.updated_at, '-infinity'), t.received_seq)$q$,
        tbl, target_cols, select_cols, res.id_field, id_type, set_cols, parts_join);
END
$fn$;
COMMENT ON FUNCTION junction._summary_upsert_sql(text) IS
  'the INSERT ... ON CONFLICT statement that loads one summary resource ($1 typing_item[], $2 resource)';

CREATE FUNCTION junction._upsert_summaries(items junction.typing_item[])
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
    res    text;
    n      bigint;
    total  bigint := 0;
    daily  boolean := junction._daily_enabled();
    before junction.daily_key[];
    days   junction.daily_key[] := '{}'::junction.daily_key[];
BEGIN
    FOR res IN SELECT DISTINCT i.resource FROM unnest(items) AS i ORDER BY 1 LOOP
        -- the days the stored versions are on (a correction may move a summary to another day)
        IF daily THEN
            before := junction._daily_summary_keys(items, res);
        END IF;
        -- one statement per summary table; _summary_upsert_sql rejects non-summary resources
        EXECUTE junction._summary_upsert_sql(res) USING items, res;
        GET DIAGNOSTICS n = ROW_COUNT;
        total := total + n;
        IF daily AND n > 0 THEN
            days := days || coalesce(before, '{}'::junction.daily_key[])
                    || coalesce(junction._daily_summary_keys(items, res), '{}'::junction.daily_key[]);
        END IF;
    END LOOP;
    -- junction.daily: recompute the days these summaries were and are on (38_daily.sql)
    PERFORM junction._daily_touch(NULL, days);
    RETURN total;
END
$fn$;
COMMENT ON FUNCTION junction._upsert_summaries(junction.typing_item[]) IS
  'upsert summary objects (and devices) into their tables; newest updated_at wins, then the latest received; recomputes the junction.daily days they touch';

-- ---------------------------------------------------------------------------------------------
-- Samples: every element of every group's data[] becomes one row of junction.samples.
-- ---------------------------------------------------------------------------------------------
-- The samples of one timeseries group, typed (src/samples.c); the per-sample half of
-- junction._upsert_samples. Reads timestamps in the session time zone: call it with TimeZone = UTC.
CREATE FUNCTION junction._group_samples(grp jsonb, resource text, value_kind text, floating boolean,
                                        source_extra jsonb,
                                        OUT ord bigint, OUT type text, OUT "time" timestamptz,
                                        OUT time_end timestamptz, OUT value double precision,
                                        OUT unit text, OUT timezone_offset integer,
                                        OUT local_time timestamp, OUT extra jsonb)
RETURNS SETOF record
LANGUAGE C STABLE
AS 'MODULE_PATHNAME', 'junction_group_samples';
COMMENT ON FUNCTION junction._group_samples(jsonb, text, text, boolean, jsonb) IS
  'one typed row per element of grp->data (a timeseries group): ordinality, type, time, time_end, value, unit, timezone_offset, local_time, extra';

-- Whether one more writing subtransaction fits in this backend's subxid cache (src/samples.c).
CREATE FUNCTION junction._subxact_room()
RETURNS boolean
LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 'junction_subxact_room';
COMMENT ON FUNCTION junction._subxact_room() IS
  'true while this transaction has fewer subtransaction ids than the per-backend cache holds (64)';

-- What the samples of one timeseries group share: the item, the resource's value kind, and the
-- group's source (provider, source type, workout, the source extras) and time rule. One SQL
-- statement, inlined into junction._sample_rows (so the same rules as it: no table, no SET,
-- every name qualified); junction._insert_new_samples takes its rows as an array.
CREATE TYPE junction.sample_group AS (
    received_seq bigint, user_id uuid, resource text, obj jsonb, value_kind text,
    provider text, source_type text, workout_id uuid, source_extra jsonb, floating boolean
);
COMMENT ON TYPE junction.sample_group IS
  'a timeseries group and the fields its samples share (junction._sample_groups)';

CREATE FUNCTION junction._sample_groups(items junction.typing_item[], kinds jsonb)
RETURNS SETOF junction.sample_group
LANGUAGE sql STABLE
AS $fn$
    SELECT i.received_seq, i.user_id, i.resource, i.obj,
           kinds OPERATOR(pg_catalog.->>) i.resource AS value_kind,
           src.provider, src.source_type, src.workout_id, src.source_extra,
           -- floating time (README, "Floating time"): the offset suffix is meaningless for
           -- these two (Junction's list; freestyle_libre_ble is SDK-based, with a real zone)
           src.provider OPERATOR(pg_catalog.=) ANY (ARRAY['abbott_libreview',
                                                       'freestyle_libre']::pg_catalog.text[]) AS floating
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
$fn$;
COMMENT ON FUNCTION junction._sample_groups(junction.typing_item[], jsonb) IS
  'the timeseries groups of a batch with the fields their samples share (provider, source type, workout, source extras, floating time)';

-- The first-backfill loader (src/samples.c): the groups' samples typed as junction._group_samples
-- types them, deduped as junction._sample_rows dedupes them, and bulk-inserted (table_multi_insert,
-- as COPY inserts) into junction.samples, which must hold none of their keys; one row per
-- (user, resource, UTC hour) written. Only where junction._samples_bulk_ok().
CREATE FUNCTION junction._insert_new_samples(groups junction.sample_group[],
                                             OUT user_id uuid, OUT resource text,
                                             OUT hour timestamptz, OUT n bigint)
RETURNS SETOF record
LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 'junction_insert_new_samples';
COMMENT ON FUNCTION junction._insert_new_samples(junction.sample_group[]) IS
  'type, dedupe and bulk-insert the samples of timeseries groups whose keys are all new; returns the (user, resource, hour) written with their row counts';

-- Whether that loader may write junction.samples: a plain table without triggers, rules, row
-- security or generated columns, in this extension's layout, and no Citus (src/samples.c).
CREATE FUNCTION junction._samples_bulk_ok()
RETURNS boolean
LANGUAGE C STABLE
AS 'MODULE_PATHNAME', 'junction_samples_bulk_ok';
COMMENT ON FUNCTION junction._samples_bulk_ok() IS
  'true when junction._insert_new_samples may load junction.samples (no trigger, rule, row security or Citus on it)';

-- The rows of junction.samples for a batch of timeseries groups, deduped on the key (the latest
-- received wins) and in key order. One SQL statement, inlined into the INSERTs below. Inlining
-- needs a function without SET clauses, so every name here is qualified (operators and casts
-- included): parsed in a hostile caller's search_path, it still resolves only in pg_catalog.
-- kinds maps each resource of items to its junction.resources.value_kind: the caller reads the
-- registry, so that this function references no table and stays inlinable into the INSERT (Citus
-- plans no SQL function that reads a table inside a statement on a distributed one).
CREATE FUNCTION junction._sample_rows(items junction.typing_item[], kinds jsonb)
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
            SELECT * FROM junction._sample_groups(items, kinds)
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
COMMENT ON FUNCTION junction._sample_rows(junction.typing_item[], jsonb) IS
  'the junction.samples rows of timeseries groups ({source, data[]}), deduped on the key, latest received first';

-- conflicts = false is for a caller that knows none of these sample keys exists yet (an empty
-- range, checked beforehand) and that handles unique_violation by loading again with true: a plain
-- INSERT costs about half of INSERT ... ON CONFLICT, and junction._insert_new_samples (the bulk
-- loader, where junction._samples_bulk_ok()) less again.
-- Returns the rows written (n) and, unless junction.daily = off, the (user, resource, UTC hour)
-- they are in (hours): the caller passes those to junction._daily_touch, once per call
-- (junction._upsert_samples) or once for all the pages of a range (junction._sync_timeseries).
CREATE FUNCTION junction._load_samples(items junction.typing_item[], conflicts boolean,
                                       OUT n bigint, OUT hours junction.daily_hour[])
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'
AS $fn$
DECLARE
    bad   text;
    kinds jsonb;
    typed junction.samples[];
BEGIN
    SELECT coalesce(quote_literal(i.resource), 'NULL') INTO bad
    FROM unnest(items) AS i
    WHERE NOT EXISTS (SELECT FROM junction.resources AS r
                      WHERE r.name = i.resource AND r.kind = 'timeseries')
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'not a timeseries resource: %', bad USING ERRCODE = '22023';
    END IF;
    SELECT jsonb_object_agg(r.name, r.value_kind) INTO kinds
    FROM junction.resources AS r
    WHERE r.name IN (SELECT DISTINCT i.resource FROM unnest(items) AS i);

    IF NOT junction._daily_enabled() THEN
        IF conflicts THEN
            INSERT INTO junction.samples AS t
            SELECT * FROM junction._sample_rows(items, kinds)
            ON CONFLICT (user_id, resource, time, provider, source_type, type, workout_id) DO UPDATE
            SET time_end = excluded.time_end, value = excluded.value, unit = excluded.unit,
                timezone_offset = excluded.timezone_offset, local_time = excluded.local_time,
                floating = excluded.floating, extra = excluded.extra, received_seq = excluded.received_seq
            WHERE excluded.received_seq > t.received_seq;
        ELSIF junction._samples_bulk_ok() THEN
            SELECT coalesce(sum(h.n), 0) INTO n
            FROM junction._insert_new_samples(ARRAY(SELECT g FROM junction._sample_groups(items, kinds) AS g)) AS h;
            RETURN;
        ELSE
            INSERT INTO junction.samples SELECT * FROM junction._sample_rows(items, kinds);
        END IF;
        GET DIAGNOSTICS n = ROW_COUNT;
        RETURN;
    END IF;

    -- The same statements, and the hours of their rows: junction.daily_parts recomputes those
    -- hours, junction.daily the days they were and are on (38_daily.sql).
    IF conflicts THEN
        -- The rows are typed once into an array, upserted from it, and their hours read from it,
        -- not returned by the INSERT: on Citus the upsert with RETURNING (in a WITH) took about
        -- twice as long as without (200 against 100 ms for a batch's 5,400 samples, 4 shards;
        -- the drain 0.39 -> 0.47 of single node); on one node the two cost the same. The hours
        -- of rows the ON CONFLICT left alone (stale redeliveries) are recomputed too, unchanged.
        typed := ARRAY(SELECT s FROM junction._sample_rows(items, kinds) AS s);
        INSERT INTO junction.samples AS t
        SELECT * FROM unnest(typed)
        ON CONFLICT (user_id, resource, time, provider, source_type, type, workout_id) DO UPDATE
        SET time_end = excluded.time_end, value = excluded.value, unit = excluded.unit,
            timezone_offset = excluded.timezone_offset, local_time = excluded.local_time,
            floating = excluded.floating, extra = excluded.extra, received_seq = excluded.received_seq
        WHERE excluded.received_seq > t.received_seq;
        GET DIAGNOSTICS n = ROW_COUNT;
        SELECT array_agg(ROW(h.user_id, h.resource, h.hour)::junction.daily_hour) INTO hours
        FROM (SELECT DISTINCT r.user_id, r.resource, date_trunc('hour', r.time) AS hour
              FROM unnest(typed) AS r
              WHERE r.resource IN (SELECT dm.resource FROM junction.daily_metrics AS dm)) AS h;
    ELSIF junction._samples_bulk_ok() THEN
        SELECT sum(h.n), array_agg(ROW(h.user_id, h.resource, h.hour)::junction.daily_hour)
                           FILTER (WHERE h.resource IN (SELECT dm.resource FROM junction.daily_metrics AS dm))
          INTO n, hours
        FROM junction._insert_new_samples(ARRAY(SELECT g FROM junction._sample_groups(items, kinds) AS g)) AS h;
        n := coalesce(n, 0);
    ELSE
        -- A plain INSERT keeps its RETURNING (the first-backfill fast path on Citus): without it
        -- Citus sends the rows to the shards by COPY, and fault_citus's race of the fast path
        -- against a concurrent load of the same keys no longer ended in the unique_violation
        -- the fallback reloads on (2 runs of 2).
        WITH w AS (
            INSERT INTO junction.samples AS t
            SELECT * FROM junction._sample_rows(items, kinds)
            RETURNING t.user_id, t.resource, t.time
        )
        SELECT sum(h.n), array_agg(ROW(h.user_id, h.resource, h.hour)::junction.daily_hour)
                           FILTER (WHERE h.resource IN (SELECT dm.resource FROM junction.daily_metrics AS dm))
          INTO n, hours
        FROM (SELECT w.user_id, w.resource, date_trunc('hour', w.time) AS hour, count(*) AS n
              FROM w GROUP BY 1, 2, 3) AS h;
        n := coalesce(n, 0);
    END IF;
END
$fn$;
COMMENT ON FUNCTION junction._load_samples(junction.typing_item[], boolean) IS
  'upsert timeseries groups ({source, data[]}) into junction.samples (the latest received wins per sample key; conflicts = false: plain INSERT of keys known to be new); returns the rows written and the hours they are in, for junction._daily_touch';

-- One page of samples: loaded, and its hours of junction.daily recomputed (or queued).
CREATE FUNCTION junction._upsert_samples(items junction.typing_item[], conflicts boolean DEFAULT true)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'
AS $fn$
DECLARE
    loaded record;
BEGIN
    SELECT l.n, l.hours INTO loaded FROM junction._load_samples(items, conflicts) AS l;
    PERFORM junction._daily_touch(loaded.hours, NULL);
    RETURN loaded.n;
END
$fn$;
COMMENT ON FUNCTION junction._upsert_samples(junction.typing_item[], boolean) IS
  'upsert timeseries groups ({source, data[]}) into junction.samples; the latest received wins per sample key (conflicts = false: plain INSERT of keys known to be new); recomputes the junction.daily days they touch';

-- ---------------------------------------------------------------------------------------------
-- Workout stream notifications, connections, backfills.
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION junction._upsert_workout_streams(items junction.typing_item[])
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
         notification, received_seq, fetch_status, updated_at)
    SELECT DISTINCT ON (i.user_id, (i.obj ->> 'workout_id')::uuid)
           i.user_id, (i.obj ->> 'workout_id')::uuid,
           junction._provider(i.obj),
           coalesce(i.obj #>> '{source,type}', 'unknown'),
           i.obj ->> 'provider_id', (i.obj #>> '{sport,id}')::integer,
           i.obj #>> '{sport,name}', i.obj #>> '{sport,slug}', i.obj, i.received_seq,
           -- .unavailable: Junction says the stream does not exist; the loader leaves it alone
           -- until a later .created/.updated re-opens it
           CASE WHEN i.event_type = 'daily.data.workout_stream.unavailable' THEN 'unavailable'
                ELSE 'pending' END,
           now()
    FROM unnest(items) AS i
    ORDER BY i.user_id, (i.obj ->> 'workout_id')::uuid, i.received_seq DESC
    ON CONFLICT (user_id, workout_id) DO UPDATE
    SET provider = excluded.provider, source_type = excluded.source_type,
        provider_id = excluded.provider_id, sport_id = excluded.sport_id,
        sport_name = excluded.sport_name, sport_slug = excluded.sport_slug,
        notification = excluded.notification, received_seq = excluded.received_seq,
        fetch_status = excluded.fetch_status, fetch_error = NULL, attempts = 0, updated_at = excluded.updated_at
    WHERE excluded.received_seq > t.received_seq;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$fn$;
COMMENT ON FUNCTION junction._upsert_workout_streams(junction.typing_item[]) IS
  'record workout stream notifications (fetch_status pending, or unavailable for .unavailable); the latest received wins per workout';

-- status, error_* and data follow the latest event; external_user_id, resource_availability and
-- connected_at follow the latest "connected" one. Items: webhook data (event_type says created or
-- error) or REST connection objects (event_type null, status in the object).
CREATE FUNCTION junction._upsert_connections(items junction.typing_item[])
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

CREATE FUNCTION junction._upsert_backfills(items junction.typing_item[])
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
        rows_loaded = NULL, attempts = 0, updated_at = excluded.updated_at,
        received_seq = excluded.received_seq, data = excluded.data,
        cursor = NULL, pages_done = 0, fast = NULL, claimed_by = NULL
    WHERE excluded.received_seq > t.received_seq;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$fn$;
COMMENT ON FUNCTION junction._upsert_backfills(junction.typing_item[]) IS
  'record completed historical pulls (fetch_status pending); the latest received wins per user, provider, resource';

-- The verified deliveries of a batch, parsed once and classified: event type, family, resource,
-- user, team, provider (junction._provider) and the object to type. Validation raises here, for
-- the first bad row, before anything is written (junction._apply_deliveries' first half).
CREATE FUNCTION junction._classify_deliveries(ids bigint[], svix_ids text[])
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
                 WHEN k.family = 'sense' THEN
                   CASE WHEN jsonb_typeof(x.data) = 'array' THEN x.data
                        ELSE junction._fail('22023', format('%s: data must be an array, not %s',
                                                            e.event_type, jsonb_typeof(x.data)))::jsonb END
                 WHEN jsonb_typeof(x.data) <> 'object' THEN
                   junction._fail('22023', format('%s: data must be an object, not %s',
                                                  e.event_type, jsonb_typeof(x.data)))::jsonb
                 WHEN r.id_field IS NOT NULL
                      AND coalesce(jsonb_typeof(x.data -> r.id_field), 'null') = 'null' THEN
                   junction._fail('23502', format('%s: missing data.%s', e.event_type, r.id_field))::jsonb
                 WHEN k.family IN ('lab_order', 'lab_appointment')
                      AND coalesce(jsonb_typeof(x.data -> 'id'), 'null') = 'null' THEN
                   junction._fail('23502', format('%s: missing data.id', e.event_type))::jsonb
                 WHEN k.family = 'lab_report'
                      AND coalesce(x.data ->> 'id', x.data ->> 'job_id') IS NULL THEN
                   junction._fail('23502', format('%s: missing data.id', e.event_type))::jsonb
                 WHEN k.family = 'lab_critical'
                      AND coalesce(jsonb_typeof(x.data -> 'order_id'), 'null') = 'null' THEN
                   junction._fail('23502', format('%s: missing data.order_id', e.event_type))::jsonb
                 WHEN k.family = 'timeseries'
                      AND coalesce(jsonb_typeof(x.data -> 'data'), 'null') = 'null' THEN
                   junction._fail('23502', format('%s: missing data.data (the samples)', e.event_type))::jsonb
                 WHEN k.family = 'timeseries' AND jsonb_typeof(x.data -> 'data') <> 'array' THEN
                   junction._fail('22023', format('%s: data.data must be an array, not %s',
                                                  e.event_type, jsonb_typeof(x.data -> 'data')))::jsonb
                 WHEN v.provider IS NULL AND k.family NOT IN ('lab_order', 'lab_appointment', 'lab_critical', 'lab_report') THEN
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
              AND (x.parts[cardinality(x.parts)] IN ('created', 'updated')
                   -- a workout stream can also be declared unavailable (no stream to fetch)
                   OR (r.kind = 'stream' AND x.parts[cardinality(x.parts)] = 'unavailable'))
        CROSS JOIN LATERAL (
            SELECT CASE
                     WHEN r.kind IS NOT NULL THEN r.kind
                     WHEN e.event_type ~ '^historical\.data\.[a-z0-9_]+\.created$' THEN 'historical'
                     WHEN e.event_type IN ('provider.connection.created', 'provider.connection.error')
                       THEN 'connection'
                     -- lab testing (src/install/37_lab.sql)
                     WHEN e.event_type IN ('labtest.order.created', 'labtest.order.updated') THEN 'lab_order'
                     WHEN e.event_type IN ('labtest.appointment.created', 'labtest.appointment.updated')
                       THEN 'lab_appointment'
                     WHEN e.event_type = 'labtest.result.critical' THEN 'lab_critical'
                     WHEN e.event_type IN ('lab_report.parsing_job.created', 'lab_report.parsing_job.updated')
                       THEN 'lab_report'
                     -- Junction Sense (src/install/38_sense.sql): data is an array of change sets
                     WHEN e.event_type = 'continuous_query.result_table.changed' THEN 'sense'
                   END AS family,
                   CASE WHEN cardinality(x.parts) >= 3 THEN x.parts[cardinality(x.parts) - 1] END AS resource
            OFFSET 0
        ) AS k
        -- The user (README, "Which user"): the top-level user_id, else data.user_id. Every event
        -- must name one, and it must be a uuid: one rule for every family, typed or not.
        CROSS JOIN LATERAL (
            SELECT CASE
                     WHEN coalesce(jsonb_typeof(p.payload -> 'user_id'), 'null') <> 'null' THEN 'user_id'
                     WHEN jsonb_typeof(x.data) = 'object'
                          AND coalesce(jsonb_typeof(x.data -> 'user_id'), 'null') <> 'null' THEN 'data.user_id'
                   END AS user_path,
                   CASE
                     WHEN coalesce(jsonb_typeof(p.payload -> 'user_id'), 'null') <> 'null' THEN p.payload -> 'user_id'
                     WHEN jsonb_typeof(x.data) = 'object' THEN x.data -> 'user_id'
                   END AS user_json,
                   p.payload -> 'team_id' AS team_json
            OFFSET 0
        ) AS ut
        CROSS JOIN LATERAL (
            SELECT CASE
                     WHEN ut.user_path IS NULL THEN
                       junction._fail('23502', format('%s: missing user_id', e.event_type))
                     WHEN jsonb_typeof(ut.user_json) <> 'string'
                          OR (ut.user_json #>> '{}') !~* '^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$' THEN
                       junction._fail('22P02', format('%s: %s %s is not a uuid', e.event_type, ut.user_path,
                                                      left(ut.user_json::text, 100)))
                     ELSE ut.user_json #>> '{}'
                   END::uuid AS user_id,
                   CASE
                     WHEN coalesce(jsonb_typeof(ut.team_json), 'null') = 'null' THEN NULL
                     WHEN jsonb_typeof(ut.team_json) <> 'string'
                          OR (ut.team_json #>> '{}') !~* '^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$' THEN
                       junction._fail('22P02', format('%s: team_id %s is not a uuid', e.event_type,
                                                      left(ut.team_json::text, 100)))
                     ELSE ut.team_json #>> '{}'
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
-- The batch entry point called by the C drain.
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION junction._apply_deliveries(ids bigint[], svix_ids text[])
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
    lab_orders junction.typing_item[];
    lab_appts  junction.typing_item[];
    lab_crit   junction.typing_item[];
    sense      junction.typing_item[];
    lab_jobs   junction.typing_item[];
    -- the classified deliveries, a column each (ordered by inbox id)
    c_svix     text[];
    c_inbox    bigint[];
    c_event    text[];
    c_user     uuid[];
    c_client   text[];
    c_team     uuid[];
    c_provider text[];
    c_resource text[];
    c_received timestamptz[];
    c_payload  jsonb[];
    c_family   text[];
    c_obj      jsonb[];
    fresh      text[];             -- the svix ids of the events inserted (the new deliveries)
BEGIN
    IF cardinality(ids) IS DISTINCT FROM cardinality(svix_ids) THEN
        RAISE EXCEPTION '_apply_deliveries: % inbox ids but % svix ids',
            coalesce(cardinality(ids), 0), coalesce(cardinality(svix_ids), 0)
            USING ERRCODE = '22023';
    END IF;
    IF array_position(ids, NULL) IS NOT NULL OR array_position(svix_ids, NULL) IS NOT NULL THEN
        RAISE EXCEPTION '_apply_deliveries: null inbox id or svix id' USING ERRCODE = '22004';
    END IF;

    -- Parse, validate and classify each delivery once, into arrays: on Citus a CTE over the
    -- classified rows (payloads included) was written to an intermediate result and read back
    -- for each statement that used it.
    SELECT array_agg(c.svix_id ORDER BY c.inbox_id), array_agg(c.inbox_id ORDER BY c.inbox_id),
           array_agg(c.event_type ORDER BY c.inbox_id), array_agg(c.user_id ORDER BY c.inbox_id),
           array_agg(c.client_user_id ORDER BY c.inbox_id), array_agg(c.team_id ORDER BY c.inbox_id),
           array_agg(c.provider ORDER BY c.inbox_id), array_agg(c.resource ORDER BY c.inbox_id),
           array_agg(c.received_at ORDER BY c.inbox_id), array_agg(c.payload ORDER BY c.inbox_id),
           array_agg(c.family ORDER BY c.inbox_id), array_agg(c.obj ORDER BY c.inbox_id)
      INTO c_svix, c_inbox, c_event, c_user, c_client, c_team, c_provider, c_resource, c_received,
           c_payload, c_family, c_obj
    FROM junction._classify_deliveries(ids, svix_ids) AS c;

    -- Insert the events; the ones inserted (not redeliveries) are the new ones.
    WITH inserted AS (
        INSERT INTO junction.events AS ev
            (svix_id, inbox_id, event_type, user_id, client_user_id, team_id, provider, resource,
             received_at, payload)
        SELECT c.svix_id, c.inbox_id, c.event_type, c.user_id, c.client_user_id, c.team_id,
               c.provider, c.resource, c.received_at, c.payload
        FROM unnest(c_svix, c_inbox, c_event, c_user, c_client, c_team, c_provider, c_resource,
                    c_received, c_payload)
             AS c(svix_id, inbox_id, event_type, user_id, client_user_id, team_id, provider, resource,
                  received_at, payload)
        ON CONFLICT (user_id, svix_id) DO NOTHING
        RETURNING ev.svix_id
    )
    SELECT array_agg(i.svix_id) INTO fresh FROM inserted AS i;

    SELECT count(*),
           array_agg(c.item ORDER BY c.inbox_id) FILTER (WHERE c.family = 'summary'),
           array_agg(c.item ORDER BY c.inbox_id) FILTER (WHERE c.family = 'timeseries'),
           array_agg(c.item ORDER BY c.inbox_id) FILTER (WHERE c.family = 'stream'),
           array_agg(c.item ORDER BY c.inbox_id) FILTER (WHERE c.family = 'connection'),
           array_agg(c.item ORDER BY c.inbox_id) FILTER (WHERE c.family = 'historical'),
           array_agg(c.item ORDER BY c.inbox_id) FILTER (WHERE c.family = 'lab_order'),
           array_agg(c.item ORDER BY c.inbox_id) FILTER (WHERE c.family = 'lab_appointment'),
           array_agg(c.item ORDER BY c.inbox_id) FILTER (WHERE c.family = 'lab_critical'),
           array_agg(c.item ORDER BY c.inbox_id) FILTER (WHERE c.family = 'sense'),
           array_agg(c.item ORDER BY c.inbox_id) FILTER (WHERE c.family = 'lab_report')
      INTO accepted, summaries, timeseries, streams, conns, backfills, lab_orders, lab_appts, lab_crit, sense,
           lab_jobs
    FROM (SELECT cl.inbox_id, cl.family,
                 ROW(cl.inbox_id, cl.user_id, cl.resource, cl.event_type, cl.received_at, cl.obj)::junction.typing_item AS item
          FROM unnest(c_svix, c_inbox, c_family, c_user, c_resource, c_event, c_received, c_obj)
               AS cl(svix_id, inbox_id, family, user_id, resource, event_type, received_at, obj)
          JOIN unnest(fresh) AS f(svix_id) ON f.svix_id = cl.svix_id) AS c;

    -- Type the new events: one statement per target table.
    IF summaries IS NOT NULL THEN PERFORM junction._upsert_summaries(summaries); END IF;
    IF timeseries IS NOT NULL THEN PERFORM junction._upsert_samples(timeseries); END IF;
    IF streams IS NOT NULL THEN PERFORM junction._upsert_workout_streams(streams); END IF;
    IF conns IS NOT NULL THEN PERFORM junction._upsert_connections(conns); END IF;
    IF backfills IS NOT NULL THEN PERFORM junction._upsert_backfills(backfills); END IF;
    -- critical results before orders: an order typed in this batch then sees its critical flag
    IF lab_crit IS NOT NULL THEN PERFORM junction._upsert_lab_critical(lab_crit); END IF;
    IF lab_orders IS NOT NULL THEN PERFORM junction._upsert_lab_orders(lab_orders); END IF;
    IF lab_appts IS NOT NULL THEN PERFORM junction._upsert_lab_appointments(lab_appts); END IF;
    IF lab_jobs IS NOT NULL THEN PERFORM junction._upsert_lab_report_jobs(lab_jobs); END IF;
    IF sense IS NOT NULL THEN PERFORM junction._upsert_sense(sense); END IF;

    UPDATE junction.inbox
    SET status = 'processed', processed_at = clock_timestamp(), attempts = attempts + 1,
        error = NULL, sqlstate = NULL
    WHERE id = ANY (ids);

    RETURN accepted;
END
$fn$;
COMMENT ON FUNCTION junction._apply_deliveries(bigint[], text[]) IS
  'accept verified inbox rows (ids with their svix ids): parse, record events, type new ones, mark processed; raises on bad input';

-- ---------------------------------------------------------------------------------------------
-- Where a typing error is. The drain calls this for one row whose typing raised, before it
-- quarantines it (never on the batch path): the reason becomes "<event type>: <JSON path>:
-- <error>", the path being that of the first field that fails on its own. One subtransaction per
-- field tried, which is fine for a row already known to be bad.
-- ---------------------------------------------------------------------------------------------
-- The error that casting the value at path of obj to typ raises, or null.
CREATE FUNCTION junction._cast_error(obj jsonb, path text[], typ regtype)
RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'
AS $fn$
-- The EXECUTEd text is a cast to a regtype's canonical name (format_type); the value is passed
-- with USING: no caller's text reaches the statement.
-- @plpgsql_check_options: security_warnings = off
BEGIN
    IF obj #>> path IS NULL THEN
        RETURN NULL;
    END IF;
    EXECUTE format('SELECT ($1 #>> $2)::%s', format_type(typ, NULL)) USING obj, path;
    RETURN NULL;
EXCEPTION WHEN OTHERS THEN
    RETURN SQLERRM;
END
$fn$;
COMMENT ON FUNCTION junction._cast_error(jsonb, text[], regtype) IS
  'the error raised by casting the text at path of obj to typ, or null if it casts (or is absent)';

CREATE FUNCTION junction._typing_error_context(inbox_id bigint, message text)
RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'
AS $fn$
-- The EXECUTEd text reads one column of a summary table named by the registry (regclass, quote_ident);
-- values are passed with USING.
-- @plpgsql_check_options: security_warnings = off
DECLARE
    c     record;
    res   junction.resources;
    tbl   regclass;
    col   record;
    elem  jsonb;
    ord   integer;
    path  text;
    err   text;
    f     text;
BEGIN
    BEGIN
        SELECT d.event_type, d.family, d.resource, d.obj INTO c
        FROM junction._classify_deliveries(ARRAY[inbox_id], ARRAY['-']) AS d;
    EXCEPTION WHEN OTHERS THEN
        RETURN message;     -- validation failed: its message already names the event and the field
    END;
    IF c.event_type IS NULL THEN
        RETURN message;
    END IF;
    IF starts_with(message, c.event_type || ': ') THEN
        RETURN message;
    END IF;
    SELECT * INTO res FROM junction.resources AS r WHERE r.name = c.resource;

    IF c.family = 'summary' THEN
        tbl := format('junction.%I', res.table_name)::regclass;
        SELECT a.atttypid::regtype AS typ INTO col
        FROM pg_attribute AS a WHERE a.attrelid = tbl AND a.attname = 'id';
        err := junction._cast_error(c.obj, ARRAY[res.id_field], col.typ);
        IF err IS NOT NULL THEN
            path := 'data.' || res.id_field;
        END IF;
        FOR col IN
            SELECT a.attname::text AS name, a.atttypid::regtype AS typ,
                   ARRAY(SELECT jsonb_array_elements_text(res.nested_fields -> a.attname::text)) AS nested
            FROM pg_attribute AS a
            WHERE a.attrelid = tbl AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
              AND a.attname NOT IN ('user_id', 'id', 'provider', 'source_type', 'source_app_id',
                                    'source_device_id', 'data', 'received_seq')
            ORDER BY a.attnum
        LOOP
            EXIT WHEN err IS NOT NULL;
            IF cardinality(col.nested) > 0 THEN
                err := junction._cast_error(c.obj, col.nested, col.typ);
                path := 'data.' || array_to_string(col.nested, '.');
            ELSIF c.obj ? col.name THEN
                -- the conversion the upsert makes: jsonb_populate_record, one key at a time
                BEGIN
                    EXECUTE format('SELECT (jsonb_populate_record(NULL::%s, $1)).%I', tbl, col.name)
                        USING jsonb_build_object(col.name, c.obj -> col.name);
                EXCEPTION WHEN OTHERS THEN
                    err := SQLERRM;
                END;
                path := 'data.' || col.name;
            END IF;
        END LOOP;
        -- the parts (a meal's foods): each one's nested fields, summed by the upsert
        IF err IS NULL AND res.parts_field IS NOT NULL THEN
            IF jsonb_typeof(c.obj -> res.parts_field) NOT IN ('object', 'null') THEN
                path := 'data.' || res.parts_field;
                err := format('must be an object (name -> part), not %s', jsonb_typeof(c.obj -> res.parts_field));
            END IF;
            FOR col IN
                SELECT format('data.%s[%s].%s', res.parts_field, to_jsonb(part.key),
                              array_to_string(ARRAY(SELECT jsonb_array_elements_text(n.value)), '.')) AS p,
                       junction._cast_error(part.value, ARRAY(SELECT jsonb_array_elements_text(n.value)),
                                            'double precision') AS e
                FROM jsonb_each(CASE jsonb_typeof(c.obj -> res.parts_field)
                                  WHEN 'object' THEN c.obj -> res.parts_field END) AS part,
                     jsonb_each(res.nested_fields) AS n
            LOOP
                EXIT WHEN err IS NOT NULL;
                path := col.p;
                err := col.e;
            END LOOP;
        END IF;
    ELSIF c.family = 'timeseries' THEN
        err := junction._cast_error(c.obj, '{source,workout_id}', 'uuid');
        path := 'data.source.workout_id';
        IF err IS NULL THEN
            FOR elem, ord IN SELECT e.value, e.ordinality - 1
                             FROM jsonb_array_elements(c.obj -> 'data') WITH ORDINALITY AS e
            LOOP
                BEGIN
                    PERFORM junction._group_samples(jsonb_build_object('data', jsonb_build_array(elem)),
                                                    c.resource, res.value_kind, false, NULL);
                EXCEPTION WHEN OTHERS THEN
                    err := SQLERRM;
                END;
                CONTINUE WHEN err IS NULL;
                path := format('data.data[%s]', ord);
                IF jsonb_typeof(elem) = 'object' THEN
                    FOREACH f IN ARRAY ARRAY['start', 'timestamp', 'end', 'timezone_offset', 'value'] LOOP
                        IF (f = 'value' AND res.value_kind = 'number'
                            AND jsonb_typeof(elem -> 'value') NOT IN ('number', 'null'))
                           OR junction._cast_error(elem, ARRAY[f],
                                  CASE f WHEN 'timezone_offset' THEN 'integer'::regtype
                                         WHEN 'value' THEN 'text'::regtype
                                         ELSE 'timestamptz'::regtype END) IS NOT NULL THEN
                            path := path || '.' || f;
                            EXIT;
                        END IF;
                    END LOOP;
                END IF;
                EXIT;
            END LOOP;
        END IF;
    ELSE
        -- streams, connections, historical pulls, lab objects: the fields their upserts cast
        SELECT x.p AS p, junction._cast_error(c.obj, x.p, x.t) AS e INTO col
        FROM (VALUES ('stream', '{workout_id}'::text[], 'uuid'::regtype, 1),
                     ('stream', '{sport,id}', 'integer', 2),
                     ('connection', '{created_on}', 'timestamptz', 1),
                     ('historical', '{start_date}', 'timestamptz', 1),
                     ('historical', '{end_date}', 'timestamptz', 2),
                     ('lab_order', '{id}', 'uuid', 1),
                     ('lab_order', '{team_id}', 'uuid', 2),
                     ('lab_order', '{updated_at}', 'timestamptz', 3),
                     ('lab_order', '{created_at}', 'timestamptz', 4),
                     ('lab_order', '{lab_test,id}', 'uuid', 5),
                     ('lab_order', '{priority}', 'boolean', 6),
                     ('lab_order', '{has_missing_results}', 'boolean', 7),
                     ('lab_order', '{expected_result_by_date}', 'date', 8),
                     ('lab_order', '{worst_case_result_by_date}', 'date', 9),
                     ('lab_order', '{patient_details,dob}', 'timestamptz', 10),
                     ('lab_appointment', '{id}', 'uuid', 1),
                     ('lab_appointment', '{order_id}', 'uuid', 2),
                     ('lab_appointment', '{updated_at}', 'timestamptz', 3),
                     ('lab_appointment', '{start_at}', 'timestamptz', 4),
                     ('lab_appointment', '{end_at}', 'timestamptz', 5),
                     ('lab_appointment', '{can_reschedule}', 'boolean', 6),
                     ('lab_report', '{id}', 'uuid', 1),
                     ('lab_report', '{job_id}', 'uuid', 2),
                     ('lab_report', '{updated_at}', 'timestamptz', 3),
                     ('lab_report', '{created_at}', 'timestamptz', 4),
                     ('lab_report', '{needs_human_review}', 'boolean', 5),
                     ('lab_report', '{is_reviewed}', 'boolean', 6),
                     ('lab_critical', '{order_id}', 'uuid', 1),
                     ('lab_critical', '{updated_at}', 'timestamptz', 2),
                     ('lab_critical', '{created_at}', 'timestamptz', 3)) AS x(family, p, t, n)
        WHERE x.family = c.family AND junction._cast_error(c.obj, x.p, x.t) IS NOT NULL
        ORDER BY x.n LIMIT 1;
        IF FOUND THEN
            path := 'data.' || array_to_string(col.p, '.');
            err := col.e;
        END IF;
    END IF;

    IF err IS NULL THEN
        RETURN format('%s: %s', c.event_type, message);
    END IF;
    RETURN format('%s: %s: %s', c.event_type, path, err);
END
$fn$;
COMMENT ON FUNCTION junction._typing_error_context(bigint, text) IS
  'the quarantine reason for an inbox row whose typing raised message: "<event type>: <JSON path>: <error>" (the first field that fails alone), else "<event type>: <message>"';
