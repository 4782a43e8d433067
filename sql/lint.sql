-- lint: plpgsql_check over every PL/pgSQL function of the extension, including those reached only
-- through EXECUTE, with its other, extra and security warnings on. Zero findings expected; a
-- function that turns one off says why in a comment next to its @plpgsql_check_options line.
-- pg_cron is there, so the EXECUTEd cron.* calls of junction_schedule_sync are checked too.
CREATE EXTENSION IF NOT EXISTS plpgsql_check;
CREATE EXTENSION IF NOT EXISTS pg_cron;
SELECT count(*) > 40 AS plpgsql_functions
FROM pg_proc p
JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'junction'
JOIN pg_language l ON l.oid = p.prolang AND l.lanname = 'plpgsql';
SELECT p.oid::regprocedure AS function, t.level, t.lineno, t.message
FROM pg_proc p
JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'junction'
JOIN pg_language l ON l.oid = p.prolang AND l.lanname = 'plpgsql'
CROSS JOIN LATERAL plpgsql_check_function_tb(p.oid, other_warnings => true, extra_warnings => true,
                                             security_warnings => true) AS t
ORDER BY 1::text, t.lineno;
-- the options comments are the only suppressions
SELECT p.oid::regprocedure AS function,
       substring(p.prosrc FROM '@plpgsql_check_options: ([^\n]*)') AS options
FROM pg_proc p
JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'junction'
WHERE p.prosrc LIKE '%@plpgsql_check_options%'
ORDER BY 1::text;
DROP EXTENSION plpgsql_check;
