-- junction 0.1.0 install script, built by concatenating src/sql/*.sql in name order.
-- Tables, views and internal functions live in schema junction; the functions
-- users call carry the junction_ prefix and live in the extension's schema.
\echo Use "CREATE EXTENSION junction" to load this file. \quit

CREATE SCHEMA junction;
COMMENT ON SCHEMA junction IS 'Junction (formerly Vital) health data: inbox, events, typed resources';
