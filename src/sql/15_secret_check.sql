-- Secrets are checked by the same C code that verifies deliveries.
-- Only well-formed secrets may be stored (checked by the same C code that verifies).
CREATE FUNCTION junction._secret_is_valid(secret text) RETURNS boolean
AS 'MODULE_PATHNAME', 'junction_secret_is_valid' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
ALTER TABLE junction.webhook_secrets ADD CONSTRAINT webhook_secrets_secret_valid
  CHECK (junction._secret_is_valid(secret));

-- pg_dump keeps the data of these extension tables (and the inbox id sequence,
-- which orders "later received" across webhook and REST data).
SELECT pg_catalog.pg_extension_config_dump('junction.inbox', '');
SELECT pg_catalog.pg_extension_config_dump(pg_get_serial_sequence('junction.inbox', 'id'), '');
SELECT pg_catalog.pg_extension_config_dump('junction.webhook_secrets', '');
