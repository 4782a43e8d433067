-- Reads from the Data Access API: one page (junction._fetch_page), the paging rules, and
-- junction_fetch / the stream readers users call.

-- One Data Access API read of a summary or timeseries resource (one page for timeseries).
-- A profile that does not exist (404) is NULL, not an error. prefetch: only send the request of a
-- summary or timeseries page (junction._api_prefetch) and return NULL; the same call without
-- prefetch later in the transaction receives the answer.
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

-- The next cursor of a timeseries page; guards against a server that never ends.
CREATE FUNCTION junction._next_cursor(page jsonb, previous text, path text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    nc text := nullif(coalesce(page ->> 'next_cursor', page ->> 'next'), '');
BEGIN
    IF nc IS NOT NULL AND nc = previous THEN
        RAISE EXCEPTION 'junction API GET %: next_cursor did not advance', path USING ERRCODE = '22P02';
    END IF;
    RETURN nc;
END
$$;
COMMENT ON FUNCTION junction._next_cursor(jsonb, text, text) IS
  'next_cursor of a page (null at the end); raises if the server repeats the cursor';

-- Check a timeseries page has the documented shape: {"groups": {provider: [group, ...]}, ...}.
CREATE FUNCTION junction._check_groups(page jsonb, path text)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- jsonpath looks without copying the (megabytes of) groups
    IF NOT coalesce(jsonb_path_exists(page, 'strict $.groups ? (@.type() == "object")', '{}', true), false) THEN
        RAISE EXCEPTION 'junction API GET %: response has no "groups" object', path
            USING ERRCODE = '22P02', DETAIL = format('The response starts with: %s', left(page::text, 80));
    END IF;
    IF jsonb_path_exists(page, 'strict $.groups.* ? (@.type() != "array")', '{}', true) THEN
        RAISE EXCEPTION 'junction API GET %: "groups" values must be arrays', path USING ERRCODE = '22P02';
    END IF;
    RETURN page -> 'groups';
END
$$;
COMMENT ON FUNCTION junction._check_groups(jsonb, text) IS 'the groups object of a timeseries page, checked';

-- The paging loop of every timeseries read (junction_fetch collects the pages, junction_sync loads
-- them): the page at cursor, its groups checked, the next cursor, and the next page already asked
-- for, so that the server prepares it while the caller handles this one. spans is for a caller that
-- loads the page with the bulk loader (a first backfill, where junction._samples_bulk_ok()): the
-- groups' data arrays stay in the page's text, and the loader reads them from there.
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

-- ---------------------------------------------------------------------------------------------
-- Reads: junction_fetch and the streams.
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION junction_fetch(resource text, user_id uuid, start_date timestamptz,
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

CREATE FUNCTION junction_fetch_workout_stream(workout_id uuid)
RETURNS jsonb
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT @extschema@.junction_api('GET', format('/v2/timeseries/workouts/%s/stream',
                                                   junction._require(workout_id, 'workout_id'))) $$;
COMMENT ON FUNCTION junction_fetch_workout_stream(uuid) IS
  'a workout''s stream (parallel arrays time, heartrate, cadence, altitude, velocity_smooth, lat, lng, distance, power, ...)';

CREATE FUNCTION junction_fetch_sleep_stream(sleep_id uuid)
RETURNS jsonb
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT @extschema@.junction_api('GET', format('/v2/timeseries/sleep/%s/stream',
                                                   junction._require(sleep_id, 'sleep_id'))) $$;
COMMENT ON FUNCTION junction_fetch_sleep_stream(uuid) IS
  'a sleep session''s stream: {hrv: [...], heartrate: [...], hypnogram: [...], respiratory_rate: [...]}';
