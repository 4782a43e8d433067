-- The inbox and the drain's C side: receiving, no-secret waiting, quarantine
-- reasons, tolerance against received_at, rotation, expiry, replay, the receiver role.
-- The worker serves this database too, so each manual step runs in one
-- transaction: the worker cannot see the rows until they are already handled.
\set s1 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'
\set s2 'whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD'
CREATE FUNCTION pg_temp.signed(secret text, id text, body text, ts timestamptz DEFAULT now()) RETURNS jsonb
LANGUAGE sql AS $$
  SELECT jsonb_build_object('svix-id', id, 'svix-timestamp', extract(epoch FROM ts)::bigint::text,
                            'svix-signature', junction_sign_webhook(secret, id, extract(epoch FROM ts)::bigint, body))
$$;
\set ev '{"event_type":"labtest.order.created","user_id":"0190b2a0-0000-7000-8000-000000000001","client_user_id":"c1","team_id":"0190b2a0-0000-7000-8000-00000000aaaa","data":{"id":"0190b2a7-0000-7000-8000-0000000000a1"}}'

-- 1. No secret: deliveries wait, and the status view says why.
BEGIN;
SELECT junction_receive(pg_temp.signed(:'s1', 'msg_a1', :'ev'), :'ev') > 0 AS received;
INSERT INTO junction.inbox (headers, body) VALUES (pg_temp.signed(:'s1', 'msg_a2', :'ev'), :'ev');
COPY junction.inbox (headers, body) FROM stdin;
{"svix-id": "msg_a3"}	{"copied": true}
\.
SELECT junction_process_inbox();
COMMIT;
SELECT status, count(*) FROM junction.inbox GROUP BY 1;
SELECT pending, quarantined, waiting_reason FROM junction.status;

-- 2. With a secret: good rows are typed, bad ones quarantined with reason and SQLSTATE.
BEGIN;
INSERT INTO junction.webhook_secrets (secret, description) VALUES (:'s1', 'current');
INSERT INTO junction.inbox (headers, body) VALUES
  (pg_temp.signed(:'s2', 'msg_b1', :'ev'), :'ev'),                                   -- other secret
  (pg_temp.signed(:'s1', 'msg_b2', :'ev', now() - interval '10 minutes'), :'ev'),   -- stale
  (pg_temp.signed(:'s1', 'msg_b3', :'ev', now() + interval '10 minutes'), :'ev'),   -- from the future
  ('{"svix-id": "msg_b4", "svix-timestamp": "soon", "svix-signature": "v1,x"}', :'ev'),
  (pg_temp.signed(:'s1', 'msg_b5', :'ev') - 'svix-signature', :'ev'),
  (pg_temp.signed(:'s1', 'msg_b6', :'ev'), :'ev' || ' ');                            -- body changed after signing
-- a backlog: received two days ago, signed then, handled now: still good
INSERT INTO junction.inbox (received_at, headers, body)
  VALUES (now() - interval '2 days', pg_temp.signed(:'s1', 'msg_b7', :'ev', now() - interval '2 days'), :'ev');
SELECT junction_process_inbox();
COMMIT;
SELECT headers->>'svix-id' AS svix_id, status, attempts, sqlstate, error
  FROM junction.inbox ORDER BY id;
SELECT svix_id, event_type FROM junction.events ORDER BY svix_id;
SELECT pending, quarantined, waiting_reason IN ('idle', 'draining') AS worker_ok FROM junction.status;

-- 3. Rotation: a second active secret lets msg_b1 through on replay; an expired one is not tried.
BEGIN;
INSERT INTO junction.webhook_secrets (secret, description, expires_at)
  VALUES (:'s2', 'old, retired', now() - interval '1 second');
SELECT junction_replay(ARRAY[(SELECT id FROM junction.inbox WHERE headers->>'svix-id' = 'msg_b1')]);
SELECT junction_process_inbox();
SELECT status, attempts, error FROM junction.inbox WHERE headers->>'svix-id' = 'msg_b1';
UPDATE junction.webhook_secrets SET expires_at = NULL WHERE secret = :'s2';
SELECT junction_replay(ARRAY[(SELECT id FROM junction.inbox WHERE headers->>'svix-id' = 'msg_b1')]);
SELECT junction_process_inbox();
SELECT status, attempts, error FROM junction.inbox WHERE headers->>'svix-id' = 'msg_b1';
COMMIT;

-- 4. Replay everything: still-bad rows come back quarantined, attempts counted.
BEGIN;
SELECT junction_replay();
SELECT count(*) AS pending_after_replay FROM junction.inbox WHERE status = 'pending';
SELECT junction_process_inbox();
COMMIT;
SELECT headers->>'svix-id' AS svix_id, status, attempts FROM junction.inbox WHERE status = 'quarantined' ORDER BY id;

-- 5. A redelivery (same svix-id, good signature) is processed and changes nothing.
BEGIN;
INSERT INTO junction.inbox (headers, body) VALUES (pg_temp.signed(:'s1', 'msg_b7', :'ev'), :'ev');
SELECT junction_process_inbox();
COMMIT;
SELECT count(*) AS events_for_msg_b7 FROM junction.events WHERE svix_id = 'msg_b7';
SELECT status, count(*) FROM junction.inbox WHERE headers->>'svix-id' = 'msg_b7' GROUP BY 1;

-- 6. Argument checks.
SELECT expect_error('SELECT junction_process_inbox(-1)');
SELECT junction_process_inbox(0);

-- 7. The receiver role stores deliveries and can do nothing else.
CREATE ROLE jx_receiver_login LOGIN IN ROLE junction_receiver;
SET ROLE jx_receiver_login;
BEGIN;
SELECT junction_receive('{"svix-id":"msg_r1"}', '{}') > 0 AS can_receive;
SELECT expect_error($q$INSERT INTO junction.inbox (headers, body) VALUES ('{"svix-id":"msg_r2"}', '{}')$q$);
SELECT expect_error($q$INSERT INTO junction.inbox (headers, body, status) VALUES ('{}', '{}', 'processed')$q$);
SELECT expect_error('SELECT count(*) FROM junction.inbox');
SELECT expect_error('SELECT count(*) FROM junction.events');
SELECT expect_error('SELECT count(*) FROM junction.webhook_secrets');
SELECT expect_error('SELECT * FROM junction.status');
SELECT expect_error('SELECT junction_process_inbox()');
SELECT expect_error('SELECT junction_replay()');
SELECT expect_error('UPDATE junction.inbox SET status = $$pending$$');
SELECT expect_error('DELETE FROM junction.inbox');
ROLLBACK;
RESET ROLE;
DROP ROLE jx_receiver_login;
-- leave a clean slate for the tests that follow
DELETE FROM junction.inbox;
DELETE FROM junction.webhook_secrets;
