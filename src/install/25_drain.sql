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

CREATE FUNCTION junction._api_pause(OUT paused_until timestamptz, OUT pauses bigint)
RETURNS record
AS 'MODULE_PATHNAME', 'junction_api_pause' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION junction._api_pause() IS
  'until when every data API request waits after a 429 (null: no pause), and how many 429s set or extended the pause since the server started';

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
