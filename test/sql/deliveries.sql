-- test/sql/deliveries.sql — a deterministic generator of realistic signed
-- deliveries for the fault tests and benchmarks (psql: \i test/sql/deliveries.sql).
--   70% timeseries deliveries of 20 samples (heartrate, steps, glucose); delivery
--       i+150 has the same user, resource and provider as i and a bucket starting
--       10 minutes later, so half its samples re-send earlier keys with new values;
--   30% summaries (activity, sleep, body); delivery i+1500 carries the same
--       summary id for the same user with a later updated_at;
--   every 50th delivery repeats the previous message (same svix-id, same body).
-- jx_test_delivery(i, secret, ts) -> (svix_id, headers, body); output does not depend on TimeZone

CREATE OR REPLACE FUNCTION public.jx_test_body(i integer) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
SELECT CASE
  WHEN i % 10 < 7 THEN
    -- timeseries: user i%50, resource i%3, a 20-sample bucket starting at minute (i/150)*10
    json_build_object(
      'event_type', 'daily.data.' || (ARRAY['heartrate','steps','glucose'])[1 + i % 3] || '.created',
      'user_id', format('0190b2a0-0000-7000-8000-%s', lpad((i % 50)::text, 12, '0')),
      'client_user_id', 'client-' || (i % 50),
      'team_id', '0190b2a0-0000-7000-8000-00000000aaaa',
      'data', json_build_object(
        'source', json_build_object('provider', (ARRAY['oura','apple_health_kit'])[1 + (i / 300) % 2],
                                    'type', 'watch', 'app_id', NULL, 'device_id', NULL),
        'data', (SELECT json_agg(json_build_object(
                    'timestamp', to_char((timestamptz '2026-11-01 00:00+00' + make_interval(mins => (i / 150) * 10 + k)) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"+00:00"'),
                    'start', to_char((timestamptz '2026-11-01 00:00+00' + make_interval(mins => (i / 150) * 10 + k)) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"+00:00"'),
                    'end', to_char((timestamptz '2026-11-01 00:01+00' + make_interval(mins => (i / 150) * 10 + k)) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"+00:00"'),
                    'timezone_offset', 3600, 'type', NULL,
                    'unit', (ARRAY['bpm','count','mmol/L'])[1 + i % 3],
                    'value', 50 + (i * 7 + k * 13) % 90) ORDER BY k)
                 FROM generate_series(0, 19) k)))::text
  ELSE
    -- summary: id (i/3)%500 of resource i%3 for user i%50; updated_at grows with i
    json_build_object(
      'event_type', 'daily.data.' || (ARRAY['activity','sleep','body'])[1 + i % 3] || (CASE WHEN i < 300 THEN '.created' ELSE '.updated' END),
      'user_id', format('0190b2a0-0000-7000-8000-%s', lpad((i % 50)::text, 12, '0')),
      'client_user_id', 'client-' || (i % 50),
      'team_id', '0190b2a0-0000-7000-8000-00000000aaaa',
      'data', json_build_object(
        'id', format('0190b2a0-1111-7000-8000-%s', lpad(((i / 3) % 500)::text, 12, '0')),
        'user_id', format('0190b2a0-0000-7000-8000-%s', lpad((i % 50)::text, 12, '0')),
        'calendar_date', '2026-11-' || lpad((1 + ((i / 3) % 500) % 28)::text, 2, '0'),
        'source', json_build_object('provider', 'oura', 'type', 'ring'),
        'steps', (i * 31) % 20000, 'calories_total', 1800 + i % 900, 'calories_active', 200 + i % 700,
        'distance', (i * 17) % 15000, 'low', 10, 'medium', 20, 'high', 5,
        'bedtime_start', '2026-11-01T22:00:00+00:00', 'bedtime_stop', '2026-11-02T06:00:00+00:00',
        'duration', 28800, 'total', 27000, 'awake', 1800, 'light', 14000, 'rem', 6000, 'deep', 7000,
        'score', 50 + i % 50, 'type', 'long_sleep', 'state', 'confirmed',
        'weight', 60 + (i % 300) / 10.0, 'fat', 20 + (i % 100) / 10.0,
        'created_at', '2026-11-01T00:00:00+00:00',
        'updated_at', to_char((timestamptz '2026-11-01 00:00+00' + make_interval(secs => i)) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"+00:00"')))::text
END
$$;

CREATE OR REPLACE FUNCTION public.jx_test_delivery(i integer, secret text, ts bigint,
                                                   OUT svix_id text, OUT headers jsonb, OUT body text)
LANGUAGE sql AS $$
SELECT m.id,
       jsonb_build_object('svix-id', m.id, 'svix-timestamp', ts::text,
                          'svix-signature', junction_sign_webhook(secret, m.id, ts, b.body)),
       b.body
FROM (SELECT CASE WHEN i % 50 = 0 AND i > 0 THEN i - 1 ELSE i END AS j) s,
     LATERAL (SELECT 'msg_test_' || lpad(s.j::text, 9, '0') AS id) m,
     LATERAL (SELECT public.jx_test_body(s.j) AS body) b
$$;

-- A fingerprint of the typed tables' business content (ignores arrival bookkeeping
-- such as inbox ids and receive times, which differ between runs).
CREATE OR REPLACE FUNCTION public.jx_typed_fingerprint() RETURNS TABLE (tbl text, nrows bigint, md5 text)
LANGUAGE plpgsql AS $$
DECLARE
    r record;
    cols text;
BEGIN
    FOR r IN SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = 'junction' AND c.relkind = 'r'
                AND c.relname NOT IN ('inbox', 'webhook_secrets', 'resources', 'daily_metrics', 'source_priorities')
              ORDER BY 1
    LOOP
        SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) INTO cols
          FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
         WHERE c.relname = r.relname AND c.relnamespace = 'junction'::regnamespace
           AND a.attnum > 0 AND NOT a.attisdropped
           AND a.attname NOT IN ('received_seq', 'inbox_id', 'received_at', 'processed_at', 'loaded_at', 'completed_at', 'first_seen_at', 'last_event_at')
           -- junction.daily: when a value last changed is the time of the run, not data
           AND NOT (r.relname = 'daily' AND a.attname = 'updated_at');
        RETURN QUERY EXECUTE format(
            'SELECT %L::text, count(*), md5(coalesce(string_agg(t::text, %L ORDER BY t::text), %L)) FROM (SELECT %s FROM junction.%I) t',
            r.relname, E'\n', '', cols, r.relname);
    END LOOP;
END
$$;

-- Wait until no delivery is pending and junction.daily's queue is empty (the benchmarks' end of a
-- drain); returns the seconds since t0.
CREATE OR REPLACE FUNCTION public.jx_wait_drained(t0 timestamptz) RETURNS float8 LANGUAGE plpgsql AS $$
BEGIN
  LOOP
    PERFORM 1 FROM junction.inbox WHERE status = 'pending' LIMIT 1;
    IF NOT FOUND THEN
      PERFORM 1 FROM junction.daily_pending_hours LIMIT 1;
      IF NOT FOUND THEN PERFORM 1 FROM junction.daily_pending_days LIMIT 1; END IF;
    END IF;
    IF NOT FOUND THEN RETURN extract(epoch FROM clock_timestamp() - t0); END IF;
    PERFORM pg_sleep(0.01);
  END LOOP;
END $$;
