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
-- junction.daily is recomputed once, for the hours of every page, after the last page: not page
-- by page (on Citus each recomputation is a few distributed statements, each planned, run on the
-- shards and committed on every worker). The user's junction.daily turn is taken then, after
-- the samples are written, as junction._daily_flush takes it after the batches it recomputes.
CREATE FUNCTION junction._sync_timeseries(res junction.resources, user_id uuid, start_date timestamptz,
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
-- Every user.
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
