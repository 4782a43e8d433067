-- Order independence: the same set of deliveries applied in order, shuffled with
-- duplicates in small batches, and reversed with everything sent twice, must leave
-- identical typed tables.  The set (test/sql/deliveries.sql, i in [0,150) and
-- [1500,1650)) has summaries with two versions each (distinct updated_at), Svix
-- redeliveries, and no sample key carrying two different values (for those,
-- Junction's rule is "later received wins", which depends on order by definition).
-- Each run inserts and drains inside one transaction, so the worker never sees its rows.
\i test/sql/deliveries.sql
\set s1 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'
INSERT INTO junction.webhook_secrets (secret) VALUES (:'s1');
CREATE TABLE ordering_set AS
SELECT n, d.svix_id, d.headers, d.body
FROM (SELECT i AS n FROM generate_series(0, 149) i UNION ALL SELECT i FROM generate_series(1500, 1649) i) s,
     LATERAL jx_test_delivery(s.n, :'s1', extract(epoch FROM now())::bigint) d;
SELECT count(*) AS deliveries, count(DISTINCT svix_id) AS messages,
       count(*) FILTER (WHERE body LIKE '%"updated_at"%') AS summaries FROM ordering_set;
-- what a run leaves behind
CREATE TABLE ordering_result (run text, tbl text, nrows bigint, md5 text);
CREATE FUNCTION pg_temp.reset() RETURNS void LANGUAGE sql AS $$
  TRUNCATE junction.events, junction.samples, junction.activity, junction.sleep, junction.body, junction.inbox,
           junction.lab_orders, junction.lab_appointments, junction.lab_critical_results, junction.lab_results,
           junction.sense_results, junction.lab_report_parsing_jobs, junction.lab_report_results,
           junction.daily, junction.daily_parts
$$;
-- drain in batches of `size` (the batch boundaries differ from run to run)
CREATE FUNCTION pg_temp.drain(size integer) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE total integer := 0; n integer;
BEGIN
  LOOP
    n := junction_process_inbox(size);
    EXIT WHEN n = 0;
    total := total + n;
  END LOOP;
  RETURN total;
END $$;

-- run 1: in order, one batch
BEGIN;
SELECT pg_temp.reset();
INSERT INTO junction.inbox (headers, body) SELECT headers, body FROM ordering_set ORDER BY n;
SELECT pg_temp.drain(1000) AS handled;
INSERT INTO ordering_result SELECT 'in order', * FROM jx_typed_fingerprint();
COMMIT;
-- run 2: shuffled, 30% delivered a second time at a random later place, batches of 7
BEGIN;
SELECT pg_temp.reset();
SELECT setseed(0.42);
INSERT INTO junction.inbox (headers, body)
SELECT headers, body FROM (
    SELECT headers, body, random() AS pos FROM ordering_set
    UNION ALL
    SELECT headers, body, random() + 0.5 FROM ordering_set WHERE random() < 0.3) x
ORDER BY pos;
SELECT pg_temp.drain(7) AS handled;
INSERT INTO ordering_result SELECT 'shuffled + duplicates', * FROM jx_typed_fingerprint();
COMMIT;
-- run 3: reversed, everything twice, batches of 50
BEGIN;
SELECT pg_temp.reset();
INSERT INTO junction.inbox (headers, body)
SELECT headers, body FROM ordering_set, generate_series(1, 2) ORDER BY n DESC;
SELECT pg_temp.drain(50) AS handled;
INSERT INTO ordering_result SELECT 'reversed, twice', * FROM jx_typed_fingerprint();
COMMIT;

-- the typed tables the set touches, and whether every run left them the same
SELECT tbl, min(nrows) AS rows, count(DISTINCT (nrows, md5)) = 1 AS identical_in_all_runs
  FROM ordering_result WHERE nrows > 0 GROUP BY tbl ORDER BY tbl;
SELECT count(*) AS differing_tables FROM (
  SELECT tbl FROM ordering_result GROUP BY tbl HAVING count(DISTINCT (nrows, md5)) > 1) d;
-- the summaries hold the newest version (the later updated_at won every time)
SELECT count(*) AS activity_rows, count(*) FILTER (WHERE updated_at > '2026-11-01 00:20:00+00') AS newest_version
  FROM junction.activity;
SELECT status, count(*) FROM junction.inbox GROUP BY 1 ORDER BY 1;
SELECT pg_temp.reset();
DROP TABLE ordering_set, ordering_result;
DELETE FROM junction.webhook_secrets;
