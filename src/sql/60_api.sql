-- The Junction REST API from SQL: reads (junction_fetch*), loads into the typed tables
-- (junction_sync*, through the same junction._upsert_* functions as webhooks), users,
-- connections, introspection, the backfill queue the worker drains, and pg_cron scheduling.
--
-- Conventions:
--   * every HTTP call goes through junction_api / junction._api_request (src/http.c): retries,
--     timeouts, cancel, SQLSTATEs, and the key never in a message;
--   * a single Junction object comes back as jsonb; a list comes back as SETOF jsonb, one
--     Junction object per row, exactly as Junction sent it (see doc/api.md for why);
--   * REST loads take their received_seq from junction._next_received_seq(), so webhook and REST
--     data order together ("later received wins");
--   * superusers only (REVOKE ... FROM PUBLIC at the end).

-- ---------------------------------------------------------------------------------------------
-- Small helpers.
-- ---------------------------------------------------------------------------------------------

-- Percent-encode one path segment (everything but A-Z a-z 0-9 - _ ~, so "." and ".." are safe).
CREATE FUNCTION junction._url_segment(s text)
RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(string_agg(CASE WHEN b BETWEEN 48 AND 57 OR b BETWEEN 65 AND 90
                                         OR b BETWEEN 97 AND 122 OR b IN (45, 95, 126)
                                    THEN chr(b)
                                    ELSE '%' || upper(lpad(to_hex(b), 2, '0')) END, '' ORDER BY i), '')
    FROM (SELECT i, get_byte(x.bytes, i) AS b
          FROM (SELECT convert_to(s, 'UTF8') AS bytes) AS x,
               generate_series(0, octet_length(x.bytes) - 1) AS i) AS y
$$;
COMMENT ON FUNCTION junction._url_segment(text) IS 'percent-encode one URL path segment';

-- A timestamp as Junction's query parameters want it: YYYY-MM-DD for date endpoints, else an ISO
-- datetime in UTC to the second (a start rounds down, an end rounds up: no sample is lost).
CREATE FUNCTION junction._api_time(t timestamptz, date_format text, is_end boolean)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE
             WHEN t IS NULL THEN NULL
             WHEN date_format = 'date' THEN to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD')
             ELSE to_char(CASE WHEN is_end AND date_trunc('second', t AT TIME ZONE 'UTC') <> t AT TIME ZONE 'UTC'
                               THEN date_trunc('second', t AT TIME ZONE 'UTC') + interval '1 second'
                               ELSE date_trunc('second', t AT TIME ZONE 'UTC') END,
                          'YYYY-MM-DD"T"HH24:MI:SS"+00:00"')
           END
$$;
COMMENT ON FUNCTION junction._api_time(timestamptz, text, boolean) IS
  'format a query date for Junction: YYYY-MM-DD (date endpoints) or YYYY-MM-DDTHH:MM:SS+00:00';

-- Raise the error junction_api raises for a non-2xx answer (same SQLSTATEs, message, hint),
-- for wrappers that call junction._api_request to treat some statuses as answers.
CREATE FUNCTION junction._raise_http(method text, path text, status integer, body jsonb)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- one implementation (src/http.c), so the detail is redacted as junction_api redacts it
    PERFORM junction._raise_http_error(false, method, path, status, body);
END
$$;
COMMENT ON FUNCTION junction._raise_http(text, text, integer, jsonb) IS
  'raise the SQL error for a non-2xx Junction answer, as junction_api does';

-- The registry row of a resource: its event name (weight), or a timeseries' REST name (body_weight).
CREATE FUNCTION junction._api_resource(resource text)
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
COMMENT ON FUNCTION junction._api_resource(text) IS
  'the junction.resources row of a resource name (event name, or a timeseries REST segment); 22023 if unknown';

-- One Data Access API read of a summary or timeseries resource (one page for timeseries).
-- A profile that does not exist (404) is NULL, not an error. prefetch: only send the request of a
-- summary or timeseries page (junction._api_prefetch) and return NULL; the same call without
-- prefetch later in the transaction receives the answer.
CREATE FUNCTION junction._fetch_page(res junction.resources, user_id uuid, start_date timestamptz,
                                     end_date timestamptz, provider text, next_cursor text,
                                     prefetch boolean DEFAULT false)
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
    RETURN @extschema@.junction_api('GET', path, query);
END
$$;
COMMENT ON FUNCTION junction._fetch_page(junction.resources, uuid, timestamptz, timestamptz, text, text, boolean) IS
  'one read of a summary or grouped timeseries resource (one page); a missing profile is NULL';

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
    path   text := replace(res.rest_path, '{user_id}', coalesce(user_id::text, ''));
    page   jsonb;
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
        page := junction._fetch_page(res, user_id, start_date, end_date, provider, nc);
        groups := junction._check_groups(page, path);
        nc := junction._next_cursor(page, nc, path);
        IF nc IS NOT NULL THEN
            -- the server prepares the next page while this one is collected
            PERFORM junction._fetch_page(res, user_id, start_date, end_date, provider, nc, true);
        END IF;
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

-- ---------------------------------------------------------------------------------------------
-- Users, connections, introspection (docs: junction-api.md section 6).
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION junction_user(user_id uuid)
RETURNS jsonb
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT @extschema@.junction_api('GET', '/v2/user/' || junction._require(user_id, 'user_id')) $$;
COMMENT ON FUNCTION junction_user(uuid) IS 'the Junction user (GET /v2/user/{user_id})';

CREATE FUNCTION junction_user_resolve(client_user_id text)
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
COMMENT ON FUNCTION junction_user_resolve(text) IS 'the Junction user with your client_user_id (GET /v2/user/resolve/{client_user_id})';

CREATE FUNCTION junction_user_create(client_user_id text, fallback_time_zone text DEFAULT NULL,
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
COMMENT ON FUNCTION junction_user_create(text, text, date, date, date) IS
  'create a Junction user, or return the existing one with this client_user_id (idempotent)';

CREATE FUNCTION junction_users()
RETURNS SETOF jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    page_size constant integer := 500;     -- Junction's maximum
    skip      integer := 0;
    page      jsonb;
    n         integer;
BEGIN
    LOOP
        page := @extschema@.junction_api('GET', '/v2/user',
                                         jsonb_build_object('offset', skip, 'limit', page_size));
        IF jsonb_typeof(page -> 'users') IS DISTINCT FROM 'array' THEN
            RAISE EXCEPTION 'junction API GET /v2/user: response has no "users" array' USING ERRCODE = '22P02';
        END IF;
        RETURN QUERY SELECT u FROM jsonb_array_elements(page -> 'users') AS u;
        n := jsonb_array_length(page -> 'users');
        skip := skip + n;
        EXIT WHEN n = 0 OR n < page_size
               OR (jsonb_typeof(page -> 'total') = 'number' AND skip >= (page ->> 'total')::bigint);
    END LOOP;
END
$$;
COMMENT ON FUNCTION junction_users() IS 'every user of the team, one Junction user object per row (all pages of GET /v2/user)';

CREATE FUNCTION junction_user_delete(user_id uuid)
RETURNS jsonb
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT @extschema@.junction_api('DELETE', '/v2/user/' || junction._require(user_id, 'user_id')) $$;
COMMENT ON FUNCTION junction_user_delete(uuid) IS
  'delete a Junction user (Junction keeps it 7 days for undo); the rows already in junction.* stay';

CREATE FUNCTION junction_connections(user_id uuid)
RETURNS SETOF jsonb
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT p
    FROM jsonb_array_elements(@extschema@.junction_api('GET', '/v2/user/providers/'
                                                       || junction._require(user_id, 'user_id')) -> 'providers') AS p
$$;
COMMENT ON FUNCTION junction_connections(uuid) IS
  'the user''s provider connections as Junction lists them now, one object per row (GET /v2/user/providers/{user_id})';

CREATE FUNCTION junction_connection_deregister(user_id uuid, provider text)
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
COMMENT ON FUNCTION junction_connection_deregister(uuid, text) IS
  'deregister a user''s provider connection at Junction and remove it from junction.connections';

CREATE FUNCTION junction_user_refresh(user_id uuid, timeout integer DEFAULT 10)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    path text := '/v2/user/refresh/' || user_id;
    r    record;
BEGIN
    IF user_id IS NULL THEN
        RAISE EXCEPTION 'user_id must not be null' USING ERRCODE = '22004';
    END IF;
    SELECT * INTO r FROM junction._api_request(false, 'POST', path,
                                               jsonb_strip_nulls(jsonb_build_object('timeout', timeout)), NULL);
    -- 200/202 report what was refreshed; a 400 {success: false, ...} is an answer too
    IF r.status BETWEEN 200 AND 299 OR (r.status = 400 AND r.body ? 'success') THEN
        RETURN r.body;
    END IF;
    PERFORM junction._raise_http('POST', path, r.status, r.body);
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION junction_user_refresh(uuid, integer) IS
  'ask Junction to poll the user''s providers now (limited to 8 per hour per user); returns refreshed/in-progress/failed sources';

-- Introspection: follow next_cursor to the end; one row per user, the provider maps of every
-- page merged (a page boundary can split one user's providers).
CREATE FUNCTION junction._introspect(path text, user_id uuid, provider text)
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

CREATE FUNCTION junction_introspect_resources(user_id uuid DEFAULT NULL, provider text DEFAULT NULL)
RETURNS SETOF jsonb
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT junction._introspect('/v2/introspect/resources', user_id, provider) $$;
COMMENT ON FUNCTION junction_introspect_resources(uuid, text) IS
  'per user: {user_id, provider: {slug: {resource: {last_attempt, oldest_data, newest_data, sent_count}}}} (all pages)';

CREATE FUNCTION junction_introspect_historical_pulls(user_id uuid DEFAULT NULL, provider text DEFAULT NULL)
RETURNS SETOF jsonb
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT junction._introspect('/v2/introspect/historical_pull', user_id, provider) $$;
COMMENT ON FUNCTION junction_introspect_historical_pulls(uuid, text) IS
  'per user: {user_id, provider: {slug: {pulled: {resource: {status, range_start, range_end, ...}}, not_pulled: [...]}}} (all pages)';

-- ---------------------------------------------------------------------------------------------
-- Loading: REST responses -> the typed tables, through the webhook path's upserts.
-- ---------------------------------------------------------------------------------------------

-- Items of one timeseries page: one per group {source, data[]}, each with its own received_seq
-- in page order (a later group of the same page wins, like a later webhook).
CREATE FUNCTION junction._page_items(user_id uuid, resource text, groups jsonb)
RETURNS junction.typing_item[]
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT array_agg(ROW(junction._next_received_seq(), user_id, resource, NULL, now(), x.grp)::junction.typing_item
                     ORDER BY x.pord, x.gord)
    FROM (SELECT e.ord AS pord, g.ord AS gord, g.grp
          FROM jsonb_each(groups) WITH ORDINALITY AS e(key, value, ord)
          CROSS JOIN LATERAL jsonb_array_elements(e.value) WITH ORDINALITY AS g(grp, ord)
          ORDER BY e.ord, g.ord) AS x
$$;
COMMENT ON FUNCTION junction._page_items(uuid, text, jsonb) IS
  'typing items (one per group) of one grouped timeseries page';

-- Queue the streams of the user's workouts in a range (those not queued or fetched yet).
CREATE FUNCTION junction._queue_workout_streams(user_id uuid, start_date timestamptz,
                                                end_date timestamptz, provider text)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    page  jsonb;
    items junction.typing_item[];
BEGIN
    page := junction._fetch_page(junction._api_resource('workouts'), user_id, start_date, end_date,
                                 provider, NULL);
    SELECT array_agg(ROW(junction._next_received_seq(), user_id, 'workout_stream', NULL, now(),
                         jsonb_build_object('user_id', user_id, 'workout_id', w.obj ->> 'id',
                                            'provider_id', w.obj -> 'provider_id',
                                            'sport', w.obj -> 'sport', 'source', w.obj -> 'source')
                        )::junction.typing_item ORDER BY w.ord)
      INTO items
    FROM jsonb_array_elements(CASE jsonb_typeof(page -> 'workouts') WHEN 'array' THEN page -> 'workouts'
                                   ELSE '[]' END) WITH ORDINALITY AS w(obj, ord)
    WHERE w.obj ->> 'id' IS NOT NULL
      AND NOT EXISTS (SELECT FROM junction.workout_streams AS s
                      WHERE s.user_id = _queue_workout_streams.user_id
                        AND s.workout_id = (w.obj ->> 'id')::uuid);
    IF items IS NULL THEN
        RETURN 0;
    END IF;
    RETURN junction._upsert_workout_streams(items);
END
$$;
COMMENT ON FUNCTION junction._queue_workout_streams(uuid, timestamptz, timestamptz, text) IS
  'add a pending junction.workout_streams row for each workout in the range that has none';

-- Fetch one workout stream into its junction.workout_streams row (which must exist).
CREATE FUNCTION junction._load_workout_stream(user_id uuid, workout_id uuid)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    stream jsonb := @extschema@.junction_fetch_workout_stream(workout_id);
    n      bigint;
BEGIN
    UPDATE junction.workout_streams AS s
    SET data = stream, fetch_status = 'done', fetch_error = NULL, sqlstate = NULL,
        next_attempt_at = NULL, fetched_at = now(), updated_at = now()
    WHERE s.user_id = _load_workout_stream.user_id AND s.workout_id = _load_workout_stream.workout_id;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
COMMENT ON FUNCTION junction._load_workout_stream(uuid, uuid) IS
  'fetch a workout stream and store it in junction.workout_streams.data (fetch_status done)';

-- All pages of one timeseries resource over a range into junction.samples; conflicts as for
-- junction._upsert_samples. Returns the rows written.
CREATE FUNCTION junction._sync_timeseries(res junction.resources, user_id uuid, start_date timestamptz,
                                          end_date timestamptz, provider text, conflicts boolean)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    path  text := replace(res.rest_path, '{user_id}', coalesce(user_id::text, ''));
    page  jsonb;
    items junction.typing_item[];
    nc    text;
    total bigint := 0;
BEGIN
    page := junction._fetch_page(res, user_id, start_date, end_date, provider, NULL);
    LOOP
        items := junction._page_items(user_id, res.name, junction._check_groups(page, path));
        nc := junction._next_cursor(page, nc, path);
        IF nc IS NOT NULL THEN
            -- the server prepares the next page while this one is loaded
            PERFORM junction._fetch_page(res, user_id, start_date, end_date, provider, nc, true);
        END IF;
        IF items IS NOT NULL THEN
            total := total + junction._upsert_samples(items, conflicts);
        END IF;
        EXIT WHEN nc IS NULL;
        page := junction._fetch_page(res, user_id, start_date, end_date, provider, nc);
    END LOOP;
    RETURN total;
END
$$;
COMMENT ON FUNCTION junction._sync_timeseries(junction.resources, uuid, timestamptz, timestamptz, text, boolean) IS
  'fetch every page of one timeseries resource over a range and load it into junction.samples';

-- Load one resource of one user over a range into the typed tables; returns rows written.
-- Timeseries are loaded page by page as they arrive (never the whole range in memory).
-- workout_stream queues the range's workouts' streams, and fetches them too when fetch_streams.
CREATE FUNCTION junction._sync_resource(user_id uuid, resource text, start_date timestamptz,
                                        end_date timestamptz, provider text,
                                        fetch_streams boolean DEFAULT true)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    res    junction.resources := junction._api_resource(resource);
    path   text := replace(res.rest_path, '{user_id}', coalesce(user_id::text, ''));
    page   jsonb;
    items  junction.typing_item[];
    total  bigint := 0;
    fresh  boolean;
    s      record;
BEGIN
    IF user_id IS NULL THEN
        RAISE EXCEPTION 'user_id must not be null' USING ERRCODE = '22004';
    END IF;
    IF res.kind = 'timeseries' THEN
        -- Fast path: when the user has no sample of this resource in or near the range (a first
        -- backfill), the pages go in with plain INSERTs, in one subtransaction. If a key exists
        -- after all (a concurrent writer, a sample far outside the range, one key on two pages),
        -- unique_violation rolls that back and everything is loaded again with ON CONFLICT.
        -- Skipped when one more subtransaction would overflow this backend's subxid cache.
        fresh := junction._subxact_room() AND NOT EXISTS (
            SELECT FROM junction.samples AS x
            WHERE x.user_id = _sync_resource.user_id AND x.resource = res.name
              AND x.time >= start_date - interval '2 days'
              AND x.time <= coalesce(end_date, 'infinity') + interval '2 days');
        IF fresh THEN
            BEGIN
                total := junction._sync_timeseries(res, user_id, start_date, end_date, provider, false);
            EXCEPTION WHEN unique_violation THEN
                fresh := false;
            END;
        END IF;
        IF NOT fresh THEN
            total := junction._sync_timeseries(res, user_id, start_date, end_date, provider, true);
        END IF;
    ELSIF res.kind = 'summary' THEN
        page := junction._fetch_page(res, user_id, start_date, end_date, provider, NULL);
        IF page IS NOT NULL AND res.response_key IS NOT NULL
           AND jsonb_typeof(page -> res.response_key) IS DISTINCT FROM 'array' THEN
            RAISE EXCEPTION 'junction API GET %: response has no "%" array', path, res.response_key
                USING ERRCODE = '22P02', DETAIL = format('The response starts with: %s', left(page::text, 80));
        END IF;
        SELECT array_agg(ROW(junction._next_received_seq(), user_id, res.name, NULL, now(), o.obj)::junction.typing_item
                         ORDER BY o.ord)
          INTO items
        FROM jsonb_array_elements(CASE
                                    WHEN page IS NULL THEN '[]'
                                    WHEN res.response_key IS NOT NULL THEN page -> res.response_key
                                    WHEN jsonb_typeof(page) = 'array' THEN page
                                    ELSE jsonb_build_array(page)
                                  END) WITH ORDINALITY AS o(obj, ord);
        IF items IS NOT NULL THEN
            total := junction._upsert_summaries(items);
        END IF;
    ELSIF res.name = 'workout_stream' THEN
        total := junction._queue_workout_streams(user_id, start_date, end_date, provider);
        IF fetch_streams THEN
            total := 0;
            FOR s IN SELECT w.workout_id FROM junction.workout_streams AS w
                     WHERE w.user_id = _sync_resource.user_id AND w.fetch_status = 'pending'
                       AND (_sync_resource.provider IS NULL OR w.provider = _sync_resource.provider)
                     ORDER BY w.workout_id
            LOOP
                total := total + junction._load_workout_stream(user_id, s.workout_id);
            END LOOP;
        END IF;
    ELSE
        RAISE EXCEPTION 'cannot sync resource %', res.name USING ERRCODE = '22023';
    END IF;
    RETURN total;
END
$$;
COMMENT ON FUNCTION junction._sync_resource(uuid, text, timestamptz, timestamptz, text, boolean) IS
  'fetch one resource of one user over a range and upsert it into the typed tables; returns rows written';

CREATE FUNCTION junction_sync(user_id uuid, resources text[] DEFAULT NULL,
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
        resource := r;
        rows_loaded := junction._sync_resource(uid, r, start_date, end_date, provider, true);
        RETURN NEXT;
    END LOOP;
END
$$;
COMMENT ON FUNCTION junction_sync(uuid, text[], timestamptz, timestamptz, text) IS
  'fetch resources (default: every summary and timeseries) of a user over a range and upsert them into the typed tables; rows written per resource';

-- ---------------------------------------------------------------------------------------------
-- Connections: reconcile junction.connections with what Junction lists.
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION junction._refresh_user_connections(user_id uuid)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    -- drawn before the request: rows a webhook writes meanwhile are newer and stay
    before bigint := junction._next_received_seq();
    answer jsonb := @extschema@.junction_api('GET', '/v2/user/providers/' || user_id);
    items  junction.typing_item[];
    n      bigint := 0;
BEGIN
    IF jsonb_typeof(answer -> 'providers') IS DISTINCT FROM 'array' THEN
        RAISE EXCEPTION 'junction API GET /v2/user/providers/%: response has no "providers" array', user_id
            USING ERRCODE = '22P02';
    END IF;
    SELECT array_agg(ROW(junction._next_received_seq(), user_id, 'connection', NULL, now(), p.obj)::junction.typing_item
                     ORDER BY p.ord)
      INTO items
    FROM jsonb_array_elements(answer -> 'providers') WITH ORDINALITY AS p(obj, ord)
    WHERE p.obj ->> 'slug' IS NOT NULL;
    IF items IS NOT NULL THEN
        n := junction._upsert_connections(items);
    END IF;
    DELETE FROM junction.connections AS c
    WHERE c.user_id = _refresh_user_connections.user_id
      AND c.received_seq < before
      AND c.provider NOT IN (SELECT p.obj ->> 'slug'
                             FROM jsonb_array_elements(answer -> 'providers') AS p(obj)
                             WHERE p.obj ->> 'slug' IS NOT NULL);
    RETURN n;
END
$$;
COMMENT ON FUNCTION junction._refresh_user_connections(uuid) IS
  'upsert the user''s connections from GET /v2/user/providers and delete the ones Junction no longer lists';

CREATE FUNCTION junction_refresh_connections(user_id uuid DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    u    uuid;
    done integer := 0;
BEGIN
    IF user_id IS NOT NULL THEN
        PERFORM junction._refresh_user_connections(user_id);
        RETURN 1;
    END IF;
    FOR u IN SELECT DISTINCT c.user_id FROM junction.connections AS c ORDER BY 1 LOOP
        BEGIN
            PERFORM junction._refresh_user_connections(u);
            done := done + 1;
        EXCEPTION WHEN undefined_object THEN
            -- 404: the user is gone at Junction (or unknown); keep our rows, say so
            RAISE WARNING 'junction_refresh_connections: user % not found at Junction; skipped', u;
        END;
    END LOOP;
    RETURN done;
END
$$;
COMMENT ON FUNCTION junction_refresh_connections(uuid) IS
  'reconcile junction.connections with Junction''s list for one user, or every user in junction.connections; returns users reconciled';

-- ---------------------------------------------------------------------------------------------
-- The backfill queue: historical.data.* completions (junction.backfills) and workout stream
-- notifications (junction.workout_streams). The worker runs claim / run / failed in three
-- transactions; junction_backfill_now() runs the same loop in the caller's transaction.
-- ---------------------------------------------------------------------------------------------
ALTER TABLE junction.backfills
    ADD COLUMN next_attempt_at timestamptz,
    ADD COLUMN sqlstate text;
COMMENT ON COLUMN junction.backfills.next_attempt_at IS 'a failed fetch is retried from this time on (null: now)';
COMMENT ON COLUMN junction.backfills.sqlstate IS 'SQLSTATE of the last failed fetch';
ALTER TABLE junction.workout_streams
    ADD COLUMN next_attempt_at timestamptz,
    ADD COLUMN sqlstate text;
COMMENT ON COLUMN junction.workout_streams.next_attempt_at IS 'a failed fetch is retried from this time on (null: now)';
COMMENT ON COLUMN junction.workout_streams.sqlstate IS 'SQLSTATE of the last failed fetch';

CREATE TYPE junction.backfill_job AS (
    kind       text,          -- 'range' (junction.backfills) or 'workout_stream' (junction.workout_streams)
    user_id    uuid,
    provider   text,
    resource   text,
    start_date timestamptz,
    end_date   timestamptz,
    workout_id uuid
);
COMMENT ON TYPE junction.backfill_job IS 'one claimed backfill: a range of one resource, or one workout stream';

-- Claim at most one due job: mark it running and count the attempt. Nothing is claimed while
-- no API key is configured (the jobs would only fail).
CREATE FUNCTION junction._backfill_claim()
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
COMMENT ON FUNCTION junction._backfill_claim() IS
  'claim one due backfill job (FOR UPDATE SKIP LOCKED), mark it running, count the attempt; none while no API key is configured';

-- Run a claimed job: load exactly that user/provider/resource/range, or fetch that workout
-- stream; mark it done (unless a newer event re-queued it meanwhile). Returns rows loaded.
CREATE FUNCTION junction._backfill_run(kind text, user_id uuid, provider text, resource text,
                                       start_date timestamptz, end_date timestamptz, workout_id uuid)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n bigint;
BEGIN
    IF kind = 'range' THEN
        IF NOT EXISTS (SELECT FROM junction.resources AS r
                       WHERE r.name = _backfill_run.resource AND r.event_prefix = 'daily.data') THEN
            -- a resource we do not type (yet): nothing to fetch, and retrying will not help
            UPDATE junction.backfills AS b
            SET fetch_status = 'unsupported', rows_loaded = 0, next_attempt_at = NULL, updated_at = now(),
                fetch_error = format('resource %s is not in junction.resources', quote_literal(_backfill_run.resource))
            WHERE b.user_id = _backfill_run.user_id AND b.provider = _backfill_run.provider
              AND b.resource = _backfill_run.resource AND b.fetch_status = 'running';
            RETURN 0;
        END IF;
        -- streams of a historical pull are queued, one job each
        n := junction._sync_resource(user_id, resource, start_date, end_date, provider, false);
        UPDATE junction.backfills AS b
        SET fetch_status = 'done', rows_loaded = n, fetch_error = NULL, sqlstate = NULL,
            next_attempt_at = NULL, updated_at = now()
        WHERE b.user_id = _backfill_run.user_id AND b.provider = _backfill_run.provider
          AND b.resource = _backfill_run.resource AND b.fetch_status = 'running';
        RETURN n;
    ELSIF kind = 'workout_stream' THEN
        IF workout_id IS NULL THEN
            RAISE EXCEPTION 'a workout_stream job needs a workout_id' USING ERRCODE = '22004';
        END IF;
        UPDATE junction.workout_streams AS s
        SET data = @extschema@.junction_fetch_workout_stream(_backfill_run.workout_id),
            fetch_status = 'done', fetch_error = NULL, sqlstate = NULL, next_attempt_at = NULL,
            fetched_at = now(), updated_at = now()
        WHERE s.user_id = _backfill_run.user_id AND s.workout_id = _backfill_run.workout_id
          AND s.fetch_status = 'running';
        GET DIAGNOSTICS n = ROW_COUNT;      -- 0 if a newer notification re-queued it meanwhile
        RETURN n;
    END IF;
    RAISE EXCEPTION 'unknown backfill job kind %', coalesce(quote_literal(kind), 'NULL') USING ERRCODE = '22023';
END
$$;
COMMENT ON FUNCTION junction._backfill_run(text, uuid, text, text, timestamptz, timestamptz, uuid) IS
  'run one claimed backfill job (a range of a resource, or a workout stream) and mark it done; returns rows loaded';

CREATE FUNCTION junction._backfill_run(job junction.backfill_job)
RETURNS bigint
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT junction._backfill_run(job.kind, job.user_id, job.provider, job.resource,
                                    job.start_date, job.end_date, job.workout_id) $$;
COMMENT ON FUNCTION junction._backfill_run(junction.backfill_job) IS 'junction._backfill_run for a claimed job row';

-- Record a failed run: back to pending with a backoff (30 s, 2 min) while attempts < 3, else
-- failed. Returns the job's new fetch_status (null if it was re-queued meanwhile).
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

CREATE FUNCTION junction._backfill_failed(job junction.backfill_job, error text, sqlstate text)
RETURNS text
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT junction._backfill_failed(job.kind, job.user_id, job.provider, job.resource,
                                       job.start_date, job.end_date, job.workout_id, error, sqlstate) $$;
COMMENT ON FUNCTION junction._backfill_failed(junction.backfill_job, text, text) IS
  'junction._backfill_failed for a claimed job row';

-- At worker start nothing can be running: a job left running was interrupted (crash, restart).
CREATE FUNCTION junction._backfill_reset_running()
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
    RETURN a + b;
END
$$;
COMMENT ON FUNCTION junction._backfill_reset_running() IS
  'put running backfill jobs back to pending (the worker calls it at start); returns how many';

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
-- Every user, and pg_cron.
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION junction_sync_all(days integer DEFAULT 2, refresh_connections boolean DEFAULT true)
RETURNS TABLE (user_id uuid, rows_loaded bigint, error text)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    u     uuid;
    since timestamptz := now() - make_interval(days => days);
    msg   text;
    state text;
BEGIN
    IF days IS NULL OR days < 1 THEN
        RAISE EXCEPTION 'days must be at least 1' USING ERRCODE = '22023';
    END IF;
    IF refresh_connections THEN
        PERFORM @extschema@.junction_refresh_connections(NULL);
    END IF;
    FOR u IN SELECT DISTINCT c.user_id FROM junction.connections AS c ORDER BY 1 LOOP
        user_id := u;
        error := NULL;
        BEGIN
            SELECT coalesce(sum(s.rows_loaded), 0)::bigint INTO rows_loaded
            FROM @extschema@.junction_sync(u, NULL, since, now(), NULL) AS s;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, state = RETURNED_SQLSTATE;
            IF state = '28000' THEN
                RAISE;          -- no or a wrong key: every user would fail the same way
            END IF;
            rows_loaded := 0;
            error := msg;
            RAISE WARNING 'junction_sync_all: user %: %', u, msg;
        END;
        RETURN NEXT;
    END LOOP;
END
$$;
COMMENT ON FUNCTION junction_sync_all(integer, boolean) IS
  'reconcile connections, then sync every user in junction.connections over the last days days; one row per user (a failing user is reported, not fatal)';

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

-- ---------------------------------------------------------------------------------------------
-- Superusers only (grant EXECUTE to a role explicitly to delegate).
-- ---------------------------------------------------------------------------------------------
REVOKE ALL ON FUNCTION
    junction._url_segment(text),
    junction._api_time(timestamptz, text, boolean),
    junction._raise_http(text, text, integer, jsonb),
    junction._api_resource(text),
    junction._fetch_page(junction.resources, uuid, timestamptz, timestamptz, text, text, boolean),
    junction._next_cursor(jsonb, text, text),
    junction._check_groups(jsonb, text),
    junction_fetch(text, uuid, timestamptz, timestamptz, text),
    junction_fetch_workout_stream(uuid),
    junction_fetch_sleep_stream(uuid),
    junction_user(uuid),
    junction_user_resolve(text),
    junction_user_create(text, text, date, date, date),
    junction_users(),
    junction_user_delete(uuid),
    junction_connections(uuid),
    junction_connection_deregister(uuid, text),
    junction_user_refresh(uuid, integer),
    junction._introspect(text, uuid, text),
    junction_introspect_resources(uuid, text),
    junction_introspect_historical_pulls(uuid, text),
    junction._page_items(uuid, text, jsonb),
    junction._queue_workout_streams(uuid, timestamptz, timestamptz, text),
    junction._load_workout_stream(uuid, uuid),
    junction._sync_resource(uuid, text, timestamptz, timestamptz, text, boolean),
    junction_sync(uuid, text[], timestamptz, timestamptz, text),
    junction._refresh_user_connections(uuid),
    junction_refresh_connections(uuid),
    junction._backfill_claim(),
    junction._backfill_run(text, uuid, text, text, timestamptz, timestamptz, uuid),
    junction._backfill_run(junction.backfill_job),
    junction._backfill_failed(text, uuid, text, text, timestamptz, timestamptz, uuid, text, text),
    junction._backfill_failed(junction.backfill_job, text, text),
    junction._backfill_reset_running(),
    junction_backfill_now(integer),
    junction_sync_all(integer, boolean),
    junction_schedule_sync(text, integer, text),
    junction_unschedule_sync(text)
FROM PUBLIC;
