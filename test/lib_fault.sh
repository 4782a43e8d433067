# test/lib_fault.sh — sourced by the fault tests: a cluster whose worker serves
# junction_fault, a reference database junction_clean (no worker), an
# idempotent chunked loader that survives crashes, and the final checks.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$ROOT/test/cluster.sh"
SECRET=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw
CHECKS_PASSED=0; CHECKS_FAILED=0

# One assertion: description, command that must succeed.
check() {
    if eval "$2"; then CHECKS_PASSED=$((CHECKS_PASSED+1)); echo "ok   - $1"
    else CHECKS_FAILED=$((CHECKS_FAILED+1)); echo "FAIL - $1"; fi
}

# Start the cluster and prepare both databases.
fault_setup() {  # workdir, extra conf
    FAULT_WORK=$1
    mkdir -p "$FAULT_WORK"
    jx_cluster_start "$FAULT_WORK/pg" junction_fault "$2"
    psql -qX -d postgres -c "CREATE DATABASE junction_clean" >/dev/null
    for db in junction_fault junction_clean; do
        psql -qX -v ON_ERROR_STOP=1 -d $db >/dev/null <<SQL
CREATE EXTENSION junction;
INSERT INTO junction.webhook_secrets(secret) VALUES ('$SECRET');
\i $ROOT/test/sql/deliveries.sql
CREATE TABLE loaded (chunk integer PRIMARY KEY);
SQL
    done
}

# Wait until the server accepts connections again (after a crash or restart).
wait_up() {
    local i
    for i in $(seq 1 600); do
        psql -qXAt -d postgres -c "SELECT 1" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    return 1
}

# Load deliveries [from, to) into db in chunks of 500; each chunk commits with
# its marker row, so a chunk is loaded exactly once whatever crashes in between.
load_chunks() {  # db, from, to
    local db=$1 from=$2 to=$3 k lo hi
    for ((lo = from; lo < to; lo += 500)); do
        k=$((lo / 500)); hi=$((lo + 499 < to - 1 ? lo + 499 : to - 1))
        until psql -qXAt -d $db -v ON_ERROR_STOP=1 >/dev/null 2>&1 <<SQL
SELECT count(*) > 0 AS done FROM loaded WHERE chunk = $k \gset
\if :done
\else
BEGIN;
INSERT INTO loaded VALUES ($k);
INSERT INTO junction.inbox (headers, body)
SELECT d.headers, d.body FROM generate_series($lo, $hi) i,
     LATERAL jx_test_delivery(i, '$SECRET', extract(epoch FROM now())::bigint) d;
COMMIT;
\endif
SQL
        do
            wait_up || return 1
            sleep 0.2
        done
    done
}

# Wait (with a deadline) until no delivery is pending in db.
wait_drained() {  # db, seconds
    local db=$1 deadline=$((SECONDS + $2)) p
    while [ $SECONDS -lt $deadline ]; do
        p=$(psql -qXAt -d $db -c "SELECT count(*) FROM junction.inbox WHERE status = 'pending'" 2>/dev/null || echo x)
        # and junction.daily's queue (0.3.0 on), which the worker empties after the inbox
        if [ "$p" = "0" ] && [ "$(psql -qXAt -d $db -c "SELECT to_regclass('junction.daily_pending_hours') IS NOT NULL" 2>/dev/null)" = t ]; then
            p=$(psql -qXAt -d $db -c "SELECT (SELECT count(*) FROM junction.daily_pending_hours) + (SELECT count(*) FROM junction.daily_pending_days)" 2>/dev/null || echo x)
        fi
        [ "$p" = "0" ] && return 0
        sleep 0.2
    done
    echo "still pending after $2 s: $p"; return 1
}

# The checks every crash test ends with: nothing lost, nothing applied twice,
# tables identical to a clean run of the same deliveries.
final_checks() {  # total deliveries
    local n=$1
    check "drained within the deadline" "wait_drained junction_fault 300"
    check "every delivery is in the inbox ($n)" \
        "[ \$(psql -qXAt -d junction_fault -c 'SELECT count(*) FROM junction.inbox') = $n ]"
    check "none pending or quarantined" \
        "[ \$(psql -qXAt -d junction_fault -c \"SELECT count(*) FROM junction.inbox WHERE status <> 'processed'\") = 0 ]"
    check "each processed exactly once (attempts = 1)" \
        "[ \$(psql -qXAt -d junction_fault -c 'SELECT count(*) FROM junction.inbox WHERE attempts <> 1') = 0 ]"
    check "one event per distinct svix-id" \
        "[ \$(psql -qXAt -d junction_fault -c \"SELECT count(*) = count(DISTINCT headers->>'svix-id') FROM junction.inbox\") = f ] && [ \$(psql -qXAt -d junction_fault -c \"SELECT (SELECT count(*) FROM junction.events) = (SELECT count(DISTINCT headers->>'svix-id') FROM junction.inbox)\") = t ]"
    # the reference: the same deliveries, no faults, drained synchronously
    load_chunks junction_clean 0 $n
    psql -qXAt -d junction_clean -c "SELECT junction_process_inbox($n)" >/dev/null
    psql -qXAt -d junction_fault -c "SELECT * FROM jx_typed_fingerprint()" > "$FAULT_WORK/fault.fp"
    psql -qXAt -d junction_clean -c "SELECT * FROM jx_typed_fingerprint()" > "$FAULT_WORK/clean.fp"
    cat "$FAULT_WORK/fault.fp"
    check "typed tables identical to a clean run" "diff '$FAULT_WORK/fault.fp' '$FAULT_WORK/clean.fp'"
    check "typed tables are not empty" "[ \$(awk -F'|' '{s+=\$2} END {print s+0}' '$FAULT_WORK/fault.fp') -gt $n ]"
    echo "$CHECKS_PASSED passed, $CHECKS_FAILED failed"
    [ $CHECKS_FAILED -eq 0 ]
}

# Wait (with a deadline) until a shell condition holds.
wait_for() {  # seconds, shell condition
    local deadline=$((SECONDS + $1))
    while [ $SECONDS -lt $deadline ]; do eval "$2" && return 0; sleep 0.1; done
    return 1
}

# How many times the mock API at $MOCK was asked for the first page (no cursor) of a user's
# timeseries resource: each is one start of a load.
first_page_requests() {  # user, resource
    curl -sf "$MOCK/_mock/requests?path_prefix=/v2/timeseries/$1/$2&limit=1000" |
        python3 -c 'import json,sys; print(sum(1 for r in json.load(sys.stdin) if "next_cursor" not in (r.get("query") or {})))'
}
