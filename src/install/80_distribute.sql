-- ---------------------------------------------------------------------------------------------
-- Scaling out on Citus (README, "Scaling out with Citus").
--   * every per-user table (a table of schema junction with a user_id column) is distributed by
--     user_id, all colocated with junction.samples: one user's rows of every table live on one
--     shard group, so each upsert, each user's query and each join between them is routed to a
--     single node;
--   * the small registries read inside those per-user statements (resources, daily_metrics,
--     source_priorities, sense_queries) become reference tables, a copy on every node;
--   * the inbox, the signing secrets and junction.daily's work queues stay local to the coordinator:
--     receivers insert there, the workers verify there and claim work there (SKIP LOCKED over a
--     whole queue is a single-node operation), and the secrets are never copied to another node.
-- The same SQL serves one Postgres and Citus: nothing here changes a statement, only where rows live.
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION junction._distribution_plan()
RETURNS TABLE (tbl regclass, placement text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT c.oid::regclass,
           CASE
             WHEN c.relname IN ('inbox', 'webhook_secrets', 'daily_pending_hours', 'daily_pending_days', 'resources', 'daily_metrics', 'source_priorities', 'sense_queries') THEN 'local'
             WHEN EXISTS (SELECT 1 FROM pg_attribute AS a
                          WHERE a.attrelid = c.oid AND a.attname = 'user_id' AND NOT a.attisdropped)
               THEN 'distributed'
             ELSE 'reference'
           END
    FROM pg_class AS c
    JOIN pg_depend AS d ON d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e'
    JOIN pg_extension AS e ON e.oid = d.refobjid AND e.extname = 'junction'
    WHERE c.relkind IN ('r', 'p')
    -- samples first: the others are colocated with it
    ORDER BY c.relname <> 'samples', c.relname
$$;
COMMENT ON FUNCTION junction._distribution_plan() IS
  'where junction_distribute() puts each table of the extension: distributed (by user_id), reference or local';

CREATE FUNCTION junction_distribute(shard_count integer DEFAULT NULL)
RETURNS SETOF regclass
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
-- Citus' functions and catalogs exist only where Citus is installed: they are named in constant
-- strings and called through EXECUTE (no caller's text reaches a statement; values go with USING).
-- @plpgsql_check_options: security_warnings = off
DECLARE
    citus   text := 'pg_catalog.';
    p       record;
    done    boolean;
    coord   boolean;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
        RAISE EXCEPTION 'junction_distribute: Citus is not installed in this database'
            USING ERRCODE = '55000',
                  HINT = 'Add citus (first) to shared_preload_libraries, CREATE EXTENSION citus, add the '
                         'worker nodes, then call junction_distribute() on the coordinator.';
    END IF;
    EXECUTE 'SELECT ' || citus || 'citus_is_coordinator()' INTO coord;
    IF NOT coord THEN
        RAISE EXCEPTION 'junction_distribute: this node is not the Citus coordinator'
            USING ERRCODE = '55000',
                  HINT = 'Call it on the coordinator; the worker nodes hold the shards it creates.';
    END IF;
    IF shard_count IS NOT NULL AND shard_count NOT BETWEEN 1 AND 64000 THEN
        RAISE EXCEPTION 'junction_distribute: shard_count must be between 1 and 64000, not %', shard_count
            USING ERRCODE = '22023', HINT = 'Leave it null for citus.shard_count.';
    END IF;

    FOR p IN SELECT * FROM junction._distribution_plan() WHERE placement <> 'local' LOOP
        EXECUTE 'SELECT EXISTS (SELECT 1 FROM ' || citus || 'pg_dist_partition WHERE logicalrelid = $1)'
            INTO done USING p.tbl;
        CONTINUE WHEN done;             -- already distributed (or reference): idempotent
        IF p.placement = 'reference' THEN
            EXECUTE 'SELECT ' || citus || 'create_reference_table($1)' USING p.tbl;
        ELSIF p.tbl = 'junction.samples'::regclass THEN
            EXECUTE 'SELECT ' || citus || 'create_distributed_table($1, ''user_id'', shard_count => $2)'
                USING p.tbl, shard_count;
        ELSE
            EXECUTE 'SELECT ' || citus || 'create_distributed_table($1, ''user_id'', colocate_with => ''junction.samples'')'
                USING p.tbl;
        END IF;
        -- rows that were there before are now on the shards; drop the coordinator's local copy
        EXECUTE 'SELECT ' || citus || 'truncate_local_data_after_distributing_table($1)' USING p.tbl;
        RETURN NEXT p.tbl;
    END LOOP;
END
$fn$;
COMMENT ON FUNCTION junction_distribute(integer) IS
  'on a Citus coordinator: distribute every per-user table by user_id (colocated), make the registries reference tables; idempotent, returns the tables it changed';
