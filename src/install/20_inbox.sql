-- The inbox: every delivery exactly as received, and the secrets it is verified with.

CREATE TABLE junction.inbox (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at  timestamptz NOT NULL DEFAULT now()
                 CONSTRAINT inbox_received_at_finite CHECK (isfinite(received_at)),
    headers      jsonb NOT NULL
                 CONSTRAINT inbox_headers_object CHECK (jsonb_typeof(headers) = 'object'),
    body         text NOT NULL,
    status       text NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'processed', 'quarantined')),
    attempts     integer NOT NULL DEFAULT 0,
    error        text,
    sqlstate     text,
    processed_at timestamptz
);
-- The constraints keep out what no delivery can be; the drain still checks every row for
-- them (rows from before a constraint, or with one disabled) and quarantines, never fails.
COMMENT ON TABLE junction.inbox IS
  'raw webhook deliveries (headers as sent, body byte for byte); pending -> processed | quarantined';
-- The worker's queue: only pending rows, in arrival order.
CREATE INDEX inbox_pending ON junction.inbox (id) WHERE status = 'pending';
-- Retention deletes processed rows by age.
CREATE INDEX inbox_processed_at ON junction.inbox (processed_at) WHERE status = 'processed';

CREATE TABLE junction.webhook_secrets (
    secret      text PRIMARY KEY CHECK (secret <> ''),
    description text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz,
    webhook_id  text,           -- see the comment below
    -- only well-formed secrets: checked by the same C code that verifies deliveries
    CONSTRAINT webhook_secrets_secret_valid CHECK (junction._secret_is_valid(secret))
);
COMMENT ON TABLE junction.webhook_secrets IS
  'Svix signing secrets (whsec_...); every row not past expires_at is tried (rotation). Superuser only.';


COMMENT ON COLUMN junction.webhook_secrets.webhook_id IS
  'the Junction webhook (endpoint) id this is the signing secret of; NULL for secrets added by hand';
-- junction_webhook_secret_sync finds an endpoint's secrets by it (src/install/70_webhooks.sql)
CREATE INDEX webhook_secrets_webhook_id ON junction.webhook_secrets (webhook_id)
  WHERE webhook_id IS NOT NULL;

-- pg_dump keeps the data of these extension tables (and the inbox id sequence,
-- which orders "later received" across webhook and REST data).
SELECT pg_catalog.pg_extension_config_dump('junction.inbox', '');
SELECT pg_catalog.pg_extension_config_dump(pg_get_serial_sequence('junction.inbox', 'id'), '');
SELECT pg_catalog.pg_extension_config_dump('junction.webhook_secrets', '');

-- A receiver stores a delivery with one call and can do nothing else.
CREATE FUNCTION junction_receive(headers jsonb, body text)
RETURNS bigint
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    -- coalesce calls junction._require (which raises) only for a NULL: nothing on the hot path
    INSERT INTO junction.inbox (headers, body)
    VALUES (coalesce($1, junction._require(NULL::jsonb, 'headers')),
            coalesce($2, junction._require(NULL::text, 'body')))
    RETURNING id
$$;
COMMENT ON FUNCTION junction_receive(jsonb, text) IS
  'store one raw webhook delivery in junction.inbox and return its id';

-- The receiver role: store deliveries, nothing else.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'junction_receiver') THEN
        CREATE ROLE junction_receiver NOLOGIN;
    END IF;
END
$$;
GRANT USAGE ON SCHEMA junction TO junction_receiver;
GRANT EXECUTE ON FUNCTION junction_receive(jsonb, text) TO junction_receiver;
GRANT INSERT (headers, body) ON junction.inbox TO junction_receiver;
