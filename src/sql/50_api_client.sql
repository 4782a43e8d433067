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
