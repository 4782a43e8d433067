-- junction_verify_webhook and friends, by hand (the generated svix vectors are in verify_vectors).
\set s1 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'
\set h1 '{"svix-id": "msg_p5jXN8AQM9LWM0D4loKWxJek", "svix-timestamp": "1614265330", "svix-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="}'
\set b1 '{"test": 2432232314}'
-- the official vector, at its own time and 300 s either side
SELECT junction_verify_webhook(:'s1', :'h1', :'b1', to_timestamp(1614265330)) AS exact,
       junction_verify_webhook(:'s1', :'h1', :'b1', to_timestamp(1614265630)) AS plus_300,
       junction_verify_webhook(:'s1', :'h1', :'b1', to_timestamp(1614265631)) AS plus_301,
       junction_verify_webhook(:'s1', :'h1', :'b1', to_timestamp(1614265030)) AS minus_300,
       junction_verify_webhook(:'s1', :'h1', :'b1', to_timestamp(1614265029)) AS minus_301;
-- sub-second 'at' is floored to whole seconds: 300.9 s later is still inside
SELECT junction_verify_webhook(:'s1', :'h1', :'b1', to_timestamp(1614265630.9));
-- defaults: now() and 5 minutes; the 2021 vector is long expired
SELECT junction_verify_webhook(:'s1', :'h1', :'b1');
-- a custom tolerance
SELECT junction_verify_webhook(:'s1', :'h1', :'b1', to_timestamp(1614265330 + 3600), '1 hour');
SELECT junction_verify_webhook(:'s1', :'h1', :'b1', to_timestamp(1614265330 + 3601), '1 hour');
-- the boolean form
SELECT junction_webhook_is_valid(:'s1', :'h1', :'b1', to_timestamp(1614265330)),
       junction_webhook_is_valid(:'s1', :'h1', :'b1' || ' ', to_timestamp(1614265330));
-- signing reproduces the official signature, and verifies
SELECT junction_sign_webhook(:'s1', 'msg_p5jXN8AQM9LWM0D4loKWxJek', 1614265330, :'b1');
SELECT junction_verify_webhook('whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD',
         jsonb_build_object('webhook-id', 'm1', 'webhook-timestamp', '1700000000',
                            'webhook-signature', junction_sign_webhook('whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD', 'm1', 1700000000, 'é ☃ 𝄞')),
         'é ☃ 𝄞', to_timestamp(1700000000));
-- STRICT: a NULL argument gives NULL
SELECT junction_verify_webhook(NULL, :'h1', :'b1') IS NULL AS null_secret,
       junction_verify_webhook(:'s1', NULL, :'b1') IS NULL AS null_headers;
-- headers that are not an object have no signature headers
SELECT junction_verify_webhook(:'s1', '[1,2]', :'b1', to_timestamp(1614265330)),
       junction_verify_webhook(:'s1', '"x"', :'b1', to_timestamp(1614265330));
-- a non-string header value counts as missing
SELECT junction_verify_webhook(:'s1', jsonb_set(:'h1'::jsonb, '{svix-timestamp}', '1614265330'), :'b1', to_timestamp(1614265330));
-- invalid_secret is reported before anything about the headers
SELECT junction_verify_webhook('whsec_', '{}', '', now()),
       junction_verify_webhook('', '{}', '', now()),
       junction_verify_webhook('   ', '{}', '', now());
-- errors with a SQLSTATE
SELECT expect_error($q$SELECT junction_verify_webhook('whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', '{}', '', now(), '-1 second')$q$);
SELECT expect_error($q$SELECT junction_verify_webhook('whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', '{}', '', 'infinity')$q$);
SELECT expect_error($q$SELECT junction_sign_webhook('not base64!', 'm', 1, 'b')$q$);
SELECT expect_error($q$SELECT junction_sign_webhook('whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', 'm', -1, 'b')$q$);
-- the secrets table only takes well-formed secrets, one per row
SELECT expect_error($q$INSERT INTO junction.webhook_secrets(secret) VALUES ('whsec_not base64')$q$);
SELECT expect_error($q$INSERT INTO junction.webhook_secrets(secret) VALUES ('whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD')$q$);
SELECT expect_error($q$INSERT INTO junction.webhook_secrets(secret) VALUES ('whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw')$q$);
DELETE FROM junction.webhook_secrets;
-- volatility and parallel safety as declared
SELECT proname, provolatile, proparallel, proisstrict FROM pg_proc
 WHERE proname IN ('junction_verify_webhook', 'junction_webhook_is_valid', 'junction_sign_webhook') ORDER BY 1;
-- verification is open to everyone; the secrets table is not
CREATE ROLE jx_nobody;
SET ROLE jx_nobody;
SELECT junction_verify_webhook(:'s1', :'h1', :'b1', to_timestamp(1614265330));
SELECT expect_error('SELECT count(*) FROM junction.webhook_secrets');
RESET ROLE;
DROP ROLE jx_nobody;
