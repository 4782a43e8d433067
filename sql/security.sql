-- Functions that run as a superuser (the workers, SECURITY DEFINER) never resolve a name through
-- a schema another role can write. Every SQL and PL/pgSQL function of the extension pins its
-- search_path, and so does every C function that runs SQL. Those without a pinned path:
--   C functions that run no SQL (their names are resolved at CREATE time, not at call time), and
--   junction._sample_rows, junction._sample_groups and junction._provider, inlined into their
--   callers (so they can have no SET clause): every name in them is schema-qualified, operators
--   and casts included
--   (test/fault_privilege.sh plants them); likewise junction.default_source_rank,
--   junction._aggregator_providers and junction._daily_part_value, inlined into junction.daily's
--   recomputation.
SELECT p.oid::regprocedure AS function, l.lanname
FROM pg_proc p
JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'junction'
JOIN pg_language l ON l.oid = p.prolang
WHERE NOT EXISTS (SELECT FROM unnest(p.proconfig) c WHERE c = 'search_path=pg_catalog, pg_temp')
ORDER BY l.lanname, p.proname;
-- SECURITY DEFINER functions: all of them pinned (none in the list above)
SELECT count(*) AS security_definer_functions,
       count(*) FILTER (WHERE 'search_path=pg_catalog, pg_temp' = ANY (p.proconfig)) AS pinned
FROM pg_proc p
JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'junction'
WHERE p.prosecdef;

-- Entry points that store or act refuse NULL (22004) instead of returning NULL and doing nothing.
SET junction.api_key = 'sk_us_test_key';
\getenv mock JUNCTION_MOCK_URL
SET junction.api_base_url = :'mock';
SELECT q, expect_error(q) FROM unnest(ARRAY[
    $$SELECT junction_receive('{"svix-id": "msg_null"}', NULL)$$,
    $$SELECT junction_receive(NULL, '{}')$$,
    $$SELECT junction_process_inbox(NULL)$$,
    $$SELECT junction_user(NULL)$$,
    $$SELECT junction_user_delete(NULL)$$,
    $$SELECT junction_user_resolve(NULL)$$,
    $$SELECT junction_user_create(NULL)$$,
    $$SELECT count(*) FROM junction_connections(NULL)$$,
    $$SELECT junction_connection_deregister(NULL, 'oura')$$,
    $$SELECT junction_connection_deregister('0190b2a0-0000-7000-8000-0000000000d1', NULL)$$,
    $$SELECT junction_fetch_workout_stream(NULL)$$,
    $$SELECT junction_fetch_sleep_stream(NULL)$$,
    $$SELECT junction_fetch(NULL, '0190b2a0-0000-7000-8000-0000000000d1', now(), now())$$,
    $$SELECT junction_fetch('heartrate', NULL, now(), now())$$,
    $$SELECT count(*) FROM junction_sync(NULL)$$,
    $$SELECT junction_api(NULL, '/v2/user')$$
]) AS q;
-- nothing was stored by the refused calls
SELECT count(*) AS stored FROM junction.inbox WHERE headers->>'svix-id' = 'msg_null';
-- the pure functions keep SQL's usual NULL in, NULL out (they store nothing)
SELECT junction_verify_webhook(NULL, '{}', '') IS NULL AS verify_null,
       junction_sign_webhook('whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', 'msg', 1, NULL) IS NULL AS sign_null;
RESET junction.api_key;
RESET junction.api_base_url;
