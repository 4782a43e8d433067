-- ---------------------------------------------------------------------------------------------
-- Users, connections, introspection: thin wrappers of the documented endpoints (README, "Users").
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
