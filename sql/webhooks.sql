-- Webhook endpoints through the Management API (the mock), secret sync and rotation.
-- Nothing random is printed: ids, secrets and timestamps are compared, never shown.
\getenv mock JUNCTION_MOCK_URL
SET junction.management_base_url = :'mock';
SET junction.management_key = 'mg_test_key';
SET junction.org_id = '0190b2a0-0000-7000-8000-0000000000a1';
SET junction.team_id = '0190b2a0-0000-7000-8000-0000000000b2';
\set ev '{"event_type":"labtest.order.created","user_id":"0190b2a0-0000-7000-8000-000000000001","client_user_id":"c","team_id":"0190b2a0-0000-7000-8000-00000000aaaa","data":{"id":"0190b2a7-0000-7000-8000-0000000000a2"}}'

-- helpers: the mock's control API, error fields, signed deliveries
CREATE FUNCTION pg_temp.mock(method text, path text, body jsonb DEFAULT NULL) RETURNS integer
LANGUAGE sql AS $$ SELECT (junction._api_request(true, method, path, NULL, body)).status $$;
CREATE FUNCTION pg_temp.requests() RETURNS SETOF jsonb
LANGUAGE sql AS $$
  SELECT jsonb_array_elements((junction._api_request(true, 'GET', '/_mock/requests',
                                                     '{"path_prefix": "/v1/"}')).body)
$$;
CREATE FUNCTION pg_temp.fault(status integer, body jsonb DEFAULT NULL) RETURNS integer
LANGUAGE sql AS $$
  SELECT pg_temp.mock('POST', '/_mock/faults',
           jsonb_build_object('path_prefix', '/v1/org/',
                              'responses', jsonb_build_array(jsonb_strip_nulls(
                                  jsonb_build_object('status', status, 'body', body)))))
$$;
CREATE FUNCTION pg_temp.err(q text, OUT state text, OUT message text, OUT detail text, OUT hint text)
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE q;
    state := 'no error';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, message = MESSAGE_TEXT,
                            detail = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
    message := regexp_replace(message, 'ep_[A-Za-z0-9]+', 'ep_*', 'g');
END
$$;
CREATE FUNCTION pg_temp.signed(secret text, id text, body text) RETURNS jsonb
LANGUAGE sql AS $$
  SELECT jsonb_build_object('svix-id', id, 'svix-timestamp', extract(epoch FROM now())::bigint::text,
                            'svix-signature',
                            junction_sign_webhook(secret, id, extract(epoch FROM now())::bigint, body))
$$;
-- n deliveries, each committed on its own (the worker drains them as they come), signed
-- with every secret given (as Svix does during a rotation window)
CREATE PROCEDURE pg_temp.deliver(secrets text[], prefix text, n integer)
LANGUAGE plpgsql AS $$
DECLARE
    body text := '{"event_type":"labtest.order.created","user_id":"0190b2a0-0000-7000-8000-000000000001","client_user_id":"c","team_id":"0190b2a0-0000-7000-8000-00000000aaaa","data":{"id":"0190b2a7-0000-7000-8000-0000000000a2"}}';
    ts   bigint;
    mid  text;
BEGIN
    FOR i IN 1..n LOOP
        mid := prefix || i;
        ts := extract(epoch FROM clock_timestamp())::bigint;
        PERFORM junction_receive(
            jsonb_build_object('svix-id', mid, 'svix-timestamp', ts::text, 'svix-signature',
                               (SELECT string_agg(junction_sign_webhook(s, mid, ts, body), ' ')
                                  FROM unnest(secrets) s)),
            body);
        COMMIT;
    END LOOP;
END
$$;
-- wait (at most 60 s) until the worker has handled our deliveries
CREATE PROCEDURE pg_temp.wait_drained()
LANGUAGE plpgsql AS $$
DECLARE
    deadline timestamptz := clock_timestamp() + interval '60 seconds';
BEGIN
    WHILE EXISTS (SELECT FROM junction.inbox
                   WHERE status = 'pending' AND headers ->> 'svix-id' LIKE 'msg\_wh\_%')
          AND clock_timestamp() < deadline LOOP
        PERFORM pg_sleep(0.05);
    END LOOP;
END
$$;
SELECT pg_temp.mock('POST', '/_mock/reset') AS reset;

-- 1. Organisation and team must be set (and be UUIDs); '' environment means production.
SET junction.org_id = '';
SELECT * FROM pg_temp.err('SELECT * FROM junction_webhooks()');
SET junction.org_id = 'acme';
SELECT state, message, hint FROM pg_temp.err('SELECT * FROM junction_webhooks()');
SET junction.org_id = '0190b2a0-0000-7000-8000-0000000000a1';
SET junction.team_id = '';
SELECT state, message FROM pg_temp.err('SELECT * FROM junction_webhooks()');
SET junction.team_id = '0190b2a0-0000-7000-8000-0000000000b2';
SELECT count(*) AS webhooks FROM junction_webhooks();
SELECT e ->> 'path' AS path, e ->> 'management_key' AS key
  FROM pg_temp.requests() e ORDER BY (e ->> 'seq')::int DESC LIMIT 1;

-- 2. Create and read back.
SELECT id AS w1 FROM junction_webhook_create('https://receiver.example.com/junction',
                                             ARRAY['labtest.order.created', 'provider.connection.created'],
                                             'main receiver', 10) \gset
SELECT :'w1' LIKE 'ep\_%' AS ep_id, url, description, filter_types, disabled, rate_limit,
       created_at <= updated_at AS stamped
  FROM junction_webhook(:'w1');
-- defaults: every event type, no rate limit, enabled, empty description
SELECT url, description, filter_types, disabled, rate_limit
  FROM junction_webhook_create('https://other.example.com/hook', filter_types => '{}');
-- Junction's validation error: 22023 with its detail
SELECT * FROM pg_temp.err($$SELECT junction_webhook_create('not a url')$$);
SELECT * FROM pg_temp.err($$SELECT junction_webhook_create(NULL)$$);

-- 3. Listing follows next_cursor over every page.
SELECT count(*) AS created
  FROM generate_series(1, 53) i,
       LATERAL junction_webhook_create('https://r' || i || '.example.com/hook', description => 'bulk ' || i) w;
SELECT pg_temp.mock('DELETE', '/_mock/requests') AS cleared;
SELECT count(*) AS webhooks, count(DISTINCT id) AS distinct_ids FROM junction_webhooks();
SELECT count(*) AS requests, count(*) FILTER (WHERE e -> 'query' ? 'next_cursor') AS with_cursor
  FROM pg_temp.requests() e;
SELECT pg_temp.mock('DELETE', '/_mock/requests') AS cleared;
SELECT (SELECT array_agg(id) FROM junction_webhooks(7)) = (SELECT array_agg(id) FROM junction_webhooks())
       AS same_list;
SELECT count(*) FILTER (WHERE e -> 'query' ->> 'limit' = '7') AS pages_of_7
  FROM pg_temp.requests() e;
SELECT state, message FROM pg_temp.err('SELECT * FROM junction_webhooks(0)');
SELECT count(*) AS deleted
  FROM (SELECT junction_webhook_delete(id) FROM junction_webhooks() WHERE description LIKE 'bulk %') d;
SELECT count(*) AS webhooks FROM junction_webhooks();

-- 4. Update sends only the fields given.
SELECT pg_temp.mock('DELETE', '/_mock/requests') AS cleared;
SELECT url, description, filter_types, disabled, rate_limit
  FROM junction_webhook_update(:'w1', description => 'main receiver (prod)');
SELECT e ->> 'method' AS method, (e ->> 'body_length')::int
         = octet_length('{"description": "main receiver (prod)"}'::jsonb::text) AS only_description
  FROM pg_temp.requests() e;
SELECT url, description, filter_types, disabled, rate_limit
  FROM junction_webhook_update(:'w1', filter_types => '{}', disabled => true);
SELECT url, description, filter_types, disabled, rate_limit
  FROM junction_webhook_update(:'w1', clear => '{rate_limit}', disabled => false);
SELECT url, description, filter_types, disabled, rate_limit
  FROM junction_webhook_update(:'w1', url => 'https://receiver.example.com/junction/v2', rate_limit => 5,
                               filter_types => ARRAY['labtest.order.created']);
SELECT url, description, filter_types, disabled, rate_limit FROM junction_webhook(:'w1');
SELECT state, message, hint FROM pg_temp.err(format('SELECT junction_webhook_update(%L)', :'w1'));
SELECT state, message FROM pg_temp.err(format('SELECT junction_webhook_update(%L, clear => ''{url}'')', :'w1'));
SELECT state, message
  FROM pg_temp.err(format('SELECT junction_webhook_update(%L, rate_limit => 3, clear => ''{rate_limit}'')', :'w1'));

-- 5. Custom headers: a round trip; sensitive values are withheld by Junction.
SELECT * FROM junction_webhook_set_headers(:'w1', '{"X-Receiver-Token": "tok-123", "Authorization": "Bearer abc"}');
SELECT * FROM junction_webhook_headers(:'w1');
SELECT count(*) AS headers FROM junction_webhook_set_headers(:'w1', '{}');
SELECT state, message FROM pg_temp.err(format('SELECT junction_webhook_set_headers(%L, ''{"a": 1}'')', :'w1'));
SELECT state, message FROM pg_temp.err(format('SELECT junction_webhook_set_headers(%L, ''[]'')', :'w1'));

-- 6. The signing secret: generated by Junction, or given at creation.
SELECT junction_webhook_secret(:'w1') LIKE 'whsec\_%' AS whsec,
       junction._secret_is_valid(junction_webhook_secret(:'w1')) AS valid;
\set given 'whsec_anVuY3Rpb24td2ViaG9va3MtcmVncmVzcy1rZXktMDE='
SELECT id AS w2 FROM junction_webhook_create('https://given.example.com/hook', secret => :'given') \gset
SELECT junction_webhook_secret(:'w2') = :'given' AS given_secret_kept;
-- a malformed secret is refused here, and never repeated
SELECT state, message, hint, position('not base64' IN concat(message, detail, hint)) = 0 AS not_echoed
  FROM pg_temp.err($$SELECT junction_webhook_create('https://x.example.com', secret => 'whsec_not base64!')$$);

-- 7. The environment picks the path segment.
SET junction.environment = 'sandbox';
SELECT count(*) AS sandbox_webhooks FROM junction_webhooks();
SELECT url FROM junction_webhook_create('https://sandbox.example.com/hook');
SELECT count(*) AS sandbox_webhooks FROM junction_webhooks();
SELECT e ->> 'path' AS path FROM pg_temp.requests() e ORDER BY (e ->> 'seq')::int DESC LIMIT 1;
RESET junction.environment;
SELECT count(*) AS production_webhooks FROM junction_webhooks();

-- 8. Delete, then get: 42704.  Bad ids never reach the network.
SELECT id AS w3 FROM junction_webhook_create('https://gone.example.com/hook') \gset
SELECT junction_webhook_delete(:'w3');
SELECT * FROM pg_temp.err(format('SELECT junction_webhook(%L)', :'w3'));
SELECT state, message FROM pg_temp.err(format('SELECT junction_webhook_delete(%L)', :'w3'));
SELECT state, message, hint FROM pg_temp.err($$SELECT junction_webhook('../../secret')$$);
SELECT state, message FROM pg_temp.err($$SELECT junction_webhook('ep_1/secret')$$);
SELECT state, message FROM pg_temp.err('SELECT junction_webhook(NULL)');
SELECT state, message FROM pg_temp.err('SELECT junction_webhook_secret_sync(NULL)');

-- 9. Keys and HTTP errors.  The data API key does not open the Management API (401 -> 28000),
--    and no error repeats the key, even when the server echoes it.
SET junction.management_key = 'sk_us_test_key';
SELECT state, message, detail, hint,
       position('sk_us_test_key' IN concat(message, detail, hint)) = 0 AS key_not_shown
  FROM pg_temp.err('SELECT * FROM junction_webhooks()');
SELECT pg_temp.fault(401, '{"detail": "key sk_us_test_key refused; whsec_abcDEF123+/= leaked"}') AS fault;
SELECT state, detail, position('sk_us_test_key' IN concat(message, detail, hint)) = 0 AS key_not_shown
  FROM pg_temp.err('SELECT * FROM junction_webhooks()');
SET junction.management_key = '';
SELECT state, message, hint FROM pg_temp.err('SELECT * FROM junction_webhooks()');
SET junction.management_key = 'mg_test_key';
SET junction.http_retries = 0;
SELECT pg_temp.fault(429) AS fault;
SELECT * FROM pg_temp.err('SELECT * FROM junction_webhooks()');
SELECT pg_temp.fault(500, '{"detail": {"error": "boom"}}') AS fault;
SELECT * FROM pg_temp.err('SELECT * FROM junction_webhooks()');
SELECT pg_temp.fault(503, '"plain text"') AS fault;
SELECT state, detail FROM pg_temp.err('SELECT * FROM junction_webhooks()');
SELECT pg_temp.fault(403) AS fault;
SELECT state, message FROM pg_temp.err('SELECT * FROM junction_webhooks()');
-- with retries, a transient 503 is invisible
SET junction.http_retries = 2;
SELECT pg_temp.fault(503) AS fault;
SELECT count(*) AS production_webhooks FROM junction_webhooks();
RESET junction.http_retries;

-- 10. Secret sync and a rotation in the middle of a stream of deliveries.
SELECT id AS wr FROM junction_webhook_create('https://receiver.example.com/rotating') \gset
SELECT webhook_id = :'wr' AS same_id, secret_added, previous_secrets, previous_expire_at IS NULL AS no_previous
  FROM junction_webhook_secret_sync(:'wr');
SELECT secret_added, previous_secrets FROM junction_webhook_secret_sync(:'wr');
SELECT junction_webhook_secret(:'wr') AS old \gset
SELECT count(*) AS stored, bool_and(expires_at IS NULL) AS active,
       bool_and(description = 'Junction webhook ' || :'wr') AS described
  FROM junction.webhook_secrets WHERE secret = :'old' AND webhook_id = :'wr';
-- 20 signed with the current secret; the worker verifies them as they commit
CALL pg_temp.deliver(ARRAY[:'old'], 'msg_wh_a', 20);
SELECT secret_added, previous_secrets,
       previous_expire_at BETWEEN now() + interval '23 hours 59 minutes' AND now() + interval '24 hours 1 minute'
         AS grace_24h
  FROM junction_webhook_secret_rotate(:'wr');
SELECT previous_expire_at AS exp1 FROM junction_webhook_secret_sync(:'wr') \gset
SELECT junction_webhook_secret(:'wr') AS new \gset
SELECT :'new' <> :'old' AS rotated;
-- during the window Svix signs with both; then the new one only; and late retries with the old
CALL pg_temp.deliver(ARRAY[:'old', :'new'], 'msg_wh_b', 10);
CALL pg_temp.deliver(ARRAY[:'new'], 'msg_wh_c', 20);
CALL pg_temp.deliver(ARRAY[:'old'], 'msg_wh_d', 5);
CALL pg_temp.wait_drained();
SELECT junction_process_inbox() >= 0 AS drained;
SELECT left(headers ->> 'svix-id', 8) AS batch, status, count(*), max(error) AS error
  FROM junction.inbox WHERE headers ->> 'svix-id' LIKE 'msg\_wh\_%' GROUP BY 1, 2 ORDER BY 1, 2;
SELECT count(*) AS events FROM junction.events WHERE svix_id LIKE 'msg\_wh\_%';
-- both secrets stored and active; only the new one is current; fingerprints, not secrets
SELECT active, expires_at IS NULL AS current,
       fingerprint = left(encode(sha256(convert_to(CASE WHEN expires_at IS NULL THEN :'new' ELSE :'old' END,
                                                   'UTF8')), 'hex'), 12) AS fingerprint_ok
  FROM junction_webhook_secrets(:'wr') ORDER BY 2;
-- a second sync changes nothing: the old secret's window is not extended
SELECT secret_added, previous_secrets, previous_expire_at = :'exp1' AS same_window
  FROM junction_webhook_secret_sync(:'wr');
-- a current secret that was expired by hand is re-activated by sync
UPDATE junction.webhook_secrets SET expires_at = now() - interval '1 second' WHERE secret = :'new';
SELECT secret_added, previous_secrets FROM junction_webhook_secret_sync(:'wr');
SELECT count(*) FILTER (WHERE expires_at IS NULL) AS current FROM junction_webhook_secrets(:'wr');

-- 11. Retired secrets stop verifying.
SELECT junction_webhook_secrets_retire(now() + interval '25 hours', :'wr') AS retired;
SELECT count(*) AS stored FROM junction_webhook_secrets(:'wr');
BEGIN;
SELECT junction_receive(pg_temp.signed(:'old', 'msg_wh_e1', :'ev'), :'ev') > 0 AS received;
SELECT junction_receive(pg_temp.signed(:'new', 'msg_wh_f1', :'ev'), :'ev') > 0 AS received;
SELECT junction_process_inbox() >= 2 AS processed;
COMMIT;
SELECT headers ->> 'svix-id' AS svix_id, status, sqlstate, error
  FROM junction.inbox WHERE headers ->> 'svix-id' IN ('msg_wh_e1', 'msg_wh_f1') ORDER BY 1;
SELECT junction_webhook_secrets_retire(id => :'wr') AS retired_by_default;

-- 12. Rotation to a given secret, ending the window at once; a hand-added secret is adopted.
INSERT INTO junction.webhook_secrets (secret, description) VALUES (:'new', 'pasted from the dashboard')
  ON CONFLICT (secret) DO UPDATE SET webhook_id = NULL, description = EXCLUDED.description;
SELECT secret_added, previous_secrets
  FROM junction_webhook_secret_rotate(:'wr', new_secret => :'given', grace => '0');
SELECT junction_webhook_secret(:'wr') = :'given' AS given_secret_set;
SELECT regexp_replace(description, 'ep_[A-Za-z0-9]+', 'ep_*') AS description, active, expires_at IS NULL AS current
  FROM junction_webhook_secrets(:'wr') ORDER BY 3, 1;
SELECT state, message, position('not base64' IN concat(message, detail, hint)) = 0 AS not_echoed
  FROM pg_temp.err(format('SELECT junction_webhook_secret_rotate(%L, ''whsec_not base64!'')', :'wr'));
SELECT state, message FROM pg_temp.err(format('SELECT junction_webhook_secret_sync(%L, ''-1 hour'')', :'wr'));
SELECT state, message FROM pg_temp.err($$SELECT junction_webhook_secret_sync('ep_missing')$$);

-- 13. Deleting an endpoint starts the grace period of its secrets.
SELECT junction_webhook_delete(:'wr');
SELECT count(*) FILTER (WHERE expires_at IS NULL) AS current,
       count(*) FILTER (WHERE expires_at BETWEEN now() + interval '23 hours 59 minutes'
                                            AND now() + interval '24 hours 1 minute') AS in_grace
  FROM junction_webhook_secrets(:'wr');
SELECT junction_webhook_secrets_retire(now() + interval '1 day', :'wr') AS retired;

-- 14. Privileges: PUBLIC gets nothing; junction_admin manages webhooks but still cannot
--     read the secrets table or read or set the key and base URL.
SET client_min_messages = warning;
DROP ROLE IF EXISTS wh_plain;
DROP ROLE IF EXISTS wh_admin;
RESET client_min_messages;
CREATE ROLE wh_plain NOLOGIN;
CREATE ROLE wh_admin NOLOGIN IN ROLE junction_admin;
SET ROLE wh_plain;
SELECT expect_error('SELECT * FROM junction_webhooks()');
SELECT expect_error('SELECT * FROM junction_webhook_secret_sync(''ep_x'')');
SELECT expect_error('SELECT junction_webhook_secrets_retire()');
SELECT expect_error('SELECT * FROM junction._management(''GET'', ''/v1/x'')');
SELECT expect_error('SHOW junction.management_key');
SELECT expect_error('SELECT current_setting(''junction.management_base_url'')');
SELECT expect_error('SET junction.management_key = ''mg_other''');
SELECT expect_error('SET junction.management_base_url = ''http://127.0.0.1:9''');
RESET ROLE;
SET ROLE wh_admin;
SELECT count(*) AS production_webhooks FROM junction_webhooks();
SELECT secret_added, previous_secrets FROM junction_webhook_secret_sync(:'w1');
SELECT count(*) AS stored, bool_and(active) AS active FROM junction_webhook_secrets(:'w1');
SELECT expect_error('SELECT count(*) FROM junction.webhook_secrets');
SELECT expect_error('SELECT * FROM junction._management(''GET'', ''/v1/x'')');
SELECT expect_error('SHOW junction.management_key');
SELECT expect_error('SET junction.management_base_url = ''http://127.0.0.1:9''');
RESET ROLE;
-- every function of this file, internal ones included: none executable by PUBLIC
SELECT count(*) AS functions, count(*) FILTER (WHERE has_function_privilege('wh_plain', p.oid, 'EXECUTE'))
         AS public_execute
  FROM pg_proc p
 WHERE (p.proname ~ '^junction_webhook(s|_.*)?$' AND p.proname <> 'junction_webhook_is_valid')
    OR (p.pronamespace = 'junction'::regnamespace
        AND p.proname IN ('_management', '_webhook_id', '_webhooks_path', '_webhook_path', '_webhook_row',
                          '_webhook_headers', '_webhook_secret_sync', '_webhook_lock', '_check_grace',
                          '_check_new_secret'));
DROP ROLE wh_admin;
DROP ROLE wh_plain;

-- clean up what this test added
DELETE FROM junction.webhook_secrets WHERE webhook_id IS NOT NULL OR secret IN (:'given', :'new');
DELETE FROM junction.events WHERE svix_id LIKE 'msg\_wh\_%';
DELETE FROM junction.inbox WHERE headers ->> 'svix-id' LIKE 'msg\_wh\_%';
SELECT pg_temp.mock('POST', '/_mock/reset') AS reset;
