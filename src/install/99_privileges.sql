-- Privileges, one policy for the whole extension (it runs last, so it covers every object above):
--   * no table or view of schema junction is readable by PUBLIC (grant SELECT to your
--     reporting roles explicitly);
--   * PUBLIC may execute the three pure functions (verify, is_valid, sign: functions of their
--     arguments alone) and nothing else; every other function is for superusers, and for the
--     roles the owning files grant explicitly (junction_receiver in 20_inbox.sql, junction_admin in
--     70_webhooks.sql).
REVOKE ALL ON ALL TABLES IN SCHEMA junction FROM PUBLIC;
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN
        SELECT p.oid::regprocedure
        FROM pg_catalog.pg_depend AS d
        JOIN pg_catalog.pg_proc AS p ON p.oid = d.objid
        WHERE d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND d.deptype = 'e'
          AND d.refobjid = (SELECT e.oid FROM pg_catalog.pg_extension AS e WHERE e.extname = 'junction')
          AND p.proname NOT IN ('junction_verify_webhook', 'junction_webhook_is_valid', 'junction_sign_webhook')
    LOOP
        EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
    END LOOP;
END
$$;
