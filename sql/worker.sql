-- The background worker: visible, woken at commit (INSERT, COPY, junction_receive),
-- draining without any manual call; retention; status view.
\set s1 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'
-- one inbox worker and the backfill worker serve this database
SELECT backend_type, datname = current_database() AS this_db, application_name
  FROM pg_stat_activity WHERE backend_type LIKE 'junction%' ORDER BY 1;
SELECT array_length(worker_pids, 1) AS inbox_workers, backfill_pid IS NOT NULL AS has_backfill_worker,
       last_heartbeat > now() - interval '30 seconds' AS recent_heartbeat
  FROM junction.status;

-- Wait (at most `deadline`) until nothing is pending; returns what it saw.
CREATE FUNCTION pg_temp.wait_drained(deadline interval) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    stop timestamptz := clock_timestamp() + deadline;
    n bigint;
BEGIN
    LOOP
        SELECT count(*) INTO n FROM junction.inbox WHERE status = 'pending';
        IF n = 0 THEN RETURN 'drained'; END IF;
        IF clock_timestamp() > stop THEN RETURN 'timeout with ' || n || ' pending'; END IF;
        PERFORM pg_sleep(0.02);
    END LOOP;
END
$$;
CREATE FUNCTION pg_temp.signed(id text, body text) RETURNS jsonb LANGUAGE sql AS $$
  SELECT jsonb_build_object('svix-id', id, 'svix-timestamp', extract(epoch FROM now())::bigint::text,
           'svix-signature', junction_sign_webhook('whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', id, extract(epoch FROM now())::bigint, body))
$$;
\set ev '{"event_type":"labtest.order.created","user_id":"0190b2a0-0000-7000-8000-000000000001","client_user_id":"c1","team_id":"0190b2a0-0000-7000-8000-00000000aaaa","data":{"id":"0190b2a7-0000-7000-8000-0000000000a1"}}'
INSERT INTO junction.webhook_secrets (secret) VALUES (:'s1');

-- A long poll interval: only the commit-time wake-up can drain within the deadline.
ALTER SYSTEM SET junction.poll_interval = '60s';
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);

-- plain INSERT of 300 deliveries in one transaction
INSERT INTO junction.inbox (headers, body)
SELECT pg_temp.signed('msg_w_insert_' || i, :'ev'), :'ev' FROM generate_series(1, 300) i;
SELECT pg_temp.wait_drained('10 seconds');
-- junction_receive
SELECT junction_receive(pg_temp.signed('msg_w_receive', :'ev'), :'ev') > 0 AS received;
SELECT pg_temp.wait_drained('10 seconds');
-- COPY
CREATE TEMP TABLE copy_src AS SELECT pg_temp.signed('msg_w_copy_' || i, :'ev') AS headers, :'ev' AS body FROM generate_series(1, 3) i;
\copy (SELECT headers, body FROM copy_src) TO '/tmp/junction_worker_copy.tsv'
\copy junction.inbox (headers, body) FROM '/tmp/junction_worker_copy.tsv'
SELECT pg_temp.wait_drained('10 seconds');
SELECT count(*) AS events, count(*) FILTER (WHERE svix_id LIKE 'msg_w_copy_%') AS from_copy FROM junction.events WHERE svix_id LIKE 'msg_w_%';
-- an aborted insert wakes nobody and leaves nothing
BEGIN;
INSERT INTO junction.inbox (headers, body) VALUES (pg_temp.signed('msg_w_aborted', :'ev'), :'ev');
ROLLBACK;
SELECT count(*) AS aborted_rows FROM junction.inbox WHERE headers->>'svix-id' = 'msg_w_aborted';
-- the worker counted what it did
SELECT processed >= 304 AS counted FROM junction._worker_state() WHERE kind = 'inbox';
SELECT pending, quarantined, processed_last_minute >= 304 AS throughput_seen, waiting_reason FROM junction.status;

-- Retention: processed rows past junction.inbox_retention go; quarantined rows stay.
UPDATE junction.inbox SET processed_at = now() - interval '8 days' WHERE headers->>'svix-id' LIKE 'msg_w_insert_%';
INSERT INTO junction.inbox (headers, body, status, processed_at, error, sqlstate)
  VALUES ('{}', 'x', 'quarantined', now() - interval '30 days', 'test', '28000');
SELECT junction._trim_inbox('7 days', 100) AS trimmed_first_batch;
SELECT junction._trim_inbox('7 days', 1000) AS trimmed_rest;
SELECT status, count(*) FROM junction.inbox GROUP BY 1 ORDER BY 1;
SHOW junction.inbox_retention;

ALTER SYSTEM RESET junction.poll_interval;
SELECT pg_reload_conf();
DELETE FROM junction.inbox;
DELETE FROM junction.events;
DELETE FROM junction.webhook_secrets;
