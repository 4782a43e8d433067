-- junction._upsert_samples / junction._group_samples (C): every sample field, the group's source
-- extras, floating time, dedupe within a batch, and the error (SQLSTATE and message) for each kind
-- of bad sample. Each case runs alone, in its own subtransaction, against an empty table. A row
-- reads (resource, provider, source_type, type, workout_id, time UTC, time_end UTC, value, unit,
-- timezone_offset, local_time, floating, extra). These outputs were checked identical to those of
-- the SQL-only implementation that _group_samples replaced.
SET timezone = 'America/New_York';  -- the typing must read offsets-less timestamps as UTC anyway
CREATE TEMP TABLE samples_case (n serial, label text, res text, obj jsonb);
INSERT INTO samples_case (label, res, obj) VALUES
 ('basic, offset', 'heartrate', '{"source":{"provider":"oura","type":"ring"},"data":[{"timestamp":"2025-01-01T00:00:00+02:00","value":61,"unit":"bpm","timezone_offset":7200}]}'),
 ('extras + source extras, nulls stripped', 'heartrate', '{"source":{"provider":"oura","type":"ring","app_id":"x","device_id":null,"sport":{"a":null,"b":1}},"data":[{"timestamp":"2025-01-01T00:00:00Z","value":61.5,"unit":"bpm","foo":null,"bar":{"c":null}}]}'),
 ('value a string', 'heartrate', '{"source":{"provider":"oura"},"data":[{"timestamp":"2025-01-01T00:00:00Z","value":"abc"}]}'),
 ('value an object', 'heartrate', '{"source":{"provider":"oura"},"data":[{"timestamp":"2025-01-01T00:00:00Z","value":{"x":1}}]}'),
 ('value a boolean', 'heartrate', '{"source":{"provider":"oura"},"data":[{"timestamp":"2025-01-01T00:00:00Z","value":true}]}'),
 ('value null, numeric type', 'heartrate', '{"source":{"provider":"oura"},"data":[{"timestamp":"2025-01-01T00:00:00Z","value":null,"type":5}]}'),
 ('no timestamp', 'heartrate', '{"source":{"provider":"oura"},"data":[{"value":1}]}'),
 ('sample a number', 'heartrate', '{"source":{"provider":"oura"},"data":[1]}'),
 ('sample a string', 'heartrate', '{"source":{"provider":"oura"},"data":["x"]}'),
 ('sample an array', 'heartrate', '{"source":{"provider":"oura"},"data":[[1,"start"]]}'),
 ('sample empty', 'heartrate', '{"source":{"provider":"oura"},"data":[{}]}'),
 ('data null', 'heartrate', '{"source":{"provider":"oura"},"data":null}'),
 ('data an object', 'heartrate', '{"source":{"provider":"oura"},"data":{"a":1}}'),
 ('data a number', 'heartrate', '{"source":{"provider":"oura"},"data":5}'),
 ('no data', 'heartrate', '{"source":{"provider":"oura"}}'),
 ('group an array', 'heartrate', '[1,2]'),
 ('bad timestamp', 'heartrate', '{"source":{"provider":"oura"},"data":[{"timestamp":"garbage","value":1}]}'),
 ('bad end', 'heartrate', '{"source":{"provider":"oura"},"data":[{"timestamp":"2025-01-01T00:00:00Z","end":"bad","value":1}]}'),
 ('offset fractional', 'heartrate', '{"source":{"provider":"oura"},"data":[{"timestamp":"2025-01-01T00:00:00Z","timezone_offset":"3600.5"}]}'),
 ('offset 3600.0', 'heartrate', '{"source":{"provider":"oura"},"data":[{"timestamp":"2025-01-01T00:00:00Z","timezone_offset":3600.0}]}'),
 ('offset too big', 'heartrate', '{"source":{"provider":"oura"},"data":[{"timestamp":"2025-01-01T00:00:00Z","timezone_offset":99999999999}]}'),
 ('infinite time', 'heartrate', '{"source":{"provider":"oura"},"data":[{"timestamp":"infinity","timezone_offset":3600}]}'),
 ('local time out of range', 'heartrate', '{"source":{"provider":"oura"},"data":[{"timestamp":"294276-12-31T23:59:59Z","timezone_offset":86400}]}'),
 ('start before timestamp, end', 'heartrate', '{"source":{"provider":"oura"},"data":[{"start":"2025-01-01T00:00:00Z","timestamp":"2024-01-01T00:00:00Z","end":"2025-01-01T00:01:00Z","value":1e308}]}'),
 ('value out of float8 range', 'heartrate', '{"source":{"provider":"oura"},"data":[{"timestamp":"2025-01-01T00:00:00Z","value":1e400}]}'),
 ('floating time (libre)', 'glucose', '{"source":{"provider":"freestyle_libre","type":"cgm"},"data":[{"timestamp":"2025-01-01T08:00:00+05:00","value":5.5,"unit":"mmol/L","timezone_offset":18000},{"timestamp":"2025-01-01T09:00:00","end":"2025-01-01T09:05:00-03:00","value":6}]}'),
 ('blood pressure: value kept in extra', 'blood_pressure', '{"source":{"provider":"omron","type":"cuff"},"data":[{"timestamp":"2025-01-01T00:00:00Z","systolic":120,"diastolic":80,"value":3,"unit":"mmHg"}]}'),
 ('note: text in extra', 'note', '{"source":{"provider":"apple_health_kit"},"data":[{"timestamp":"2025-01-01T00:00:00Z","value":"hello","tags":null}]}'),
 ('workout id', 'workout_distance', '{"source":{"provider":"strava","workout_id":"6b2c0c52-2f5b-4c3e-9a0f-3b1a6b3e9c11"},"data":[{"start":"2025-01-01T00:00:00Z","end":"2025-01-01T00:00:10Z","value":12}]}'),
 ('slug, same key twice: the later wins', 'heartrate', '{"source":{"slug":"garmin"},"data":[{"timestamp":"2025-01-01T00:00:00Z","value":1},{"timestamp":"2025-01-01T00:00:00Z","value":2}]}'),
 ('no provider', 'heartrate', '{"source":{"type":"x"},"data":[{"timestamp":"2025-01-01T00:00:00Z","value":1}]}'),
 ('id dropped, type in key', 'heartrate', '{"source":{"provider":"oura"},"data":[{"timestamp":"2025-01-01T00:00:00Z","value":1,"id":7,"extra_key":[null,1]}, {"timestamp":"2025-01-02T00:00:00Z","value":1}, {"timestamp":"2025-01-02T00:00:00Z","value":1,"type":"a"}]}'),
 ('one bad sample fails the group', 'heartrate', '{"source":{"provider":"oura"},"data":[{"timestamp":"2025-01-01T00:00:00Z","value":1}, 5]}'),
 ('libre ble: not floating', 'glucose', '{"source":{"provider":"freestyle_libre_ble","type":"cgm"},"data":[{"timestamp":"2025-01-01T08:00:00+05:00","value":5.5,"unit":"mmol/L","timezone_offset":18000}]}'),
 ('unit too long (CHECK)', 'heartrate', ('{"source":{"provider":"oura"},"data":[{"timestamp":"2025-01-01T00:00:00Z","value":1,"unit":"' || repeat('u', 256) || '"}]}')::jsonb),
 ('unordered, keys tied on time', 'heartrate', '{"source":{"provider":"oura"},"data":[{"timestamp":"2025-01-03T00:00:00Z","value":3},{"timestamp":"2025-01-01T00:00:00Z","value":1,"type":"b"},{"timestamp":"2025-01-01T00:00:00Z","value":2,"type":"a"},{"timestamp":"2025-01-01T00:00:00Z","value":9,"type":"b"},{"timestamp":"1999-12-31T23:30:00Z","value":0}]}');
CREATE FUNCTION pg_temp.run_case(c samples_case, conflicts boolean DEFAULT true) RETURNS SETOF text LANGUAGE plpgsql AS $$
BEGIN
  TRUNCATE junction.samples;
  PERFORM junction._upsert_samples(ARRAY[ROW(c.n, '5f0b1d6e-8a40-4f5e-9b0c-0d1a2b3c4d5e', c.res, NULL, now(),
                                              c.obj)::junction.typing_item], conflicts);
  RETURN QUERY SELECT ROW(s.resource, s.provider, s.source_type, s.type, s.workout_id,
                          s.time AT TIME ZONE 'UTC', s.time_end AT TIME ZONE 'UTC', s.value, s.unit,
                          s.timezone_offset, s.local_time, s.floating, s.extra)::text
               FROM junction.samples AS s ORDER BY s.time, s.type;
  IF NOT FOUND THEN RETURN NEXT '(no rows)'; END IF;
EXCEPTION WHEN OTHERS THEN
  RETURN NEXT 'ERROR ' || SQLSTATE || ': ' || left(SQLERRM, 100);
END $$;
SELECT c.n, c.label, r AS result FROM samples_case AS c, LATERAL pg_temp.run_case(c) AS r ORDER BY c.n;
TRUNCATE junction.samples;

-- The first-backfill loader (conflicts => false: junction._insert_new_samples, src/samples.c, a bulk
-- insertion) gives every case above the same rows, or the same error, as the SQL path.
SELECT junction._samples_bulk_ok() AS bulk_ok;
SELECT count(*) AS cases,
       count(*) FILTER (WHERE a IS NOT DISTINCT FROM b) AS same_on_both_paths,
       count(*) FILTER (WHERE a::text LIKE '%ERROR%') AS errors_among_them
FROM samples_case AS c,
     LATERAL (SELECT array_agg(r) FROM pg_temp.run_case(c, true) AS r) AS x(a),
     LATERAL (SELECT array_agg(r) FROM pg_temp.run_case(c, false) AS r) AS y(b);
SELECT c.n, c.label, a AS sql_path, b AS bulk_loader
FROM samples_case AS c,
     LATERAL (SELECT array_agg(r) FROM pg_temp.run_case(c, true) AS r) AS x(a),
     LATERAL (SELECT array_agg(r) FROM pg_temp.run_case(c, false) AS r) AS y(b)
WHERE a IS DISTINCT FROM b;
-- One batch of every case that loads, two users, the same key in two items (the later received
-- wins): the same rows on both paths, and the loader's hours are those of the rows it stored.
CREATE TEMP TABLE batch AS
SELECT array_agg(ROW(c.n * 10 + u.k, u.id, c.res, NULL, now(), c.obj)::junction.typing_item ORDER BY c.n, u.k) AS items
FROM samples_case AS c
CROSS JOIN (VALUES (1, '5f0b1d6e-8a40-4f5e-9b0c-0d1a2b3c4d5e'::uuid), (2, '0a0b1d6e-8a40-4f5e-9b0c-0d1a2b3c4d5e')) AS u(k, id)
WHERE NOT EXISTS (SELECT FROM pg_temp.run_case(c) AS r WHERE r LIKE 'ERROR%');
UPDATE batch SET items = items || ARRAY[ROW(999, '5f0b1d6e-8a40-4f5e-9b0c-0d1a2b3c4d5e', 'heartrate', NULL, now(),
  '{"source":{"provider":"oura","type":"ring"},"data":[{"timestamp":"2025-01-01T00:00:00+02:00","value":99}]}')::junction.typing_item];
SELECT cardinality(items) AS items FROM batch;
SELECT junction._upsert_samples(items, true) AS sql_rows FROM batch;
CREATE TEMP TABLE via_sql AS SELECT * FROM junction.samples;
TRUNCATE junction.samples;
SET timezone = 'UTC';  -- as junction._upsert_samples calls it
CREATE TEMP TABLE bulk_hours AS
SELECT h.* FROM batch, junction._insert_new_samples(ARRAY(SELECT g FROM junction._sample_groups(items,
  (SELECT jsonb_object_agg(name, value_kind) FROM junction.resources)) AS g)) AS h;
SET timezone = 'America/New_York';
SELECT sum(n) AS bulk_rows, count(*) AS hours,
       array_agg(ROW(h.user_id, h.resource, h.hour, h.n) ORDER BY h.user_id, h.resource, h.hour)
         = (SELECT array_agg(ROW(s.user_id, s.resource, s.hour, s.n) ORDER BY s.user_id, s.resource, s.hour)
            FROM (SELECT user_id, resource, date_trunc('hour', time, 'UTC') AS hour, count(*) AS n
                  FROM junction.samples GROUP BY 1, 2, 3) AS s) AS hours_match_rows
FROM bulk_hours AS h;
SELECT (SELECT count(*) FROM (TABLE via_sql EXCEPT ALL TABLE junction.samples) AS d) AS only_sql,
       (SELECT count(*) FROM (TABLE junction.samples EXCEPT ALL TABLE via_sql) AS d) AS only_bulk,
       (SELECT value FROM junction.samples WHERE resource = 'heartrate' AND provider = 'oura'
          AND user_id = '5f0b1d6e-8a40-4f5e-9b0c-0d1a2b3c4d5e' AND time = '2024-12-31 22:00:00+00') AS later_received_wins;
-- a key that exists already: unique_violation (the fast path then loads again with ON CONFLICT)
SELECT pg_temp.run_case(c, false) FROM samples_case AS c WHERE c.label = 'basic, offset';
DO $$
BEGIN
  PERFORM junction._upsert_samples(ARRAY[ROW(1, '5f0b1d6e-8a40-4f5e-9b0c-0d1a2b3c4d5e', 'heartrate', NULL, now(),
    '{"source":{"provider":"oura","type":"ring"},"data":[{"timestamp":"2025-01-01T00:00:00+02:00","value":7}]}')::junction.typing_item], false);
  RAISE NOTICE 'no error';
EXCEPTION WHEN unique_violation THEN
  RAISE NOTICE 'unique_violation: %', SQLERRM;
END $$;
-- Pages read from their text (junction._api_page, junction._page_from_text): the groups' data
-- arrays stay in the page's text and the loader reads the samples from there. Every case above,
-- and raw texts jsonb would normalise, give the same rows (or error) as the page parsed as jsonb.
CREATE TEMP TABLE page_case (n serial, label text, res text, body text);
INSERT INTO page_case (label, res, body)
SELECT 'case ' || c.n || ': ' || c.label, c.res, '{"groups":{"p":[' || c.obj::text || ']},"next_cursor":null}'
FROM samples_case AS c ORDER BY c.n;
INSERT INTO page_case (label, res, body) VALUES
 ('repeated key: the last wins', 'heartrate', '{"groups":{"oura":[{"source":{"provider":"oura"},"data":[{"timestamp":"2025-01-01T00:00:00Z","value":1,"value":2,"timestamp":"2025-01-02T00:00:00Z"}]}]}}'),
 ('numbers: exponent, -0, -0.0, long digits', 'heartrate', '{"groups":{"oura":[{"source":{"provider":"oura"},"data":[{"timestamp":"2025-01-01T00:00:00Z","value":7.25e1},{"timestamp":"2025-01-01T00:00:01Z","value":-0},{"timestamp":"2025-01-01T00:00:02Z","value":-0.0},{"timestamp":"2025-01-01T00:00:03Z","value":3.14159265358979323846264338327950288},{"timestamp":"2025-01-01T00:00:04Z","value":-12.50,"timezone_offset":-3600}]}]}}'),
 ('offset -0', 'heartrate', '{"groups":{"oura":[{"source":{"provider":"oura"},"data":[{"timestamp":"2025-01-01T00:00:00Z","value":1,"timezone_offset":-0}]}]}}'),
 ('offset 1e3', 'heartrate', '{"groups":{"oura":[{"source":{"provider":"oura"},"data":[{"timestamp":"2025-01-01T00:00:00Z","value":1,"timezone_offset":1e3}]}]}}'),
 ('offset a string', 'heartrate', '{"groups":{"oura":[{"source":{"provider":"oura"},"data":[{"timestamp":"2025-01-01T00:00:00Z","value":1,"timezone_offset":"7200"}]}]}}'),
 ('type and unit of every kind', 'heartrate', '{"groups":{"oura":[{"source":{"provider":"oura"},"data":[{"timestamp":"2025-01-01T00:00:00Z","type":5,"unit":true},{"timestamp":"2025-01-01T00:00:01Z","type":5.5,"unit":false},{"timestamp":"2025-01-01T00:00:02Z","type":"caf\u00e9 \"x\"","unit":null},{"timestamp":"2025-01-01T00:00:03Z","type":{"a":1}}]}]}}'),
 ('timestamp a number', 'heartrate', '{"groups":{"oura":[{"source":{"provider":"oura"},"data":[{"timestamp":20250101,"value":1}]}]}}'),
 ('start null, timestamp used', 'heartrate', '{"groups":{"oura":[{"source":{"provider":"oura"},"data":[{"start":null,"timestamp":"2025-01-01T00:00:00Z","end":null,"value":1}]}]}}'),
 ('id of any shape', 'heartrate', '{"groups":{"oura":[{"source":{"provider":"oura"},"data":[{"id":{"a":[1,{"b":2}]},"timestamp":"2025-01-01T00:00:00Z","value":1},{"id":[1,2],"timestamp":"2025-01-01T00:00:01Z","value":2},{"id":"x","timestamp":"2025-01-01T00:00:02Z","value":3}]}]}}'),
 ('two groups, two providers, one read through jsonb', 'heartrate', '{"groups":{"oura":[{"source":{"provider":"oura","app_id":"a"},"data":[{"timestamp":"2025-01-01T00:00:00Z","value":1}]},{"source":{"provider":"oura","type":"ring"},"data":[{"timestamp":"2025-01-01T00:00:00Z","value":2,"note":"x"}]}],"garmin":[{"source":{"provider":"garmin"},"data":[{"timestamp":"2025-01-01T00:00:00Z","value":3}]}]},"next_cursor":"c1"}'),
 ('a repeated data key: the last wins', 'heartrate', '{"groups":{"oura":[{"source":{"provider":"oura"},"data":[{"timestamp":"2025-01-01T00:00:00Z","value":1}],"data":[{"timestamp":"2025-01-02T00:00:00Z","value":2}]}]}}'),
 ('a repeated provider key: the last wins', 'heartrate', '{"groups":{"oura":[{"source":{"provider":"oura"},"data":[{"timestamp":"2025-01-01T00:00:00Z","value":1}]}],"oura":[{"source":{"provider":"oura"},"data":[{"timestamp":"2025-01-03T00:00:00Z","value":3}]}]}}'),
 ('data nested deeper is not a span', 'heartrate', '{"groups":{"oura":[{"source":{"provider":"oura","data":[1]},"data":[{"timestamp":"2025-01-01T00:00:00Z","value":1,"unit":"bpm"}]}]},"data":[{"x":1}]}'),
 ('a forged marker is an object', 'heartrate', '{"groups":{"oura":[{"source":{"provider":"oura"},"data":{"$junction_span":"0000000000000000:0:5"}}]}}'),
 ('a group that is not an object', 'heartrate', '{"groups":{"oura":[[{"data":[1]}]]}}'),
 ('groups values not arrays', 'heartrate', '{"groups":{"oura":{"data":[1]}}}'),
 ('invalid JSON', 'heartrate', '{"groups":{"oura":[{"data":[1,]}]}}');
CREATE FUNCTION pg_temp.run_page(c page_case, via_text boolean) RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE
  page jsonb;
BEGIN
  TRUNCATE junction.samples;
  page := CASE WHEN via_text THEN junction._page_from_text(c.body) ELSE c.body::jsonb END;
  PERFORM junction._upsert_samples(junction._page_items('5f0b1d6e-8a40-4f5e-9b0c-0d1a2b3c4d5e', c.res,
                                                         junction._check_groups(page, 'test')), NOT via_text);
  RETURN QUERY SELECT ROW(s.resource, s.provider, s.source_type, s.type, s.workout_id,
                          s.time AT TIME ZONE 'UTC', s.time_end AT TIME ZONE 'UTC', s.value, s.unit,
                          s.timezone_offset, s.local_time, s.floating, s.extra)::text
               FROM junction.samples AS s ORDER BY s.time, s.type, s.value;
  IF NOT FOUND THEN RETURN NEXT '(no rows)'; END IF;
EXCEPTION WHEN OTHERS THEN
  RETURN NEXT 'ERROR ' || SQLSTATE || ': ' || left(SQLERRM, 100);
END $$;
SELECT count(*) AS pages,
       count(*) FILTER (WHERE a IS NOT DISTINCT FROM b) AS same_as_jsonb,
       count(*) FILTER (WHERE a::text LIKE '%ERROR%') AS errors_among_them,
       count(*) FILTER (WHERE junction._page_from_text(c.body)::text LIKE '%$junction_span%') AS read_from_text
FROM page_case AS c,
     LATERAL (SELECT array_agg(r) FROM pg_temp.run_page(c, false) AS r) AS x(a),
     LATERAL (SELECT array_agg(r) FROM pg_temp.run_page(c, true) AS r) AS y(b)
WHERE c.label <> 'invalid JSON';
SELECT c.n, c.label, a IS NOT DISTINCT FROM b AS same, cardinality(b) AS rows,
       CASE WHEN b[1] LIKE 'ERROR%' THEN b[1] END AS error
FROM page_case AS c,
     LATERAL (SELECT array_agg(r) FROM pg_temp.run_page(c, false) AS r) AS x(a),
     LATERAL (SELECT array_agg(r) FROM pg_temp.run_page(c, true) AS r) AS y(b)
WHERE c.n > (SELECT count(*) FROM samples_case) AND c.label NOT LIKE 'invalid%'
ORDER BY c.n;
-- the page text is not JSON: _page_from_text says so as jsonb_in does (junction._api_page then reports
-- the response as invalid JSON, as junction_api does)
SELECT junction._page_from_text(body) FROM page_case WHERE label = 'invalid JSON';
-- the skeleton: data arrays replaced by markers, everything else kept
SELECT jsonb_path_query_array(junction._page_from_text(body), 'strict $.groups.*[*].data.keyvalue().key') AS marker_keys,
       junction._page_from_text(body) -> 'next_cursor' AS next_cursor,
       junction._page_from_text(body) #> '{groups,oura,0,source}' AS source
FROM page_case WHERE label LIKE 'two groups%';
-- a marker of an earlier page is not read (the text kept is the latest page's)
CREATE TEMP TABLE stale AS
SELECT junction._page_items('5f0b1d6e-8a40-4f5e-9b0c-0d1a2b3c4d5e', 'heartrate',
         junction._page_from_text(body) -> 'groups') AS items FROM page_case WHERE label = 'repeated key: the last wins';
SELECT junction._page_from_text(body) IS NOT NULL AS next_page FROM page_case WHERE label = 'offset -0';
SELECT junction._upsert_samples(items, false) FROM stale;
TRUNCATE junction.samples;
-- what the loader cannot honour sends junction._upsert_samples down the SQL path: a trigger
CREATE FUNCTION pg_temp.mark_unit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.unit := 'set by trigger'; RETURN NEW; END $$;
CREATE TRIGGER mark_unit BEFORE INSERT ON junction.samples FOR EACH ROW EXECUTE FUNCTION pg_temp.mark_unit();
SELECT junction._samples_bulk_ok() AS bulk_ok_with_trigger;
TRUNCATE junction.samples;
SELECT junction._upsert_samples(items, false) AS rows_via_sql_path FROM batch;
SELECT DISTINCT unit FROM junction.samples;
SELECT count(*) FROM junction._insert_new_samples(ARRAY(SELECT g FROM junction._sample_groups(
  (SELECT items FROM batch), '{}') AS g));
DROP TRIGGER mark_unit ON junction.samples;
TRUNCATE junction.samples;
-- _group_samples alone: ordinality, the STRICT-like nulls, and non-timeseries resources refused
SELECT ord, type, time AT TIME ZONE 'UTC' AS time, value FROM junction._group_samples(
  '{"data":[{"timestamp":"2025-01-01T00:00:00Z","value":1},{"timestamp":"2025-01-01T00:00:05Z","value":2}]}',
  'heartrate', 'number', false, NULL);
SELECT count(*) FROM junction._group_samples(NULL, 'heartrate', 'number', false, NULL);
SELECT junction._upsert_samples(ARRAY[ROW(1, '5f0b1d6e-8a40-4f5e-9b0c-0d1a2b3c4d5e', 'sleep', NULL, now(),
                                          '{}')::junction.typing_item]);
RESET timezone;
