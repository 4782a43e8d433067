-- Webhook endpoints through the Junction Management API (create, list, update, delete,
-- headers, signing secret, rotation), and junction.webhook_secrets kept in step with the
-- endpoints' signing secrets so that a rotation never loses a delivery.
--
-- Results are rows: a webhook is a junction.webhook_endpoint, headers are
-- (name, value, sensitive) rows, a secret sync is one (webhook_id, secret_added,
-- previous_secrets, previous_expire_at) row.  Secrets are never printed in notices or
-- errors.  Everything here is for superusers and for members of junction_admin.

-- A webhook endpoint as the Management API describes it.
CREATE TYPE junction.webhook_endpoint AS (
    id           text,
    url          text,
    description  text,
    filter_types text[],        -- NULL: every event type
    disabled     boolean,
    rate_limit   integer,       -- NULL: no limit
    created_at   timestamptz,
    updated_at   timestamptz
);
COMMENT ON TYPE junction.webhook_endpoint IS
  'a Junction webhook endpoint (Management API Webhook object)';

-- The role that may manage webhooks without being a superuser.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'junction_admin') THEN
        CREATE ROLE junction_admin NOLOGIN;
    END IF;
END
$$;

-- One Management API call; raises on a non-2xx answer like junction_api() does on the data
-- API, through the same C code (junction._raise_http_error).  `redact` lists strings (secrets
-- sent in the request) never to repeat in the error; the keys, the stored signing secrets and
-- anything shaped like a whsec_ secret are always redacted.
CREATE FUNCTION junction._management(method text, path text, query jsonb DEFAULT NULL,
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
COMMENT ON FUNCTION junction._management(text, text, jsonb, jsonb, text[]) IS
  'one Management API request; the response body, or an error for a non-2xx answer';

-- A webhook id as a path segment (Svix endpoint ids and uids: letters, digits, _ - .).
CREATE FUNCTION junction._webhook_id(id text) RETURNS text
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF id IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22004', MESSAGE = 'webhook id must not be null';
    END IF;
    IF id !~ '^[A-Za-z0-9_.-]+$' OR length(id) > 256 OR id ~ '\.\.' OR id = '.' THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'invalid webhook id',
            HINT = 'A webhook id is the id Junction returns for the endpoint (ep_...): '
                   'letters, digits, "_", "-" and ".".';
    END IF;
    RETURN id;
END
$$;

-- /v1/org/{org_id}/team/{team_id}/{environment}/webhook: the team's webhook collection.
CREATE FUNCTION junction._webhooks_path()
RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    org  text := coalesce(current_setting('junction.org_id', true), '');
    team text := coalesce(current_setting('junction.team_id', true), '');
    env  text := coalesce(nullif(current_setting('junction.environment', true), ''), 'production');
    g    text;
    v    text;
BEGIN
    FOREACH g IN ARRAY ARRAY['junction.org_id', 'junction.team_id'] LOOP
        v := CASE g WHEN 'junction.org_id' THEN org ELSE team END;
        IF v = '' THEN
            RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = g || ' is not set',
                HINT = 'The Management API addresses webhooks by organisation and team. As a superuser: '
                       'ALTER SYSTEM SET junction.org_id = ''<org uuid>''; '
                       'ALTER SYSTEM SET junction.team_id = ''<team uuid>''; SELECT pg_reload_conf();';
        END IF;
        BEGIN
            PERFORM v::uuid;
        EXCEPTION WHEN invalid_text_representation THEN
            RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = g || ' is not a UUID',
                HINT = 'Junction organisation and team ids are UUIDs (Dashboard, Team settings).';
        END;
    END LOOP;
    RETURN format('/v1/org/%s/team/%s/%s/webhook', org::uuid, team::uuid, env);
END
$$;

-- .../webhook/{id}[suffix]
CREATE FUNCTION junction._webhook_path(id text, suffix text DEFAULT '')
RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $$ SELECT junction._webhooks_path() || '/' || junction._webhook_id(id) || coalesce(suffix, '') $$;

-- The Management API's Webhook object as a row.
CREATE FUNCTION junction._webhook_row(w jsonb) RETURNS junction.webhook_endpoint
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp
AS $$ SELECT jsonb_populate_record(NULL::junction.webhook_endpoint, w) $$;

-- A webhook's custom headers as rows; sensitive headers are named but their values withheld.
CREATE FUNCTION junction._webhook_headers(id text)
RETURNS TABLE (name text, value text, sensitive boolean)
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    h jsonb := junction._management('GET', junction._webhook_path(id, '/headers'));
BEGIN
    RETURN QUERY
    SELECT n.k, h -> 'headers' ->> n.k, coalesce(h -> 'sensitive' ? n.k, false)
      FROM (SELECT jsonb_object_keys(coalesce(h -> 'headers', '{}')) AS k
            UNION
            SELECT jsonb_array_elements_text(coalesce(h -> 'sensitive', '[]'))) n
     ORDER BY n.k;
END
$$;

-- Make junction.webhook_secrets hold the endpoint's current secret, active, beside its
-- previous ones; those stop verifying after `grace` (Svix signs with old and new for 24 h).
-- The caller holds the endpoint's lock (junction._webhook_lock).
CREATE FUNCTION junction._webhook_secret_sync(wid text, grace interval,
                                              OUT webhook_id text, OUT secret_added boolean,
                                              OUT previous_secrets integer,
                                              OUT previous_expire_at timestamptz)
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cur        text;
    was_active boolean;
BEGIN
    cur := junction._management('GET', junction._webhook_path(wid, '/secret')) ->> 'key';
    IF cur IS NULL OR cur = '' OR NOT junction._secret_is_valid(cur) THEN
        RAISE EXCEPTION USING ERRCODE = '38000',
            MESSAGE = 'junction Management API returned no usable signing secret for this webhook',
            HINT = 'Expected {"key": "whsec_..."} from GET .../webhook/{id}/secret.';
    END IF;
    SELECT s.expires_at IS NULL OR s.expires_at > now() INTO was_active
      FROM junction.webhook_secrets s WHERE s.secret = cur;
    INSERT INTO junction.webhook_secrets AS s (secret, description, webhook_id)
    VALUES (cur, 'Junction webhook ' || wid, wid)
    ON CONFLICT (secret) DO UPDATE
       SET expires_at = NULL, webhook_id = EXCLUDED.webhook_id,
           description = coalesce(s.description, EXCLUDED.description);
    -- previous secrets: keep verifying for the grace period, never longer than already set
    UPDATE junction.webhook_secrets s SET expires_at = now() + grace
     WHERE s.webhook_id = wid AND s.secret <> cur
       AND (s.expires_at IS NULL OR s.expires_at > now() + grace);
    SELECT count(*)::integer, max(s.expires_at) INTO previous_secrets, previous_expire_at
      FROM junction.webhook_secrets s
     WHERE s.webhook_id = wid AND s.secret <> cur AND s.expires_at > now();
    webhook_id := wid;
    secret_added := NOT coalesce(was_active, false);
END
$$;

-- Serialise secret changes per endpoint (concurrent syncs and rotations).
CREATE FUNCTION junction._webhook_lock(id text) RETURNS void
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$ SELECT pg_advisory_xact_lock(hashtextextended('junction.webhook_secret:' || id, 0)) $$;

CREATE FUNCTION junction._check_grace(grace interval) RETURNS interval
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF grace IS NULL OR grace < interval '0' THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'grace must be a non-negative interval',
            HINT = 'Svix signs with the old and the new secret for 24 hours after a rotation.';
    END IF;
    RETURN grace;
END
$$;

CREATE FUNCTION junction._check_new_secret(secret text, what text) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF secret IS NOT NULL AND NOT junction._secret_is_valid(secret) THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = what || ' is not a valid webhook signing secret',
            HINT = 'A signing secret is whsec_ followed by the base64 of 24 to 64 random bytes; '
                   'omit it to let Junction generate one.';
    END IF;
END
$$;


-- ---------------------------------------------------------------- user-facing functions

CREATE FUNCTION junction_webhooks(page_size integer DEFAULT NULL)
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

CREATE FUNCTION junction_webhook(id text)
RETURNS junction.webhook_endpoint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN junction._webhook_row(junction._management('GET', junction._webhook_path(id)));
END
$$;
COMMENT ON FUNCTION junction_webhook(text) IS 'one webhook endpoint';

CREATE FUNCTION junction_webhook_create(url text, filter_types text[] DEFAULT NULL,
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
COMMENT ON FUNCTION junction_webhook_create(text, text[], text, integer, boolean, text) IS
  'create a webhook endpoint; filter_types NULL or empty: every event type; secret NULL: Junction generates one';

CREATE FUNCTION junction_webhook_update(id text, url text DEFAULT NULL,
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

CREATE FUNCTION junction_webhook_delete(id text, grace interval DEFAULT '24 hours')
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM junction._check_grace(grace);
    PERFORM junction._webhook_lock(junction._webhook_id(id));
    PERFORM junction._management('DELETE', junction._webhook_path(id));
    -- its secrets only need to verify what is already on its way or waiting in the inbox
    UPDATE junction.webhook_secrets s SET expires_at = now() + grace
     WHERE s.webhook_id = id AND (s.expires_at IS NULL OR s.expires_at > now() + grace);
END
$$;
COMMENT ON FUNCTION junction_webhook_delete(text, interval) IS
  'delete a webhook endpoint; its secrets in junction.webhook_secrets stop verifying after grace';

CREATE FUNCTION junction_webhook_headers(id text)
RETURNS TABLE (name text, value text, sensitive boolean)
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM junction._webhook_headers(id) $$;
COMMENT ON FUNCTION junction_webhook_headers(text) IS
  'the custom headers Junction sends to a webhook endpoint (values of sensitive ones withheld)';

CREATE FUNCTION junction_webhook_set_headers(id text, headers jsonb)
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
COMMENT ON FUNCTION junction_webhook_set_headers(text, jsonb) IS
  'replace the custom headers of a webhook endpoint; returns them as now stored';

CREATE FUNCTION junction_webhook_secret(id text)
RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN junction._management('GET', junction._webhook_path(id, '/secret')) ->> 'key';
END
$$;
COMMENT ON FUNCTION junction_webhook_secret(text) IS
  'the current signing secret (whsec_...) of a webhook endpoint';

CREATE FUNCTION junction_webhook_secret_sync(id text, grace interval DEFAULT '24 hours')
RETURNS TABLE (webhook_id text, secret_added boolean, previous_secrets integer,
               previous_expire_at timestamptz)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM junction._check_grace(grace);
    PERFORM junction._webhook_lock(junction._webhook_id(id));
    RETURN QUERY SELECT * FROM junction._webhook_secret_sync(id, grace);
END
$$;
COMMENT ON FUNCTION junction_webhook_secret_sync(text, interval) IS
  'store the endpoint''s current signing secret in junction.webhook_secrets (active) beside its previous ones, which keep verifying for grace';

CREATE FUNCTION junction_webhook_secret_rotate(id text, new_secret text DEFAULT NULL,
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
COMMENT ON FUNCTION junction_webhook_secret_rotate(text, text, interval) IS
  'rotate the endpoint''s signing secret at Junction (new_secret NULL: Junction generates it), then sync: old and new both verify for grace';

CREATE FUNCTION junction_webhook_secrets(id text DEFAULT NULL)
RETURNS TABLE (webhook_id text, fingerprint text, description text, created_at timestamptz,
               expires_at timestamptz, active boolean)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT s.webhook_id, left(encode(sha256(convert_to(s.secret, 'UTF8')), 'hex'), 12),
           s.description, s.created_at, s.expires_at,
           s.expires_at IS NULL OR s.expires_at > now()
      FROM junction.webhook_secrets s
     WHERE $1 IS NULL OR s.webhook_id = $1
     ORDER BY s.webhook_id NULLS LAST, s.created_at, 2
$$;
COMMENT ON FUNCTION junction_webhook_secrets(text) IS
  'the stored signing secrets (of one endpoint, or all) without the secrets: fingerprint = first 12 hex of sha256';

CREATE FUNCTION junction_webhook_secrets_retire(before timestamptz DEFAULT now(), id text DEFAULT NULL)
RETURNS integer
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    WITH gone AS (
        DELETE FROM junction.webhook_secrets s
         WHERE s.expires_at <= $1 AND ($2 IS NULL OR s.webhook_id = $2)
        RETURNING 1)
    SELECT count(*)::integer FROM gone
$$;
COMMENT ON FUNCTION junction_webhook_secrets_retire(timestamptz, text) IS
  'delete the signing secrets (of one endpoint, or all) that expire at or before `before`; returns how many';


-- ---------------------------------------------------------------- privileges
-- Superusers, and roles granted junction_admin.  The functions run as the extension's owner,
-- so junction_admin needs no access to junction.webhook_secrets or to the key GUCs.
GRANT USAGE ON SCHEMA junction TO junction_admin;
GRANT EXECUTE ON FUNCTION
    junction_webhooks(integer),
    junction_webhook(text),
    junction_webhook_create(text, text[], text, integer, boolean, text),
    junction_webhook_update(text, text, text, text[], integer, boolean, text[]),
    junction_webhook_delete(text, interval),
    junction_webhook_headers(text),
    junction_webhook_set_headers(text, jsonb),
    junction_webhook_secret(text),
    junction_webhook_secret_sync(text, interval),
    junction_webhook_secret_rotate(text, text, interval),
    junction_webhook_secrets(text),
    junction_webhook_secrets_retire(timestamptz, text)
  TO junction_admin;
