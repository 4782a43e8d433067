-- workout_streams: daily.data.workout_stream.unavailable (issue 15, item 2). After .created then
-- .unavailable the stream is 'unavailable' (the loader claims only 'pending'); a later .created
-- re-opens it; a stale .unavailable (received before the newest notification) changes nothing.
-- Each delivery is received and drained in one transaction, so the worker cannot take it first.
INSERT INTO junction.webhook_secrets (secret, description)
VALUES ('whsec_d29ya291dC1zdHJlYW1zLXRlc3Q=', 'workout_streams test secret');
CREATE FUNCTION pg_temp.deliver(msg_id text, event_type text) RETURNS text
LANGUAGE sql AS $$
  WITH body AS (
    SELECT jsonb_build_object('event_type', event_type,
             'user_id', '0190b2a0-0000-7000-8000-0000000000f1',
             'data', jsonb_build_object('user_id', '0190b2a0-0000-7000-8000-0000000000f1',
                       'workout_id', '0190b2a1-0000-7000-8000-0000000000f4',
                       'provider_id', '555', 'source', '{"provider": "garmin", "type": "watch"}'::jsonb,
                       'sport', '{"id": 1, "name": "Running", "slug": "running"}'::jsonb))::text AS b)
  SELECT junction_receive(
           jsonb_build_object('svix-id', msg_id,
             'svix-timestamp', extract(epoch FROM now())::bigint::text,
             'svix-signature', junction_sign_webhook('whsec_d29ya291dC1zdHJlYW1zLXRlc3Q=', msg_id,
                                                     extract(epoch FROM now())::bigint, b)), b)::text
  FROM body
$$;
CREATE FUNCTION pg_temp.state() RETURNS TABLE (fetch_status text, attempts integer, provider_id text, event_type text)
LANGUAGE sql AS $$
  SELECT s.fetch_status, s.attempts, s.provider_id, i.body::jsonb ->> 'event_type'
  FROM junction.workout_streams AS s JOIN junction.inbox AS i ON i.id = s.received_seq
  WHERE s.workout_id = '0190b2a1-0000-7000-8000-0000000000f4'
$$;
BEGIN;
SELECT pg_temp.deliver('msg_ws_1', 'daily.data.workout_stream.created') IS NOT NULL AS received;
SELECT junction_process_inbox(10) >= 1 AS drained;
SELECT * FROM pg_temp.state();
-- Junction says the stream does not exist
SELECT pg_temp.deliver('msg_ws_2', 'daily.data.workout_stream.unavailable') IS NOT NULL AS received;
SELECT junction_process_inbox(10) >= 1 AS drained;
SELECT * FROM pg_temp.state();
-- the loader's claim takes only pending streams: none here
SELECT count(*) AS claimable FROM junction.workout_streams
WHERE workout_id = '0190b2a1-0000-7000-8000-0000000000f4' AND fetch_status = 'pending';
-- a later .created re-opens it
SELECT pg_temp.deliver('msg_ws_3', 'daily.data.workout_stream.created') IS NOT NULL AS received;
SELECT junction_process_inbox(10) >= 1 AS drained;
SELECT * FROM pg_temp.state();
-- a redelivery of the old .unavailable is a no-op (same svix-id), and so the stream stays pending
SELECT pg_temp.deliver('msg_ws_2', 'daily.data.workout_stream.unavailable') IS NOT NULL AS received;
SELECT junction_process_inbox(10) >= 0 AS drained;
SELECT * FROM pg_temp.state();
SELECT status, count(*) FROM junction.inbox WHERE headers ->> 'svix-id' LIKE 'msg_ws_%' GROUP BY status ORDER BY status;
-- a newer .unavailable closes it again
SELECT pg_temp.deliver('msg_ws_4', 'daily.data.workout_stream.unavailable') IS NOT NULL AS received;
SELECT junction_process_inbox(10) >= 1 AS drained;
SELECT * FROM pg_temp.state();
ROLLBACK;
