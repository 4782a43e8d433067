-- Webhook signatures (Svix / Standard Webhooks), implemented in C (src/signature.c).

CREATE FUNCTION junction_verify_webhook(secret text, headers jsonb, body text,
                                        at timestamptz DEFAULT now(),
                                        tolerance interval DEFAULT '5 minutes')
RETURNS text
AS 'MODULE_PATHNAME', 'junction_verify_webhook'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION junction_verify_webhook(text, jsonb, text, timestamptz, interval) IS
  'ok, or why the delivery fails Svix verification: missing_header, invalid_timestamp, timestamp_too_old, timestamp_too_new, no_matching_signature, invalid_secret';

CREATE FUNCTION junction_webhook_is_valid(secret text, headers jsonb, body text,
                                          at timestamptz DEFAULT now(),
                                          tolerance interval DEFAULT '5 minutes')
RETURNS boolean
AS 'MODULE_PATHNAME', 'junction_webhook_is_valid'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION junction_webhook_is_valid(text, jsonb, text, timestamptz, interval) IS
  'true when junction_verify_webhook(...) is ok';

CREATE FUNCTION junction_sign_webhook(secret text, msg_id text, "timestamp" bigint, body text)
RETURNS text
AS 'MODULE_PATHNAME', 'junction_sign_webhook'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION junction_sign_webhook(text, text, bigint, text) IS
  'the svix-signature header value (v1,<base64>) Svix would send for this message; for testing receivers';

-- Verification is pure computation on the caller's inputs: anyone may use it.
GRANT EXECUTE ON FUNCTION junction_verify_webhook(text, jsonb, text, timestamptz, interval),
                          junction_webhook_is_valid(text, jsonb, text, timestamptz, interval),
                          junction_sign_webhook(text, text, bigint, text) TO PUBLIC;

-- Only well-formed secrets may be stored (checked by the same C code that verifies).
CREATE FUNCTION junction._secret_is_valid(secret text) RETURNS boolean
AS 'MODULE_PATHNAME', 'junction_secret_is_valid' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
