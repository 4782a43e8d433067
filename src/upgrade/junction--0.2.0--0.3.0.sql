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
              AND (x.parts[cardinality(x.parts)] IN ('created', 'updated')
                   -- a workout stream can also be declared unavailable (no stream to fetch)
                   OR (r.kind = 'stream' AND x.parts[cardinality(x.parts)] = 'unavailable'))
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
        -- streams, connections, historical pulls: the fields their upserts cast
        SELECT x.p AS p, junction._cast_error(c.obj, x.p, x.t) AS e INTO col
        FROM (VALUES ('stream', '{workout_id}'::text[], 'uuid'::regtype, 1),
                     ('stream', '{sport,id}', 'integer', 2),
                     ('connection', '{created_on}', 'timestamptz', 1),
                     ('historical', '{start_date}', 'timestamptz', 1),
                     ('historical', '{end_date}', 'timestamptz', 2)) AS x(family, p, t, n)
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
    RETURNING 'range'::text, t.user_id, t.provider, t.resource, t.start_date, t.end_date, NULL::uuid;
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
              NULL::timestamptz, NULL::timestamptz, t.workout_id;
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
AS $$ SELECT junction._backfill_step(job.kind, job.user_id, job.provider, job.resource,
                                     job.start_date, job.end_date, job.workout_id) $$;
COMMENT ON FUNCTION junction._backfill_step(junction.backfill_job) IS 'junction._backfill_step for a claimed job row';
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
AS $$ SELECT junction._backfill_run(job.kind, job.user_id, job.provider, job.resource,
                                    job.start_date, job.end_date, job.workout_id) $$;
COMMENT ON FUNCTION junction._backfill_run(junction.backfill_job) IS 'junction._backfill_run for a claimed job row';
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
WHERE s.fetch_status IN ('running', 'pending');
COMMENT ON VIEW junction.backfill_progress IS
  'every running backfill job (its backend pid, pages and rows so far, the rate of this run, started, last page at) and the queue (pending: new, retry after a failure, or resume from a checkpoint; due_at: when it is or was due)';
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
             + (SELECT count(*) FROM junction.workout_streams WHERE fetch_status = 'failed') AS backfills_failed,
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
    RETURNING 'range'::text, t.user_id, t.provider, t.resource, t.start_date, t.end_date, NULL::uuid;
    PERFORM junction._wake_at_commit();
END
$$;
COMMENT ON FUNCTION junction_sync_queue(uuid, text[], timestamptz, timestamptz, text) IS
  'queue what junction_sync would load (per provider: the one given, else every connected one) as backfill jobs, and return them: the backfill workers load them page by page, each page committed with its checkpoint; replaces a queued job of the same user, provider and resource';
REVOKE ALL ON FUNCTION junction_sync_queue(uuid, text[], timestamptz, timestamptz, text) FROM PUBLIC;
