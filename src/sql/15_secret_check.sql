-- Secrets are checked by the same C code that verifies deliveries.
-- Only well-formed secrets may be stored (checked by the same C code that verifies).
CREATE FUNCTION junction._secret_is_valid(secret text) RETURNS boolean
AS 'MODULE_PATHNAME', 'junction_secret_is_valid' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
ALTER TABLE junction.webhook_secrets ADD CONSTRAINT webhook_secrets_secret_valid
  CHECK (junction._secret_is_valid(secret));
