-- The junction install script, built by concatenating src/install/*.sql in name order. One file
-- per subsystem, paired with its C file where it has one; each table is created complete (columns,
-- constraints, indexes, comments, grants) in the file that owns it; privileges: 99_privileges.sql.
-- Tables, views and internal functions live in schema junction; the functions
-- users call carry the junction_ prefix and live in the extension's schema.
\echo Use "CREATE EXTENSION junction" to load this file. \quit

CREATE SCHEMA junction;
COMMENT ON SCHEMA junction IS 'Junction (formerly Vital) health data: inbox, events, typed resources';

-- Entry points that store or act refuse a NULL argument instead of returning NULL (a STRICT
-- function would return NULL and store nothing, and a receiver would answer 200 to a lost delivery).
CREATE FUNCTION junction._require(value anyelement, what text)
RETURNS anyelement
-- VOLATILE, so that the planner never folds a call with a constant NULL (coalesce($1,
-- junction._require(NULL::jsonb, ...)) must raise only when $1 is NULL)
LANGUAGE plpgsql VOLATILE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF value IS NULL THEN
        RAISE EXCEPTION '% must not be null', what USING ERRCODE = '22004',
            HINT = 'Nothing was stored or sent; pass a value (see the junction README for this function).';
    END IF;
    RETURN value;
END
$$;
COMMENT ON FUNCTION junction._require(anyelement, text) IS
  'value, or error 22004 "<what> must not be null": for entry points that must not turn NULL into silence';
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
-- The drain: background workers (C, src/worker.c) and the same work on demand.

-- Any INSERT or COPY into the inbox wakes the workers when its transaction commits.
CREATE FUNCTION junction._wake_trigger() RETURNS trigger
AS 'MODULE_PATHNAME', 'junction_wake_trigger' LANGUAGE C;
CREATE TRIGGER inbox_wake AFTER INSERT ON junction.inbox
  FOR EACH STATEMENT EXECUTE FUNCTION junction._wake_trigger();

CREATE FUNCTION junction._wake_at_commit() RETURNS void
AS 'MODULE_PATHNAME', 'junction_wake_at_commit' LANGUAGE C VOLATILE;

CREATE FUNCTION junction_process_inbox(max_rows integer DEFAULT 1000) RETURNS integer
AS 'MODULE_PATHNAME', 'junction_process_inbox' LANGUAGE C VOLATILE
-- the drain's SQL (src/drain.c) resolves names: never through a schema the caller's path adds
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION junction_process_inbox(integer) IS
  'verify, dedupe and type up to max_rows pending deliveries now, in this transaction; returns rows handled';

-- Quarantined rows go back to pending (all of them, or those listed).
CREATE FUNCTION junction_replay(ids bigint[] DEFAULT NULL) RETURNS integer
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n integer;
BEGIN
    UPDATE junction.inbox
       SET status = 'pending', error = NULL, sqlstate = NULL, processed_at = NULL
     WHERE status = 'quarantined' AND (ids IS NULL OR id = ANY (ids));
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n > 0 THEN
        PERFORM junction._wake_at_commit();
    END IF;
    RETURN n;
END
$$;
COMMENT ON FUNCTION junction_replay(bigint[]) IS
  'put quarantined inbox rows (all, or the ids given) back to pending; returns how many';

CREATE FUNCTION junction._worker_state(OUT slot integer, OUT pid integer,
                                       OUT started_at timestamptz, OUT heartbeat timestamptz,
                                       OUT processed bigint, OUT quarantined bigint,
                                       OUT kind text)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'junction_worker_state' LANGUAGE C VOLATILE;

CREATE VIEW junction.status AS
SELECT q.pending,
       q.quarantined,
       q.oldest_pending_age,
       q.processed_last_minute,
       w.worker_pids,
       w.last_heartbeat,
       w.backfill_pid,
       CASE
         WHEN NOT q.has_secret THEN
           'no webhook secret: INSERT INTO junction.webhook_secrets(secret) VALUES (''whsec_...'')'
         WHEN w.worker_pids IS NULL THEN
           'no worker running: add junction to shared_preload_libraries and set junction.database = '''
           || current_database() || ''', or call junction_process_inbox()'
         WHEN current_setting('junction.database', true) <> current_database() THEN
           'the workers serve database ' || current_setting('junction.database', true)
           || ', not this one; call junction_process_inbox()'
         WHEN q.pending > 0 THEN 'draining'
         ELSE 'idle'
       END AS waiting_reason
FROM (SELECT (SELECT count(*) FROM junction.inbox WHERE status = 'pending') AS pending,
             (SELECT count(*) FROM junction.inbox WHERE status = 'quarantined') AS quarantined,
             (SELECT now() - min(received_at) FROM junction.inbox WHERE status = 'pending')
               AS oldest_pending_age,
             (SELECT count(*) FROM junction.inbox
               WHERE status = 'processed' AND processed_at > now() - interval '1 minute')
               AS processed_last_minute,
             EXISTS (SELECT FROM junction.webhook_secrets
                      WHERE expires_at IS NULL OR expires_at > now()) AS has_secret) q,
     (SELECT array_agg(pid ORDER BY slot) FILTER (WHERE kind = 'inbox') AS worker_pids,
             max(heartbeat) FILTER (WHERE kind = 'inbox') AS last_heartbeat,
             max(pid) FILTER (WHERE kind = 'backfill') AS backfill_pid
        FROM junction._worker_state()) w;
COMMENT ON VIEW junction.status IS
  'inbox backlog, quarantine, throughput, worker pids and heartbeat, and why work is waiting';

-- Retention: processed rows older than retention go, a bounded batch at a time; quarantined rows stay.
CREATE FUNCTION junction._trim_inbox(retention interval, max_rows integer DEFAULT 10000) RETURNS integer
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n integer;
BEGIN
    DELETE FROM junction.inbox WHERE id IN (
        SELECT id FROM junction.inbox
         WHERE status = 'processed' AND processed_at < now() - retention
         ORDER BY processed_at LIMIT max_rows);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
-- The typed model: the tables users query, and the registry of Junction's data resources.
--
-- Conventions shared by every typed table:
--   * user_id comes first in every per-user key (a table can be distributed by user_id).
--   * received_seq orders deliveries: the inbox id for webhook data (a REST load takes a value
--     from the same sequence, see junction._next_received_seq()), so "later received" is a
--     total order shared by both paths.
--   * data jsonb keeps the whole object of the version that won, so no field is ever lost.
--   * Short identifiers (provider, source_type, resource, type, ...) are capped at 255 characters.

-- ---------------------------------------------------------------------------------------------
-- Registry: one row per resource Junction sends. Adding a timeseries resource is one INSERT here.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE junction.resources (
    name             text PRIMARY KEY CHECK (name ~ '^[a-z0-9_]{1,64}$'),
    kind             text NOT NULL CHECK (kind IN ('summary', 'timeseries', 'stream')),
    event_prefix     text NOT NULL DEFAULT 'daily.data',
    table_name       text NOT NULL,
    id_field         text,
    rest_path        text NOT NULL,
    rest_segment     text,
    response_key     text,
    rest_date_format text NOT NULL DEFAULT 'datetime' CHECK (rest_date_format IN ('date', 'datetime')),
    is_interval      boolean,
    value_kind       text CHECK (value_kind IN ('number', 'text', 'none')),
    has_type         boolean NOT NULL DEFAULT false,
    unit             text,
    nested_fields    jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(nested_fields) = 'object'),
    builtin          boolean NOT NULL DEFAULT false,
    CHECK ((kind = 'timeseries') = (value_kind IS NOT NULL AND is_interval IS NOT NULL)),
    CHECK ((kind = 'timeseries') = (table_name = 'samples')),
    CHECK ((kind = 'timeseries') = (id_field IS NULL))
);
COMMENT ON TABLE junction.resources IS
  'registry of the Junction resources we type: event name, kind, typed table, REST path and response key';
COMMENT ON COLUMN junction.resources.name IS 'resource name as in the event type (daily.data.<name>.created)';
COMMENT ON COLUMN junction.resources.kind IS 'summary (one row per id), timeseries (rows in junction.samples) or stream (workout stream notification)';
COMMENT ON COLUMN junction.resources.event_prefix IS 'event types are <event_prefix>.<name>.created|updated';
COMMENT ON COLUMN junction.resources.table_name IS 'typed table in schema junction';
COMMENT ON COLUMN junction.resources.id_field IS 'summaries and streams: the field of the event data that identifies the object';
COMMENT ON COLUMN junction.resources.rest_path IS 'Data Access API path, with {user_id} / {workout_id} placeholders';
COMMENT ON COLUMN junction.resources.rest_segment IS 'resource name in the REST path where it differs from the event name (weight -> body_weight)';
COMMENT ON COLUMN junction.resources.response_key IS 'key of the list in the REST response (meal -> meals, timeseries -> groups); null = bare object or array';
COMMENT ON COLUMN junction.resources.rest_date_format IS 'whether the REST endpoint types start_date/end_date as date or datetime';
COMMENT ON COLUMN junction.resources.is_interval IS 'timeseries: samples carry start/end (an interval), else an instant';
COMMENT ON COLUMN junction.resources.value_kind IS 'timeseries: number -> samples.value; text (note) and none (blood_pressure) keep their fields in samples.extra';
COMMENT ON COLUMN junction.resources.has_type IS 'timeseries: the sample type is meaningful and can differ at the same instant (reading type, ECG lead, ...)';
COMMENT ON COLUMN junction.resources.unit IS 'documented unit';
COMMENT ON COLUMN junction.resources.nested_fields IS 'summaries: typed columns read from nested fields, {"column": ["path", "to", "field"]} (scalars only)';
COMMENT ON COLUMN junction.resources.builtin IS 'installed by the extension; rows you add (builtin = false) are kept by pg_dump';

-- Summaries (and devices, which Junction sends as provider.device.*).
INSERT INTO junction.resources
    (name, kind, event_prefix, table_name, id_field, rest_path, rest_segment, response_key, rest_date_format,
     nested_fields)
VALUES
    ('activity', 'summary', 'daily.data', 'activity', 'id', '/v2/summary/activity/{user_id}', 'activity', 'activity', 'datetime',
     '{"heart_rate_avg_bpm": ["heart_rate", "avg_bpm"], "heart_rate_min_bpm": ["heart_rate", "min_bpm"],
       "heart_rate_max_bpm": ["heart_rate", "max_bpm"], "heart_rate_resting_bpm": ["heart_rate", "resting_bpm"],
       "heart_rate_avg_walking_bpm": ["heart_rate", "avg_walking_bpm"]}'),
    ('sleep', 'summary', 'daily.data', 'sleep', 'id', '/v2/summary/sleep/{user_id}', 'sleep', 'sleep', 'datetime', '{}'),
    ('sleep_cycle', 'summary', 'daily.data', 'sleep_cycle', 'id', '/v2/summary/sleep_cycle/{user_id}', 'sleep_cycle', 'sleep_cycle', 'date', '{}'),
    ('workouts', 'summary', 'daily.data', 'workouts', 'id', '/v2/summary/workouts/{user_id}', 'workouts', 'workouts', 'datetime',
     '{"sport_id": ["sport", "id"], "sport_name": ["sport", "name"], "sport_slug": ["sport", "slug"]}'),
    ('body', 'summary', 'daily.data', 'body', 'id', '/v2/summary/body/{user_id}', 'body', 'body', 'datetime', '{}'),
    ('profile', 'summary', 'daily.data', 'profile', 'id', '/v2/summary/profile/{user_id}', 'profile', NULL, 'datetime', '{}'),
    ('meal', 'summary', 'daily.data', 'meals', 'id', '/v2/summary/meal/{user_id}', 'meal', 'meals', 'datetime',
     '{"energy_kcal": ["energy", "value"], "carbs": ["macros", "carbs"], "protein": ["macros", "protein"],
       "fats_total": ["macros", "fats", "total"], "alcohol": ["macros", "alcohol"], "water": ["macros", "water"],
       "fibre": ["macros", "fibre"], "sugar": ["macros", "sugar"], "cholesterol": ["macros", "cholesterol"]}'),
    ('menstrual_cycle', 'summary', 'daily.data', 'menstrual_cycles', 'id', '/v2/summary/menstrual_cycle/{user_id}', 'menstrual_cycle', 'menstrual_cycle', 'date', '{}'),
    ('electrocardiogram', 'summary', 'daily.data', 'electrocardiograms', 'id', '/v2/summary/electrocardiogram/{user_id}', 'electrocardiogram', 'electrocardiogram', 'date', '{}'),
    ('workout_stream', 'stream', 'daily.data', 'workout_streams', 'workout_id', '/v2/timeseries/workouts/{workout_id}/stream', NULL, NULL, 'datetime', '{}'),
    ('device', 'summary', 'provider', 'devices', 'id', '/v2/user/{user_id}/device', NULL, NULL, 'datetime', '{}');

-- Timeseries: every one lands in junction.samples; REST: /v2/timeseries/{user_id}/<segment>/grouped -> {groups: ...}.
INSERT INTO junction.resources
    (name, kind, table_name, rest_path, rest_segment, response_key, is_interval, value_kind, has_type, unit)
SELECT t.name, 'timeseries', 'samples',
       format('/v2/timeseries/{user_id}/%s/grouped', coalesce(t.segment, t.name)),
       coalesce(t.segment, t.name), 'groups', t.is_interval, t.value_kind, t.has_type, t.unit
FROM (VALUES
    ('afib_burden',                    NULL,          true,  'number', false, '%'),
    ('basal_body_temperature',         NULL,          true,  'number', false, '°C'),
    ('blood_oxygen',                   NULL,          false, 'number', false, '%'),
    ('blood_pressure',                 NULL,          false, 'none',   false, 'mmHg'),
    ('body_mass_index',                NULL,          true,  'number', false, 'index'),
    ('body_temperature',               NULL,          true,  'number', false, '°C'),
    ('body_temperature_delta',         NULL,          true,  'number', false, '°C'),
    ('caffeine',                       NULL,          true,  'number', false, 'g'),
    ('calories_active',                NULL,          true,  'number', false, 'kcal'),
    ('calories_basal',                 NULL,          false, 'number', false, 'kcal'),
    ('carbohydrates',                  NULL,          true,  'number', false, 'g'),
    ('cholesterol',                    NULL,          false, 'number', true,  'mmol/L'),
    ('daylight_exposure',              NULL,          true,  'number', false, 'min'),
    ('distance',                       NULL,          true,  'number', false, 'm'),
    ('electrocardiogram_voltage',      NULL,          false, 'number', true,  'mV'),
    ('fall',                           NULL,          true,  'number', false, 'count'),
    ('fat',                            'body_fat',    false, 'number', false, '%'),
    ('floors_climbed',                 NULL,          false, 'number', false, 'count'),
    ('forced_expiratory_volume_1',     NULL,          true,  'number', false, 'L'),
    ('forced_vital_capacity',          NULL,          true,  'number', false, 'L'),
    ('glucose',                        NULL,          false, 'number', false, 'mmol/L'),
    ('handwashing',                    NULL,          true,  'number', false, 'count'),
    ('heart_rate_alert',               NULL,          true,  'number', true,  'count'),
    ('heart_rate_recovery_one_minute', NULL,          true,  'number', false, 'count'),
    ('heartrate',                      NULL,          false, 'number', false, 'bpm'),
    ('hrv',                            NULL,          false, 'number', false, 'rmssd'),
    ('ige',                            NULL,          false, 'number', true,  'FSU'),
    ('igg',                            NULL,          false, 'number', true,  'FSU'),
    ('inhaler_usage',                  NULL,          true,  'number', false, 'count'),
    ('insulin_injection',              NULL,          true,  'number', true,  'unit'),
    ('lean_body_mass',                 NULL,          true,  'number', false, 'kg'),
    ('mindfulness_minutes',            NULL,          true,  'number', false, 'min'),
    ('note',                           NULL,          true,  'text',   false, 'text'),
    ('peak_expiratory_flow_rate',      NULL,          true,  'number', false, 'L/min'),
    ('respiratory_rate',               NULL,          false, 'number', false, 'bpm'),
    ('sleep_apnea_alert',              NULL,          true,  'number', false, 'count'),
    ('sleep_breathing_disturbance',    NULL,          true,  'number', true,  'count'),
    ('stand_duration',                 NULL,          true,  'number', false, 'min'),
    ('stand_hour',                     NULL,          true,  'number', true,  'count'),
    ('steps',                          NULL,          true,  'number', false, 'count'),
    ('stress_level',                   NULL,          false, 'number', false, '%'),
    ('uv_exposure',                    NULL,          true,  'number', false, 'index'),
    ('vo2_max',                        NULL,          true,  'number', false, 'mL/kg/min'),
    ('waist_circumference',            NULL,          true,  'number', false, 'cm'),
    ('water',                          NULL,          false, 'number', false, 'mL'),
    ('weight',                         'body_weight', false, 'number', false, 'kg'),
    ('wheelchair_push',                NULL,          true,  'number', false, 'count'),
    ('workout_distance',               NULL,          true,  'number', false, 'm'),
    ('workout_duration',               NULL,          true,  'number', false, 'min'),
    ('workout_swimming_stroke',        NULL,          true,  'number', false, 'count')
) AS t(name, segment, is_interval, value_kind, has_type, unit);

UPDATE junction.resources SET builtin = true;

-- ---------------------------------------------------------------------------------------------
-- Events: one row per accepted message, typed or not.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE junction.events (
    svix_id        text PRIMARY KEY CHECK (length(svix_id) BETWEEN 1 AND 255),
    inbox_id       bigint NOT NULL,
    event_type     text NOT NULL CHECK (length(event_type) BETWEEN 1 AND 255),
    user_id        uuid,
    client_user_id text CHECK (length(client_user_id) <= 1024),
    team_id        uuid,
    provider       text CHECK (length(provider) <= 255),
    resource       text CHECK (length(resource) <= 255),
    received_at    timestamptz NOT NULL,
    payload        jsonb NOT NULL
);
COMMENT ON TABLE junction.events IS
  'one row per accepted webhook message (svix_id); every event type, typed or not (lab, Sense, future ones)';
COMMENT ON COLUMN junction.events.resource IS
  'the second-to-last part of event_type: steps, activity, connection, device, order, result_table, ...';
CREATE INDEX events_user_id ON junction.events (user_id, received_at);
CREATE INDEX events_inbox_id ON junction.events (inbox_id);

-- ---------------------------------------------------------------------------------------------
-- Connections and backfills.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE junction.connections (
    user_id               uuid NOT NULL,
    provider              text NOT NULL CHECK (length(provider) BETWEEN 1 AND 255),
    status                text NOT NULL CHECK (length(status) BETWEEN 1 AND 64),
    external_user_id      text,
    resource_availability jsonb,
    error_type            text,
    error_message         text,
    error_details         text,
    connected_at          timestamptz,
    updated_at            timestamptz NOT NULL,
    received_seq          bigint NOT NULL,
    connected_seq         bigint,
    data                  jsonb NOT NULL,
    PRIMARY KEY (user_id, provider)
);
COMMENT ON TABLE junction.connections IS
  'one row per user and provider: connected | error, from provider.connection.* (latest received wins)';
COMMENT ON COLUMN junction.connections.connected_at IS 'received_at of the latest provider.connection.created';
COMMENT ON COLUMN junction.connections.connected_seq IS 'received_seq of the latest provider.connection.created (source of external_user_id, resource_availability)';
COMMENT ON COLUMN junction.connections.data IS 'data of the latest event';

CREATE TABLE junction.backfills (
    user_id      uuid NOT NULL,
    provider     text NOT NULL CHECK (length(provider) BETWEEN 1 AND 255),
    resource     text NOT NULL CHECK (length(resource) BETWEEN 1 AND 255),
    start_date   timestamptz,
    end_date     timestamptz,
    completed_at timestamptz NOT NULL,
    fetch_status text NOT NULL DEFAULT 'pending' CHECK (length(fetch_status) BETWEEN 1 AND 64),
    fetch_error  text,
    rows_loaded  bigint,
    attempts     integer NOT NULL DEFAULT 0,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    received_seq bigint NOT NULL,
    data         jsonb NOT NULL,
    next_attempt_at timestamptz,
    sqlstate     text,
    PRIMARY KEY (user_id, provider, resource)
);
COMMENT ON TABLE junction.backfills IS
  'historical pulls Junction completed (historical.data.*) and the state of our follow-up fetch of that range';
COMMENT ON COLUMN junction.backfills.completed_at IS 'received_at of the latest historical.data.<resource>.created';
COMMENT ON COLUMN junction.backfills.fetch_status IS 'our fetch of [start_date, end_date]: pending until the API loader changes it; a newer completion resets it to pending';
COMMENT ON COLUMN junction.backfills.next_attempt_at IS 'a failed fetch is retried from this time on (null: now)';
COMMENT ON COLUMN junction.backfills.sqlstate IS 'SQLSTATE of the last failed fetch';
CREATE INDEX backfills_pending ON junction.backfills (completed_at) WHERE fetch_status = 'pending';

-- ---------------------------------------------------------------------------------------------
-- Summary tables. Each has: user_id, id, provider, source_type, source_app_id, source_device_id,
-- the typed fields (column name = Junction field name unless noted), created_at, updated_at
-- (Junction's), data (the whole winning object) and received_seq. A version replaces the stored
-- one when (coalesce(updated_at, '-infinity'), received_seq) is greater.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE junction.activity (
    user_id                    uuid NOT NULL,
    id                         uuid NOT NULL,
    provider                   text NOT NULL CHECK (length(provider) BETWEEN 1 AND 255),
    source_type                text NOT NULL DEFAULT 'unknown' CHECK (length(source_type) <= 255),
    source_app_id              text,
    source_device_id           text,
    calendar_date              date,
    date                       timestamptz,
    calories_total             double precision,
    calories_active            double precision,
    steps                      integer,
    distance                   double precision,
    daily_movement             double precision,
    low                        double precision,
    medium                     double precision,
    high                       double precision,
    floors_climbed             integer,
    time_zone                  text,
    timezone_offset            integer,
    heart_rate_avg_bpm         double precision,
    heart_rate_min_bpm         double precision,
    heart_rate_max_bpm         double precision,
    heart_rate_resting_bpm     double precision,
    heart_rate_avg_walking_bpm double precision,
    wheelchair_use             boolean,
    wheelchair_push            integer,
    created_at                 timestamptz,
    updated_at                 timestamptz,
    data                       jsonb NOT NULL,
    received_seq               bigint NOT NULL,
    PRIMARY KEY (user_id, id)
);
COMMENT ON TABLE junction.activity IS
  'daily activity summaries (daily.data.activity.*), one row per id; heart_rate_* = heart_rate.*';
CREATE INDEX activity_calendar_date ON junction.activity (user_id, calendar_date);

CREATE TABLE junction.sleep (
    user_id                  uuid NOT NULL,
    id                       uuid NOT NULL,
    provider                 text NOT NULL CHECK (length(provider) BETWEEN 1 AND 255),
    source_type              text NOT NULL DEFAULT 'unknown' CHECK (length(source_type) <= 255),
    source_app_id            text,
    source_device_id         text,
    calendar_date            date,
    date                     timestamptz,
    bedtime_start            timestamptz,
    bedtime_stop             timestamptz,
    type                     text,
    timezone_offset          integer,
    duration                 integer,
    total                    integer,
    awake                    integer,
    light                    integer,
    rem                      integer,
    deep                     integer,
    score                    integer,
    recovery_readiness_score integer,
    hr_lowest                integer,
    hr_average               integer,
    hr_resting               integer,
    efficiency               double precision,
    latency                  integer,
    temperature_delta        double precision,
    skin_temperature         double precision,
    hr_dip                   double precision,
    state                    text,
    average_hrv              double precision,
    respiratory_rate         double precision,
    created_at               timestamptz,
    updated_at               timestamptz,
    data                     jsonb NOT NULL,
    received_seq             bigint NOT NULL,
    PRIMARY KEY (user_id, id)
);
COMMENT ON TABLE junction.sleep IS
  'sleep sessions (daily.data.sleep.*), one row per id; durations in seconds; sleep_stream stays in data';
CREATE INDEX sleep_calendar_date ON junction.sleep (user_id, calendar_date);

CREATE TABLE junction.sleep_cycle (
    user_id                   uuid NOT NULL,
    id                        uuid NOT NULL,
    provider                  text NOT NULL CHECK (length(provider) BETWEEN 1 AND 255),
    source_type               text NOT NULL DEFAULT 'unknown' CHECK (length(source_type) <= 255),
    source_app_id             text,
    source_device_id          text,
    sleep_id                  uuid,
    session_start             timestamptz,
    session_end               timestamptz,
    stage_start_offset_second integer[],
    stage_end_offset_second   integer[],
    stage_type                integer[],
    time_zone                 text,
    created_at                timestamptz,
    updated_at                timestamptz,
    data                      jsonb NOT NULL,
    received_seq              bigint NOT NULL,
    PRIMARY KEY (user_id, id)
);
COMMENT ON TABLE junction.sleep_cycle IS
  'sleep stages per session (daily.data.sleep_cycle.*): parallel arrays, stage_type -1 unknown, 1 deep, 2 light, 3 rem, 4 awake, 5 manual';
CREATE INDEX sleep_cycle_session_start ON junction.sleep_cycle (user_id, session_start);

CREATE TABLE junction.workouts (
    user_id                uuid NOT NULL,
    id                     uuid NOT NULL,
    provider               text NOT NULL CHECK (length(provider) BETWEEN 1 AND 255),
    source_type            text NOT NULL DEFAULT 'unknown' CHECK (length(source_type) <= 255),
    source_app_id          text,
    source_device_id       text,
    provider_id            text,
    title                  text,
    calendar_date          date,
    time_start             timestamptz,
    time_end               timestamptz,
    timezone_offset        integer,
    sport_id               integer,
    sport_name             text,
    sport_slug             text,
    average_hr             integer,
    max_hr                 integer,
    distance               double precision,
    calories               double precision,
    hr_zones               integer[],
    moving_time            integer,
    total_elevation_gain   double precision,
    elev_high              double precision,
    elev_low               double precision,
    average_speed          double precision,
    max_speed              double precision,
    average_watts          double precision,
    device_watts           double precision,
    max_watts              double precision,
    weighted_average_watts double precision,
    steps                  integer,
    created_at             timestamptz,
    updated_at             timestamptz,
    data                   jsonb NOT NULL,
    received_seq           bigint NOT NULL,
    PRIMARY KEY (user_id, id)
);
COMMENT ON TABLE junction.workouts IS
  'workout sessions (daily.data.workouts.*), one row per id; sport_* = sport.*, map stays in data';
CREATE INDEX workouts_calendar_date ON junction.workouts (user_id, calendar_date);

CREATE TABLE junction.body (
    user_id                        uuid NOT NULL,
    id                             uuid NOT NULL,
    provider                       text NOT NULL CHECK (length(provider) BETWEEN 1 AND 255),
    source_type                    text NOT NULL DEFAULT 'unknown' CHECK (length(source_type) <= 255),
    source_app_id                  text,
    source_device_id               text,
    calendar_date                  date,
    date                           timestamptz,
    weight                         double precision,
    fat                            double precision,
    water_percentage               double precision,
    muscle_mass_percentage         double precision,
    visceral_fat_index             double precision,
    bone_mass_percentage           double precision,
    body_mass_index                double precision,
    lean_body_mass_kilogram        double precision,
    waist_circumference_centimeter double precision,
    created_at                     timestamptz,
    updated_at                     timestamptz,
    data                           jsonb NOT NULL,
    received_seq                   bigint NOT NULL,
    PRIMARY KEY (user_id, id)
);
COMMENT ON TABLE junction.body IS
  'body composition summaries (daily.data.body.*), one row per id; weight kg, fat and *_percentage in %';
CREATE INDEX body_calendar_date ON junction.body (user_id, calendar_date);

CREATE TABLE junction.profile (
    user_id          uuid NOT NULL,
    id               uuid NOT NULL,
    provider         text NOT NULL CHECK (length(provider) BETWEEN 1 AND 255),
    source_type      text NOT NULL DEFAULT 'unknown' CHECK (length(source_type) <= 255),
    source_app_id    text,
    source_device_id text,
    height           double precision,
    birth_date       date,
    wheelchair_use   boolean,
    gender           text,
    sex              text,
    created_at       timestamptz,
    updated_at       timestamptz,
    data             jsonb NOT NULL,
    received_seq     bigint NOT NULL,
    PRIMARY KEY (user_id, id)
);
COMMENT ON TABLE junction.profile IS
  'user profile per provider (daily.data.profile.*), one row per id; height in cm';

CREATE TABLE junction.meals (
    user_id          uuid NOT NULL,
    id               uuid NOT NULL,
    provider         text NOT NULL CHECK (length(provider) BETWEEN 1 AND 255),
    source_type      text NOT NULL DEFAULT 'unknown' CHECK (length(source_type) <= 255),
    source_app_id    text,
    source_device_id text,
    provider_id      text,
    "timestamp"      timestamptz,
    calendar_date    date,
    name             text,
    energy_kcal      double precision,
    carbs            double precision,
    protein          double precision,
    fats_total       double precision,
    alcohol          double precision,
    water            double precision,
    fibre            double precision,
    sugar            double precision,
    cholesterol      double precision,
    created_at       timestamptz,
    updated_at       timestamptz,
    data             jsonb NOT NULL,
    received_seq     bigint NOT NULL,
    PRIMARY KEY (user_id, id)
);
COMMENT ON TABLE junction.meals IS
  'meals (daily.data.meal.*), one row per id; energy_kcal = energy.value, grams from macros.* (fats_total = macros.fats.total)';
CREATE INDEX meals_calendar_date ON junction.meals (user_id, calendar_date);

CREATE TABLE junction.menstrual_cycles (
    user_id          uuid NOT NULL,
    id               uuid NOT NULL,
    provider         text NOT NULL CHECK (length(provider) BETWEEN 1 AND 255),
    source_type      text NOT NULL DEFAULT 'unknown' CHECK (length(source_type) <= 255),
    source_app_id    text,
    source_device_id text,
    period_start     date,
    period_end       date,
    cycle_end        date,
    is_predicted     boolean,
    created_at       timestamptz,
    updated_at       timestamptz,
    data             jsonb NOT NULL,
    received_seq     bigint NOT NULL,
    PRIMARY KEY (user_id, id)
);
COMMENT ON TABLE junction.menstrual_cycles IS
  'menstrual cycles (daily.data.menstrual_cycle.*), one row per id; the daily entry arrays stay in data';
CREATE INDEX menstrual_cycles_period_start ON junction.menstrual_cycles (user_id, period_start);

CREATE TABLE junction.electrocardiograms (
    user_id               uuid NOT NULL,
    id                    uuid NOT NULL,
    provider              text NOT NULL CHECK (length(provider) BETWEEN 1 AND 255),
    source_type           text NOT NULL DEFAULT 'unknown' CHECK (length(source_type) <= 255),
    source_app_id         text,
    source_device_id      text,
    source_device_model   text,
    session_start         timestamptz,
    session_end           timestamptz,
    voltage_sample_count  integer,
    heart_rate_mean       integer,
    sampling_frequency_hz double precision,
    classification        text,
    inconclusive_cause    text,
    algorithm_version     text,
    time_zone             text,
    created_at            timestamptz,
    updated_at            timestamptz,
    data                  jsonb NOT NULL,
    received_seq          bigint NOT NULL,
    PRIMARY KEY (user_id, id)
);
COMMENT ON TABLE junction.electrocardiograms IS
  'ECG recordings (daily.data.electrocardiogram.*), one row per id; voltages are samples of electrocardiogram_voltage';
CREATE INDEX electrocardiograms_session_start ON junction.electrocardiograms (user_id, session_start);

CREATE TABLE junction.devices (
    user_id             uuid NOT NULL,
    id                  text NOT NULL CHECK (length(id) BETWEEN 1 AND 255),
    provider            text NOT NULL CHECK (length(provider) BETWEEN 1 AND 255),
    source_type         text NOT NULL DEFAULT 'unknown' CHECK (length(source_type) <= 255),
    app_id              text,
    device_manufacturer text,
    device_model        text,
    device_version      text,
    device_id           text,
    created_at          timestamptz,
    updated_at          timestamptz,
    data                jsonb NOT NULL,
    received_seq        bigint NOT NULL,
    PRIMARY KEY (user_id, id)
);
COMMENT ON TABLE junction.devices IS
  'devices that produced data (provider.device.*), one row per id; samples and summaries point here via source device_id';

-- A workout stream notification says "fetch me"; the stream itself is loaded later into data.
CREATE TABLE junction.workout_streams (
    user_id      uuid NOT NULL,
    workout_id   uuid NOT NULL,
    id           uuid GENERATED ALWAYS AS (workout_id) STORED,
    provider     text NOT NULL CHECK (length(provider) BETWEEN 1 AND 255),
    source_type  text NOT NULL DEFAULT 'unknown' CHECK (length(source_type) <= 255),
    provider_id  text,
    sport_id     integer,
    sport_name   text,
    sport_slug   text,
    notification jsonb NOT NULL,
    received_seq bigint NOT NULL,
    fetch_status text NOT NULL DEFAULT 'pending' CHECK (length(fetch_status) BETWEEN 1 AND 64),
    fetch_error  text,
    attempts     integer NOT NULL DEFAULT 0,
    fetched_at   timestamptz,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    data         jsonb,
    next_attempt_at timestamptz,
    sqlstate     text,
    PRIMARY KEY (user_id, workout_id)
);
COMMENT ON TABLE junction.workout_streams IS
  'workout streams (daily.data.workout_stream.*): notification now, the stream (parallel arrays) in data once fetched';
COMMENT ON COLUMN junction.workout_streams.id IS 'same as workout_id: a stream is identified by its workout (joins workouts.id)';
COMMENT ON COLUMN junction.workout_streams.fetch_status IS 'pending until the API loader fetches the stream; a newer notification resets it to pending';
COMMENT ON COLUMN junction.workout_streams.next_attempt_at IS 'a failed fetch is retried from this time on (null: now)';
COMMENT ON COLUMN junction.workout_streams.sqlstate IS 'SQLSTATE of the last failed fetch';
CREATE INDEX workout_streams_pending ON junction.workout_streams (updated_at) WHERE fetch_status = 'pending';

-- ---------------------------------------------------------------------------------------------
-- Samples: every sample of every timeseries resource.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE junction.samples (
    user_id         uuid NOT NULL,
    resource        text NOT NULL CHECK (length(resource) BETWEEN 1 AND 255),
    provider        text NOT NULL CHECK (length(provider) BETWEEN 1 AND 255),
    source_type     text NOT NULL DEFAULT 'unknown' CHECK (length(source_type) <= 255),
    type            text NOT NULL DEFAULT '' CHECK (length(type) <= 255),
    workout_id      uuid NOT NULL DEFAULT '00000000-0000-0000-0000-000000000000',
    time            timestamptz NOT NULL,
    time_end        timestamptz,
    value           double precision,
    unit            text CHECK (length(unit) <= 255),
    timezone_offset integer,
    local_time      timestamp,
    floating        boolean NOT NULL DEFAULT false,
    extra           jsonb,
    received_seq    bigint NOT NULL,
    -- The identity (user, resource, provider, source type, type, workout, time); time comes third so
    -- the key also serves "one user's resource over a time range".
    PRIMARY KEY (user_id, resource, time, provider, source_type, type, workout_id)
);
COMMENT ON TABLE junction.samples IS
  'every timeseries sample, one row per (user_id, resource, provider, source_type, type, workout_id, time); the latest received wins';
COMMENT ON COLUMN junction.samples.resource IS 'resource name as in the event type (weight, not body_weight)';
COMMENT ON COLUMN junction.samples.type IS 'the sample type (reading type, ECG lead, alert kind, ...); empty string when Junction sends none';
COMMENT ON COLUMN junction.samples.workout_id IS 'source.workout_id (workout_distance, workout_swimming_stroke); the nil uuid 00000000-0000-0000-0000-000000000000 when none, so the key is a primary key';
COMMENT ON COLUMN junction.samples.time IS
  'sample start (start, else timestamp). Floating-time providers (abbott_libreview, freestyle_libre, freestyle_libre_ble): the wall clock as sent, read as UTC (any offset suffix ignored)';
COMMENT ON COLUMN junction.samples.time_end IS 'exclusive end of an interval sample, else null (same floating-time rule as time)';
COMMENT ON COLUMN junction.samples.value IS 'numeric value; null for blood_pressure (systolic/diastolic in extra) and note (text in extra.value)';
COMMENT ON COLUMN junction.samples.timezone_offset IS 'seconds east of UTC, null when unknown';
COMMENT ON COLUMN junction.samples.local_time IS
  'wall-clock time of the sample: time + timezone_offset, or for floating-time providers the wall clock exactly as sent; null when the offset is unknown';
COMMENT ON COLUMN junction.samples.floating IS 'true when the provider sends floating (local, zone-less) time; then time is the wall clock read as UTC, not an instant';
COMMENT ON COLUMN junction.samples.extra IS
  'sample fields without a column (systolic/diastolic, a note''s value and tags, insulin delivery fields, sensor_location, intensity, grouping, unknown ones) plus source_app_id/source_device_id/source_sport when set';
COMMENT ON COLUMN junction.samples.received_seq IS 'ordering key of the delivery that won (inbox id for webhooks)';

-- Large jsonb columns compress faster with lz4 when the server has it.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_settings
               WHERE name = 'default_toast_compression' AND 'lz4' = ANY (enumvals)) THEN
        ALTER TABLE junction.events ALTER COLUMN payload SET COMPRESSION lz4;
        ALTER TABLE junction.activity ALTER COLUMN data SET COMPRESSION lz4;
        ALTER TABLE junction.sleep ALTER COLUMN data SET COMPRESSION lz4;
        ALTER TABLE junction.sleep_cycle ALTER COLUMN data SET COMPRESSION lz4;
        ALTER TABLE junction.workouts ALTER COLUMN data SET COMPRESSION lz4;
        ALTER TABLE junction.meals ALTER COLUMN data SET COMPRESSION lz4;
        ALTER TABLE junction.menstrual_cycles ALTER COLUMN data SET COMPRESSION lz4;
        ALTER TABLE junction.workout_streams ALTER COLUMN data SET COMPRESSION lz4;
    END IF;
END
$$;

-- pg_dump skips the data of extension tables unless they are registered here.
SELECT pg_extension_config_dump('junction.resources', 'WHERE NOT builtin');
SELECT pg_extension_config_dump('junction.events', '');
SELECT pg_extension_config_dump('junction.connections', '');
SELECT pg_extension_config_dump('junction.backfills', '');
SELECT pg_extension_config_dump('junction.activity', '');
SELECT pg_extension_config_dump('junction.sleep', '');
SELECT pg_extension_config_dump('junction.sleep_cycle', '');
SELECT pg_extension_config_dump('junction.workouts', '');
SELECT pg_extension_config_dump('junction.body', '');
SELECT pg_extension_config_dump('junction.profile', '');
SELECT pg_extension_config_dump('junction.meals', '');
SELECT pg_extension_config_dump('junction.menstrual_cycles', '');
SELECT pg_extension_config_dump('junction.electrocardiograms', '');
SELECT pg_extension_config_dump('junction.devices', '');
SELECT pg_extension_config_dump('junction.workout_streams', '');
SELECT pg_extension_config_dump('junction.samples', '');
-- Typing: accepted webhook messages -> junction.events and the typed tables, set-based.
--
-- The C drain verifies signatures and then calls junction._apply_deliveries(ids, svix_ids) once
-- per batch (and once per row if the batch raises). Everything below runs a fixed number of
-- statements per call: one INSERT per target table, never one per event or per sample.
-- The _upsert_* functions are the one load path for typed rows: the REST loader (junction_sync)
-- feeds them the same items, with a received_seq from junction._next_received_seq().
--
-- All functions run with TimeZone = UTC, so a timestamp without an offset suffix is read as UTC
-- whatever the session's time zone.

-- One parsed object to load: a summary, a timeseries group {source, data[]}, a connection, ...
CREATE TYPE junction.typing_item AS (
    received_seq bigint,       -- ordering key: the inbox id for webhooks
    user_id      uuid,         -- Junction user id
    resource     text,         -- event resource name: activity, steps, weight, device, ...
    event_type   text,         -- the event type, or null for REST loads
    received_at  timestamptz,  -- when we received it
    obj          jsonb         -- the event's data object (or one element of a REST response)
);
COMMENT ON TYPE junction.typing_item IS
  'one object for the junction._upsert_* functions: ordering key, user, resource, event type, receive time, data';

-- Raise an error from inside an expression (used to validate rows set-based, without loops).
CREATE FUNCTION junction._fail(code text, message text)
RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = code, MESSAGE = message;
END
$$;
COMMENT ON FUNCTION junction._fail(text, text) IS 'raise message with SQLSTATE code; never returns';

-- The provider of a Junction object: one rule for validation, typing and junction.events. It reads
-- every place Junction puts it: source.provider and source.slug (timeseries, summaries),
-- source_provider (older summaries), provider as a string (historical pulls, devices) or as an
-- object's slug (connection events), and a top-level slug (REST connection objects). SQL, so that
-- it is inlined into the set-based statements that call it; hence no SET clause, and every name
-- qualified (operators included).
CREATE FUNCTION junction._provider(obj jsonb)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $fn$
    SELECT coalesce(
        obj OPERATOR(pg_catalog.#>>) '{source,provider}'::pg_catalog.text[],
        obj OPERATOR(pg_catalog.#>>) '{source,slug}'::pg_catalog.text[],
        obj OPERATOR(pg_catalog.->>) 'source_provider'::pg_catalog.text,
        CASE
          WHEN pg_catalog.jsonb_typeof(obj OPERATOR(pg_catalog.->) 'provider'::pg_catalog.text)
               OPERATOR(pg_catalog.=) 'string'::pg_catalog.text
            THEN obj OPERATOR(pg_catalog.->>) 'provider'::pg_catalog.text
          WHEN pg_catalog.jsonb_typeof(obj OPERATOR(pg_catalog.->) 'provider'::pg_catalog.text)
               OPERATOR(pg_catalog.=) 'object'::pg_catalog.text
            THEN obj OPERATOR(pg_catalog.#>>) '{provider,slug}'::pg_catalog.text[]
        END,
        obj OPERATOR(pg_catalog.->>) 'slug'::pg_catalog.text)
$fn$;
COMMENT ON FUNCTION junction._provider(jsonb) IS
  'the provider slug of a Junction object: source.provider, source.slug, source_provider, provider (a string, or an object''s slug), slug';

-- The received_seq for rows loaded from the REST API: drawn from the inbox id sequence, so
-- "later received" orders webhook and REST data alike.
CREATE FUNCTION junction._next_received_seq()
RETURNS bigint
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT nextval(pg_get_serial_sequence('junction.inbox', 'id')) $$;
COMMENT ON FUNCTION junction._next_received_seq() IS
  'a received_seq for REST loads, from the inbox id sequence (orders REST and webhook data together)';

-- ---------------------------------------------------------------------------------------------
-- Summaries: one generic upsert per summary table, generated from the registry and the catalog.
-- Columns named like a field of the object are filled by jsonb_populate_record; nested ones come
-- from resources.nested_fields; user_id, id, provider, source_*, data, received_seq are set here.
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION junction._summary_upsert_sql(resource text)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    res         junction.resources;
    tbl         regclass;
    id_type     text;
    target_cols text;
    select_cols text;
    set_cols    text;
BEGIN
    SELECT * INTO res FROM junction.resources AS r WHERE r.name = resource AND r.kind = 'summary';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'not a summary resource: %', coalesce(quote_literal(resource), 'NULL')
            USING ERRCODE = '22023';
    END IF;
    tbl := format('junction.%I', res.table_name)::regclass;
    SELECT format_type(a.atttypid, a.atttypmod) INTO id_type
    FROM pg_attribute AS a WHERE a.attrelid = tbl AND a.attname = 'id';

    SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum),
           string_agg(CASE a.attname
                        WHEN 'user_id' THEN 'w.user_id'
                        WHEN 'id' THEN 'w.id'
                        WHEN 'provider' THEN
                          'junction._provider(w.obj)'
                        WHEN 'source_type' THEN
                          'coalesce(w.obj #>> ''{source,type}'', w.obj ->> ''source_type'', ''unknown'')'
                        WHEN 'source_app_id' THEN
                          'coalesce(w.obj #>> ''{source,app_id}'', w.obj ->> ''source_app_id'')'
                        WHEN 'source_device_id' THEN
                          'coalesce(w.obj #>> ''{source,device_id}'', w.obj ->> ''source_device_id'')'
                        WHEN 'data' THEN 'w.obj'
                        WHEN 'received_seq' THEN 'w.received_seq'
                        ELSE CASE
                          WHEN NOT res.nested_fields ? a.attname THEN 'r.' || quote_ident(a.attname)
                          WHEN a.atttypid = 'jsonb'::regtype THEN
                            format('w.obj #> %L', p.path)
                          ELSE
                            format('(w.obj #>> %L)::%s', p.path, format_type(a.atttypid, a.atttypmod))
                        END
                      END, ', ' ORDER BY a.attnum),
           string_agg(format('%1$I = excluded.%1$I', a.attname), ', ' ORDER BY a.attnum)
             FILTER (WHERE a.attname NOT IN ('user_id', 'id'))
      INTO target_cols, select_cols, set_cols
    FROM pg_attribute AS a
    CROSS JOIN LATERAL (
        SELECT array_agg(x)::text AS path
        FROM jsonb_array_elements_text(res.nested_fields -> a.attname) AS x
    ) AS p
    WHERE a.attrelid = tbl AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '';

    -- Dedupe inside the batch on the winning order, then upsert guarded by the same order.
    RETURN format($q$
INSERT INTO %1$s AS t (%2$s)
SELECT %3$s
FROM (SELECT DISTINCT ON (i.user_id, (i.obj ->> %4$L)::%5$s)
             i.received_seq, i.user_id, (i.obj ->> %4$L)::%5$s AS id, i.obj
      FROM unnest($1) AS i
      WHERE i.resource = $2
      ORDER BY i.user_id, (i.obj ->> %4$L)::%5$s,
               coalesce((i.obj ->> 'updated_at')::timestamptz, '-infinity') DESC,
               i.received_seq DESC) AS w
CROSS JOIN LATERAL jsonb_populate_record(NULL::%1$s, w.obj) AS r
ON CONFLICT (user_id, id) DO UPDATE SET %6$s
WHERE (coalesce(excluded.updated_at, '-infinity'), excluded.received_seq)
    > (coalesce(t.updated_at, '-infinity'), t.received_seq)$q$,
        tbl, target_cols, select_cols, res.id_field, id_type, set_cols);
END
$fn$;
COMMENT ON FUNCTION junction._summary_upsert_sql(text) IS
  'the INSERT ... ON CONFLICT statement that loads one summary resource ($1 typing_item[], $2 resource)';

CREATE FUNCTION junction._upsert_summaries(items junction.typing_item[])
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'
AS $fn$
-- The EXECUTEd text comes from junction._summary_upsert_sql, built from the resource registry and
-- the table's catalog (identifiers quote_ident'ed, values passed with USING): no caller's text
-- reaches it, so plpgsql_check's security warning (unsanitized text in EXECUTE) is off here.
-- @plpgsql_check_options: security_warnings = off
DECLARE
    res   text;
    n     bigint;
    total bigint := 0;
BEGIN
    FOR res IN SELECT DISTINCT i.resource FROM unnest(items) AS i ORDER BY 1 LOOP
        -- one statement per summary table; _summary_upsert_sql rejects non-summary resources
        EXECUTE junction._summary_upsert_sql(res) USING items, res;
        GET DIAGNOSTICS n = ROW_COUNT;
        total := total + n;
    END LOOP;
    RETURN total;
END
$fn$;
COMMENT ON FUNCTION junction._upsert_summaries(junction.typing_item[]) IS
  'upsert summary objects (and devices) into their tables; newest updated_at wins, then the latest received';

-- ---------------------------------------------------------------------------------------------
-- Samples: every element of every group's data[] becomes one row of junction.samples.
-- ---------------------------------------------------------------------------------------------
-- The samples of one timeseries group, typed (src/samples.c); the per-sample half of
-- junction._upsert_samples. Reads timestamps in the session time zone: call it with TimeZone = UTC.
CREATE FUNCTION junction._group_samples(grp jsonb, resource text, value_kind text, floating boolean,
                                        source_extra jsonb,
                                        OUT ord bigint, OUT type text, OUT "time" timestamptz,
                                        OUT time_end timestamptz, OUT value double precision,
                                        OUT unit text, OUT timezone_offset integer,
                                        OUT local_time timestamp, OUT extra jsonb)
RETURNS SETOF record
LANGUAGE C STABLE
AS 'MODULE_PATHNAME', 'junction_group_samples';
COMMENT ON FUNCTION junction._group_samples(jsonb, text, text, boolean, jsonb) IS
  'one typed row per element of grp->data (a timeseries group): ordinality, type, time, time_end, value, unit, timezone_offset, local_time, extra';

-- Whether one more writing subtransaction fits in this backend's subxid cache (src/samples.c).
CREATE FUNCTION junction._subxact_room()
RETURNS boolean
LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 'junction_subxact_room';
COMMENT ON FUNCTION junction._subxact_room() IS
  'true while this transaction has fewer subtransaction ids than the per-backend cache holds (64)';

-- The rows of junction.samples for a batch of timeseries groups, deduped on the key (the latest
-- received wins) and in key order. One SQL statement, inlined into the INSERTs below. Inlining
-- needs a function without SET clauses, so every name here is qualified (operators and casts
-- included): parsed in a hostile caller's search_path, it still resolves only in pg_catalog.
CREATE FUNCTION junction._sample_rows(items junction.typing_item[])
RETURNS SETOF junction.samples
LANGUAGE sql STABLE
AS $fn$
    SELECT DISTINCT ON (s.user_id, s.time, s.resource, s.provider, s.source_type, s.type, s.workout_id)
           s.user_id, s.resource, s.provider, s.source_type, s.type, s.workout_id, s.time, s.time_end,
           s.value, s.unit, s.timezone_offset, s.local_time, s.floating, s.extra, s.received_seq
    FROM (
        SELECT g.user_id, g.resource, g.provider, g.source_type, g.workout_id, g.floating,
               g.received_seq, e.ord, e.type, e.time, e.time_end, e.value, e.unit,
               e.timezone_offset, e.local_time, e.extra
        FROM (
            SELECT i.received_seq, i.user_id, i.resource, i.obj,
                   -- a lookup, not a join: a hash join would copy each (large) item into its table
                   (SELECT r.value_kind FROM junction.resources AS r
                     WHERE r.name OPERATOR(pg_catalog.=) i.resource) AS value_kind,
                   src.provider, src.source_type, src.workout_id, src.source_extra,
                   -- floating time (README, "Floating time"): the offset suffix is meaningless for these
                   src.provider OPERATOR(pg_catalog.=) ANY (ARRAY['abbott_libreview', 'freestyle_libre',
                                                               'freestyle_libre_ble']::pg_catalog.text[]) AS floating
            FROM pg_catalog.unnest(items) AS i
            CROSS JOIN LATERAL (
                SELECT junction._provider(i.obj) AS provider,
                       coalesce(i.obj OPERATOR(pg_catalog.#>>) '{source,type}'::pg_catalog.text[], 'unknown') AS source_type,
                       coalesce((i.obj OPERATOR(pg_catalog.#>>) '{source,workout_id}'::pg_catalog.text[])::pg_catalog.uuid,
                                '00000000-0000-0000-0000-000000000000'::pg_catalog.uuid) AS workout_id,
                       nullif(pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
                           'source_app_id'::pg_catalog.text, i.obj OPERATOR(pg_catalog.#>) '{source,app_id}'::pg_catalog.text[],
                           'source_device_id'::pg_catalog.text, i.obj OPERATOR(pg_catalog.#>) '{source,device_id}'::pg_catalog.text[],
                           'source_sport'::pg_catalog.text, i.obj OPERATOR(pg_catalog.#>) '{source,sport}'::pg_catalog.text[])),
                              '{}'::pg_catalog.jsonb) AS source_extra
                OFFSET 0
            ) AS src
            OFFSET 0
        ) AS g
        -- the samples of data[], typed in C (src/samples.c)
        CROSS JOIN LATERAL junction._group_samples(g.obj, g.resource, g.value_kind, g.floating,
                                                   g.source_extra) AS e
    ) AS s
    -- dedupe on the key, latest received first; time sorts before the text columns (cheaper), and
    -- one fixed order makes concurrent drains lock rows in the same order
    ORDER BY s.user_id, s.time, s.resource, s.provider, s.source_type, s.type, s.workout_id,
             s.received_seq DESC, s.ord DESC
$fn$;
COMMENT ON FUNCTION junction._sample_rows(junction.typing_item[]) IS
  'the junction.samples rows of timeseries groups ({source, data[]}), deduped on the key, latest received first';

-- conflicts = false is for a caller that knows none of these sample keys exists yet (an empty
-- range, checked beforehand) and that handles unique_violation by loading again with true: a plain
-- INSERT costs about half of INSERT ... ON CONFLICT.
CREATE FUNCTION junction._upsert_samples(items junction.typing_item[], conflicts boolean DEFAULT true)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'
AS $fn$
DECLARE
    bad text;
    n   bigint;
BEGIN
    SELECT coalesce(quote_literal(i.resource), 'NULL') INTO bad
    FROM unnest(items) AS i
    WHERE NOT EXISTS (SELECT FROM junction.resources AS r
                      WHERE r.name = i.resource AND r.kind = 'timeseries')
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'not a timeseries resource: %', bad USING ERRCODE = '22023';
    END IF;

    IF conflicts THEN
        INSERT INTO junction.samples AS t
        SELECT * FROM junction._sample_rows(items)
        ON CONFLICT (user_id, resource, time, provider, source_type, type, workout_id) DO UPDATE
        SET time_end = excluded.time_end, value = excluded.value, unit = excluded.unit,
            timezone_offset = excluded.timezone_offset, local_time = excluded.local_time,
            floating = excluded.floating, extra = excluded.extra, received_seq = excluded.received_seq
        WHERE excluded.received_seq > t.received_seq;
    ELSE
        INSERT INTO junction.samples SELECT * FROM junction._sample_rows(items);
    END IF;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$fn$;
COMMENT ON FUNCTION junction._upsert_samples(junction.typing_item[], boolean) IS
  'upsert timeseries groups ({source, data[]}) into junction.samples; the latest received wins per sample key (conflicts = false: plain INSERT of keys known to be new)';

-- ---------------------------------------------------------------------------------------------
-- Workout stream notifications, connections, backfills.
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION junction._upsert_workout_streams(items junction.typing_item[])
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'
AS $fn$
DECLARE
    n bigint;
BEGIN
    INSERT INTO junction.workout_streams AS t
        (user_id, workout_id, provider, source_type, provider_id, sport_id, sport_name, sport_slug,
         notification, received_seq)
    SELECT DISTINCT ON (i.user_id, (i.obj ->> 'workout_id')::uuid)
           i.user_id, (i.obj ->> 'workout_id')::uuid,
           junction._provider(i.obj),
           coalesce(i.obj #>> '{source,type}', 'unknown'),
           i.obj ->> 'provider_id', (i.obj #>> '{sport,id}')::integer,
           i.obj #>> '{sport,name}', i.obj #>> '{sport,slug}', i.obj, i.received_seq
    FROM unnest(items) AS i
    ORDER BY i.user_id, (i.obj ->> 'workout_id')::uuid, i.received_seq DESC
    ON CONFLICT (user_id, workout_id) DO UPDATE
    SET provider = excluded.provider, source_type = excluded.source_type,
        provider_id = excluded.provider_id, sport_id = excluded.sport_id,
        sport_name = excluded.sport_name, sport_slug = excluded.sport_slug,
        notification = excluded.notification, received_seq = excluded.received_seq,
        fetch_status = 'pending', fetch_error = NULL, attempts = 0, updated_at = now()
    WHERE excluded.received_seq > t.received_seq;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$fn$;
COMMENT ON FUNCTION junction._upsert_workout_streams(junction.typing_item[]) IS
  'record workout stream notifications (fetch_status pending); the latest received wins per workout';

-- status, error_* and data follow the latest event; external_user_id, resource_availability and
-- connected_at follow the latest "connected" one. Items: webhook data (event_type says created or
-- error) or REST connection objects (event_type null, status in the object).
CREATE FUNCTION junction._upsert_connections(items junction.typing_item[])
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'
AS $fn$
DECLARE
    n bigint;
BEGIN
    WITH item AS (
        SELECT i.user_id, i.received_seq, i.received_at, i.obj, i.event_type,
               junction._provider(i.obj) AS provider,
               CASE i.event_type
                 WHEN 'provider.connection.created' THEN 'connected'
                 WHEN 'provider.connection.error' THEN 'error'
                 ELSE i.obj ->> 'status' END AS status
        FROM unnest(items) AS i
    ), latest AS (
        SELECT DISTINCT ON (user_id, provider) *
        FROM item ORDER BY user_id, provider, received_seq DESC
    ), latest_connected AS (
        -- the latest version that speaks for external_user_id and resource_availability: a
        -- provider.connection.created event, or a REST connection object (Junction's full view,
        -- which carries them whatever the status)
        SELECT DISTINCT ON (user_id, provider) *
        FROM item WHERE status = 'connected' OR event_type IS NULL
        ORDER BY user_id, provider, received_seq DESC
    )
    INSERT INTO junction.connections AS t
        (user_id, provider, status, external_user_id, resource_availability, error_type,
         error_message, error_details, connected_at, updated_at, received_seq, connected_seq, data)
    SELECT l.user_id, l.provider, l.status,
           c.obj ->> 'external_user_id', c.obj -> 'resource_availability',
           CASE WHEN l.status <> 'connected'
                THEN coalesce(l.obj ->> 'error_type', l.obj #>> '{error_details,error_type}') END,
           CASE WHEN l.status <> 'connected'
                THEN coalesce(l.obj ->> 'message', l.obj #>> '{error_details,error_message}',
                              CASE jsonb_typeof(l.obj -> 'error_details')
                                WHEN 'string' THEN l.obj ->> 'error_details' END) END,
           CASE WHEN l.status <> 'connected' AND jsonb_typeof(l.obj -> 'error_details') = 'string'
                THEN l.obj ->> 'error_details' END,
           CASE WHEN c.event_type IS NULL AND c.obj ->> 'created_on' IS NOT NULL
                THEN (c.obj ->> 'created_on')::timestamptz ELSE c.received_at END,
           l.received_at, l.received_seq, c.received_seq, l.obj
    FROM latest AS l
    LEFT JOIN latest_connected AS c USING (user_id, provider)
    ORDER BY l.user_id, l.provider
    ON CONFLICT (user_id, provider) DO UPDATE
    SET status        = CASE WHEN excluded.received_seq > t.received_seq THEN excluded.status ELSE t.status END,
        error_type    = CASE WHEN excluded.received_seq > t.received_seq THEN excluded.error_type ELSE t.error_type END,
        error_message = CASE WHEN excluded.received_seq > t.received_seq THEN excluded.error_message ELSE t.error_message END,
        error_details = CASE WHEN excluded.received_seq > t.received_seq THEN excluded.error_details ELSE t.error_details END,
        updated_at    = CASE WHEN excluded.received_seq > t.received_seq THEN excluded.updated_at ELSE t.updated_at END,
        data          = CASE WHEN excluded.received_seq > t.received_seq THEN excluded.data ELSE t.data END,
        received_seq  = greatest(excluded.received_seq, t.received_seq),
        external_user_id = CASE WHEN excluded.connected_seq > coalesce(t.connected_seq, -1)
                                THEN excluded.external_user_id ELSE t.external_user_id END,
        resource_availability = CASE WHEN excluded.connected_seq > coalesce(t.connected_seq, -1)
                                THEN excluded.resource_availability ELSE t.resource_availability END,
        connected_at  = CASE WHEN excluded.connected_seq > coalesce(t.connected_seq, -1)
                                THEN excluded.connected_at ELSE t.connected_at END,
        connected_seq = greatest(excluded.connected_seq, t.connected_seq)
    WHERE excluded.received_seq > t.received_seq
       OR excluded.connected_seq > coalesce(t.connected_seq, -1);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$fn$;
COMMENT ON FUNCTION junction._upsert_connections(junction.typing_item[]) IS
  'upsert provider connections: status and error from the latest event, connection details from the latest connected one';

CREATE FUNCTION junction._upsert_backfills(items junction.typing_item[])
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'
AS $fn$
DECLARE
    n bigint;
BEGIN
    INSERT INTO junction.backfills AS t
        (user_id, provider, resource, start_date, end_date, completed_at, fetch_status,
         attempts, updated_at, received_seq, data)
    SELECT DISTINCT ON (i.user_id, p.provider, i.resource)
           i.user_id, p.provider, i.resource,
           (i.obj ->> 'start_date')::timestamptz, (i.obj ->> 'end_date')::timestamptz,
           i.received_at, 'pending', 0, now(), i.received_seq, i.obj
    FROM unnest(items) AS i
    CROSS JOIN LATERAL (
        SELECT junction._provider(i.obj) AS provider
    ) AS p
    ORDER BY i.user_id, p.provider, i.resource, i.received_seq DESC
    ON CONFLICT (user_id, provider, resource) DO UPDATE
    SET start_date = excluded.start_date, end_date = excluded.end_date,
        completed_at = excluded.completed_at, fetch_status = 'pending', fetch_error = NULL,
        rows_loaded = NULL, attempts = 0, updated_at = now(),
        received_seq = excluded.received_seq, data = excluded.data
    WHERE excluded.received_seq > t.received_seq;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$fn$;
COMMENT ON FUNCTION junction._upsert_backfills(junction.typing_item[]) IS
  'record completed historical pulls (fetch_status pending); the latest received wins per user, provider, resource';

-- The verified deliveries of a batch, parsed once and classified: event type, family, resource,
-- user, team, provider (junction._provider) and the object to type. Validation raises here, for
-- the first bad row, before anything is written (junction._apply_deliveries' first half).
CREATE FUNCTION junction._classify_deliveries(ids bigint[], svix_ids text[])
RETURNS TABLE (svix_id text, inbox_id bigint, received_at timestamptz, payload jsonb, event_type text,
               family text, resource text, user_id uuid, team_id uuid, client_user_id text,
               provider text, obj jsonb)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'
AS $fn$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH delivery AS (
        SELECT DISTINCT ON (d.svix_id) d.svix_id, d.inbox_id
        FROM unnest(ids, svix_ids) AS d(inbox_id, svix_id)
        ORDER BY d.svix_id, d.inbox_id
    ), parsed AS MATERIALIZED (
        SELECT d.svix_id, i.id AS inbox_id, i.received_at, i.body::jsonb AS payload
        FROM delivery AS d
        JOIN junction.inbox AS i ON i.id = d.inbox_id
    ), classified AS MATERIALIZED (
        SELECT p.svix_id, p.inbox_id, p.received_at, p.payload, e.event_type, k.family, k.resource,
               u.user_id, u.team_id, p.payload ->> 'client_user_id' AS client_user_id, v.provider,
               -- the object to type; validating it here raises for bad input before anything is typed
               CASE
                 WHEN k.family IS NULL THEN NULL
                 WHEN coalesce(jsonb_typeof(x.data), 'null') = 'null' THEN
                   junction._fail('23502', format('%s: missing data', e.event_type))::jsonb
                 WHEN jsonb_typeof(x.data) <> 'object' THEN
                   junction._fail('22023', format('%s: data must be an object, not %s',
                                                  e.event_type, jsonb_typeof(x.data)))::jsonb
                 WHEN r.id_field IS NOT NULL
                      AND coalesce(jsonb_typeof(x.data -> r.id_field), 'null') = 'null' THEN
                   junction._fail('23502', format('%s: missing data.%s', e.event_type, r.id_field))::jsonb
                 WHEN k.family = 'timeseries'
                      AND coalesce(jsonb_typeof(x.data -> 'data'), 'null') = 'null' THEN
                   junction._fail('23502', format('%s: missing data.data (the samples)', e.event_type))::jsonb
                 WHEN k.family = 'timeseries' AND jsonb_typeof(x.data -> 'data') <> 'array' THEN
                   junction._fail('22023', format('%s: data.data must be an array, not %s',
                                                  e.event_type, jsonb_typeof(x.data -> 'data')))::jsonb
                 WHEN v.provider IS NULL THEN
                   junction._fail('23502', format('%s: missing provider (data.%s)', e.event_type,
                       CASE WHEN k.family IN ('connection', 'historical') OR k.resource = 'device'
                            THEN 'provider' ELSE 'source.provider' END))::jsonb
                 ELSE x.data
               END AS obj
        FROM parsed AS p
        CROSS JOIN LATERAL (
            SELECT CASE
                     WHEN jsonb_typeof(p.payload) <> 'object' THEN
                       junction._fail('22023', format('webhook body is a JSON %s, not an object',
                                                      jsonb_typeof(p.payload)))
                     WHEN coalesce(jsonb_typeof(p.payload -> 'event_type'), 'null') = 'null' THEN
                       junction._fail('23502', 'webhook body has no event_type')
                     WHEN jsonb_typeof(p.payload -> 'event_type') <> 'string' THEN
                       junction._fail('22023', format('event_type must be a string, not %s',
                                                      left((p.payload -> 'event_type')::text, 100)))
                     WHEN length(p.payload ->> 'event_type') NOT BETWEEN 1 AND 255 THEN
                       junction._fail('22001', format('event_type must be 1 to 255 characters, got %s',
                                                      length(p.payload ->> 'event_type')))
                     ELSE p.payload ->> 'event_type'
                   END AS event_type,
                   p.payload -> 'data' AS data
            OFFSET 0
        ) AS e
        CROSS JOIN LATERAL (SELECT e.data AS data, string_to_array(e.event_type, '.') AS parts OFFSET 0) AS x
        LEFT JOIN junction.resources AS r
               ON cardinality(x.parts) >= 3
              AND r.name = x.parts[cardinality(x.parts) - 1]
              AND r.event_prefix = array_to_string(x.parts[1:cardinality(x.parts) - 2], '.')
              AND x.parts[cardinality(x.parts)] IN ('created', 'updated')
        CROSS JOIN LATERAL (
            SELECT CASE
                     WHEN r.kind IS NOT NULL THEN r.kind
                     WHEN e.event_type ~ '^historical\.data\.[a-z0-9_]+\.created$' THEN 'historical'
                     WHEN e.event_type IN ('provider.connection.created', 'provider.connection.error')
                       THEN 'connection'
                   END AS family,
                   CASE WHEN cardinality(x.parts) >= 3 THEN x.parts[cardinality(x.parts) - 1] END AS resource
            OFFSET 0
        ) AS k
        CROSS JOIN LATERAL (
            SELECT coalesce(CASE jsonb_typeof(p.payload -> 'user_id')
                              WHEN 'string' THEN p.payload ->> 'user_id' END,
                            x.data ->> 'user_id') AS user_id,
                   p.payload ->> 'team_id' AS team_id
            OFFSET 0
        ) AS ut
        CROSS JOIN LATERAL (
            SELECT CASE
                     WHEN ut.user_id IS NULL THEN
                       CASE WHEN k.family IS NOT NULL THEN
                         junction._fail('23502', format('%s: missing user_id', e.event_type)) END
                     WHEN ut.user_id !~* '^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$' THEN
                       junction._fail('22P02', format('%s: user_id %s is not a uuid', e.event_type,
                                                      quote_literal(left(ut.user_id, 100))))
                     ELSE ut.user_id
                   END::uuid AS user_id,
                   CASE
                     WHEN ut.team_id IS NULL THEN NULL
                     WHEN ut.team_id !~* '^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$' THEN
                       junction._fail('22P02', format('%s: team_id %s is not a uuid', e.event_type,
                                                      quote_literal(left(ut.team_id, 100))))
                     ELSE ut.team_id
                   END::uuid AS team_id
            OFFSET 0
        ) AS u
        CROSS JOIN LATERAL (
            SELECT junction._provider(x.data) AS provider
            OFFSET 0
        ) AS v
    )
    SELECT c.svix_id, c.inbox_id, c.received_at, c.payload, c.event_type, c.family, c.resource,
           c.user_id, c.team_id, c.client_user_id, c.provider, c.obj
    FROM classified AS c;
END
$fn$;
COMMENT ON FUNCTION junction._classify_deliveries(bigint[], text[]) IS
  'parse, validate and classify verified inbox rows (ids with their svix ids), one row per distinct svix id; raises on bad input';

-- ---------------------------------------------------------------------------------------------
-- The batch entry point called by the C drain.
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION junction._apply_deliveries(ids bigint[], svix_ids text[])
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'
AS $fn$
DECLARE
    accepted   integer;
    summaries  junction.typing_item[];
    timeseries junction.typing_item[];
    streams    junction.typing_item[];
    conns      junction.typing_item[];
    backfills  junction.typing_item[];
BEGIN
    IF cardinality(ids) IS DISTINCT FROM cardinality(svix_ids) THEN
        RAISE EXCEPTION '_apply_deliveries: % inbox ids but % svix ids',
            coalesce(cardinality(ids), 0), coalesce(cardinality(svix_ids), 0)
            USING ERRCODE = '22023';
    END IF;
    IF array_position(ids, NULL) IS NOT NULL OR array_position(svix_ids, NULL) IS NOT NULL THEN
        RAISE EXCEPTION '_apply_deliveries: null inbox id or svix id' USING ERRCODE = '22004';
    END IF;

    -- Parse, validate and classify each delivery once, insert the events, collect the new ones.
    WITH classified AS MATERIALIZED (
        SELECT * FROM junction._classify_deliveries(ids, svix_ids)
    ), inserted AS (
        INSERT INTO junction.events AS ev
            (svix_id, inbox_id, event_type, user_id, client_user_id, team_id, provider, resource,
             received_at, payload)
        SELECT c.svix_id, c.inbox_id, c.event_type, c.user_id, c.client_user_id, c.team_id,
               c.provider, c.resource, c.received_at, c.payload
        FROM classified AS c
        ON CONFLICT (svix_id) DO NOTHING
        RETURNING ev.svix_id
    )
    SELECT count(*),
           array_agg(c.item ORDER BY c.inbox_id) FILTER (WHERE c.family = 'summary'),
           array_agg(c.item ORDER BY c.inbox_id) FILTER (WHERE c.family = 'timeseries'),
           array_agg(c.item ORDER BY c.inbox_id) FILTER (WHERE c.family = 'stream'),
           array_agg(c.item ORDER BY c.inbox_id) FILTER (WHERE c.family = 'connection'),
           array_agg(c.item ORDER BY c.inbox_id) FILTER (WHERE c.family = 'historical')
      INTO accepted, summaries, timeseries, streams, conns, backfills
    FROM (SELECT cl.inbox_id, cl.family,
                 ROW(cl.inbox_id, cl.user_id, cl.resource, cl.event_type, cl.received_at, cl.obj)::junction.typing_item AS item
          FROM classified AS cl
          JOIN inserted AS ins ON ins.svix_id = cl.svix_id) AS c;

    -- Type the new events: one statement per target table.
    IF summaries IS NOT NULL THEN PERFORM junction._upsert_summaries(summaries); END IF;
    IF timeseries IS NOT NULL THEN PERFORM junction._upsert_samples(timeseries); END IF;
    IF streams IS NOT NULL THEN PERFORM junction._upsert_workout_streams(streams); END IF;
    IF conns IS NOT NULL THEN PERFORM junction._upsert_connections(conns); END IF;
    IF backfills IS NOT NULL THEN PERFORM junction._upsert_backfills(backfills); END IF;

    UPDATE junction.inbox
    SET status = 'processed', processed_at = clock_timestamp(), attempts = attempts + 1,
        error = NULL, sqlstate = NULL
    WHERE id = ANY (ids);

    RETURN accepted;
END
$fn$;
COMMENT ON FUNCTION junction._apply_deliveries(bigint[], text[]) IS
  'accept verified inbox rows (ids with their svix ids): parse, record events, type new ones, mark processed; raises on bad input';
-- The Junction API client (C, src/http.c): every read and write of the REST API goes through here.

CREATE FUNCTION junction_api(method text, path text, query jsonb DEFAULT NULL, body jsonb DEFAULT NULL)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'junction_api' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION junction_api(text, text, jsonb, jsonb) IS
  'call any Junction API endpoint (path like /v2/user/...; query and body as jsonb); errors on non-2xx';

-- Send a data API GET now and return; the next identical junction_api call in this transaction
-- receives its answer (junction_sync asks for the next page before loading the current one).
CREATE FUNCTION junction._api_prefetch(path text, query jsonb DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'junction_api_prefetch' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION junction._api_prefetch(text, jsonb) IS
  'send a Data Access API GET in the background; the next identical junction_api call in this transaction takes its answer';

-- (status, body) without raising on HTTP statuses: for wrappers that treat some as answers.
CREATE FUNCTION junction._api_request(management boolean, method text, path text,
                                      query jsonb DEFAULT NULL, body jsonb DEFAULT NULL,
                                      OUT status integer, OUT body jsonb)
RETURNS record
AS 'MODULE_PATHNAME', 'junction_api_request' LANGUAGE C VOLATILE;

-- The base URL requests go to with the current settings (override, environment/region, key prefix).
CREATE FUNCTION junction._api_base_url(management boolean DEFAULT false) RETURNS text
AS 'MODULE_PATHNAME', 'junction_api_base_url_of' LANGUAGE C STABLE STRICT;

-- The one redaction of API answers (C, shared by the data and the Management API): the keys
-- (settings or files), the signing secrets in junction.webhook_secrets with and without their
-- whsec_ prefix, the strings in extra, and anything shaped like whsec_<base64>.
CREATE FUNCTION junction._redact(s text, extra text[] DEFAULT NULL) RETURNS text
AS 'MODULE_PATHNAME', 'junction_redact_sql' LANGUAGE C VOLATILE;

-- Raise the error junction_api raises for a non-2xx answer (SQLSTATE, message, redacted
-- detail, hint), for SQL wrappers of junction._api_request.  redact: strings the request sent.
CREATE FUNCTION junction._raise_http_error(management boolean, method text, path text,
                                           status integer, body jsonb, redact text[] DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'junction_raise_http_error_sql' LANGUAGE C VOLATILE;

-- Whether requests have a key to send (junction.api_key / _file, or the management ones).
CREATE FUNCTION junction._api_key_configured(management boolean DEFAULT false) RETURNS boolean
AS 'MODULE_PATHNAME', 'junction_api_key_configured_sql' LANGUAGE C STABLE STRICT;

-- Conventions of every API function (40 to 68):
--   * every HTTP call goes through junction_api / junction._api_request (src/http.c): retries,
--     timeouts, cancel, SQLSTATEs, and the key never in a message;
--   * a single Junction object comes back as jsonb; a list comes back as SETOF jsonb, one
--     Junction object per row, exactly as Junction sent it (README, "What the functions return");
--   * REST loads take their received_seq from junction._next_received_seq(), so webhook and REST
--     data order together ("later received wins");
--   * superusers only (99_privileges.sql).

-- Percent-encode one path segment (everything but A-Z a-z 0-9 - _ ~, so "." and ".." are safe).
CREATE FUNCTION junction._url_segment(s text)
RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(string_agg(CASE WHEN b BETWEEN 48 AND 57 OR b BETWEEN 65 AND 90
                                         OR b BETWEEN 97 AND 122 OR b IN (45, 95, 126)
                                    THEN chr(b)
                                    ELSE '%' || upper(lpad(to_hex(b), 2, '0')) END, '' ORDER BY i), '')
    FROM (SELECT i, get_byte(x.bytes, i) AS b
          FROM (SELECT convert_to(s, 'UTF8') AS bytes) AS x,
               generate_series(0, octet_length(x.bytes) - 1) AS i) AS y
$$;
COMMENT ON FUNCTION junction._url_segment(text) IS 'percent-encode one URL path segment';

-- A timestamp as Junction's query parameters want it: YYYY-MM-DD for date endpoints, else an ISO
-- datetime in UTC to the second (a start rounds down, an end rounds up: no sample is lost).
CREATE FUNCTION junction._api_time(t timestamptz, date_format text, is_end boolean)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE
             WHEN t IS NULL THEN NULL
             WHEN date_format = 'date' THEN to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD')
             ELSE to_char(CASE WHEN is_end AND date_trunc('second', t AT TIME ZONE 'UTC') <> t AT TIME ZONE 'UTC'
                               THEN date_trunc('second', t AT TIME ZONE 'UTC') + interval '1 second'
                               ELSE date_trunc('second', t AT TIME ZONE 'UTC') END,
                          'YYYY-MM-DD"T"HH24:MI:SS"+00:00"')
           END
$$;
COMMENT ON FUNCTION junction._api_time(timestamptz, text, boolean) IS
  'format a query date for Junction: YYYY-MM-DD (date endpoints) or YYYY-MM-DDTHH:MM:SS+00:00';

-- Raise the error junction_api raises for a non-2xx answer (same SQLSTATEs, message, hint),
-- for wrappers that call junction._api_request to treat some statuses as answers.
CREATE FUNCTION junction._raise_http(method text, path text, status integer, body jsonb)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- one implementation (src/http.c), so the detail is redacted as junction_api redacts it
    PERFORM junction._raise_http_error(false, method, path, status, body);
END
$$;
COMMENT ON FUNCTION junction._raise_http(text, text, integer, jsonb) IS
  'raise the SQL error for a non-2xx Junction answer, as junction_api does';

-- The registry row of a resource: its event name (weight), or a timeseries' REST name (body_weight).
CREATE FUNCTION junction._api_resource(resource text)
RETURNS junction.resources
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    res junction.resources;
BEGIN
    PERFORM junction._require(resource, 'resource');
    SELECT * INTO res
    FROM junction.resources AS r
    WHERE r.name = lower(resource)
       OR (r.kind = 'timeseries' AND r.rest_segment = lower(resource))
    ORDER BY r.name = lower(resource) DESC
    LIMIT 1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown Junction resource %', coalesce(quote_literal(resource), 'NULL')
            USING ERRCODE = '22023',
                  HINT = 'SELECT name, kind FROM junction.resources ORDER BY kind, name; lists the valid names (event names; body_weight and body_fat are accepted for weight and fat).';
    END IF;
    RETURN res;
END
$$;
COMMENT ON FUNCTION junction._api_resource(text) IS
  'the junction.resources row of a resource name (event name, or a timeseries REST segment); 22023 if unknown';
-- Reads from the Data Access API: one page (junction._fetch_page), the paging rules, and
-- junction_fetch / the stream readers users call.

-- One Data Access API read of a summary or timeseries resource (one page for timeseries).
-- A profile that does not exist (404) is NULL, not an error. prefetch: only send the request of a
-- summary or timeseries page (junction._api_prefetch) and return NULL; the same call without
-- prefetch later in the transaction receives the answer.
CREATE FUNCTION junction._fetch_page(res junction.resources, user_id uuid, start_date timestamptz,
                                     end_date timestamptz, provider text, next_cursor text,
                                     prefetch boolean DEFAULT false)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    path  text;
    query jsonb;
    r     record;
BEGIN
    IF user_id IS NULL THEN
        RAISE EXCEPTION 'user_id must not be null' USING ERRCODE = '22004';
    END IF;
    path := replace(res.rest_path, '{user_id}', user_id::text);
    IF res.name = 'profile' THEN
        query := jsonb_strip_nulls(jsonb_build_object('provider', nullif(provider, '')));
        SELECT * INTO r FROM junction._api_request(false, 'GET', path, query, NULL);
        IF r.status = 404 THEN
            RETURN NULL;
        ELSIF r.status NOT BETWEEN 200 AND 299 THEN
            PERFORM junction._raise_http('GET', path, r.status, r.body);
        END IF;
        RETURN r.body;
    END IF;
    IF res.name = 'device' THEN
        RETURN @extschema@.junction_api('GET', path);
    END IF;
    IF start_date IS NULL THEN
        RAISE EXCEPTION 'start_date is required to read %', res.name USING ERRCODE = '22004';
    END IF;
    IF NOT isfinite(start_date) OR NOT isfinite(coalesce(end_date, start_date)) THEN
        RAISE EXCEPTION 'start_date and end_date must be finite' USING ERRCODE = '22008';
    END IF;
    IF end_date < start_date THEN
        RAISE EXCEPTION 'end_date % is before start_date %', end_date, start_date USING ERRCODE = '22023';
    END IF;
    query := jsonb_strip_nulls(jsonb_build_object(
        'start_date', junction._api_time(start_date, res.rest_date_format, false),
        'end_date', junction._api_time(end_date, res.rest_date_format, true),
        'provider', nullif(provider, ''),
        'next_cursor', next_cursor));
    IF prefetch THEN
        PERFORM junction._api_prefetch(path, query);
        RETURN NULL;
    END IF;
    RETURN @extschema@.junction_api('GET', path, query);
END
$$;
COMMENT ON FUNCTION junction._fetch_page(junction.resources, uuid, timestamptz, timestamptz, text, text, boolean) IS
  'one read of a summary or grouped timeseries resource (one page); a missing profile is NULL';

-- The next cursor of a timeseries page; guards against a server that never ends.
CREATE FUNCTION junction._next_cursor(page jsonb, previous text, path text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    nc text := nullif(coalesce(page ->> 'next_cursor', page ->> 'next'), '');
BEGIN
    IF nc IS NOT NULL AND nc = previous THEN
        RAISE EXCEPTION 'junction API GET %: next_cursor did not advance', path USING ERRCODE = '22P02';
    END IF;
    RETURN nc;
END
$$;
COMMENT ON FUNCTION junction._next_cursor(jsonb, text, text) IS
  'next_cursor of a page (null at the end); raises if the server repeats the cursor';

-- Check a timeseries page has the documented shape: {"groups": {provider: [group, ...]}, ...}.
CREATE FUNCTION junction._check_groups(page jsonb, path text)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- jsonpath looks without copying the (megabytes of) groups
    IF NOT coalesce(jsonb_path_exists(page, 'strict $.groups ? (@.type() == "object")', '{}', true), false) THEN
        RAISE EXCEPTION 'junction API GET %: response has no "groups" object', path
            USING ERRCODE = '22P02', DETAIL = format('The response starts with: %s', left(page::text, 80));
    END IF;
    IF jsonb_path_exists(page, 'strict $.groups.* ? (@.type() != "array")', '{}', true) THEN
        RAISE EXCEPTION 'junction API GET %: "groups" values must be arrays', path USING ERRCODE = '22P02';
    END IF;
    RETURN page -> 'groups';
END
$$;
COMMENT ON FUNCTION junction._check_groups(jsonb, text) IS 'the groups object of a timeseries page, checked';

-- The paging loop of every timeseries read (junction_fetch collects the pages, junction_sync loads
-- them): the page at cursor, its groups checked, the next cursor, and the next page already asked
-- for, so that the server prepares it while the caller handles this one.
CREATE FUNCTION junction._timeseries_page(res junction.resources, user_id uuid, start_date timestamptz,
                                          end_date timestamptz, provider text, cursor text,
                                          OUT groups jsonb, OUT next_cursor text)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    path text := replace(res.rest_path, '{user_id}', coalesce(user_id::text, ''));
    page jsonb;
BEGIN
    page := junction._fetch_page(res, user_id, start_date, end_date, provider, cursor);
    groups := junction._check_groups(page, path);
    next_cursor := junction._next_cursor(page, cursor, path);
    IF next_cursor IS NOT NULL THEN
        PERFORM junction._fetch_page(res, user_id, start_date, end_date, provider, next_cursor, true);
    END IF;
END
$$;
COMMENT ON FUNCTION junction._timeseries_page(junction.resources, uuid, timestamptz, timestamptz, text, text) IS
  'one page of a timeseries read: its checked groups and the next cursor (whose page is already requested)';

-- ---------------------------------------------------------------------------------------------
-- Reads: junction_fetch and the streams.
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION junction_fetch(resource text, user_id uuid, start_date timestamptz,
                               end_date timestamptz, provider text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    res    junction.resources := junction._api_resource(resource);
    groups jsonb;
    nc     text;
    pages  integer := 0;
    provs  text[] := '{}'::text[];     -- providers, in order of first appearance
    owners text[] := '{}'::text[];     -- pieces[i] holds groups of provider owners[i], in page order
    pieces text[] := '{}'::text[];
    sel    text[];
    parts  text[] := '{}'::text[];
    p      text;
    e      record;
BEGIN
    IF res.kind = 'stream' THEN
        RAISE EXCEPTION 'workout streams are read per workout, not per user and date range'
            USING ERRCODE = '22023', HINT = 'SELECT junction_fetch_workout_stream(workout_id);';
    END IF;
    IF res.kind <> 'timeseries' THEN
        RETURN junction._fetch_page(res, user_id, start_date, end_date, provider, NULL);
    END IF;
    -- grouped timeseries: every page, then one {"groups": {provider: [groups of every page]}}
    LOOP
        SELECT t.groups, t.next_cursor INTO groups, nc
        FROM junction._timeseries_page(res, user_id, start_date, end_date, provider, nc) AS t;
        pages := pages + 1;
        EXIT WHEN nc IS NULL AND pages = 1;         -- one page: it is the answer
        -- several pages: collect each provider's groups as JSON text (no sorting, no re-nesting
        -- of megabytes of jsonb), and parse the whole answer once at the end
        FOR e IN SELECT g.key, g.value::text AS txt FROM jsonb_each(groups) AS g
                 WHERE jsonb_array_length(g.value) > 0 LOOP
            IF NOT e.key = ANY (provs) THEN
                provs := array_append(provs, e.key);
            END IF;
            owners := array_append(owners, e.key);
            pieces := array_append(pieces, substr(e.txt, 2, length(e.txt) - 2));   -- without [ ]
        END LOOP;
        EXIT WHEN nc IS NULL;
    END LOOP;
    IF pages = 1 THEN
        RETURN jsonb_build_object('groups', groups);
    END IF;
    FOREACH p IN ARRAY provs LOOP
        sel := '{}';
        FOR i IN 1 .. cardinality(pieces) LOOP
            IF owners[i] = p THEN
                sel := array_append(sel, pieces[i]);
            END IF;
        END LOOP;
        parts := array_append(parts, to_json(p)::text || ':[' || array_to_string(sel, ',') || ']');
    END LOOP;
    RETURN ('{"groups":{' || array_to_string(parts, ',') || '}}')::jsonb;
END
$$;
COMMENT ON FUNCTION junction_fetch(text, uuid, timestamptz, timestamptz, text) IS
  'one Data Access API read: a summary response ({activity: [...]}), a profile object, or a timeseries as {groups: {provider: [groups of all pages]}}';

CREATE FUNCTION junction_fetch_workout_stream(workout_id uuid)
RETURNS jsonb
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT @extschema@.junction_api('GET', format('/v2/timeseries/workouts/%s/stream',
                                                   junction._require(workout_id, 'workout_id'))) $$;
COMMENT ON FUNCTION junction_fetch_workout_stream(uuid) IS
  'a workout''s stream (parallel arrays time, heartrate, cadence, altitude, velocity_smooth, lat, lng, distance, power, ...)';

CREATE FUNCTION junction_fetch_sleep_stream(sleep_id uuid)
RETURNS jsonb
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT @extschema@.junction_api('GET', format('/v2/timeseries/sleep/%s/stream',
                                                   junction._require(sleep_id, 'sleep_id'))) $$;
COMMENT ON FUNCTION junction_fetch_sleep_stream(uuid) IS
  'a sleep session''s stream: {hrv: [...], heartrate: [...], hypnogram: [...], respiratory_rate: [...]}';
-- ---------------------------------------------------------------------------------------------
-- Users, connections, introspection: thin wrappers of the documented endpoints (README, "Users").
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION junction_user(user_id uuid)
RETURNS jsonb
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT @extschema@.junction_api('GET', '/v2/user/' || junction._require(user_id, 'user_id')) $$;
COMMENT ON FUNCTION junction_user(uuid) IS 'the Junction user (GET /v2/user/{user_id})';

CREATE FUNCTION junction_user_resolve(client_user_id text)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM junction._require(client_user_id, 'client_user_id');
    IF client_user_id = '' THEN
        RAISE EXCEPTION 'client_user_id must not be empty' USING ERRCODE = '22023';
    END IF;
    RETURN @extschema@.junction_api('GET', '/v2/user/resolve/' || junction._url_segment(client_user_id));
END
$$;
COMMENT ON FUNCTION junction_user_resolve(text) IS 'the Junction user with your client_user_id (GET /v2/user/resolve/{client_user_id})';

CREATE FUNCTION junction_user_create(client_user_id text, fallback_time_zone text DEFAULT NULL,
                                     fallback_birth_date date DEFAULT NULL,
                                     ingestion_start date DEFAULT NULL, ingestion_end date DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r record;
BEGIN
    PERFORM junction._require(client_user_id, 'client_user_id');
    IF client_user_id = '' THEN
        RAISE EXCEPTION 'client_user_id must not be empty' USING ERRCODE = '22023';
    END IF;
    SELECT * INTO r FROM junction._api_request(false, 'POST', '/v2/user', NULL,
        jsonb_strip_nulls(jsonb_build_object(
            'client_user_id', client_user_id,
            'fallback_time_zone', fallback_time_zone,
            'fallback_birth_date', fallback_birth_date,
            'ingestion_start', ingestion_start,
            'ingestion_end', ingestion_end)));
    IF r.status BETWEEN 200 AND 299 THEN
        RETURN r.body;
    END IF;
    -- Junction answers a duplicate client_user_id with 400 {"detail": {"user_id": ..., ...}}
    IF r.status = 400 AND jsonb_typeof(r.body -> 'detail') = 'object'
       AND (r.body #>> '{detail,user_id}') ~* '^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$' THEN
        RETURN @extschema@.junction_user((r.body #>> '{detail,user_id}')::uuid);
    END IF;
    IF r.status = 400 AND r.body::text ~* 'already exist' THEN
        RETURN @extschema@.junction_user_resolve(client_user_id);
    END IF;
    PERFORM junction._raise_http('POST', '/v2/user', r.status, r.body);
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION junction_user_create(text, text, date, date, date) IS
  'create a Junction user, or return the existing one with this client_user_id (idempotent)';

CREATE FUNCTION junction_users()
RETURNS SETOF jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    page_size constant integer := 500;     -- Junction's maximum
    skip      integer := 0;
    page      jsonb;
    n         integer;
BEGIN
    LOOP
        page := @extschema@.junction_api('GET', '/v2/user',
                                         jsonb_build_object('offset', skip, 'limit', page_size));
        IF jsonb_typeof(page -> 'users') IS DISTINCT FROM 'array' THEN
            RAISE EXCEPTION 'junction API GET /v2/user: response has no "users" array' USING ERRCODE = '22P02';
        END IF;
        RETURN QUERY SELECT u FROM jsonb_array_elements(page -> 'users') AS u;
        n := jsonb_array_length(page -> 'users');
        skip := skip + n;
        EXIT WHEN n = 0 OR n < page_size
               OR (jsonb_typeof(page -> 'total') = 'number' AND skip >= (page ->> 'total')::bigint);
    END LOOP;
END
$$;
COMMENT ON FUNCTION junction_users() IS 'every user of the team, one Junction user object per row (all pages of GET /v2/user)';

CREATE FUNCTION junction_user_delete(user_id uuid)
RETURNS jsonb
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT @extschema@.junction_api('DELETE', '/v2/user/' || junction._require(user_id, 'user_id')) $$;
COMMENT ON FUNCTION junction_user_delete(uuid) IS
  'delete a Junction user (Junction keeps it 7 days for undo); the rows already in junction.* stay';

CREATE FUNCTION junction_connections(user_id uuid)
RETURNS SETOF jsonb
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT p
    FROM jsonb_array_elements(@extschema@.junction_api('GET', '/v2/user/providers/'
                                                       || junction._require(user_id, 'user_id')) -> 'providers') AS p
$$;
COMMENT ON FUNCTION junction_connections(uuid) IS
  'the user''s provider connections as Junction lists them now, one object per row (GET /v2/user/providers/{user_id})';

CREATE FUNCTION junction_connection_deregister(user_id uuid, provider text)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    answer jsonb;
BEGIN
    PERFORM junction._require(user_id, 'user_id');
    PERFORM junction._require(provider, 'provider');
    IF provider = '' THEN
        RAISE EXCEPTION 'provider must not be empty' USING ERRCODE = '22023';
    END IF;
    answer := @extschema@.junction_api('DELETE', format('/v2/user/%s/%s', user_id,
                                                        junction._url_segment(provider)));
    -- Junction sends no event for a deregistration: drop our copy of the connection now.
    DELETE FROM junction.connections AS c
    WHERE c.user_id = junction_connection_deregister.user_id
      AND c.provider = junction_connection_deregister.provider;
    RETURN answer;
END
$$;
COMMENT ON FUNCTION junction_connection_deregister(uuid, text) IS
  'deregister a user''s provider connection at Junction and remove it from junction.connections';

CREATE FUNCTION junction_user_refresh(user_id uuid, timeout integer DEFAULT 10)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    path text := '/v2/user/refresh/' || user_id;
    r    record;
BEGIN
    IF user_id IS NULL THEN
        RAISE EXCEPTION 'user_id must not be null' USING ERRCODE = '22004';
    END IF;
    SELECT * INTO r FROM junction._api_request(false, 'POST', path,
                                               jsonb_strip_nulls(jsonb_build_object('timeout', timeout)), NULL);
    -- 200/202 report what was refreshed; a 400 {success: false, ...} is an answer too
    IF r.status BETWEEN 200 AND 299 OR (r.status = 400 AND r.body ? 'success') THEN
        RETURN r.body;
    END IF;
    PERFORM junction._raise_http('POST', path, r.status, r.body);
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION junction_user_refresh(uuid, integer) IS
  'ask Junction to poll the user''s providers now (limited to 8 per hour per user); returns refreshed/in-progress/failed sources';

-- Introspection: follow next_cursor to the end; one row per user, the provider maps of every
-- page merged (a page boundary can split one user's providers).
CREATE FUNCTION junction._introspect(path text, user_id uuid, provider text)
RETURNS SETOF jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    page   jsonb;
    pages  jsonb[] := '{}'::jsonb[];
    nc     text;
BEGIN
    LOOP
        page := @extschema@.junction_api('GET', path, jsonb_strip_nulls(jsonb_build_object(
                    'user_id', user_id, 'provider', nullif(provider, ''), 'next_cursor', nc)));
        IF jsonb_typeof(page -> 'data') IS DISTINCT FROM 'array' THEN
            RAISE EXCEPTION 'junction API GET %: response has no "data" array', path USING ERRCODE = '22P02';
        END IF;
        pages := array_append(pages, page -> 'data');
        nc := junction._next_cursor(page, nc, path);
        EXIT WHEN nc IS NULL;
    END LOOP;
    RETURN QUERY
    SELECT jsonb_build_object('user_id', x.uid, 'provider', x.providers)
    FROM (SELECT d.elem ->> 'user_id' AS uid,
                 jsonb_object_agg(e.key, e.value ORDER BY p.ord, d.ord) AS providers,
                 min(p.ord * 1000000 + d.ord) AS first_seen
          FROM unnest(pages) WITH ORDINALITY AS p(data, ord)
          CROSS JOIN LATERAL jsonb_array_elements(p.data) WITH ORDINALITY AS d(elem, ord)
          CROSS JOIN LATERAL jsonb_each(CASE jsonb_typeof(d.elem -> 'provider')
                                          WHEN 'object' THEN d.elem -> 'provider'
                                          ELSE '{}' END) AS e
          GROUP BY d.elem ->> 'user_id') AS x
    ORDER BY x.first_seen;
END
$$;
COMMENT ON FUNCTION junction._introspect(text, uuid, text) IS
  'all pages of an introspection endpoint, merged to one {user_id, provider: {...}} per user';

CREATE FUNCTION junction_introspect_resources(user_id uuid DEFAULT NULL, provider text DEFAULT NULL)
RETURNS SETOF jsonb
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT junction._introspect('/v2/introspect/resources', user_id, provider) $$;
COMMENT ON FUNCTION junction_introspect_resources(uuid, text) IS
  'per user: {user_id, provider: {slug: {resource: {last_attempt, oldest_data, newest_data, sent_count}}}} (all pages)';

CREATE FUNCTION junction_introspect_historical_pulls(user_id uuid DEFAULT NULL, provider text DEFAULT NULL)
RETURNS SETOF jsonb
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT junction._introspect('/v2/introspect/historical_pull', user_id, provider) $$;
COMMENT ON FUNCTION junction_introspect_historical_pulls(uuid, text) IS
  'per user: {user_id, provider: {slug: {pulled: {resource: {status, range_start, range_end, ...}}, not_pulled: [...]}}} (all pages)';
-- ---------------------------------------------------------------------------------------------
-- Loading: REST responses -> the typed tables, through the webhook path's upserts.
-- ---------------------------------------------------------------------------------------------

-- Items of one timeseries page: one per group {source, data[]}, each with its own received_seq
-- in page order (a later group of the same page wins, like a later webhook).
CREATE FUNCTION junction._page_items(user_id uuid, resource text, groups jsonb)
RETURNS junction.typing_item[]
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT array_agg(ROW(junction._next_received_seq(), user_id, resource, NULL, now(), x.grp)::junction.typing_item
                     ORDER BY x.pord, x.gord)
    FROM (SELECT e.ord AS pord, g.ord AS gord, g.grp
          FROM jsonb_each(groups) WITH ORDINALITY AS e(key, value, ord)
          CROSS JOIN LATERAL jsonb_array_elements(e.value) WITH ORDINALITY AS g(grp, ord)
          ORDER BY e.ord, g.ord) AS x
$$;
COMMENT ON FUNCTION junction._page_items(uuid, text, jsonb) IS
  'typing items (one per group) of one grouped timeseries page';

-- Queue the streams of the user's workouts in a range (those not queued or fetched yet).
CREATE FUNCTION junction._queue_workout_streams(user_id uuid, start_date timestamptz,
                                                end_date timestamptz, provider text)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    page  jsonb;
    items junction.typing_item[];
BEGIN
    page := junction._fetch_page(junction._api_resource('workouts'), user_id, start_date, end_date,
                                 provider, NULL);
    SELECT array_agg(ROW(junction._next_received_seq(), user_id, 'workout_stream', NULL, now(),
                         jsonb_build_object('user_id', user_id, 'workout_id', w.obj ->> 'id',
                                            'provider_id', w.obj -> 'provider_id',
                                            'sport', w.obj -> 'sport', 'source', w.obj -> 'source')
                        )::junction.typing_item ORDER BY w.ord)
      INTO items
    FROM jsonb_array_elements(CASE jsonb_typeof(page -> 'workouts') WHEN 'array' THEN page -> 'workouts'
                                   ELSE '[]' END) WITH ORDINALITY AS w(obj, ord)
    WHERE w.obj ->> 'id' IS NOT NULL
      AND NOT EXISTS (SELECT FROM junction.workout_streams AS s
                      WHERE s.user_id = _queue_workout_streams.user_id
                        AND s.workout_id = (w.obj ->> 'id')::uuid);
    IF items IS NULL THEN
        RETURN 0;
    END IF;
    RETURN junction._upsert_workout_streams(items);
END
$$;
COMMENT ON FUNCTION junction._queue_workout_streams(uuid, timestamptz, timestamptz, text) IS
  'add a pending junction.workout_streams row for each workout in the range that has none';

-- Fetch one workout stream into its junction.workout_streams row (which must exist).
CREATE FUNCTION junction._load_workout_stream(user_id uuid, workout_id uuid)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    stream jsonb := @extschema@.junction_fetch_workout_stream(workout_id);
    n      bigint;
BEGIN
    UPDATE junction.workout_streams AS s
    SET data = stream, fetch_status = 'done', fetch_error = NULL, sqlstate = NULL,
        next_attempt_at = NULL, fetched_at = now(), updated_at = now()
    WHERE s.user_id = _load_workout_stream.user_id AND s.workout_id = _load_workout_stream.workout_id;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
COMMENT ON FUNCTION junction._load_workout_stream(uuid, uuid) IS
  'fetch a workout stream and store it in junction.workout_streams.data (fetch_status done)';

-- All pages of one timeseries resource over a range into junction.samples; conflicts as for
-- junction._upsert_samples. Returns the rows written.
CREATE FUNCTION junction._sync_timeseries(res junction.resources, user_id uuid, start_date timestamptz,
                                          end_date timestamptz, provider text, conflicts boolean)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    groups jsonb;
    items  junction.typing_item[];
    nc     text;
    total  bigint := 0;
BEGIN
    LOOP
        SELECT t.groups, t.next_cursor INTO groups, nc
        FROM junction._timeseries_page(res, user_id, start_date, end_date, provider, nc) AS t;
        items := junction._page_items(user_id, res.name, groups);
        IF items IS NOT NULL THEN
            total := total + junction._upsert_samples(items, conflicts);
        END IF;
        EXIT WHEN nc IS NULL;
    END LOOP;
    RETURN total;
END
$$;
COMMENT ON FUNCTION junction._sync_timeseries(junction.resources, uuid, timestamptz, timestamptz, text, boolean) IS
  'fetch every page of one timeseries resource over a range and load it into junction.samples';

-- Load one resource of one user over a range into the typed tables; returns rows written.
-- Timeseries are loaded page by page as they arrive (never the whole range in memory).
-- workout_stream queues the range's workouts' streams, and fetches them too when fetch_streams.
CREATE FUNCTION junction._sync_resource(user_id uuid, resource text, start_date timestamptz,
                                        end_date timestamptz, provider text,
                                        fetch_streams boolean DEFAULT true)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    res    junction.resources := junction._api_resource(resource);
    path   text := replace(res.rest_path, '{user_id}', coalesce(user_id::text, ''));
    page   jsonb;
    items  junction.typing_item[];
    total  bigint := 0;
    fresh  boolean;
    s      record;
BEGIN
    IF user_id IS NULL THEN
        RAISE EXCEPTION 'user_id must not be null' USING ERRCODE = '22004';
    END IF;
    IF res.kind = 'timeseries' THEN
        -- Fast path: when the user has no sample of this resource in or near the range (a first
        -- backfill), the pages go in with plain INSERTs, in one subtransaction. If a key exists
        -- after all (a concurrent writer, a sample far outside the range, one key on two pages),
        -- unique_violation rolls that back and everything is loaded again with ON CONFLICT.
        -- Skipped when one more subtransaction would overflow this backend's subxid cache.
        fresh := junction._subxact_room() AND NOT EXISTS (
            SELECT FROM junction.samples AS x
            WHERE x.user_id = _sync_resource.user_id AND x.resource = res.name
              AND x.time >= start_date - interval '2 days'
              AND x.time <= coalesce(end_date, 'infinity') + interval '2 days');
        IF fresh THEN
            BEGIN
                total := junction._sync_timeseries(res, user_id, start_date, end_date, provider, false);
            EXCEPTION WHEN unique_violation THEN
                fresh := false;
            END;
        END IF;
        IF NOT fresh THEN
            total := junction._sync_timeseries(res, user_id, start_date, end_date, provider, true);
        END IF;
    ELSIF res.kind = 'summary' THEN
        page := junction._fetch_page(res, user_id, start_date, end_date, provider, NULL);
        IF page IS NOT NULL AND res.response_key IS NOT NULL
           AND jsonb_typeof(page -> res.response_key) IS DISTINCT FROM 'array' THEN
            RAISE EXCEPTION 'junction API GET %: response has no "%" array', path, res.response_key
                USING ERRCODE = '22P02', DETAIL = format('The response starts with: %s', left(page::text, 80));
        END IF;
        SELECT array_agg(ROW(junction._next_received_seq(), user_id, res.name, NULL, now(), o.obj)::junction.typing_item
                         ORDER BY o.ord)
          INTO items
        FROM jsonb_array_elements(CASE
                                    WHEN page IS NULL THEN '[]'
                                    WHEN res.response_key IS NOT NULL THEN page -> res.response_key
                                    WHEN jsonb_typeof(page) = 'array' THEN page
                                    ELSE jsonb_build_array(page)
                                  END) WITH ORDINALITY AS o(obj, ord);
        IF items IS NOT NULL THEN
            total := junction._upsert_summaries(items);
        END IF;
    ELSIF res.name = 'workout_stream' THEN
        total := junction._queue_workout_streams(user_id, start_date, end_date, provider);
        IF fetch_streams THEN
            total := 0;
            FOR s IN SELECT w.workout_id FROM junction.workout_streams AS w
                     WHERE w.user_id = _sync_resource.user_id AND w.fetch_status = 'pending'
                       AND (_sync_resource.provider IS NULL OR w.provider = _sync_resource.provider)
                     ORDER BY w.workout_id
            LOOP
                total := total + junction._load_workout_stream(user_id, s.workout_id);
            END LOOP;
        END IF;
    ELSE
        RAISE EXCEPTION 'cannot sync resource %', res.name USING ERRCODE = '22023';
    END IF;
    RETURN total;
END
$$;
COMMENT ON FUNCTION junction._sync_resource(uuid, text, timestamptz, timestamptz, text, boolean) IS
  'fetch one resource of one user over a range and upsert it into the typed tables; returns rows written';

CREATE FUNCTION junction_sync(user_id uuid, resources text[] DEFAULT NULL,
                              start_date timestamptz DEFAULT now() - interval '7 days',
                              end_date timestamptz DEFAULT now(), provider text DEFAULT NULL)
RETURNS TABLE (resource text, rows_loaded bigint)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    uid   uuid := user_id;
    names text[];
    r     text;
BEGIN
    IF uid IS NULL THEN
        RAISE EXCEPTION 'user_id must not be null' USING ERRCODE = '22004';
    END IF;
    IF resources IS NULL THEN
        -- every dated resource a webhook could have sent: summaries and timeseries, not streams
        SELECT array_agg(x.name ORDER BY x.name) INTO names
        FROM junction.resources AS x
        WHERE x.kind IN ('summary', 'timeseries') AND x.event_prefix = 'daily.data';
    ELSE
        SELECT array_agg(DISTINCT (junction._api_resource(q.name)).name ORDER BY (junction._api_resource(q.name)).name)
          INTO names
        FROM unnest(resources) AS q(name);
    END IF;
    FOREACH r IN ARRAY coalesce(names, '{}') LOOP
        resource := r;
        rows_loaded := junction._sync_resource(uid, r, start_date, end_date, provider, true);
        RETURN NEXT;
    END LOOP;
END
$$;
COMMENT ON FUNCTION junction_sync(uuid, text[], timestamptz, timestamptz, text) IS
  'fetch resources (default: every summary and timeseries) of a user over a range and upsert them into the typed tables; rows written per resource';

-- ---------------------------------------------------------------------------------------------
-- Connections: reconcile junction.connections with what Junction lists.
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION junction._refresh_user_connections(user_id uuid)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    -- drawn before the request: rows a webhook writes meanwhile are newer and stay
    before bigint := junction._next_received_seq();
    answer jsonb := @extschema@.junction_api('GET', '/v2/user/providers/' || user_id);
    items  junction.typing_item[];
    n      bigint := 0;
BEGIN
    IF jsonb_typeof(answer -> 'providers') IS DISTINCT FROM 'array' THEN
        RAISE EXCEPTION 'junction API GET /v2/user/providers/%: response has no "providers" array', user_id
            USING ERRCODE = '22P02';
    END IF;
    SELECT array_agg(ROW(junction._next_received_seq(), user_id, 'connection', NULL, now(), p.obj)::junction.typing_item
                     ORDER BY p.ord)
      INTO items
    FROM jsonb_array_elements(answer -> 'providers') WITH ORDINALITY AS p(obj, ord)
    WHERE p.obj ->> 'slug' IS NOT NULL;
    IF items IS NOT NULL THEN
        n := junction._upsert_connections(items);
    END IF;
    DELETE FROM junction.connections AS c
    WHERE c.user_id = _refresh_user_connections.user_id
      AND c.received_seq < before
      AND c.provider NOT IN (SELECT p.obj ->> 'slug'
                             FROM jsonb_array_elements(answer -> 'providers') AS p(obj)
                             WHERE p.obj ->> 'slug' IS NOT NULL);
    RETURN n;
END
$$;
COMMENT ON FUNCTION junction._refresh_user_connections(uuid) IS
  'upsert the user''s connections from GET /v2/user/providers and delete the ones Junction no longer lists';

CREATE FUNCTION junction_refresh_connections(user_id uuid DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    u    uuid;
    done integer := 0;
BEGIN
    IF user_id IS NOT NULL THEN
        PERFORM junction._refresh_user_connections(user_id);
        RETURN 1;
    END IF;
    FOR u IN SELECT DISTINCT c.user_id FROM junction.connections AS c ORDER BY 1 LOOP
        BEGIN
            PERFORM junction._refresh_user_connections(u);
            done := done + 1;
        EXCEPTION WHEN undefined_object THEN
            -- 404: the user is gone at Junction (or unknown); keep our rows, say so
            RAISE WARNING 'junction_refresh_connections: user % not found at Junction; skipped', u;
        END;
    END LOOP;
    RETURN done;
END
$$;
COMMENT ON FUNCTION junction_refresh_connections(uuid) IS
  'reconcile junction.connections with Junction''s list for one user, or every user in junction.connections; returns users reconciled';

-- ---------------------------------------------------------------------------------------------
-- Every user.
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION junction_sync_all(days integer DEFAULT 2, refresh_connections boolean DEFAULT true)
RETURNS TABLE (user_id uuid, rows_loaded bigint, error text)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    u     uuid;
    since timestamptz := now() - make_interval(days => days);
    msg   text;
    state text;
BEGIN
    IF days IS NULL OR days < 1 THEN
        RAISE EXCEPTION 'days must be at least 1' USING ERRCODE = '22023';
    END IF;
    IF refresh_connections THEN
        PERFORM @extschema@.junction_refresh_connections(NULL);
    END IF;
    FOR u IN SELECT DISTINCT c.user_id FROM junction.connections AS c ORDER BY 1 LOOP
        user_id := u;
        error := NULL;
        BEGIN
            SELECT coalesce(sum(s.rows_loaded), 0)::bigint INTO rows_loaded
            FROM @extschema@.junction_sync(u, NULL, since, now(), NULL) AS s;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, state = RETURNED_SQLSTATE;
            IF state = '28000' THEN
                RAISE;          -- no or a wrong key: every user would fail the same way
            END IF;
            rows_loaded := 0;
            error := msg;
            RAISE WARNING 'junction_sync_all: user %: %', u, msg;
        END;
        RETURN NEXT;
    END LOOP;
END
$$;
COMMENT ON FUNCTION junction_sync_all(integer, boolean) IS
  'reconcile connections, then sync every user in junction.connections over the last days days; one row per user (a failing user is reported, not fatal)';
-- ---------------------------------------------------------------------------------------------
-- The backfill queue: historical.data.* completions (junction.backfills) and workout stream
-- notifications (junction.workout_streams). The worker runs claim / run / failed in three
-- transactions; junction_backfill_now() runs the same loop in the caller's transaction.
-- ---------------------------------------------------------------------------------------------
CREATE TYPE junction.backfill_job AS (
    kind       text,          -- 'range' (junction.backfills) or 'workout_stream' (junction.workout_streams)
    user_id    uuid,
    provider   text,
    resource   text,
    start_date timestamptz,
    end_date   timestamptz,
    workout_id uuid
);
COMMENT ON TYPE junction.backfill_job IS 'one claimed backfill: a range of one resource, or one workout stream';

-- Claim at most one due job: mark it running and count the attempt. Nothing is claimed while
-- no API key is configured (the jobs would only fail).
CREATE FUNCTION junction._backfill_claim()
RETURNS SETOF junction.backfill_job
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT junction._api_key_configured(false) THEN
        RETURN;
    END IF;
    RETURN QUERY
    UPDATE junction.backfills AS t
    SET fetch_status = 'running', attempts = t.attempts + 1, updated_at = now()
    FROM (SELECT b.user_id, b.provider, b.resource
          FROM junction.backfills AS b
          WHERE b.fetch_status = 'pending'
            AND (b.next_attempt_at IS NULL OR b.next_attempt_at <= clock_timestamp() OR b.attempts = 0)
          ORDER BY coalesce(b.next_attempt_at, b.completed_at), b.user_id, b.provider, b.resource
          LIMIT 1
          FOR UPDATE SKIP LOCKED) AS c
    WHERE t.user_id = c.user_id AND t.provider = c.provider AND t.resource = c.resource
    RETURNING 'range'::text, t.user_id, t.provider, t.resource, t.start_date, t.end_date, NULL::uuid;
    IF FOUND THEN
        RETURN;
    END IF;
    RETURN QUERY
    UPDATE junction.workout_streams AS t
    SET fetch_status = 'running', attempts = t.attempts + 1, updated_at = now()
    FROM (SELECT w.user_id, w.workout_id
          FROM junction.workout_streams AS w
          WHERE w.fetch_status = 'pending'
            AND (w.next_attempt_at IS NULL OR w.next_attempt_at <= clock_timestamp() OR w.attempts = 0)
          ORDER BY coalesce(w.next_attempt_at, w.updated_at), w.user_id, w.workout_id
          LIMIT 1
          FOR UPDATE SKIP LOCKED) AS c
    WHERE t.user_id = c.user_id AND t.workout_id = c.workout_id
    RETURNING 'workout_stream'::text, t.user_id, t.provider, 'workout_stream'::text,
              NULL::timestamptz, NULL::timestamptz, t.workout_id;
END
$$;
COMMENT ON FUNCTION junction._backfill_claim() IS
  'claim one due backfill job (FOR UPDATE SKIP LOCKED), mark it running, count the attempt; none while no API key is configured';

-- Run a claimed job: load exactly that user/provider/resource/range, or fetch that workout
-- stream; mark it done (unless a newer event re-queued it meanwhile). Returns rows loaded.
CREATE FUNCTION junction._backfill_run(kind text, user_id uuid, provider text, resource text,
                                       start_date timestamptz, end_date timestamptz, workout_id uuid)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n bigint;
BEGIN
    IF kind = 'range' THEN
        IF NOT EXISTS (SELECT FROM junction.resources AS r
                       WHERE r.name = _backfill_run.resource AND r.event_prefix = 'daily.data') THEN
            -- a resource we do not type (yet): nothing to fetch, and retrying will not help
            UPDATE junction.backfills AS b
            SET fetch_status = 'unsupported', rows_loaded = 0, next_attempt_at = NULL, updated_at = now(),
                fetch_error = format('resource %s is not in junction.resources', quote_literal(_backfill_run.resource))
            WHERE b.user_id = _backfill_run.user_id AND b.provider = _backfill_run.provider
              AND b.resource = _backfill_run.resource AND b.fetch_status = 'running';
            RETURN 0;
        END IF;
        -- streams of a historical pull are queued, one job each
        n := junction._sync_resource(user_id, resource, start_date, end_date, provider, false);
        UPDATE junction.backfills AS b
        SET fetch_status = 'done', rows_loaded = n, fetch_error = NULL, sqlstate = NULL,
            next_attempt_at = NULL, updated_at = now()
        WHERE b.user_id = _backfill_run.user_id AND b.provider = _backfill_run.provider
          AND b.resource = _backfill_run.resource AND b.fetch_status = 'running';
        RETURN n;
    ELSIF kind = 'workout_stream' THEN
        IF workout_id IS NULL THEN
            RAISE EXCEPTION 'a workout_stream job needs a workout_id' USING ERRCODE = '22004';
        END IF;
        UPDATE junction.workout_streams AS s
        SET data = @extschema@.junction_fetch_workout_stream(_backfill_run.workout_id),
            fetch_status = 'done', fetch_error = NULL, sqlstate = NULL, next_attempt_at = NULL,
            fetched_at = now(), updated_at = now()
        WHERE s.user_id = _backfill_run.user_id AND s.workout_id = _backfill_run.workout_id
          AND s.fetch_status = 'running';
        GET DIAGNOSTICS n = ROW_COUNT;      -- 0 if a newer notification re-queued it meanwhile
        RETURN n;
    END IF;
    RAISE EXCEPTION 'unknown backfill job kind %', coalesce(quote_literal(kind), 'NULL') USING ERRCODE = '22023';
END
$$;
COMMENT ON FUNCTION junction._backfill_run(text, uuid, text, text, timestamptz, timestamptz, uuid) IS
  'run one claimed backfill job (a range of a resource, or a workout stream) and mark it done; returns rows loaded';

CREATE FUNCTION junction._backfill_run(job junction.backfill_job)
RETURNS bigint
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT junction._backfill_run(job.kind, job.user_id, job.provider, job.resource,
                                    job.start_date, job.end_date, job.workout_id) $$;
COMMENT ON FUNCTION junction._backfill_run(junction.backfill_job) IS 'junction._backfill_run for a claimed job row';

-- Record a failed run: back to pending with a backoff (30 s, 2 min) while attempts < 3, else
-- failed. Returns the job's new fetch_status (null if it was re-queued meanwhile).
CREATE FUNCTION junction._backfill_failed(kind text, user_id uuid, provider text, resource text,
                                          start_date timestamptz, end_date timestamptz, workout_id uuid,
                                          error text, sqlstate text)
RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
-- start_date and end_date are unused: a running job is found by its key alone, and the job's
-- fields travel together (junction.backfill_job), so the extra plpgsql_check warnings are off.
-- @plpgsql_check_options: extra_warnings = off
DECLARE
    max_attempts constant integer := 3;
    status       text;
BEGIN
    IF kind = 'range' THEN
        UPDATE junction.backfills AS b
        SET fetch_status = CASE WHEN b.attempts < max_attempts THEN 'pending' ELSE 'failed' END,
            next_attempt_at = CASE WHEN b.attempts < max_attempts
                                   THEN clock_timestamp() + interval '30 seconds' * power(4, b.attempts - 1) END,
            fetch_error = left(coalesce(error, 'unknown error'), 2000),
            sqlstate = _backfill_failed.sqlstate, updated_at = now()
        WHERE b.user_id = _backfill_failed.user_id AND b.provider = _backfill_failed.provider
          AND b.resource = _backfill_failed.resource AND b.fetch_status = 'running'
        RETURNING b.fetch_status INTO status;
    ELSIF kind = 'workout_stream' THEN
        UPDATE junction.workout_streams AS s
        SET fetch_status = CASE WHEN s.attempts < max_attempts THEN 'pending' ELSE 'failed' END,
            next_attempt_at = CASE WHEN s.attempts < max_attempts
                                   THEN clock_timestamp() + interval '30 seconds' * power(4, s.attempts - 1) END,
            fetch_error = left(coalesce(error, 'unknown error'), 2000),
            sqlstate = _backfill_failed.sqlstate, updated_at = now()
        WHERE s.user_id = _backfill_failed.user_id AND s.workout_id = _backfill_failed.workout_id
          AND s.fetch_status = 'running'
        RETURNING s.fetch_status INTO status;
    ELSE
        RAISE EXCEPTION 'unknown backfill job kind %', coalesce(quote_literal(kind), 'NULL') USING ERRCODE = '22023';
    END IF;
    RETURN status;
END
$$;
COMMENT ON FUNCTION junction._backfill_failed(text, uuid, text, text, timestamptz, timestamptz, uuid, text, text) IS
  'record a failed backfill run: pending again after a backoff while attempts < 3, else failed with the error and SQLSTATE';

CREATE FUNCTION junction._backfill_failed(job junction.backfill_job, error text, sqlstate text)
RETURNS text
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT junction._backfill_failed(job.kind, job.user_id, job.provider, job.resource,
                                       job.start_date, job.end_date, job.workout_id, error, sqlstate) $$;
COMMENT ON FUNCTION junction._backfill_failed(junction.backfill_job, text, text) IS
  'junction._backfill_failed for a claimed job row';

-- At worker start nothing can be running: a job left running was interrupted (crash, restart).
CREATE FUNCTION junction._backfill_reset_running()
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    a integer;
    b integer;
BEGIN
    UPDATE junction.backfills SET fetch_status = 'pending', updated_at = now() WHERE fetch_status = 'running';
    GET DIAGNOSTICS a = ROW_COUNT;
    UPDATE junction.workout_streams SET fetch_status = 'pending', updated_at = now() WHERE fetch_status = 'running';
    GET DIAGNOSTICS b = ROW_COUNT;
    RETURN a + b;
END
$$;
COMMENT ON FUNCTION junction._backfill_reset_running() IS
  'put running backfill jobs back to pending (the worker calls it at start); returns how many';

CREATE FUNCTION junction_backfill_now(max_jobs integer DEFAULT 10)
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    job   junction.backfill_job;
    ran   integer := 0;
    msg   text;
    state text;
BEGIN
    IF max_jobs IS NULL OR max_jobs < 0 THEN
        RAISE EXCEPTION 'max_jobs must be >= 0' USING ERRCODE = '22023';
    END IF;
    IF NOT junction._api_key_configured(false) THEN
        RAISE EXCEPTION 'junction.api_key is not set' USING ERRCODE = '28000',
            HINT = 'As a superuser, put the key in a file only the database user can read, then: ALTER SYSTEM SET junction.api_key_file = ''/path/to/file''; SELECT pg_reload_conf();';
    END IF;
    WHILE ran < max_jobs LOOP
        SELECT * INTO job FROM junction._backfill_claim();
        EXIT WHEN NOT FOUND;
        BEGIN
            PERFORM junction._backfill_run(job);
        EXCEPTION WHEN OTHERS THEN
            -- the run's partial work is rolled back; the claim (attempt count) stays
            GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, state = RETURNED_SQLSTATE;
            PERFORM junction._backfill_failed(job, msg, state);
        END;
        ran := ran + 1;
    END LOOP;
    RETURN ran;
END
$$;
COMMENT ON FUNCTION junction_backfill_now(integer) IS
  'run up to max_jobs due backfill jobs now, in this transaction (what the backfill worker does); returns jobs run';
-- pg_cron: the nightly resync as one scheduled job (minute granularity; see the README).

CREATE FUNCTION junction_schedule_sync(schedule text DEFAULT '0 3 * * *', days integer DEFAULT 2,
                                       job_name text DEFAULT 'junction-nightly-sync')
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    command text;
    job_id  bigint;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_extension WHERE extname = 'pg_cron') THEN
        RAISE EXCEPTION 'pg_cron is not installed in this database' USING ERRCODE = '0A000',
            HINT = 'Add pg_cron to shared_preload_libraries, set cron.database_name to this database, restart, then CREATE EXTENSION pg_cron;';
    END IF;
    IF days IS NULL OR days < 1 THEN
        RAISE EXCEPTION 'days must be at least 1' USING ERRCODE = '22023';
    END IF;
    IF coalesce(job_name, '') = '' OR coalesce(schedule, '') = '' THEN
        RAISE EXCEPTION 'schedule and job_name must not be empty' USING ERRCODE = '22023';
    END IF;
    command := format('SELECT count(*) FROM %I.junction_sync_all(%s)', '@extschema@', days);
    IF current_database() = current_setting('cron.database_name', true) THEN
        EXECUTE 'SELECT cron.schedule($1, $2, $3)' INTO job_id USING job_name, schedule, command;
    ELSE
        EXECUTE 'SELECT cron.schedule_in_database($1, $2, $3, $4)' INTO job_id
            USING job_name, schedule, command, current_database();
    END IF;
    RETURN job_id;
END
$$;
COMMENT ON FUNCTION junction_schedule_sync(text, integer, text) IS
  'create or replace the pg_cron job that runs junction_sync_all(days) on schedule; returns the cron job id';

CREATE FUNCTION junction_unschedule_sync(job_name text DEFAULT 'junction-nightly-sync')
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    done boolean;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_extension WHERE extname = 'pg_cron') THEN
        RAISE EXCEPTION 'pg_cron is not installed in this database' USING ERRCODE = '0A000';
    END IF;
    EXECUTE 'SELECT cron.unschedule($1)' INTO done USING job_name;
    RETURN done;
END
$$;
COMMENT ON FUNCTION junction_unschedule_sync(text) IS 'remove the pg_cron job junction_schedule_sync created';
-- Webhook endpoints through the Junction Management API (create, list, update, delete,
-- headers, signing secret, rotation), and junction.webhook_secrets kept in step with the
-- endpoints' signing secrets so that a rotation never loses a delivery.
--
-- Results are rows: a webhook is a junction.webhook_endpoint, headers are
-- (name, value, sensitive) rows, a secret sync is one (webhook_id, secret_added,
-- previous_secrets, previous_expire_at) row.  Secrets are never printed in notices or
-- errors.  Everything here is for superusers and for members of junction_admin.

-- A webhook endpoint as the Management API describes it.
CREATE TYPE junction.webhook_endpoint AS (
    id           text,
    url          text,
    description  text,
    filter_types text[],        -- NULL: every event type
    disabled     boolean,
    rate_limit   integer,       -- NULL: no limit
    created_at   timestamptz,
    updated_at   timestamptz
);
COMMENT ON TYPE junction.webhook_endpoint IS
  'a Junction webhook endpoint (Management API Webhook object)';

-- The role that may manage webhooks without being a superuser.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'junction_admin') THEN
        CREATE ROLE junction_admin NOLOGIN;
    END IF;
END
$$;

-- One Management API call; raises on a non-2xx answer like junction_api() does on the data
-- API, through the same C code (junction._raise_http_error).  `redact` lists strings (secrets
-- sent in the request) never to repeat in the error; the keys, the stored signing secrets and
-- anything shaped like a whsec_ secret are always redacted.
CREATE FUNCTION junction._management(method text, path text, query jsonb DEFAULT NULL,
                                     body jsonb DEFAULT NULL, redact text[] DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    m      text := upper(method);
    st     integer;
    res    jsonb;
BEGIN
    -- (the C client would send a GET with a body as a POST)
    IF m = 'GET' AND body IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'a GET request has no body; pass query instead';
    END IF;
    SELECT r.status, r.body INTO st, res FROM junction._api_request(true, m, path, query, body) r;
    IF st BETWEEN 200 AND 299 THEN
        RETURN res;
    END IF;
    PERFORM junction._raise_http_error(true, m, path, st, res, redact);
    RETURN NULL;  -- not reached
END
$$;
COMMENT ON FUNCTION junction._management(text, text, jsonb, jsonb, text[]) IS
  'one Management API request; the response body, or an error for a non-2xx answer';

-- A webhook id as a path segment (Svix endpoint ids and uids: letters, digits, _ - .).
CREATE FUNCTION junction._webhook_id(id text) RETURNS text
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF id IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22004', MESSAGE = 'webhook id must not be null';
    END IF;
    IF id !~ '^[A-Za-z0-9_.-]+$' OR length(id) > 256 OR id ~ '\.\.' OR id = '.' THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'invalid webhook id',
            HINT = 'A webhook id is the id Junction returns for the endpoint (ep_...): '
                   'letters, digits, "_", "-" and ".".';
    END IF;
    RETURN id;
END
$$;

-- /v1/org/{org_id}/team/{team_id}/{environment}/webhook: the team's webhook collection.
CREATE FUNCTION junction._webhooks_path()
RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    org  text := coalesce(current_setting('junction.org_id', true), '');
    team text := coalesce(current_setting('junction.team_id', true), '');
    env  text := coalesce(nullif(current_setting('junction.environment', true), ''), 'production');
    g    text;
    v    text;
BEGIN
    FOREACH g IN ARRAY ARRAY['junction.org_id', 'junction.team_id'] LOOP
        v := CASE g WHEN 'junction.org_id' THEN org ELSE team END;
        IF v = '' THEN
            RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = g || ' is not set',
                HINT = 'The Management API addresses webhooks by organisation and team. As a superuser: '
                       'ALTER SYSTEM SET junction.org_id = ''<org uuid>''; '
                       'ALTER SYSTEM SET junction.team_id = ''<team uuid>''; SELECT pg_reload_conf();';
        END IF;
        BEGIN
            PERFORM v::uuid;
        EXCEPTION WHEN invalid_text_representation THEN
            RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = g || ' is not a UUID',
                HINT = 'Junction organisation and team ids are UUIDs (Dashboard, Team settings).';
        END;
    END LOOP;
    RETURN format('/v1/org/%s/team/%s/%s/webhook', org::uuid, team::uuid, env);
END
$$;

-- .../webhook/{id}[suffix]
CREATE FUNCTION junction._webhook_path(id text, suffix text DEFAULT '')
RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $$ SELECT junction._webhooks_path() || '/' || junction._webhook_id(id) || coalesce(suffix, '') $$;

-- The Management API's Webhook object as a row.
CREATE FUNCTION junction._webhook_row(w jsonb) RETURNS junction.webhook_endpoint
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp
AS $$ SELECT jsonb_populate_record(NULL::junction.webhook_endpoint, w) $$;

-- A webhook's custom headers as rows; sensitive headers are named but their values withheld.
CREATE FUNCTION junction._webhook_headers(id text)
RETURNS TABLE (name text, value text, sensitive boolean)
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    h jsonb := junction._management('GET', junction._webhook_path(id, '/headers'));
BEGIN
    RETURN QUERY
    SELECT n.k, h -> 'headers' ->> n.k, coalesce(h -> 'sensitive' ? n.k, false)
      FROM (SELECT jsonb_object_keys(coalesce(h -> 'headers', '{}')) AS k
            UNION
            SELECT jsonb_array_elements_text(coalesce(h -> 'sensitive', '[]'))) n
     ORDER BY n.k;
END
$$;

-- Make junction.webhook_secrets hold the endpoint's current secret, active, beside its
-- previous ones; those stop verifying after `grace` (Svix signs with old and new for 24 h).
-- The caller holds the endpoint's lock (junction._webhook_lock).
CREATE FUNCTION junction._webhook_secret_sync(wid text, grace interval,
                                              OUT webhook_id text, OUT secret_added boolean,
                                              OUT previous_secrets integer,
                                              OUT previous_expire_at timestamptz)
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cur        text;
    was_active boolean;
BEGIN
    cur := junction._management('GET', junction._webhook_path(wid, '/secret')) ->> 'key';
    IF cur IS NULL OR cur = '' OR NOT junction._secret_is_valid(cur) THEN
        RAISE EXCEPTION USING ERRCODE = '38000',
            MESSAGE = 'junction Management API returned no usable signing secret for this webhook',
            HINT = 'Expected {"key": "whsec_..."} from GET .../webhook/{id}/secret.';
    END IF;
    SELECT s.expires_at IS NULL OR s.expires_at > now() INTO was_active
      FROM junction.webhook_secrets s WHERE s.secret = cur;
    INSERT INTO junction.webhook_secrets AS s (secret, description, webhook_id)
    VALUES (cur, 'Junction webhook ' || wid, wid)
    ON CONFLICT (secret) DO UPDATE
       SET expires_at = NULL, webhook_id = EXCLUDED.webhook_id,
           description = coalesce(s.description, EXCLUDED.description);
    -- previous secrets: keep verifying for the grace period, never longer than already set
    UPDATE junction.webhook_secrets s SET expires_at = now() + grace
     WHERE s.webhook_id = wid AND s.secret <> cur
       AND (s.expires_at IS NULL OR s.expires_at > now() + grace);
    SELECT count(*)::integer, max(s.expires_at) INTO previous_secrets, previous_expire_at
      FROM junction.webhook_secrets s
     WHERE s.webhook_id = wid AND s.secret <> cur AND s.expires_at > now();
    webhook_id := wid;
    secret_added := NOT coalesce(was_active, false);
END
$$;

-- Serialise secret changes per endpoint (concurrent syncs and rotations).
CREATE FUNCTION junction._webhook_lock(id text) RETURNS void
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$ SELECT pg_advisory_xact_lock(hashtextextended('junction.webhook_secret:' || id, 0)) $$;

CREATE FUNCTION junction._check_grace(grace interval) RETURNS interval
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF grace IS NULL OR grace < interval '0' THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'grace must be a non-negative interval',
            HINT = 'Svix signs with the old and the new secret for 24 hours after a rotation.';
    END IF;
    RETURN grace;
END
$$;

CREATE FUNCTION junction._check_new_secret(secret text, what text) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF secret IS NOT NULL AND NOT junction._secret_is_valid(secret) THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = what || ' is not a valid webhook signing secret',
            HINT = 'A signing secret is whsec_ followed by the base64 of 24 to 64 random bytes; '
                   'omit it to let Junction generate one.';
    END IF;
END
$$;


-- ---------------------------------------------------------------- user-facing functions

CREATE FUNCTION junction_webhooks(page_size integer DEFAULT NULL)
RETURNS SETOF junction.webhook_endpoint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p      text := junction._webhooks_path();
    page   jsonb;
    cur    text;
    seen   text[] := '{}'::text[];
BEGIN
    IF page_size IS NOT NULL AND page_size < 1 THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'page_size must be positive';
    END IF;
    LOOP
        page := junction._management('GET', p,
                    jsonb_strip_nulls(jsonb_build_object('limit', page_size, 'next_cursor', cur)));
        RETURN QUERY SELECT * FROM jsonb_populate_recordset(NULL::junction.webhook_endpoint,
                                                            coalesce(page -> 'data', '[]'));
        cur := nullif(page ->> 'next_cursor', '');
        EXIT WHEN cur IS NULL;
        IF cur = ANY (seen) THEN
            RAISE EXCEPTION USING ERRCODE = '38000',
                MESSAGE = 'junction Management API returned the same next_cursor twice';
        END IF;
        seen := seen || cur;
    END LOOP;
END
$$;
COMMENT ON FUNCTION junction_webhooks(integer) IS
  'every webhook endpoint of the team (junction.org_id, junction.team_id, junction.environment), all pages';

CREATE FUNCTION junction_webhook(id text)
RETURNS junction.webhook_endpoint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN junction._webhook_row(junction._management('GET', junction._webhook_path(id)));
END
$$;
COMMENT ON FUNCTION junction_webhook(text) IS 'one webhook endpoint';

CREATE FUNCTION junction_webhook_create(url text, filter_types text[] DEFAULT NULL,
                                        description text DEFAULT '',
                                        rate_limit integer DEFAULT NULL,
                                        disabled boolean DEFAULT false,
                                        secret text DEFAULT NULL)
RETURNS junction.webhook_endpoint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
-- a failing call is logged without its statement, which may hold the secret as a literal
SET log_min_error_statement = panic
AS $$
DECLARE
    b jsonb;
BEGIN
    IF url IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22004', MESSAGE = 'url must not be null';
    END IF;
    PERFORM junction._check_new_secret(secret, 'secret');
    b := jsonb_build_object('url', url, 'description', coalesce(description, ''),
                            'disabled', coalesce(disabled, false));
    IF rate_limit IS NOT NULL THEN
        b := b || jsonb_build_object('rate_limit', rate_limit);
    END IF;
    IF cardinality(filter_types) > 0 THEN
        b := b || jsonb_build_object('filter_types', to_jsonb(filter_types));
    END IF;
    IF secret IS NOT NULL THEN
        b := b || jsonb_build_object('secret', secret);
    END IF;
    RETURN junction._webhook_row(
        junction._management('POST', junction._webhooks_path(), NULL, b, ARRAY[secret]));
END
$$;
COMMENT ON FUNCTION junction_webhook_create(text, text[], text, integer, boolean, text) IS
  'create a webhook endpoint; filter_types NULL or empty: every event type; secret NULL: Junction generates one';

CREATE FUNCTION junction_webhook_update(id text, url text DEFAULT NULL,
                                        description text DEFAULT NULL,
                                        filter_types text[] DEFAULT NULL,
                                        rate_limit integer DEFAULT NULL,
                                        disabled boolean DEFAULT NULL,
                                        clear text[] DEFAULT NULL)
RETURNS junction.webhook_endpoint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p text := junction._webhook_path(id);
    b jsonb := '{}'::jsonb;
    c text;
BEGIN
    FOREACH c IN ARRAY coalesce(clear, '{}'::text[]) LOOP
        IF c IS NULL OR c NOT IN ('rate_limit', 'filter_types') THEN
            RAISE EXCEPTION USING ERRCODE = '22023',
                MESSAGE = format('cannot clear %s', coalesce(quote_literal(c), 'NULL')),
                HINT = 'clear may name rate_limit (no limit) and filter_types (every event type).';
        END IF;
        b := b || jsonb_build_object(c, NULL);
    END LOOP;
    IF (rate_limit IS NOT NULL AND b ? 'rate_limit')
       OR (filter_types IS NOT NULL AND b ? 'filter_types') THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'a field cannot be both set and cleared';
    END IF;
    IF url IS NOT NULL THEN
        b := b || jsonb_build_object('url', url);
    END IF;
    IF description IS NOT NULL THEN
        b := b || jsonb_build_object('description', description);
    END IF;
    IF filter_types IS NOT NULL THEN
        b := b || jsonb_build_object('filter_types',
                                     CASE WHEN cardinality(filter_types) > 0 THEN to_jsonb(filter_types)
                                          ELSE 'null'::jsonb END);
    END IF;
    IF rate_limit IS NOT NULL THEN
        b := b || jsonb_build_object('rate_limit', rate_limit);
    END IF;
    IF disabled IS NOT NULL THEN
        b := b || jsonb_build_object('disabled', disabled);
    END IF;
    IF b = '{}' THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'nothing to update',
            HINT = 'Give at least one of url, description, filter_types, rate_limit, disabled, clear.';
    END IF;
    RETURN junction._webhook_row(junction._management('PATCH', p, NULL, b));
END
$$;
COMMENT ON FUNCTION junction_webhook_update(text, text, text, text[], integer, boolean, text[]) IS
  'change the given fields of a webhook endpoint (only those are sent); filter_types => ''{}'' or clear => ''{filter_types}'': every event type; clear => ''{rate_limit}'': no limit';

CREATE FUNCTION junction_webhook_delete(id text, grace interval DEFAULT '24 hours')
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM junction._check_grace(grace);
    PERFORM junction._webhook_lock(junction._webhook_id(id));
    PERFORM junction._management('DELETE', junction._webhook_path(id));
    -- its secrets only need to verify what is already on its way or waiting in the inbox
    UPDATE junction.webhook_secrets s SET expires_at = now() + grace
     WHERE s.webhook_id = id AND (s.expires_at IS NULL OR s.expires_at > now() + grace);
END
$$;
COMMENT ON FUNCTION junction_webhook_delete(text, interval) IS
  'delete a webhook endpoint; its secrets in junction.webhook_secrets stop verifying after grace';

CREATE FUNCTION junction_webhook_headers(id text)
RETURNS TABLE (name text, value text, sensitive boolean)
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM junction._webhook_headers(id) $$;
COMMENT ON FUNCTION junction_webhook_headers(text) IS
  'the custom headers Junction sends to a webhook endpoint (values of sensitive ones withheld)';

CREATE FUNCTION junction_webhook_set_headers(id text, headers jsonb)
RETURNS TABLE (name text, value text, sensitive boolean)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
-- a failing call is logged without its statement, which may hold the secret as a literal
SET log_min_error_statement = panic
AS $$
BEGIN
    IF headers IS NULL OR jsonb_typeof(headers) <> 'object'
       OR EXISTS (SELECT FROM jsonb_each(headers) e WHERE jsonb_typeof(e.value) <> 'string') THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'headers must be a JSON object of strings',
            HINT = 'For example ''{"X-Receiver-Token": "..."}''; ''{}'' removes every header.';
    END IF;
    PERFORM junction._management('PUT', junction._webhook_path(id, '/headers'), NULL,
                                 jsonb_build_object('headers', headers),
                                 ARRAY(SELECT e.value FROM jsonb_each_text(headers) e
                                        WHERE length(e.value) >= 4));
    RETURN QUERY SELECT * FROM junction._webhook_headers(id);
END
$$;
COMMENT ON FUNCTION junction_webhook_set_headers(text, jsonb) IS
  'replace the custom headers of a webhook endpoint; returns them as now stored';

CREATE FUNCTION junction_webhook_secret(id text)
RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN junction._management('GET', junction._webhook_path(id, '/secret')) ->> 'key';
END
$$;
COMMENT ON FUNCTION junction_webhook_secret(text) IS
  'the current signing secret (whsec_...) of a webhook endpoint';

CREATE FUNCTION junction_webhook_secret_sync(id text, grace interval DEFAULT '24 hours')
RETURNS TABLE (webhook_id text, secret_added boolean, previous_secrets integer,
               previous_expire_at timestamptz)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM junction._check_grace(grace);
    PERFORM junction._webhook_lock(junction._webhook_id(id));
    RETURN QUERY SELECT * FROM junction._webhook_secret_sync(id, grace);
END
$$;
COMMENT ON FUNCTION junction_webhook_secret_sync(text, interval) IS
  'store the endpoint''s current signing secret in junction.webhook_secrets (active) beside its previous ones, which keep verifying for grace';

CREATE FUNCTION junction_webhook_secret_rotate(id text, new_secret text DEFAULT NULL,
                                               grace interval DEFAULT '24 hours')
RETURNS TABLE (webhook_id text, secret_added boolean, previous_secrets integer,
               previous_expire_at timestamptz)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
-- a failing call is logged without its statement, which may hold the secret as a literal
SET log_min_error_statement = panic
AS $$
#variable_conflict use_column
DECLARE
    p   text := junction._webhook_path(id);
    old text;
    r   record;
BEGIN
    PERFORM junction._check_grace(grace);
    PERFORM junction._check_new_secret(new_secret, 'new_secret');
    PERFORM junction._webhook_lock(id);
    -- adopt the secret being replaced, so it keeps verifying through the grace period
    -- even if it was added by hand or never synced
    old := junction._management('GET', p || '/secret') ->> 'key';
    IF old IS NOT NULL AND old <> '' AND junction._secret_is_valid(old) THEN
        INSERT INTO junction.webhook_secrets AS s (secret, description, webhook_id)
        VALUES (old, 'Junction webhook ' || id, id)
        ON CONFLICT (secret) DO UPDATE
           SET expires_at = NULL, webhook_id = EXCLUDED.webhook_id,
               description = coalesce(s.description, EXCLUDED.description);
    END IF;
    PERFORM junction._management('POST', p || '/secret/rotate', NULL,
                                 CASE WHEN new_secret IS NULL THEN '{}'::jsonb
                                      ELSE jsonb_build_object('key', new_secret) END,
                                 ARRAY[new_secret, old]);
    SELECT * INTO r FROM junction._webhook_secret_sync(id, grace);
    IF NOT r.secret_added THEN
        RAISE WARNING 'Junction still reports the previous signing secret of webhook %', id
            USING HINT = 'Call junction_webhook_secret_sync() again in a moment.';
    END IF;
    RETURN QUERY SELECT r.webhook_id, r.secret_added, r.previous_secrets, r.previous_expire_at;
END
$$;
COMMENT ON FUNCTION junction_webhook_secret_rotate(text, text, interval) IS
  'rotate the endpoint''s signing secret at Junction (new_secret NULL: Junction generates it), then sync: old and new both verify for grace';

CREATE FUNCTION junction_webhook_secrets(id text DEFAULT NULL)
RETURNS TABLE (webhook_id text, fingerprint text, description text, created_at timestamptz,
               expires_at timestamptz, active boolean)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT s.webhook_id, left(encode(sha256(convert_to(s.secret, 'UTF8')), 'hex'), 12),
           s.description, s.created_at, s.expires_at,
           s.expires_at IS NULL OR s.expires_at > now()
      FROM junction.webhook_secrets s
     WHERE $1 IS NULL OR s.webhook_id = $1
     ORDER BY s.webhook_id NULLS LAST, s.created_at, 2
$$;
COMMENT ON FUNCTION junction_webhook_secrets(text) IS
  'the stored signing secrets (of one endpoint, or all) without the secrets: fingerprint = first 12 hex of sha256';

CREATE FUNCTION junction_webhook_secrets_retire(before timestamptz DEFAULT now(), id text DEFAULT NULL)
RETURNS integer
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    WITH gone AS (
        DELETE FROM junction.webhook_secrets s
         WHERE s.expires_at <= $1 AND ($2 IS NULL OR s.webhook_id = $2)
        RETURNING 1)
    SELECT count(*)::integer FROM gone
$$;
COMMENT ON FUNCTION junction_webhook_secrets_retire(timestamptz, text) IS
  'delete the signing secrets (of one endpoint, or all) that expire at or before `before`; returns how many';


-- ---------------------------------------------------------------- privileges
-- Superusers, and roles granted junction_admin.  The functions run as the extension's owner,
-- so junction_admin needs no access to junction.webhook_secrets or to the key GUCs.
GRANT USAGE ON SCHEMA junction TO junction_admin;
GRANT EXECUTE ON FUNCTION
    junction_webhooks(integer),
    junction_webhook(text),
    junction_webhook_create(text, text[], text, integer, boolean, text),
    junction_webhook_update(text, text, text, text[], integer, boolean, text[]),
    junction_webhook_delete(text, interval),
    junction_webhook_headers(text),
    junction_webhook_set_headers(text, jsonb),
    junction_webhook_secret(text),
    junction_webhook_secret_sync(text, interval),
    junction_webhook_secret_rotate(text, text, interval),
    junction_webhook_secrets(text),
    junction_webhook_secrets_retire(timestamptz, text)
  TO junction_admin;
-- Privileges, one policy for the whole extension (it runs last, so it covers every object above):
--   * no table or view of schema junction is readable by PUBLIC (grant SELECT to your
--     reporting roles explicitly);
--   * PUBLIC may execute the three pure functions (verify, is_valid, sign: functions of their
--     arguments alone) and nothing else; every other function is for superusers, and for the
--     roles the owning files grant explicitly (junction_receiver in 20_inbox.sql, junction_admin in
--     70_webhooks.sql).
REVOKE ALL ON ALL TABLES IN SCHEMA junction FROM PUBLIC;
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN
        SELECT p.oid::regprocedure
        FROM pg_catalog.pg_depend AS d
        JOIN pg_catalog.pg_proc AS p ON p.oid = d.objid
        WHERE d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND d.deptype = 'e'
          AND d.refobjid = (SELECT e.oid FROM pg_catalog.pg_extension AS e WHERE e.extname = 'junction')
          AND p.proname NOT IN ('junction_verify_webhook', 'junction_webhook_is_valid', 'junction_sign_webhook')
    LOOP
        EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
    END LOOP;
END
$$;
