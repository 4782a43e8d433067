-- junction 0.2.0 install script, built by concatenating src/sql/*.sql in name order.
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
