-- junction 0.2.0 -> 0.3.0 (ALTER EXTENSION junction UPDATE TO '0.3.0').
-- After it, the extension's objects equal a fresh 0.3.0 install's (test/fault_upgrade.sh checks
-- this, from 0.1.0 through 0.2.0 and from 0.2.0: every difference it finds is named there). Every
-- schema change to src/install after 0.2.0 goes here, in the order of src/install's fragments.
\echo Use "ALTER EXTENSION junction UPDATE" to load this file. \quit

-- ---------------------------------------------------------------------------------------------
-- 30 model / 35 typing: freestyle_libre_ble is not floating time (Junction lists only
-- abbott_libreview and freestyle_libre). Its stored samples that have an offset become instants:
-- time and time_end lose the offset (they held the wall clock read as UTC), local_time keeps the
-- wall clock, floating becomes false. Rows without an offset cannot be placed and stay floating.
-- ---------------------------------------------------------------------------------------------
COMMENT ON COLUMN junction.samples.time IS
  'sample start (start, else timestamp). Floating-time providers (abbott_libreview, freestyle_libre): the wall clock as sent, read as UTC (any offset suffix ignored)';

UPDATE junction.samples AS s
   SET time = s.time OPERATOR(pg_catalog.-) pg_catalog.make_interval(secs => s.timezone_offset),
       time_end = s.time_end OPERATOR(pg_catalog.-) pg_catalog.make_interval(secs => s.timezone_offset),
       floating = false
 WHERE s.provider OPERATOR(pg_catalog.=) 'freestyle_libre_ble' AND s.floating
   AND s.timezone_offset IS NOT NULL;

CREATE OR REPLACE FUNCTION junction._sample_rows(items junction.typing_item[])
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
                   -- floating time (README, "Floating time"): the offset suffix is meaningless for
                   -- these two (Junction's list; freestyle_libre_ble is SDK-based, with a real zone)
                   src.provider OPERATOR(pg_catalog.=) ANY (ARRAY['abbott_libreview',
                                                               'freestyle_libre']::pg_catalog.text[]) AS floating
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
