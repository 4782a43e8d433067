#!/usr/bin/env bash
# fault_citus.sh — junction on a real Citus cluster (a coordinator and two workers on free
# 127.0.0.1 ports; Citus is built from ../shared/citus when the server has none), beside a
# single-node junction on the same machine:
#   1. junction_distribute(): every per-user table distributed by user_id and colocated, the
#      registries and queues local; idempotent; clear refusals without Citus and off the coordinator;
#   2. the order-independence corpus (shuffled, duplicated, stale versions, every fixture, invalid
#      deliveries) drained by the background worker: every typed table equals the single-node run
#      of the same corpus, row for row, and the rows are on both workers;
#   3. junction_sync, junction_sync_all and junction_refresh_connections from the mock API into the
#      distributed tables (equal to single node);
#   4. a historical event followed up by the backfill worker (first-backfill fast path);
#   5. kill -9 of the worker mid-drain: nothing lost, nothing applied twice;
#   6. a worker node stopped mid-drain: the batch is retried, not quarantined, and drained once
#      the node is back.
set -uo pipefail
. "$(dirname "$0")/lib_fault.sh"
. "$ROOT/test/lib_citus.sh"
W=/tmp/junction-citus.$$
MOCK_PID=
trap 'jx_cluster_stop; jx_citus_stop; [ -n "$MOCK_PID" ] && kill "$MOCK_PID" 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$W"' EXIT
mkdir -p "$W"; chmod 755 "$W"
jx_citus_install || { echo "FAIL - Citus could not be built"; exit 1; }
python3 "$ROOT/test/mock_junction.py" --port 0 --portfile "$W/mock.port" > "$W/mock.log" 2>&1 &
MOCK_PID=$!
for i in $(seq 1 50); do [ -s "$W/mock.port" ] && break; sleep 0.1; done
MOCK="http://127.0.0.1:$(cat "$W/mock.port")"
DB=junction_citus
CONF="junction.batch_size = 40
junction.api_base_url = '$MOCK'
junction.http_retries = 1
restart_after_crash = on
citus.recover_2pc_interval = '1s'
junction.sync_progress_after = -1"

# the single-node reference (socket only) and the Citus cluster (TCP on 127.0.0.1)
JX_PORT=$(jx_free_port) jx_cluster_start "$W/single" $DB "$CONF"
S_HOST=$PGHOST S_PORT=$PGPORT
jx_citus_start "$W/citus" $DB "$CONF" || { echo "FAIL - the Citus cluster did not start"; tail -20 "$W"/citus/*/server.log; exit 1; }
s() { PGHOST=$S_HOST PGPORT=$S_PORT psql -qXAt -v ON_ERROR_STOP=1 -d $DB "$@"; }
c() { psql -qXAt -v ON_ERROR_STOP=1 -d $DB "$@"; }
w1() { jx_citus_worker_psql 1 -d $DB "$@"; }
sqlstate() {  # the SQLSTATE a statement raises (psql VERBOSITY verbose), or "none"
    local out; out=$("$@" 2>&1 >/dev/null | sed -n 's/^ERROR: *\([0-9A-Z]\{5\}\):.*/\1/p' | head -1)
    echo "${out:-none}"
}
for f in s c; do
    $f -c "CREATE EXTENSION junction" >/dev/null || { echo "FAIL - CREATE EXTENSION junction"; exit 1; }
    $f -f "$ROOT/test/sql/deliveries.sql" >/dev/null
done

# ---- 1. distribute ----
check "without Citus, junction_distribute() refuses with 55000" \
    "[ \"\$(sqlstate s -v VERBOSITY=verbose -c 'SELECT junction_distribute()')\" = 55000 ]"
check "on a worker node, junction_distribute() refuses with 55000 (not the coordinator)" \
    "[ \"\$(sqlstate w1 -v VERBOSITY=verbose -c 'SELECT junction_distribute()')\" = 55000 ]"
# a row stored before distributing moves to the shards
c -c "INSERT INTO junction.connections (user_id, provider, status, updated_at, received_seq, data)
      VALUES ('5f0b1d6e-8a40-4f5e-9b0c-0d1a2b3c4d60', 'oura', 'connected', now(), 0, '{}')" >/dev/null
NDIST=$(c -c "SELECT count(*) FROM junction_distribute(4)" 2>/dev/null)
check "a row stored before junction_distribute() is on a shard afterwards" \
    "[ \"\$(c -c \"SELECT sum(result::bigint) FROM run_command_on_shards('junction.connections', 'SELECT count(*) FROM %s')\")\" = 1 ] &&
     [ \"\$(c -c \"SELECT count(*) FROM junction.connections WHERE user_id = '5f0b1d6e-8a40-4f5e-9b0c-0d1a2b3c4d60'\")\" = 1 ]"
c -c "DELETE FROM junction.connections WHERE user_id = '5f0b1d6e-8a40-4f5e-9b0c-0d1a2b3c4d60'" >/dev/null
check "junction_distribute(4) changed every non-local table ($NDIST)" \
    "[ \"$NDIST\" = \"\$(c -c \"SELECT count(*) FROM junction._distribution_plan() WHERE placement <> 'local'\")\" ]"
check "a second junction_distribute() changes nothing (idempotent)" "[ \"\$(c -c 'SELECT count(*) FROM junction_distribute()')\" = 0 ]"
check "every table with a user_id is hash-distributed by user_id, colocated with samples, 4 shards" \
    "[ \"\$(c -c \"SELECT count(*) FROM junction._distribution_plan() p
                  JOIN pg_dist_partition d ON d.logicalrelid = p.tbl
                  WHERE p.placement = 'distributed' AND d.partmethod = 'h'
                    AND column_to_column_name(d.logicalrelid, d.partkey) = 'user_id'
                    AND d.colocationid = (SELECT colocationid FROM pg_dist_partition WHERE logicalrelid = 'junction.samples'::regclass)
                    AND (SELECT count(*) FROM pg_dist_shard s WHERE s.logicalrelid = p.tbl) = 4\")\" = \
       \"\$(c -c \"SELECT count(*) FROM junction._distribution_plan() WHERE placement = 'distributed'\")\" ]"
check "the per-user tables include events, samples, connections, backfills, devices, workout_streams" \
    "[ \"\$(c -c \"SELECT count(*) FROM junction._distribution_plan() WHERE placement = 'distributed'
                  AND tbl::text IN ('junction.events', 'junction.samples', 'junction.connections', 'junction.backfills',
                                    'junction.devices', 'junction.workout_streams', 'junction.sleep', 'junction.activity')\")\" = 8 ]"
check "the inbox and the secrets stay local to the coordinator" \
    "[ \"\$(c -c \"SELECT count(*) FROM pg_dist_partition WHERE logicalrelid IN ('junction.inbox'::regclass, 'junction.webhook_secrets'::regclass)\")\" = 0 ]"

# ---- 2. the corpus, drained by the background worker on both ----
s >/dev/null <<SQL
\i $ROOT/test/fixtures/fixtures.sql
CREATE TABLE corpus AS
-- the ordering set: two versions of each summary, redeliveries, re-sent sample keys
SELECT n::float8 AS pos, d.headers, d.body
FROM (SELECT i AS n FROM generate_series(0, 149) i UNION ALL SELECT i FROM generate_series(1500, 1649) i) s,
     LATERAL jx_test_delivery(s.n, '$SECRET', extract(epoch FROM now())::bigint) d
UNION ALL
-- every fixture, for three users (the fixture's user id replaced)
SELECT 2000 + row_number() OVER (), jsonb_build_object('svix-id', m.id, 'svix-timestamp', ts::text,
           'svix-signature', junction_sign_webhook('$SECRET', m.id, ts, b.body)), b.body
FROM fixture f, generate_series(1, 3) u,
     LATERAL (SELECT 'msg_cf_' || f.name || '_' || u AS id, extract(epoch FROM now())::bigint AS ts) m,
     LATERAL (SELECT replace(f.body, '0190b2a0-0000-7000-8000-000000000001',
                             '0190b2a0-0000-7000-8000-00000000000' || u) AS body) b
UNION ALL
-- invalid: a forged signature, a body that is not JSON, a user that is not a uuid
SELECT 3000 + k, jsonb_build_object('svix-id', 'msg_cf_bad_' || k, 'svix-timestamp', extract(epoch FROM now())::bigint::text,
                                    'svix-signature', 'v1,' || encode(sha256(k::text::bytea), 'base64')), '{"event_type": "daily.data.steps.created"}'
FROM generate_series(1, 3) k
UNION ALL
SELECT 3100 + k, jsonb_build_object('svix-id', m.id, 'svix-timestamp', ts::text,
           'svix-signature', junction_sign_webhook('$SECRET', m.id, ts, b.body)), b.body
FROM generate_series(1, 4) k,
     LATERAL (SELECT 'msg_cf_malformed_' || k AS id, extract(epoch FROM now())::bigint AS ts) m,
     LATERAL (SELECT CASE WHEN k % 2 = 0 THEN '{"event_type": "daily.data.steps.created", "data": [}'
                          ELSE '{"event_type": "daily.data.steps.created", "user_id": "user-' || k || '", "data": {}}' END AS body) b;
-- shuffled, 30% delivered a second time later on
SELECT setseed(0.42);
CREATE TABLE corpus_order AS
SELECT row_number() OVER (ORDER BY p) AS k, headers, body FROM (
    SELECT random() AS p, headers, body FROM corpus
    UNION ALL SELECT random() + 0.5, headers, body FROM corpus WHERE random() < 0.3) x;
\copy (SELECT headers, body FROM corpus_order ORDER BY k) TO '$W/corpus.tsv'
SQL
NCORPUS=$(wc -l < "$W/corpus.tsv")
check "the corpus has ordering set, fixtures and invalid deliveries ($NCORPUS deliveries)" "[ $NCORPUS -gt 700 ]"
for f in s c; do
    $f -c "INSERT INTO junction.webhook_secrets (secret) VALUES ('$SECRET')" >/dev/null
    # in four chunks: the worker drains while deliveries arrive
    for part in 0 1 2 3; do
        awk -v p=$part 'NR % 4 == p' "$W/corpus.tsv" > "$W/part.tsv"
        $f -c "\\copy junction.inbox (headers, body) FROM '$W/part.tsv'" >/dev/null
    done
done
drained() {  # psql function: no pending inbox row and no queued daily recomputation
    [ "$($1 -c "SELECT (SELECT count(*) FROM junction.inbox WHERE status = 'pending')
                     + (SELECT count(*) FROM junction.daily_pending_hours) + (SELECT count(*) FROM junction.daily_pending_days)" 2>/dev/null)" = 0 ]
}
check "single node: the worker drained the corpus (deadline 120 s)" "wait_for 120 'drained s'"
check "Citus: the worker drained the corpus on the coordinator (deadline 300 s)" "wait_for 300 'drained c'"

# row-for-row dumps of every per-user table (arrival bookkeeping left out, as in jx_typed_fingerprint)
dump() {  # psql function, output dir
    mkdir -p "$2"
    local t cols
    for t in $($1 -c "SELECT tbl::text FROM junction._distribution_plan() WHERE placement = 'distributed' ORDER BY 1"); do
        cols=$($1 -c "SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute
                      WHERE attrelid = '$t'::regclass AND attnum > 0 AND NOT attisdropped
                        AND attname NOT IN ('received_seq', 'inbox_id', 'received_at', 'processed_at', 'loaded_at',
                                            'completed_at', 'first_seen_at', 'last_event_at')
                        -- when we recorded a state, not data: the time of the run
                        AND NOT (attname IN ('updated_at', 'connected_at') AND '$t' IN ('junction.daily', 'junction.connections',
                                 'junction.backfills', 'junction.workout_streams', 'junction.sense_results'))")
        $1 -c "\\copy (SELECT $cols FROM $t ORDER BY $cols) TO '$2/$t'"
    done
    $1 -c "\\copy (SELECT status, error, count(*) FROM junction.inbox GROUP BY 1, 2 ORDER BY 1, 2) TO '$2/inbox'"
}
dump s "$W/dump.single"; dump c "$W/dump.citus"
check "every per-user table and the inbox outcome equal the single-node run, row for row" \
    "diff -r '$W/dump.single' '$W/dump.citus' > '$W/dump.diff'"
[ -s "$W/dump.diff" ] && head -20 "$W/dump.diff"
NROWS=$(cat "$W"/dump.citus/junction.* | wc -l)
check "the corpus typed rows into many tables ($NROWS rows; $(for f in "$W"/dump.citus/junction.*; do [ -s "$f" ] && echo x; done | wc -l) tables)" \
    "[ $NROWS -gt 5000 ] && [ \$(for f in '$W'/dump.citus/junction.*; do [ -s \"\$f\" ] && echo x; done | wc -l) -ge 20 ]"
check "the invalid deliveries are quarantined with their reasons, on both" \
    "grep -c '^quarantined' '$W/dump.citus/inbox' | grep -qv '^0$'"
check "redeliveries were no-ops: one event per distinct svix id" \
    "[ \"\$(c -c 'SELECT count(*) FROM junction.events')\" = \"\$(c -c \"SELECT count(DISTINCT headers->>'svix-id') FROM junction.inbox WHERE status = 'processed'\")\" ]"
# junction_process_inbox() drains on the coordinator too (in the caller's transaction: the
# background worker cannot see these rows before the commit); the same on single node
PI="BEGIN; INSERT INTO junction.inbox (headers, body) SELECT d.headers, d.body FROM generate_series(5001, 5010) i,
    LATERAL jx_test_delivery(i, '$SECRET', extract(epoch FROM now())::bigint) d; SELECT junction_process_inbox(100); COMMIT;"
s -c "$PI" >/dev/null
check "junction_process_inbox() types deliveries into the distributed tables" \
    "[ \"\$(c -c \"$PI\" | tail -1)\" = 10 ] &&
     [ \"\$(c -c \"SELECT count(*) FROM junction.events WHERE svix_id BETWEEN 'msg_test_000005001' AND 'msg_test_000005010'\")\" = 10 ]"
# a full rebuild of junction.daily (the path a changed priority table takes) gives the same days
for f in s c; do $f -c "SELECT junction_rebuild_daily()" > /dev/null; done
check "junction_rebuild_daily() on Citus: junction.daily equals single node ($(c -c 'SELECT count(*) FROM junction.daily') rows)" \
    "[ \"\$(c -c \"SELECT md5(string_agg(concat_ws(',', user_id, calendar_date, metric, value, unit, provider, source_type, candidates), '|' ORDER BY user_id, calendar_date, metric)) FROM junction.daily\")\" = \
       \"\$(s -c \"SELECT md5(string_agg(concat_ws(',', user_id, calendar_date, metric, value, unit, provider, source_type, candidates), '|' ORDER BY user_id, calendar_date, metric)) FROM junction.daily\")\" ] &&
     [ \$(c -c 'SELECT count(*) FROM junction.daily') -gt 100 ]"
# where the rows are: samples and events on both workers (not the coordinator)
SPLIT=$(c -c "WITH r AS (SELECT shardid, result::bigint AS n FROM run_command_on_shards('junction.samples', 'SELECT count(*) FROM %s'))
              SELECT string_agg(n.nodeport || ':' || s.n, ' ' ORDER BY n.nodeport)
              FROM (SELECT p.groupid, sum(r.n) AS n FROM r JOIN pg_dist_placement p USING (shardid) GROUP BY 1) s
              JOIN pg_dist_node n USING (groupid)")
echo "       samples per node (port:rows): $SPLIT"
check "samples are on both workers, none on the coordinator" \
    "[ \$(echo '$SPLIT' | wc -w) -eq 2 ] && ! echo '$SPLIT' | grep -q ':0\$\|:0 ' && ! echo '$SPLIT' | grep -q '${CITUS_PORTS%% *}:'"
check "events are on both workers" \
    "[ \"\$(c -c \"WITH r AS (SELECT shardid, result::bigint AS n FROM run_command_on_shards('junction.events', 'SELECT count(*) FROM %s'))
                  SELECT count(DISTINCT p.groupid) FROM r JOIN pg_dist_placement p USING (shardid) WHERE r.n > 0\")\" = 2 ]"

# the queries users run name one user: each is routed to the one shard that holds the user
U1=0190b2a0-0000-7000-8000-000000000001
for q in "SELECT time, value FROM junction.samples WHERE user_id = '$U1' AND resource = 'heartrate' AND time >= '2025-06-10' AND time < '2025-06-11' ORDER BY time" \
         "SELECT * FROM junction.sleep WHERE user_id = '$U1' ORDER BY calendar_date DESC LIMIT 1" \
         "SELECT provider, error_type FROM junction.connections WHERE user_id = '$U1' AND status = 'error'" \
         "SELECT calendar_date, metric, value FROM junction.daily WHERE user_id = '$U1' AND calendar_date >= '2025-06-01' ORDER BY 1, 2"; do
    check "routed to one shard: ${q:0:60}..." "c -c \"EXPLAIN (COSTS OFF) $q\" | grep -q 'Task Count: 1\$'"
done
check "the fleet-wide question (who is disconnected) runs on every shard in parallel" \
    "c -c \"EXPLAIN (COSTS OFF) SELECT user_id, provider FROM junction.connections WHERE status = 'error'\" | grep -q 'Task Count: 4\$'"

# ---- 3. the API client into distributed tables ----
A=5f0b1d6e-8a40-4f5e-9b0c-0d1a2b3c4d61
for f in s c; do
    $f -c "ALTER SYSTEM SET junction.api_key = 'sk_us_test_key'" -c "SELECT pg_reload_conf()" >/dev/null
done
sleep 0.5
fp() { $1 -c "SELECT count(*) || ' ' || md5(string_agg((to_jsonb(s) - 'received_seq')::text, '|' ORDER BY resource, time, provider, source_type, type))
              FROM junction.samples s WHERE user_id = '$2'"; }
# A junction_sync beside the workers can be chosen as the victim of a distributed deadlock (a
# known gap, README "Deadlocks on Citus"): it then fails with 40P01 and keeps nothing, and a
# client calls it again. So do these calls, at most twice, saying so.
retry_deadlock() {  # out-file, command...
    local out=$1 i; shift
    for i in 1 2 3; do
        "$@" > "$out" 2>&1
        grep -q 'deadlock' "$out" || return 0
        echo "       called again after a deadlock: $(grep -m1 deadlock "$out")"
    done
}
for f in s c; do
    retry_deadlock "$W/sync.$f" $f -c "SELECT sum(rows_loaded) FROM junction_sync('$A', ARRAY['heartrate', 'steps', 'sleep', 'activity'], '2025-01-01', '2025-01-10')"
done
check "junction_sync into distributed tables: rows loaded ($(cat $W/sync.c))" "[ \"\$(cat $W/sync.c)\" -gt 100 ] 2>/dev/null"
check "junction_sync: the same rows as single node" "[ \"\$(cat $W/sync.c)\" = \"\$(cat $W/sync.s)\" ] && [ \"\$(fp c $A)\" = \"\$(fp s $A)\" ]"
check "junction_sync: the summaries equal single node" \
    "[ \"\$(c -c \"SELECT md5(string_agg((to_jsonb(t) - 'received_seq')::text, '|' ORDER BY id)) FROM junction.sleep t WHERE user_id = '$A'\")\" = \
       \"\$(s -c \"SELECT md5(string_agg((to_jsonb(t) - 'received_seq')::text, '|' ORDER BY id)) FROM junction.sleep t WHERE user_id = '$A'\")\" ]"
# junction.daily as junction_sync left it (recomputed once per resource, on the user's shard):
# the same days as single node, and as a rebuild of the user's days from the samples
DAILY_A="SELECT count(*) || ' ' || md5(string_agg(concat_ws(',', calendar_date, metric, value, unit, provider, source_type, candidates), '|' ORDER BY calendar_date, metric)) FROM junction.daily WHERE user_id = '$A'"
PARTS_A="SELECT md5(string_agg(concat_ws(',', resource, hour, calendar_date, provider, source_type, part, n, sum, min, max, last_value), '|' ORDER BY resource, hour, calendar_date, provider, source_type, part)) FROM junction.daily_parts WHERE user_id = '$A'"
c -c "$DAILY_A" > "$W/daily_a.c"; s -c "$DAILY_A" > "$W/daily_a.s"
c -c "$PARTS_A" > "$W/parts_a.c"; s -c "$PARTS_A" > "$W/parts_a.s"
c -c "SELECT junction_rebuild_daily('$A')" > /dev/null
check "junction_sync: junction.daily of the synced user equals single node ($(cut -d' ' -f1 "$W/daily_a.c") rows) and a rebuild" \
    "[ \$(cut -d' ' -f1 '$W/daily_a.c') -gt 0 ] && diff '$W/daily_a.s' '$W/daily_a.c' && diff '$W/parts_a.s' '$W/parts_a.c' &&
     [ \"\$(c -c \"$DAILY_A\")\" = \"\$(cat '$W/daily_a.c')\" ] && [ \"\$(c -c \"$PARTS_A\")\" = \"\$(cat '$W/parts_a.c')\" ]"
# the recomputation names its users, so Citus runs it on their shards only: the commands the
# coordinator sends (citus.log_remote_commands) name A's daily_parts shard alone for A's hours, and
# exactly two shards for A's and another shard's user's hours
routed_shards() {  # user ids (SQL list) -> the daily_parts shards the recomputation's INSERT and DELETE name
    c 2>&1 >/dev/null <<SQL | grep -oE '(INSERT INTO|DELETE FROM) junction\.daily_parts_[0-9]+' | sort -u | tr '\n' ' '
SELECT ARRAY(SELECT DISTINCT ROW(s.user_id, s.resource, date_trunc('hour', s.time, 'UTC'))::junction.daily_hour
             FROM junction.samples AS s WHERE s.user_id IN ($1))::text AS hrs \gset
SET citus.log_remote_commands = on;
SET client_min_messages = log;
SELECT count(*) FROM unnest(junction._daily_parts_refresh(:'hrs'::junction.daily_hour[]));
SQL
}
shard_of() { c -c "SELECT 'junction.daily_parts_' || get_shard_id_for_distribution_column('junction.daily_parts', '$1')"; }
OTHER=$(c -c "SELECT u FROM (SELECT DISTINCT user_id AS u FROM junction.samples) AS x
              WHERE get_shard_id_for_distribution_column('junction.samples', u)
                    <> get_shard_id_for_distribution_column('junction.samples', '$A'::uuid) ORDER BY 1 LIMIT 1")
SA=$(shard_of $A); SO=$(shard_of $OTHER)
ROUTE1=$(routed_shards "'$A'"); ROUTE2=$(routed_shards "'$A', '$OTHER'")
echo "       one user's hours: $ROUTE1"
echo "       two users' hours: $ROUTE2"
check "junction.daily's recomputation of one user's hours runs on that user's shard only (INSERT and DELETE)" \
    "[ \"$ROUTE1\" = \"DELETE FROM $SA INSERT INTO $SA \" ]"
check "... and of two users' hours on exactly their two shards" \
    "[ -n '$OTHER' ] && [ \"\$(echo $ROUTE2 | tr ' ' '\n' | grep -c daily_parts_)\" = 4 ] &&
     echo '$ROUTE2' | grep -q 'INSERT INTO $SA ' && echo '$ROUTE2' | grep -q 'INSERT INTO $SO ' &&
     echo '$ROUTE2' | grep -q 'DELETE FROM $SA ' && echo '$ROUTE2' | grep -q 'DELETE FROM $SO '"
# the same connected users on both (the corpus' connection events): the same users synced, each
# without error (the row counts follow now(): the two calls' windows differ by a few seconds)
retry_deadlock "$W/syncall.c" c -c 'SELECT user_id, rows_loaded > 0, error FROM junction_sync_all(1, false) ORDER BY 1'
retry_deadlock "$W/syncall.s" s -c 'SELECT user_id, rows_loaded > 0, error FROM junction_sync_all(1, false) ORDER BY 1'
check "junction_sync_all runs against the distributed tables, for the same users as on single node" \
    "[ -s '$W/syncall.c' ] && diff '$W/syncall.s' '$W/syncall.c' && ! grep -qv '|t|\$' '$W/syncall.c'"
BOB=$(c -c "SELECT junction_user_create('citus-bob') ->> 'user_id'")
check "junction_refresh_connections(user) writes the user's connections into distributed junction.connections" \
    "c -c \"SELECT junction_refresh_connections('$BOB')\" >/dev/null && [ \"\$(c -c \"SELECT count(*) FROM junction.connections WHERE user_id = '$BOB'\")\" -gt 0 ]"
check "junction_refresh_connections() over every user runs on Citus" "c -c 'SELECT junction_refresh_connections()' >/dev/null 2>&1"

# the first-backfill fast path (plain INSERTs) racing a concurrent load of the same samples on the
# shards: A holds its rows uncommitted, B takes the fast path, waits on A's keys, gets
# unique_violation from the shard when A commits, rolls back to its savepoint (on the workers too)
# and loads again with ON CONFLICT
R=5f0b1d6e-8a40-4f5e-9b0c-0d1a2b3c4d63
RSYNC="SELECT rows_loaded FROM junction_sync('$R', ARRAY['heartrate'], '2025-03-01', '2025-03-03 23:59:59')"
s -c "$RSYNC" > "$W/race.ref"
curl -sf -X DELETE "$MOCK/_mock/requests" >/dev/null
c > "$W/race.a" 2>&1 <<SQL &
BEGIN;
$RSYNC;
SELECT set_config('application_name', 'race_a_done', false);
SELECT pg_sleep(3);
COMMIT;
SQL
RA=$!
wait_for 30 "[ \"\$(c -c \"SELECT count(*) FROM pg_stat_activity WHERE application_name = 'race_a_done'\")\" = 1 ]"
c -c "$RSYNC" > "$W/race.b" 2>&1; RB_RC=$?
wait $RA; RA_RC=$?
check "the fast path's unique_violation fallback holds on the shards: both sessions succeed, B loaded twice ($(first_page_requests $R heartrate) first pages)" \
    "[ $RA_RC -eq 0 ] && [ $RB_RC -eq 0 ] && [ \"\$(cat $W/race.b)\" = \"\$(cat $W/race.ref)\" ] && [ \$(first_page_requests $R heartrate) -eq 3 ]"
check "after the race the samples equal a single-node run" "[ \"\$(fp c $R)\" = \"\$(fp s $R)\" ]"

# ---- 4. a historical event, followed up by the backfill worker ----
H=5f0b1d6e-8a40-4f5e-9b0c-0d1a2b3c4d62
HBODY="{\"event_type\": \"historical.data.heartrate.created\", \"user_id\": \"$H\", \"client_user_id\": \"h\", \"team_id\": \"0190b2a0-0000-7000-8000-0000000000aa\", \"data\": {\"user_id\": \"$H\", \"start_date\": \"2025-02-01T00:00:00+00:00\", \"end_date\": \"2025-02-05T00:00:00+00:00\", \"provider\": \"apple_health_kit\"}}"
for f in s c; do
    $f -c "SELECT junction_receive(jsonb_build_object('svix-id', 'msg_cf_hist', 'svix-timestamp', extract(epoch FROM now())::bigint::text,
             'svix-signature', junction_sign_webhook('$SECRET', 'msg_cf_hist', extract(epoch FROM now())::bigint, \$b\$$HBODY\$b\$)), \$b\$$HBODY\$b\$)" >/dev/null
done
check "the backfill worker fetched the range into distributed samples (deadline 120 s)" \
    "wait_for 120 '[ \"\$(c -c \"SELECT fetch_status FROM junction.backfills WHERE user_id = '\''$H'\''\")\" = done ]'"
wait_for 60 "[ \"\$(s -c \"SELECT fetch_status FROM junction.backfills WHERE user_id = '$H'\")\" = done ]"
check "the backfilled samples equal the single-node backfill of the same event ($(c -c "SELECT rows_loaded FROM junction.backfills WHERE user_id = '$H'") rows, fast path: $(c -c "SELECT fast FROM junction.backfills WHERE user_id = '$H'"))" \
    "[ \"\$(fp c $H)\" = \"\$(fp s $H)\" ] && [ \"\$(c -c \"SELECT rows_loaded > 0 FROM junction.backfills WHERE user_id = '$H'\")\" = t ]"

# ---- 5. kill -9 of the worker mid-drain ----
N=3000
for f in s c; do
    $f -c "TRUNCATE junction.samples, junction.activity, junction.sleep, junction.body, junction.daily, junction.daily_parts" >/dev/null
    $f -c "DELETE FROM junction.events WHERE svix_id LIKE 'msg_test_%'" >/dev/null
done
s -c "\\copy (SELECT d.headers, d.body FROM generate_series(0, $((N - 1))) i, LATERAL jx_test_delivery(i, '$SECRET', extract(epoch FROM now())::bigint) d) TO '$W/kill.tsv'"
for f in s c; do $f -c "\\copy junction.inbox (headers, body) FROM '$W/kill.tsv'" >/dev/null; done
kills=0
for k in 1 2 3; do
    sleep 1
    pid=$(c -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'junction worker'" 2>/dev/null | head -1)
    if [ -n "$pid" ] && ! drained c; then kill -9 "$pid" && kills=$((kills + 1)); wait_up; fi
done
echo "       worker killed $kills times during the drain"
check "the worker was killed mid-drain" "[ $kills -ge 1 ]"
check "single node drained (deadline 120 s)" "wait_for 120 'drained s'"
check "Citus drained after the crashes (deadline 300 s)" "wait_for 300 'drained c'"
check "nothing lost, nothing applied twice: every delivery's event once" \
    "[ \"\$(c -c \"SELECT count(*) FROM junction.events WHERE svix_id LIKE 'msg_test_%'\")\" = \"\$(s -c \"SELECT count(*) FROM junction.events WHERE svix_id LIKE 'msg_test_%'\")\" ]"
# the tables this load writes (the backfill workers keep retrying the corpus' jobs meanwhile, on
# their own clocks: those tables are not compared here)
typed_fp() { $1 -c "SELECT tbl || ':' || nrows || ':' || md5 FROM jx_typed_fingerprint()
                    WHERE tbl IN ('samples', 'activity', 'sleep', 'body', 'events', 'daily', 'daily_parts') ORDER BY tbl"; }
typed_fp c > "$W/kill.c"; typed_fp s > "$W/kill.s"
diff "$W/kill.s" "$W/kill.c"
check "after the crashes the typed tables equal single node ($(wc -l < "$W/kill.c") tables)" "diff -q '$W/kill.s' '$W/kill.c' >/dev/null && [ \$(wc -l < '$W/kill.c') -eq 7 ]"

# ---- 6. a worker node down mid-drain: the batch is rolled back and retried, none quarantined ----
q0=$(c -c "SELECT count(*) FROM junction.inbox WHERE status = 'quarantined'")
pid0=$(c -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'junction worker'" | head -1)
m0=$(c -c "SELECT max(id) FROM junction.inbox")
# (a connection error's message runs over lines: the SQLSTATE ends the last one)
lost_conn() { grep -A3 'an inbox batch was rolled back and is retried in' "$W/citus/coord/server.log" | grep -c '(SQLSTATE 08'; }
n0=$(lost_conn)
(cd / && runuser -u postgres -- $PG_BIN/pg_ctl -D "$W/citus/w2/data" -m fast -w stop >/dev/null)
c -c "INSERT INTO junction.inbox (headers, body) SELECT d.headers, d.body FROM generate_series(5000, 5199) i,
        LATERAL jx_test_delivery(i, '$SECRET', extract(epoch FROM now())::bigint) d" >/dev/null
check "a worker node down: the inbox worker retries the batch (a LOG line with a class-08 SQLSTATE, deadline 60 s)" \
    "wait_for 60 '[ \$(lost_conn) -gt $n0 ]'"
grep -A3 'an inbox batch was rolled back and is retried in' "$W/citus/coord/server.log" | grep -B3 '(SQLSTATE 08' | tail -4
check "... and quarantines none of its deliveries: all 200 still pending" \
    "[ \"\$(c -c \"SELECT count(*) FROM junction.inbox WHERE status = 'quarantined'\")\" = '$q0' ] &&
     [ \"\$(c -c \"SELECT count(*) FROM junction.inbox WHERE status = 'pending'\")\" = 200 ]"
(cd / && runuser -u postgres -- $PG_BIN/pg_ctl -D "$W/citus/w2/data" -l "$W/citus/w2/server.log" -w start >/dev/null)
check "the node back, the same worker process drains them: one event per distinct svix id (deadline 120 s)" \
    "wait_for 120 'drained c' &&
     [ \"\$(c -c \"SELECT count(*) FROM junction.events WHERE svix_id IN (SELECT headers ->> 'svix-id' FROM junction.inbox WHERE id > $m0)\")\" = \
       \"\$(c -c \"SELECT count(DISTINCT headers ->> 'svix-id') FROM junction.inbox WHERE id > $m0 AND status = 'processed'\")\" ] &&
     [ \"\$(c -c \"SELECT count(*) FROM junction.inbox WHERE id > $m0 AND status = 'processed'\")\" = 200 ] &&
     [ \"\$(c -c \"SELECT pid FROM pg_stat_activity WHERE backend_type = 'junction worker'\" | head -1)\" = '$pid0' ]"
check "no junction worker error other than the kills (coordinator log)" \
    "! grep -E 'junction (worker|backfill): (ERROR|PANIC)' '$W/citus/coord/server.log' | grep -v 'terminating' | grep -q ."
grep -E 'junction (worker|backfill): (ERROR|PANIC)' "$W/citus/coord/server.log" | head -5
echo "       transient errors the workers rolled back and retried: $(grep -c 'rolled back and is retried' "$W/citus/coord/server.log")"
grep 'rolled back and is retried' "$W/citus/coord/server.log" | head -3
echo "$CHECKS_PASSED passed, $CHECKS_FAILED failed"
[ $CHECKS_FAILED -eq 0 ]
