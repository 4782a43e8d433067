-- The Junction API client (C, src/http.c): every read and write of the REST API goes through here.

CREATE FUNCTION junction_api(method text, path text, query jsonb DEFAULT NULL, body jsonb DEFAULT NULL)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'junction_api' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION junction_api(text, text, jsonb, jsonb) IS
  'call any Junction API endpoint (path like /v2/user/...; query and body as jsonb); errors on non-2xx';

-- Send a data API GET now and return; the next identical junction_api call in this transaction
-- receives its answer (junction_sync asks for the next page before loading the current one).
CREATE FUNCTION junction._api_prefetch(path text, query jsonb DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'junction_api_prefetch' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION junction._api_prefetch(text, jsonb) IS
  'send a Data Access API GET in the background; the next identical junction_api call in this transaction takes its answer';

-- GET of one timeseries page for the bulk loader: junction_api, but each group's data array is left
-- in the page's text, a marker in its place (src/samples.c; junction._fetch_page(spans => true)).
CREATE FUNCTION junction._api_page(path text, query jsonb DEFAULT NULL)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'junction_api_page' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION junction._api_page(text, jsonb) IS
  'GET one timeseries page as jsonb with its groups'' data arrays left in its text (read by the bulk loader); otherwise as junction_api';

-- The same for a body at hand (a test, a page saved from the API): the page as junction._api_page
-- returns it.
CREATE FUNCTION junction._page_from_text(body text)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'junction_page_from_text' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION junction._page_from_text(text) IS
  'a timeseries page as junction._api_page returns it (groups'' data arrays left in its text), from its body';

-- (status, body) without raising on HTTP statuses: for wrappers that treat some as answers.
CREATE FUNCTION junction._api_request(management boolean, method text, path text,
                                      query jsonb DEFAULT NULL, body jsonb DEFAULT NULL,
                                      OUT status integer, OUT body jsonb)
RETURNS record
AS 'MODULE_PATHNAME', 'junction_api_request' LANGUAGE C VOLATILE;

-- The base URL requests go to with the current settings (override, environment/region, key prefix).
CREATE FUNCTION junction._api_base_url(management boolean DEFAULT false) RETURNS text
AS 'MODULE_PATHNAME', 'junction_api_base_url_of' LANGUAGE C STABLE STRICT;

-- The one redaction of API answers (C, shared by the data and the Management API): the keys
-- (settings or files), the signing secrets in junction.webhook_secrets with and without their
-- whsec_ prefix, the strings in extra, and anything shaped like whsec_<base64>.
CREATE FUNCTION junction._redact(s text, extra text[] DEFAULT NULL) RETURNS text
AS 'MODULE_PATHNAME', 'junction_redact_sql' LANGUAGE C VOLATILE;

-- Raise the error junction_api raises for a non-2xx answer (SQLSTATE, message, redacted
-- detail, hint), for SQL wrappers of junction._api_request.  redact: strings the request sent.
CREATE FUNCTION junction._raise_http_error(management boolean, method text, path text,
                                           status integer, body jsonb, redact text[] DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'junction_raise_http_error_sql' LANGUAGE C VOLATILE;

-- Whether requests have a key to send (junction.api_key / _file, or the management ones).
CREATE FUNCTION junction._api_key_configured(management boolean DEFAULT false) RETURNS boolean
AS 'MODULE_PATHNAME', 'junction_api_key_configured_sql' LANGUAGE C STABLE STRICT;

-- Conventions of every API function (40 to 68):
--   * every HTTP call goes through junction_api / junction._api_request (src/http.c): retries,
--     timeouts, cancel, SQLSTATEs, and the key never in a message;
--   * a single Junction object comes back as jsonb; a list comes back as SETOF jsonb, one
--     Junction object per row, exactly as Junction sent it (README, "What the functions return");
--   * REST loads take their received_seq from junction._next_received_seq(), so webhook and REST
--     data order together ("later received wins");
--   * superusers only (99_privileges.sql).

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
