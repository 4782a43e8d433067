#!/usr/bin/env bash
# bench_backfill.sh — a 90-day heartrate backfill of one user: the mock Junction API in --dense mode
# (10,000 samples a day: 900,000 samples in 90 pages of 10,000) loaded into junction.samples by
#     SELECT * FROM junction_sync(user, ARRAY['heartrate'], '2025-01-01', '2025-03-31 23:59:59')
# beside the rate at which the mock alone serves the same 90 pages (same URLs, same cursors) to curl
# in the same run. Targets: junction_sync >= 50% of the mock's rate and >= 100,000 samples/s.
#
# Every rate is measured twice: "cold" (the mock's caches reset, so it generates each page on
# request, as on a first backfill) and "warm" (the mock answers from its page cache; pure serving).
# Then the database's own ceiling for the same rows (loaded from a table, or by COPY from a file; no HTTP, no JSON), and
# where junction_sync's time goes: HTTP + the page skeleton (junction._api_page), page -> typing items,
# junction._upsert_samples (the bulk loader, reading the samples from the page text, as a first backfill does), and EXPLAIN ANALYZE of
# one page's INSERT ... ON CONFLICT (the path of a resync over existing rows).
#
# As root. Starts its own cluster (port $JX_PORT, default 5448) and mock; JX_SKIP_BUILD=1 skips the
# build/install (when the caller already installed, e.g. under the shared install lock).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/test/cluster.sh"
RUNS=${RUNS:-3}
USER_ID=${USER_ID:-5f0b1d6e-8a40-4f5e-9b0c-0d1a2b3c4d5e}
START=2025-01-01; END='2025-03-31 23:59:59'
W=/tmp/junction-bench-backfill.$$
MOCK_PID=
cleanup() {
    jx_cluster_stop
    [ -n "$MOCK_PID" ] && kill "$MOCK_PID" 2>/dev/null || true
    rm -rf "$W"
}
trap cleanup EXIT
[ -n "${JX_SKIP_BUILD:-}" ] || { jx_install_deps; jx_build_install "$ROOT"; }
command -v curl >/dev/null || { echo "curl is required"; exit 2; }
mkdir -p "$W"; chmod 755 "$W"

python3 "$ROOT/test/mock_junction.py" --port 0 --portfile "$W/mock.port" --dense > "$W/mock.log" 2>&1 &
MOCK_PID=$!
for i in $(seq 1 50); do [ -s "$W/mock.port" ] && break; sleep 0.1; done
MOCK="http://127.0.0.1:$(cat "$W/mock.port")"
KEY=sk_us_test_key

# A cluster sized for a bulk load (the samples of one backfill fit in shared_buffers).
JX_PORT=${JX_PORT:-5448} jx_cluster_start "$W/pg" junction_bench "fsync = on
shared_buffers = 1GB
max_wal_size = 4GB
junction.auto_backfill = off"
psql -qX -v ON_ERROR_STOP=1 -c "CREATE EXTENSION junction"
PSQL_SET="SET junction.api_base_url = '$MOCK'; SET junction.api_key = '$KEY'; SET timezone = 'UTC';"

now() { date +%s.%N; }
rate() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.0f", n / s }'; }
mock_reset() { curl -sf -X POST "$MOCK/_mock/reset" >/dev/null; }

# 1. The 90 page URLs, exactly as junction_sync asks for them, following next_cursor with curl.
BASE="$MOCK/v2/timeseries/$USER_ID/heartrate/grouped?start_date=2025-01-01T00%3A00%3A00%2B00%3A00&end_date=2025-03-31T23%3A59%3A59%2B00%3A00"
url=$BASE; : > "$W/urls.curl"; PAGES=0
while :; do
    printf 'url = "%s"\noutput = "/dev/null"\n' "$url" >> "$W/urls.curl"
    PAGES=$((PAGES + 1))
    cursor=$(curl -sf -H "X-Vital-API-Key: $KEY" "$url" | tail -c 300 | sed -n 's/.*"next_cursor":"\([^"]*\)".*/\1/p')
    [ -z "$cursor" ] && break
    url="$BASE&next_cursor=$cursor"
done

# 2. The mock alone, serving those pages to one curl (one keep-alive connection, like junction_api).
curl_run() {  # prints "seconds bytes"
    local t0 t1 bytes
    t0=$(now)
    bytes=$(curl -sf -H "X-Vital-API-Key: $KEY" -H 'Accept: application/json' --config "$W/urls.curl" \
                 -w '%{size_download}\n' | awk '{ s += $1 } END { print s }')
    t1=$(now)
    echo "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }') $bytes"
}
best_curl_cold=999; best_curl_warm=999; BYTES=0
for r in $(seq 1 "$RUNS"); do
    mock_reset
    read -r s BYTES < <(curl_run)
    best_curl_cold=$(awk -v a="$best_curl_cold" -v b="$s" 'BEGIN { print (b < a) ? b : a }')
    read -r s BYTES < <(curl_run)
    best_curl_warm=$(awk -v a="$best_curl_warm" -v b="$s" 'BEGIN { print (b < a) ? b : a }')
done

# 3. junction_sync into an empty junction.samples (TRUNCATE + CHECKPOINT before each run).
sync_run() {  # [keep|nodaily]: keep the loaded rows (a resync), or junction.daily off; prints "seconds rows"
    local truncate="TRUNCATE junction.samples;" extra=
    [ "${1:-}" = keep ] && truncate=
    [ "${1:-}" = nodaily ] && extra="SET junction.daily = off;"
    psql -qXAt -v ON_ERROR_STOP=1 <<SQL | tail -1
$truncate
CHECKPOINT;
$PSQL_SET
$extra
SELECT clock_timestamp() AS t0 \gset
SELECT rows_loaded AS n FROM junction_sync('$USER_ID', ARRAY['heartrate'], '$START', '$END') \gset
SELECT round(extract(epoch FROM clock_timestamp() - :'t0')::numeric, 3) || ' ' || :n;
SQL
}
best_sync_cold=999; best_sync_warm=999; SAMPLES=0
for r in $(seq 1 "$RUNS"); do
    mock_reset
    read -r s SAMPLES < <(sync_run)
    best_sync_cold=$(awk -v a="$best_sync_cold" -v b="$s" 'BEGIN { print (b < a) ? b : a }')
    read -r s SAMPLES < <(sync_run)
    best_sync_warm=$(awk -v a="$best_sync_warm" -v b="$s" 'BEGIN { print (b < a) ? b : a }')
done
ROWS=$(psql -XAtc "SELECT count(*) FROM junction.samples WHERE user_id = '$USER_ID' AND resource = 'heartrate'")
# the same first backfill without junction.daily (the ceilings below maintain no junction.daily either)
best_sync_nodaily=999
for r in $(seq 1 "$RUNS"); do
    mock_reset
    read -r s n < <(sync_run nodaily)
    best_sync_nodaily=$(awk -v a="$best_sync_nodaily" -v b="$s" 'BEGIN { print (b < a) ? b : a }')
done
# a resync over the loaded range (a nightly job): every sample exists, every row is an ON CONFLICT update
best_resync=999
for r in $(seq 1 "$RUNS"); do
    read -r s n < <(sync_run keep)
    best_resync=$(awk -v a="$best_resync" -v b="$s" 'BEGIN { print (b < a) ? b : a }')
done

# 4. The database's own ceiling for these rows: the same 900,000 typed rows (as junction_sync left
#    them) loaded from a table, with no HTTP and no JSON: INSERT ... ON CONFLICT exactly as
#    junction._upsert_samples does it, and a plain INSERT (no conflict handling) into the same keyed
#    table. Neither can be beaten by any loader that keeps junction.samples and its key.
psql -qXAt -v ON_ERROR_STOP=1 -c "CREATE UNLOGGED TABLE bench_typed AS SELECT * FROM junction.samples
                                     ORDER BY user_id, time, resource, provider, source_type, type, workout_id"
ceiling_run() {  # $1 = the INSERT; prints seconds
    psql -qXAt -v ON_ERROR_STOP=1 <<SQL | tail -1
TRUNCATE junction.samples;
CHECKPOINT;
SELECT clock_timestamp() AS t0 \gset
$1;
SELECT round(extract(epoch FROM clock_timestamp() - :'t0')::numeric, 3);
SQL
}
UPSERT_SQL="INSERT INTO junction.samples AS t SELECT * FROM bench_typed
  ON CONFLICT (user_id, resource, time, provider, source_type, type, workout_id) DO UPDATE
  SET time_end = excluded.time_end, value = excluded.value, unit = excluded.unit,
      timezone_offset = excluded.timezone_offset, local_time = excluded.local_time,
      floating = excluded.floating, extra = excluded.extra, received_seq = excluded.received_seq
  WHERE excluded.received_seq > t.received_seq"
psql -qXAt -v ON_ERROR_STOP=1 -c "COPY bench_typed TO '$W/pg/typed.copy'"
T_CEIL_UPSERT=999; T_CEIL_PLAIN=999; T_CEIL_COPY=999
for r in $(seq 1 "$RUNS"); do
    s=$(ceiling_run "COPY junction.samples FROM '$W/pg/typed.copy'")
    T_CEIL_COPY=$(awk -v a="$T_CEIL_COPY" -v b="$s" 'BEGIN { print (b < a) ? b : a }')
    s=$(ceiling_run "$UPSERT_SQL")
    T_CEIL_UPSERT=$(awk -v a="$T_CEIL_UPSERT" -v b="$s" 'BEGIN { print (b < a) ? b : a }')
    s=$(ceiling_run "INSERT INTO junction.samples SELECT * FROM bench_typed")
    T_CEIL_PLAIN=$(awk -v a="$T_CEIL_PLAIN" -v b="$s" 'BEGIN { print (b < a) ? b : a }')
done
psql -qXAt -c "DROP TABLE bench_typed"; rm -f "$W/pg/typed.copy"

# 5. Where the time goes (warm mock): the same page loop as junction._sync_resource, timed by step.
BREAKDOWN=$(psql -qXAt -v ON_ERROR_STOP=1 <<SQL | tail -1
TRUNCATE junction.samples;
CHECKPOINT;
$PSQL_SET
DO \$\$
DECLARE
    res   junction.resources := junction._api_resource('heartrate');
    page  jsonb; items junction.typing_item[]; nc text; t timestamptz;
    http  float8 := 0; conv float8 := 0; ups float8 := 0;
BEGIN
    LOOP
        t := clock_timestamp();
        page := junction._fetch_page(res, '$USER_ID', '$START', '$END', NULL, nc, false, true);  -- as a first backfill reads it
        http := http + extract(epoch FROM clock_timestamp() - t); t := clock_timestamp();
        items := junction._page_items('$USER_ID', 'heartrate', junction._check_groups(page, 'bench'));
        conv := conv + extract(epoch FROM clock_timestamp() - t); t := clock_timestamp();
        PERFORM junction._upsert_samples(items, false);  -- the first-backfill path (empty table)
        ups := ups + extract(epoch FROM clock_timestamp() - t);
        nc := junction._next_cursor(page, nc, 'bench');
        EXIT WHEN nc IS NULL;
    END LOOP;
    PERFORM set_config('bench.out', format('%s %s %s', round(http::numeric, 3), round(conv::numeric, 3),
                                           round(ups::numeric, 3)), false);
END
\$\$;
SELECT current_setting('bench.out');
SQL
)
read -r T_HTTP T_CONV T_UPS <<< "$BREAKDOWN"
# one page's upsert into a table already holding the other 89 pages' samples
EXPLAIN=$(psql -qXA -v ON_ERROR_STOP=1 <<SQL 2>&1 | awk '/Insert on samples/ { on = 1 } /^(LOG|CONTEXT):/ { on = 0 } on' || true
$PSQL_SET
CREATE TEMP TABLE one AS
  SELECT junction._page_items('$USER_ID', 'heartrate', junction_fetch('heartrate', '$USER_ID', '2025-02-14', '2025-02-14 23:59:59') -> 'groups') AS items;
DELETE FROM junction.samples WHERE user_id = '$USER_ID' AND time >= '2025-02-14' AND time < '2025-02-15';
LOAD 'auto_explain';
SET auto_explain.log_min_duration = 0; SET auto_explain.log_analyze = on;
SET auto_explain.log_nested_statements = on; SET client_min_messages = log;
SELECT junction._upsert_samples(items) FROM one;
SQL
)
EXPLAIN=$(echo "$EXPLAIN" | cut -c1-160)

MB=$(awk -v b="$BYTES" 'BEGIN { printf "%.1f", b / 1e6 }')
R_CC=$(rate "$SAMPLES" "$best_curl_cold"); R_CW=$(rate "$SAMPLES" "$best_curl_warm")
R_SC=$(rate "$SAMPLES" "$best_sync_cold"); R_SW=$(rate "$SAMPLES" "$best_sync_warm")
pct() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f%%", 100 * a / b }'; }
echo "== junction_sync backfill: 90 days of dense heartrate, one user (best of $RUNS runs each)"
echo "pages: $PAGES, samples: $SAMPLES (rows in junction.samples: $ROWS), response bytes: $MB MB"
printf '%-52s %8.3f s %12s samples/s\n' "mock -> curl, cold (pages generated on request)" "$best_curl_cold" "$R_CC"
printf '%-52s %8.3f s %12s samples/s\n' "mock -> curl, warm (pages from the mock's cache)" "$best_curl_warm" "$R_CW"
printf '%-52s %8.3f s %12s samples/s   = %s of the cold mock\n' "junction_sync, cold mock" "$best_sync_cold" "$R_SC" "$(pct "$R_SC" "$R_CC")"
printf '%-52s %8.3f s %12s samples/s   = %s of the warm mock\n' "junction_sync, warm mock" "$best_sync_warm" "$R_SW" "$(pct "$R_SW" "$R_CW")"
printf '%-52s %8.3f s %12s samples/s   = %s of the cold mock\n' "junction_sync, cold mock, junction.daily = off" "$best_sync_nodaily" "$(rate "$SAMPLES" "$best_sync_nodaily")" "$(pct "$(rate "$SAMPLES" "$best_sync_nodaily")" "$R_CC")"
printf '%-52s %8.3f s %12s samples/s   = %s of the warm mock\n' "junction_sync again (resync: all ON CONFLICT updates)" "$best_resync" "$(rate "$SAMPLES" "$best_resync")" "$(pct "$(rate "$SAMPLES" "$best_resync")" "$R_CW")"
R_CU=$(rate "$SAMPLES" "$T_CEIL_UPSERT"); R_CP=$(rate "$SAMPLES" "$T_CEIL_PLAIN"); R_CO=$(rate "$SAMPLES" "$T_CEIL_COPY")
echo "the database's ceiling for the same typed rows (from a table: no HTTP, no JSON; best of $RUNS):"
printf '%-52s %8.3f s %12s samples/s   = %s of the cold mock\n' "  INSERT ... ON CONFLICT (as _upsert_samples)" "$T_CEIL_UPSERT" "$R_CU" "$(pct "$R_CU" "$R_CC")"
printf '%-52s %8.3f s %12s samples/s   = %s of the cold mock\n' "  plain INSERT into the keyed table" "$T_CEIL_PLAIN" "$R_CP" "$(pct "$R_CP" "$R_CC")"
printf '%-52s %8.3f s %12s samples/s   = %s of the cold mock\n' "  COPY FROM a file of the typed rows (text format)" "$T_CEIL_COPY" "$R_CO" "$(pct "$R_CO" "$R_CC")"
echo "junction_sync (cold mock) = $(pct "$R_SC" "$R_CP") of the plain INSERT ceiling (its path into an empty range), $(pct "$R_SC" "$R_CU") of the ON CONFLICT one, $(pct "$R_SC" "$R_CO") of COPY"
R_SN=$(rate "$SAMPLES" "$best_sync_nodaily")
echo "junction_sync (cold mock, junction.daily = off, like the ceilings) = $(pct "$R_SN" "$R_CP") of the plain INSERT ceiling, $(pct "$R_SN" "$R_CO") of COPY (target >= 60% of plain INSERT: $(awk -v a="$R_SN" -v b="$R_CP" 'BEGIN { print (a >= 0.6 * b) ? "met" : "MISSED" }'))"
echo "where junction_sync's time goes (warm mock, one run):"
printf '  %-50s %8.3f s\n' "HTTP + page skeleton (junction._api_page, C)" "$T_HTTP" \
       "page -> typing items (junction._page_items)" "$T_CONV" \
       "junction._upsert_samples(items, false): bulk loader" "$T_UPS"
echo "one page's upsert (10,000 samples) among the other 89 days (the resync path, ON CONFLICT), auto_explain:"
echo "$EXPLAIN" | sed 's/^/  /'
ok_abs=$(awk -v r="$R_SC" 'BEGIN { print (r >= 100000) ? "met" : "MISSED" }')
ok_rel=$(awk -v a="$R_SC" -v b="$R_CC" 'BEGIN { print (a >= 0.5 * b) ? "met" : "MISSED" }')
echo "target >= 100,000 samples/s (cold): $ok_abs; target >= 50% of the mock's rate (cold): $ok_rel"
