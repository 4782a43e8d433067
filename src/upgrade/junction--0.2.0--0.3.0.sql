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
