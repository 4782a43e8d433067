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

CREATE VIEW junction.status AS
SELECT q.pending,
       q.quarantined,
       q.oldest_pending_age,
       q.processed_last_minute,
       w.worker_pids,
       w.last_heartbeat,
       w.backfill_pid,
       CASE
         WHEN NOT q.has_secret THEN
           'no webhook secret: INSERT INTO junction.webhook_secrets(secret) VALUES (''whsec_...'')'
         WHEN w.worker_pids IS NULL THEN
           'no worker running: add junction to shared_preload_libraries and set junction.database = '''
           || current_database() || ''', or call junction_process_inbox()'
         WHEN current_setting('junction.database', true) <> current_database() THEN
           'the workers serve database ' || current_setting('junction.database', true)
           || ', not this one; call junction_process_inbox()'
         WHEN q.pending > 0 THEN 'draining'
         ELSE 'idle'
       END AS waiting_reason
FROM (SELECT (SELECT count(*) FROM junction.inbox WHERE status = 'pending') AS pending,
             (SELECT count(*) FROM junction.inbox WHERE status = 'quarantined') AS quarantined,
             (SELECT now() - min(received_at) FROM junction.inbox WHERE status = 'pending')
               AS oldest_pending_age,
             (SELECT count(*) FROM junction.inbox
               WHERE status = 'processed' AND processed_at > now() - interval '1 minute')
               AS processed_last_minute,
             EXISTS (SELECT FROM junction.webhook_secrets
                      WHERE expires_at IS NULL OR expires_at > now()) AS has_secret) q,
     (SELECT array_agg(pid ORDER BY slot) FILTER (WHERE kind = 'inbox') AS worker_pids,
             max(heartbeat) FILTER (WHERE kind = 'inbox') AS last_heartbeat,
             max(pid) FILTER (WHERE kind = 'backfill') AS backfill_pid
        FROM junction._worker_state()) w;
COMMENT ON VIEW junction.status IS
  'inbox backlog, quarantine, throughput, worker pids and heartbeat, and why work is waiting';

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
