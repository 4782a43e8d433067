-- junction 0.2.0 -> 0.3.0 (ALTER EXTENSION junction UPDATE TO '0.3.0').
-- After it, the extension's objects equal a fresh 0.3.0 install's (test/fault_upgrade.sh checks
-- this, from 0.1.0 through 0.2.0 and from 0.2.0: every difference it finds is named there). Every
-- schema change to src/install after 0.2.0 goes here, in the order of src/install's fragments.
\echo Use "ALTER EXTENSION junction UPDATE" to load this file. \quit

-- ---------------------------------------------------------------------------------------------
-- 30 model / 35 typing: freestyle_libre_ble is not floating time (Junction lists only
-- abbott_libreview and freestyle_libre). Its stored samples that have an offset become instants:
-- time and time_end lose the offset (they held the wall clock read as UTC), local_time keeps the
-- wall clock, floating becomes false. Rows without an offset cannot be placed and stay floating.
-- ---------------------------------------------------------------------------------------------
COMMENT ON COLUMN junction.samples.time IS
  'sample start (start, else timestamp). Floating-time providers (abbott_libreview, freestyle_libre): the wall clock as sent, read as UTC (any offset suffix ignored)';

UPDATE junction.samples AS s
   SET time = s.time OPERATOR(pg_catalog.-) pg_catalog.make_interval(secs => s.timezone_offset),
       time_end = s.time_end OPERATOR(pg_catalog.-) pg_catalog.make_interval(secs => s.timezone_offset),
       floating = false
 WHERE s.provider OPERATOR(pg_catalog.=) 'freestyle_libre_ble' AND s.floating
   AND s.timezone_offset IS NOT NULL;

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
-- 30 model / 35 typing: daily.data.workout_stream.unavailable (now classified as a stream) marks the stream unavailable (the
-- loader claims only pending ones); a later .created/.updated re-opens it
-- ---------------------------------------------------------------------------------------------
COMMENT ON COLUMN junction.workout_streams.fetch_status IS 'pending until the API loader fetches the stream (running, done, failed); unavailable after daily.data.workout_stream.unavailable (never fetched); a newer notification sets it again (pending, or unavailable)';
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
         notification, received_seq, fetch_status)
    SELECT DISTINCT ON (i.user_id, (i.obj ->> 'workout_id')::uuid)
           i.user_id, (i.obj ->> 'workout_id')::uuid,
           junction._provider(i.obj),
           coalesce(i.obj #>> '{source,type}', 'unknown'),
           i.obj ->> 'provider_id', (i.obj #>> '{sport,id}')::integer,
           i.obj #>> '{sport,name}', i.obj #>> '{sport,slug}', i.obj, i.received_seq,
           -- .unavailable: Junction says the stream does not exist; the loader leaves it alone
           -- until a later .created/.updated re-opens it
           CASE WHEN i.event_type = 'daily.data.workout_stream.unavailable' THEN 'unavailable'
                ELSE 'pending' END
    FROM unnest(items) AS i
    ORDER BY i.user_id, (i.obj ->> 'workout_id')::uuid, i.received_seq DESC
    ON CONFLICT (user_id, workout_id) DO UPDATE
    SET provider = excluded.provider, source_type = excluded.source_type,
        provider_id = excluded.provider_id, sport_id = excluded.sport_id,
        sport_name = excluded.sport_name, sport_slug = excluded.sport_slug,
        notification = excluded.notification, received_seq = excluded.received_seq,
        fetch_status = excluded.fetch_status, fetch_error = NULL, attempts = 0, updated_at = now()
    WHERE excluded.received_seq > t.received_seq;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$fn$;
COMMENT ON FUNCTION junction._upsert_workout_streams(junction.typing_item[]) IS
  'record workout stream notifications (fetch_status pending, or unavailable for .unavailable); the latest received wins per workout';
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
-- 30 model / 35 typing: meals' nutrition per food (issue 15, item 1). A meal's energy and macros,
-- when present, are its totals; else the sums over its foods (data.data). The foods are a view.
-- ---------------------------------------------------------------------------------------------
ALTER TABLE junction.resources
    ADD COLUMN parts_field text CONSTRAINT resources_parts_field_check CHECK (parts_field IS NULL OR kind = 'summary');
COMMENT ON COLUMN junction.resources.parts_field IS 'summaries: a map of parts (name -> part) that carry the same nested fields; a nested column whose top-level object is absent or null is the sum over the parts (meal: data, its foods)';
UPDATE junction.resources SET parts_field = 'data' WHERE name = 'meal';
COMMENT ON TABLE junction.meals IS
  'meals (daily.data.meal.*), one row per id; energy_kcal = energy.value, grams from macros.* (fats_total = macros.fats.total); without a top-level energy or macros, the sums over the foods in data.data';
CREATE VIEW junction.meal_foods AS
SELECT m.user_id, m.id AS meal_id, f.key AS food, m.provider, m.source_type, m."timestamp",
       m.calendar_date,
       (f.value #>> '{energy,value}')::double precision AS energy_kcal,
       (f.value #>> '{macros,carbs}')::double precision AS carbs,
       (f.value #>> '{macros,protein}')::double precision AS protein,
       (f.value #>> '{macros,fats,total}')::double precision AS fats_total,
       (f.value #>> '{macros,alcohol}')::double precision AS alcohol,
       (f.value #>> '{macros,water}')::double precision AS water,
       (f.value #>> '{macros,fibre}')::double precision AS fibre,
       (f.value #>> '{macros,sugar}')::double precision AS sugar,
       (f.value #>> '{macros,cholesterol}')::double precision AS cholesterol,
       f.value -> 'micros' AS micros,
       f.value AS data
FROM junction.meals AS m
CROSS JOIN LATERAL jsonb_each(CASE jsonb_typeof(m.data -> 'data') WHEN 'object' THEN m.data -> 'data' END) AS f;
COMMENT ON VIEW junction.meal_foods IS
  'one row per food of each meal (meals.data -> data): energy_kcal and grams as in junction.meals, micros and the whole food object';
REVOKE ALL ON junction.meal_foods FROM PUBLIC;
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
-- The stored meals that Junction sent without totals get the sums of their foods, as a new one
-- would. Set-based; if a stored food holds a value that is not a number (0.2.0 did not read the
-- foods), meal by meal, leaving that meal as it was with a WARNING that names it.
DO $meals$
DECLARE
    r    record;
    done boolean := false;
BEGIN
    -- first all meals at once (user_id null), then, only if that failed, one meal at a time
    FOR r IN SELECT NULL::uuid AS user_id, NULL::uuid AS id
             UNION ALL SELECT m.user_id, m.id FROM junction.meals AS m
    LOOP
        EXIT WHEN done;
        BEGIN
            WITH f AS (
                SELECT x.user_id, x.meal_id, pg_catalog.sum(x.energy_kcal) AS energy_kcal,
                       pg_catalog.sum(x.carbs) AS carbs, pg_catalog.sum(x.protein) AS protein,
                       pg_catalog.sum(x.fats_total) AS fats_total, pg_catalog.sum(x.alcohol) AS alcohol,
                       pg_catalog.sum(x.water) AS water, pg_catalog.sum(x.fibre) AS fibre,
                       pg_catalog.sum(x.sugar) AS sugar, pg_catalog.sum(x.cholesterol) AS cholesterol
                FROM junction.meal_foods AS x
                WHERE r.user_id IS NULL OR (x.user_id OPERATOR(pg_catalog.=) r.user_id
                                            AND x.meal_id OPERATOR(pg_catalog.=) r.id)
                GROUP BY x.user_id, x.meal_id
            ), g AS (
                SELECT f.*,
                       coalesce(pg_catalog.jsonb_typeof(mm.data OPERATOR(pg_catalog.->) 'energy')
                                OPERATOR(pg_catalog.=) 'object', false) AS has_energy,
                       coalesce(pg_catalog.jsonb_typeof(mm.data OPERATOR(pg_catalog.->) 'macros')
                                OPERATOR(pg_catalog.=) 'object', false) AS has_macros
                FROM f JOIN junction.meals AS mm
                  ON mm.user_id OPERATOR(pg_catalog.=) f.user_id AND mm.id OPERATOR(pg_catalog.=) f.meal_id
            )
            UPDATE junction.meals AS m
               SET energy_kcal = CASE WHEN g.has_energy THEN m.energy_kcal ELSE g.energy_kcal END,
                   carbs = CASE WHEN g.has_macros THEN m.carbs ELSE g.carbs END,
                   protein = CASE WHEN g.has_macros THEN m.protein ELSE g.protein END,
                   fats_total = CASE WHEN g.has_macros THEN m.fats_total ELSE g.fats_total END,
                   alcohol = CASE WHEN g.has_macros THEN m.alcohol ELSE g.alcohol END,
                   water = CASE WHEN g.has_macros THEN m.water ELSE g.water END,
                   fibre = CASE WHEN g.has_macros THEN m.fibre ELSE g.fibre END,
                   sugar = CASE WHEN g.has_macros THEN m.sugar ELSE g.sugar END,
                   cholesterol = CASE WHEN g.has_macros THEN m.cholesterol ELSE g.cholesterol END
              FROM g
             WHERE g.user_id OPERATOR(pg_catalog.=) m.user_id AND g.meal_id OPERATOR(pg_catalog.=) m.id
               AND NOT (g.has_energy AND g.has_macros);
            done := r.user_id IS NULL;
        EXCEPTION WHEN data_exception THEN
            IF r.user_id IS NOT NULL THEN
                RAISE WARNING 'junction: meal % of user % keeps no totals: a food value is not a number (%)',
                    r.id, r.user_id, SQLERRM;
            END IF;
        END;
    END LOOP;
END
$meals$;

-- ---------------------------------------------------------------------------------------------
-- 35 typing: a typing error in a quarantine names the event type and the JSON path (item 6).
-- ---------------------------------------------------------------------------------------------
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
REVOKE ALL ON FUNCTION junction._cast_error(jsonb, text[], regtype) FROM PUBLIC;
REVOKE ALL ON FUNCTION junction._typing_error_context(bigint, text) FROM PUBLIC;

-- ---------------------------------------------------------------------------------------------
-- 35 typing / 37 lab / 38 sense / 65 backfill: lab testing and Sense in typed tables (issue 11). Lab orders,
-- appointments, critical results and report parsing jobs are typed; a completed (or critical) order's results are
-- fetched by the backfill queue (job kind lab_result, junction.backfill_job.order_id). The lab
-- events stored before the upgrade are typed below, one at a time (a malformed one stays in
-- junction.events only, with a WARNING); so are the stored continuous_query.result_table.changed
-- deltas (into junction.sense_results, in the order received, as the drain would have).
-- ---------------------------------------------------------------------------------------------
ALTER TYPE junction.backfill_job ADD ATTRIBUTE order_id uuid;
COMMENT ON TYPE junction.backfill_job IS 'one claimed backfill: a range of one resource, one workout stream, or one lab order''s results';
-- ---------------------------------------------------------------------------------------------
-- Lab testing: orders, appointments, critical results, biomarker results.
--
-- Facts (Junction's OpenAPI spec, tryVital/vital-fern-api fern/openapi/openapi.json):
--   ClientFacingOrder: id, user_id, team_id, status (OrderTopLevelStatus: received,
--     collecting_sample, sample_with_lab, completed, cancelled, failed), events[] ({id, created_at,
--     status: OrderStatus "<top>.<method>.<detail>"}), lab_test {id, slug, name, method, lab{slug}},
--     patient_details {dob, gender, first_name, last_name, phone_number, email, ...},
--     patient_address, details, sample_id, notes, priority, billing_type, interpretation (normal,
--     abnormal, critical), has_missing_results, expected_result_by_date, worst_case_result_by_date,
--     created_at, updated_at.
--   ClientFacingAppointment: id, user_id, order_id, address, location, start_at, end_at,
--     iana_timezone, type, provider, status, provider_id, external_id, can_reschedule,
--     event_status, event_data, events[] ({created_at, status, data}). No updated_at: the newest
--     events[].created_at stands for it.
--   GET /v3/order/{order_id}/result -> LabResultsRaw {metadata, results: [BiomarkerResult] | {},
--     missing_results, sample_information}; BiomarkerResult: name, slug, value, result, type, unit,
--     timestamp, notes, reference_range, min_range_value, max_range_value, is_above_max_range,
--     is_below_min_range, interpretation, loinc, loinc_slug, provider_id, source_markers,
--     performing_laboratory, source_sample_id.
--   labtest.result.critical (ClientFacingCriticalResultIdentified, tryVital/docs docs/swagger.json):
--     data = ClientFacingCriticalResult {order_id, sample_id, status (final, partial),
--     interpretation, team_id, user_id, created_at, updated_at}.
--   GET /v3/orders?user_id=&page=&size= -> GetOrdersResponse {orders, total, page, size}
--     (page >= 1, default 1; size 1..100, default 50).
-- ---------------------------------------------------------------------------------------------
CREATE TABLE junction.lab_orders (
    user_id                   uuid NOT NULL,
    id                        uuid NOT NULL,
    team_id                   uuid,
    status                    text,
    low_level_status          text,
    events                    jsonb,
    lab_test_id               uuid,
    lab_test_slug             text,
    lab_test_name             text,
    lab_test_method           text,
    lab_slug                  text,
    sample_id                 text,
    priority                  boolean,
    billing_type              text,
    interpretation            text,
    has_missing_results       boolean,
    expected_result_by_date   date,
    worst_case_result_by_date date,
    patient_gender            text,
    patient_dob               date,
    created_at                timestamptz,
    updated_at                timestamptz,
    critical                  boolean NOT NULL DEFAULT false,
    result_fetch_status       text CONSTRAINT lab_orders_result_fetch_status_check
                                   CHECK (result_fetch_status IN ('pending', 'running', 'done', 'failed')),
    result_attempts           integer NOT NULL DEFAULT 0,
    result_next_attempt_at    timestamptz,
    result_fetch_error        text,
    result_sqlstate           text,
    results_fetched_at        timestamptz,
    result_metadata           jsonb,
    data                      jsonb NOT NULL,
    received_seq              bigint NOT NULL,
    CONSTRAINT lab_orders_pkey PRIMARY KEY (user_id, id)
);
COMMENT ON TABLE junction.lab_orders IS
  'lab test orders (labtest.order.*, GET /v3/orders): the newest updated_at wins, ties to the later received; data = the winning order object';
COMMENT ON COLUMN junction.lab_orders.status IS 'OrderTopLevelStatus: received, collecting_sample, sample_with_lab, completed, cancelled, failed';
COMMENT ON COLUMN junction.lab_orders.low_level_status IS 'status of the newest entry of events (OrderStatus, "<status>.<method>.<detail>")';
COMMENT ON COLUMN junction.lab_orders.events IS 'the status history: [{id, created_at, status}]';
COMMENT ON COLUMN junction.lab_orders.patient_gender IS 'patient_details.gender (names, phone, email and address stay in data only)';
COMMENT ON COLUMN junction.lab_orders.critical IS 'true once a labtest.result.critical event named this order (whatever the order of arrival)';
COMMENT ON COLUMN junction.lab_orders.result_fetch_status IS 'the automatic fetch of GET /v3/order/{id}/result into junction.lab_results: null (no results yet), pending, running, done, failed; a newer completed version, a new partial result or a critical result queues it again';
COMMENT ON COLUMN junction.lab_orders.result_next_attempt_at IS 'a failed result fetch is retried from this time on (null: now)';
COMMENT ON COLUMN junction.lab_orders.result_metadata IS 'the metadata object of the last fetched result (LabResultsMetadata: status, laboratory, specimen_number, interpretation, ...)';
CREATE INDEX lab_orders_result_pending ON junction.lab_orders (updated_at) WHERE result_fetch_status = 'pending';
CREATE INDEX lab_orders_status ON junction.lab_orders (status, updated_at);

CREATE TABLE junction.lab_appointments (
    user_id        uuid NOT NULL,
    id             uuid NOT NULL,
    order_id       uuid,
    type           text,
    provider       text,
    status         text,
    event_status   text,
    start_at       timestamptz,
    end_at         timestamptz,
    iana_timezone  text,
    provider_id    text,
    external_id    text,
    can_reschedule boolean,
    events         jsonb,
    updated_at     timestamptz,
    data           jsonb NOT NULL,
    received_seq   bigint NOT NULL,
    CONSTRAINT lab_appointments_pkey PRIMARY KEY (user_id, id)
);
COMMENT ON TABLE junction.lab_appointments IS
  'lab appointments (labtest.appointment.*): the newest updated_at wins, ties to the later received';
COMMENT ON COLUMN junction.lab_appointments.updated_at IS 'the object''s updated_at if it has one, else the newest events[].created_at (ClientFacingAppointment has no updated_at)';
COMMENT ON COLUMN junction.lab_appointments.status IS 'AppointmentStatus: confirmed, pending, in_progress, completed, cancelled';
CREATE INDEX lab_appointments_order_id ON junction.lab_appointments (user_id, order_id);

CREATE TABLE junction.lab_results (
    user_id               uuid NOT NULL,
    order_id              uuid NOT NULL,
    slug                  text NOT NULL,
    name                  text,
    value                 double precision,
    result                text,
    type                  text,
    unit                  text,
    "timestamp"           timestamptz,
    notes                 text,
    reference_range       text,
    min_range_value       double precision,
    max_range_value       double precision,
    is_above_max_range    boolean,
    is_below_min_range    boolean,
    interpretation        text,
    loinc                 text,
    loinc_slug            text,
    provider_id           text,
    performing_laboratory text,
    source_sample_id      text,
    critical              boolean GENERATED ALWAYS AS (interpretation = 'critical') STORED,
    fetched_at            timestamptz NOT NULL DEFAULT now(),
    data                  jsonb NOT NULL,
    CONSTRAINT lab_results_pkey PRIMARY KEY (user_id, order_id, slug)
);
COMMENT ON TABLE junction.lab_results IS
  'one row per biomarker result of an order (GET /v3/order/{order_id}/result); a refetch replaces the order''s rows (a corrected result replaces the old one)';
COMMENT ON COLUMN junction.lab_results.slug IS 'the biomarker''s slug, or its name when the slug is empty: the key within an order';
COMMENT ON COLUMN junction.lab_results.result IS 'the result as reported (text); value is its number';
COMMENT ON COLUMN junction.lab_results.critical IS 'interpretation = critical';

CREATE TABLE junction.lab_critical_results (
    user_id         uuid NOT NULL,
    order_id        uuid NOT NULL,
    sample_id       text,
    status          text,
    interpretation  text,
    created_at      timestamptz,
    updated_at      timestamptz,
    received_at     timestamptz NOT NULL,
    acknowledged_at timestamptz,
    acknowledged_by text,
    data            jsonb NOT NULL,
    received_seq    bigint NOT NULL,
    CONSTRAINT lab_critical_results_pkey PRIMARY KEY (user_id, order_id)
);
COMMENT ON TABLE junction.lab_critical_results IS
  'labtest.result.critical events (ClientFacingCriticalResult), one row per order: the newest updated_at wins, ties to the later received; a newer version re-opens an acknowledged alert';
COMMENT ON COLUMN junction.lab_critical_results.status IS 'the results status: final or partial';
COMMENT ON COLUMN junction.lab_critical_results.acknowledged_at IS 'set by junction_lab_acknowledge_critical; null again when a newer version of the critical result arrives';
CREATE INDEX lab_critical_results_open ON junction.lab_critical_results (received_at) WHERE acknowledged_at IS NULL;

-- What a clinician's alerting job selects: critical results not yet acknowledged, one row per
-- critical biomarker once the results are fetched (one row with null biomarker before that).
CREATE VIEW junction.lab_critical_alerts AS
SELECT c.user_id, c.order_id, c.received_at, o.status AS order_status, o.lab_test_name,
       r.slug AS biomarker_slug, r.name AS biomarker_name, r.result, r.value, r.unit,
       r.reference_range, r.interpretation, r."timestamp" AS result_timestamp
FROM junction.lab_critical_results AS c
LEFT JOIN junction.lab_orders AS o ON o.user_id = c.user_id AND o.id = c.order_id
LEFT JOIN junction.lab_results AS r ON r.user_id = c.user_id AND r.order_id = c.order_id AND r.critical
WHERE c.acknowledged_at IS NULL;
COMMENT ON VIEW junction.lab_critical_alerts IS
  'critical lab results not yet acknowledged: one row per critical biomarker (biomarker null until the results are fetched)';

-- Lab report parsing (docs/lab/report-parsing/overview.mdx): lab_report.parsing_job.created /
-- .updated carry the job {id, status (started, processing, pending_review, completed, failed),
-- failure_reason, data: {metadata, results: [{test_name, value, type, units, min_reference_range,
-- max_reference_range, source_panel_name, loinc_matches: [{loinc_code, loinc_name, display_name,
-- aliases, confidence_score}], interpretation, is_above_max_range, is_below_min_range}]},
-- needs_human_review, is_reviewed}. A job has no updated_at: its status only moves forward, so the
-- furthest status wins (then the object's updated_at if it has one, then the later received).
CREATE TABLE junction.lab_report_parsing_jobs (
    user_id            uuid NOT NULL,
    id                 uuid NOT NULL,
    status             text,
    failure_reason     text,
    needs_human_review boolean,
    is_reviewed        boolean,
    metadata           jsonb,
    created_at         timestamptz,
    updated_at         timestamptz,
    data               jsonb NOT NULL,
    received_seq       bigint NOT NULL,
    CONSTRAINT lab_report_parsing_jobs_pkey PRIMARY KEY (user_id, id)
);
COMMENT ON TABLE junction.lab_report_parsing_jobs IS
  'lab report parsing jobs (lab_report.parsing_job.*): the furthest status wins (started < processing < pending_review < completed, failed), then updated_at, then the later received';
COMMENT ON COLUMN junction.lab_report_parsing_jobs.metadata IS 'data.metadata of the parsed report (patient, lab_name, date_reported, date_collected, specimen_number)';

CREATE TABLE junction.lab_report_results (
    user_id             uuid NOT NULL,
    job_id              uuid NOT NULL,
    position            integer NOT NULL,
    test_name           text,
    value               text,
    value_number        double precision,
    type                text,
    units               text,
    min_reference_range double precision,
    max_reference_range double precision,
    source_panel_name   text,
    interpretation      text,
    is_above_max_range  boolean,
    is_below_min_range  boolean,
    loinc               text,
    loinc_name          text,
    loinc_confidence    double precision,
    data                jsonb NOT NULL,
    CONSTRAINT lab_report_results_pkey PRIMARY KEY (user_id, job_id, position)
);
COMMENT ON TABLE junction.lab_report_results IS
  'the biomarkers a parsing job extracted (a sibling of lab_results: the parser''s shape differs), one row per entry of data.results, replaced with each winning version of the job';
COMMENT ON COLUMN junction.lab_report_results.position IS 'the entry''s position in data.results (a report may list a test twice, in two panels)';
COMMENT ON COLUMN junction.lab_report_results.loinc IS 'the best LOINC match (loinc_matches[0].loinc_code)';

-- ---------------------------------------------------------------------------------------------
-- Upserts (the one load path for webhooks and junction_sync_lab).
-- ---------------------------------------------------------------------------------------------
-- The newest status of an events array ([{created_at, status}]): latest created_at, then position.
CREATE FUNCTION junction._lab_latest_event(events jsonb, OUT status text, OUT created_at timestamptz)
RETURNS record
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'
AS $$
    SELECT e.value ->> 'status', (e.value ->> 'created_at')::timestamptz
    FROM jsonb_array_elements(CASE jsonb_typeof(events) WHEN 'array' THEN events END) WITH ORDINALITY AS e
    ORDER BY (e.value ->> 'created_at')::timestamptz DESC NULLS LAST, e.ordinality DESC
    LIMIT 1
$$;
COMMENT ON FUNCTION junction._lab_latest_event(jsonb) IS
  'the status and created_at of the newest entry of an events array (latest created_at, then the last listed)';

-- Whether an order version has results to fetch: completed, or a partial result (Junction sends
-- an update per partial result when the team enables them: low-level status *.partial_results).
CREATE FUNCTION junction._lab_results_due(status text, low_level_status text)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT coalesce(status = 'completed' OR low_level_status LIKE '%.partial_results', false) $$;
COMMENT ON FUNCTION junction._lab_results_due(text, text) IS
  'true for an order version whose results can be fetched: status completed, or a low-level *.partial_results status';

CREATE FUNCTION junction._upsert_lab_orders(items junction.typing_item[])
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'
AS $fn$
DECLARE
    n bigint;
BEGIN
    INSERT INTO junction.lab_orders AS t
        (user_id, id, team_id, status, low_level_status, events, lab_test_id, lab_test_slug,
         lab_test_name, lab_test_method, lab_slug, sample_id, priority, billing_type, interpretation,
         has_missing_results, expected_result_by_date, worst_case_result_by_date, patient_gender,
         patient_dob, created_at, updated_at, critical, result_fetch_status, data, received_seq)
    SELECT w.user_id, w.id, (w.obj ->> 'team_id')::uuid, w.obj ->> 'status',
           (junction._lab_latest_event(w.obj -> 'events')).status, w.obj -> 'events',
           (w.obj #>> '{lab_test,id}')::uuid, w.obj #>> '{lab_test,slug}', w.obj #>> '{lab_test,name}',
           w.obj #>> '{lab_test,method}', w.obj #>> '{lab_test,lab,slug}', w.obj ->> 'sample_id',
           (w.obj ->> 'priority')::boolean, w.obj ->> 'billing_type', w.obj ->> 'interpretation',
           (w.obj ->> 'has_missing_results')::boolean, (w.obj ->> 'expected_result_by_date')::date,
           (w.obj ->> 'worst_case_result_by_date')::date, w.obj #>> '{patient_details,gender}',
           ((w.obj #>> '{patient_details,dob}')::timestamptz AT TIME ZONE 'UTC')::date,
           (w.obj ->> 'created_at')::timestamptz, w.updated_at,
           EXISTS (SELECT FROM junction.lab_critical_results AS c
                   WHERE c.user_id = w.user_id AND c.order_id = w.id),
           CASE WHEN junction._lab_results_due(w.obj ->> 'status', (junction._lab_latest_event(w.obj -> 'events')).status)
                THEN 'pending' END,
           w.obj, w.received_seq
    FROM (SELECT DISTINCT ON (i.user_id, (i.obj ->> 'id')::uuid)
                 i.received_seq, i.user_id, (i.obj ->> 'id')::uuid AS id,
                 (i.obj ->> 'updated_at')::timestamptz AS updated_at, i.obj
          FROM unnest(items) AS i
          ORDER BY i.user_id, (i.obj ->> 'id')::uuid,
                   coalesce((i.obj ->> 'updated_at')::timestamptz, '-infinity') DESC, i.received_seq DESC) AS w
    ORDER BY w.user_id, w.id
    ON CONFLICT (user_id, id) DO UPDATE
    SET team_id = excluded.team_id, status = excluded.status, low_level_status = excluded.low_level_status,
        events = excluded.events, lab_test_id = excluded.lab_test_id, lab_test_slug = excluded.lab_test_slug,
        lab_test_name = excluded.lab_test_name, lab_test_method = excluded.lab_test_method,
        lab_slug = excluded.lab_slug, sample_id = excluded.sample_id, priority = excluded.priority,
        billing_type = excluded.billing_type, interpretation = excluded.interpretation,
        has_missing_results = excluded.has_missing_results,
        expected_result_by_date = excluded.expected_result_by_date,
        worst_case_result_by_date = excluded.worst_case_result_by_date,
        patient_gender = excluded.patient_gender, patient_dob = excluded.patient_dob,
        created_at = excluded.created_at, updated_at = excluded.updated_at,
        critical = t.critical OR excluded.critical, data = excluded.data, received_seq = excluded.received_seq,
        -- a newly completed order, a new partial result, or a newer completed version (a corrected
        -- result) is fetched (again)
        result_fetch_status = CASE
            WHEN junction._lab_results_due(excluded.status, excluded.low_level_status)
                 AND (NOT junction._lab_results_due(t.status, t.low_level_status)
                      OR t.low_level_status IS DISTINCT FROM excluded.low_level_status
                      OR coalesce(jsonb_array_length(CASE jsonb_typeof(excluded.events) WHEN 'array' THEN excluded.events END), 0)
                         > coalesce(jsonb_array_length(CASE jsonb_typeof(t.events) WHEN 'array' THEN t.events END), 0)
                      OR t.result_fetch_status IS NULL OR excluded.updated_at > t.updated_at) THEN 'pending'
            ELSE t.result_fetch_status END,
        result_attempts = CASE
            WHEN junction._lab_results_due(excluded.status, excluded.low_level_status)
                 AND (NOT junction._lab_results_due(t.status, t.low_level_status)
                      OR t.low_level_status IS DISTINCT FROM excluded.low_level_status
                      OR coalesce(jsonb_array_length(CASE jsonb_typeof(excluded.events) WHEN 'array' THEN excluded.events END), 0)
                         > coalesce(jsonb_array_length(CASE jsonb_typeof(t.events) WHEN 'array' THEN t.events END), 0)
                      OR t.result_fetch_status IS NULL OR excluded.updated_at > t.updated_at) THEN 0
            ELSE t.result_attempts END,
        result_next_attempt_at = CASE
            WHEN junction._lab_results_due(excluded.status, excluded.low_level_status)
                 AND (NOT junction._lab_results_due(t.status, t.low_level_status)
                      OR t.low_level_status IS DISTINCT FROM excluded.low_level_status
                      OR coalesce(jsonb_array_length(CASE jsonb_typeof(excluded.events) WHEN 'array' THEN excluded.events END), 0)
                         > coalesce(jsonb_array_length(CASE jsonb_typeof(t.events) WHEN 'array' THEN t.events END), 0)
                      OR t.result_fetch_status IS NULL OR excluded.updated_at > t.updated_at) THEN NULL
            ELSE t.result_next_attempt_at END
    WHERE (coalesce(excluded.updated_at, '-infinity'), excluded.received_seq)
        > (coalesce(t.updated_at, '-infinity'), t.received_seq);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$fn$;
COMMENT ON FUNCTION junction._upsert_lab_orders(junction.typing_item[]) IS
  'upsert lab orders; the newest updated_at wins, then the latest received; a completed order (or a new partial result) queues its result fetch';

CREATE FUNCTION junction._upsert_lab_appointments(items junction.typing_item[])
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'
AS $fn$
DECLARE
    n bigint;
BEGIN
    INSERT INTO junction.lab_appointments AS t
        (user_id, id, order_id, type, provider, status, event_status, start_at, end_at, iana_timezone,
         provider_id, external_id, can_reschedule, events, updated_at, data, received_seq)
    SELECT w.user_id, w.id, (w.obj ->> 'order_id')::uuid, w.obj ->> 'type',
           CASE jsonb_typeof(w.obj -> 'provider') WHEN 'string' THEN w.obj ->> 'provider' END,
           w.obj ->> 'status', w.obj ->> 'event_status', (w.obj ->> 'start_at')::timestamptz,
           (w.obj ->> 'end_at')::timestamptz, w.obj ->> 'iana_timezone', w.obj ->> 'provider_id',
           w.obj ->> 'external_id', (w.obj ->> 'can_reschedule')::boolean, w.obj -> 'events',
           w.updated_at, w.obj, w.received_seq
    FROM (SELECT DISTINCT ON (v.user_id, v.id) v.*
          FROM (SELECT i.received_seq, i.user_id, (i.obj ->> 'id')::uuid AS id, i.obj,
                       coalesce((i.obj ->> 'updated_at')::timestamptz,
                                (junction._lab_latest_event(i.obj -> 'events')).created_at) AS updated_at
                FROM unnest(items) AS i) AS v
          ORDER BY v.user_id, v.id, coalesce(v.updated_at, '-infinity') DESC, v.received_seq DESC) AS w
    ORDER BY w.user_id, w.id
    ON CONFLICT (user_id, id) DO UPDATE
    SET order_id = excluded.order_id, type = excluded.type, provider = excluded.provider,
        status = excluded.status, event_status = excluded.event_status, start_at = excluded.start_at,
        end_at = excluded.end_at, iana_timezone = excluded.iana_timezone,
        provider_id = excluded.provider_id, external_id = excluded.external_id,
        can_reschedule = excluded.can_reschedule, events = excluded.events,
        updated_at = excluded.updated_at, data = excluded.data, received_seq = excluded.received_seq
    WHERE (coalesce(excluded.updated_at, '-infinity'), excluded.received_seq)
        > (coalesce(t.updated_at, '-infinity'), t.received_seq);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$fn$;
COMMENT ON FUNCTION junction._upsert_lab_appointments(junction.typing_item[]) IS
  'upsert lab appointments; the newest updated_at (else newest event) wins, then the latest received';

-- Record critical results: one row per order (the latest received), the order flagged, its
-- results (re)fetched.
CREATE FUNCTION junction._upsert_lab_critical(items junction.typing_item[])
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'
AS $fn$
DECLARE
    n bigint;
BEGIN
    INSERT INTO junction.lab_critical_results AS t
        (user_id, order_id, sample_id, status, interpretation, created_at, updated_at, received_at,
         data, received_seq)
    SELECT w.user_id, w.order_id, w.obj ->> 'sample_id', w.obj ->> 'status', w.obj ->> 'interpretation',
           (w.obj ->> 'created_at')::timestamptz, w.updated_at, w.received_at, w.obj, w.received_seq
    FROM (SELECT DISTINCT ON (i.user_id, (i.obj ->> 'order_id')::uuid)
                 i.user_id, (i.obj ->> 'order_id')::uuid AS order_id,
                 (i.obj ->> 'updated_at')::timestamptz AS updated_at, i.received_at, i.obj, i.received_seq
          FROM unnest(items) AS i
          ORDER BY i.user_id, (i.obj ->> 'order_id')::uuid,
                   coalesce((i.obj ->> 'updated_at')::timestamptz, '-infinity') DESC, i.received_seq DESC) AS w
    ORDER BY w.user_id, w.order_id
    ON CONFLICT (user_id, order_id) DO UPDATE
    SET sample_id = excluded.sample_id, status = excluded.status, interpretation = excluded.interpretation,
        created_at = excluded.created_at, updated_at = excluded.updated_at,
        received_at = excluded.received_at, data = excluded.data, received_seq = excluded.received_seq,
        -- a newer version of a critical result is a new alert
        acknowledged_at = NULL, acknowledged_by = NULL
    WHERE (coalesce(excluded.updated_at, '-infinity'), excluded.received_seq)
        > (coalesce(t.updated_at, '-infinity'), t.received_seq);
    GET DIAGNOSTICS n = ROW_COUNT;

    UPDATE junction.lab_orders AS o
    SET critical = true,
        result_fetch_status = CASE WHEN o.result_fetch_status = 'running' THEN o.result_fetch_status
                                   ELSE 'pending' END,
        result_attempts = CASE WHEN o.result_fetch_status = 'running' THEN o.result_attempts ELSE 0 END,
        result_next_attempt_at = NULL
    FROM (SELECT DISTINCT i.user_id, (i.obj ->> 'order_id')::uuid AS order_id
          FROM unnest(items) AS i) AS c
    WHERE o.user_id = c.user_id AND o.id = c.order_id;
    RETURN n;
END
$fn$;
COMMENT ON FUNCTION junction._upsert_lab_critical(junction.typing_item[]) IS
  'record labtest.result.critical events (junction.lab_critical_results), flag the order critical and queue its result fetch';

-- How far a parsing job's status is along its lifecycle (unknown statuses: 0).
CREATE FUNCTION junction._lab_report_status_rank(status text)
RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT CASE status WHEN 'started' THEN 1 WHEN 'processing' THEN 2 WHEN 'pending_review' THEN 3
                         WHEN 'completed' THEN 4 WHEN 'failed' THEN 4 ELSE 0 END $$;
COMMENT ON FUNCTION junction._lab_report_status_rank(text) IS
  'the order of a parsing job''s statuses: started 1, processing 2, pending_review 3, completed and failed 4, others 0';

CREATE FUNCTION junction._upsert_lab_report_jobs(items junction.typing_item[])
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'
AS $fn$
DECLARE
    users uuid[];
    jobs  uuid[];
    n     bigint;
BEGIN
    -- the jobs: the winning version of each
    WITH won AS (
        INSERT INTO junction.lab_report_parsing_jobs AS t
            (user_id, id, status, failure_reason, needs_human_review, is_reviewed, metadata, created_at,
             updated_at, data, received_seq)
        SELECT w.user_id, w.id, w.obj ->> 'status', w.obj ->> 'failure_reason',
               (w.obj ->> 'needs_human_review')::boolean, (w.obj ->> 'is_reviewed')::boolean,
               w.obj #> '{data,metadata}', (w.obj ->> 'created_at')::timestamptz, w.updated_at, w.obj,
               w.received_seq
        FROM (SELECT DISTINCT ON (v.user_id, v.id) v.*
              FROM (SELECT i.received_seq, i.user_id, coalesce(i.obj ->> 'id', i.obj ->> 'job_id')::uuid AS id,
                           i.obj, junction._lab_report_status_rank(i.obj ->> 'status') AS rank,
                           (i.obj ->> 'updated_at')::timestamptz AS updated_at
                    FROM unnest(items) AS i) AS v
              ORDER BY v.user_id, v.id, v.rank DESC, coalesce(v.updated_at, '-infinity') DESC,
                       v.received_seq DESC) AS w
        ORDER BY w.user_id, w.id
        ON CONFLICT ON CONSTRAINT lab_report_parsing_jobs_pkey DO UPDATE
        SET status = excluded.status, failure_reason = excluded.failure_reason,
            needs_human_review = excluded.needs_human_review, is_reviewed = excluded.is_reviewed,
            metadata = excluded.metadata, created_at = excluded.created_at, updated_at = excluded.updated_at,
            data = excluded.data, received_seq = excluded.received_seq
        WHERE (junction._lab_report_status_rank(excluded.status), coalesce(excluded.updated_at, '-infinity'),
               excluded.received_seq)
            > (junction._lab_report_status_rank(t.status), coalesce(t.updated_at, '-infinity'), t.received_seq)
        RETURNING t.user_id, t.id
    )
    SELECT array_agg(won.user_id), array_agg(won.id) INTO users, jobs FROM won;
    IF jobs IS NULL THEN
        RETURN 0;
    END IF;
    -- their results: replaced by those of the winning version
    DELETE FROM junction.lab_report_results AS r
    WHERE (r.user_id, r.job_id) IN (SELECT u.user_id, u.job_id FROM unnest(users, jobs) AS u(user_id, job_id));
    INSERT INTO junction.lab_report_results
        (user_id, job_id, position, test_name, value, value_number, type, units, min_reference_range,
         max_reference_range, source_panel_name, interpretation, is_above_max_range, is_below_min_range,
         loinc, loinc_name, loinc_confidence, data)
    SELECT j.user_id, j.id, e.ordinality::integer - 1, e.value ->> 'test_name', e.value ->> 'value',
           CASE WHEN e.value ->> 'value' ~ '^\s*[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?\s*$'
                THEN (e.value ->> 'value')::double precision END,
           e.value ->> 'type', e.value ->> 'units',
           (e.value ->> 'min_reference_range')::double precision,
           (e.value ->> 'max_reference_range')::double precision, e.value ->> 'source_panel_name',
           e.value ->> 'interpretation', (e.value ->> 'is_above_max_range')::boolean,
           (e.value ->> 'is_below_min_range')::boolean, e.value #>> '{loinc_matches,0,loinc_code}',
           e.value #>> '{loinc_matches,0,loinc_name}',
           (e.value #>> '{loinc_matches,0,confidence_score}')::double precision, e.value
    FROM junction.lab_report_parsing_jobs AS j
    CROSS JOIN LATERAL jsonb_array_elements(CASE jsonb_typeof(j.data #> '{data,results}')
                                              WHEN 'array' THEN j.data #> '{data,results}' END) WITH ORDINALITY AS e
    WHERE (j.user_id, j.id) IN (SELECT u.user_id, u.job_id FROM unnest(users, jobs) AS u(user_id, job_id))
      AND jsonb_typeof(e.value) = 'object'
    ORDER BY j.user_id, j.id, e.ordinality;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$fn$;
COMMENT ON FUNCTION junction._upsert_lab_report_jobs(junction.typing_item[]) IS
  'upsert lab report parsing jobs and replace their extracted results (junction.lab_report_results); the furthest status wins, then updated_at, then the latest received';

-- Replace an order's biomarker results with those of one LabResultsRaw answer; returns rows loaded.
CREATE FUNCTION junction._load_lab_results(user_id uuid, order_id uuid, answer jsonb)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'
AS $fn$
DECLARE
    n bigint;
BEGIN
    IF jsonb_typeof(answer) IS DISTINCT FROM 'object'
       OR jsonb_typeof(answer -> 'results') NOT IN ('array', 'object') THEN
        RAISE EXCEPTION 'lab result of order %: expected an object with results (array or object), got %',
            order_id, left(coalesce(answer::text, 'null'), 200) USING ERRCODE = '22023';
    END IF;
    -- one statement: the answer's rows, the order's other rows deleted, these upserted
    WITH x AS (
        SELECT DISTINCT ON (k.slug)
               _load_lab_results.user_id AS user_id, _load_lab_results.order_id AS order_id, k.slug,
               r.value ->> 'name' AS name,
               CASE jsonb_typeof(r.value -> 'value') WHEN 'number'
                    THEN (r.value ->> 'value')::double precision END AS value,
               r.value ->> 'result' AS result, r.value ->> 'type' AS type, r.value ->> 'unit' AS unit,
               (r.value ->> 'timestamp')::timestamptz AS "timestamp", r.value ->> 'notes' AS notes,
               r.value ->> 'reference_range' AS reference_range,
               (r.value ->> 'min_range_value')::double precision AS min_range_value,
               (r.value ->> 'max_range_value')::double precision AS max_range_value,
               (r.value ->> 'is_above_max_range')::boolean AS is_above_max_range,
               (r.value ->> 'is_below_min_range')::boolean AS is_below_min_range,
               r.value ->> 'interpretation' AS interpretation, r.value ->> 'loinc' AS loinc,
               r.value ->> 'loinc_slug' AS loinc_slug, r.value ->> 'provider_id' AS provider_id,
               r.value ->> 'performing_laboratory' AS performing_laboratory,
               r.value ->> 'source_sample_id' AS source_sample_id, r.value AS data
        FROM (SELECT e.value, e.ordinality, NULL::text AS key
              FROM jsonb_array_elements(CASE jsonb_typeof(answer -> 'results')
                                          WHEN 'array' THEN answer -> 'results' END) WITH ORDINALITY AS e
              UNION ALL
              SELECT e.value, 0, e.key
              FROM jsonb_each(CASE jsonb_typeof(answer -> 'results')
                                WHEN 'object' THEN answer -> 'results' END) AS e) AS r
        CROSS JOIN LATERAL (
            SELECT coalesce(nullif(r.value ->> 'slug', ''), r.value ->> 'name', r.key) AS slug
        ) AS k
        WHERE jsonb_typeof(r.value) = 'object' AND k.slug IS NOT NULL
        ORDER BY k.slug, r.ordinality DESC
    ), gone AS (
        DELETE FROM junction.lab_results AS l
        WHERE l.user_id = _load_lab_results.user_id AND l.order_id = _load_lab_results.order_id
          AND NOT EXISTS (SELECT FROM x WHERE x.slug = l.slug)
    )
    INSERT INTO junction.lab_results AS t
        (user_id, order_id, slug, name, value, result, type, unit, "timestamp", notes, reference_range,
         min_range_value, max_range_value, is_above_max_range, is_below_min_range, interpretation,
         loinc, loinc_slug, provider_id, performing_laboratory, source_sample_id, fetched_at, data)
    SELECT x.user_id, x.order_id, x.slug, x.name, x.value, x.result, x.type, x.unit, x."timestamp",
           x.notes, x.reference_range, x.min_range_value, x.max_range_value, x.is_above_max_range,
           x.is_below_min_range, x.interpretation, x.loinc, x.loinc_slug, x.provider_id,
           x.performing_laboratory, x.source_sample_id, now(), x.data
    FROM x
    ORDER BY x.slug
    ON CONFLICT ON CONSTRAINT lab_results_pkey DO UPDATE
    SET name = excluded.name, value = excluded.value, result = excluded.result, type = excluded.type,
        unit = excluded.unit, "timestamp" = excluded."timestamp", notes = excluded.notes,
        reference_range = excluded.reference_range, min_range_value = excluded.min_range_value,
        max_range_value = excluded.max_range_value, is_above_max_range = excluded.is_above_max_range,
        is_below_min_range = excluded.is_below_min_range, interpretation = excluded.interpretation,
        loinc = excluded.loinc, loinc_slug = excluded.loinc_slug, provider_id = excluded.provider_id,
        performing_laboratory = excluded.performing_laboratory,
        source_sample_id = excluded.source_sample_id, fetched_at = excluded.fetched_at, data = excluded.data;
    GET DIAGNOSTICS n = ROW_COUNT;
    UPDATE junction.lab_orders AS o
    SET result_metadata = answer -> 'metadata', results_fetched_at = now()
    WHERE o.user_id = _load_lab_results.user_id AND o.id = _load_lab_results.order_id;
    RETURN n;
END
$fn$;
COMMENT ON FUNCTION junction._load_lab_results(uuid, uuid, jsonb) IS
  'replace an order''s rows of junction.lab_results with the biomarkers of one GET /v3/order/{id}/result answer; returns rows loaded';

-- ---------------------------------------------------------------------------------------------
-- The live API (superuser-only, like every junction_ function).
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION junction_lab_orders(user_id uuid DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    page     integer := 1;
    size     constant integer := 100;
    answer   jsonb;
    orders   jsonb := '[]'::jsonb;
    got      integer;
BEGIN
    LOOP
        answer := @extschema@.junction_api('GET', '/v3/orders',
            jsonb_strip_nulls(jsonb_build_object('user_id', junction_lab_orders.user_id,
                                                 'page', page, 'size', size)));
        IF jsonb_typeof(answer -> 'orders') IS DISTINCT FROM 'array' THEN
            RAISE EXCEPTION 'GET /v3/orders: expected {orders: [...]}, got %', left(answer::text, 200)
                USING ERRCODE = '22023';
        END IF;
        got := jsonb_array_length(answer -> 'orders');
        orders := orders || (answer -> 'orders');
        EXIT WHEN got < size OR (jsonb_typeof(answer -> 'total') = 'number'
                                 AND jsonb_array_length(orders) >= (answer ->> 'total')::integer);
        page := page + 1;
        IF page > 10000 THEN
            RAISE EXCEPTION 'GET /v3/orders: more than 10000 pages' USING ERRCODE = '54000';
        END IF;
    END LOOP;
    RETURN orders;
END
$fn$;
COMMENT ON FUNCTION junction_lab_orders(uuid) IS
  'every lab order (GET /v3/orders, all pages), of one user or of the team: a jsonb array of ClientFacingOrder';

CREATE FUNCTION junction_lab_order(order_id uuid)
RETURNS jsonb
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT @extschema@.junction_api('GET', format('/v3/order/%s', junction._require(order_id, 'order_id'))) $$;
COMMENT ON FUNCTION junction_lab_order(uuid) IS 'one lab order (GET /v3/order/{order_id}): a ClientFacingOrder';

CREATE FUNCTION junction_lab_results(order_id uuid)
RETURNS jsonb
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT @extschema@.junction_api('GET', format('/v3/order/%s/result', junction._require(order_id, 'order_id'))) $$;
COMMENT ON FUNCTION junction_lab_results(uuid) IS
  'an order''s results (GET /v3/order/{order_id}/result): {metadata, results: [BiomarkerResult], missing_results, sample_information}';

-- Load orders (and the results of completed ones) through the upserts the events use.
CREATE FUNCTION junction_sync_lab(user_id uuid DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'
AS $fn$
DECLARE
    items junction.typing_item[];
    o     record;
    n     bigint := 0;
    msg   text;
    state text;
BEGIN
    SELECT array_agg(ROW(junction._next_received_seq(), (e.value ->> 'user_id')::uuid, 'order', NULL,
                         now(), e.value)::junction.typing_item ORDER BY e.ordinality)
      INTO items
    FROM jsonb_array_elements(@extschema@.junction_lab_orders(junction_sync_lab.user_id)) WITH ORDINALITY AS e
    WHERE jsonb_typeof(e.value) = 'object';
    IF items IS NULL THEN
        RETURN 0;
    END IF;
    n := junction._upsert_lab_orders(items);
    -- the results of the orders this queued, now, as the queue would; one that cannot be fetched
    -- now stays pending (the backfill worker retries it) with the error to see
    FOR o IN SELECT l.user_id, l.id FROM junction.lab_orders AS l
             WHERE l.result_fetch_status = 'pending'
               AND (l.user_id, l.id) IN (SELECT i.user_id, (i.obj ->> 'id')::uuid FROM unnest(items) AS i)
             ORDER BY 1, 2
    LOOP
        BEGIN
            n := n + junction._load_lab_results(o.user_id, o.id, @extschema@.junction_lab_results(o.id));
            UPDATE junction.lab_orders AS l
            SET result_fetch_status = 'done', result_fetch_error = NULL, result_sqlstate = NULL,
                result_next_attempt_at = NULL
            WHERE l.user_id = o.user_id AND l.id = o.id;
        EXCEPTION WHEN query_canceled THEN
            RAISE;
        WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, state = RETURNED_SQLSTATE;
            UPDATE junction.lab_orders AS l
            SET result_fetch_error = left(msg, 2000), result_sqlstate = state
            WHERE l.user_id = o.user_id AND l.id = o.id;
        END;
    END LOOP;
    RETURN n;
END
$fn$;
COMMENT ON FUNCTION junction_sync_lab(uuid) IS
  'load lab orders (of one user, or all) and the results of completed ones through the webhook upserts; returns rows changed';

-- Acknowledge a critical result: it leaves junction.lab_critical_alerts.
CREATE FUNCTION junction_lab_acknowledge_critical(order_id uuid, acknowledged_by text DEFAULT current_user)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    UPDATE junction.lab_critical_results AS c
    SET acknowledged_at = now(), acknowledged_by = junction_lab_acknowledge_critical.acknowledged_by
    WHERE c.order_id = junction_lab_acknowledge_critical.order_id AND c.acknowledged_at IS NULL;
    RETURN FOUND;
END
$fn$;
COMMENT ON FUNCTION junction_lab_acknowledge_critical(uuid, text) IS
  'mark an order''s critical result acknowledged (it leaves junction.lab_critical_alerts); false if there was none open';

-- The backfill worker's lab job: fetch one order's results into junction.lab_results.
CREATE FUNCTION junction._lab_result_run(user_id uuid, order_id uuid)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    n bigint;
BEGIN
    n := junction._load_lab_results(user_id, order_id, @extschema@.junction_lab_results(order_id));
    UPDATE junction.lab_orders AS o
    SET result_fetch_status = 'done', result_fetch_error = NULL, result_sqlstate = NULL,
        result_next_attempt_at = NULL
    WHERE o.user_id = _lab_result_run.user_id AND o.id = _lab_result_run.order_id
      AND o.result_fetch_status = 'running';
    RETURN n;
END
$fn$;
COMMENT ON FUNCTION junction._lab_result_run(uuid, uuid) IS
  'run a claimed lab result job: fetch and load the order''s results, mark it done (unless re-queued meanwhile)';

-- A failed lab result fetch: the same policy as any backfill (30 s, 2 min, then failed).
CREATE FUNCTION junction._lab_result_failed(user_id uuid, order_id uuid, error text, sqlstate text)
RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    max_attempts constant integer := 3;
    status       text;
BEGIN
    UPDATE junction.lab_orders AS o
    SET result_fetch_status = CASE WHEN o.result_attempts < max_attempts THEN 'pending' ELSE 'failed' END,
        result_next_attempt_at = CASE WHEN o.result_attempts < max_attempts
                                      THEN clock_timestamp() + interval '30 seconds' * power(4, o.result_attempts - 1) END,
        result_fetch_error = left(coalesce(error, 'unknown error'), 2000),
        result_sqlstate = _lab_result_failed.sqlstate
    WHERE o.user_id = _lab_result_failed.user_id AND o.id = _lab_result_failed.order_id
      AND o.result_fetch_status = 'running'
    RETURNING o.result_fetch_status INTO status;
    RETURN status;
END
$$;
COMMENT ON FUNCTION junction._lab_result_failed(uuid, uuid, text, text) IS
  'record a failed lab result fetch: pending again after a backoff while attempts < 3, else failed with the error and SQLSTATE';

-- ---------------------------------------------------------------------------------------------
-- Junction Sense: continuous query result tables.
--
-- Facts (tryVital/docs docs/swagger.json): continuous_query.result_table.changed
-- (ClientFacingContinuousQueryResultTableChanged) has data = an array of
-- ContinuousQueryResultTableChanges {query_id uuid, query_slug, data: {column: [values]}}, the
-- new or changed rows only, column-oriented; the group key columns are named group_key.0,
-- group_key.1, ... (GroupKeyColumnExpr), e.g. {"group_key.0": ["2025-02-17T00:00:00"],
-- "mean.sleep_score": [76.75], ...}. The whole table:
-- GET /aggregate/v1/user/{user_id}/continuous_query/{query_id_or_slug}/result_table.
-- A delta carries no version: the later received wins for a (user, query, group key).
-- ---------------------------------------------------------------------------------------------
CREATE TABLE junction.sense_queries (
    query_slug   text CONSTRAINT sense_queries_pkey PRIMARY KEY
                      CONSTRAINT sense_queries_query_slug_check CHECK (length(query_slug) BETWEEN 1 AND 255),
    column_types jsonb NOT NULL DEFAULT '{}'
                      CONSTRAINT sense_queries_column_types_check CHECK (jsonb_typeof(column_types) = 'object'),
    group_key    text[],
    view_name    text
);
COMMENT ON TABLE junction.sense_queries IS
  'continuous queries whose columns we know (junction_sense_define): the column types, checked on arrival and used by the query''s typed view';
COMMENT ON COLUMN junction.sense_queries.column_types IS '{column: SQL type name}, e.g. {"group_key.0": "timestamp", "mean.sleep_score": "double precision"}';
COMMENT ON COLUMN junction.sense_queries.group_key IS 'the group key columns, for a result table without group_key.N columns';
COMMENT ON COLUMN junction.sense_queries.view_name IS 'the typed view junction_sense_define created (schema junction)';

CREATE TABLE junction.sense_results (
    user_id      uuid NOT NULL,
    query_slug   text NOT NULL,
    group_key    jsonb NOT NULL,
    query_id     uuid,
    data         jsonb NOT NULL,
    updated_at   timestamptz NOT NULL,
    received_seq bigint NOT NULL,
    CONSTRAINT sense_results_pkey PRIMARY KEY (user_id, query_slug, group_key)
);
COMMENT ON TABLE junction.sense_results IS
  'continuous query result rows (continuous_query.result_table.changed, junction_sync_sense), one per user, query and group key; the later received wins';
COMMENT ON COLUMN junction.sense_results.group_key IS 'the values of the group key columns (group_key.0, group_key.1, ...), as a JSON array';
COMMENT ON COLUMN junction.sense_results.data IS 'the row: {column: value}, group key columns included';

-- The rows of one column-oriented result table ({column: [values]}) of a query: the group key
-- (the group_key.N columns in N order, else the registered group key) and the row as an object.
CREATE FUNCTION junction._sense_rows(query_slug text, tbl jsonb, OUT ord integer, OUT group_key jsonb, OUT data jsonb)
RETURNS SETOF record
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    keys    text[];
    lengths integer[];
BEGIN
    IF jsonb_typeof(tbl) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'continuous query %: the result table must be an object of columns, not %',
            quote_literal(query_slug), coalesce(jsonb_typeof(tbl), 'null') USING ERRCODE = '22023';
    END IF;
    IF tbl = '{}'::jsonb THEN
        RETURN;     -- no columns, no rows
    END IF;
    SELECT array_agg(DISTINCT CASE jsonb_typeof(c.value) WHEN 'array' THEN jsonb_array_length(c.value) ELSE -1 END)
      INTO lengths
    FROM jsonb_each(tbl) AS c;
    IF -1 = ANY (lengths) OR cardinality(lengths) > 1 THEN
        RAISE EXCEPTION 'continuous query %: every column must be an array of the same length', quote_literal(query_slug)
            USING ERRCODE = '22023';
    END IF;
    SELECT array_agg(k ORDER BY substring(k FROM '^group_key\.([0-9]+)$')::integer) INTO keys
    FROM jsonb_object_keys(tbl) AS k
    WHERE k ~ '^group_key\.[0-9]+$';
    IF keys IS NULL THEN
        SELECT q.group_key INTO keys FROM junction.sense_queries AS q WHERE q.query_slug = _sense_rows.query_slug;
    END IF;
    IF keys IS NULL OR cardinality(keys) = 0 THEN
        RAISE EXCEPTION 'continuous query %: no group_key.N column, and no group key registered', quote_literal(query_slug)
            USING ERRCODE = '22023', HINT = 'SELECT junction_sense_define(query_slug, group_key => ARRAY[...])';
    END IF;
    IF EXISTS (SELECT FROM unnest(keys) AS k WHERE NOT tbl ? k) THEN
        RAISE EXCEPTION 'continuous query %: group key column missing (group key %)', quote_literal(query_slug), keys
            USING ERRCODE = '22023';
    END IF;
    RETURN QUERY
    SELECT i, (SELECT jsonb_agg(tbl -> k -> i ORDER BY o) FROM unnest(keys) WITH ORDINALITY AS u(k, o)),
           (SELECT jsonb_object_agg(c.key, c.value -> i) FROM jsonb_each(tbl) AS c)
    FROM generate_series(0, coalesce(lengths[1], 0) - 1) AS i;
END
$fn$;
COMMENT ON FUNCTION junction._sense_rows(text, jsonb) IS
  'the rows of a column-oriented result table: position, group key (group_key.N columns, else the registered ones) and the row object; raises on a malformed table';

-- Check the rows of registered queries against their column types; raises at the first bad cell.
CREATE FUNCTION junction._sense_check_types(query_slug text, rows jsonb)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'
AS $fn$
DECLARE
    bad record;
BEGIN
    SELECT r.ord, ct.key AS col, junction._cast_error(r.obj, ARRAY[ct.key], ct.value::regtype) AS err INTO bad
    FROM junction.sense_queries AS q
    CROSS JOIN LATERAL jsonb_each_text(q.column_types) AS ct
    CROSS JOIN LATERAL jsonb_array_elements(rows) WITH ORDINALITY AS r(obj, ord)
    WHERE q.query_slug = _sense_check_types.query_slug
      AND junction._cast_error(r.obj, ARRAY[ct.key], ct.value::regtype) IS NOT NULL
    ORDER BY r.ord, ct.key
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'continuous query %: %[%]: %', quote_literal(query_slug), bad.col, bad.ord - 1, bad.err
            USING ERRCODE = '22P02';
    END IF;
END
$fn$;
COMMENT ON FUNCTION junction._sense_check_types(text, jsonb) IS
  'raise if a row (of a JSON array of row objects) has a value that does not cast to its registered column type';

-- Upsert result rows: items are continuous_query.result_table.changed data arrays (one per event).
CREATE FUNCTION junction._upsert_sense(items junction.typing_item[])
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'
AS $fn$
DECLARE
    n bigint;
    c record;
BEGIN
    -- every change set: a query slug, a uuid query id, a table (validated before anything is written)
    FOR c IN
        SELECT ch.value AS change, ch.ordinality - 1 AS pos
        FROM unnest(items) AS i
        CROSS JOIN LATERAL jsonb_array_elements(i.obj) WITH ORDINALITY AS ch
    LOOP
        IF jsonb_typeof(c.change) IS DISTINCT FROM 'object'
           OR jsonb_typeof(c.change -> 'query_slug') IS DISTINCT FROM 'string' THEN
            RAISE EXCEPTION 'data[%]: expected {query_id, query_slug, data}, got %', c.pos, left(c.change::text, 100)
                USING ERRCODE = '22023';
        END IF;
        IF (c.change ->> 'query_id') !~* '^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$' THEN
            RAISE EXCEPTION 'data[%].query_id: % is not a uuid', c.pos, left((c.change -> 'query_id')::text, 100)
                USING ERRCODE = '22P02';
        END IF;
        PERFORM junction._sense_check_types(c.change ->> 'query_slug',
                    (SELECT jsonb_agg(r.data) FROM junction._sense_rows(c.change ->> 'query_slug', c.change -> 'data') AS r));
    END LOOP;

    INSERT INTO junction.sense_results AS t (user_id, query_slug, group_key, query_id, data, updated_at, received_seq)
    SELECT DISTINCT ON (i.user_id, ch.value ->> 'query_slug', r.group_key)
           i.user_id, ch.value ->> 'query_slug', r.group_key, (ch.value ->> 'query_id')::uuid, r.data,
           i.received_at, i.received_seq
    FROM unnest(items) AS i
    CROSS JOIN LATERAL jsonb_array_elements(i.obj) WITH ORDINALITY AS ch
    CROSS JOIN LATERAL junction._sense_rows(ch.value ->> 'query_slug', ch.value -> 'data') AS r
    ORDER BY i.user_id, ch.value ->> 'query_slug', r.group_key, i.received_seq DESC, ch.ordinality DESC, r.ord DESC
    ON CONFLICT ON CONSTRAINT sense_results_pkey DO UPDATE
    SET query_id = excluded.query_id, data = excluded.data, updated_at = excluded.updated_at,
        received_seq = excluded.received_seq
    WHERE excluded.received_seq > t.received_seq;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$fn$;
COMMENT ON FUNCTION junction._upsert_sense(junction.typing_item[]) IS
  'upsert continuous query result rows (the delta rows of continuous_query.result_table.changed); the later received wins per user, query and group key';

-- The live API: a query's whole result table.
CREATE FUNCTION junction_sense_result_table(user_id uuid, query text)
RETURNS jsonb
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT @extschema@.junction_api('GET', format('/aggregate/v1/user/%s/continuous_query/%s/result_table',
                                                   junction._require(user_id, 'user_id'),
                                                   junction._url_segment(junction._require(query, 'query')))) $$;
COMMENT ON FUNCTION junction_sense_result_table(uuid, text) IS
  'a continuous query''s whole result table for a user (GET /aggregate/v1/user/{user_id}/continuous_query/{query_id_or_slug}/result_table)';

-- Refetch a query's whole result table into junction.sense_results (the user's rows of that query
-- that the table no longer has are removed).
CREATE FUNCTION junction_sync_sense(user_id uuid, query_slug text)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'
AS $fn$
DECLARE
    answer jsonb;
    tbl    jsonb;
    n      bigint;
BEGIN
    answer := @extschema@.junction_sense_result_table(user_id, query_slug);
    -- the columns, at the top level or under table (the Query API's AggregationResult shape)
    tbl := CASE WHEN jsonb_typeof(answer -> 'table') = 'object' THEN answer -> 'table' ELSE answer END;
    PERFORM junction._sense_check_types(query_slug, (SELECT jsonb_agg(r.data) FROM junction._sense_rows(query_slug, tbl) AS r));
    DELETE FROM junction.sense_results AS s
    WHERE s.user_id = junction_sync_sense.user_id AND s.query_slug = junction_sync_sense.query_slug
      AND s.group_key NOT IN (SELECT r.group_key FROM junction._sense_rows(junction_sync_sense.query_slug, tbl) AS r);
    n := junction._upsert_sense(ARRAY[ROW(junction._next_received_seq(), user_id, 'result_table', NULL, now(),
        jsonb_build_array(jsonb_build_object(
            'query_slug', query_slug, 'data', tbl,
            'query_id', (SELECT s.query_id FROM junction.sense_results AS s
                         WHERE s.user_id = junction_sync_sense.user_id
                           AND s.query_slug = junction_sync_sense.query_slug AND s.query_id IS NOT NULL
                         LIMIT 1))))::junction.typing_item]);
    RETURN n;
END
$fn$;
COMMENT ON FUNCTION junction_sync_sense(uuid, text) IS
  'refetch a continuous query''s whole result table (by slug) for a user into junction.sense_results, through the webhook upsert; returns rows loaded';

-- Register a query's columns: their types are checked on arrival, and a typed view
-- junction.sense_<slug> reads them.
CREATE FUNCTION junction_sense_define(query_slug text, column_types jsonb DEFAULT '{}', group_key text[] DEFAULT NULL)
RETURNS regclass
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
-- The EXECUTEd DDL names the view and its columns with format's %I and casts to regtype names
-- (format_type of a to_regtype result): no caller's text reaches it unquoted.
-- @plpgsql_check_options: security_warnings = off
DECLARE
    view_name text := 'sense_' || left(regexp_replace(lower(junction._require(query_slug, 'query_slug')), '[^a-z0-9]+', '_', 'g'), 57);
    old_view  text;
    cols      text;
    bad       text;
BEGIN
    IF jsonb_typeof(column_types) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'column_types must be an object {column: type}' USING ERRCODE = '22023';
    END IF;
    SELECT format('%s %s', quote_literal(c.key), coalesce(quote_literal(c.value #>> '{}'), 'NULL')) INTO bad
    FROM jsonb_each(column_types) AS c
    WHERE jsonb_typeof(c.value) <> 'string' OR to_regtype(c.value #>> '{}') IS NULL
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'column_types: % is not a type', bad USING ERRCODE = '22023';
    END IF;
    SELECT q.view_name INTO old_view FROM junction.sense_queries AS q WHERE q.query_slug = junction_sense_define.query_slug;
    IF old_view IS NOT NULL THEN
        EXECUTE format('DROP VIEW IF EXISTS junction.%I', old_view);
    END IF;
    INSERT INTO junction.sense_queries AS q (query_slug, column_types, group_key, view_name)
    VALUES (query_slug, column_types, group_key, view_name)
    ON CONFLICT ON CONSTRAINT sense_queries_pkey DO UPDATE
    SET column_types = excluded.column_types, group_key = excluded.group_key, view_name = excluded.view_name;
    SELECT string_agg(format('(s.data ->> %L)::%s AS %I', c.key, format_type(to_regtype(c.value #>> '{}'), NULL), c.key),
                      ', ' ORDER BY c.key)
      INTO cols
    FROM jsonb_each(column_types) AS c;
    EXECUTE format('CREATE VIEW junction.%I AS SELECT s.user_id, s.group_key, %s s.data, s.updated_at '
                   'FROM junction.sense_results AS s WHERE s.query_slug = %L',
                   view_name, coalesce(cols || ',', ''), query_slug);
    EXECUTE format('REVOKE ALL ON junction.%I FROM PUBLIC', view_name);
    EXECUTE format('COMMENT ON VIEW junction.%I IS %L', view_name,
                   format('continuous query %s: junction.sense_results with typed columns (junction_sense_define)', query_slug));
    RETURN format('junction.%I', view_name)::regclass;
END
$fn$;
COMMENT ON FUNCTION junction_sense_define(text, jsonb, text[]) IS
  'register a continuous query''s column types (and group key, for tables without group_key.N columns); (re)creates the typed view junction.sense_<slug>';

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
    lab_orders junction.typing_item[];
    lab_appts  junction.typing_item[];
    lab_crit   junction.typing_item[];
    sense      junction.typing_item[];
    lab_jobs   junction.typing_item[];
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
          FROM classified AS cl
          JOIN inserted AS ins ON ins.svix_id = cl.svix_id) AS c;

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

CREATE OR REPLACE FUNCTION junction._backfill_claim()
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

CREATE OR REPLACE FUNCTION junction._backfill_reset_running()
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

CREATE OR REPLACE FUNCTION junction._backfill_run(job junction.backfill_job)
RETURNS bigint
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT CASE WHEN job.kind = 'lab_result'
                   THEN junction._lab_result_run(job.user_id, junction._require(job.order_id, 'order_id'))
                   ELSE junction._backfill_run(job.kind, job.user_id, job.provider, job.resource,
                                               job.start_date, job.end_date, job.workout_id) END $$;
COMMENT ON FUNCTION junction._backfill_run(junction.backfill_job) IS
  'junction._backfill_run for a claimed job row (a lab_result job: junction._lab_result_run)';

CREATE OR REPLACE FUNCTION junction._backfill_failed(job junction.backfill_job, error text, sqlstate text)
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

REVOKE ALL ON junction.lab_orders, junction.lab_appointments, junction.lab_results,
               junction.lab_critical_results, junction.lab_critical_alerts,
               junction.sense_queries, junction.sense_results,
               junction.lab_report_parsing_jobs, junction.lab_report_results FROM PUBLIC;
-- every function of the extension but the three pure ones is for superusers (99_privileges)
DO $revoke$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN
        SELECT p.oid::regprocedure
        FROM pg_catalog.pg_depend AS d
        JOIN pg_catalog.pg_proc AS p ON p.oid = d.objid
        WHERE d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND d.deptype = 'e'
          AND d.refobjid = (SELECT e.oid FROM pg_catalog.pg_extension AS e WHERE e.extname = 'junction')
          AND p.proname NOT IN ('junction_verify_webhook', 'junction_webhook_is_valid', 'junction_sign_webhook')
    LOOP
        EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
    END LOOP;
END
$revoke$;
-- the lab events stored before the upgrade, typed as they would be now (oldest first)
DO $lab$
DECLARE
    e record;
BEGIN
    FOR e IN
        SELECT ev.svix_id, ev.event_type, ev.user_id, ev.received_at, ev.payload -> 'data' AS obj,
               coalesce(ev.inbox_id, 0) AS seq
        FROM junction.events AS ev
        WHERE ev.event_type OPERATOR(pg_catalog.=) ANY (ARRAY['labtest.order.created', 'labtest.order.updated',
                                 'labtest.appointment.created', 'labtest.appointment.updated',
                                 'labtest.result.critical', 'lab_report.parsing_job.created',
                                 'lab_report.parsing_job.updated', 'continuous_query.result_table.changed']::pg_catalog.text[])
          AND ev.user_id IS NOT NULL
          AND pg_catalog.jsonb_typeof(ev.payload -> 'data') OPERATOR(pg_catalog.=) ANY (ARRAY['object', 'array']::pg_catalog.text[])
        ORDER BY ev.inbox_id, ev.svix_id
    LOOP
        BEGIN
            IF e.event_type OPERATOR(pg_catalog.=) 'continuous_query.result_table.changed' THEN
                PERFORM junction._upsert_sense(ARRAY[ROW(e.seq, e.user_id, 'result_table', e.event_type,
                                                         e.received_at, e.obj)::junction.typing_item]);
            ELSIF e.event_type OPERATOR(pg_catalog.~~) 'lab_report.parsing_job.%' THEN
                PERFORM junction._upsert_lab_report_jobs(ARRAY[ROW(e.seq, e.user_id, 'parsing_job', e.event_type,
                                                                   e.received_at, e.obj)::junction.typing_item]);
            ELSIF e.event_type OPERATOR(pg_catalog.=) 'labtest.result.critical' THEN
                PERFORM junction._upsert_lab_critical(ARRAY[ROW(e.seq, e.user_id, 'result', e.event_type,
                                                                e.received_at, e.obj)::junction.typing_item]);
            ELSIF e.event_type OPERATOR(pg_catalog.~~) 'labtest.order.%' THEN
                PERFORM junction._upsert_lab_orders(ARRAY[ROW(e.seq, e.user_id, 'order', e.event_type,
                                                              e.received_at, e.obj)::junction.typing_item]);
            ELSE
                PERFORM junction._upsert_lab_appointments(ARRAY[ROW(e.seq, e.user_id, 'appointment', e.event_type,
                                                                    e.received_at, e.obj)::junction.typing_item]);
            END IF;
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'junction 0.3.0: stored event % (%) not typed: %', e.svix_id, e.event_type, SQLERRM;
        END;
    END LOOP;
END
$lab$;

-- ---------------------------------------------------------------------------------------------
-- 35 typing / 38 daily (issue 12): consolidation into junction.daily. The upserts recompute the
-- days they touch; the update builds the days of the data already stored (junction_rebuild_daily).
-- ---------------------------------------------------------------------------------------------
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

CREATE OR REPLACE FUNCTION junction._upsert_samples(items junction.typing_item[], conflicts boolean DEFAULT true)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'
AS $fn$
DECLARE
    bad   text;
    n     bigint;
    hours junction.daily_hour[];
BEGIN
    SELECT coalesce(quote_literal(i.resource), 'NULL') INTO bad
    FROM unnest(items) AS i
    WHERE NOT EXISTS (SELECT FROM junction.resources AS r
                      WHERE r.name = i.resource AND r.kind = 'timeseries')
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'not a timeseries resource: %', bad USING ERRCODE = '22023';
    END IF;

    IF NOT junction._daily_enabled() THEN
        IF conflicts THEN
            INSERT INTO junction.samples AS t
            SELECT * FROM junction._sample_rows(items)
            ON CONFLICT (user_id, resource, time, provider, source_type, type, workout_id) DO UPDATE
            SET time_end = excluded.time_end, value = excluded.value, unit = excluded.unit,
                timezone_offset = excluded.timezone_offset, local_time = excluded.local_time,
                floating = excluded.floating, extra = excluded.extra, received_seq = excluded.received_seq
            WHERE excluded.received_seq > t.received_seq;
        ELSE
            INSERT INTO junction.samples SELECT * FROM junction._sample_rows(items);
        END IF;
        GET DIAGNOSTICS n = ROW_COUNT;
        RETURN n;
    END IF;

    -- The same statements, returning the hours of the rows they wrote: junction.daily_parts
    -- recomputes those hours, junction.daily the days they were and are on (38_daily.sql).
    IF conflicts THEN
        WITH w AS (
            INSERT INTO junction.samples AS t
            SELECT * FROM junction._sample_rows(items)
            ON CONFLICT (user_id, resource, time, provider, source_type, type, workout_id) DO UPDATE
            SET time_end = excluded.time_end, value = excluded.value, unit = excluded.unit,
                timezone_offset = excluded.timezone_offset, local_time = excluded.local_time,
                floating = excluded.floating, extra = excluded.extra, received_seq = excluded.received_seq
            WHERE excluded.received_seq > t.received_seq
            RETURNING t.user_id, t.resource, t.time
        )
        SELECT sum(h.n), array_agg(ROW(h.user_id, h.resource, h.hour)::junction.daily_hour)
                           FILTER (WHERE h.resource IN (SELECT dm.resource FROM junction.daily_metrics AS dm))
          INTO n, hours
        FROM (SELECT w.user_id, w.resource, date_trunc('hour', w.time) AS hour, count(*) AS n
              FROM w GROUP BY 1, 2, 3) AS h;
        n := coalesce(n, 0);
    ELSE
        WITH w AS (
            INSERT INTO junction.samples AS t
            SELECT * FROM junction._sample_rows(items)
            RETURNING t.user_id, t.resource, t.time
        )
        SELECT sum(h.n), array_agg(ROW(h.user_id, h.resource, h.hour)::junction.daily_hour)
                           FILTER (WHERE h.resource IN (SELECT dm.resource FROM junction.daily_metrics AS dm))
          INTO n, hours
        FROM (SELECT w.user_id, w.resource, date_trunc('hour', w.time) AS hour, count(*) AS n
              FROM w GROUP BY 1, 2, 3) AS h;
        n := coalesce(n, 0);
    END IF;
    PERFORM junction._daily_touch(hours, NULL);
    RETURN n;
END
$fn$;
COMMENT ON FUNCTION junction._upsert_samples(junction.typing_item[], boolean) IS
  'upsert timeseries groups ({source, data[]}) into junction.samples; the latest received wins per sample key (conflicts = false: plain INSERT of keys known to be new); recomputes the junction.daily days they touch';

-- ---------------------------------------------------------------------------------------------
-- Consolidation: one number per user, local day and metric (junction.daily), chosen among the
-- candidates (one per provider and source type) by the team's source priorities, else by a
-- documented default rule. A day is always recomputed from its candidates in the typed tables,
-- never patched, so the result does not depend on the order deliveries arrive in. The typing
-- upserts (webhook drain, junction_sync, backfill: junction._upsert_summaries and
-- junction._upsert_samples) recompute the hours and days they touched, or queue them for the
-- inbox worker (junction.daily_defer); junction_rebuild_daily() recomputes everything (after a
-- change of the priorities or of the metrics).
-- ---------------------------------------------------------------------------------------------

-- The team's source priorities: Junction's (junction_sync_source_priorities()) and the team's own.
CREATE TABLE junction.source_priorities (
    resource    text NOT NULL CONSTRAINT source_priorities_resource_check CHECK (length(resource) BETWEEN 1 AND 255),
    provider    text NOT NULL CONSTRAINT source_priorities_provider_check CHECK (length(provider) BETWEEN 1 AND 255),
    source_type text NOT NULL DEFAULT '' CONSTRAINT source_priorities_source_type_check CHECK (length(source_type) <= 255),
    priority    integer NOT NULL,
    origin      text NOT NULL DEFAULT 'team' CONSTRAINT source_priorities_origin_check CHECK (origin IN ('junction', 'team')),
    data        jsonb,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT source_priorities_pkey PRIMARY KEY (resource, provider, source_type, origin)
);
COMMENT ON TABLE junction.source_priorities IS
  'source priorities for junction.daily: lower priority wins; origin junction = GET /v2/team/source/priorities (junction_sync_source_priorities), team = your overrides';
COMMENT ON COLUMN junction.source_priorities.resource IS
  'Junction''s data_type (activity, sleep, body, workouts, timeseries = every timeseries resource) or one resource (steps, heartrate, ...)';
COMMENT ON COLUMN junction.source_priorities.source_type IS 'a source type (watch, phone, ring, ...), or empty = any';
COMMENT ON COLUMN junction.source_priorities.priority IS 'lower wins; the most specific row applies (resource, then source type), a team row before Junction''s';
COMMENT ON COLUMN junction.source_priorities.origin IS 'junction: replaced by junction_sync_source_priorities(); team: yours, never touched by the extension';
COMMENT ON COLUMN junction.source_priorities.data IS 'the object Junction sent (origin junction)';

-- The metrics: which typed column (or sample value) of which resource feeds which metric, and how
-- a day of one candidate (provider, source type) is reduced to one number.
CREATE TABLE junction.daily_metrics (
    metric    text NOT NULL CONSTRAINT daily_metrics_metric_check CHECK (metric ~ '^[a-z][a-z0-9_]{0,62}$'),
    resource  text NOT NULL CONSTRAINT daily_metrics_resource_check CHECK (length(resource) BETWEEN 1 AND 64),
    value_sql text NOT NULL,
    aggregate text NOT NULL CONSTRAINT daily_metrics_aggregate_check CHECK (aggregate IN ('sum', 'avg', 'min', 'max', 'count', 'pick')),
    order_sql text,
    unit      text,
    rank      integer NOT NULL DEFAULT 1,
    builtin   boolean NOT NULL DEFAULT false,
    CONSTRAINT daily_metrics_pick_check CHECK ((aggregate = 'pick') = (order_sql IS NOT NULL)),
    CONSTRAINT daily_metrics_pkey PRIMARY KEY (metric, resource)
);
COMMENT ON TABLE junction.daily_metrics IS
  'the metrics of junction.daily: one row per metric and resource feeding it (superusers only: value_sql and order_sql are SQL)';
COMMENT ON COLUMN junction.daily_metrics.value_sql IS 'summaries: SQL expression over the typed row t; timeseries: t.value (the samples'' value, combined from junction.daily_parts)';
COMMENT ON COLUMN junction.daily_metrics.aggregate IS
  'how one candidate''s rows of a day become one number: sum, avg, min, max, count, or pick (the first row in order_sql)';
COMMENT ON COLUMN junction.daily_metrics.order_sql IS 'pick: ORDER BY list over t (deterministic, ends in a key); timeseries: the latest sample, whatever it says';
COMMENT ON COLUMN junction.daily_metrics.rank IS
  'among the resources of one metric, for the same source: lower first (a provider''s own daily summary before the sum of its samples)';
COMMENT ON COLUMN junction.daily_metrics.builtin IS 'installed by the extension; rows you add (builtin = false) are kept by pg_dump';

INSERT INTO junction.daily_metrics (metric, resource, value_sql, aggregate, order_sql, unit, rank)
SELECT m.metric, m.resource, m.value_sql, m.aggregate,
       CASE m.aggregate WHEN 'pick' THEN coalesce(m.order_sql,
         CASE WHEN m.resource IN ('activity', 'sleep', 'body', 'workouts')
              THEN 'coalesce(t.updated_at, ''-infinity'') DESC, t.received_seq DESC, t.id DESC'
              ELSE 't.time DESC, t.type DESC, t.workout_id DESC' END) END,
       m.unit, m.rank
FROM (VALUES
    -- activity: one summary per day and source; the newest version's number
    ('steps',              'activity', 't.steps',                  'pick', NULL, 'count', 1),
    ('calories_active',    'activity', 't.calories_active',        'pick', NULL, 'kcal',  1),
    ('calories_total',     'activity', 't.calories_total',         'pick', NULL, 'kcal',  1),
    ('distance',           'activity', 't.distance',               'pick', NULL, 'm',     1),
    ('floors_climbed',     'activity', 't.floors_climbed',         'pick', NULL, 'count', 1),
    ('resting_heart_rate', 'activity', 't.heart_rate_resting_bpm', 'pick', NULL, 'bpm',   1),
    -- sleep: durations add up over the day's sessions (a night and a nap); the rates and scores
    -- are the longest session's
    ('sleep_total',        'sleep', 't.total',      'sum', NULL, 's', 1),
    ('sleep_deep',         'sleep', 't.deep',       'sum', NULL, 's', 1),
    ('sleep_rem',          'sleep', 't.rem',        'sum', NULL, 's', 1),
    ('sleep_light',        'sleep', 't.light',      'sum', NULL, 's', 1),
    ('sleep_awake',        'sleep', 't.awake',      'sum', NULL, 's', 1),
    ('sleep_efficiency',   'sleep', 't.efficiency', 'pick', 't.total DESC NULLS LAST, t.bedtime_start DESC, t.id DESC', '%', 1),
    ('sleep_score',        'sleep', 't.score',      'pick', 't.total DESC NULLS LAST, t.bedtime_start DESC, t.id DESC', 'score', 1),
    ('hrv_average',        'sleep', 't.average_hrv', 'pick', 't.total DESC NULLS LAST, t.bedtime_start DESC, t.id DESC', 'ms', 1),
    ('respiratory_rate',   'sleep', 't.respiratory_rate', 'pick', 't.total DESC NULLS LAST, t.bedtime_start DESC, t.id DESC', 'bpm', 1),
    ('resting_heart_rate', 'sleep', 't.hr_resting', 'pick', 't.total DESC NULLS LAST, t.bedtime_start DESC, t.id DESC', 'bpm', 2),
    -- body: the newest measurement of the day
    ('weight',             'body', 't.weight', 'pick', NULL, 'kg', 1),
    ('body_fat',           'body', 't.fat',    'pick', NULL, '%',  1),
    -- workouts: how many, and how long in all
    ('workout_count',      'workouts', 't.id IS NOT NULL', 'count', NULL, 'count', 1),
    ('workout_duration',   'workouts', 'extract(epoch FROM t.time_end - t.time_start)', 'sum', NULL, 's', 1),
    -- timeseries: cumulative ones add up, levels average, body measurements take the latest
    ('steps',              'steps',              't.value', 'sum', NULL, 'count', 2),
    ('calories_active',    'calories_active',    't.value', 'sum', NULL, 'kcal',  2),
    ('calories_basal',     'calories_basal',     't.value', 'sum', NULL, 'kcal',  2),
    ('distance',           'distance',           't.value', 'sum', NULL, 'm',     2),
    ('floors_climbed',     'floors_climbed',     't.value', 'sum', NULL, 'count', 2),
    ('hrv_average',        'hrv',                't.value', 'avg', NULL, 'ms',    2),
    ('respiratory_rate',   'respiratory_rate',   't.value', 'avg', NULL, 'bpm',   2),
    ('weight',             'weight',             't.value', 'pick', NULL, 'kg',   2),
    ('body_fat',           'fat',                't.value', 'pick', NULL, '%',    2),
    ('heart_rate_average', 'heartrate',          't.value', 'avg', NULL, 'bpm',   1),
    ('heart_rate_max',     'heartrate',          't.value', 'max', NULL, 'bpm',   1),
    ('heart_rate_min',     'heartrate',          't.value', 'min', NULL, 'bpm',   1),
    ('glucose_average',    'glucose',            't.value', 'avg', NULL, 'mmol/L', 1),
    ('blood_oxygen_average', 'blood_oxygen',     't.value', 'avg', NULL, '%',     1),
    ('stress_level_average', 'stress_level',     't.value', 'avg', NULL, '%',     1),
    ('body_temperature',   'body_temperature',   't.value', 'avg', NULL, '°C',    1),
    ('body_temperature_delta', 'body_temperature_delta', 't.value', 'avg', NULL, '°C', 1),
    ('vo2_max',            'vo2_max',            't.value', 'pick', NULL, 'mL/kg/min', 1),
    ('water',              'water',              't.value', 'sum', NULL, 'mL',    1),
    ('caffeine',           'caffeine',           't.value', 'sum', NULL, 'g',     1),
    ('carbohydrates',      'carbohydrates',      't.value', 'sum', NULL, 'g',     1),
    ('mindfulness_minutes', 'mindfulness_minutes', 't.value', 'sum', NULL, 'min', 1),
    ('daylight_exposure',  'daylight_exposure',  't.value', 'sum', NULL, 'min',   1),
    ('stand_duration',     'stand_duration',     't.value', 'sum', NULL, 'min',   1),
    ('stand_hour',         'stand_hour',         't.value', 'sum', NULL, 'count', 1),
    ('wheelchair_push',    'wheelchair_push',    't.value', 'sum', NULL, 'count', 1),
    ('insulin_injection',  'insulin_injection',  't.value', 'sum', NULL, 'unit',  1),
    ('handwashing',        'handwashing',        't.value', 'sum', NULL, 'count', 1),
    ('inhaler_usage',      'inhaler_usage',      't.value', 'sum', NULL, 'count', 1),
    ('fall',               'fall',               't.value', 'sum', NULL, 'count', 1),
    ('heart_rate_alert',   'heart_rate_alert',   't.value', 'sum', NULL, 'count', 1),
    ('sleep_apnea_alert',  'sleep_apnea_alert',  't.value', 'sum', NULL, 'count', 1),
    ('sleep_breathing_disturbance', 'sleep_breathing_disturbance', 't.value', 'sum', NULL, 'count', 1),
    ('workout_distance',   'workout_distance',   't.value', 'sum', NULL, 'm',     1),
    ('workout_swimming_stroke', 'workout_swimming_stroke', 't.value', 'sum', NULL, 'count', 1),
    ('afib_burden',        'afib_burden',        't.value', 'avg', NULL, '%',     1),
    ('uv_exposure',        'uv_exposure',        't.value', 'avg', NULL, 'index', 1),
    ('basal_body_temperature', 'basal_body_temperature', 't.value', 'avg', NULL, '°C', 1),
    ('heart_rate_recovery_one_minute', 'heart_rate_recovery_one_minute', 't.value', 'avg', NULL, 'count', 1),
    ('body_mass_index',    'body_mass_index',    't.value', 'pick', NULL, 'index', 1),
    ('lean_body_mass',     'lean_body_mass',     't.value', 'pick', NULL, 'kg',    1),
    ('waist_circumference', 'waist_circumference', 't.value', 'pick', NULL, 'cm',  1),
    ('forced_expiratory_volume_1', 'forced_expiratory_volume_1', 't.value', 'pick', NULL, 'L', 1),
    ('forced_vital_capacity', 'forced_vital_capacity', 't.value', 'pick', NULL, 'L', 1),
    ('peak_expiratory_flow_rate', 'peak_expiratory_flow_rate', 't.value', 'pick', NULL, 'L/min', 1)
) AS m(metric, resource, value_sql, aggregate, order_sql, unit, rank);
UPDATE junction.daily_metrics SET builtin = true;

-- The consolidated values.
CREATE TABLE junction.daily (
    user_id       uuid NOT NULL,
    calendar_date date NOT NULL,
    metric        text NOT NULL,
    value         double precision NOT NULL,
    unit          text,
    provider      text NOT NULL,
    source_type   text NOT NULL,
    resource      text NOT NULL,
    candidates    integer NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT daily_pkey PRIMARY KEY (user_id, calendar_date, metric)
) WITH (fillfactor = 80);
COMMENT ON TABLE junction.daily IS
  'one number per user, local day and metric, from the winning candidate (provider, source type) by junction.source_priorities, else the default rule (README, "Consolidation")';
COMMENT ON COLUMN junction.daily.calendar_date IS 'the user''s local day: the summary''s calendar_date, or the sample''s local_time (its UTC day when the offset is unknown)';
COMMENT ON COLUMN junction.daily.provider IS 'the winning candidate''s provider';
COMMENT ON COLUMN junction.daily.source_type IS 'the winning candidate''s source type';
COMMENT ON COLUMN junction.daily.resource IS 'where the value comes from: a summary resource (activity, sleep, ...) or a timeseries resource';
COMMENT ON COLUMN junction.daily.candidates IS 'how many candidates (provider, source type, resource) had a value that day';
COMMENT ON COLUMN junction.daily.updated_at IS 'when the value (or its winner) last changed';
-- many users, a range of days, one metric (no value in it: a changed value stays a HOT update)
CREATE INDEX daily_metric_date ON junction.daily (metric, calendar_date, user_id);

-- The samples' candidates by hour: one row per user, resource, UTC hour, local day, provider and
-- source type, recomputed from junction.samples whenever a sample of that hour is written. A day
-- of a timeseries candidate is then the combination of its (at most 25) hours, so a delivery
-- costs the hours it touched, not its whole day.
CREATE TABLE junction.daily_parts (
    user_id       uuid NOT NULL,
    resource      text NOT NULL,
    hour          timestamptz NOT NULL,
    calendar_date date NOT NULL,
    provider      text NOT NULL,
    source_type   text NOT NULL,
    n             bigint NOT NULL,
    sum           double precision,
    min           double precision,
    max           double precision,
    last_value    double precision,
    CONSTRAINT daily_parts_pkey PRIMARY KEY (user_id, resource, hour, calendar_date, provider, source_type)
) WITH (fillfactor = 70);
COMMENT ON TABLE junction.daily_parts IS
  'junction.daily''s timeseries candidates by hour (count, sum, min, max and last of the samples with a value), recomputed from junction.samples';
COMMENT ON COLUMN junction.daily_parts.hour IS 'the UTC hour of the samples'' time';
COMMENT ON COLUMN junction.daily_parts.calendar_date IS 'their local day (local_time, else the UTC day)';
COMMENT ON COLUMN junction.daily_parts.last_value IS 'the value of the hour''s last sample (time, then type, then workout_id), for the resources a pick metric reads (else null)';
CREATE INDEX daily_parts_day ON junction.daily_parts (user_id, resource, calendar_date);

-- The recomputation the inbox workers queue (they run with junction.daily_defer = on): hours of
-- samples and days of summaries written, recomputed together when the inbox is drained and at
-- least every junction.daily_interval (src/worker.c), so consecutive batches touching the same days cost one
-- recomputation. Everything else (junction_process_inbox, junction_sync, the backfill) recomputes
-- in its own transaction.
CREATE TABLE junction.daily_pending_hours (
    user_id  uuid NOT NULL,
    resource text NOT NULL,
    hour     timestamptz NOT NULL
);
-- No unique key: every upsert adds its own row for a key, even one already queued, and a flush
-- deletes only the rows it locked (a key another transaction is still writing stays queued by
-- that transaction's row, invisible to the flush until it commits). No writer ever waits on
-- another's queue row.
CREATE INDEX daily_pending_hours_key ON junction.daily_pending_hours (user_id, resource, hour);
COMMENT ON TABLE junction.daily_pending_hours IS
  'hours of samples whose junction.daily_parts (and days) the inbox workers recompute next';
CREATE TABLE junction.daily_pending_days (
    user_id       uuid NOT NULL,
    calendar_date date NOT NULL,
    resource      text NOT NULL
);
CREATE INDEX daily_pending_days_key ON junction.daily_pending_days (user_id, calendar_date, resource);
COMMENT ON TABLE junction.daily_pending_days IS
  'days of summaries whose junction.daily values the inbox workers recompute next';



-- The aggregators: providers that merge other apps' and devices' data (phone health stores).
-- This and junction.default_source_rank are inlined into junction.daily's recomputation (hence no
-- SET clause, and every name qualified).
CREATE FUNCTION junction._aggregator_providers()
RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $fn$
    SELECT ARRAY['apple_health_kit', 'health_connect', 'google_fit', 'samsung_health']::pg_catalog.text[]
$fn$;
COMMENT ON FUNCTION junction._aggregator_providers() IS
  'providers that aggregate other sources (ranked after a device''s own cloud by junction.default_source_rank)';

-- The default rule when no priority applies: a dedicated device (ring, watch, strap, cuff, scale,
-- meter, CGM) before a phone, a phone before an app, an app before merged "multiple sources";
-- within a tier, the device's own cloud before an aggregator (HealthKit, Health Connect, ...).
-- A source type of unknown counts as a device when a device maker sends it, else as merged.
CREATE FUNCTION junction.default_source_rank(provider text, source_type text)
RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $fn$
    SELECT CASE
             WHEN source_type OPERATOR(pg_catalog.=) ANY (ARRAY['ring', 'watch', 'chest_strap', 'cuff', 'scale',
                      'fingerprick', 'automatic', 'manual_scan', 'lab']::pg_catalog.text[]) THEN 10
             WHEN source_type OPERATOR(pg_catalog.=) 'phone'::pg_catalog.text THEN 20
             WHEN source_type OPERATOR(pg_catalog.=) 'app'::pg_catalog.text THEN 30
             WHEN source_type OPERATOR(pg_catalog.=) 'multiple_sources'::pg_catalog.text THEN 40
             WHEN provider OPERATOR(pg_catalog.<>) ALL (junction._aggregator_providers()) THEN 10
             ELSE 40
           END
           OPERATOR(pg_catalog.+)
           CASE WHEN provider OPERATOR(pg_catalog.=) ANY (junction._aggregator_providers()) THEN 1 ELSE 0 END
$fn$;
COMMENT ON FUNCTION junction.default_source_rank(text, text) IS
  'the default rank of a source when no priority applies (lower wins): device 10, phone 20, app 30, multiple_sources 40; +1 for an aggregator provider';

-- The priority that applies to a candidate, or null: the most specific row of
-- junction.source_priorities (the resource itself before its data_type "timeseries", a source
-- type before "any"), a team row before Junction's.
CREATE FUNCTION junction.source_priority(resource text, kind text, provider text, source_type text)
RETURNS integer
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT p.priority
    FROM junction.source_priorities AS p
    WHERE p.provider OPERATOR(pg_catalog.=) source_priority.provider
      AND (p.resource OPERATOR(pg_catalog.=) source_priority.resource
           OR (kind OPERATOR(pg_catalog.=) 'timeseries'::pg_catalog.text
               AND p.resource OPERATOR(pg_catalog.=) 'timeseries'::pg_catalog.text))
      AND (p.source_type OPERATOR(pg_catalog.=) source_priority.source_type
           OR p.source_type OPERATOR(pg_catalog.=) ''::pg_catalog.text)
    ORDER BY p.resource OPERATOR(pg_catalog.=) source_priority.resource DESC,
             p.source_type OPERATOR(pg_catalog.<>) ''::pg_catalog.text DESC,
             p.origin OPERATOR(pg_catalog.=) 'team'::pg_catalog.text DESC
    LIMIT 1
$fn$;
COMMENT ON FUNCTION junction.source_priority(text, text, text, text) IS
  'the priority of junction.source_priorities that applies to a candidate (resource, its kind, provider, source type), or null';

-- Whether the upserts maintain junction.daily (the junction.daily setting; on without the library).
CREATE FUNCTION junction._daily_enabled()
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$ SELECT coalesce(current_setting('junction.daily', true), 'on') <> 'off' $fn$;
COMMENT ON FUNCTION junction._daily_enabled() IS 'false when junction.daily = off (the upserts then leave junction.daily alone)';

-- Whether the upserts queue the recomputation (junction.daily_defer, set by the inbox workers).
CREATE FUNCTION junction._daily_deferred()
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$ SELECT coalesce(current_setting('junction.daily_defer', true), 'off') = 'on' $fn$;
COMMENT ON FUNCTION junction._daily_deferred() IS 'true when junction.daily_defer = on: the upserts queue the days for junction._daily_flush';

-- Take the turns of every user whose hours or days are about to be recomputed, in user order,
-- before any of their rows is written. junction._daily_parts_refresh and junction._daily_refresh
-- each take their own users' turns; taking the union first keeps one order when the days name a
-- user the hours do not.
CREATE FUNCTION junction._daily_lock_users(hours junction.daily_hour[], days junction.daily_key[])
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    PERFORM pg_advisory_xact_lock(1785688929, hashtext(u.user_id::text))
    FROM (SELECT h.user_id FROM unnest(hours) AS h WHERE h.user_id IS NOT NULL
          UNION
          SELECT d.user_id FROM unnest(days) AS d WHERE d.user_id IS NOT NULL
          ORDER BY 1) AS u;
END
$fn$;
COMMENT ON FUNCTION junction._daily_lock_users(junction.daily_hour[], junction.daily_key[]) IS
  'take the junction.daily turns (transaction advisory locks) of the users of some hours and days, in user order';
REVOKE ALL ON FUNCTION junction._daily_lock_users(junction.daily_hour[], junction.daily_key[]) FROM PUBLIC;

-- Recompute what the upserts recomputed in place otherwise: hours through junction.daily_parts,
-- days of summaries. With junction.daily_defer = on they queue instead (junction._daily_flush).
CREATE FUNCTION junction._daily_touch(hours junction.daily_hour[], days junction.daily_key[])
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'
AS $fn$
BEGIN
    IF NOT junction._daily_enabled() THEN
        RETURN 0;
    END IF;
    IF junction._daily_deferred() THEN
        -- A row of this transaction's own for every key, even one already queued: a flush sees it
        -- only once this transaction has committed its rows, so it cannot take the key, recompute
        -- it without them and drop it (what passing over a queued key allowed). And no writer
        -- waits on another's queue row.
        INSERT INTO junction.daily_pending_hours (user_id, resource, hour)
        SELECT DISTINCT h.user_id, h.resource, h.hour FROM unnest(hours) AS h
        WHERE h.user_id IS NOT NULL AND h.resource IS NOT NULL AND h.hour IS NOT NULL;
        INSERT INTO junction.daily_pending_days (user_id, calendar_date, resource)
        SELECT DISTINCT d.user_id, d.calendar_date, d.resource FROM unnest(days) AS d
        WHERE d.user_id IS NOT NULL AND d.calendar_date IS NOT NULL AND d.resource IS NOT NULL;
        RETURN 0;
    END IF;
    PERFORM junction._daily_lock_users(hours, days);
    RETURN junction._daily_refresh(coalesce(junction._daily_parts_refresh(hours), '{}'::junction.daily_key[])
                                   || coalesce(days, '{}'::junction.daily_key[]));
END
$fn$;
COMMENT ON FUNCTION junction._daily_touch(junction.daily_hour[], junction.daily_key[]) IS
  'recompute (or, with junction.daily_defer = on, queue) the junction.daily hours of samples and days of summaries an upsert wrote';

-- The sum of an array's elements in the array's order (NULLs skipped, as sum() skips them; NULL
-- when none). A float sum depends on the order of its terms; the recomputation below passes the
-- terms ordered by key, so a day's value never depends on the order a plan reads its rows in.
-- Not an ordered aggregate (sum(x ORDER BY y)): Citus splits a sum into partial sums on the
-- shards and cannot split an ordered one; array_agg(x ORDER BY y) it runs as is.
CREATE FUNCTION junction._sum_in_order(terms double precision[])
RETURNS double precision
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $fn$ SELECT sum(x.v ORDER BY x.i) FROM unnest(terms) WITH ORDINALITY AS x(v, i) $fn$;
COMMENT ON FUNCTION junction._sum_in_order(double precision[]) IS
  'the sum of the elements in array order (a float sum depends on the order of its terms)';
REVOKE ALL ON FUNCTION junction._sum_in_order(double precision[]) FROM PUBLIC;

-- The statement that recomputes the days of $1 (junction.daily_key[]) of the metrics the given
-- resources feed: generated from junction.daily_metrics and junction.resources. One candidate per
-- metric, provider, source type and resource; the winner by priority, the default rank, the
-- metric's resource rank, then names.
CREATE FUNCTION junction._daily_sql(resources text[])
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    cands          text;
    has_priorities boolean := EXISTS (SELECT FROM junction.source_priorities);
BEGIN
    -- One branch per resource: each (provider, source type) of a key's day reduced once to every
    -- metric of the resource, then one row per metric the keys ask for on that day.
    SELECT string_agg(format($q$
    SELECT a.user_id, a.calendar_date, v.metric, %1$L::text AS resource, %2$L::text AS kind,
           v.rank, a.provider COLLATE "default", a.source_type COLLATE "default", v.value
    FROM (SELECT d.user_id, d.calendar_date, t.provider COLLATE "C" AS provider,
                 t.source_type COLLATE "C" AS source_type, max(d.metrics) AS metrics, %3$s
          FROM (SELECT k.user_id, k.calendar_date, array_agg(k.metric) AS metrics
                FROM k WHERE k.metric IN (%4$s) GROUP BY k.user_id, k.calendar_date) AS d
          JOIN %5$s AS t ON %6$s
          GROUP BY d.user_id, d.calendar_date, t.provider COLLATE "C", t.source_type COLLATE "C") AS a
    CROSS JOIN LATERAL (VALUES %7$s) AS v(metric, rank, value)
    WHERE v.metric = ANY (a.metrics)$q$,
               x.resource, x.kind, x.aggs, x.metrics, x.tbl, x.cond, x.vals),
           E'\n    UNION ALL' ORDER BY x.resource)
      INTO cands
    FROM (
        SELECT m.resource, r.kind,
               string_agg(format('%s AS %I', CASE
                 -- a timeseries day combines its hours of junction.daily_parts
                 WHEN r.kind = 'timeseries' THEN CASE m.aggregate
                   WHEN 'sum' THEN 'sum(t.sum)'
                   WHEN 'avg' THEN 'sum(t.sum) / nullif(sum(t.n), 0)'
                   WHEN 'min' THEN 'min(t.min)'
                   WHEN 'max' THEN 'max(t.max)'
                   WHEN 'count' THEN 'sum(t.n)::double precision'
                   ELSE '(array_agg(t.last_value ORDER BY t.hour DESC))[1]'
                 END
                 WHEN m.aggregate = 'pick' THEN
                   format('(array_agg((%1$s)::double precision ORDER BY %2$s) FILTER (WHERE (%1$s) IS NOT NULL))[1]',
                          m.value_sql, m.order_sql)
                 WHEN m.aggregate = 'count' THEN format('count(NULLIF(%s, false))::double precision', m.value_sql)
                 ELSE format('%s((%s)::double precision)', m.aggregate, m.value_sql)
               END, 'm_' || m.metric), ', ' ORDER BY m.metric) AS aggs,
               string_agg(format('(%L, %s, a.%I)', m.metric, m.rank, 'm_' || m.metric), ', ' ORDER BY m.metric) AS vals,
               CASE r.kind WHEN 'timeseries' THEN 'junction.daily_parts'
                           ELSE format('junction.%I', min(r.table_name)) END AS tbl,
               CASE r.kind
                 WHEN 'timeseries' THEN format(
                   't.user_id = d.user_id AND t.resource = %L AND t.calendar_date = d.calendar_date', m.resource)
                 ELSE 't.user_id = d.user_id AND t.calendar_date = d.calendar_date'
               END AS cond,
               string_agg(quote_literal(m.metric), ', ' ORDER BY m.metric) AS metrics
        FROM junction.daily_metrics AS m
        JOIN junction.resources AS r ON r.name = m.resource AND r.kind IN ('summary', 'timeseries')
        WHERE m.metric IN (SELECT f.metric FROM junction.daily_metrics AS f WHERE f.resource = ANY (resources))
        GROUP BY m.resource, r.kind
    ) AS x;

    -- every key also gets a row without a value: it wins only when no candidate has one, and then
    -- the key's junction.daily row goes
    RETURN format($q$
WITH k AS MATERIALIZED (
    SELECT DISTINCT k.user_id, k.calendar_date, m.metric
    FROM unnest($1::junction.daily_key[]) AS k
    JOIN junction.daily_metrics AS m ON m.resource = k.resource
    WHERE k.user_id IS NOT NULL AND k.calendar_date IS NOT NULL
), c AS (%1$s
    SELECT k.user_id, k.calendar_date, k.metric, NULL::text, NULL::text, NULL::integer, NULL::text,
           NULL::text, NULL::double precision
    FROM k
), w AS MATERIALIZED (
    SELECT DISTINCT ON (c.user_id, c.calendar_date, c.metric COLLATE "C")
           c.user_id, c.calendar_date, c.metric, nullif(c.value, 'NaN') AS value, c.resource, c.provider,
           c.source_type,
           count(nullif(c.value, 'NaN')) OVER (PARTITION BY c.user_id, c.calendar_date, c.metric COLLATE "C") AS candidates
    FROM c%2$s
    -- names in "C" order: the same winner whatever the database's collation
    ORDER BY c.user_id, c.calendar_date, c.metric COLLATE "C", nullif(c.value, 'NaN') IS NULL,
             %3$s NULLS LAST, junction.default_source_rank(c.provider, c.source_type), c.rank,
             c.provider COLLATE "C", c.source_type COLLATE "C", c.resource COLLATE "C"
), up AS (
    INSERT INTO junction.daily AS d
        (user_id, calendar_date, metric, value, unit, provider, source_type, resource, candidates, updated_at)
    SELECT w.user_id, w.calendar_date, w.metric, w.value, m.unit, w.provider, w.source_type, w.resource,
           w.candidates, now()
    FROM w JOIN junction.daily_metrics AS m ON m.metric = w.metric AND m.resource = w.resource
    WHERE w.value IS NOT NULL
    ORDER BY w.user_id, w.calendar_date, w.metric
    ON CONFLICT (user_id, calendar_date, metric) DO UPDATE
    SET value = excluded.value, unit = excluded.unit, provider = excluded.provider,
        source_type = excluded.source_type, resource = excluded.resource,
        candidates = excluded.candidates, updated_at = excluded.updated_at
    WHERE (d.value, d.unit, d.provider, d.source_type, d.resource, d.candidates)
          IS DISTINCT FROM (excluded.value, excluded.unit, excluded.provider, excluded.source_type,
                            excluded.resource, excluded.candidates)
    RETURNING 1
), gone AS (
    DELETE FROM junction.daily AS d
    USING w
    WHERE w.value IS NULL
      AND d.user_id = w.user_id AND d.calendar_date = w.calendar_date AND d.metric = w.metric
    RETURNING 1
)
SELECT (SELECT count(*) FROM up) + (SELECT count(*) FROM gone)$q$, coalesce(cands || E'\n    UNION ALL', ''),
    CASE WHEN has_priorities THEN $q$
    -- the priority that applies (as junction.source_priority says)
    LEFT JOIN LATERAL (
        SELECT p.priority
        FROM junction.source_priorities AS p
        WHERE p.resource = ANY (ARRAY[c.resource, CASE WHEN c.kind = 'timeseries' THEN 'timeseries' END])
          AND p.provider = c.provider
          AND (p.source_type = c.source_type OR p.source_type = '')
        ORDER BY p.resource = c.resource DESC, p.source_type <> '' DESC, p.origin = 'team' DESC
        LIMIT 1) AS pr ON c.value IS NOT NULL$q$ ELSE '' END,
    CASE WHEN has_priorities THEN 'pr.priority' ELSE 'NULL::integer' END);
END
$fn$;
COMMENT ON FUNCTION junction._daily_sql(text[]) IS
  'the statement that recomputes the junction.daily values of the days $1 (junction.daily_key[]) from their candidates, for the metrics the resources feed';

-- Recompute the days of keys: rows of junction.daily written or deleted. Concurrent writers of
-- one user's days take turns (an advisory lock per user, in user order), so each recomputation
-- sees the other's committed rows.
CREATE FUNCTION junction._daily_refresh(keys junction.daily_key[], force boolean DEFAULT false)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'
AS $fn$
-- The EXECUTEd text comes from junction._daily_sql, built from junction.daily_metrics (writable by
-- superusers only) and the catalog; the keys are passed with USING.
-- @plpgsql_check_options: security_warnings = off
DECLARE
    n bigint;
BEGIN
    IF keys IS NULL OR cardinality(keys) = 0 OR NOT (force OR junction._daily_enabled()) THEN
        RETURN 0;
    END IF;
    PERFORM pg_advisory_xact_lock(1785688929, hashtext(u.user_id::text))
    FROM (SELECT DISTINCT k.user_id FROM unnest(keys) AS k WHERE k.user_id IS NOT NULL ORDER BY 1) AS u;
    EXECUTE junction._daily_sql(ARRAY(SELECT DISTINCT k.resource FROM unnest(keys) AS k ORDER BY 1))
       INTO n USING keys;
    RETURN n;
END
$fn$;
COMMENT ON FUNCTION junction._daily_refresh(junction.daily_key[], boolean) IS
  'recompute the junction.daily values of the given (user, day, resource) keys from their candidates (unless junction.daily = off and not force)';

-- Recompute the junction.daily_parts rows of some hours from junction.samples; returns the days
-- those hours were and are on (for junction._daily_refresh).
CREATE FUNCTION junction._daily_parts_refresh(hours junction.daily_hour[])
RETURNS junction.daily_key[]
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'
AS $fn$
DECLARE
    gone  junction.daily_key[];
    fresh junction.daily_key[];
BEGIN
    IF hours IS NULL OR cardinality(hours) = 0 THEN
        RETURN NULL;
    END IF;
    -- the hours' rows, recomputed: changed ones updated in place (a HOT update: no indexed column
    -- changes), new ones inserted; unchanged ones left alone, and their days with them
    WITH i AS (
        INSERT INTO junction.daily_parts AS p
            (user_id, resource, hour, calendar_date, provider, source_type, n, sum, min, max, last_value)
        SELECT g.user_id, g.resource, g.hour, g.calendar_date, g.provider, g.source_type, g.n, g.sum, g.min, g.max,
               -- the last value, only for the resources a metric picks it from
               CASE WHEN g.resource IN (SELECT m.resource FROM junction.daily_metrics AS m WHERE m.aggregate = 'pick') THEN
                 (SELECT l.value FROM junction.samples AS l
                  WHERE l.user_id = g.user_id AND l.resource = g.resource
                    AND l.time >= g.hour AND l.time < g.hour + interval '1 hour'
                    AND l.provider = g.provider AND l.source_type = g.source_type AND l.value IS NOT NULL
                    AND coalesce(l.local_time, l.time AT TIME ZONE 'UTC')::date = g.calendar_date
                  ORDER BY l.time DESC, l.type DESC, l.workout_id DESC LIMIT 1)
               END
        FROM (SELECT h.user_id, h.resource COLLATE "C" AS resource, h.hour, s.calendar_date,
                     s.provider COLLATE "C" AS provider, s.source_type COLLATE "C" AS source_type,
                     count(*) AS n, sum(s.value) AS sum, min(s.value) AS min, max(s.value) AS max
              FROM (SELECT DISTINCT h.user_id, h.resource, h.hour FROM unnest(hours) AS h) AS h
              -- LATERAL: one range scan of junction.samples' key per hour, however the batch is estimated
              CROSS JOIN LATERAL (
                  SELECT coalesce(s.local_time, s.time AT TIME ZONE 'UTC')::date AS calendar_date,
                         s.provider, s.source_type, s.value
                  FROM junction.samples AS s
                  WHERE s.user_id = h.user_id AND s.resource = h.resource
                    AND s.time >= h.hour AND s.time < h.hour + interval '1 hour'
                    AND s.value IS NOT NULL
                  OFFSET 0) AS s
              -- "C": grouping sorts by byte, not by the database's collation
              GROUP BY h.user_id, h.resource COLLATE "C", h.hour, s.calendar_date, s.provider COLLATE "C",
                       s.source_type COLLATE "C") AS g
        ORDER BY 1, 2, 3, 4, 5, 6
        ON CONFLICT (user_id, resource, hour, calendar_date, provider, source_type) DO UPDATE
        SET n = excluded.n, sum = excluded.sum, min = excluded.min, max = excluded.max,
            last_value = excluded.last_value
        WHERE (p.n, p.sum, p.min, p.max, p.last_value)
              IS DISTINCT FROM (excluded.n, excluded.sum, excluded.min, excluded.max, excluded.last_value)
        RETURNING p.user_id, p.calendar_date, p.resource
    )
    SELECT array_agg(ROW(x.user_id, x.calendar_date, x.resource)::junction.daily_key) INTO fresh
    FROM (SELECT DISTINCT i.user_id, i.calendar_date, i.resource FROM i) AS x;
    -- rows of those hours without a sample left (values gone, or moved to another local day)
    WITH d AS (
        DELETE FROM junction.daily_parts AS p
        USING (SELECT DISTINCT h.user_id, h.resource, h.hour FROM unnest(hours) AS h) AS h
        WHERE p.user_id = h.user_id AND p.resource = h.resource AND p.hour = h.hour
          AND NOT EXISTS (SELECT FROM junction.samples AS s
                          WHERE s.user_id = p.user_id AND s.resource = p.resource
                            AND s.time >= p.hour AND s.time < p.hour + interval '1 hour'
                            AND s.provider = p.provider AND s.source_type = p.source_type
                            AND s.value IS NOT NULL
                            AND coalesce(s.local_time, s.time AT TIME ZONE 'UTC')::date = p.calendar_date)
        RETURNING p.user_id, p.calendar_date, p.resource
    )
    SELECT array_agg(ROW(x.user_id, x.calendar_date, x.resource)::junction.daily_key) INTO gone
    FROM (SELECT DISTINCT d.user_id, d.calendar_date, d.resource FROM d) AS x;
    RETURN coalesce(gone, '{}'::junction.daily_key[]) || coalesce(fresh, '{}'::junction.daily_key[]);
END
$fn$;
COMMENT ON FUNCTION junction._daily_parts_refresh(junction.daily_hour[]) IS
  'recompute the junction.daily_parts rows of the given (user, resource, UTC hour) from junction.samples; returns the days they were and are on';

-- The days a batch of summaries of one resource touches, read from its table (before the upsert:
-- the days the stored versions are on; after: the new ones). Null for a resource without metrics.
CREATE FUNCTION junction._daily_summary_keys(items junction.typing_item[], resource text)
RETURNS junction.daily_key[]
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
-- The EXECUTEd text names a summary table from the registry (quote_ident); values are passed with USING.
-- @plpgsql_check_options: security_warnings = off
DECLARE
    res  junction.resources;
    keys junction.daily_key[];
BEGIN
    SELECT * INTO res FROM junction.resources AS r
    WHERE r.name = _daily_summary_keys.resource AND r.kind = 'summary'
      AND EXISTS (SELECT FROM junction.daily_metrics AS m WHERE m.resource = r.name);
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    EXECUTE format($q$
        SELECT array_agg(DISTINCT ROW(t.user_id, t.calendar_date, $2)::junction.daily_key)
        FROM junction.%I AS t
        JOIN (SELECT DISTINCT i.user_id, (i.obj ->> %L)::uuid AS id
              FROM unnest($1) AS i
              WHERE i.resource = $2
                AND (i.obj ->> %L) ~* '^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$') AS b
          ON t.user_id = b.user_id AND t.id = b.id
        WHERE t.calendar_date IS NOT NULL$q$, res.table_name, res.id_field, res.id_field)
      INTO keys USING items, resource;
    RETURN keys;
END
$fn$;
COMMENT ON FUNCTION junction._daily_summary_keys(junction.typing_item[], text) IS
  'the (user, calendar_date, resource) keys of the stored summaries a batch names (resources with daily metrics only)';

-- Recompute up to max_keys queued hours and days (the inbox workers call it, src/worker.c);
-- returns how many were taken from the queue.
CREATE FUNCTION junction._daily_flush(max_keys integer DEFAULT 20000)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'
AS $fn$
DECLARE
    hours junction.daily_hour[];
    days  junction.daily_key[];
    taken bigint;
BEGIN
    -- the rows this flush locked, and only those (another flush's rows of the same key are its
    -- own); a key queued twice is recomputed once
    WITH q AS (
        DELETE FROM junction.daily_pending_hours AS p
        WHERE p.ctid = ANY (ARRAY(SELECT x.ctid FROM junction.daily_pending_hours AS x
                                  ORDER BY x.user_id, x.resource, x.hour LIMIT max_keys
                                  FOR UPDATE SKIP LOCKED))
        RETURNING p.user_id, p.resource, p.hour
    )
    SELECT array_agg(DISTINCT ROW(q.user_id, q.resource, q.hour)::junction.daily_hour), count(*) INTO hours, taken FROM q;
    WITH q AS (
        DELETE FROM junction.daily_pending_days AS p
        WHERE p.ctid = ANY (ARRAY(SELECT x.ctid FROM junction.daily_pending_days AS x
                                  ORDER BY x.user_id, x.calendar_date, x.resource LIMIT max_keys
                                  FOR UPDATE SKIP LOCKED))
        RETURNING p.user_id, p.calendar_date, p.resource
    )
    SELECT array_agg(DISTINCT ROW(q.user_id, q.calendar_date, q.resource)::junction.daily_key), taken + count(*)
      INTO days, taken FROM q;
    PERFORM junction._daily_lock_users(hours, days);
    PERFORM junction._daily_refresh(coalesce(junction._daily_parts_refresh(hours), '{}'::junction.daily_key[])
                                    || coalesce(days, '{}'::junction.daily_key[]), true);
    RETURN taken;
END
$fn$;
COMMENT ON FUNCTION junction._daily_flush(integer) IS
  'recompute up to max_keys of the hours and days queued by upserts run with junction.daily_defer = on; returns how many queue rows were taken';

-- ---------------------------------------------------------------------------------------------
-- Entry points.
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION junction_rebuild_daily(user_id uuid DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'
AS $fn$
-- The EXECUTEd text names summary tables from the registry (quote_ident); values are passed with USING.
-- @plpgsql_check_options: security_warnings = off
DECLARE
    uid   uuid := user_id;
    keys  junction.daily_key[] := '{}'::junction.daily_key[];
    more  junction.daily_key[];
    res   record;
    n     bigint;
    users text;
    u     uuid;
BEGIN
    IF uid IS NULL THEN
        -- every user, one at a time (each user's days fit in memory, whatever the table sizes)
        DELETE FROM junction.daily_parts;
        DELETE FROM junction.daily;
        GET DIAGNOSTICS n = ROW_COUNT;
        SELECT string_agg(format('SELECT t.user_id FROM junction.%I AS t', x.table_name), ' UNION ')
          INTO users
        FROM (SELECT DISTINCT r.table_name FROM junction.resources AS r
              JOIN junction.daily_metrics AS m ON m.resource = r.name
              WHERE r.kind IN ('summary', 'timeseries') ORDER BY 1) AS x;
        FOR u IN EXECUTE format('SELECT x.user_id FROM (%s) AS x ORDER BY 1', coalesce(users, 'SELECT NULL::uuid WHERE false'))
        LOOP
            n := n + @extschema@.junction_rebuild_daily(u);
        END LOOP;
        RETURN n;
    END IF;
    -- the samples' hours, all of them (as junction._daily_parts_refresh computes them)
    DELETE FROM junction.daily_parts AS p WHERE p.user_id = uid;
    INSERT INTO junction.daily_parts AS p
        (user_id, resource, hour, calendar_date, provider, source_type, n, sum, min, max, last_value)
    SELECT s.user_id, s.resource, date_trunc('hour', s.time), coalesce(s.local_time, s.time AT TIME ZONE 'UTC')::date,
           s.provider, s.source_type, count(*), sum(s.value), min(s.value), max(s.value),
           (array_agg(s.value ORDER BY s.time DESC, s.type DESC, s.workout_id DESC)
              FILTER (WHERE s.resource IN (SELECT m.resource FROM junction.daily_metrics AS m
                                           WHERE m.aggregate = 'pick')))[1]
    FROM junction.samples AS s
    WHERE s.value IS NOT NULL AND s.user_id = uid
      AND s.resource IN (SELECT m.resource FROM junction.daily_metrics AS m)
    GROUP BY s.user_id, s.resource, date_trunc('hour', s.time), coalesce(s.local_time, s.time AT TIME ZONE 'UTC')::date,
             s.provider, s.source_type;
    FOR res IN SELECT DISTINCT r.name, r.kind, r.table_name
               FROM junction.resources AS r
               JOIN junction.daily_metrics AS m ON m.resource = r.name
               WHERE r.kind IN ('summary', 'timeseries')
               ORDER BY r.name
    LOOP
        IF res.kind = 'summary' THEN
            EXECUTE format('SELECT array_agg(DISTINCT ROW(t.user_id, t.calendar_date, $2)::junction.daily_key)
                            FROM junction.%I AS t
                            WHERE t.calendar_date IS NOT NULL AND t.user_id = $1', res.table_name)
              INTO more USING uid, res.name;
        ELSE
            SELECT array_agg(DISTINCT ROW(p.user_id, p.calendar_date, res.name)::junction.daily_key)
              INTO more
            FROM junction.daily_parts AS p
            WHERE p.resource = res.name AND p.user_id = uid;
        END IF;
        keys := keys || coalesce(more, '{}'::junction.daily_key[]);
    END LOOP;
    -- days without any candidate left (a metric removed, rows deleted) go too
    DELETE FROM junction.daily AS d WHERE d.user_id = uid;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n + junction._daily_refresh(keys, true);
END
$fn$;
COMMENT ON FUNCTION junction_rebuild_daily(uuid) IS
  'recompute junction.daily from the typed tables (every user, or one): after changing junction.source_priorities or junction.daily_metrics; returns rows deleted plus rows written';

-- Junction's source priorities, per data_type (PriorityResource in Junction's OpenAPI
-- specification: activity, body, sleep, timeseries, workouts). The response is an array of
-- objects whose fields the specification leaves open; each one names a provider (source.slug,
-- source.provider, provider or slug) and a priority (else its position in the list counts).
CREATE FUNCTION junction_sync_source_priorities()
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    data_type text;
    answer    jsonb;
    n         bigint;
    total     bigint := 0;
BEGIN
    DELETE FROM junction.source_priorities AS p WHERE p.origin = 'junction';
    FOREACH data_type IN ARRAY ARRAY['activity', 'body', 'sleep', 'timeseries', 'workouts'] LOOP
        answer := @extschema@.junction_api('GET', '/v2/team/source/priorities',
                                           jsonb_build_object('data_type', data_type));
        IF jsonb_typeof(answer) IS DISTINCT FROM 'array' THEN
            RAISE EXCEPTION 'junction API GET /v2/team/source/priorities: response is not an array'
                USING ERRCODE = '22P02',
                      DETAIL = format('The response starts with: %s', left(answer::text, 80));
        END IF;
        -- one row per provider (and source type, if Junction names one): the best (lowest) priority
        INSERT INTO junction.source_priorities AS p (resource, provider, source_type, priority, origin, data)
        SELECT DISTINCT ON (x.provider, x.source_type)
               data_type, x.provider, x.source_type, x.priority, 'junction', x.obj
        FROM (SELECT o.obj, junction._provider(o.obj) AS provider,
                     coalesce(o.obj ->> 'source_type', o.obj #>> '{source,type}', '') AS source_type,
                     CASE WHEN jsonb_typeof(o.obj -> 'priority') = 'number'
                          THEN (o.obj ->> 'priority')::numeric::integer
                          ELSE o.ord::integer END AS priority
              FROM jsonb_array_elements(answer) WITH ORDINALITY AS o(obj, ord)
              WHERE jsonb_typeof(o.obj) = 'object') AS x
        WHERE x.provider IS NOT NULL
        ORDER BY x.provider, x.source_type, x.priority;
        GET DIAGNOSTICS n = ROW_COUNT;
        total := total + n;
    END LOOP;
    RETURN total;
END
$fn$;
COMMENT ON FUNCTION junction_sync_source_priorities() IS
  'replace Junction''s rows of junction.source_priorities with GET /v2/team/source/priorities (each data_type); team rows stay; returns rows stored (then run junction_rebuild_daily())';

-- One row per user and day, one column per metric (the built-in metrics).
CREATE VIEW junction.daily_wide AS
SELECT d.user_id, d.calendar_date,
       max(d.value) FILTER (WHERE d.metric = 'steps') AS steps,
       max(d.value) FILTER (WHERE d.metric = 'calories_active') AS calories_active,
       max(d.value) FILTER (WHERE d.metric = 'calories_total') AS calories_total,
       max(d.value) FILTER (WHERE d.metric = 'calories_basal') AS calories_basal,
       max(d.value) FILTER (WHERE d.metric = 'distance') AS distance,
       max(d.value) FILTER (WHERE d.metric = 'floors_climbed') AS floors_climbed,
       max(d.value) FILTER (WHERE d.metric = 'sleep_total') AS sleep_total,
       max(d.value) FILTER (WHERE d.metric = 'sleep_deep') AS sleep_deep,
       max(d.value) FILTER (WHERE d.metric = 'sleep_rem') AS sleep_rem,
       max(d.value) FILTER (WHERE d.metric = 'sleep_light') AS sleep_light,
       max(d.value) FILTER (WHERE d.metric = 'sleep_awake') AS sleep_awake,
       max(d.value) FILTER (WHERE d.metric = 'sleep_efficiency') AS sleep_efficiency,
       max(d.value) FILTER (WHERE d.metric = 'sleep_score') AS sleep_score,
       max(d.value) FILTER (WHERE d.metric = 'resting_heart_rate') AS resting_heart_rate,
       max(d.value) FILTER (WHERE d.metric = 'hrv_average') AS hrv_average,
       max(d.value) FILTER (WHERE d.metric = 'respiratory_rate') AS respiratory_rate,
       max(d.value) FILTER (WHERE d.metric = 'heart_rate_average') AS heart_rate_average,
       max(d.value) FILTER (WHERE d.metric = 'heart_rate_min') AS heart_rate_min,
       max(d.value) FILTER (WHERE d.metric = 'heart_rate_max') AS heart_rate_max,
       max(d.value) FILTER (WHERE d.metric = 'weight') AS weight,
       max(d.value) FILTER (WHERE d.metric = 'body_fat') AS body_fat,
       max(d.value) FILTER (WHERE d.metric = 'workout_count') AS workout_count,
       max(d.value) FILTER (WHERE d.metric = 'workout_duration') AS workout_duration,
       max(d.value) FILTER (WHERE d.metric = 'glucose_average') AS glucose_average,
       max(d.value) FILTER (WHERE d.metric = 'blood_oxygen_average') AS blood_oxygen_average,
       max(d.value) FILTER (WHERE d.metric = 'stress_level_average') AS stress_level_average,
       max(d.value) FILTER (WHERE d.metric = 'vo2_max') AS vo2_max,
       max(d.value) FILTER (WHERE d.metric = 'water') AS water,
       max(d.updated_at) AS updated_at
FROM junction.daily AS d
GROUP BY d.user_id, d.calendar_date;
COMMENT ON VIEW junction.daily_wide IS
  'junction.daily pivoted for dashboards: one row per user and day, one column per built-in metric (units as in junction.daily_metrics)';

SELECT pg_extension_config_dump('junction.source_priorities', '');
SELECT pg_extension_config_dump('junction.daily_metrics', 'WHERE NOT builtin');
SELECT pg_extension_config_dump('junction.daily', '');
SELECT pg_extension_config_dump('junction.daily_parts', '');
SELECT pg_extension_config_dump('junction.daily_pending_hours', '');
SELECT pg_extension_config_dump('junction.daily_pending_days', '');

REVOKE ALL ON junction.source_priorities, junction.daily_metrics, junction.daily, junction.daily_parts, junction.daily_pending_hours, junction.daily_pending_days, junction.daily_wide FROM PUBLIC;
REVOKE ALL ON FUNCTION junction._aggregator_providers() FROM PUBLIC;
REVOKE ALL ON FUNCTION junction.default_source_rank(text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION junction.source_priority(text, text, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION junction._daily_enabled() FROM PUBLIC;
REVOKE ALL ON FUNCTION junction._daily_deferred() FROM PUBLIC;
REVOKE ALL ON FUNCTION junction._daily_touch(junction.daily_hour[], junction.daily_key[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION junction._daily_sql(text[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION junction._daily_refresh(junction.daily_key[], boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION junction._daily_parts_refresh(junction.daily_hour[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION junction._daily_summary_keys(junction.typing_item[], text) FROM PUBLIC;
REVOKE ALL ON FUNCTION junction._daily_flush(integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION junction_rebuild_daily(uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION junction_sync_source_priorities() FROM PUBLIC;
-- (junction.daily is built from the data already stored at the end of the script, after issue 12's
-- daily coverage section)

-- ---------------------------------------------------------------------------------------------
-- Backfill at fleet scale (issue 14): junction.backfill_workers workers, fair claims, page
-- checkpoints, junction.backfill_progress, the shared API pause after a 429.
-- ---------------------------------------------------------------------------------------------
ALTER TABLE junction.backfills
    ADD COLUMN cursor text,
    ADD COLUMN pages_done integer NOT NULL DEFAULT 0,
    ADD COLUMN fast boolean,
    ADD COLUMN started_at timestamptz,
    ADD COLUMN last_page_at timestamptz,
    ADD COLUMN claimed_by integer,
    ADD COLUMN run_rows bigint NOT NULL DEFAULT 0;
COMMENT ON COLUMN junction.backfills.cursor IS 'checkpoint: the next_cursor of the last page committed (null: the fetch starts from the first page); a crash, restart or failure resumes here';
COMMENT ON COLUMN junction.backfills.pages_done IS 'checkpoint: pages of [start_date, end_date] committed so far (rows_loaded counts their rows)';
COMMENT ON COLUMN junction.backfills.fast IS 'first-backfill fast path (plain INSERTs), decided at the first page: the user had no sample of the resource near the range';
COMMENT ON COLUMN junction.backfills.started_at IS 'when the current (or last) run claimed the job';
COMMENT ON COLUMN junction.backfills.last_page_at IS 'when the last page was committed';
COMMENT ON COLUMN junction.backfills.claimed_by IS 'pid of the backend running the job (a running job whose backend is gone is resumed)';
COMMENT ON COLUMN junction.backfills.run_rows IS 'rows the current (or last) run loaded since it claimed the job (rows_loaded counts every run since the job was queued)';
ALTER TABLE junction.workout_streams ADD COLUMN claimed_by integer;
COMMENT ON COLUMN junction.workout_streams.claimed_by IS 'pid of the backend fetching the stream (a running fetch whose backend is gone is retried)';
ALTER TABLE junction.lab_orders ADD COLUMN result_claimed_by integer;
COMMENT ON COLUMN junction.lab_orders.result_claimed_by IS 'pid of the backend fetching the results (a running fetch whose backend is gone is retried)';
-- a job left running by 0.2.0's single worker has no claimant: the next worker start resumes it
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
        received_seq = excluded.received_seq, data = excluded.data,
        cursor = NULL, pages_done = 0, fast = NULL, claimed_by = NULL
    WHERE excluded.received_seq > t.received_seq;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$fn$;
COMMENT ON FUNCTION junction._upsert_backfills(junction.typing_item[]) IS
  'record completed historical pulls (fetch_status pending); the latest received wins per user, provider, resource';
CREATE OR REPLACE FUNCTION junction._backfill_claim()
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
    SET result_fetch_status = 'running', result_attempts = t.result_attempts + 1,
        result_claimed_by = pg_backend_pid()
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
    WITH due AS (
        SELECT DISTINCT b.user_id
        FROM junction.backfills AS b
        WHERE b.fetch_status = 'pending'
          AND (b.next_attempt_at IS NULL OR b.next_attempt_at <= clock_timestamp() OR b.attempts = 0)
    ), users AS (
        SELECT r.user_id, count(*) FILTER (WHERE r.fetch_status = 'running') AS running,
               max(r.started_at) AS last_started
        FROM junction.backfills AS r
        WHERE r.user_id IN (SELECT due.user_id FROM due)
        GROUP BY r.user_id
    ), c AS (
        SELECT b.user_id, b.provider, b.resource
        FROM junction.backfills AS b
        JOIN users AS u ON u.user_id = b.user_id
        WHERE b.fetch_status = 'pending'
          AND (b.next_attempt_at IS NULL OR b.next_attempt_at <= clock_timestamp() OR b.attempts = 0)
        ORDER BY u.running, u.last_started NULLS FIRST, coalesce(b.next_attempt_at, b.completed_at),
                 b.user_id, b.provider, b.resource
        LIMIT 1
        FOR UPDATE OF b SKIP LOCKED
    )
    UPDATE junction.backfills AS t
    SET fetch_status = 'running', attempts = t.attempts + 1, updated_at = now(),
        started_at = clock_timestamp(), claimed_by = pg_backend_pid(), run_rows = 0
    FROM c
    WHERE t.user_id = c.user_id AND t.provider = c.provider AND t.resource = c.resource
    RETURNING 'range'::text, t.user_id, t.provider, t.resource, t.start_date, t.end_date, NULL::uuid, NULL::uuid;
    IF FOUND THEN
        RETURN;
    END IF;
    RETURN QUERY
    UPDATE junction.workout_streams AS t
    SET fetch_status = 'running', attempts = t.attempts + 1, updated_at = now(), claimed_by = pg_backend_pid()
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
  'claim one due backfill job (FOR UPDATE SKIP LOCKED; fewest running jobs per user first, then the user served longest ago), mark it running for this backend, count the attempt; none while no API key is configured';
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
            FROM junction._timeseries_page(res, user_id, start_date, end_date, provider, b.cursor) AS t;
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
        UPDATE junction.backfills AS x
        SET cursor = nc, pages_done = x.pages_done + 1, rows_loaded = coalesce(x.rows_loaded, 0) + n,
            run_rows = x.run_rows + n,
            fast = use_fast, last_page_at = clock_timestamp(), attempts = 1,
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
CREATE OR REPLACE FUNCTION junction._backfill_run(kind text, user_id uuid, provider text, resource text,
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

CREATE OR REPLACE FUNCTION junction._backfill_run(job junction.backfill_job)
RETURNS bigint
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT CASE WHEN job.kind = 'lab_result'
                   THEN junction._lab_result_run(job.user_id, junction._require(job.order_id, 'order_id'))
                   ELSE junction._backfill_run(job.kind, job.user_id, job.provider, job.resource,
                                               job.start_date, job.end_date, job.workout_id) END $$;
COMMENT ON FUNCTION junction._backfill_run(junction.backfill_job) IS
  'junction._backfill_run for a claimed job row (a lab_result job: junction._lab_result_run)';
CREATE OR REPLACE FUNCTION junction._backfill_reset_running()
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
CREATE FUNCTION junction._api_pause(OUT paused_until timestamptz, OUT pauses bigint)
RETURNS record
AS 'MODULE_PATHNAME', 'junction_api_pause' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION junction._api_pause() IS
  'until when every data API request waits after a 429 (null: no pause), and how many 429s set or extended the pause since the server started';
REVOKE ALL ON FUNCTION junction._backfill_step(text, uuid, text, text, timestamptz, timestamptz, uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION junction._backfill_step(junction.backfill_job) FROM PUBLIC;
REVOKE ALL ON FUNCTION junction._api_pause() FROM PUBLIC;
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
REVOKE ALL ON junction.backfill_progress FROM PUBLIC;
CREATE OR REPLACE VIEW junction.status AS
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

-- junction_sync for long ranges, as checkpointed backfill jobs
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
REVOKE ALL ON FUNCTION junction_sync_queue(uuid, text[], timestamptz, timestamptz, text) FROM PUBLIC;

-- ---------------------------------------------------------------------------------------------
-- issue 12 (daily coverage): every numeric timeseries in junction.daily (38_daily.sql). A metric
-- reads a part of its samples (junction.daily_metrics.part: their value, the value of one type,
-- or a numeric field of extra), kept apart in junction.daily_parts; new metrics for blood
-- pressure, cholesterol, IgE/IgG and workout_duration samples; stand_hour counts the stood hours
-- only; a timeseries metric's value_sql applies to the reduced number; junction.daily_wide has a
-- column for every metric. junction.daily is built once, at the end of the script.
-- ---------------------------------------------------------------------------------------------
ALTER TABLE junction.daily_metrics ADD COLUMN part text NOT NULL DEFAULT ''
    CONSTRAINT daily_metrics_part_check CHECK (part ~ '^(type=[^\n]{0,255}|extra\.[a-z_][a-z0-9_]{0,62})?$');
COMMENT ON COLUMN junction.daily_metrics.value_sql IS
  'summaries: SQL expression over the typed row t; timeseries: SQL expression over t.value, the day''s reduced number (t.value as is, or e.g. t.value * 60 for another unit)';
COMMENT ON COLUMN junction.daily_metrics.part IS
  'timeseries: which number of a sample the metric reduces: empty = its value (any type); type=<t> = the value of the samples of type t; extra.<field> = a numeric field of extra (blood_pressure''s systolic, diastolic)';
DELETE FROM junction.daily_metrics WHERE builtin AND metric = 'stand_hour' AND resource = 'stand_hour';
-- timeseries whose number is not simply the samples' value: blood pressure carries two (systolic
-- and diastolic, in extra); a cholesterol sample's type says which lipid it measures; only the
-- stood hours of stand_hour count; IgE and IgG readings are per allergen (the type), and the
-- day's highest one is the figure (one allergen's is a metric with part 'type=<allergen>');
-- workout_duration samples are minutes, the workouts summary's workout_duration seconds.
INSERT INTO junction.daily_metrics (metric, resource, value_sql, aggregate, unit, rank, part, builtin)
SELECT m.*, true FROM (VALUES
    ('blood_pressure_systolic',  'blood_pressure', 't.value', 'avg', 'mmHg',   1, 'extra.systolic'),
    ('blood_pressure_diastolic', 'blood_pressure', 't.value', 'avg', 'mmHg',   1, 'extra.diastolic'),
    ('cholesterol_total',        'cholesterol',    't.value', 'avg', 'mmol/L', 1, 'type=total'),
    ('cholesterol_ldl',          'cholesterol',    't.value', 'avg', 'mmol/L', 1, 'type=ldl'),
    ('cholesterol_hdl',          'cholesterol',    't.value', 'avg', 'mmol/L', 1, 'type=hdl'),
    ('triglycerides',            'cholesterol',    't.value', 'avg', 'mmol/L', 1, 'type=triglycerides'),
    ('ige_max',                  'ige',            't.value', 'max', 'FSU',    1, ''),
    ('igg_max',                  'igg',            't.value', 'max', 'FSU',    1, ''),
    ('stand_hour',               'stand_hour',     't.value', 'sum', 'count',  1, 'type=stood'),
    ('workout_duration',         'workout_duration', 't.value * 60', 'sum', 's', 2, '')
) AS m(metric, resource, value_sql, aggregate, unit, rank, part);

ALTER TABLE junction.daily_parts ADD COLUMN part text NOT NULL DEFAULT '';
ALTER TABLE junction.daily_parts DROP CONSTRAINT daily_parts_pkey,
    ADD CONSTRAINT daily_parts_pkey PRIMARY KEY (user_id, resource, hour, calendar_date, provider, source_type, part);
COMMENT ON COLUMN junction.daily_parts.part IS 'which number of the samples (junction.daily_metrics.part): empty = their value';

-- The number a part (junction.daily_metrics.part) takes from one sample, or null: its value (part
-- empty), its value if its type is t (type=t), a numeric field of its extra (extra.<field>).
-- Inlined into the recomputations (hence no SET clause, and every name qualified).
CREATE FUNCTION junction._daily_part_value(part text, type text, value double precision, extra jsonb)
RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $fn$
    SELECT CASE
             WHEN part OPERATOR(pg_catalog.=) ''::pg_catalog.text THEN value
             WHEN pg_catalog.starts_with(part, 'type='::pg_catalog.text) THEN
               CASE WHEN type OPERATOR(pg_catalog.=) pg_catalog.substr(part, 6) THEN value END
             WHEN pg_catalog.starts_with(part, 'extra.'::pg_catalog.text)
                  AND pg_catalog.jsonb_typeof(extra OPERATOR(pg_catalog.->) pg_catalog.substr(part, 7))
                      OPERATOR(pg_catalog.=) 'number'::pg_catalog.text THEN
               (extra OPERATOR(pg_catalog.->>) pg_catalog.substr(part, 7))::pg_catalog.float8
           END
$fn$;
COMMENT ON FUNCTION junction._daily_part_value(text, text, double precision, jsonb) IS
  'the number a junction.daily_metrics part takes from a sample (part, type, value, extra), or null';
REVOKE ALL ON FUNCTION junction._daily_part_value(text, text, double precision, jsonb) FROM PUBLIC;

CREATE OR REPLACE FUNCTION junction._daily_sql(resources text[])
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    cands          text;
    has_priorities boolean := EXISTS (SELECT FROM junction.source_priorities);
BEGIN
    -- One branch per resource: each (provider, source type) of a key's day reduced once to every
    -- metric of the resource, then one row per metric the keys ask for on that day.
    SELECT string_agg(format($q$
    SELECT a.user_id, a.calendar_date, v.metric, %1$L::text AS resource, %2$L::text AS kind,
           v.rank, a.provider COLLATE "default", a.source_type COLLATE "default", v.value
    FROM (SELECT d.user_id, d.calendar_date, t.provider COLLATE "C" AS provider,
                 t.source_type COLLATE "C" AS source_type, max(d.metrics) AS metrics, %3$s
          FROM (SELECT k.user_id, k.calendar_date, array_agg(k.metric) AS metrics
                FROM k WHERE k.metric IN (%4$s) GROUP BY k.user_id, k.calendar_date) AS d
          JOIN %5$s AS t ON %6$s
          GROUP BY d.user_id, d.calendar_date, t.provider COLLATE "C", t.source_type COLLATE "C") AS a
    CROSS JOIN LATERAL (VALUES %7$s) AS v(metric, rank, value)
    WHERE v.metric = ANY (a.metrics)$q$,
               x.resource, x.kind, x.aggs, x.metrics, x.tbl, x.cond, x.vals),
           E'\n    UNION ALL' ORDER BY x.resource, x.part)
      INTO cands
    FROM (
        SELECT m.resource, r.kind, m.part,
               string_agg(format('%s AS %I', CASE
                 -- a timeseries day combines its hours of junction.daily_parts
                 WHEN r.kind = 'timeseries' THEN CASE m.aggregate
                   WHEN 'sum' THEN 'sum(t.sum)'
                   WHEN 'avg' THEN 'sum(t.sum) / nullif(sum(t.n), 0)'
                   WHEN 'min' THEN 'min(t.min)'
                   WHEN 'max' THEN 'max(t.max)'
                   WHEN 'count' THEN 'sum(t.n)::double precision'
                   ELSE '(array_agg(t.last_value ORDER BY t.hour DESC))[1]'
                 END
                 WHEN m.aggregate = 'pick' THEN
                   format('(array_agg((%1$s)::double precision ORDER BY %2$s) FILTER (WHERE (%1$s) IS NOT NULL))[1]',
                          m.value_sql, m.order_sql)
                 WHEN m.aggregate = 'count' THEN format('count(NULLIF(%s, false))::double precision', m.value_sql)
                 ELSE format('%s((%s)::double precision)', m.aggregate, m.value_sql)
               END, 'm_' || m.metric), ', ' ORDER BY m.metric) AS aggs,
               -- a timeseries metric's value_sql is over t.value, the reduced number
               string_agg(format('(%L, %s, %s)', m.metric, m.rank, CASE
                 WHEN r.kind = 'timeseries' AND m.value_sql <> 't.value' THEN
                   format('(SELECT (%s)::double precision FROM (SELECT a.%I AS value) AS t)', m.value_sql, 'm_' || m.metric)
                 ELSE format('a.%I', 'm_' || m.metric)
               END), ', ' ORDER BY m.metric) AS vals,
               CASE r.kind WHEN 'timeseries' THEN 'junction.daily_parts'
                           ELSE format('junction.%I', min(r.table_name)) END AS tbl,
               CASE r.kind
                 WHEN 'timeseries' THEN format(
                   't.user_id = d.user_id AND t.resource = %L AND t.calendar_date = d.calendar_date AND t.part = %L',
                   m.resource, m.part)
                 ELSE 't.user_id = d.user_id AND t.calendar_date = d.calendar_date'
               END AS cond,
               string_agg(quote_literal(m.metric), ', ' ORDER BY m.metric) AS metrics
        FROM junction.daily_metrics AS m
        JOIN junction.resources AS r ON r.name = m.resource AND r.kind IN ('summary', 'timeseries')
        WHERE m.metric IN (SELECT f.metric FROM junction.daily_metrics AS f WHERE f.resource = ANY (resources))
        -- one branch per resource and part (a timeseries' parts are rows of junction.daily_parts;
        -- a summary's metrics read its typed rows, and part means nothing to them)
        GROUP BY m.resource, r.kind, m.part
    ) AS x;

    -- every key also gets a row without a value: it wins only when no candidate has one, and then
    -- the key's junction.daily row goes
    RETURN format($q$
WITH k AS MATERIALIZED (
    SELECT DISTINCT k.user_id, k.calendar_date, m.metric
    FROM unnest($1::junction.daily_key[]) AS k
    JOIN junction.daily_metrics AS m ON m.resource = k.resource
    WHERE k.user_id IS NOT NULL AND k.calendar_date IS NOT NULL
), c AS (%1$s
    SELECT k.user_id, k.calendar_date, k.metric, NULL::text, NULL::text, NULL::integer, NULL::text,
           NULL::text, NULL::double precision
    FROM k
), w AS MATERIALIZED (
    SELECT DISTINCT ON (c.user_id, c.calendar_date, c.metric COLLATE "C")
           c.user_id, c.calendar_date, c.metric, nullif(c.value, 'NaN') AS value, c.resource, c.provider,
           c.source_type,
           count(nullif(c.value, 'NaN')) OVER (PARTITION BY c.user_id, c.calendar_date, c.metric COLLATE "C") AS candidates
    FROM c%2$s
    -- names in "C" order: the same winner whatever the database's collation
    ORDER BY c.user_id, c.calendar_date, c.metric COLLATE "C", nullif(c.value, 'NaN') IS NULL,
             %3$s NULLS LAST, junction.default_source_rank(c.provider, c.source_type), c.rank,
             c.provider COLLATE "C", c.source_type COLLATE "C", c.resource COLLATE "C"
), up AS (
    INSERT INTO junction.daily AS d
        (user_id, calendar_date, metric, value, unit, provider, source_type, resource, candidates, updated_at)
    SELECT w.user_id, w.calendar_date, w.metric, w.value, m.unit, w.provider, w.source_type, w.resource,
           w.candidates, now()
    FROM w JOIN junction.daily_metrics AS m ON m.metric = w.metric AND m.resource = w.resource
    WHERE w.value IS NOT NULL
    ORDER BY w.user_id, w.calendar_date, w.metric
    ON CONFLICT (user_id, calendar_date, metric) DO UPDATE
    SET value = excluded.value, unit = excluded.unit, provider = excluded.provider,
        source_type = excluded.source_type, resource = excluded.resource,
        candidates = excluded.candidates, updated_at = excluded.updated_at
    WHERE (d.value, d.unit, d.provider, d.source_type, d.resource, d.candidates)
          IS DISTINCT FROM (excluded.value, excluded.unit, excluded.provider, excluded.source_type,
                            excluded.resource, excluded.candidates)
    RETURNING 1
), gone AS (
    DELETE FROM junction.daily AS d
    USING w
    WHERE w.value IS NULL
      AND d.user_id = w.user_id AND d.calendar_date = w.calendar_date AND d.metric = w.metric
    RETURNING 1
)
SELECT (SELECT count(*) FROM up) + (SELECT count(*) FROM gone)$q$, coalesce(cands || E'\n    UNION ALL', ''),
    CASE WHEN has_priorities THEN $q$
    -- the priority that applies (as junction.source_priority says)
    LEFT JOIN LATERAL (
        SELECT p.priority
        FROM junction.source_priorities AS p
        WHERE p.resource = ANY (ARRAY[c.resource, CASE WHEN c.kind = 'timeseries' THEN 'timeseries' END])
          AND p.provider = c.provider
          AND (p.source_type = c.source_type OR p.source_type = '')
        ORDER BY p.resource = c.resource DESC, p.source_type <> '' DESC, p.origin = 'team' DESC
        LIMIT 1) AS pr ON c.value IS NOT NULL$q$ ELSE '' END,
    CASE WHEN has_priorities THEN 'pr.priority' ELSE 'NULL::integer' END);
END
$fn$;
CREATE OR REPLACE FUNCTION junction._daily_parts_refresh(hours junction.daily_hour[])
RETURNS junction.daily_key[]
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'
AS $fn$
DECLARE
    gone  junction.daily_key[];
    fresh junction.daily_key[];
BEGIN
    IF hours IS NULL OR cardinality(hours) = 0 THEN
        RETURN NULL;
    END IF;
    -- the hours' rows, recomputed: changed ones updated in place (a HOT update: no indexed column
    -- changes), new ones inserted; unchanged ones left alone, and their days with them
    WITH i AS (
        INSERT INTO junction.daily_parts AS p
            (user_id, resource, hour, calendar_date, provider, source_type, part, n, sum, min, max, last_value)
        SELECT g.user_id, g.resource, g.hour, g.calendar_date, g.provider, g.source_type, g.part, g.n, g.sum, g.min,
               g.max,
               -- the last value, only for the parts a metric picks it from
               CASE WHEN (g.resource, g.part) IN (SELECT m.resource, m.part FROM junction.daily_metrics AS m
                                                  WHERE m.aggregate = 'pick') THEN
                 (SELECT l.value
                  FROM (SELECT junction._daily_part_value(g.part, l.type, l.value, l.extra) AS value, l.time, l.type,
                               l.workout_id
                        FROM junction.samples AS l
                        WHERE l.user_id = g.user_id AND l.resource = g.resource
                          AND l.time >= g.hour AND l.time < g.hour + interval '1 hour'
                          AND l.provider = g.provider AND l.source_type = g.source_type
                          AND coalesce(l.local_time, l.time AT TIME ZONE 'UTC')::date = g.calendar_date
                        OFFSET 0) AS l
                  WHERE l.value IS NOT NULL
                  ORDER BY l.time DESC, l.type DESC, l.workout_id DESC LIMIT 1)
               END
        FROM (SELECT h.user_id, h.resource COLLATE "C" AS resource, h.hour, s.calendar_date,
                     s.provider COLLATE "C" AS provider, s.source_type COLLATE "C" AS source_type,
                     h.part COLLATE "C" AS part,
                     count(*) AS n, sum(s.value) AS sum, min(s.value) AS min, max(s.value) AS max
              FROM (SELECT DISTINCT h.user_id, h.resource, h.hour, mp.part
                    FROM unnest(hours) AS h
                    -- the parts the resource's metrics read (most have one: the samples' value)
                    JOIN junction.daily_metrics AS mp ON mp.resource = h.resource) AS h
              -- LATERAL: one range scan of junction.samples' key per hour, however the batch is estimated
              CROSS JOIN LATERAL (
                  SELECT coalesce(s.local_time, s.time AT TIME ZONE 'UTC')::date AS calendar_date,
                         s.provider, s.source_type, junction._daily_part_value(h.part, s.type, s.value, s.extra) AS value
                  FROM junction.samples AS s
                  WHERE s.user_id = h.user_id AND s.resource = h.resource
                    AND s.time >= h.hour AND s.time < h.hour + interval '1 hour'
                  OFFSET 0) AS s
              WHERE s.value IS NOT NULL
              -- "C": grouping sorts by byte, not by the database's collation
              GROUP BY h.user_id, h.resource COLLATE "C", h.hour, s.calendar_date, s.provider COLLATE "C",
                       s.source_type COLLATE "C", h.part COLLATE "C") AS g
        ORDER BY 1, 2, 3, 4, 5, 6, 7
        ON CONFLICT (user_id, resource, hour, calendar_date, provider, source_type, part) DO UPDATE
        SET n = excluded.n, sum = excluded.sum, min = excluded.min, max = excluded.max,
            last_value = excluded.last_value
        WHERE (p.n, p.sum, p.min, p.max, p.last_value)
              IS DISTINCT FROM (excluded.n, excluded.sum, excluded.min, excluded.max, excluded.last_value)
        RETURNING p.user_id, p.calendar_date, p.resource
    )
    SELECT array_agg(ROW(x.user_id, x.calendar_date, x.resource)::junction.daily_key) INTO fresh
    FROM (SELECT DISTINCT i.user_id, i.calendar_date, i.resource FROM i) AS x;
    -- rows of those hours without a sample left (values gone, or moved to another local day)
    WITH d AS (
        DELETE FROM junction.daily_parts AS p
        USING (SELECT DISTINCT h.user_id, h.resource, h.hour FROM unnest(hours) AS h) AS h
        WHERE p.user_id = h.user_id AND p.resource = h.resource AND p.hour = h.hour
          AND NOT EXISTS (SELECT FROM junction.samples AS s
                          WHERE s.user_id = p.user_id AND s.resource = p.resource
                            AND s.time >= p.hour AND s.time < p.hour + interval '1 hour'
                            AND s.provider = p.provider AND s.source_type = p.source_type
                            AND junction._daily_part_value(p.part, s.type, s.value, s.extra) IS NOT NULL
                            AND coalesce(s.local_time, s.time AT TIME ZONE 'UTC')::date = p.calendar_date)
        RETURNING p.user_id, p.calendar_date, p.resource
    )
    SELECT array_agg(ROW(x.user_id, x.calendar_date, x.resource)::junction.daily_key) INTO gone
    FROM (SELECT DISTINCT d.user_id, d.calendar_date, d.resource FROM d) AS x;
    RETURN coalesce(gone, '{}'::junction.daily_key[]) || coalesce(fresh, '{}'::junction.daily_key[]);
END
$fn$;
CREATE OR REPLACE FUNCTION junction_rebuild_daily(user_id uuid DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'
AS $fn$
-- The EXECUTEd text names summary tables from the registry (quote_ident); values are passed with USING.
-- @plpgsql_check_options: security_warnings = off
DECLARE
    uid   uuid := user_id;
    keys  junction.daily_key[] := '{}'::junction.daily_key[];
    more  junction.daily_key[];
    res   record;
    n     bigint;
    users text;
    u     uuid;
BEGIN
    IF uid IS NULL THEN
        -- every user, one at a time (each user's days fit in memory, whatever the table sizes)
        DELETE FROM junction.daily_parts;
        DELETE FROM junction.daily;
        GET DIAGNOSTICS n = ROW_COUNT;
        SELECT string_agg(format('SELECT t.user_id FROM junction.%I AS t', x.table_name), ' UNION ')
          INTO users
        FROM (SELECT DISTINCT r.table_name FROM junction.resources AS r
              JOIN junction.daily_metrics AS m ON m.resource = r.name
              WHERE r.kind IN ('summary', 'timeseries') ORDER BY 1) AS x;
        FOR u IN EXECUTE format('SELECT x.user_id FROM (%s) AS x ORDER BY 1', coalesce(users, 'SELECT NULL::uuid WHERE false'))
        LOOP
            n := n + @extschema@.junction_rebuild_daily(u);
        END LOOP;
        RETURN n;
    END IF;
    -- the samples' hours, all of them (as junction._daily_parts_refresh computes them)
    DELETE FROM junction.daily_parts AS p WHERE p.user_id = uid;
    INSERT INTO junction.daily_parts AS p
        (user_id, resource, hour, calendar_date, provider, source_type, part, n, sum, min, max, last_value)
    SELECT s.user_id, s.resource, date_trunc('hour', s.time), coalesce(s.local_time, s.time AT TIME ZONE 'UTC')::date,
           s.provider, s.source_type, s.part, count(*), sum(s.value ORDER BY s.time, s.type, s.workout_id),
           min(s.value), max(s.value),
           (array_agg(s.value ORDER BY s.time DESC, s.type DESC, s.workout_id DESC)
              FILTER (WHERE (s.resource, s.part) IN (SELECT m.resource, m.part FROM junction.daily_metrics AS m
                                                     WHERE m.aggregate = 'pick')))[1]
    FROM (SELECT s.user_id, s.resource, s.time, s.local_time, s.provider, s.source_type, s.type, s.workout_id, mp.part,
                 junction._daily_part_value(mp.part, s.type, s.value, s.extra) AS value
          FROM junction.samples AS s
          -- the parts the resource's metrics read
          JOIN (SELECT DISTINCT m.resource, m.part FROM junction.daily_metrics AS m) AS mp ON mp.resource = s.resource
          WHERE s.user_id = uid
          OFFSET 0) AS s
    WHERE s.value IS NOT NULL
    GROUP BY s.user_id, s.resource, date_trunc('hour', s.time), coalesce(s.local_time, s.time AT TIME ZONE 'UTC')::date,
             s.provider, s.source_type, s.part;
    FOR res IN SELECT DISTINCT r.name, r.kind, r.table_name
               FROM junction.resources AS r
               JOIN junction.daily_metrics AS m ON m.resource = r.name
               WHERE r.kind IN ('summary', 'timeseries')
               ORDER BY r.name
    LOOP
        IF res.kind = 'summary' THEN
            EXECUTE format('SELECT array_agg(DISTINCT ROW(t.user_id, t.calendar_date, $2)::junction.daily_key)
                            FROM junction.%I AS t
                            WHERE t.calendar_date IS NOT NULL AND t.user_id = $1', res.table_name)
              INTO more USING uid, res.name;
        ELSE
            SELECT array_agg(DISTINCT ROW(p.user_id, p.calendar_date, res.name)::junction.daily_key)
              INTO more
            FROM junction.daily_parts AS p
            WHERE p.resource = res.name AND p.user_id = uid;
        END IF;
        keys := keys || coalesce(more, '{}'::junction.daily_key[]);
    END LOOP;
    -- days without any candidate left (a metric removed, rows deleted) go too
    DELETE FROM junction.daily AS d WHERE d.user_id = uid;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n + junction._daily_refresh(keys, true);
END
$fn$;
COMMENT ON FUNCTION junction_rebuild_daily(uuid) IS
  'recompute junction.daily from the typed tables (every user, or one): after changing junction.source_priorities or junction.daily_metrics; returns rows deleted plus rows written';
DROP VIEW junction.daily_wide;
-- One row per user and day, one column per metric of junction.daily_metrics (the built-in ones).
-- The column list is the registry's metrics: the daily regress test fails when a metric has no
-- column here or a column no metric (a metric you add yourself is in junction.daily, and in a
-- view of your own).
CREATE VIEW junction.daily_wide AS
SELECT d.user_id, d.calendar_date,
       max(d.value) FILTER (WHERE d.metric = 'steps') AS steps,
       max(d.value) FILTER (WHERE d.metric = 'calories_active') AS calories_active,
       max(d.value) FILTER (WHERE d.metric = 'calories_total') AS calories_total,
       max(d.value) FILTER (WHERE d.metric = 'calories_basal') AS calories_basal,
       max(d.value) FILTER (WHERE d.metric = 'distance') AS distance,
       max(d.value) FILTER (WHERE d.metric = 'floors_climbed') AS floors_climbed,
       max(d.value) FILTER (WHERE d.metric = 'sleep_total') AS sleep_total,
       max(d.value) FILTER (WHERE d.metric = 'sleep_deep') AS sleep_deep,
       max(d.value) FILTER (WHERE d.metric = 'sleep_rem') AS sleep_rem,
       max(d.value) FILTER (WHERE d.metric = 'sleep_light') AS sleep_light,
       max(d.value) FILTER (WHERE d.metric = 'sleep_awake') AS sleep_awake,
       max(d.value) FILTER (WHERE d.metric = 'sleep_efficiency') AS sleep_efficiency,
       max(d.value) FILTER (WHERE d.metric = 'sleep_score') AS sleep_score,
       max(d.value) FILTER (WHERE d.metric = 'resting_heart_rate') AS resting_heart_rate,
       max(d.value) FILTER (WHERE d.metric = 'hrv_average') AS hrv_average,
       max(d.value) FILTER (WHERE d.metric = 'respiratory_rate') AS respiratory_rate,
       max(d.value) FILTER (WHERE d.metric = 'heart_rate_average') AS heart_rate_average,
       max(d.value) FILTER (WHERE d.metric = 'heart_rate_min') AS heart_rate_min,
       max(d.value) FILTER (WHERE d.metric = 'heart_rate_max') AS heart_rate_max,
       max(d.value) FILTER (WHERE d.metric = 'weight') AS weight,
       max(d.value) FILTER (WHERE d.metric = 'body_fat') AS body_fat,
       max(d.value) FILTER (WHERE d.metric = 'workout_count') AS workout_count,
       max(d.value) FILTER (WHERE d.metric = 'workout_duration') AS workout_duration,
       max(d.value) FILTER (WHERE d.metric = 'glucose_average') AS glucose_average,
       max(d.value) FILTER (WHERE d.metric = 'blood_oxygen_average') AS blood_oxygen_average,
       max(d.value) FILTER (WHERE d.metric = 'stress_level_average') AS stress_level_average,
       max(d.value) FILTER (WHERE d.metric = 'vo2_max') AS vo2_max,
       max(d.value) FILTER (WHERE d.metric = 'water') AS water,
       max(d.value) FILTER (WHERE d.metric = 'body_temperature') AS body_temperature,
       max(d.value) FILTER (WHERE d.metric = 'body_temperature_delta') AS body_temperature_delta,
       max(d.value) FILTER (WHERE d.metric = 'caffeine') AS caffeine,
       max(d.value) FILTER (WHERE d.metric = 'carbohydrates') AS carbohydrates,
       max(d.value) FILTER (WHERE d.metric = 'mindfulness_minutes') AS mindfulness_minutes,
       max(d.value) FILTER (WHERE d.metric = 'daylight_exposure') AS daylight_exposure,
       max(d.value) FILTER (WHERE d.metric = 'stand_duration') AS stand_duration,
       max(d.value) FILTER (WHERE d.metric = 'wheelchair_push') AS wheelchair_push,
       max(d.value) FILTER (WHERE d.metric = 'insulin_injection') AS insulin_injection,
       max(d.value) FILTER (WHERE d.metric = 'handwashing') AS handwashing,
       max(d.value) FILTER (WHERE d.metric = 'inhaler_usage') AS inhaler_usage,
       max(d.value) FILTER (WHERE d.metric = 'fall') AS fall,
       max(d.value) FILTER (WHERE d.metric = 'heart_rate_alert') AS heart_rate_alert,
       max(d.value) FILTER (WHERE d.metric = 'sleep_apnea_alert') AS sleep_apnea_alert,
       max(d.value) FILTER (WHERE d.metric = 'sleep_breathing_disturbance') AS sleep_breathing_disturbance,
       max(d.value) FILTER (WHERE d.metric = 'workout_distance') AS workout_distance,
       max(d.value) FILTER (WHERE d.metric = 'workout_swimming_stroke') AS workout_swimming_stroke,
       max(d.value) FILTER (WHERE d.metric = 'afib_burden') AS afib_burden,
       max(d.value) FILTER (WHERE d.metric = 'uv_exposure') AS uv_exposure,
       max(d.value) FILTER (WHERE d.metric = 'basal_body_temperature') AS basal_body_temperature,
       max(d.value) FILTER (WHERE d.metric = 'heart_rate_recovery_one_minute') AS heart_rate_recovery_one_minute,
       max(d.value) FILTER (WHERE d.metric = 'body_mass_index') AS body_mass_index,
       max(d.value) FILTER (WHERE d.metric = 'lean_body_mass') AS lean_body_mass,
       max(d.value) FILTER (WHERE d.metric = 'waist_circumference') AS waist_circumference,
       max(d.value) FILTER (WHERE d.metric = 'forced_expiratory_volume_1') AS forced_expiratory_volume_1,
       max(d.value) FILTER (WHERE d.metric = 'forced_vital_capacity') AS forced_vital_capacity,
       max(d.value) FILTER (WHERE d.metric = 'peak_expiratory_flow_rate') AS peak_expiratory_flow_rate,
       max(d.value) FILTER (WHERE d.metric = 'blood_pressure_systolic') AS blood_pressure_systolic,
       max(d.value) FILTER (WHERE d.metric = 'blood_pressure_diastolic') AS blood_pressure_diastolic,
       max(d.value) FILTER (WHERE d.metric = 'cholesterol_total') AS cholesterol_total,
       max(d.value) FILTER (WHERE d.metric = 'cholesterol_ldl') AS cholesterol_ldl,
       max(d.value) FILTER (WHERE d.metric = 'cholesterol_hdl') AS cholesterol_hdl,
       max(d.value) FILTER (WHERE d.metric = 'triglycerides') AS triglycerides,
       max(d.value) FILTER (WHERE d.metric = 'ige_max') AS ige_max,
       max(d.value) FILTER (WHERE d.metric = 'igg_max') AS igg_max,
       max(d.value) FILTER (WHERE d.metric = 'stand_hour') AS stand_hour,
       max(d.updated_at) AS updated_at
FROM junction.daily AS d
GROUP BY d.user_id, d.calendar_date;
COMMENT ON VIEW junction.daily_wide IS
  'junction.daily pivoted for dashboards: one row per user and day, one column per built-in metric (units as in junction.daily_metrics)';
REVOKE ALL ON junction.daily_wide FROM PUBLIC;

-- ---------------------------------------------------------------------------------------------
-- Scaling out with Citus (issue 10): junction.events keyed by (user_id, svix_id) like every
-- per-user table, the writes made valid on distributed tables, junction_distribute().
-- ---------------------------------------------------------------------------------------------
-- events 0.2.0 stored without a user (untyped families) get the nil uuid: their defined home
UPDATE junction.events SET user_id = '00000000-0000-0000-0000-000000000000' WHERE user_id IS NULL;
ALTER TABLE junction.events DROP CONSTRAINT events_pkey;
ALTER TABLE junction.events ALTER COLUMN user_id SET NOT NULL;
ALTER TABLE junction.events ADD CONSTRAINT events_pkey PRIMARY KEY (user_id, svix_id);
-- the sample rows take the resources' value kinds from the caller (they read no table)
DROP FUNCTION junction._sample_rows(junction.typing_item[]);
-- the fields a timeseries group's samples share, one function for the SQL path and the bulk
-- loader of first backfills (issue 14)
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

CREATE FUNCTION junction._insert_new_samples(groups junction.sample_group[],
                                             OUT user_id uuid, OUT resource text,
                                             OUT hour timestamptz, OUT n bigint)
RETURNS SETOF record
LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 'junction_insert_new_samples';
COMMENT ON FUNCTION junction._insert_new_samples(junction.sample_group[]) IS
  'type, dedupe and bulk-insert the samples of timeseries groups whose keys are all new; returns the (user, resource, hour) written with their row counts';

CREATE FUNCTION junction._samples_bulk_ok()
RETURNS boolean
LANGUAGE C STABLE
AS 'MODULE_PATHNAME', 'junction_samples_bulk_ok';
COMMENT ON FUNCTION junction._samples_bulk_ok() IS
  'true when junction._insert_new_samples may load junction.samples (no trigger, rule, row security or Citus on it)';

REVOKE ALL ON FUNCTION junction._sample_groups(junction.typing_item[], jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION junction._insert_new_samples(junction.sample_group[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION junction._samples_bulk_ok() FROM PUBLIC;
-- first backfills read each page's samples from its text (issue 14)
CREATE FUNCTION junction._api_page(path text, query jsonb DEFAULT NULL)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'junction_api_page' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION junction._api_page(text, jsonb) IS
  'GET one timeseries page as jsonb with its groups'' data arrays left in its text (read by the bulk loader); otherwise as junction_api';

CREATE FUNCTION junction._page_from_text(body text)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'junction_page_from_text' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION junction._page_from_text(text) IS
  'a timeseries page as junction._api_page returns it (groups'' data arrays left in its text), from its body';

REVOKE ALL ON FUNCTION junction._api_page(text, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION junction._page_from_text(text) FROM PUBLIC;
DROP FUNCTION junction._fetch_page(junction.resources, uuid, timestamptz, timestamptz, text, text, boolean);
CREATE FUNCTION junction._fetch_page(res junction.resources, user_id uuid, start_date timestamptz,
                                     end_date timestamptz, provider text, next_cursor text,
                                     prefetch boolean DEFAULT false, spans boolean DEFAULT false)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    path  text;
    query jsonb;
    r     record;
BEGIN
    IF user_id IS NULL THEN
        RAISE EXCEPTION 'user_id must not be null' USING ERRCODE = '22004';
    END IF;
    path := replace(res.rest_path, '{user_id}', user_id::text);
    IF res.name = 'profile' THEN
        query := jsonb_strip_nulls(jsonb_build_object('provider', nullif(provider, '')));
        SELECT * INTO r FROM junction._api_request(false, 'GET', path, query, NULL);
        IF r.status = 404 THEN
            RETURN NULL;
        ELSIF r.status NOT BETWEEN 200 AND 299 THEN
            PERFORM junction._raise_http('GET', path, r.status, r.body);
        END IF;
        RETURN r.body;
    END IF;
    IF res.name = 'device' THEN
        RETURN @extschema@.junction_api('GET', path);
    END IF;
    IF start_date IS NULL THEN
        RAISE EXCEPTION 'start_date is required to read %', res.name USING ERRCODE = '22004';
    END IF;
    IF NOT isfinite(start_date) OR NOT isfinite(coalesce(end_date, start_date)) THEN
        RAISE EXCEPTION 'start_date and end_date must be finite' USING ERRCODE = '22008';
    END IF;
    IF end_date < start_date THEN
        RAISE EXCEPTION 'end_date % is before start_date %', end_date, start_date USING ERRCODE = '22023';
    END IF;
    query := jsonb_strip_nulls(jsonb_build_object(
        'start_date', junction._api_time(start_date, res.rest_date_format, false),
        'end_date', junction._api_time(end_date, res.rest_date_format, true),
        'provider', nullif(provider, ''),
        'next_cursor', next_cursor));
    IF prefetch THEN
        PERFORM junction._api_prefetch(path, query);
        RETURN NULL;
    END IF;
    IF spans THEN
        RETURN junction._api_page(path, query);
    END IF;
    RETURN @extschema@.junction_api('GET', path, query);
END
$$;
COMMENT ON FUNCTION junction._fetch_page(junction.resources, uuid, timestamptz, timestamptz, text, text, boolean, boolean) IS
  'one read of a summary or grouped timeseries resource (one page); a missing profile is NULL; spans: its groups'' data left in its text, for the bulk loader';

REVOKE ALL ON FUNCTION junction._fetch_page(junction.resources, uuid, timestamptz, timestamptz, text, text, boolean, boolean) FROM PUBLIC;
DROP FUNCTION junction._timeseries_page(junction.resources, uuid, timestamptz, timestamptz, text, text);
CREATE FUNCTION junction._timeseries_page(res junction.resources, user_id uuid, start_date timestamptz,
                                          end_date timestamptz, provider text, cursor text,
                                          spans boolean DEFAULT false,
                                          OUT groups jsonb, OUT next_cursor text)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    path text := replace(res.rest_path, '{user_id}', coalesce(user_id::text, ''));
    page jsonb;
BEGIN
    page := junction._fetch_page(res, user_id, start_date, end_date, provider, cursor, false, spans);
    groups := junction._check_groups(page, path);
    next_cursor := junction._next_cursor(page, cursor, path);
    IF next_cursor IS NOT NULL THEN
        PERFORM junction._fetch_page(res, user_id, start_date, end_date, provider, next_cursor, true);
    END IF;
END
$$;
COMMENT ON FUNCTION junction._timeseries_page(junction.resources, uuid, timestamptz, timestamptz, text, text, boolean) IS
  'one page of a timeseries read: its checked groups and the next cursor (whose page is already requested); spans: the groups'' data left in the page text, for the bulk loader';

REVOKE ALL ON FUNCTION junction._timeseries_page(junction.resources, uuid, timestamptz, timestamptz, text, text, boolean) FROM PUBLIC;
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
        FROM junction._timeseries_page(res, user_id, start_date, end_date, provider, nc,
                                       NOT conflicts AND junction._samples_bulk_ok()) AS t;
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
REVOKE ALL ON FUNCTION junction._sample_rows(junction.typing_item[], jsonb) FROM PUBLIC;
CREATE OR REPLACE FUNCTION junction._upsert_samples(items junction.typing_item[], conflicts boolean DEFAULT true)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'
AS $fn$
DECLARE
    bad   text;
    n     bigint;
    hours junction.daily_hour[];
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
            RETURN n;
        ELSE
            INSERT INTO junction.samples SELECT * FROM junction._sample_rows(items, kinds);
        END IF;
        GET DIAGNOSTICS n = ROW_COUNT;
        RETURN n;
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
    PERFORM junction._daily_touch(hours, NULL);
    RETURN n;
END
$fn$;
COMMENT ON FUNCTION junction._upsert_samples(junction.typing_item[], boolean) IS
  'upsert timeseries groups ({source, data[]}) into junction.samples; the latest received wins per sample key (conflicts = false: plain INSERT of keys known to be new); recomputes the junction.daily days they touch';

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

CREATE OR REPLACE FUNCTION junction._upsert_lab_orders(items junction.typing_item[])
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'
AS $fn$
DECLARE
    n    bigint;
    crit uuid[];
BEGIN
    -- the orders a critical result already names (read first: Citus plans no correlated subquery
    -- on a distributed table beside a set-returning function)
    crit := ARRAY(SELECT c.order_id
                  FROM unnest(items) AS i
                  JOIN junction.lab_critical_results AS c
                    ON c.user_id = i.user_id AND c.order_id = (i.obj ->> 'id')::uuid);
    INSERT INTO junction.lab_orders AS t
        (user_id, id, team_id, status, low_level_status, events, lab_test_id, lab_test_slug,
         lab_test_name, lab_test_method, lab_slug, sample_id, priority, billing_type, interpretation,
         has_missing_results, expected_result_by_date, worst_case_result_by_date, patient_gender,
         patient_dob, created_at, updated_at, critical, result_fetch_status, data, received_seq)
    SELECT w.user_id, w.id, (w.obj ->> 'team_id')::uuid, w.obj ->> 'status',
           (junction._lab_latest_event(w.obj -> 'events')).status, w.obj -> 'events',
           (w.obj #>> '{lab_test,id}')::uuid, w.obj #>> '{lab_test,slug}', w.obj #>> '{lab_test,name}',
           w.obj #>> '{lab_test,method}', w.obj #>> '{lab_test,lab,slug}', w.obj ->> 'sample_id',
           (w.obj ->> 'priority')::boolean, w.obj ->> 'billing_type', w.obj ->> 'interpretation',
           (w.obj ->> 'has_missing_results')::boolean, (w.obj ->> 'expected_result_by_date')::date,
           (w.obj ->> 'worst_case_result_by_date')::date, w.obj #>> '{patient_details,gender}',
           ((w.obj #>> '{patient_details,dob}')::timestamptz AT TIME ZONE 'UTC')::date,
           (w.obj ->> 'created_at')::timestamptz, w.updated_at,
           w.id = ANY (crit),
           CASE WHEN junction._lab_results_due(w.obj ->> 'status', (junction._lab_latest_event(w.obj -> 'events')).status)
                THEN 'pending' END,
           w.obj, w.received_seq
    FROM (SELECT DISTINCT ON (i.user_id, (i.obj ->> 'id')::uuid)
                 i.received_seq, i.user_id, (i.obj ->> 'id')::uuid AS id,
                 (i.obj ->> 'updated_at')::timestamptz AS updated_at, i.obj
          FROM unnest(items) AS i
          ORDER BY i.user_id, (i.obj ->> 'id')::uuid,
                   coalesce((i.obj ->> 'updated_at')::timestamptz, '-infinity') DESC, i.received_seq DESC) AS w
    ORDER BY w.user_id, w.id
    ON CONFLICT (user_id, id) DO UPDATE
    SET team_id = excluded.team_id, status = excluded.status, low_level_status = excluded.low_level_status,
        events = excluded.events, lab_test_id = excluded.lab_test_id, lab_test_slug = excluded.lab_test_slug,
        lab_test_name = excluded.lab_test_name, lab_test_method = excluded.lab_test_method,
        lab_slug = excluded.lab_slug, sample_id = excluded.sample_id, priority = excluded.priority,
        billing_type = excluded.billing_type, interpretation = excluded.interpretation,
        has_missing_results = excluded.has_missing_results,
        expected_result_by_date = excluded.expected_result_by_date,
        worst_case_result_by_date = excluded.worst_case_result_by_date,
        patient_gender = excluded.patient_gender, patient_dob = excluded.patient_dob,
        created_at = excluded.created_at, updated_at = excluded.updated_at,
        critical = t.critical OR excluded.critical, data = excluded.data, received_seq = excluded.received_seq,
        -- a newly completed order, a new partial result, or a newer completed version (a corrected
        -- result) is fetched (again)
        result_fetch_status = CASE
            WHEN junction._lab_results_due(excluded.status, excluded.low_level_status)
                 AND (NOT junction._lab_results_due(t.status, t.low_level_status)
                      OR t.low_level_status IS DISTINCT FROM excluded.low_level_status
                      OR coalesce(jsonb_array_length(CASE jsonb_typeof(excluded.events) WHEN 'array' THEN excluded.events END), 0)
                         > coalesce(jsonb_array_length(CASE jsonb_typeof(t.events) WHEN 'array' THEN t.events END), 0)
                      OR t.result_fetch_status IS NULL OR excluded.updated_at > t.updated_at) THEN 'pending'
            ELSE t.result_fetch_status END,
        result_attempts = CASE
            WHEN junction._lab_results_due(excluded.status, excluded.low_level_status)
                 AND (NOT junction._lab_results_due(t.status, t.low_level_status)
                      OR t.low_level_status IS DISTINCT FROM excluded.low_level_status
                      OR coalesce(jsonb_array_length(CASE jsonb_typeof(excluded.events) WHEN 'array' THEN excluded.events END), 0)
                         > coalesce(jsonb_array_length(CASE jsonb_typeof(t.events) WHEN 'array' THEN t.events END), 0)
                      OR t.result_fetch_status IS NULL OR excluded.updated_at > t.updated_at) THEN 0
            ELSE t.result_attempts END,
        result_next_attempt_at = CASE
            WHEN junction._lab_results_due(excluded.status, excluded.low_level_status)
                 AND (NOT junction._lab_results_due(t.status, t.low_level_status)
                      OR t.low_level_status IS DISTINCT FROM excluded.low_level_status
                      OR coalesce(jsonb_array_length(CASE jsonb_typeof(excluded.events) WHEN 'array' THEN excluded.events END), 0)
                         > coalesce(jsonb_array_length(CASE jsonb_typeof(t.events) WHEN 'array' THEN t.events END), 0)
                      OR t.result_fetch_status IS NULL OR excluded.updated_at > t.updated_at) THEN NULL
            ELSE t.result_next_attempt_at END
    WHERE (coalesce(excluded.updated_at, '-infinity'), excluded.received_seq)
        > (coalesce(t.updated_at, '-infinity'), t.received_seq);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$fn$;
COMMENT ON FUNCTION junction._upsert_lab_orders(junction.typing_item[]) IS
  'upsert lab orders; the newest updated_at wins, then the latest received; a completed order (or a new partial result) queues its result fetch';

CREATE OR REPLACE FUNCTION junction._lab_result_failed(user_id uuid, order_id uuid, error text, sqlstate text)
RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    max_attempts constant integer := 3;
    status       text;
    failed_at    constant timestamptz := clock_timestamp();
BEGIN
    UPDATE junction.lab_orders AS o
    SET result_fetch_status = CASE WHEN o.result_attempts < max_attempts THEN 'pending' ELSE 'failed' END,
        -- the time outside the CASE (Citus: no non-IMMUTABLE function inside one); + null is null
        result_next_attempt_at = failed_at + CASE WHEN o.result_attempts < max_attempts
                                                  THEN interval '30 seconds' * power(4, o.result_attempts - 1) END,
        result_fetch_error = left(coalesce(error, 'unknown error'), 2000),
        result_sqlstate = _lab_result_failed.sqlstate
    WHERE o.user_id = _lab_result_failed.user_id AND o.id = _lab_result_failed.order_id
      AND o.result_fetch_status = 'running'
    RETURNING o.result_fetch_status INTO status;
    RETURN status;
END
$$;
COMMENT ON FUNCTION junction._lab_result_failed(uuid, uuid, text, text) IS
  'record a failed lab result fetch: pending again after a backoff while attempts < 3, else failed with the error and SQLSTATE';

CREATE OR REPLACE FUNCTION junction._daily_sql(resources text[])
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    cands          text;
    has_priorities boolean := EXISTS (SELECT FROM junction.source_priorities);
BEGIN
    -- One branch per resource: each (provider, source type) of a key's day reduced once to every
    -- metric of the resource, then one row per metric the keys ask for on that day.
    SELECT string_agg(format($q$
    SELECT a.user_id, a.calendar_date, v.metric, %1$L::text AS resource, %2$L::text AS kind,
           v.rank, a.provider COLLATE "default", a.source_type COLLATE "default", v.value
    FROM (SELECT d.user_id, d.calendar_date, t.provider COLLATE "C" AS provider,
                 t.source_type COLLATE "C" AS source_type, d.metrics, %3$s
          FROM (SELECT k.user_id, k.calendar_date, array_agg(k.metric) AS metrics
                FROM k WHERE k.metric IN (%4$s) GROUP BY k.user_id, k.calendar_date) AS d
          JOIN %5$s AS t ON %6$s
          GROUP BY d.user_id, d.calendar_date, d.metrics, t.provider COLLATE "C", t.source_type COLLATE "C") AS a
    CROSS JOIN LATERAL (VALUES %7$s) AS v(metric, rank, value)
    WHERE v.metric = ANY (a.metrics)$q$,
               x.resource, x.kind, x.aggs, x.metrics, x.tbl, x.cond, x.vals),
           E'\n    UNION ALL' ORDER BY x.resource, x.part)
      INTO cands
    FROM (
        SELECT m.resource, r.kind, m.part,
               string_agg(format('%s AS %I', CASE
                 -- a timeseries day combines its hours of junction.daily_parts
                 WHEN r.kind = 'timeseries' THEN CASE m.aggregate
                   -- float sums in a fixed order (the hours'): the same value whatever order
                   -- the rows were written or read in
                   WHEN 'sum' THEN 'junction._sum_in_order(array_agg(t.sum ORDER BY t.hour))'
                   WHEN 'avg' THEN 'junction._sum_in_order(array_agg(t.sum ORDER BY t.hour)) / nullif(sum(t.n), 0)'
                   WHEN 'min' THEN 'min(t.min)'
                   WHEN 'max' THEN 'max(t.max)'
                   WHEN 'count' THEN 'sum(t.n)::double precision'
                   ELSE '(array_agg(t.last_value ORDER BY t.hour DESC))[1]'
                 END
                 WHEN m.aggregate = 'pick' THEN
                   format('(array_agg((%1$s)::double precision ORDER BY %2$s) FILTER (WHERE (%1$s) IS NOT NULL))[1]',
                          m.value_sql, m.order_sql)
                 WHEN m.aggregate = 'count' THEN format('count(NULLIF(%s, false))::double precision', m.value_sql)
                 -- a sum or mean of the day's rows in the order of their ids (see above)
                 WHEN m.aggregate = 'sum' THEN
                   format('junction._sum_in_order(array_agg((%s)::double precision ORDER BY t.id))', m.value_sql)
                 WHEN m.aggregate = 'avg' THEN
                   format('junction._sum_in_order(array_agg((%1$s)::double precision ORDER BY t.id)) / nullif(count(%1$s), 0)',
                          m.value_sql)
                 ELSE format('%s((%s)::double precision)', m.aggregate, m.value_sql)
               END, 'm_' || m.metric), ', ' ORDER BY m.metric) AS aggs,
               -- a timeseries metric's value_sql is over t.value, the reduced number
               string_agg(format('(%L, %s, %s)', m.metric, m.rank, CASE
                 WHEN r.kind = 'timeseries' AND m.value_sql <> 't.value' THEN
                   format('(SELECT (%s)::double precision FROM (SELECT a.%I AS value) AS t)', m.value_sql, 'm_' || m.metric)
                 ELSE format('a.%I', 'm_' || m.metric)
               END), ', ' ORDER BY m.metric) AS vals,
               CASE r.kind WHEN 'timeseries' THEN 'junction.daily_parts'
                           ELSE format('junction.%I', min(r.table_name)) END AS tbl,
               CASE r.kind
                 WHEN 'timeseries' THEN format(
                   't.user_id = d.user_id AND t.resource = %L AND t.calendar_date = d.calendar_date AND t.part = %L',
                   m.resource, m.part)
                 ELSE 't.user_id = d.user_id AND t.calendar_date = d.calendar_date'
               END AS cond,
               string_agg(quote_literal(m.metric), ', ' ORDER BY m.metric) AS metrics
        FROM junction.daily_metrics AS m
        JOIN junction.resources AS r ON r.name = m.resource AND r.kind IN ('summary', 'timeseries')
        WHERE m.metric IN (SELECT f.metric FROM junction.daily_metrics AS f WHERE f.resource = ANY (resources))
        -- one branch per resource and part (a timeseries' parts are rows of junction.daily_parts;
        -- a summary's metrics read its typed rows, and part means nothing to them)
        GROUP BY m.resource, r.kind, m.part
    ) AS x;

    -- every key also gets a row without a value: it wins only when no candidate has one, and then
    -- the key's junction.daily row goes
    RETURN format($q$
WITH k AS MATERIALIZED (
    SELECT DISTINCT k.user_id, k.calendar_date, m.metric
    FROM unnest($1::junction.daily_key[]) AS k
    JOIN junction.daily_metrics AS m ON m.resource = k.resource
    WHERE k.user_id IS NOT NULL AND k.calendar_date IS NOT NULL
), c AS (%1$s
    SELECT k.user_id, k.calendar_date, k.metric, NULL::text, NULL::text, NULL::integer, NULL::text,
           NULL::text, NULL::double precision
    FROM k
), w AS MATERIALIZED (
    SELECT DISTINCT ON (c.user_id, c.calendar_date, c.metric COLLATE "C")
           c.user_id, c.calendar_date, c.metric, nullif(c.value, 'NaN') AS value, c.resource, c.provider,
           c.source_type,
           count(nullif(c.value, 'NaN')) OVER (PARTITION BY c.user_id, c.calendar_date, c.metric COLLATE "C") AS candidates
    FROM c%2$s
    -- names in "C" order: the same winner whatever the database's collation
    ORDER BY c.user_id, c.calendar_date, c.metric COLLATE "C", nullif(c.value, 'NaN') IS NULL,
             %3$s NULLS LAST, junction.default_source_rank(c.provider, c.source_type), c.rank,
             c.provider COLLATE "C", c.source_type COLLATE "C", c.resource COLLATE "C"
), up AS (
    INSERT INTO junction.daily AS d
        (user_id, calendar_date, metric, value, unit, provider, source_type, resource, candidates, updated_at)
    SELECT w.user_id, w.calendar_date, w.metric, w.value, m.unit, w.provider, w.source_type, w.resource,
           w.candidates, now()
    FROM w JOIN junction.daily_metrics AS m ON m.metric = w.metric AND m.resource = w.resource
    WHERE w.value IS NOT NULL
    ORDER BY w.user_id, w.calendar_date, w.metric
    ON CONFLICT (user_id, calendar_date, metric) DO UPDATE
    SET value = excluded.value, unit = excluded.unit, provider = excluded.provider,
        source_type = excluded.source_type, resource = excluded.resource,
        candidates = excluded.candidates, updated_at = excluded.updated_at
    WHERE (d.value, d.unit, d.provider, d.source_type, d.resource, d.candidates)
          IS DISTINCT FROM (excluded.value, excluded.unit, excluded.provider, excluded.source_type,
                            excluded.resource, excluded.candidates)
    RETURNING 1
), gone AS (
    DELETE FROM junction.daily AS d
    USING w
    WHERE w.value IS NULL
      AND d.user_id = w.user_id AND d.calendar_date = w.calendar_date AND d.metric = w.metric
    RETURNING 1
)
SELECT (SELECT count(*) FROM up) + (SELECT count(*) FROM gone)$q$, coalesce(cands || E'\n    UNION ALL', ''),
    CASE WHEN has_priorities THEN $q$
    -- the priority that applies (as junction.source_priority says)
    LEFT JOIN LATERAL (
        SELECT p.priority
        FROM junction.source_priorities AS p
        WHERE p.resource = ANY (ARRAY[c.resource, CASE WHEN c.kind = 'timeseries' THEN 'timeseries' END])
          AND p.provider = c.provider
          AND (p.source_type = c.source_type OR p.source_type = '')
        ORDER BY p.resource = c.resource DESC, p.source_type <> '' DESC, p.origin = 'team' DESC
        LIMIT 1) AS pr ON c.value IS NOT NULL$q$ ELSE '' END,
    CASE WHEN has_priorities THEN 'pr.priority' ELSE 'NULL::integer' END);
END
$fn$;
COMMENT ON FUNCTION junction._daily_sql(text[]) IS
  'the statement that recomputes the junction.daily values of the days $1 (junction.daily_key[]) from their candidates, for the metrics the resources feed';

CREATE OR REPLACE FUNCTION junction._daily_parts_refresh(hours junction.daily_hour[])
RETURNS junction.daily_key[]
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'
-- Each hour is one range scan of the samples' key, whatever the statistics say: with one user's
-- rows making up most of the table (a first backfill, a small team) the planner otherwise hashes
-- the hours against a sequential scan of junction.samples, every page, and a 90-day backfill that
-- takes 2 s here took 95 s. On Citus the shards plan their own part (with their own settings), and
-- the coordinator's part is left to the planner: the setting is put back for the call.
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $fn$
DECLARE
    gone  junction.daily_key[];
    fresh junction.daily_key[];
    -- the parts the metrics read, and whether one picks the last value: read here, not joined in
    -- the statement below (on Citus the registry is local to the coordinator, the samples are not)
    mp_resource text[];
    mp_part     text[];
    mp_pick     boolean[];
BEGIN
    SELECT array_agg(m.resource), array_agg(m.part), array_agg(m.pick)
      INTO mp_resource, mp_part, mp_pick
    FROM (SELECT dm.resource, dm.part, bool_or(dm.aggregate = 'pick') AS pick
          FROM junction.daily_metrics AS dm GROUP BY dm.resource, dm.part) AS m;
    IF hours IS NULL OR cardinality(hours) = 0 THEN
        RETURN NULL;
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_extension AS e WHERE e.extname = 'citus') THEN
        -- local to the call: the SET clauses above restore the caller's values when it returns
        PERFORM pg_catalog.set_config('enable_hashjoin', 'on', true),
                pg_catalog.set_config('enable_mergejoin', 'on', true);
    END IF;
    PERFORM pg_advisory_xact_lock(1785688929, hashtext(u.user_id::text))
    FROM (SELECT DISTINCT h.user_id FROM unnest(hours) AS h WHERE h.user_id IS NOT NULL ORDER BY 1) AS u;
    -- the hours' rows, recomputed: changed ones updated in place (a HOT update: no indexed column
    -- changes), new ones inserted; unchanged ones left alone, and their days with them
    WITH i AS (
        INSERT INTO junction.daily_parts AS p
            (user_id, resource, hour, calendar_date, provider, source_type, part, n, sum, min, max, last_value)
        SELECT g.user_id, g.resource, g.hour, g.calendar_date, g.provider, g.source_type, g.part, g.n, g.sum, g.min,
               g.max, g.last_value
        FROM (SELECT h.user_id, h.resource COLLATE "C" AS resource, h.hour, s.calendar_date,
                     s.provider COLLATE "C" AS provider, s.source_type COLLATE "C" AS source_type,
                     h.part COLLATE "C" AS part,
                     -- summed in key order: a float sum depends on the order of its terms, and
                     -- the rows arrive in whatever order the plan reads them
                     count(*) AS n, sum(s.value ORDER BY s.time, s.type, s.workout_id) AS sum,
                     min(s.value) AS min, max(s.value) AS max,
                     -- the last value, only for the parts a metric picks it from
                     (array_agg(s.value ORDER BY s.time DESC, s.type DESC, s.workout_id DESC)
                        FILTER (WHERE h.pick))[1] AS last_value
              FROM (SELECT DISTINCT h.user_id, h.resource, h.hour, mp.part, mp.pick
                    FROM unnest(hours) AS h
                    -- the parts the resource's metrics read (most have one: the samples' value)
                    JOIN unnest(mp_resource, mp_part, mp_pick) AS mp(resource, part, pick)
                      ON mp.resource = h.resource) AS h
              -- one range scan of junction.samples' key per hour
              CROSS JOIN LATERAL (
                  SELECT coalesce(s.local_time, s.time AT TIME ZONE 'UTC')::date AS calendar_date,
                         s.provider, s.source_type, junction._daily_part_value(h.part, s.type, s.value, s.extra) AS value,
                         s.time, s.type, s.workout_id
                  FROM junction.samples AS s
                  WHERE s.user_id = h.user_id AND s.resource = h.resource
                    AND s.time >= h.hour AND s.time < h.hour + interval '1 hour'
                  ) AS s
              WHERE s.value IS NOT NULL
              -- "C": grouping sorts by byte, not by the database's collation
              GROUP BY h.user_id, h.resource COLLATE "C", h.hour, s.calendar_date, s.provider COLLATE "C",
                       s.source_type COLLATE "C", h.part COLLATE "C") AS g
        ORDER BY 1, 2, 3, 4, 5, 6, 7
        ON CONFLICT (user_id, resource, hour, calendar_date, provider, source_type, part) DO UPDATE
        SET n = excluded.n, sum = excluded.sum, min = excluded.min, max = excluded.max,
            last_value = excluded.last_value
        WHERE (p.n, p.sum, p.min, p.max, p.last_value)
              IS DISTINCT FROM (excluded.n, excluded.sum, excluded.min, excluded.max, excluded.last_value)
        RETURNING p.user_id, p.calendar_date, p.resource
    )
    SELECT array_agg(ROW(x.user_id, x.calendar_date, x.resource)::junction.daily_key) INTO fresh
    FROM (SELECT DISTINCT i.user_id, i.calendar_date, i.resource FROM i) AS x;
    -- rows of those hours without a sample left (values gone, or moved to another local day)
    WITH d AS (
        DELETE FROM junction.daily_parts AS p
        USING (SELECT DISTINCT h.user_id, h.resource, h.hour FROM unnest(hours) AS h) AS h
        WHERE p.user_id = h.user_id AND p.resource = h.resource AND p.hour = h.hour
          AND NOT EXISTS (SELECT FROM junction.samples AS s
                          WHERE s.user_id = p.user_id AND s.resource = p.resource
                            AND s.time >= p.hour AND s.time < p.hour + interval '1 hour'
                            AND s.provider = p.provider AND s.source_type = p.source_type
                            AND junction._daily_part_value(p.part, s.type, s.value, s.extra) IS NOT NULL
                            AND coalesce(s.local_time, s.time AT TIME ZONE 'UTC')::date = p.calendar_date)
        RETURNING p.user_id, p.calendar_date, p.resource
    )
    SELECT array_agg(ROW(x.user_id, x.calendar_date, x.resource)::junction.daily_key) INTO gone
    FROM (SELECT DISTINCT d.user_id, d.calendar_date, d.resource FROM d) AS x;
    RETURN coalesce(gone, '{}'::junction.daily_key[]) || coalesce(fresh, '{}'::junction.daily_key[]);
END
$fn$;
COMMENT ON FUNCTION junction._daily_parts_refresh(junction.daily_hour[]) IS
  'recompute the junction.daily_parts rows of the given (user, resource, UTC hour) from junction.samples; returns the days they were and are on';

CREATE OR REPLACE FUNCTION junction._daily_summary_keys(items junction.typing_item[], resource text)
RETURNS junction.daily_key[]
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
-- The EXECUTEd text names a summary table from the registry (quote_ident); values are passed with USING.
-- @plpgsql_check_options: security_warnings = off
DECLARE
    res  junction.resources;
    keys junction.daily_key[];
    uids uuid[];
    ids  uuid[];
BEGIN
    SELECT * INTO res FROM junction.resources AS r
    WHERE r.name = _daily_summary_keys.resource AND r.kind = 'summary'
      AND EXISTS (SELECT FROM junction.daily_metrics AS m WHERE m.resource = r.name);
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    -- the keys alone go into the statement on the table (on Citus, to every shard): not the objects
    SELECT array_agg(b.user_id), array_agg(b.id) INTO uids, ids
    FROM (SELECT DISTINCT i.user_id, (i.obj ->> res.id_field)::uuid AS id
          FROM unnest(items) AS i
          WHERE i.resource = _daily_summary_keys.resource
            AND (i.obj ->> res.id_field) ~* '^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$') AS b;
    IF uids IS NULL THEN
        RETURN NULL;
    END IF;
    EXECUTE format($q$
        SELECT array_agg(DISTINCT ROW(t.user_id, t.calendar_date, $3)::junction.daily_key)
        FROM junction.%I AS t
        JOIN unnest($1, $2) AS b(user_id, id) ON t.user_id = b.user_id AND t.id = b.id
        WHERE t.calendar_date IS NOT NULL$q$, res.table_name)
      INTO keys USING uids, ids, resource;
    RETURN keys;
END
$fn$;
COMMENT ON FUNCTION junction._daily_summary_keys(junction.typing_item[], text) IS
  'the (user, calendar_date, resource) keys of the stored summaries a batch names (resources with daily metrics only)';

CREATE OR REPLACE FUNCTION junction._backfill_claim()
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

CREATE OR REPLACE FUNCTION junction._backfill_step(kind text, user_id uuid, provider text, resource text,
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

CREATE OR REPLACE FUNCTION junction._backfill_step(job junction.backfill_job)
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

CREATE OR REPLACE FUNCTION junction._backfill_failed(job junction.backfill_job, error text, sqlstate text)
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

-- junction_sync reports a long resource with a NOTICE (junction.sync_progress_after; issue 14)
CREATE OR REPLACE FUNCTION junction_sync(user_id uuid, resources text[] DEFAULT NULL,
                              start_date timestamptz DEFAULT now() - interval '7 days',
                              end_date timestamptz DEFAULT now(), provider text DEFAULT NULL)
RETURNS TABLE (resource text, rows_loaded bigint)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    uid   uuid := user_id;
    names text[];
    r     text;
    k     integer := 0;
    t0    timestamptz;
    secs  double precision;
    -- junction.sync_progress_after (ms): a resource that took at least this long is reported
    after double precision := coalesce((SELECT g.setting::double precision FROM pg_settings AS g
                                        WHERE g.name = 'junction.sync_progress_after'), 5000);
BEGIN
    IF uid IS NULL THEN
        RAISE EXCEPTION 'user_id must not be null' USING ERRCODE = '22004';
    END IF;
    IF resources IS NULL THEN
        -- every dated resource a webhook could have sent: summaries and timeseries, not streams
        SELECT array_agg(x.name ORDER BY x.name) INTO names
        FROM junction.resources AS x
        WHERE x.kind IN ('summary', 'timeseries') AND x.event_prefix = 'daily.data';
    ELSE
        SELECT array_agg(DISTINCT (junction._api_resource(q.name)).name ORDER BY (junction._api_resource(q.name)).name)
          INTO names
        FROM unnest(resources) AS q(name);
    END IF;
    FOREACH r IN ARRAY coalesce(names, '{}') LOOP
        k := k + 1;
        t0 := clock_timestamp();
        resource := r;
        rows_loaded := junction._sync_resource(uid, r, start_date, end_date, provider, true);
        -- progress of a long call, as each resource is done (a client sees it before the call returns)
        secs := extract(epoch FROM clock_timestamp() - t0);
        IF after >= 0 AND secs * 1000 >= after THEN
            RAISE NOTICE 'junction_sync: % of user %: % rows in % s (% rows/s), resource % of %',
                r, uid, rows_loaded, round(secs::numeric, 1), round(rows_loaded / greatest(secs, 0.001)),
                k, cardinality(names);
        END IF;
        RETURN NEXT;
    END LOOP;
END
$$;
COMMENT ON FUNCTION junction_sync(uuid, text[], timestamptz, timestamptz, text) IS
  'fetch resources (default: every summary and timeseries) of a user over a range and upsert them into the typed tables; rows written per resource';

-- ---------------------------------------------------------------------------------------------
-- Scaling out on Citus (README, "Scaling out with Citus").
--   * every per-user table (a table of schema junction with a user_id column) is distributed by
--     user_id, all colocated with junction.samples: one user's rows of every table live on one
--     shard group, so each upsert, each user's query and each join between them is routed to a
--     single node;
--   * the small registries read inside those per-user statements (resources, daily_metrics,
--     source_priorities, sense_queries) become reference tables, a copy on every node;
--   * the inbox, the signing secrets and junction.daily's work queues stay local to the coordinator:
--     receivers insert there, the workers verify there and claim work there (SKIP LOCKED over a
--     whole queue is a single-node operation), and the secrets are never copied to another node.
-- The same SQL serves one Postgres and Citus: nothing here changes a statement, only where rows live.
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION junction._distribution_plan()
RETURNS TABLE (tbl regclass, placement text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT c.oid::regclass,
           CASE
             WHEN c.relname IN ('inbox', 'webhook_secrets', 'daily_pending_hours', 'daily_pending_days', 'resources', 'daily_metrics', 'source_priorities', 'sense_queries') THEN 'local'
             WHEN EXISTS (SELECT 1 FROM pg_attribute AS a
                          WHERE a.attrelid = c.oid AND a.attname = 'user_id' AND NOT a.attisdropped)
               THEN 'distributed'
             ELSE 'reference'
           END
    FROM pg_class AS c
    JOIN pg_depend AS d ON d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e'
    JOIN pg_extension AS e ON e.oid = d.refobjid AND e.extname = 'junction'
    WHERE c.relkind IN ('r', 'p')
    -- samples first: the others are colocated with it
    ORDER BY c.relname <> 'samples', c.relname
$$;
COMMENT ON FUNCTION junction._distribution_plan() IS
  'where junction_distribute() puts each table of the extension: distributed (by user_id), reference or local';

CREATE FUNCTION junction_distribute(shard_count integer DEFAULT NULL)
RETURNS SETOF regclass
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
-- Citus' functions and catalogs exist only where Citus is installed: they are named in constant
-- strings and called through EXECUTE (no caller's text reaches a statement; values go with USING).
-- @plpgsql_check_options: security_warnings = off
DECLARE
    citus   text := 'pg_catalog.';
    p       record;
    done    boolean;
    coord   boolean;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
        RAISE EXCEPTION 'junction_distribute: Citus is not installed in this database'
            USING ERRCODE = '55000',
                  HINT = 'Add citus (first) to shared_preload_libraries, CREATE EXTENSION citus, add the '
                         'worker nodes, then call junction_distribute() on the coordinator.';
    END IF;
    EXECUTE 'SELECT ' || citus || 'citus_is_coordinator()' INTO coord;
    IF NOT coord THEN
        RAISE EXCEPTION 'junction_distribute: this node is not the Citus coordinator'
            USING ERRCODE = '55000',
                  HINT = 'Call it on the coordinator; the worker nodes hold the shards it creates.';
    END IF;
    IF shard_count IS NOT NULL AND shard_count NOT BETWEEN 1 AND 64000 THEN
        RAISE EXCEPTION 'junction_distribute: shard_count must be between 1 and 64000, not %', shard_count
            USING ERRCODE = '22023', HINT = 'Leave it null for citus.shard_count.';
    END IF;

    FOR p IN SELECT * FROM junction._distribution_plan() WHERE placement <> 'local' LOOP
        EXECUTE 'SELECT EXISTS (SELECT 1 FROM ' || citus || 'pg_dist_partition WHERE logicalrelid = $1)'
            INTO done USING p.tbl;
        CONTINUE WHEN done;             -- already distributed (or reference): idempotent
        IF p.placement = 'reference' THEN
            EXECUTE 'SELECT ' || citus || 'create_reference_table($1)' USING p.tbl;
        ELSIF p.tbl = 'junction.samples'::regclass THEN
            EXECUTE 'SELECT ' || citus || 'create_distributed_table($1, ''user_id'', shard_count => $2)'
                USING p.tbl, shard_count;
        ELSE
            EXECUTE 'SELECT ' || citus || 'create_distributed_table($1, ''user_id'', colocate_with => ''junction.samples'')'
                USING p.tbl;
        END IF;
        -- rows that were there before are now on the shards; drop the coordinator's local copy
        EXECUTE 'SELECT ' || citus || 'truncate_local_data_after_distributing_table($1)' USING p.tbl;
        RETURN NEXT p.tbl;
    END LOOP;
END
$fn$;
COMMENT ON FUNCTION junction_distribute(integer) IS
  'on a Citus coordinator: distribute every per-user table by user_id (colocated), make the registries reference tables; idempotent, returns the tables it changed';
REVOKE ALL ON FUNCTION junction._distribution_plan() FROM PUBLIC;
REVOKE ALL ON FUNCTION junction_distribute(integer) FROM PUBLIC;


-- ---------------------------------------------------------------------------------------------
-- junction_sync on Citus: junction.daily recomputed once per resource (not page by page), by
-- statements that run on the hours' users' shards; its hours in UTC whatever a node's timezone
-- ---------------------------------------------------------------------------------------------
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

CREATE OR REPLACE FUNCTION junction._upsert_samples(items junction.typing_item[], conflicts boolean DEFAULT true)
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

CREATE OR REPLACE FUNCTION junction._daily_parts_refresh(hours junction.daily_hour[])
RETURNS junction.daily_key[]
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'
-- Each hour is one range scan of the samples' key, whatever the statistics say: with one user's
-- rows making up most of the table (a first backfill, a small team) the planner otherwise hashes
-- the hours against a sequential scan of junction.samples, every page, and a 90-day backfill that
-- takes 2 s here took 95 s. On Citus the shards plan their own part (with their own settings), and
-- the coordinator's part is left to the planner: the setting is put back for the call.
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $fn$
DECLARE
    gone  junction.daily_key[];
    fresh junction.daily_key[];
    -- the parts the metrics read, and whether one picks the last value: read here, not joined in
    -- the statement below (on Citus the registry is local to the coordinator, the samples are not)
    mp_resource text[];
    mp_part     text[];
    mp_pick     boolean[];
    -- the hours' users, locked in order
    users       uuid[];
    -- on Citus, the same users: the statements below name them, so that they run on those users'
    -- shards only (one shard for junction_sync's hours, all of them for a busy batch's). Null on
    -- one node, where the planner would read all of a user's rows once and filter them against
    -- every hour (without statistics, a first load: 15 -> 37 ms for 240 hours) instead of
    -- scanning each hour's range of the key
    shard_users uuid[];
BEGIN
    SELECT array_agg(m.resource), array_agg(m.part), array_agg(m.pick)
      INTO mp_resource, mp_part, mp_pick
    FROM (SELECT dm.resource, dm.part, bool_or(dm.aggregate = 'pick') AS pick
          FROM junction.daily_metrics AS dm GROUP BY dm.resource, dm.part) AS m;
    IF hours IS NULL OR cardinality(hours) = 0 THEN
        RETURN NULL;
    END IF;
    users := ARRAY(SELECT DISTINCT h.user_id FROM unnest(hours) AS h WHERE h.user_id IS NOT NULL ORDER BY 1);
    IF EXISTS (SELECT FROM pg_catalog.pg_extension AS e WHERE e.extname = 'citus') THEN
        -- local to the call: the SET clauses above restore the caller's values when it returns
        PERFORM pg_catalog.set_config('enable_hashjoin', 'on', true),
                pg_catalog.set_config('enable_mergejoin', 'on', true);
        shard_users := users;
    END IF;
    PERFORM pg_advisory_xact_lock(1785688929, hashtext(u.user_id::text)) FROM unnest(users) AS u(user_id);
    -- the hours' rows, recomputed: changed ones updated in place (a HOT update: no indexed column
    -- changes), new ones inserted; unchanged ones left alone, and their days with them
    WITH i AS (
        INSERT INTO junction.daily_parts AS p
            (user_id, resource, hour, calendar_date, provider, source_type, part, n, sum, min, max, last_value)
        SELECT g.user_id, g.resource, g.hour, g.calendar_date, g.provider, g.source_type, g.part, g.n, g.sum, g.min,
               g.max, g.last_value
        FROM (SELECT s.user_id, h.resource COLLATE "C" AS resource, h.hour, s.calendar_date,
                     s.provider COLLATE "C" AS provider, s.source_type COLLATE "C" AS source_type,
                     h.part COLLATE "C" AS part,
                     -- summed in key order: a float sum depends on the order of its terms, and
                     -- the rows arrive in whatever order the plan reads them
                     count(*) AS n, sum(s.value ORDER BY s.time, s.type, s.workout_id) AS sum,
                     min(s.value) AS min, max(s.value) AS max,
                     -- the last value, only for the parts a metric picks it from
                     (array_agg(s.value ORDER BY s.time DESC, s.type DESC, s.workout_id DESC)
                        FILTER (WHERE h.pick))[1] AS last_value
              FROM (SELECT DISTINCT h.user_id, h.resource, h.hour, mp.part, mp.pick
                    FROM unnest(hours) AS h
                    -- the parts the resource's metrics read (most have one: the samples' value)
                    JOIN unnest(mp_resource, mp_part, mp_pick) AS mp(resource, part, pick)
                      ON mp.resource = h.resource) AS h
              -- one range scan of junction.samples' key per hour
              CROSS JOIN LATERAL (
                  SELECT coalesce(s.local_time, s.time AT TIME ZONE 'UTC')::date AS calendar_date,
                         s.provider, s.source_type, junction._daily_part_value(h.part, s.type, s.value, s.extra) AS value,
                         s.time, s.type, s.workout_id, s.user_id
                  FROM junction.samples AS s
                  WHERE s.user_id = h.user_id AND (shard_users IS NULL OR s.user_id = ANY (shard_users))
                    AND s.resource = h.resource
                    AND s.time >= h.hour AND s.time < h.hour + interval '1 hour'
                    -- the same hours as an equality: a shard that hashes the hours against its
                    -- samples (on Citus) matches each sample to one hour, not every hour of its
                    -- user to every sample
                    AND date_trunc('hour', s.time, 'UTC') = h.hour
                  ) AS s
              WHERE s.value IS NOT NULL
              -- "C": grouping sorts by byte, not by the database's collation
              GROUP BY s.user_id, h.resource COLLATE "C", h.hour, s.calendar_date, s.provider COLLATE "C",
                       s.source_type COLLATE "C", h.part COLLATE "C") AS g
        ORDER BY 1, 2, 3, 4, 5, 6, 7
        ON CONFLICT (user_id, resource, hour, calendar_date, provider, source_type, part) DO UPDATE
        SET n = excluded.n, sum = excluded.sum, min = excluded.min, max = excluded.max,
            last_value = excluded.last_value
        WHERE (p.n, p.sum, p.min, p.max, p.last_value)
              IS DISTINCT FROM (excluded.n, excluded.sum, excluded.min, excluded.max, excluded.last_value)
        RETURNING p.user_id, p.calendar_date, p.resource
    )
    SELECT array_agg(ROW(x.user_id, x.calendar_date, x.resource)::junction.daily_key) INTO fresh
    FROM (SELECT DISTINCT i.user_id, i.calendar_date, i.resource FROM i) AS x;
    -- rows of those hours without a sample left (values gone, or moved to another local day)
    WITH d AS (
        DELETE FROM junction.daily_parts AS p
        USING (SELECT DISTINCT h.user_id, h.resource, h.hour FROM unnest(hours) AS h) AS h
        WHERE p.user_id = h.user_id AND (shard_users IS NULL OR p.user_id = ANY (shard_users))
          AND p.resource = h.resource AND p.hour = h.hour
          AND NOT EXISTS (SELECT FROM junction.samples AS s
                          WHERE s.user_id = p.user_id AND s.resource = p.resource
                            AND s.time >= p.hour AND s.time < p.hour + interval '1 hour'
                            AND s.provider = p.provider AND s.source_type = p.source_type
                            AND junction._daily_part_value(p.part, s.type, s.value, s.extra) IS NOT NULL
                            AND coalesce(s.local_time, s.time AT TIME ZONE 'UTC')::date = p.calendar_date)
        RETURNING p.user_id, p.calendar_date, p.resource
    )
    SELECT array_agg(ROW(x.user_id, x.calendar_date, x.resource)::junction.daily_key) INTO gone
    FROM (SELECT DISTINCT d.user_id, d.calendar_date, d.resource FROM d) AS x;
    RETURN coalesce(gone, '{}'::junction.daily_key[]) || coalesce(fresh, '{}'::junction.daily_key[]);
END
$fn$;
COMMENT ON FUNCTION junction._daily_parts_refresh(junction.daily_hour[]) IS
  'recompute the junction.daily_parts rows of the given (user, resource, UTC hour) from junction.samples; returns the days they were and are on';

CREATE OR REPLACE FUNCTION junction_rebuild_daily(user_id uuid DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'
AS $fn$
-- The EXECUTEd text names summary tables from the registry (quote_ident); values are passed with USING.
-- @plpgsql_check_options: security_warnings = off
DECLARE
    uid   uuid := user_id;
    keys  junction.daily_key[] := '{}'::junction.daily_key[];
    more  junction.daily_key[];
    res   record;
    n     bigint;
    users text;
    u     uuid;
BEGIN
    IF uid IS NULL THEN
        -- every user, one at a time (each user's days fit in memory, whatever the table sizes)
        DELETE FROM junction.daily_parts;
        DELETE FROM junction.daily;
        GET DIAGNOSTICS n = ROW_COUNT;
        SELECT string_agg(format('SELECT t.user_id FROM junction.%I AS t', x.table_name), ' UNION ')
          INTO users
        FROM (SELECT DISTINCT r.table_name FROM junction.resources AS r
              JOIN junction.daily_metrics AS m ON m.resource = r.name
              WHERE r.kind IN ('summary', 'timeseries') ORDER BY 1) AS x;
        FOR u IN EXECUTE format('SELECT x.user_id FROM (%s) AS x ORDER BY 1', coalesce(users, 'SELECT NULL::uuid WHERE false'))
        LOOP
            n := n + @extschema@.junction_rebuild_daily(u);
        END LOOP;
        RETURN n;
    END IF;
    -- the samples' hours, all of them (as junction._daily_parts_refresh computes them)
    DELETE FROM junction.daily_parts AS p WHERE p.user_id = uid;
    INSERT INTO junction.daily_parts AS p
        (user_id, resource, hour, calendar_date, provider, source_type, part, n, sum, min, max, last_value)
    SELECT s.user_id, s.resource, date_trunc('hour', s.time, 'UTC'), coalesce(s.local_time, s.time AT TIME ZONE 'UTC')::date,
           s.provider, s.source_type, s.part, count(*), sum(s.value ORDER BY s.time, s.type, s.workout_id),
           min(s.value), max(s.value),
           (array_agg(s.value ORDER BY s.time DESC, s.type DESC, s.workout_id DESC)
              FILTER (WHERE (s.resource, s.part) IN (SELECT m.resource, m.part FROM junction.daily_metrics AS m
                                                     WHERE m.aggregate = 'pick')))[1]
    FROM (SELECT s.user_id, s.resource, s.time, s.local_time, s.provider, s.source_type, s.type, s.workout_id, mp.part,
                 junction._daily_part_value(mp.part, s.type, s.value, s.extra) AS value
          FROM junction.samples AS s
          -- the parts the resource's metrics read
          JOIN (SELECT DISTINCT m.resource, m.part FROM junction.daily_metrics AS m) AS mp ON mp.resource = s.resource
          WHERE s.user_id = uid
          OFFSET 0) AS s
    WHERE s.value IS NOT NULL
    GROUP BY s.user_id, s.resource, date_trunc('hour', s.time, 'UTC'), coalesce(s.local_time, s.time AT TIME ZONE 'UTC')::date,
             s.provider, s.source_type, s.part;
    FOR res IN SELECT DISTINCT r.name, r.kind, r.table_name
               FROM junction.resources AS r
               JOIN junction.daily_metrics AS m ON m.resource = r.name
               WHERE r.kind IN ('summary', 'timeseries')
               ORDER BY r.name
    LOOP
        IF res.kind = 'summary' THEN
            EXECUTE format('SELECT array_agg(DISTINCT ROW(t.user_id, t.calendar_date, $2)::junction.daily_key)
                            FROM junction.%I AS t
                            WHERE t.calendar_date IS NOT NULL AND t.user_id = $1', res.table_name)
              INTO more USING uid, res.name;
        ELSE
            SELECT array_agg(DISTINCT ROW(p.user_id, p.calendar_date, res.name)::junction.daily_key)
              INTO more
            FROM junction.daily_parts AS p
            WHERE p.resource = res.name AND p.user_id = uid;
        END IF;
        keys := keys || coalesce(more, '{}'::junction.daily_key[]);
    END LOOP;
    -- days without any candidate left (a metric removed, rows deleted) go too
    DELETE FROM junction.daily AS d WHERE d.user_id = uid;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n + junction._daily_refresh(keys, true);
END
$fn$;
COMMENT ON FUNCTION junction_rebuild_daily(uuid) IS
  'recompute junction.daily from the typed tables (every user, or one): after changing junction.source_priorities or junction.daily_metrics; returns rows deleted plus rows written';

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
    loaded record;
    hours  junction.daily_hour[] := '{}'::junction.daily_hour[];
BEGIN
    LOOP
        SELECT t.groups, t.next_cursor INTO groups, nc
        FROM junction._timeseries_page(res, user_id, start_date, end_date, provider, nc,
                                       NOT conflicts AND junction._samples_bulk_ok()) AS t;
        items := junction._page_items(user_id, res.name, groups);
        IF items IS NOT NULL THEN
            SELECT l.n, l.hours INTO loaded FROM junction._load_samples(items, conflicts) AS l;
            total := total + loaded.n;
            hours := hours || coalesce(loaded.hours, '{}'::junction.daily_hour[]);
        END IF;
        EXIT WHEN nc IS NULL;
    END LOOP;
    PERFORM junction._daily_touch(hours, NULL);
    RETURN total;
END
$$;
COMMENT ON FUNCTION junction._sync_timeseries(junction.resources, uuid, timestamptz, timestamptz, text, boolean) IS
  'fetch every page of one timeseries resource over a range and load it into junction.samples';
REVOKE ALL ON FUNCTION junction._load_samples(junction.typing_item[], boolean) FROM PUBLIC;


-- junction.daily from the data already stored (issue 12's section leaves it to here)
SELECT junction_rebuild_daily() >= 0 AS daily_built;
