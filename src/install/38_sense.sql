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
