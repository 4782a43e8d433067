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
 ('libre ble: not floating', 'glucose', '{"source":{"provider":"freestyle_libre_ble","type":"cgm"},"data":[{"timestamp":"2025-01-01T08:00:00+05:00","value":5.5,"unit":"mmol/L","timezone_offset":18000}]}');
CREATE FUNCTION pg_temp.run_case(c samples_case) RETURNS SETOF text LANGUAGE plpgsql AS $$
BEGIN
  TRUNCATE junction.samples;
  PERFORM junction._upsert_samples(ARRAY[ROW(c.n, '5f0b1d6e-8a40-4f5e-9b0c-0d1a2b3c4d5e', c.res, NULL, now(),
                                              c.obj)::junction.typing_item]);
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
-- _group_samples alone: ordinality, the STRICT-like nulls, and non-timeseries resources refused
SELECT ord, type, time AT TIME ZONE 'UTC' AS time, value FROM junction._group_samples(
  '{"data":[{"timestamp":"2025-01-01T00:00:00Z","value":1},{"timestamp":"2025-01-01T00:00:05Z","value":2}]}',
  'heartrate', 'number', false, NULL);
SELECT count(*) FROM junction._group_samples(NULL, 'heartrate', 'number', false, NULL);
SELECT junction._upsert_samples(ARRAY[ROW(1, '5f0b1d6e-8a40-4f5e-9b0c-0d1a2b3c4d5e', 'sleep', NULL, now(),
                                          '{}')::junction.typing_item]);
RESET timezone;
