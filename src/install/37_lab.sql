-- ---------------------------------------------------------------------------------------------
-- Lab testing: orders, appointments, critical results, biomarker results.
--
-- Facts (Junction's OpenAPI spec, tryVital/vital-fern-api fern/openapi/openapi.json):
--   ClientFacingOrder: id, user_id, team_id, status (OrderTopLevelStatus: received,
--     collecting_sample, sample_with_lab, completed, cancelled, failed), events[] ({id, created_at,
--     status: OrderStatus "<top>.<method>.<detail>"}), lab_test {id, slug, name, method, lab{slug}},
--     patient_details {dob, gender, first_name, last_name, phone_number, email, ...},
--     patient_address, details, sample_id, notes, priority, billing_type, interpretation (normal,
--     abnormal, critical), has_missing_results, expected_result_by_date, worst_case_result_by_date,
--     created_at, updated_at.
--   ClientFacingAppointment: id, user_id, order_id, address, location, start_at, end_at,
--     iana_timezone, type, provider, status, provider_id, external_id, can_reschedule,
--     event_status, event_data, events[] ({created_at, status, data}). No updated_at: the newest
--     events[].created_at stands for it.
--   GET /v3/order/{order_id}/result -> LabResultsRaw {metadata, results: [BiomarkerResult] | {},
--     missing_results, sample_information}; BiomarkerResult: name, slug, value, result, type, unit,
--     timestamp, notes, reference_range, min_range_value, max_range_value, is_above_max_range,
--     is_below_min_range, interpretation, loinc, loinc_slug, provider_id, source_markers,
--     performing_laboratory, source_sample_id.
--   labtest.result.critical (ClientFacingCriticalResultIdentified, tryVital/docs docs/swagger.json):
--     data = ClientFacingCriticalResult {order_id, sample_id, status (final, partial),
--     interpretation, team_id, user_id, created_at, updated_at}.
--   GET /v3/orders?user_id=&page=&size= -> GetOrdersResponse {orders, total, page, size}
--     (page >= 1, default 1; size 1..100, default 50).
-- ---------------------------------------------------------------------------------------------
CREATE TABLE junction.lab_orders (
    user_id                   uuid NOT NULL,
    id                        uuid NOT NULL,
    team_id                   uuid,
    status                    text,
    low_level_status          text,
    events                    jsonb,
    lab_test_id               uuid,
    lab_test_slug             text,
    lab_test_name             text,
    lab_test_method           text,
    lab_slug                  text,
    sample_id                 text,
    priority                  boolean,
    billing_type              text,
    interpretation            text,
    has_missing_results       boolean,
    expected_result_by_date   date,
    worst_case_result_by_date date,
    patient_gender            text,
    patient_dob               date,
    created_at                timestamptz,
    updated_at                timestamptz,
    critical                  boolean NOT NULL DEFAULT false,
    result_fetch_status       text CONSTRAINT lab_orders_result_fetch_status_check
                                   CHECK (result_fetch_status IN ('pending', 'running', 'done', 'failed')),
    result_attempts           integer NOT NULL DEFAULT 0,
    result_next_attempt_at    timestamptz,
    result_fetch_error        text,
    result_sqlstate           text,
    results_fetched_at        timestamptz,
    result_metadata           jsonb,
    data                      jsonb NOT NULL,
    received_seq              bigint NOT NULL,
    result_claimed_by         integer,
    CONSTRAINT lab_orders_pkey PRIMARY KEY (user_id, id)
);
COMMENT ON TABLE junction.lab_orders IS
  'lab test orders (labtest.order.*, GET /v3/orders): the newest updated_at wins, ties to the later received; data = the winning order object';
COMMENT ON COLUMN junction.lab_orders.status IS 'OrderTopLevelStatus: received, collecting_sample, sample_with_lab, completed, cancelled, failed';
COMMENT ON COLUMN junction.lab_orders.low_level_status IS 'status of the newest entry of events (OrderStatus, "<status>.<method>.<detail>")';
COMMENT ON COLUMN junction.lab_orders.events IS 'the status history: [{id, created_at, status}]';
COMMENT ON COLUMN junction.lab_orders.patient_gender IS 'patient_details.gender (names, phone, email and address stay in data only)';
COMMENT ON COLUMN junction.lab_orders.critical IS 'true once a labtest.result.critical event named this order (whatever the order of arrival)';
COMMENT ON COLUMN junction.lab_orders.result_fetch_status IS 'the automatic fetch of GET /v3/order/{id}/result into junction.lab_results: null (no results yet), pending, running, done, failed; a newer completed version, a new partial result or a critical result queues it again';
COMMENT ON COLUMN junction.lab_orders.result_claimed_by IS 'pid of the backend fetching the results (a running fetch whose backend is gone is retried)';
COMMENT ON COLUMN junction.lab_orders.result_next_attempt_at IS 'a failed result fetch is retried from this time on (null: now)';
COMMENT ON COLUMN junction.lab_orders.result_metadata IS 'the metadata object of the last fetched result (LabResultsMetadata: status, laboratory, specimen_number, interpretation, ...)';
CREATE INDEX lab_orders_result_pending ON junction.lab_orders (updated_at) WHERE result_fetch_status = 'pending';
CREATE INDEX lab_orders_status ON junction.lab_orders (status, updated_at);

CREATE TABLE junction.lab_appointments (
    user_id        uuid NOT NULL,
    id             uuid NOT NULL,
    order_id       uuid,
    type           text,
    provider       text,
    status         text,
    event_status   text,
    start_at       timestamptz,
    end_at         timestamptz,
    iana_timezone  text,
    provider_id    text,
    external_id    text,
    can_reschedule boolean,
    events         jsonb,
    updated_at     timestamptz,
    data           jsonb NOT NULL,
    received_seq   bigint NOT NULL,
    CONSTRAINT lab_appointments_pkey PRIMARY KEY (user_id, id)
);
COMMENT ON TABLE junction.lab_appointments IS
  'lab appointments (labtest.appointment.*): the newest updated_at wins, ties to the later received';
COMMENT ON COLUMN junction.lab_appointments.updated_at IS 'the object''s updated_at if it has one, else the newest events[].created_at (ClientFacingAppointment has no updated_at)';
COMMENT ON COLUMN junction.lab_appointments.status IS 'AppointmentStatus: confirmed, pending, in_progress, completed, cancelled';
CREATE INDEX lab_appointments_order_id ON junction.lab_appointments (user_id, order_id);

CREATE TABLE junction.lab_results (
    user_id               uuid NOT NULL,
    order_id              uuid NOT NULL,
    slug                  text NOT NULL,
    name                  text,
    value                 double precision,
    result                text,
    type                  text,
    unit                  text,
    "timestamp"           timestamptz,
    notes                 text,
    reference_range       text,
    min_range_value       double precision,
    max_range_value       double precision,
    is_above_max_range    boolean,
    is_below_min_range    boolean,
    interpretation        text,
    loinc                 text,
    loinc_slug            text,
    provider_id           text,
    performing_laboratory text,
    source_sample_id      text,
    critical              boolean GENERATED ALWAYS AS (interpretation = 'critical') STORED,
    fetched_at            timestamptz NOT NULL DEFAULT now(),
    data                  jsonb NOT NULL,
    CONSTRAINT lab_results_pkey PRIMARY KEY (user_id, order_id, slug)
);
COMMENT ON TABLE junction.lab_results IS
  'one row per biomarker result of an order (GET /v3/order/{order_id}/result); a refetch replaces the order''s rows (a corrected result replaces the old one)';
COMMENT ON COLUMN junction.lab_results.slug IS 'the biomarker''s slug, or its name when the slug is empty: the key within an order';
COMMENT ON COLUMN junction.lab_results.result IS 'the result as reported (text); value is its number';
COMMENT ON COLUMN junction.lab_results.critical IS 'interpretation = critical';

CREATE TABLE junction.lab_critical_results (
    user_id         uuid NOT NULL,
    order_id        uuid NOT NULL,
    sample_id       text,
    status          text,
    interpretation  text,
    created_at      timestamptz,
    updated_at      timestamptz,
    received_at     timestamptz NOT NULL,
    acknowledged_at timestamptz,
    acknowledged_by text,
    data            jsonb NOT NULL,
    received_seq    bigint NOT NULL,
    CONSTRAINT lab_critical_results_pkey PRIMARY KEY (user_id, order_id)
);
COMMENT ON TABLE junction.lab_critical_results IS
  'labtest.result.critical events (ClientFacingCriticalResult), one row per order: the newest updated_at wins, ties to the later received; a newer version re-opens an acknowledged alert';
COMMENT ON COLUMN junction.lab_critical_results.status IS 'the results status: final or partial';
COMMENT ON COLUMN junction.lab_critical_results.acknowledged_at IS 'set by junction_lab_acknowledge_critical; null again when a newer version of the critical result arrives';
CREATE INDEX lab_critical_results_open ON junction.lab_critical_results (received_at) WHERE acknowledged_at IS NULL;

-- What a clinician's alerting job selects: critical results not yet acknowledged, one row per
-- critical biomarker once the results are fetched (one row with null biomarker before that).
CREATE VIEW junction.lab_critical_alerts AS
SELECT c.user_id, c.order_id, c.received_at, o.status AS order_status, o.lab_test_name,
       r.slug AS biomarker_slug, r.name AS biomarker_name, r.result, r.value, r.unit,
       r.reference_range, r.interpretation, r."timestamp" AS result_timestamp
FROM junction.lab_critical_results AS c
LEFT JOIN junction.lab_orders AS o ON o.user_id = c.user_id AND o.id = c.order_id
LEFT JOIN junction.lab_results AS r ON r.user_id = c.user_id AND r.order_id = c.order_id AND r.critical
WHERE c.acknowledged_at IS NULL;
COMMENT ON VIEW junction.lab_critical_alerts IS
  'critical lab results not yet acknowledged: one row per critical biomarker (biomarker null until the results are fetched)';

-- Lab report parsing (docs/lab/report-parsing/overview.mdx): lab_report.parsing_job.created /
-- .updated carry the job {id, status (started, processing, pending_review, completed, failed),
-- failure_reason, data: {metadata, results: [{test_name, value, type, units, min_reference_range,
-- max_reference_range, source_panel_name, loinc_matches: [{loinc_code, loinc_name, display_name,
-- aliases, confidence_score}], interpretation, is_above_max_range, is_below_min_range}]},
-- needs_human_review, is_reviewed}. A job has no updated_at: its status only moves forward, so the
-- furthest status wins (then the object's updated_at if it has one, then the later received).
CREATE TABLE junction.lab_report_parsing_jobs (
    user_id            uuid NOT NULL,
    id                 uuid NOT NULL,
    status             text,
    failure_reason     text,
    needs_human_review boolean,
    is_reviewed        boolean,
    metadata           jsonb,
    created_at         timestamptz,
    updated_at         timestamptz,
    data               jsonb NOT NULL,
    received_seq       bigint NOT NULL,
    CONSTRAINT lab_report_parsing_jobs_pkey PRIMARY KEY (user_id, id)
);
COMMENT ON TABLE junction.lab_report_parsing_jobs IS
  'lab report parsing jobs (lab_report.parsing_job.*): the furthest status wins (started < processing < pending_review < completed, failed), then updated_at, then the later received';
COMMENT ON COLUMN junction.lab_report_parsing_jobs.metadata IS 'data.metadata of the parsed report (patient, lab_name, date_reported, date_collected, specimen_number)';

CREATE TABLE junction.lab_report_results (
    user_id             uuid NOT NULL,
    job_id              uuid NOT NULL,
    position            integer NOT NULL,
    test_name           text,
    value               text,
    value_number        double precision,
    type                text,
    units               text,
    min_reference_range double precision,
    max_reference_range double precision,
    source_panel_name   text,
    interpretation      text,
    is_above_max_range  boolean,
    is_below_min_range  boolean,
    loinc               text,
    loinc_name          text,
    loinc_confidence    double precision,
    data                jsonb NOT NULL,
    CONSTRAINT lab_report_results_pkey PRIMARY KEY (user_id, job_id, position)
);
COMMENT ON TABLE junction.lab_report_results IS
  'the biomarkers a parsing job extracted (a sibling of lab_results: the parser''s shape differs), one row per entry of data.results, replaced with each winning version of the job';
COMMENT ON COLUMN junction.lab_report_results.position IS 'the entry''s position in data.results (a report may list a test twice, in two panels)';
COMMENT ON COLUMN junction.lab_report_results.loinc IS 'the best LOINC match (loinc_matches[0].loinc_code)';

-- ---------------------------------------------------------------------------------------------
-- Upserts (the one load path for webhooks and junction_sync_lab).
-- ---------------------------------------------------------------------------------------------
-- The newest status of an events array ([{created_at, status}]): latest created_at, then position.
CREATE FUNCTION junction._lab_latest_event(events jsonb, OUT status text, OUT created_at timestamptz)
RETURNS record
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'
AS $$
    SELECT e.value ->> 'status', (e.value ->> 'created_at')::timestamptz
    FROM jsonb_array_elements(CASE jsonb_typeof(events) WHEN 'array' THEN events END) WITH ORDINALITY AS e
    ORDER BY (e.value ->> 'created_at')::timestamptz DESC NULLS LAST, e.ordinality DESC
    LIMIT 1
$$;
COMMENT ON FUNCTION junction._lab_latest_event(jsonb) IS
  'the status and created_at of the newest entry of an events array (latest created_at, then the last listed)';

-- Whether an order version has results to fetch: completed, or a partial result (Junction sends
-- an update per partial result when the team enables them: low-level status *.partial_results).
CREATE FUNCTION junction._lab_results_due(status text, low_level_status text)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT coalesce(status = 'completed' OR low_level_status LIKE '%.partial_results', false) $$;
COMMENT ON FUNCTION junction._lab_results_due(text, text) IS
  'true for an order version whose results can be fetched: status completed, or a low-level *.partial_results status';

CREATE FUNCTION junction._upsert_lab_orders(items junction.typing_item[])
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'
AS $fn$
DECLARE
    n    bigint;
    crit uuid[];
BEGIN
    -- the orders a critical result already names (read first: Citus plans no correlated subquery
    -- on a distributed table beside a set-returning function)
    crit := ARRAY(SELECT c.order_id
                  FROM unnest(items) AS i
                  JOIN junction.lab_critical_results AS c
                    ON c.user_id = i.user_id AND c.order_id = (i.obj ->> 'id')::uuid);
    INSERT INTO junction.lab_orders AS t
        (user_id, id, team_id, status, low_level_status, events, lab_test_id, lab_test_slug,
         lab_test_name, lab_test_method, lab_slug, sample_id, priority, billing_type, interpretation,
         has_missing_results, expected_result_by_date, worst_case_result_by_date, patient_gender,
         patient_dob, created_at, updated_at, critical, result_fetch_status, data, received_seq)
    SELECT w.user_id, w.id, (w.obj ->> 'team_id')::uuid, w.obj ->> 'status',
           (junction._lab_latest_event(w.obj -> 'events')).status, w.obj -> 'events',
           (w.obj #>> '{lab_test,id}')::uuid, w.obj #>> '{lab_test,slug}', w.obj #>> '{lab_test,name}',
           w.obj #>> '{lab_test,method}', w.obj #>> '{lab_test,lab,slug}', w.obj ->> 'sample_id',
           (w.obj ->> 'priority')::boolean, w.obj ->> 'billing_type', w.obj ->> 'interpretation',
           (w.obj ->> 'has_missing_results')::boolean, (w.obj ->> 'expected_result_by_date')::date,
           (w.obj ->> 'worst_case_result_by_date')::date, w.obj #>> '{patient_details,gender}',
           ((w.obj #>> '{patient_details,dob}')::timestamptz AT TIME ZONE 'UTC')::date,
           (w.obj ->> 'created_at')::timestamptz, w.updated_at,
           w.id = ANY (crit),
           CASE WHEN junction._lab_results_due(w.obj ->> 'status', (junction._lab_latest_event(w.obj -> 'events')).status)
                THEN 'pending' END,
           w.obj, w.received_seq
    FROM (SELECT DISTINCT ON (i.user_id, (i.obj ->> 'id')::uuid)
                 i.received_seq, i.user_id, (i.obj ->> 'id')::uuid AS id,
                 (i.obj ->> 'updated_at')::timestamptz AS updated_at, i.obj
          FROM unnest(items) AS i
          ORDER BY i.user_id, (i.obj ->> 'id')::uuid,
                   coalesce((i.obj ->> 'updated_at')::timestamptz, '-infinity') DESC, i.received_seq DESC) AS w
    ORDER BY w.user_id, w.id
    ON CONFLICT (user_id, id) DO UPDATE
    SET team_id = excluded.team_id, status = excluded.status, low_level_status = excluded.low_level_status,
        events = excluded.events, lab_test_id = excluded.lab_test_id, lab_test_slug = excluded.lab_test_slug,
        lab_test_name = excluded.lab_test_name, lab_test_method = excluded.lab_test_method,
        lab_slug = excluded.lab_slug, sample_id = excluded.sample_id, priority = excluded.priority,
        billing_type = excluded.billing_type, interpretation = excluded.interpretation,
        has_missing_results = excluded.has_missing_results,
        expected_result_by_date = excluded.expected_result_by_date,
        worst_case_result_by_date = excluded.worst_case_result_by_date,
        patient_gender = excluded.patient_gender, patient_dob = excluded.patient_dob,
        created_at = excluded.created_at, updated_at = excluded.updated_at,
        critical = t.critical OR excluded.critical, data = excluded.data, received_seq = excluded.received_seq,
        -- a newly completed order, a new partial result, or a newer completed version (a corrected
        -- result) is fetched (again)
        result_fetch_status = CASE
            WHEN junction._lab_results_due(excluded.status, excluded.low_level_status)
                 AND (NOT junction._lab_results_due(t.status, t.low_level_status)
                      OR t.low_level_status IS DISTINCT FROM excluded.low_level_status
                      OR coalesce(jsonb_array_length(CASE jsonb_typeof(excluded.events) WHEN 'array' THEN excluded.events END), 0)
                         > coalesce(jsonb_array_length(CASE jsonb_typeof(t.events) WHEN 'array' THEN t.events END), 0)
                      OR t.result_fetch_status IS NULL OR excluded.updated_at > t.updated_at) THEN 'pending'
            ELSE t.result_fetch_status END,
        result_attempts = CASE
            WHEN junction._lab_results_due(excluded.status, excluded.low_level_status)
                 AND (NOT junction._lab_results_due(t.status, t.low_level_status)
                      OR t.low_level_status IS DISTINCT FROM excluded.low_level_status
                      OR coalesce(jsonb_array_length(CASE jsonb_typeof(excluded.events) WHEN 'array' THEN excluded.events END), 0)
                         > coalesce(jsonb_array_length(CASE jsonb_typeof(t.events) WHEN 'array' THEN t.events END), 0)
                      OR t.result_fetch_status IS NULL OR excluded.updated_at > t.updated_at) THEN 0
            ELSE t.result_attempts END,
        result_next_attempt_at = CASE
            WHEN junction._lab_results_due(excluded.status, excluded.low_level_status)
                 AND (NOT junction._lab_results_due(t.status, t.low_level_status)
                      OR t.low_level_status IS DISTINCT FROM excluded.low_level_status
                      OR coalesce(jsonb_array_length(CASE jsonb_typeof(excluded.events) WHEN 'array' THEN excluded.events END), 0)
                         > coalesce(jsonb_array_length(CASE jsonb_typeof(t.events) WHEN 'array' THEN t.events END), 0)
                      OR t.result_fetch_status IS NULL OR excluded.updated_at > t.updated_at) THEN NULL
            ELSE t.result_next_attempt_at END
    WHERE (coalesce(excluded.updated_at, '-infinity'), excluded.received_seq)
        > (coalesce(t.updated_at, '-infinity'), t.received_seq);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$fn$;
COMMENT ON FUNCTION junction._upsert_lab_orders(junction.typing_item[]) IS
  'upsert lab orders; the newest updated_at wins, then the latest received; a completed order (or a new partial result) queues its result fetch';

CREATE FUNCTION junction._upsert_lab_appointments(items junction.typing_item[])
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'
AS $fn$
DECLARE
    n bigint;
BEGIN
    INSERT INTO junction.lab_appointments AS t
        (user_id, id, order_id, type, provider, status, event_status, start_at, end_at, iana_timezone,
         provider_id, external_id, can_reschedule, events, updated_at, data, received_seq)
    SELECT w.user_id, w.id, (w.obj ->> 'order_id')::uuid, w.obj ->> 'type',
           CASE jsonb_typeof(w.obj -> 'provider') WHEN 'string' THEN w.obj ->> 'provider' END,
           w.obj ->> 'status', w.obj ->> 'event_status', (w.obj ->> 'start_at')::timestamptz,
           (w.obj ->> 'end_at')::timestamptz, w.obj ->> 'iana_timezone', w.obj ->> 'provider_id',
           w.obj ->> 'external_id', (w.obj ->> 'can_reschedule')::boolean, w.obj -> 'events',
           w.updated_at, w.obj, w.received_seq
    FROM (SELECT DISTINCT ON (v.user_id, v.id) v.*
          FROM (SELECT i.received_seq, i.user_id, (i.obj ->> 'id')::uuid AS id, i.obj,
                       coalesce((i.obj ->> 'updated_at')::timestamptz,
                                (junction._lab_latest_event(i.obj -> 'events')).created_at) AS updated_at
                FROM unnest(items) AS i) AS v
          ORDER BY v.user_id, v.id, coalesce(v.updated_at, '-infinity') DESC, v.received_seq DESC) AS w
    ORDER BY w.user_id, w.id
    ON CONFLICT (user_id, id) DO UPDATE
    SET order_id = excluded.order_id, type = excluded.type, provider = excluded.provider,
        status = excluded.status, event_status = excluded.event_status, start_at = excluded.start_at,
        end_at = excluded.end_at, iana_timezone = excluded.iana_timezone,
        provider_id = excluded.provider_id, external_id = excluded.external_id,
        can_reschedule = excluded.can_reschedule, events = excluded.events,
        updated_at = excluded.updated_at, data = excluded.data, received_seq = excluded.received_seq
    WHERE (coalesce(excluded.updated_at, '-infinity'), excluded.received_seq)
        > (coalesce(t.updated_at, '-infinity'), t.received_seq);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$fn$;
COMMENT ON FUNCTION junction._upsert_lab_appointments(junction.typing_item[]) IS
  'upsert lab appointments; the newest updated_at (else newest event) wins, then the latest received';

-- Record critical results: one row per order (the latest received), the order flagged, its
-- results (re)fetched.
CREATE FUNCTION junction._upsert_lab_critical(items junction.typing_item[])
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'
AS $fn$
DECLARE
    n bigint;
BEGIN
    INSERT INTO junction.lab_critical_results AS t
        (user_id, order_id, sample_id, status, interpretation, created_at, updated_at, received_at,
         data, received_seq)
    SELECT w.user_id, w.order_id, w.obj ->> 'sample_id', w.obj ->> 'status', w.obj ->> 'interpretation',
           (w.obj ->> 'created_at')::timestamptz, w.updated_at, w.received_at, w.obj, w.received_seq
    FROM (SELECT DISTINCT ON (i.user_id, (i.obj ->> 'order_id')::uuid)
                 i.user_id, (i.obj ->> 'order_id')::uuid AS order_id,
                 (i.obj ->> 'updated_at')::timestamptz AS updated_at, i.received_at, i.obj, i.received_seq
          FROM unnest(items) AS i
          ORDER BY i.user_id, (i.obj ->> 'order_id')::uuid,
                   coalesce((i.obj ->> 'updated_at')::timestamptz, '-infinity') DESC, i.received_seq DESC) AS w
    ORDER BY w.user_id, w.order_id
    ON CONFLICT (user_id, order_id) DO UPDATE
    SET sample_id = excluded.sample_id, status = excluded.status, interpretation = excluded.interpretation,
        created_at = excluded.created_at, updated_at = excluded.updated_at,
        received_at = excluded.received_at, data = excluded.data, received_seq = excluded.received_seq,
        -- a newer version of a critical result is a new alert
        acknowledged_at = NULL, acknowledged_by = NULL
    WHERE (coalesce(excluded.updated_at, '-infinity'), excluded.received_seq)
        > (coalesce(t.updated_at, '-infinity'), t.received_seq);
    GET DIAGNOSTICS n = ROW_COUNT;

    UPDATE junction.lab_orders AS o
    SET critical = true,
        result_fetch_status = CASE WHEN o.result_fetch_status = 'running' THEN o.result_fetch_status
                                   ELSE 'pending' END,
        result_attempts = CASE WHEN o.result_fetch_status = 'running' THEN o.result_attempts ELSE 0 END,
        result_next_attempt_at = NULL
    FROM (SELECT DISTINCT i.user_id, (i.obj ->> 'order_id')::uuid AS order_id
          FROM unnest(items) AS i) AS c
    WHERE o.user_id = c.user_id AND o.id = c.order_id;
    RETURN n;
END
$fn$;
COMMENT ON FUNCTION junction._upsert_lab_critical(junction.typing_item[]) IS
  'record labtest.result.critical events (junction.lab_critical_results), flag the order critical and queue its result fetch';

-- How far a parsing job's status is along its lifecycle (unknown statuses: 0).
CREATE FUNCTION junction._lab_report_status_rank(status text)
RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT CASE status WHEN 'started' THEN 1 WHEN 'processing' THEN 2 WHEN 'pending_review' THEN 3
                         WHEN 'completed' THEN 4 WHEN 'failed' THEN 4 ELSE 0 END $$;
COMMENT ON FUNCTION junction._lab_report_status_rank(text) IS
  'the order of a parsing job''s statuses: started 1, processing 2, pending_review 3, completed and failed 4, others 0';

CREATE FUNCTION junction._upsert_lab_report_jobs(items junction.typing_item[])
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'
AS $fn$
DECLARE
    users uuid[];
    jobs  uuid[];
    n     bigint;
BEGIN
    -- the jobs: the winning version of each
    WITH won AS (
        INSERT INTO junction.lab_report_parsing_jobs AS t
            (user_id, id, status, failure_reason, needs_human_review, is_reviewed, metadata, created_at,
             updated_at, data, received_seq)
        SELECT w.user_id, w.id, w.obj ->> 'status', w.obj ->> 'failure_reason',
               (w.obj ->> 'needs_human_review')::boolean, (w.obj ->> 'is_reviewed')::boolean,
               w.obj #> '{data,metadata}', (w.obj ->> 'created_at')::timestamptz, w.updated_at, w.obj,
               w.received_seq
        FROM (SELECT DISTINCT ON (v.user_id, v.id) v.*
              FROM (SELECT i.received_seq, i.user_id, coalesce(i.obj ->> 'id', i.obj ->> 'job_id')::uuid AS id,
                           i.obj, junction._lab_report_status_rank(i.obj ->> 'status') AS rank,
                           (i.obj ->> 'updated_at')::timestamptz AS updated_at
                    FROM unnest(items) AS i) AS v
              ORDER BY v.user_id, v.id, v.rank DESC, coalesce(v.updated_at, '-infinity') DESC,
                       v.received_seq DESC) AS w
        ORDER BY w.user_id, w.id
        ON CONFLICT ON CONSTRAINT lab_report_parsing_jobs_pkey DO UPDATE
        SET status = excluded.status, failure_reason = excluded.failure_reason,
            needs_human_review = excluded.needs_human_review, is_reviewed = excluded.is_reviewed,
            metadata = excluded.metadata, created_at = excluded.created_at, updated_at = excluded.updated_at,
            data = excluded.data, received_seq = excluded.received_seq
        WHERE (junction._lab_report_status_rank(excluded.status), coalesce(excluded.updated_at, '-infinity'),
               excluded.received_seq)
            > (junction._lab_report_status_rank(t.status), coalesce(t.updated_at, '-infinity'), t.received_seq)
        RETURNING t.user_id, t.id
    )
    SELECT array_agg(won.user_id), array_agg(won.id) INTO users, jobs FROM won;
    IF jobs IS NULL THEN
        RETURN 0;
    END IF;
    -- their results: replaced by those of the winning version
    DELETE FROM junction.lab_report_results AS r
    WHERE (r.user_id, r.job_id) IN (SELECT u.user_id, u.job_id FROM unnest(users, jobs) AS u(user_id, job_id));
    INSERT INTO junction.lab_report_results
        (user_id, job_id, position, test_name, value, value_number, type, units, min_reference_range,
         max_reference_range, source_panel_name, interpretation, is_above_max_range, is_below_min_range,
         loinc, loinc_name, loinc_confidence, data)
    SELECT j.user_id, j.id, e.ordinality::integer - 1, e.value ->> 'test_name', e.value ->> 'value',
           CASE WHEN e.value ->> 'value' ~ '^\s*[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?\s*$'
                THEN (e.value ->> 'value')::double precision END,
           e.value ->> 'type', e.value ->> 'units',
           (e.value ->> 'min_reference_range')::double precision,
           (e.value ->> 'max_reference_range')::double precision, e.value ->> 'source_panel_name',
           e.value ->> 'interpretation', (e.value ->> 'is_above_max_range')::boolean,
           (e.value ->> 'is_below_min_range')::boolean, e.value #>> '{loinc_matches,0,loinc_code}',
           e.value #>> '{loinc_matches,0,loinc_name}',
           (e.value #>> '{loinc_matches,0,confidence_score}')::double precision, e.value
    FROM junction.lab_report_parsing_jobs AS j
    CROSS JOIN LATERAL jsonb_array_elements(CASE jsonb_typeof(j.data #> '{data,results}')
                                              WHEN 'array' THEN j.data #> '{data,results}' END) WITH ORDINALITY AS e
    WHERE (j.user_id, j.id) IN (SELECT u.user_id, u.job_id FROM unnest(users, jobs) AS u(user_id, job_id))
      AND jsonb_typeof(e.value) = 'object'
    ORDER BY j.user_id, j.id, e.ordinality;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$fn$;
COMMENT ON FUNCTION junction._upsert_lab_report_jobs(junction.typing_item[]) IS
  'upsert lab report parsing jobs and replace their extracted results (junction.lab_report_results); the furthest status wins, then updated_at, then the latest received';

-- Replace an order's biomarker results with those of one LabResultsRaw answer; returns rows loaded.
CREATE FUNCTION junction._load_lab_results(user_id uuid, order_id uuid, answer jsonb)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'
AS $fn$
DECLARE
    n bigint;
BEGIN
    IF jsonb_typeof(answer) IS DISTINCT FROM 'object'
       OR jsonb_typeof(answer -> 'results') NOT IN ('array', 'object') THEN
        RAISE EXCEPTION 'lab result of order %: expected an object with results (array or object), got %',
            order_id, left(coalesce(answer::text, 'null'), 200) USING ERRCODE = '22023';
    END IF;
    -- one statement: the answer's rows, the order's other rows deleted, these upserted
    WITH x AS (
        SELECT DISTINCT ON (k.slug)
               _load_lab_results.user_id AS user_id, _load_lab_results.order_id AS order_id, k.slug,
               r.value ->> 'name' AS name,
               CASE jsonb_typeof(r.value -> 'value') WHEN 'number'
                    THEN (r.value ->> 'value')::double precision END AS value,
               r.value ->> 'result' AS result, r.value ->> 'type' AS type, r.value ->> 'unit' AS unit,
               (r.value ->> 'timestamp')::timestamptz AS "timestamp", r.value ->> 'notes' AS notes,
               r.value ->> 'reference_range' AS reference_range,
               (r.value ->> 'min_range_value')::double precision AS min_range_value,
               (r.value ->> 'max_range_value')::double precision AS max_range_value,
               (r.value ->> 'is_above_max_range')::boolean AS is_above_max_range,
               (r.value ->> 'is_below_min_range')::boolean AS is_below_min_range,
               r.value ->> 'interpretation' AS interpretation, r.value ->> 'loinc' AS loinc,
               r.value ->> 'loinc_slug' AS loinc_slug, r.value ->> 'provider_id' AS provider_id,
               r.value ->> 'performing_laboratory' AS performing_laboratory,
               r.value ->> 'source_sample_id' AS source_sample_id, r.value AS data
        FROM (SELECT e.value, e.ordinality, NULL::text AS key
              FROM jsonb_array_elements(CASE jsonb_typeof(answer -> 'results')
                                          WHEN 'array' THEN answer -> 'results' END) WITH ORDINALITY AS e
              UNION ALL
              SELECT e.value, 0, e.key
              FROM jsonb_each(CASE jsonb_typeof(answer -> 'results')
                                WHEN 'object' THEN answer -> 'results' END) AS e) AS r
        CROSS JOIN LATERAL (
            SELECT coalesce(nullif(r.value ->> 'slug', ''), r.value ->> 'name', r.key) AS slug
        ) AS k
        WHERE jsonb_typeof(r.value) = 'object' AND k.slug IS NOT NULL
        ORDER BY k.slug, r.ordinality DESC
    ), gone AS (
        DELETE FROM junction.lab_results AS l
        WHERE l.user_id = _load_lab_results.user_id AND l.order_id = _load_lab_results.order_id
          AND NOT EXISTS (SELECT FROM x WHERE x.slug = l.slug)
    )
    INSERT INTO junction.lab_results AS t
        (user_id, order_id, slug, name, value, result, type, unit, "timestamp", notes, reference_range,
         min_range_value, max_range_value, is_above_max_range, is_below_min_range, interpretation,
         loinc, loinc_slug, provider_id, performing_laboratory, source_sample_id, fetched_at, data)
    SELECT x.user_id, x.order_id, x.slug, x.name, x.value, x.result, x.type, x.unit, x."timestamp",
           x.notes, x.reference_range, x.min_range_value, x.max_range_value, x.is_above_max_range,
           x.is_below_min_range, x.interpretation, x.loinc, x.loinc_slug, x.provider_id,
           x.performing_laboratory, x.source_sample_id, now(), x.data
    FROM x
    ORDER BY x.slug
    ON CONFLICT ON CONSTRAINT lab_results_pkey DO UPDATE
    SET name = excluded.name, value = excluded.value, result = excluded.result, type = excluded.type,
        unit = excluded.unit, "timestamp" = excluded."timestamp", notes = excluded.notes,
        reference_range = excluded.reference_range, min_range_value = excluded.min_range_value,
        max_range_value = excluded.max_range_value, is_above_max_range = excluded.is_above_max_range,
        is_below_min_range = excluded.is_below_min_range, interpretation = excluded.interpretation,
        loinc = excluded.loinc, loinc_slug = excluded.loinc_slug, provider_id = excluded.provider_id,
        performing_laboratory = excluded.performing_laboratory,
        source_sample_id = excluded.source_sample_id, fetched_at = excluded.fetched_at, data = excluded.data;
    GET DIAGNOSTICS n = ROW_COUNT;
    UPDATE junction.lab_orders AS o
    SET result_metadata = answer -> 'metadata', results_fetched_at = now()
    WHERE o.user_id = _load_lab_results.user_id AND o.id = _load_lab_results.order_id;
    RETURN n;
END
$fn$;
COMMENT ON FUNCTION junction._load_lab_results(uuid, uuid, jsonb) IS
  'replace an order''s rows of junction.lab_results with the biomarkers of one GET /v3/order/{id}/result answer; returns rows loaded';

-- ---------------------------------------------------------------------------------------------
-- The live API (superuser-only, like every junction_ function).
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION junction_lab_orders(user_id uuid DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    page     integer := 1;
    size     constant integer := 100;
    answer   jsonb;
    orders   jsonb := '[]'::jsonb;
    got      integer;
BEGIN
    LOOP
        answer := @extschema@.junction_api('GET', '/v3/orders',
            jsonb_strip_nulls(jsonb_build_object('user_id', junction_lab_orders.user_id,
                                                 'page', page, 'size', size)));
        IF jsonb_typeof(answer -> 'orders') IS DISTINCT FROM 'array' THEN
            RAISE EXCEPTION 'GET /v3/orders: expected {orders: [...]}, got %', left(answer::text, 200)
                USING ERRCODE = '22023';
        END IF;
        got := jsonb_array_length(answer -> 'orders');
        orders := orders || (answer -> 'orders');
        EXIT WHEN got < size OR (jsonb_typeof(answer -> 'total') = 'number'
                                 AND jsonb_array_length(orders) >= (answer ->> 'total')::integer);
        page := page + 1;
        IF page > 10000 THEN
            RAISE EXCEPTION 'GET /v3/orders: more than 10000 pages' USING ERRCODE = '54000';
        END IF;
    END LOOP;
    RETURN orders;
END
$fn$;
COMMENT ON FUNCTION junction_lab_orders(uuid) IS
  'every lab order (GET /v3/orders, all pages), of one user or of the team: a jsonb array of ClientFacingOrder';

CREATE FUNCTION junction_lab_order(order_id uuid)
RETURNS jsonb
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT @extschema@.junction_api('GET', format('/v3/order/%s', junction._require(order_id, 'order_id'))) $$;
COMMENT ON FUNCTION junction_lab_order(uuid) IS 'one lab order (GET /v3/order/{order_id}): a ClientFacingOrder';

CREATE FUNCTION junction_lab_results(order_id uuid)
RETURNS jsonb
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT @extschema@.junction_api('GET', format('/v3/order/%s/result', junction._require(order_id, 'order_id'))) $$;
COMMENT ON FUNCTION junction_lab_results(uuid) IS
  'an order''s results (GET /v3/order/{order_id}/result): {metadata, results: [BiomarkerResult], missing_results, sample_information}';

-- Load orders (and the results of completed ones) through the upserts the events use.
CREATE FUNCTION junction_sync_lab(user_id uuid DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'
AS $fn$
DECLARE
    items junction.typing_item[];
    o     record;
    n     bigint := 0;
    msg   text;
    state text;
BEGIN
    SELECT array_agg(ROW(junction._next_received_seq(), (e.value ->> 'user_id')::uuid, 'order', NULL,
                         now(), e.value)::junction.typing_item ORDER BY e.ordinality)
      INTO items
    FROM jsonb_array_elements(@extschema@.junction_lab_orders(junction_sync_lab.user_id)) WITH ORDINALITY AS e
    WHERE jsonb_typeof(e.value) = 'object';
    IF items IS NULL THEN
        RETURN 0;
    END IF;
    n := junction._upsert_lab_orders(items);
    -- the results of the orders this queued, now, as the queue would; one that cannot be fetched
    -- now stays pending (the backfill worker retries it) with the error to see
    FOR o IN SELECT l.user_id, l.id FROM junction.lab_orders AS l
             WHERE l.result_fetch_status = 'pending'
               AND (l.user_id, l.id) IN (SELECT i.user_id, (i.obj ->> 'id')::uuid FROM unnest(items) AS i)
             ORDER BY 1, 2
    LOOP
        BEGIN
            n := n + junction._load_lab_results(o.user_id, o.id, @extschema@.junction_lab_results(o.id));
            UPDATE junction.lab_orders AS l
            SET result_fetch_status = 'done', result_fetch_error = NULL, result_sqlstate = NULL,
                result_next_attempt_at = NULL
            WHERE l.user_id = o.user_id AND l.id = o.id;
        EXCEPTION WHEN query_canceled THEN
            RAISE;
        WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, state = RETURNED_SQLSTATE;
            UPDATE junction.lab_orders AS l
            SET result_fetch_error = left(msg, 2000), result_sqlstate = state
            WHERE l.user_id = o.user_id AND l.id = o.id;
        END;
    END LOOP;
    RETURN n;
END
$fn$;
COMMENT ON FUNCTION junction_sync_lab(uuid) IS
  'load lab orders (of one user, or all) and the results of completed ones through the webhook upserts; returns rows changed';

-- Acknowledge a critical result: it leaves junction.lab_critical_alerts.
CREATE FUNCTION junction_lab_acknowledge_critical(order_id uuid, acknowledged_by text DEFAULT current_user)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    UPDATE junction.lab_critical_results AS c
    SET acknowledged_at = now(), acknowledged_by = junction_lab_acknowledge_critical.acknowledged_by
    WHERE c.order_id = junction_lab_acknowledge_critical.order_id AND c.acknowledged_at IS NULL;
    RETURN FOUND;
END
$fn$;
COMMENT ON FUNCTION junction_lab_acknowledge_critical(uuid, text) IS
  'mark an order''s critical result acknowledged (it leaves junction.lab_critical_alerts); false if there was none open';

-- The backfill worker's lab job: fetch one order's results into junction.lab_results.
CREATE FUNCTION junction._lab_result_run(user_id uuid, order_id uuid)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    n bigint;
BEGIN
    n := junction._load_lab_results(user_id, order_id, @extschema@.junction_lab_results(order_id));
    UPDATE junction.lab_orders AS o
    SET result_fetch_status = 'done', result_fetch_error = NULL, result_sqlstate = NULL,
        result_next_attempt_at = NULL
    WHERE o.user_id = _lab_result_run.user_id AND o.id = _lab_result_run.order_id
      AND o.result_fetch_status = 'running';
    RETURN n;
END
$fn$;
COMMENT ON FUNCTION junction._lab_result_run(uuid, uuid) IS
  'run a claimed lab result job: fetch and load the order''s results, mark it done (unless re-queued meanwhile)';

-- A failed lab result fetch: the same policy as any backfill (30 s, 2 min, then failed).
CREATE FUNCTION junction._lab_result_failed(user_id uuid, order_id uuid, error text, sqlstate text)
RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    max_attempts constant integer := 3;
    status       text;
    failed_at    constant timestamptz := clock_timestamp();
BEGIN
    UPDATE junction.lab_orders AS o
    SET result_fetch_status = CASE WHEN o.result_attempts < max_attempts THEN 'pending' ELSE 'failed' END,
        -- the time outside the CASE (Citus: no non-IMMUTABLE function inside one); + null is null
        result_next_attempt_at = failed_at + CASE WHEN o.result_attempts < max_attempts
                                                  THEN interval '30 seconds' * power(4, o.result_attempts - 1) END,
        result_fetch_error = left(coalesce(error, 'unknown error'), 2000),
        result_sqlstate = _lab_result_failed.sqlstate
    WHERE o.user_id = _lab_result_failed.user_id AND o.id = _lab_result_failed.order_id
      AND o.result_fetch_status = 'running'
    RETURNING o.result_fetch_status INTO status;
    RETURN status;
END
$$;
COMMENT ON FUNCTION junction._lab_result_failed(uuid, uuid, text, text) IS
  'record a failed lab result fetch: pending again after a backoff while attempts < 3, else failed with the error and SQLSTATE';
