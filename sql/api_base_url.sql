-- Which base URL the client talks to: the override, else junction.environment and
-- junction.region, else the key prefix (pk_ = production, sk_ = sandbox; _us_ / _eu_).
RESET junction.api_base_url;
RESET junction.environment;
RESET junction.region;
CREATE FUNCTION pg_temp.url_for(key text, env text, region text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('junction.api_key', key, true);
    PERFORM set_config('junction.environment', env, true);
    PERFORM set_config('junction.region', region, true);
    RETURN junction._api_base_url();
END $$;
BEGIN;
SELECT key, env, region, pg_temp.url_for(key, env, region) AS base_url
FROM (VALUES ('pk_us_abc', '', ''), ('pk_eu_abc', '', ''), ('sk_us_abc', '', ''), ('sk_eu_abc', '', ''),
             ('', '', ''), ('weird', '', ''),
             ('pk_us_abc', 'sandbox', ''), ('sk_us_abc', 'production', 'eu'), ('pk_eu_abc', '', 'us'))
     AS v(key, env, region);
ROLLBACK;
-- an override wins, and must be a plain http(s) origin (no query, no user info, no trailing slash)
SET junction.api_base_url = 'http://127.0.0.1:9';
SELECT junction._api_base_url();
SELECT expect_error($$SET junction.api_base_url = 'ftp://example.com'$$);
SELECT expect_error($$SET junction.api_base_url = 'https://user@evil.example.com'$$);
SELECT expect_error($$SET junction.api_base_url = 'https://api.example.com/'$$);
SELECT expect_error($$SET junction.api_base_url = 'https://api.example.com?x=1'$$);
SELECT expect_error($$SET junction.environment = 'staging'$$);
SELECT expect_error($$SET junction.region = 'ap'$$);
RESET junction.api_base_url;
SELECT junction._api_base_url(true) AS management_default;
-- paths that could leave the configured host are refused before any request
SET junction.api_key = 'sk_us_test_key';
SELECT expect_error($$SELECT junction_api('GET', '@evil.example.com/x')$$);
SELECT expect_error($$SELECT junction_api('GET', '/v2/../../x')$$);
SELECT expect_error($$SELECT junction_api('GET', '/v2/user?x=1')$$);
SELECT expect_error($$SELECT junction_api('TRACE', '/v2/user')$$);
SELECT expect_error($$SELECT junction_api('GET', '/v2/user', NULL, '{}')$$);
RESET junction.api_key;
