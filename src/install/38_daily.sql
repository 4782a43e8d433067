-- ---------------------------------------------------------------------------------------------
-- Consolidation: one number per user, local day and metric (junction.daily), chosen among the
-- candidates (one per provider and source type) by the team's source priorities, else by a
-- documented default rule. A day is always recomputed from its candidates in the typed tables,
-- never patched, so the result does not depend on the order deliveries arrive in. The typing
-- upserts (webhook drain, junction_sync, backfill: junction._upsert_summaries and
-- junction._upsert_samples) recompute the hours and days they touched, or queue them for the
-- inbox worker (junction.daily_defer); junction_rebuild_daily() recomputes everything (after a
-- change of the priorities or of the metrics).
-- ---------------------------------------------------------------------------------------------

-- The team's source priorities: Junction's (junction_sync_source_priorities()) and the team's own.
CREATE TABLE junction.source_priorities (
    resource    text NOT NULL CONSTRAINT source_priorities_resource_check CHECK (length(resource) BETWEEN 1 AND 255),
    provider    text NOT NULL CONSTRAINT source_priorities_provider_check CHECK (length(provider) BETWEEN 1 AND 255),
    source_type text NOT NULL DEFAULT '' CONSTRAINT source_priorities_source_type_check CHECK (length(source_type) <= 255),
    priority    integer NOT NULL,
    origin      text NOT NULL DEFAULT 'team' CONSTRAINT source_priorities_origin_check CHECK (origin IN ('junction', 'team')),
    data        jsonb,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT source_priorities_pkey PRIMARY KEY (resource, provider, source_type, origin)
);
COMMENT ON TABLE junction.source_priorities IS
  'source priorities for junction.daily: lower priority wins; origin junction = GET /v2/team/source/priorities (junction_sync_source_priorities), team = your overrides';
COMMENT ON COLUMN junction.source_priorities.resource IS
  'Junction''s data_type (activity, sleep, body, workouts, timeseries = every timeseries resource) or one resource (steps, heartrate, ...)';
COMMENT ON COLUMN junction.source_priorities.source_type IS 'a source type (watch, phone, ring, ...), or empty = any';
COMMENT ON COLUMN junction.source_priorities.priority IS 'lower wins; the most specific row applies (resource, then source type), a team row before Junction''s';
COMMENT ON COLUMN junction.source_priorities.origin IS 'junction: replaced by junction_sync_source_priorities(); team: yours, never touched by the extension';
COMMENT ON COLUMN junction.source_priorities.data IS 'the object Junction sent (origin junction)';

-- The metrics: which typed column (or sample value) of which resource feeds which metric, and how
-- a day of one candidate (provider, source type) is reduced to one number.
CREATE TABLE junction.daily_metrics (
    metric    text NOT NULL CONSTRAINT daily_metrics_metric_check CHECK (metric ~ '^[a-z][a-z0-9_]{0,62}$'),
    resource  text NOT NULL CONSTRAINT daily_metrics_resource_check CHECK (length(resource) BETWEEN 1 AND 64),
    value_sql text NOT NULL,
    aggregate text NOT NULL CONSTRAINT daily_metrics_aggregate_check CHECK (aggregate IN ('sum', 'avg', 'min', 'max', 'count', 'pick')),
    order_sql text,
    unit      text,
    rank      integer NOT NULL DEFAULT 1,
    builtin   boolean NOT NULL DEFAULT false,
    part      text NOT NULL DEFAULT ''
              CONSTRAINT daily_metrics_part_check CHECK (part ~ '^(type=[^\n]{0,255}|extra\.[a-z_][a-z0-9_]{0,62})?$'),
    CONSTRAINT daily_metrics_pick_check CHECK ((aggregate = 'pick') = (order_sql IS NOT NULL)),
    CONSTRAINT daily_metrics_pkey PRIMARY KEY (metric, resource)
);
COMMENT ON TABLE junction.daily_metrics IS
  'the metrics of junction.daily: one row per metric and resource feeding it (superusers only: value_sql and order_sql are SQL)';
COMMENT ON COLUMN junction.daily_metrics.value_sql IS
  'summaries: SQL expression over the typed row t; timeseries: SQL expression over t.value, the day''s reduced number (t.value as is, or e.g. t.value * 60 for another unit)';
COMMENT ON COLUMN junction.daily_metrics.aggregate IS
  'how one candidate''s rows of a day become one number: sum, avg, min, max, count, or pick (the first row in order_sql)';
COMMENT ON COLUMN junction.daily_metrics.order_sql IS 'pick: ORDER BY list over t (deterministic, ends in a key); timeseries: the latest sample, whatever it says';
COMMENT ON COLUMN junction.daily_metrics.rank IS
  'among the resources of one metric, for the same source: lower first (a provider''s own daily summary before the sum of its samples)';
COMMENT ON COLUMN junction.daily_metrics.part IS
  'timeseries: which number of a sample the metric reduces: empty = its value (any type); type=<t> = the value of the samples of type t; extra.<field> = a numeric field of extra (blood_pressure''s systolic, diastolic)';
COMMENT ON COLUMN junction.daily_metrics.builtin IS 'installed by the extension; rows you add (builtin = false) are kept by pg_dump';

INSERT INTO junction.daily_metrics (metric, resource, value_sql, aggregate, order_sql, unit, rank)
SELECT m.metric, m.resource, m.value_sql, m.aggregate,
       CASE m.aggregate WHEN 'pick' THEN coalesce(m.order_sql,
         CASE WHEN m.resource IN ('activity', 'sleep', 'body', 'workouts')
              THEN 'coalesce(t.updated_at, ''-infinity'') DESC, t.received_seq DESC, t.id DESC'
              ELSE 't.time DESC, t.type DESC, t.workout_id DESC' END) END,
       m.unit, m.rank
FROM (VALUES
    -- activity: one summary per day and source; the newest version's number
    ('steps',              'activity', 't.steps',                  'pick', NULL, 'count', 1),
    ('calories_active',    'activity', 't.calories_active',        'pick', NULL, 'kcal',  1),
    ('calories_total',     'activity', 't.calories_total',         'pick', NULL, 'kcal',  1),
    ('distance',           'activity', 't.distance',               'pick', NULL, 'm',     1),
    ('floors_climbed',     'activity', 't.floors_climbed',         'pick', NULL, 'count', 1),
    ('resting_heart_rate', 'activity', 't.heart_rate_resting_bpm', 'pick', NULL, 'bpm',   1),
    -- sleep: durations add up over the day's sessions (a night and a nap); the rates and scores
    -- are the longest session's
    ('sleep_total',        'sleep', 't.total',      'sum', NULL, 's', 1),
    ('sleep_deep',         'sleep', 't.deep',       'sum', NULL, 's', 1),
    ('sleep_rem',          'sleep', 't.rem',        'sum', NULL, 's', 1),
    ('sleep_light',        'sleep', 't.light',      'sum', NULL, 's', 1),
    ('sleep_awake',        'sleep', 't.awake',      'sum', NULL, 's', 1),
    ('sleep_efficiency',   'sleep', 't.efficiency', 'pick', 't.total DESC NULLS LAST, t.bedtime_start DESC, t.id DESC', '%', 1),
    ('sleep_score',        'sleep', 't.score',      'pick', 't.total DESC NULLS LAST, t.bedtime_start DESC, t.id DESC', 'score', 1),
    ('hrv_average',        'sleep', 't.average_hrv', 'pick', 't.total DESC NULLS LAST, t.bedtime_start DESC, t.id DESC', 'ms', 1),
    ('respiratory_rate',   'sleep', 't.respiratory_rate', 'pick', 't.total DESC NULLS LAST, t.bedtime_start DESC, t.id DESC', 'bpm', 1),
    ('resting_heart_rate', 'sleep', 't.hr_resting', 'pick', 't.total DESC NULLS LAST, t.bedtime_start DESC, t.id DESC', 'bpm', 2),
    -- body: the newest measurement of the day
    ('weight',             'body', 't.weight', 'pick', NULL, 'kg', 1),
    ('body_fat',           'body', 't.fat',    'pick', NULL, '%',  1),
    -- workouts: how many, and how long in all
    ('workout_count',      'workouts', 't.id IS NOT NULL', 'count', NULL, 'count', 1),
    ('workout_duration',   'workouts', 'extract(epoch FROM t.time_end - t.time_start)', 'sum', NULL, 's', 1),
    -- timeseries: cumulative ones add up, levels average, body measurements take the latest
    ('steps',              'steps',              't.value', 'sum', NULL, 'count', 2),
    ('calories_active',    'calories_active',    't.value', 'sum', NULL, 'kcal',  2),
    ('calories_basal',     'calories_basal',     't.value', 'sum', NULL, 'kcal',  2),
    ('distance',           'distance',           't.value', 'sum', NULL, 'm',     2),
    ('floors_climbed',     'floors_climbed',     't.value', 'sum', NULL, 'count', 2),
    ('hrv_average',        'hrv',                't.value', 'avg', NULL, 'ms',    2),
    ('respiratory_rate',   'respiratory_rate',   't.value', 'avg', NULL, 'bpm',   2),
    ('weight',             'weight',             't.value', 'pick', NULL, 'kg',   2),
    ('body_fat',           'fat',                't.value', 'pick', NULL, '%',    2),
    ('heart_rate_average', 'heartrate',          't.value', 'avg', NULL, 'bpm',   1),
    ('heart_rate_max',     'heartrate',          't.value', 'max', NULL, 'bpm',   1),
    ('heart_rate_min',     'heartrate',          't.value', 'min', NULL, 'bpm',   1),
    ('glucose_average',    'glucose',            't.value', 'avg', NULL, 'mmol/L', 1),
    ('blood_oxygen_average', 'blood_oxygen',     't.value', 'avg', NULL, '%',     1),
    ('stress_level_average', 'stress_level',     't.value', 'avg', NULL, '%',     1),
    ('body_temperature',   'body_temperature',   't.value', 'avg', NULL, '°C',    1),
    ('body_temperature_delta', 'body_temperature_delta', 't.value', 'avg', NULL, '°C', 1),
    ('vo2_max',            'vo2_max',            't.value', 'pick', NULL, 'mL/kg/min', 1),
    ('water',              'water',              't.value', 'sum', NULL, 'mL',    1),
    ('caffeine',           'caffeine',           't.value', 'sum', NULL, 'g',     1),
    ('carbohydrates',      'carbohydrates',      't.value', 'sum', NULL, 'g',     1),
    ('mindfulness_minutes', 'mindfulness_minutes', 't.value', 'sum', NULL, 'min', 1),
    ('daylight_exposure',  'daylight_exposure',  't.value', 'sum', NULL, 'min',   1),
    ('stand_duration',     'stand_duration',     't.value', 'sum', NULL, 'min',   1),
    ('wheelchair_push',    'wheelchair_push',    't.value', 'sum', NULL, 'count', 1),
    ('insulin_injection',  'insulin_injection',  't.value', 'sum', NULL, 'unit',  1),
    ('handwashing',        'handwashing',        't.value', 'sum', NULL, 'count', 1),
    ('inhaler_usage',      'inhaler_usage',      't.value', 'sum', NULL, 'count', 1),
    ('fall',               'fall',               't.value', 'sum', NULL, 'count', 1),
    ('heart_rate_alert',   'heart_rate_alert',   't.value', 'sum', NULL, 'count', 1),
    ('sleep_apnea_alert',  'sleep_apnea_alert',  't.value', 'sum', NULL, 'count', 1),
    ('sleep_breathing_disturbance', 'sleep_breathing_disturbance', 't.value', 'sum', NULL, 'count', 1),
    ('workout_distance',   'workout_distance',   't.value', 'sum', NULL, 'm',     1),
    ('workout_swimming_stroke', 'workout_swimming_stroke', 't.value', 'sum', NULL, 'count', 1),
    ('afib_burden',        'afib_burden',        't.value', 'avg', NULL, '%',     1),
    ('uv_exposure',        'uv_exposure',        't.value', 'avg', NULL, 'index', 1),
    ('basal_body_temperature', 'basal_body_temperature', 't.value', 'avg', NULL, '°C', 1),
    ('heart_rate_recovery_one_minute', 'heart_rate_recovery_one_minute', 't.value', 'avg', NULL, 'count', 1),
    ('body_mass_index',    'body_mass_index',    't.value', 'pick', NULL, 'index', 1),
    ('lean_body_mass',     'lean_body_mass',     't.value', 'pick', NULL, 'kg',    1),
    ('waist_circumference', 'waist_circumference', 't.value', 'pick', NULL, 'cm',  1),
    ('forced_expiratory_volume_1', 'forced_expiratory_volume_1', 't.value', 'pick', NULL, 'L', 1),
    ('forced_vital_capacity', 'forced_vital_capacity', 't.value', 'pick', NULL, 'L', 1),
    ('peak_expiratory_flow_rate', 'peak_expiratory_flow_rate', 't.value', 'pick', NULL, 'L/min', 1)
) AS m(metric, resource, value_sql, aggregate, order_sql, unit, rank);
-- timeseries whose number is not simply the samples' value: blood pressure carries two (systolic
-- and diastolic, in extra); a cholesterol sample's type says which lipid it measures; only the
-- stood hours of stand_hour count; IgE and IgG readings are per allergen (the type), and the
-- day's highest one is the figure (one allergen's is a metric with part 'type=<allergen>');
-- workout_duration samples are minutes, the workouts summary's workout_duration seconds.
INSERT INTO junction.daily_metrics (metric, resource, value_sql, aggregate, unit, rank, part) VALUES
    ('blood_pressure_systolic',  'blood_pressure', 't.value', 'avg', 'mmHg',   1, 'extra.systolic'),
    ('blood_pressure_diastolic', 'blood_pressure', 't.value', 'avg', 'mmHg',   1, 'extra.diastolic'),
    ('cholesterol_total',        'cholesterol',    't.value', 'avg', 'mmol/L', 1, 'type=total'),
    ('cholesterol_ldl',          'cholesterol',    't.value', 'avg', 'mmol/L', 1, 'type=ldl'),
    ('cholesterol_hdl',          'cholesterol',    't.value', 'avg', 'mmol/L', 1, 'type=hdl'),
    ('triglycerides',            'cholesterol',    't.value', 'avg', 'mmol/L', 1, 'type=triglycerides'),
    ('ige_max',                  'ige',            't.value', 'max', 'FSU',    1, ''),
    ('igg_max',                  'igg',            't.value', 'max', 'FSU',    1, ''),
    ('stand_hour',               'stand_hour',     't.value', 'sum', 'count',  1, 'type=stood'),
    ('workout_duration',         'workout_duration', 't.value * 60', 'sum', 's', 2, '');
UPDATE junction.daily_metrics SET builtin = true;

-- The consolidated values.
CREATE TABLE junction.daily (
    user_id       uuid NOT NULL,
    calendar_date date NOT NULL,
    metric        text NOT NULL,
    value         double precision NOT NULL,
    unit          text,
    provider      text NOT NULL,
    source_type   text NOT NULL,
    resource      text NOT NULL,
    candidates    integer NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT daily_pkey PRIMARY KEY (user_id, calendar_date, metric)
) WITH (fillfactor = 80);
COMMENT ON TABLE junction.daily IS
  'one number per user, local day and metric, from the winning candidate (provider, source type) by junction.source_priorities, else the default rule (README, "Consolidation")';
COMMENT ON COLUMN junction.daily.calendar_date IS 'the user''s local day: the summary''s calendar_date, or the sample''s local_time (its UTC day when the offset is unknown)';
COMMENT ON COLUMN junction.daily.provider IS 'the winning candidate''s provider';
COMMENT ON COLUMN junction.daily.source_type IS 'the winning candidate''s source type';
COMMENT ON COLUMN junction.daily.resource IS 'where the value comes from: a summary resource (activity, sleep, ...) or a timeseries resource';
COMMENT ON COLUMN junction.daily.candidates IS 'how many candidates (provider, source type, resource) had a value that day';
COMMENT ON COLUMN junction.daily.updated_at IS 'when the value (or its winner) last changed';
-- many users, a range of days, one metric (no value in it: a changed value stays a HOT update)
CREATE INDEX daily_metric_date ON junction.daily (metric, calendar_date, user_id);

-- The samples' candidates by hour: one row per user, resource, UTC hour, local day, provider and
-- source type, recomputed from junction.samples whenever a sample of that hour is written. A day
-- of a timeseries candidate is then the combination of its (at most 25) hours, so a delivery
-- costs the hours it touched, not its whole day.
CREATE TABLE junction.daily_parts (
    user_id       uuid NOT NULL,
    resource      text NOT NULL,
    hour          timestamptz NOT NULL,
    calendar_date date NOT NULL,
    provider      text NOT NULL,
    source_type   text NOT NULL,
    n             bigint NOT NULL,
    sum           double precision,
    min           double precision,
    max           double precision,
    last_value    double precision,
    part          text NOT NULL DEFAULT '',
    CONSTRAINT daily_parts_pkey PRIMARY KEY (user_id, resource, hour, calendar_date, provider, source_type, part)
) WITH (fillfactor = 70);
COMMENT ON TABLE junction.daily_parts IS
  'junction.daily''s timeseries candidates by hour (count, sum, min, max and last of the samples with a value), recomputed from junction.samples';
COMMENT ON COLUMN junction.daily_parts.hour IS 'the UTC hour of the samples'' time';
COMMENT ON COLUMN junction.daily_parts.calendar_date IS 'their local day (local_time, else the UTC day)';
COMMENT ON COLUMN junction.daily_parts.part IS 'which number of the samples (junction.daily_metrics.part): empty = their value';
COMMENT ON COLUMN junction.daily_parts.last_value IS 'the value of the hour''s last sample (time, then type, then workout_id), for the resources a pick metric reads (else null)';
CREATE INDEX daily_parts_day ON junction.daily_parts (user_id, resource, calendar_date);

-- The number a part (junction.daily_metrics.part) takes from one sample, or null: its value (part
-- empty), its value if its type is t (type=t), a numeric field of its extra (extra.<field>).
-- Inlined into the recomputations (hence no SET clause, and every name qualified).
CREATE FUNCTION junction._daily_part_value(part text, type text, value double precision, extra jsonb)
RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $fn$
    SELECT CASE
             WHEN part OPERATOR(pg_catalog.=) ''::pg_catalog.text THEN value
             WHEN pg_catalog.starts_with(part, 'type='::pg_catalog.text) THEN
               CASE WHEN type OPERATOR(pg_catalog.=) pg_catalog.substr(part, 6) THEN value END
             WHEN pg_catalog.starts_with(part, 'extra.'::pg_catalog.text)
                  AND pg_catalog.jsonb_typeof(extra OPERATOR(pg_catalog.->) pg_catalog.substr(part, 7))
                      OPERATOR(pg_catalog.=) 'number'::pg_catalog.text THEN
               (extra OPERATOR(pg_catalog.->>) pg_catalog.substr(part, 7))::pg_catalog.float8
           END
$fn$;
COMMENT ON FUNCTION junction._daily_part_value(text, text, double precision, jsonb) IS
  'the number a junction.daily_metrics part takes from a sample (part, type, value, extra), or null';

-- The recomputation the inbox workers queue (they run with junction.daily_defer = on): hours of
-- samples and days of summaries written, recomputed together when the inbox is drained and at
-- least every junction.daily_interval (src/worker.c), so consecutive batches touching the same days cost one
-- recomputation. Everything else (junction_process_inbox, junction_sync, the backfill) recomputes
-- in its own transaction.
CREATE TABLE junction.daily_pending_hours (
    user_id  uuid NOT NULL,
    resource text NOT NULL,
    hour     timestamptz NOT NULL
);
-- No unique key: every upsert adds its own row for a key, even one already queued, and a flush
-- deletes only the rows it locked (a key another transaction is still writing stays queued by
-- that transaction's row, invisible to the flush until it commits). No writer ever waits on
-- another's queue row.
CREATE INDEX daily_pending_hours_key ON junction.daily_pending_hours (user_id, resource, hour);
COMMENT ON TABLE junction.daily_pending_hours IS
  'hours of samples whose junction.daily_parts (and days) the inbox workers recompute next';
CREATE TABLE junction.daily_pending_days (
    user_id       uuid NOT NULL,
    calendar_date date NOT NULL,
    resource      text NOT NULL
);
CREATE INDEX daily_pending_days_key ON junction.daily_pending_days (user_id, calendar_date, resource);
COMMENT ON TABLE junction.daily_pending_days IS
  'days of summaries whose junction.daily values the inbox workers recompute next';



-- The aggregators: providers that merge other apps' and devices' data (phone health stores).
-- This and junction.default_source_rank are inlined into junction.daily's recomputation (hence no
-- SET clause, and every name qualified).
CREATE FUNCTION junction._aggregator_providers()
RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $fn$
    SELECT ARRAY['apple_health_kit', 'health_connect', 'google_fit', 'samsung_health']::pg_catalog.text[]
$fn$;
COMMENT ON FUNCTION junction._aggregator_providers() IS
  'providers that aggregate other sources (ranked after a device''s own cloud by junction.default_source_rank)';

-- The default rule when no priority applies: a dedicated device (ring, watch, strap, cuff, scale,
-- meter, CGM) before a phone, a phone before an app, an app before merged "multiple sources";
-- within a tier, the device's own cloud before an aggregator (HealthKit, Health Connect, ...).
-- A source type of unknown counts as a device when a device maker sends it, else as merged.
CREATE FUNCTION junction.default_source_rank(provider text, source_type text)
RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $fn$
    SELECT CASE
             WHEN source_type OPERATOR(pg_catalog.=) ANY (ARRAY['ring', 'watch', 'chest_strap', 'cuff', 'scale',
                      'fingerprick', 'automatic', 'manual_scan', 'lab']::pg_catalog.text[]) THEN 10
             WHEN source_type OPERATOR(pg_catalog.=) 'phone'::pg_catalog.text THEN 20
             WHEN source_type OPERATOR(pg_catalog.=) 'app'::pg_catalog.text THEN 30
             WHEN source_type OPERATOR(pg_catalog.=) 'multiple_sources'::pg_catalog.text THEN 40
             WHEN provider OPERATOR(pg_catalog.<>) ALL (junction._aggregator_providers()) THEN 10
             ELSE 40
           END
           OPERATOR(pg_catalog.+)
           CASE WHEN provider OPERATOR(pg_catalog.=) ANY (junction._aggregator_providers()) THEN 1 ELSE 0 END
$fn$;
COMMENT ON FUNCTION junction.default_source_rank(text, text) IS
  'the default rank of a source when no priority applies (lower wins): device 10, phone 20, app 30, multiple_sources 40; +1 for an aggregator provider';

-- The priority that applies to a candidate, or null: the most specific row of
-- junction.source_priorities (the resource itself before its data_type "timeseries", a source
-- type before "any"), a team row before Junction's.
CREATE FUNCTION junction.source_priority(resource text, kind text, provider text, source_type text)
RETURNS integer
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT p.priority
    FROM junction.source_priorities AS p
    WHERE p.provider OPERATOR(pg_catalog.=) source_priority.provider
      AND (p.resource OPERATOR(pg_catalog.=) source_priority.resource
           OR (kind OPERATOR(pg_catalog.=) 'timeseries'::pg_catalog.text
               AND p.resource OPERATOR(pg_catalog.=) 'timeseries'::pg_catalog.text))
      AND (p.source_type OPERATOR(pg_catalog.=) source_priority.source_type
           OR p.source_type OPERATOR(pg_catalog.=) ''::pg_catalog.text)
    ORDER BY p.resource OPERATOR(pg_catalog.=) source_priority.resource DESC,
             p.source_type OPERATOR(pg_catalog.<>) ''::pg_catalog.text DESC,
             p.origin OPERATOR(pg_catalog.=) 'team'::pg_catalog.text DESC
    LIMIT 1
$fn$;
COMMENT ON FUNCTION junction.source_priority(text, text, text, text) IS
  'the priority of junction.source_priorities that applies to a candidate (resource, its kind, provider, source type), or null';

-- Whether the upserts maintain junction.daily (the junction.daily setting; on without the library).
CREATE FUNCTION junction._daily_enabled()
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$ SELECT coalesce(current_setting('junction.daily', true), 'on') <> 'off' $fn$;
COMMENT ON FUNCTION junction._daily_enabled() IS 'false when junction.daily = off (the upserts then leave junction.daily alone)';

-- Whether the upserts queue the recomputation (junction.daily_defer, set by the inbox workers).
CREATE FUNCTION junction._daily_deferred()
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$ SELECT coalesce(current_setting('junction.daily_defer', true), 'off') = 'on' $fn$;
COMMENT ON FUNCTION junction._daily_deferred() IS 'true when junction.daily_defer = on: the upserts queue the days for junction._daily_flush';

-- Take the turns of every user whose hours or days are about to be recomputed, in user order,
-- before any of their rows is written. junction._daily_parts_refresh and junction._daily_refresh
-- each take their own users' turns; taking the union first keeps one order when the days name a
-- user the hours do not.
CREATE FUNCTION junction._daily_lock_users(hours junction.daily_hour[], days junction.daily_key[])
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    PERFORM pg_advisory_xact_lock(1785688929, hashtext(u.user_id::text))
    FROM (SELECT h.user_id FROM unnest(hours) AS h WHERE h.user_id IS NOT NULL
          UNION
          SELECT d.user_id FROM unnest(days) AS d WHERE d.user_id IS NOT NULL
          ORDER BY 1) AS u;
END
$fn$;
COMMENT ON FUNCTION junction._daily_lock_users(junction.daily_hour[], junction.daily_key[]) IS
  'take the junction.daily turns (transaction advisory locks) of the users of some hours and days, in user order';

-- Recompute what the upserts recomputed in place otherwise: hours through junction.daily_parts,
-- days of summaries. With junction.daily_defer = on they queue instead (junction._daily_flush).
CREATE FUNCTION junction._daily_touch(hours junction.daily_hour[], days junction.daily_key[])
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'
AS $fn$
BEGIN
    IF NOT junction._daily_enabled() THEN
        RETURN 0;
    END IF;
    IF junction._daily_deferred() THEN
        -- A row of this transaction's own for every key, even one already queued: a flush sees it
        -- only once this transaction has committed its rows, so it cannot take the key, recompute
        -- it without them and drop it (what passing over a queued key allowed). And no writer
        -- waits on another's queue row.
        INSERT INTO junction.daily_pending_hours (user_id, resource, hour)
        SELECT DISTINCT h.user_id, h.resource, h.hour FROM unnest(hours) AS h
        WHERE h.user_id IS NOT NULL AND h.resource IS NOT NULL AND h.hour IS NOT NULL;
        INSERT INTO junction.daily_pending_days (user_id, calendar_date, resource)
        SELECT DISTINCT d.user_id, d.calendar_date, d.resource FROM unnest(days) AS d
        WHERE d.user_id IS NOT NULL AND d.calendar_date IS NOT NULL AND d.resource IS NOT NULL;
        RETURN 0;
    END IF;
    PERFORM junction._daily_lock_users(hours, days);
    RETURN junction._daily_refresh(coalesce(junction._daily_parts_refresh(hours), '{}'::junction.daily_key[])
                                   || coalesce(days, '{}'::junction.daily_key[]));
END
$fn$;
COMMENT ON FUNCTION junction._daily_touch(junction.daily_hour[], junction.daily_key[]) IS
  'recompute (or, with junction.daily_defer = on, queue) the junction.daily hours of samples and days of summaries an upsert wrote';

-- The statement that recomputes the days of $1 (junction.daily_key[]) of the metrics the given
-- resources feed: generated from junction.daily_metrics and junction.resources. One candidate per
-- metric, provider, source type and resource; the winner by priority, the default rank, the
-- metric's resource rank, then names.
-- The sum of an array's elements in the array's order (NULLs skipped, as sum() skips them; NULL
-- when none). A float sum depends on the order of its terms; the recomputation below passes the
-- terms ordered by key, so a day's value never depends on the order a plan reads its rows in.
-- Not an ordered aggregate (sum(x ORDER BY y)): Citus splits a sum into partial sums on the
-- shards and cannot split an ordered one; array_agg(x ORDER BY y) it runs as is.
CREATE FUNCTION junction._sum_in_order(terms double precision[])
RETURNS double precision
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $fn$ SELECT sum(x.v ORDER BY x.i) FROM unnest(terms) WITH ORDINALITY AS x(v, i) $fn$;
COMMENT ON FUNCTION junction._sum_in_order(double precision[]) IS
  'the sum of the elements in array order (a float sum depends on the order of its terms)';

CREATE FUNCTION junction._daily_sql(resources text[])
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    cands          text;
    has_priorities boolean := EXISTS (SELECT FROM junction.source_priorities);
BEGIN
    -- One branch per resource: each (provider, source type) of a key's day reduced once to every
    -- metric of the resource, then one row per metric the keys ask for on that day.
    SELECT string_agg(format($q$
    SELECT a.user_id, a.calendar_date, v.metric, %1$L::text AS resource, %2$L::text AS kind,
           v.rank, a.provider COLLATE "default", a.source_type COLLATE "default", v.value
    FROM (SELECT d.user_id, d.calendar_date, t.provider COLLATE "C" AS provider,
                 t.source_type COLLATE "C" AS source_type, d.metrics, %3$s
          FROM (SELECT k.user_id, k.calendar_date, array_agg(k.metric) AS metrics
                FROM k WHERE k.metric IN (%4$s) GROUP BY k.user_id, k.calendar_date) AS d
          JOIN %5$s AS t ON %6$s
          GROUP BY d.user_id, d.calendar_date, d.metrics, t.provider COLLATE "C", t.source_type COLLATE "C") AS a
    CROSS JOIN LATERAL (VALUES %7$s) AS v(metric, rank, value)
    WHERE v.metric = ANY (a.metrics)$q$,
               x.resource, x.kind, x.aggs, x.metrics, x.tbl, x.cond, x.vals),
           E'\n    UNION ALL' ORDER BY x.resource, x.part)
      INTO cands
    FROM (
        SELECT m.resource, r.kind, m.part,
               string_agg(format('%s AS %I', CASE
                 -- a timeseries day combines its hours of junction.daily_parts
                 WHEN r.kind = 'timeseries' THEN CASE m.aggregate
                   -- float sums in a fixed order (the hours'): the same value whatever order
                   -- the rows were written or read in
                   WHEN 'sum' THEN 'junction._sum_in_order(array_agg(t.sum ORDER BY t.hour))'
                   WHEN 'avg' THEN 'junction._sum_in_order(array_agg(t.sum ORDER BY t.hour)) / nullif(sum(t.n), 0)'
                   WHEN 'min' THEN 'min(t.min)'
                   WHEN 'max' THEN 'max(t.max)'
                   WHEN 'count' THEN 'sum(t.n)::double precision'
                   ELSE '(array_agg(t.last_value ORDER BY t.hour DESC))[1]'
                 END
                 WHEN m.aggregate = 'pick' THEN
                   format('(array_agg((%1$s)::double precision ORDER BY %2$s) FILTER (WHERE (%1$s) IS NOT NULL))[1]',
                          m.value_sql, m.order_sql)
                 WHEN m.aggregate = 'count' THEN format('count(NULLIF(%s, false))::double precision', m.value_sql)
                 -- a sum or mean of the day's rows in the order of their ids (see above)
                 WHEN m.aggregate = 'sum' THEN
                   format('junction._sum_in_order(array_agg((%s)::double precision ORDER BY t.id))', m.value_sql)
                 WHEN m.aggregate = 'avg' THEN
                   format('junction._sum_in_order(array_agg((%1$s)::double precision ORDER BY t.id)) / nullif(count(%1$s), 0)',
                          m.value_sql)
                 ELSE format('%s((%s)::double precision)', m.aggregate, m.value_sql)
               END, 'm_' || m.metric), ', ' ORDER BY m.metric) AS aggs,
               -- a timeseries metric's value_sql is over t.value, the reduced number
               string_agg(format('(%L, %s, %s)', m.metric, m.rank, CASE
                 WHEN r.kind = 'timeseries' AND m.value_sql <> 't.value' THEN
                   format('(SELECT (%s)::double precision FROM (SELECT a.%I AS value) AS t)', m.value_sql, 'm_' || m.metric)
                 ELSE format('a.%I', 'm_' || m.metric)
               END), ', ' ORDER BY m.metric) AS vals,
               CASE r.kind WHEN 'timeseries' THEN 'junction.daily_parts'
                           ELSE format('junction.%I', min(r.table_name)) END AS tbl,
               CASE r.kind
                 WHEN 'timeseries' THEN format(
                   't.user_id = d.user_id AND t.resource = %L AND t.calendar_date = d.calendar_date AND t.part = %L',
                   m.resource, m.part)
                 ELSE 't.user_id = d.user_id AND t.calendar_date = d.calendar_date'
               END AS cond,
               string_agg(quote_literal(m.metric), ', ' ORDER BY m.metric) AS metrics
        FROM junction.daily_metrics AS m
        JOIN junction.resources AS r ON r.name = m.resource AND r.kind IN ('summary', 'timeseries')
        WHERE m.metric IN (SELECT f.metric FROM junction.daily_metrics AS f WHERE f.resource = ANY (resources))
        -- one branch per resource and part (a timeseries' parts are rows of junction.daily_parts;
        -- a summary's metrics read its typed rows, and part means nothing to them)
        GROUP BY m.resource, r.kind, m.part
    ) AS x;

    -- every key also gets a row without a value: it wins only when no candidate has one, and then
    -- the key's junction.daily row goes
    RETURN format($q$
WITH k AS MATERIALIZED (
    SELECT DISTINCT k.user_id, k.calendar_date, m.metric
    FROM unnest($1::junction.daily_key[]) AS k
    JOIN junction.daily_metrics AS m ON m.resource = k.resource
    WHERE k.user_id IS NOT NULL AND k.calendar_date IS NOT NULL
), c AS (%1$s
    SELECT k.user_id, k.calendar_date, k.metric, NULL::text, NULL::text, NULL::integer, NULL::text,
           NULL::text, NULL::double precision
    FROM k
), w AS MATERIALIZED (
    SELECT DISTINCT ON (c.user_id, c.calendar_date, c.metric COLLATE "C")
           c.user_id, c.calendar_date, c.metric, nullif(c.value, 'NaN') AS value, c.resource, c.provider,
           c.source_type,
           count(nullif(c.value, 'NaN')) OVER (PARTITION BY c.user_id, c.calendar_date, c.metric COLLATE "C") AS candidates
    FROM c%2$s
    -- names in "C" order: the same winner whatever the database's collation
    ORDER BY c.user_id, c.calendar_date, c.metric COLLATE "C", nullif(c.value, 'NaN') IS NULL,
             %3$s NULLS LAST, junction.default_source_rank(c.provider, c.source_type), c.rank,
             c.provider COLLATE "C", c.source_type COLLATE "C", c.resource COLLATE "C"
), up AS (
    INSERT INTO junction.daily AS d
        (user_id, calendar_date, metric, value, unit, provider, source_type, resource, candidates, updated_at)
    SELECT w.user_id, w.calendar_date, w.metric, w.value, m.unit, w.provider, w.source_type, w.resource,
           w.candidates, now()
    FROM w JOIN junction.daily_metrics AS m ON m.metric = w.metric AND m.resource = w.resource
    WHERE w.value IS NOT NULL
    ORDER BY w.user_id, w.calendar_date, w.metric
    ON CONFLICT (user_id, calendar_date, metric) DO UPDATE
    SET value = excluded.value, unit = excluded.unit, provider = excluded.provider,
        source_type = excluded.source_type, resource = excluded.resource,
        candidates = excluded.candidates, updated_at = excluded.updated_at
    WHERE (d.value, d.unit, d.provider, d.source_type, d.resource, d.candidates)
          IS DISTINCT FROM (excluded.value, excluded.unit, excluded.provider, excluded.source_type,
                            excluded.resource, excluded.candidates)
    RETURNING 1
), gone AS (
    DELETE FROM junction.daily AS d
    USING w
    WHERE w.value IS NULL
      AND d.user_id = w.user_id AND d.calendar_date = w.calendar_date AND d.metric = w.metric
    RETURNING 1
)
SELECT (SELECT count(*) FROM up) + (SELECT count(*) FROM gone)$q$, coalesce(cands || E'\n    UNION ALL', ''),
    CASE WHEN has_priorities THEN $q$
    -- the priority that applies (as junction.source_priority says)
    LEFT JOIN LATERAL (
        SELECT p.priority
        FROM junction.source_priorities AS p
        WHERE p.resource = ANY (ARRAY[c.resource, CASE WHEN c.kind = 'timeseries' THEN 'timeseries' END])
          AND p.provider = c.provider
          AND (p.source_type = c.source_type OR p.source_type = '')
        ORDER BY p.resource = c.resource DESC, p.source_type <> '' DESC, p.origin = 'team' DESC
        LIMIT 1) AS pr ON c.value IS NOT NULL$q$ ELSE '' END,
    CASE WHEN has_priorities THEN 'pr.priority' ELSE 'NULL::integer' END);
END
$fn$;
COMMENT ON FUNCTION junction._daily_sql(text[]) IS
  'the statement that recomputes the junction.daily values of the days $1 (junction.daily_key[]) from their candidates, for the metrics the resources feed';

-- Recompute the days of keys: rows of junction.daily written or deleted. Concurrent writers of
-- one user's days take turns (an advisory lock per user, in user order), so each recomputation
-- sees the other's committed rows.
CREATE FUNCTION junction._daily_refresh(keys junction.daily_key[], force boolean DEFAULT false)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'
AS $fn$
-- The EXECUTEd text comes from junction._daily_sql, built from junction.daily_metrics (writable by
-- superusers only) and the catalog; the keys are passed with USING.
-- @plpgsql_check_options: security_warnings = off
DECLARE
    n bigint;
BEGIN
    IF keys IS NULL OR cardinality(keys) = 0 OR NOT (force OR junction._daily_enabled()) THEN
        RETURN 0;
    END IF;
    PERFORM pg_advisory_xact_lock(1785688929, hashtext(u.user_id::text))
    FROM (SELECT DISTINCT k.user_id FROM unnest(keys) AS k WHERE k.user_id IS NOT NULL ORDER BY 1) AS u;
    EXECUTE junction._daily_sql(ARRAY(SELECT DISTINCT k.resource FROM unnest(keys) AS k ORDER BY 1))
       INTO n USING keys;
    RETURN n;
END
$fn$;
COMMENT ON FUNCTION junction._daily_refresh(junction.daily_key[], boolean) IS
  'recompute the junction.daily values of the given (user, day, resource) keys from their candidates (unless junction.daily = off and not force)';

-- Recompute the junction.daily_parts rows of some hours from junction.samples; returns the days
-- those hours were and are on (for junction._daily_refresh). Takes the users' turns first, as
-- junction._daily_refresh does: a user's junction.daily_parts rows are written by one transaction
-- at a time, so a writer holding a user's turn (from an earlier resource of the same transaction)
-- never waits on the rows of another that waits for that turn.
CREATE FUNCTION junction._daily_parts_refresh(hours junction.daily_hour[])
RETURNS junction.daily_key[]
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'
-- Each hour is one range scan of the samples' key, whatever the statistics say: with one user's
-- rows making up most of the table (a first backfill, a small team) the planner otherwise hashes
-- the hours against a sequential scan of junction.samples, every page, and a 90-day backfill that
-- takes 2 s here took 95 s. On Citus the shards plan their own part (with their own settings), and
-- the coordinator's part is left to the planner: the setting is put back for the call.
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $fn$
DECLARE
    gone  junction.daily_key[];
    fresh junction.daily_key[];
    -- the parts the metrics read, and whether one picks the last value: read here, not joined in
    -- the statement below (on Citus the registry is local to the coordinator, the samples are not)
    mp_resource text[];
    mp_part     text[];
    mp_pick     boolean[];
    -- the hours' users, locked in order
    users       uuid[];
    -- on Citus, the same users: the statements below name them, so that they run on those users'
    -- shards only (one shard for junction_sync's hours, all of them for a busy batch's). Null on
    -- one node, where the planner would read all of a user's rows once and filter them against
    -- every hour (without statistics, a first load: 15 -> 37 ms for 240 hours) instead of
    -- scanning each hour's range of the key
    shard_users uuid[];
BEGIN
    SELECT array_agg(m.resource), array_agg(m.part), array_agg(m.pick)
      INTO mp_resource, mp_part, mp_pick
    FROM (SELECT dm.resource, dm.part, bool_or(dm.aggregate = 'pick') AS pick
          FROM junction.daily_metrics AS dm GROUP BY dm.resource, dm.part) AS m;
    IF hours IS NULL OR cardinality(hours) = 0 THEN
        RETURN NULL;
    END IF;
    users := ARRAY(SELECT DISTINCT h.user_id FROM unnest(hours) AS h WHERE h.user_id IS NOT NULL ORDER BY 1);
    IF EXISTS (SELECT FROM pg_catalog.pg_extension AS e WHERE e.extname = 'citus') THEN
        -- local to the call: the SET clauses above restore the caller's values when it returns
        PERFORM pg_catalog.set_config('enable_hashjoin', 'on', true),
                pg_catalog.set_config('enable_mergejoin', 'on', true);
        shard_users := users;
    END IF;
    PERFORM pg_advisory_xact_lock(1785688929, hashtext(u.user_id::text)) FROM unnest(users) AS u(user_id);
    -- the hours' rows, recomputed: changed ones updated in place (a HOT update: no indexed column
    -- changes), new ones inserted; unchanged ones left alone, and their days with them
    WITH i AS (
        INSERT INTO junction.daily_parts AS p
            (user_id, resource, hour, calendar_date, provider, source_type, part, n, sum, min, max, last_value)
        SELECT g.user_id, g.resource, g.hour, g.calendar_date, g.provider, g.source_type, g.part, g.n, g.sum, g.min,
               g.max, g.last_value
        FROM (SELECT s.user_id, h.resource COLLATE "C" AS resource, h.hour, s.calendar_date,
                     s.provider COLLATE "C" AS provider, s.source_type COLLATE "C" AS source_type,
                     h.part COLLATE "C" AS part,
                     -- summed in key order: a float sum depends on the order of its terms, and
                     -- the rows arrive in whatever order the plan reads them
                     count(*) AS n, sum(s.value ORDER BY s.time, s.type, s.workout_id) AS sum,
                     min(s.value) AS min, max(s.value) AS max,
                     -- the last value, only for the parts a metric picks it from
                     (array_agg(s.value ORDER BY s.time DESC, s.type DESC, s.workout_id DESC)
                        FILTER (WHERE h.pick))[1] AS last_value
              FROM (SELECT DISTINCT h.user_id, h.resource, h.hour, mp.part, mp.pick
                    FROM unnest(hours) AS h
                    -- the parts the resource's metrics read (most have one: the samples' value)
                    JOIN unnest(mp_resource, mp_part, mp_pick) AS mp(resource, part, pick)
                      ON mp.resource = h.resource) AS h
              -- one range scan of junction.samples' key per hour
              CROSS JOIN LATERAL (
                  SELECT coalesce(s.local_time, s.time AT TIME ZONE 'UTC')::date AS calendar_date,
                         s.provider, s.source_type, junction._daily_part_value(h.part, s.type, s.value, s.extra) AS value,
                         s.time, s.type, s.workout_id, s.user_id
                  FROM junction.samples AS s
                  WHERE s.user_id = h.user_id AND (shard_users IS NULL OR s.user_id = ANY (shard_users))
                    AND s.resource = h.resource
                    AND s.time >= h.hour AND s.time < h.hour + interval '1 hour'
                    -- the same hours as an equality: a shard that hashes the hours against its
                    -- samples (on Citus) matches each sample to one hour, not every hour of its
                    -- user to every sample
                    AND date_trunc('hour', s.time, 'UTC') = h.hour
                  ) AS s
              WHERE s.value IS NOT NULL
              -- "C": grouping sorts by byte, not by the database's collation
              GROUP BY s.user_id, h.resource COLLATE "C", h.hour, s.calendar_date, s.provider COLLATE "C",
                       s.source_type COLLATE "C", h.part COLLATE "C") AS g
        ORDER BY 1, 2, 3, 4, 5, 6, 7
        ON CONFLICT (user_id, resource, hour, calendar_date, provider, source_type, part) DO UPDATE
        SET n = excluded.n, sum = excluded.sum, min = excluded.min, max = excluded.max,
            last_value = excluded.last_value
        WHERE (p.n, p.sum, p.min, p.max, p.last_value)
              IS DISTINCT FROM (excluded.n, excluded.sum, excluded.min, excluded.max, excluded.last_value)
        RETURNING p.user_id, p.calendar_date, p.resource
    )
    SELECT array_agg(ROW(x.user_id, x.calendar_date, x.resource)::junction.daily_key) INTO fresh
    FROM (SELECT DISTINCT i.user_id, i.calendar_date, i.resource FROM i) AS x;
    -- rows of those hours without a sample left (values gone, or moved to another local day)
    WITH d AS (
        DELETE FROM junction.daily_parts AS p
        USING (SELECT DISTINCT h.user_id, h.resource, h.hour FROM unnest(hours) AS h) AS h
        WHERE p.user_id = h.user_id AND (shard_users IS NULL OR p.user_id = ANY (shard_users))
          AND p.resource = h.resource AND p.hour = h.hour
          AND NOT EXISTS (SELECT FROM junction.samples AS s
                          WHERE s.user_id = p.user_id AND s.resource = p.resource
                            AND s.time >= p.hour AND s.time < p.hour + interval '1 hour'
                            AND s.provider = p.provider AND s.source_type = p.source_type
                            AND junction._daily_part_value(p.part, s.type, s.value, s.extra) IS NOT NULL
                            AND coalesce(s.local_time, s.time AT TIME ZONE 'UTC')::date = p.calendar_date)
        RETURNING p.user_id, p.calendar_date, p.resource
    )
    SELECT array_agg(ROW(x.user_id, x.calendar_date, x.resource)::junction.daily_key) INTO gone
    FROM (SELECT DISTINCT d.user_id, d.calendar_date, d.resource FROM d) AS x;
    RETURN coalesce(gone, '{}'::junction.daily_key[]) || coalesce(fresh, '{}'::junction.daily_key[]);
END
$fn$;
COMMENT ON FUNCTION junction._daily_parts_refresh(junction.daily_hour[]) IS
  'recompute the junction.daily_parts rows of the given (user, resource, UTC hour) from junction.samples; returns the days they were and are on';

-- The days a batch of summaries of one resource touches, read from its table (before the upsert:
-- the days the stored versions are on; after: the new ones). Null for a resource without metrics.
CREATE FUNCTION junction._daily_summary_keys(items junction.typing_item[], resource text)
RETURNS junction.daily_key[]
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
-- The EXECUTEd text names a summary table from the registry (quote_ident); values are passed with USING.
-- @plpgsql_check_options: security_warnings = off
DECLARE
    res  junction.resources;
    keys junction.daily_key[];
    uids uuid[];
    ids  uuid[];
BEGIN
    SELECT * INTO res FROM junction.resources AS r
    WHERE r.name = _daily_summary_keys.resource AND r.kind = 'summary'
      AND EXISTS (SELECT FROM junction.daily_metrics AS m WHERE m.resource = r.name);
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    -- the keys alone go into the statement on the table (on Citus, to every shard): not the objects
    SELECT array_agg(b.user_id), array_agg(b.id) INTO uids, ids
    FROM (SELECT DISTINCT i.user_id, (i.obj ->> res.id_field)::uuid AS id
          FROM unnest(items) AS i
          WHERE i.resource = _daily_summary_keys.resource
            AND (i.obj ->> res.id_field) ~* '^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$') AS b;
    IF uids IS NULL THEN
        RETURN NULL;
    END IF;
    EXECUTE format($q$
        SELECT array_agg(DISTINCT ROW(t.user_id, t.calendar_date, $3)::junction.daily_key)
        FROM junction.%I AS t
        JOIN unnest($1, $2) AS b(user_id, id) ON t.user_id = b.user_id AND t.id = b.id
        WHERE t.calendar_date IS NOT NULL$q$, res.table_name)
      INTO keys USING uids, ids, resource;
    RETURN keys;
END
$fn$;
COMMENT ON FUNCTION junction._daily_summary_keys(junction.typing_item[], text) IS
  'the (user, calendar_date, resource) keys of the stored summaries a batch names (resources with daily metrics only)';

-- Recompute up to max_keys queued hours and days (the inbox workers call it, src/worker.c);
-- returns how many were taken from the queue.
CREATE FUNCTION junction._daily_flush(max_keys integer DEFAULT 20000)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'
AS $fn$
DECLARE
    hours junction.daily_hour[];
    days  junction.daily_key[];
    taken bigint;
BEGIN
    -- the rows this flush locked, and only those (another flush's rows of the same key are its
    -- own); a key queued twice is recomputed once
    WITH q AS (
        DELETE FROM junction.daily_pending_hours AS p
        WHERE p.ctid = ANY (ARRAY(SELECT x.ctid FROM junction.daily_pending_hours AS x
                                  ORDER BY x.user_id, x.resource, x.hour LIMIT max_keys
                                  FOR UPDATE SKIP LOCKED))
        RETURNING p.user_id, p.resource, p.hour
    )
    SELECT array_agg(DISTINCT ROW(q.user_id, q.resource, q.hour)::junction.daily_hour), count(*) INTO hours, taken FROM q;
    WITH q AS (
        DELETE FROM junction.daily_pending_days AS p
        WHERE p.ctid = ANY (ARRAY(SELECT x.ctid FROM junction.daily_pending_days AS x
                                  ORDER BY x.user_id, x.calendar_date, x.resource LIMIT max_keys
                                  FOR UPDATE SKIP LOCKED))
        RETURNING p.user_id, p.calendar_date, p.resource
    )
    SELECT array_agg(DISTINCT ROW(q.user_id, q.calendar_date, q.resource)::junction.daily_key), taken + count(*)
      INTO days, taken FROM q;
    PERFORM junction._daily_lock_users(hours, days);
    PERFORM junction._daily_refresh(coalesce(junction._daily_parts_refresh(hours), '{}'::junction.daily_key[])
                                    || coalesce(days, '{}'::junction.daily_key[]), true);
    RETURN taken;
END
$fn$;
COMMENT ON FUNCTION junction._daily_flush(integer) IS
  'recompute up to max_keys of the hours and days queued by upserts run with junction.daily_defer = on; returns how many queue rows were taken';

-- ---------------------------------------------------------------------------------------------
-- Entry points.
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION junction_rebuild_daily(user_id uuid DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'
AS $fn$
-- The EXECUTEd text names summary tables from the registry (quote_ident); values are passed with USING.
-- @plpgsql_check_options: security_warnings = off
DECLARE
    uid   uuid := user_id;
    keys  junction.daily_key[] := '{}'::junction.daily_key[];
    more  junction.daily_key[];
    res   record;
    n     bigint;
    users text;
    u     uuid;
BEGIN
    IF uid IS NULL THEN
        -- every user, one at a time (each user's days fit in memory, whatever the table sizes)
        DELETE FROM junction.daily_parts;
        DELETE FROM junction.daily;
        GET DIAGNOSTICS n = ROW_COUNT;
        SELECT string_agg(format('SELECT t.user_id FROM junction.%I AS t', x.table_name), ' UNION ')
          INTO users
        FROM (SELECT DISTINCT r.table_name FROM junction.resources AS r
              JOIN junction.daily_metrics AS m ON m.resource = r.name
              WHERE r.kind IN ('summary', 'timeseries') ORDER BY 1) AS x;
        FOR u IN EXECUTE format('SELECT x.user_id FROM (%s) AS x ORDER BY 1', coalesce(users, 'SELECT NULL::uuid WHERE false'))
        LOOP
            n := n + @extschema@.junction_rebuild_daily(u);
        END LOOP;
        RETURN n;
    END IF;
    -- the samples' hours, all of them (as junction._daily_parts_refresh computes them)
    DELETE FROM junction.daily_parts AS p WHERE p.user_id = uid;
    INSERT INTO junction.daily_parts AS p
        (user_id, resource, hour, calendar_date, provider, source_type, part, n, sum, min, max, last_value)
    SELECT s.user_id, s.resource, date_trunc('hour', s.time, 'UTC'), coalesce(s.local_time, s.time AT TIME ZONE 'UTC')::date,
           s.provider, s.source_type, s.part, count(*), sum(s.value ORDER BY s.time, s.type, s.workout_id),
           min(s.value), max(s.value),
           (array_agg(s.value ORDER BY s.time DESC, s.type DESC, s.workout_id DESC)
              FILTER (WHERE (s.resource, s.part) IN (SELECT m.resource, m.part FROM junction.daily_metrics AS m
                                                     WHERE m.aggregate = 'pick')))[1]
    FROM (SELECT s.user_id, s.resource, s.time, s.local_time, s.provider, s.source_type, s.type, s.workout_id, mp.part,
                 junction._daily_part_value(mp.part, s.type, s.value, s.extra) AS value
          FROM junction.samples AS s
          -- the parts the resource's metrics read
          JOIN (SELECT DISTINCT m.resource, m.part FROM junction.daily_metrics AS m) AS mp ON mp.resource = s.resource
          WHERE s.user_id = uid
          OFFSET 0) AS s
    WHERE s.value IS NOT NULL
    GROUP BY s.user_id, s.resource, date_trunc('hour', s.time, 'UTC'), coalesce(s.local_time, s.time AT TIME ZONE 'UTC')::date,
             s.provider, s.source_type, s.part;
    FOR res IN SELECT DISTINCT r.name, r.kind, r.table_name
               FROM junction.resources AS r
               JOIN junction.daily_metrics AS m ON m.resource = r.name
               WHERE r.kind IN ('summary', 'timeseries')
               ORDER BY r.name
    LOOP
        IF res.kind = 'summary' THEN
            EXECUTE format('SELECT array_agg(DISTINCT ROW(t.user_id, t.calendar_date, $2)::junction.daily_key)
                            FROM junction.%I AS t
                            WHERE t.calendar_date IS NOT NULL AND t.user_id = $1', res.table_name)
              INTO more USING uid, res.name;
        ELSE
            SELECT array_agg(DISTINCT ROW(p.user_id, p.calendar_date, res.name)::junction.daily_key)
              INTO more
            FROM junction.daily_parts AS p
            WHERE p.resource = res.name AND p.user_id = uid;
        END IF;
        keys := keys || coalesce(more, '{}'::junction.daily_key[]);
    END LOOP;
    -- days without any candidate left (a metric removed, rows deleted) go too
    DELETE FROM junction.daily AS d WHERE d.user_id = uid;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n + junction._daily_refresh(keys, true);
END
$fn$;
COMMENT ON FUNCTION junction_rebuild_daily(uuid) IS
  'recompute junction.daily from the typed tables (every user, or one): after changing junction.source_priorities or junction.daily_metrics; returns rows deleted plus rows written';

-- Junction's source priorities, per data_type (PriorityResource in Junction's OpenAPI
-- specification: activity, body, sleep, timeseries, workouts). The response is an array of
-- objects whose fields the specification leaves open; each one names a provider (source.slug,
-- source.provider, provider or slug) and a priority (else its position in the list counts).
CREATE FUNCTION junction_sync_source_priorities()
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    data_type text;
    answer    jsonb;
    n         bigint;
    total     bigint := 0;
BEGIN
    DELETE FROM junction.source_priorities AS p WHERE p.origin = 'junction';
    FOREACH data_type IN ARRAY ARRAY['activity', 'body', 'sleep', 'timeseries', 'workouts'] LOOP
        answer := @extschema@.junction_api('GET', '/v2/team/source/priorities',
                                           jsonb_build_object('data_type', data_type));
        IF jsonb_typeof(answer) IS DISTINCT FROM 'array' THEN
            RAISE EXCEPTION 'junction API GET /v2/team/source/priorities: response is not an array'
                USING ERRCODE = '22P02',
                      DETAIL = format('The response starts with: %s', left(answer::text, 80));
        END IF;
        -- one row per provider (and source type, if Junction names one): the best (lowest) priority
        INSERT INTO junction.source_priorities AS p (resource, provider, source_type, priority, origin, data)
        SELECT DISTINCT ON (x.provider, x.source_type)
               data_type, x.provider, x.source_type, x.priority, 'junction', x.obj
        FROM (SELECT o.obj, junction._provider(o.obj) AS provider,
                     coalesce(o.obj ->> 'source_type', o.obj #>> '{source,type}', '') AS source_type,
                     CASE WHEN jsonb_typeof(o.obj -> 'priority') = 'number'
                          THEN (o.obj ->> 'priority')::numeric::integer
                          ELSE o.ord::integer END AS priority
              FROM jsonb_array_elements(answer) WITH ORDINALITY AS o(obj, ord)
              WHERE jsonb_typeof(o.obj) = 'object') AS x
        WHERE x.provider IS NOT NULL
        ORDER BY x.provider, x.source_type, x.priority;
        GET DIAGNOSTICS n = ROW_COUNT;
        total := total + n;
    END LOOP;
    RETURN total;
END
$fn$;
COMMENT ON FUNCTION junction_sync_source_priorities() IS
  'replace Junction''s rows of junction.source_priorities with GET /v2/team/source/priorities (each data_type); team rows stay; returns rows stored (then run junction_rebuild_daily())';

-- One row per user and day, one column per metric of junction.daily_metrics (the built-in ones).
-- The column list is the registry's metrics: the daily regress test fails when a metric has no
-- column here or a column no metric (a metric you add yourself is in junction.daily, and in a
-- view of your own).
CREATE VIEW junction.daily_wide AS
SELECT d.user_id, d.calendar_date,
       max(d.value) FILTER (WHERE d.metric = 'steps') AS steps,
       max(d.value) FILTER (WHERE d.metric = 'calories_active') AS calories_active,
       max(d.value) FILTER (WHERE d.metric = 'calories_total') AS calories_total,
       max(d.value) FILTER (WHERE d.metric = 'calories_basal') AS calories_basal,
       max(d.value) FILTER (WHERE d.metric = 'distance') AS distance,
       max(d.value) FILTER (WHERE d.metric = 'floors_climbed') AS floors_climbed,
       max(d.value) FILTER (WHERE d.metric = 'sleep_total') AS sleep_total,
       max(d.value) FILTER (WHERE d.metric = 'sleep_deep') AS sleep_deep,
       max(d.value) FILTER (WHERE d.metric = 'sleep_rem') AS sleep_rem,
       max(d.value) FILTER (WHERE d.metric = 'sleep_light') AS sleep_light,
       max(d.value) FILTER (WHERE d.metric = 'sleep_awake') AS sleep_awake,
       max(d.value) FILTER (WHERE d.metric = 'sleep_efficiency') AS sleep_efficiency,
       max(d.value) FILTER (WHERE d.metric = 'sleep_score') AS sleep_score,
       max(d.value) FILTER (WHERE d.metric = 'resting_heart_rate') AS resting_heart_rate,
       max(d.value) FILTER (WHERE d.metric = 'hrv_average') AS hrv_average,
       max(d.value) FILTER (WHERE d.metric = 'respiratory_rate') AS respiratory_rate,
       max(d.value) FILTER (WHERE d.metric = 'heart_rate_average') AS heart_rate_average,
       max(d.value) FILTER (WHERE d.metric = 'heart_rate_min') AS heart_rate_min,
       max(d.value) FILTER (WHERE d.metric = 'heart_rate_max') AS heart_rate_max,
       max(d.value) FILTER (WHERE d.metric = 'weight') AS weight,
       max(d.value) FILTER (WHERE d.metric = 'body_fat') AS body_fat,
       max(d.value) FILTER (WHERE d.metric = 'workout_count') AS workout_count,
       max(d.value) FILTER (WHERE d.metric = 'workout_duration') AS workout_duration,
       max(d.value) FILTER (WHERE d.metric = 'glucose_average') AS glucose_average,
       max(d.value) FILTER (WHERE d.metric = 'blood_oxygen_average') AS blood_oxygen_average,
       max(d.value) FILTER (WHERE d.metric = 'stress_level_average') AS stress_level_average,
       max(d.value) FILTER (WHERE d.metric = 'vo2_max') AS vo2_max,
       max(d.value) FILTER (WHERE d.metric = 'water') AS water,
       max(d.value) FILTER (WHERE d.metric = 'body_temperature') AS body_temperature,
       max(d.value) FILTER (WHERE d.metric = 'body_temperature_delta') AS body_temperature_delta,
       max(d.value) FILTER (WHERE d.metric = 'caffeine') AS caffeine,
       max(d.value) FILTER (WHERE d.metric = 'carbohydrates') AS carbohydrates,
       max(d.value) FILTER (WHERE d.metric = 'mindfulness_minutes') AS mindfulness_minutes,
       max(d.value) FILTER (WHERE d.metric = 'daylight_exposure') AS daylight_exposure,
       max(d.value) FILTER (WHERE d.metric = 'stand_duration') AS stand_duration,
       max(d.value) FILTER (WHERE d.metric = 'wheelchair_push') AS wheelchair_push,
       max(d.value) FILTER (WHERE d.metric = 'insulin_injection') AS insulin_injection,
       max(d.value) FILTER (WHERE d.metric = 'handwashing') AS handwashing,
       max(d.value) FILTER (WHERE d.metric = 'inhaler_usage') AS inhaler_usage,
       max(d.value) FILTER (WHERE d.metric = 'fall') AS fall,
       max(d.value) FILTER (WHERE d.metric = 'heart_rate_alert') AS heart_rate_alert,
       max(d.value) FILTER (WHERE d.metric = 'sleep_apnea_alert') AS sleep_apnea_alert,
       max(d.value) FILTER (WHERE d.metric = 'sleep_breathing_disturbance') AS sleep_breathing_disturbance,
       max(d.value) FILTER (WHERE d.metric = 'workout_distance') AS workout_distance,
       max(d.value) FILTER (WHERE d.metric = 'workout_swimming_stroke') AS workout_swimming_stroke,
       max(d.value) FILTER (WHERE d.metric = 'afib_burden') AS afib_burden,
       max(d.value) FILTER (WHERE d.metric = 'uv_exposure') AS uv_exposure,
       max(d.value) FILTER (WHERE d.metric = 'basal_body_temperature') AS basal_body_temperature,
       max(d.value) FILTER (WHERE d.metric = 'heart_rate_recovery_one_minute') AS heart_rate_recovery_one_minute,
       max(d.value) FILTER (WHERE d.metric = 'body_mass_index') AS body_mass_index,
       max(d.value) FILTER (WHERE d.metric = 'lean_body_mass') AS lean_body_mass,
       max(d.value) FILTER (WHERE d.metric = 'waist_circumference') AS waist_circumference,
       max(d.value) FILTER (WHERE d.metric = 'forced_expiratory_volume_1') AS forced_expiratory_volume_1,
       max(d.value) FILTER (WHERE d.metric = 'forced_vital_capacity') AS forced_vital_capacity,
       max(d.value) FILTER (WHERE d.metric = 'peak_expiratory_flow_rate') AS peak_expiratory_flow_rate,
       max(d.value) FILTER (WHERE d.metric = 'blood_pressure_systolic') AS blood_pressure_systolic,
       max(d.value) FILTER (WHERE d.metric = 'blood_pressure_diastolic') AS blood_pressure_diastolic,
       max(d.value) FILTER (WHERE d.metric = 'cholesterol_total') AS cholesterol_total,
       max(d.value) FILTER (WHERE d.metric = 'cholesterol_ldl') AS cholesterol_ldl,
       max(d.value) FILTER (WHERE d.metric = 'cholesterol_hdl') AS cholesterol_hdl,
       max(d.value) FILTER (WHERE d.metric = 'triglycerides') AS triglycerides,
       max(d.value) FILTER (WHERE d.metric = 'ige_max') AS ige_max,
       max(d.value) FILTER (WHERE d.metric = 'igg_max') AS igg_max,
       max(d.value) FILTER (WHERE d.metric = 'stand_hour') AS stand_hour,
       max(d.updated_at) AS updated_at
FROM junction.daily AS d
GROUP BY d.user_id, d.calendar_date;
COMMENT ON VIEW junction.daily_wide IS
  'junction.daily pivoted for dashboards: one row per user and day, one column per built-in metric (units as in junction.daily_metrics)';

SELECT pg_extension_config_dump('junction.source_priorities', '');
SELECT pg_extension_config_dump('junction.daily_metrics', 'WHERE NOT builtin');
SELECT pg_extension_config_dump('junction.daily', '');
SELECT pg_extension_config_dump('junction.daily_parts', '');
SELECT pg_extension_config_dump('junction.daily_pending_hours', '');
SELECT pg_extension_config_dump('junction.daily_pending_days', '');
