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
    parts_field      text CONSTRAINT resources_parts_field_check CHECK (parts_field IS NULL OR kind = 'summary'),
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
COMMENT ON COLUMN junction.resources.parts_field IS 'summaries: a map of parts (name -> part) that carry the same nested fields; a nested column whose top-level object is absent or null is the sum over the parts (meal: data, its foods)';
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

-- Junction sends a meal's nutrition per food (data.data.<food>.energy / .macros); the meal's own
-- energy and macros, when present, are its totals, else the foods' sums are.
UPDATE junction.resources SET parts_field = 'data' WHERE name = 'meal';
UPDATE junction.resources SET builtin = true;

-- ---------------------------------------------------------------------------------------------
-- Events: one row per accepted message, typed or not.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE junction.events (
    svix_id        text NOT NULL CHECK (length(svix_id) BETWEEN 1 AND 255),
    inbox_id       bigint NOT NULL,
    event_type     text NOT NULL CHECK (length(event_type) BETWEEN 1 AND 255),
    user_id        uuid NOT NULL,
    client_user_id text CHECK (length(client_user_id) <= 1024),
    team_id        uuid,
    provider       text CHECK (length(provider) <= 255),
    resource       text CHECK (length(resource) <= 255),
    received_at    timestamptz NOT NULL,
    payload        jsonb NOT NULL,
    -- Keyed by user first, as every per-user table (a distributed table's keys must hold its
    -- distribution column). A redelivery carries the same body, hence the same user and the same
    -- key: it stays a no-op. Every event names a user (else it is quarantined); events stored by
    -- 0.2.0 without one were given the nil uuid by the upgrade.
    CONSTRAINT events_pkey PRIMARY KEY (user_id, svix_id)
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
    cursor       text,
    pages_done   integer NOT NULL DEFAULT 0,
    fast         boolean,
    started_at   timestamptz,
    last_page_at timestamptz,
    claimed_by   integer,
    run_rows     bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, provider, resource)
);
COMMENT ON TABLE junction.backfills IS
  'historical pulls Junction completed (historical.data.*) and the state of our follow-up fetch of that range';
COMMENT ON COLUMN junction.backfills.completed_at IS 'received_at of the latest historical.data.<resource>.created';
COMMENT ON COLUMN junction.backfills.fetch_status IS 'our fetch of [start_date, end_date]: pending until the API loader changes it; a newer completion resets it to pending';
COMMENT ON COLUMN junction.backfills.next_attempt_at IS 'a failed fetch is retried from this time on (null: now)';
COMMENT ON COLUMN junction.backfills.sqlstate IS 'SQLSTATE of the last failed fetch';
COMMENT ON COLUMN junction.backfills.cursor IS 'checkpoint: the next_cursor of the last page committed (null: the fetch starts from the first page); a crash, restart or failure resumes here';
COMMENT ON COLUMN junction.backfills.pages_done IS 'checkpoint: pages of [start_date, end_date] committed so far (rows_loaded counts their rows)';
COMMENT ON COLUMN junction.backfills.fast IS 'first-backfill fast path (plain INSERTs), decided at the first page: the user had no sample of the resource near the range';
COMMENT ON COLUMN junction.backfills.started_at IS 'when the current (or last) run claimed the job';
COMMENT ON COLUMN junction.backfills.last_page_at IS 'when the last page was committed';
COMMENT ON COLUMN junction.backfills.claimed_by IS 'pid of the backend running the job (a running job whose backend is gone is resumed)';
COMMENT ON COLUMN junction.backfills.run_rows IS 'rows the current (or last) run loaded since it claimed the job (rows_loaded counts every run since the job was queued)';
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
  'meals (daily.data.meal.*), one row per id; energy_kcal = energy.value, grams from macros.* (fats_total = macros.fats.total); without a top-level energy or macros, the sums over the foods in data.data';
CREATE INDEX meals_calendar_date ON junction.meals (user_id, calendar_date);

-- The foods of each meal, as Junction sends them (data.data: food name -> {energy, macros, micros}).
CREATE VIEW junction.meal_foods AS
SELECT m.user_id, m.id AS meal_id, f.key AS food, m.provider, m.source_type, m."timestamp",
       m.calendar_date,
       (f.value #>> '{energy,value}')::double precision AS energy_kcal,
       (f.value #>> '{macros,carbs}')::double precision AS carbs,
       (f.value #>> '{macros,protein}')::double precision AS protein,
       (f.value #>> '{macros,fats,total}')::double precision AS fats_total,
       (f.value #>> '{macros,alcohol}')::double precision AS alcohol,
       (f.value #>> '{macros,water}')::double precision AS water,
       (f.value #>> '{macros,fibre}')::double precision AS fibre,
       (f.value #>> '{macros,sugar}')::double precision AS sugar,
       (f.value #>> '{macros,cholesterol}')::double precision AS cholesterol,
       f.value -> 'micros' AS micros,
       f.value AS data
FROM junction.meals AS m
CROSS JOIN LATERAL jsonb_each(CASE jsonb_typeof(m.data -> 'data') WHEN 'object' THEN m.data -> 'data' END) AS f;
COMMENT ON VIEW junction.meal_foods IS
  'one row per food of each meal (meals.data -> data): energy_kcal and grams as in junction.meals, micros and the whole food object';

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
    claimed_by   integer,
    PRIMARY KEY (user_id, workout_id)
);
COMMENT ON TABLE junction.workout_streams IS
  'workout streams (daily.data.workout_stream.*): notification now, the stream (parallel arrays) in data once fetched';
COMMENT ON COLUMN junction.workout_streams.id IS 'same as workout_id: a stream is identified by its workout (joins workouts.id)';
COMMENT ON COLUMN junction.workout_streams.fetch_status IS 'pending until the API loader fetches the stream (running, done, failed); unavailable after daily.data.workout_stream.unavailable (never fetched); a newer notification sets it again (pending, or unavailable)';
COMMENT ON COLUMN junction.workout_streams.next_attempt_at IS 'a failed fetch is retried from this time on (null: now)';
COMMENT ON COLUMN junction.workout_streams.sqlstate IS 'SQLSTATE of the last failed fetch';
COMMENT ON COLUMN junction.workout_streams.claimed_by IS 'pid of the backend fetching the stream (a running fetch whose backend is gone is retried)';
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
  'sample start (start, else timestamp). Floating-time providers (abbott_libreview, freestyle_libre): the wall clock as sent, read as UTC (any offset suffix ignored)';
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
