#!/usr/bin/env bash
# Self-test of test/mock_junction.py: starts the mock on a free port, drives every endpoint and
# every fault type with curl, measures the dense-heartrate serving rate with a keep-alive
# http.client loop, prints "N passed, N failed" and exits non-zero on any failure.
#   usage: test/mock_junction_selftest.sh [-v]      (-v: print every check)
set -u

HERE=$(cd "$(dirname "$0")" && pwd)
TMP=$(mktemp -d)
KEY=sk_us_selftest_key
MKEY=mg_selftest_key
VERBOSE=${1:-}
PASS=0
FAIL=0
PID=

cleanup() {
    if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
        kill -TERM "$PID" 2>/dev/null
        wait "$PID" 2>/dev/null
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT

python3 "$HERE/mock_junction.py" --port 0 --portfile "$TMP/port" --api-key "$KEY" \
    --management-key "$MKEY" >"$TMP/mock.out" 2>"$TMP/mock.err" &
PID=$!
for _ in $(seq 1 100); do
    [ -s "$TMP/port" ] && break
    sleep 0.05
done
if [ ! -s "$TMP/port" ]; then
    echo "mock did not start"; cat "$TMP/mock.err"; exit 1
fi
PORT=$(cat "$TMP/port")
BASE="http://127.0.0.1:$PORT"
U=7c9e6679-7425-40de-944b-e07fc1f90ae7
ORG=11111111-2222-4333-8444-555555555555
TEAM=66666666-7777-4888-9999-aaaaaaaaaaaa
WH="/v1/org/$ORG/team/$TEAM/production/webhook"
UA="junction-selftest/1.0"

# JSON query helper: pj FILE EXPR -> prints eval(EXPR) with d = parsed JSON (strings raw, rest as JSON)
cat >"$TMP/pj.py" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1], encoding="utf-8"))
v = eval(sys.argv[2])
print(v if isinstance(v, str) else json.dumps(v))
EOF
pj() { python3 "$TMP/pj.py" "$1" "$2"; }
jb() { pj "$TMP/body" "$1"; }

# req METHOD PATH [curl args...]: sets STATUS, CURL_RC; body in $TMP/body, headers in $TMP/hdr
req() {
    local m=$1 p=$2
    shift 2
    STATUS=$(curl -s -A "$UA" -o "$TMP/body" -D "$TMP/hdr" -w '%{http_code}' -X "$m" "$@" "$BASE$p")
    CURL_RC=$?
}
data() { local m=$1 p=$2; shift 2; req "$m" "$p" -H "X-Vital-API-Key: $KEY" "$@"; }
mgmt() { local m=$1 p=$2; shift 2; req "$m" "$p" -H "X-Management-Key: $MKEY" "$@"; }
ctl() { local m=$1 p=$2; shift 2; req "$m" "/_mock/$p" "$@"; }

ok() {
    PASS=$((PASS + 1))
    [ "$VERBOSE" = "-v" ] && echo "ok   - $1"
    return 0
}
bad() {
    FAIL=$((FAIL + 1))
    echo "FAIL - $1 (status=$STATUS curl_rc=${CURL_RC:-} body=$(head -c 300 "$TMP/body" 2>/dev/null))"
}
# check NAME COMMAND...: passes when the command succeeds
check() { local n=$1; shift; if "$@"; then ok "$n"; else bad "$n"; fi; }
# status NAME CODE: last response had this status
status() { if [ "$STATUS" = "$2" ]; then ok "$1"; else bad "$1 (want $2)"; fi; }
# is NAME EXPR WANT: jb EXPR prints WANT
is() {
    local got
    got=$(jb "$2" 2>&1)
    if [ "$got" = "$3" ]; then ok "$1"; else bad "$1: $2 = '$got', want '$3'"; fi
}
# truthy NAME EXPR: python expression over d is true
truthy() { is "$1" "bool($2)" "true"; }
header() { grep -i "^$1:" "$TMP/hdr" | head -1 | cut -d' ' -f2- | tr -d '\r'; }

# ------------------------------------------------------------------ auth, routing
S="/v2/summary/activity/$U?start_date=2024-01-01&end_date=2024-01-03"
req GET "$S"
status "data API without key -> 401" 401
is "401 body is FastAPI detail" 'd["detail"]' "Invalid API key"
req GET "$S" -H "X-Vital-API-Key: wrong"
status "data API with wrong key -> 401" 401
req GET "$S" -H "X-Management-Key: $MKEY"
status "management key does not work on data API" 401
data GET "$S"
status "data API with key -> 200" 200
mgmt GET "$WH"
status "management API with management key -> 200" 200
req GET "$WH" -H "X-Vital-API-Key: $KEY"
status "data key does not work on management API" 401
is "management 401 detail" 'd["detail"]' "Invalid management key"
req GET "$WH"
status "management API without key -> 401" 401
req GET "$WH" -H "X-Vital-Org-Key: $MKEY"
status "deprecated X-Vital-Org-Key alias accepted" 200
data GET "/v2/nonexistent"
status "unknown path -> 404" 404
is "404 detail" 'd["detail"]' "Not Found"
data PUT "/v2/summary/activity/$U"
status "wrong method -> 405" 405
check "Content-Length always set" test -n "$(header Content-Length)"

# ------------------------------------------------------------------ summaries
for r in activity sleep sleep_cycle workouts body meal menstrual_cycle electrocardiogram; do
    key=$r
    [ "$r" = meal ] && key=meals
    data GET "/v2/summary/$r/$U?start_date=2024-01-01&end_date=2024-01-03"
    status "summary $r -> 200" 200
    is "summary $r: 3 objects under key $key" "len(d['$key'])" 3
    truthy "summary $r: common fields" "all(o['user_id']=='$U' and o['id'] and o['source']['provider'] and o['created_at'] and o['updated_at'] and o['calendar_date'] for o in d['$key'])"
    is "summary $r: one object per day" "[o['calendar_date'] for o in d['$key']]" '["2024-01-01", "2024-01-02", "2024-01-03"]'
done
data GET "/v2/summary/activity/$U?start_date=2024-01-01&end_date=2024-01-03"
cp "$TMP/body" "$TMP/a1"
data GET "/v2/summary/activity/$U?start_date=2024-01-01&end_date=2024-01-03"
check "summaries are deterministic (byte-identical)" cmp -s "$TMP/body" "$TMP/a1"
data GET "/v2/summary/activity/$U?start_date=2024-01-02&end_date=2024-01-02"
is "same day in another range gives the same object" 'd["activity"][0]' "$(pj "$TMP/a1" 'd["activity"][1]')"
truthy "activity typed fields" "isinstance(d['activity'][0]['steps'], int) and 'avg_bpm' in d['activity'][0]['heart_rate']"
data GET "/v2/summary/activity/$U?start_date=2024-01-01T00:00:00Z&end_date=2024-01-02T12:00:00%2B00:00"
is "ISO datetime range accepted" 'len(d["activity"])' 2
data GET "/v2/summary/activity/$U?start_date=2024-01-01&end_date=2024-01-03&provider=fitbit"
is "provider filter without data -> empty list" 'd' '{"activity": []}'
data GET "/v2/summary/activity/$U?start_date=2024-01-01&end_date=2024-01-03&provider=oura"
is "provider filter with data" 'len(d["activity"])' 3
data GET "/v2/summary/activity/$U"
status "missing start_date -> 422" 422
is "422 detail is a validation list" 'd["detail"][0]["loc"]' '["query", "start_date"]'
data GET "/v2/summary/activity/not-a-uuid?start_date=2024-01-01"
status "invalid user id -> 422" 422
data GET "/v2/summary/nonsense/$U?start_date=2024-01-01"
status "unknown summary resource -> 404" 404
data GET "/v2/summary/profile/$U"
status "profile -> 200" 200
truthy "profile is a bare object" "'id' in d and d['user_id']=='$U' and 'profile' not in d and d['sex'] in ('female','male')"
data GET "/v2/summary/sleep/$U?start_date=2024-01-05&end_date=2024-01-05"
SLEEP_ID=$(jb 'd["sleep"][0]["id"]')
truthy "sleep fields" "d['sleep'][0]['state'] in ('confirmed','tentative') and d['sleep'][0]['total'] > 0 and d['sleep'][0]['sleep_stream'] is None"
data GET "/v2/summary/sleep_cycle/$U?start_date=2024-01-05&end_date=2024-01-05"
is "sleep_cycle.sleep_id is that day's sleep id" 'd["sleep_cycle"][0]["sleep_id"]' "$SLEEP_ID"
truthy "sleep_cycle parallel arrays" "len(set(map(len,[d['sleep_cycle'][0][k] for k in ('stage_start_offset_second','stage_end_offset_second','stage_type')])))==1 and d['sleep_cycle'][0]['source_provider']=='oura'"
data GET "/v2/summary/workouts/$U?start_date=2024-01-05&end_date=2024-01-05"
WORKOUT_ID=$(jb 'd["workouts"][0]["id"]')
WORKOUT_START=$(jb 'd["workouts"][0]["time_start"]')
truthy "workout sport object" "set(d['workouts'][0]['sport'])=={'id','name','slug'} and len(d['workouts'][0]['hr_zones'])==6"
data GET "/v2/summary/meal/$U?start_date=2024-01-05&end_date=2024-01-05"
truthy "meal energy/macros" "d['meals'][0]['energy']['unit']=='kcal' and 'fats' in d['meals'][0]['macros'] and d['meals'][0]['provider_id']==d['meals'][0]['id']"

# ------------------------------------------------------------------ streams
data GET "/v2/timeseries/workouts/$WORKOUT_ID/stream"
status "workout stream -> 200" 200
truthy "workout stream: parallel arrays" "all(k in d for k in ('time','heartrate','cadence','altitude','velocity_smooth','lat','lng','distance','power','resistance','temperature')) and len(d['time'])==len(d['heartrate'])==len(d['lat'])>0"
is "workout stream starts at the workout's time_start" \
    "__import__('datetime').datetime.fromtimestamp(d['time'][0], __import__('datetime').timezone.utc).isoformat()" "$WORKOUT_START"
data GET "/v2/timeseries/sleep/$SLEEP_ID/stream"
status "sleep stream -> 200" 200
truthy "sleep stream keys and samples" "set(d)=={'hrv','heartrate','hypnogram','respiratory_rate'} and d['heartrate'][0]['unit']=='bpm' and 'timestamp' in d['hypnogram'][0]"
data GET "/v2/timeseries/workouts/xyz/stream"
status "workout stream with bad id -> 422" 422

# ------------------------------------------------------------------ grouped timeseries: every segment
SEGS="afib_burden basal_body_temperature blood_oxygen blood_pressure body_mass_index body_temperature
body_temperature_delta caffeine calories_active calories_basal carbohydrates cholesterol daylight_exposure
distance electrocardiogram_voltage fall body_fat floors_climbed forced_expiratory_volume_1 forced_vital_capacity
glucose handwashing heart_rate_alert heart_rate_recovery_one_minute heartrate hrv ige igg inhaler_usage
insulin_injection lean_body_mass mindfulness_minutes note peak_expiratory_flow_rate respiratory_rate
sleep_apnea_alert sleep_breathing_disturbance stand_duration stand_hour steps stress_level uv_exposure vo2_max
waist_circumference water body_weight wheelchair_push workout_distance workout_duration workout_swimming_stroke
hypnogram"
nseg=0
segfail=
for s in $SEGS; do
    nseg=$((nseg + 1))
    data GET "/v2/timeseries/$U/$s/grouped?start_date=2024-01-01&end_date=2024-01-02"
    if [ "$STATUS" != 200 ] || [ "$(jb "bool(d['groups']) and 'next_cursor' in d and d['next']==d['next_cursor'] and all(g['source']['provider'] and g['source']['type'] and g['data'] and all('timestamp' in x and 'unit' in x and 'timezone_offset' in x and 'type' in x for x in g['data']) for gs in d['groups'].values() for g in gs)")" != true ]; then
        segfail="$segfail $s"
    fi
done
check "all $nseg grouped segments answer with well-formed groups${segfail:+ (bad:$segfail)}" test -z "$segfail"
check "51 segments checked (50 + hypnogram)" test "$nseg" = 51
data GET "/v2/timeseries/$U/weight/grouped?start_date=2024-01-01"
status "event name 'weight' is not a REST segment -> 404" 404
data GET "/v2/timeseries/$U/blood_pressure/grouped?start_date=2024-01-01&end_date=2024-01-01"
truthy "blood_pressure: systolic/diastolic, no value" "all('systolic' in x and 'diastolic' in x and 'value' not in x for x in d['groups']['withings'][0]['data'])"
data GET "/v2/timeseries/$U/note/grouped?start_date=2024-01-01&end_date=2024-01-01"
truthy "note: string value, interval" "all(isinstance(x['value'], str) and x['start'] and x['end'] for gs in d['groups'].values() for g in gs for x in g['data'])"
data GET "/v2/timeseries/$U/cholesterol/grouped?start_date=2024-01-01&end_date=2024-01-01"
is "cholesterol: four reading types at one timestamp" \
    "sorted((x['timestamp'], x['type']) for g in d['groups']['apple_health_kit'] for x in g['data'])" \
    '[["2024-01-01T12:00:00+00:00", "hdl"], ["2024-01-01T12:00:00+00:00", "ldl"], ["2024-01-01T12:00:00+00:00", "total"], ["2024-01-01T12:00:00+00:00", "triglycerides"]]'
data GET "/v2/timeseries/$U/heartrate/grouped?start_date=2024-01-01&end_date=2024-01-01"
truthy "heartrate: point samples (no start/end), bpm, int" "all('start' not in x and x['unit']=='bpm' and isinstance(x['value'], int) for x in d['groups']['apple_health_kit'][0]['data'])"
is "heartrate default density 288/day" 'len(d["groups"]["apple_health_kit"][0]["data"])' 288
data GET "/v2/timeseries/$U/glucose/grouped?start_date=2024-01-01&end_date=2024-01-01"
truthy "glucose (libre floating time): timezone_offset null" "all(x['timezone_offset'] is None for x in d['groups']['freestyle_libre'][0]['data'])"
data GET "/v2/timeseries/$U/calories_active/grouped?start_date=2024-01-01&end_date=2024-01-01"
is "calories_active: two providers" 'sorted(d["groups"])' '["apple_health_kit", "oura"]'
data GET "/v2/timeseries/$U/calories_active/grouped?start_date=2024-01-01&end_date=2024-01-01&provider=oura"
is "provider filter on timeseries" 'sorted(d["groups"])' '["oura"]'
data GET "/v2/timeseries/$U/steps/grouped?start_date=2024-01-01&end_date=2024-01-01"
is "steps: two sources in one provider" 'sorted(g["source"]["type"] for g in d["groups"]["apple_health_kit"])' '["phone", "watch"]'
data GET "/v2/timeseries/$U/steps/grouped?start_date=2024-01-01T10:00:00Z&end_date=2024-01-01T11:00:00Z"
is "datetime range clips samples (5 per source)" 'sum(len(g["data"]) for g in d["groups"]["apple_health_kit"])' 10
data GET "/v2/timeseries/$U/workout_distance/grouped?start_date=2024-01-05&end_date=2024-01-05"
is "workout_distance source carries the day's workout_id" 'd["groups"]["garmin"][0]["source"]["workout_id"]' "$WORKOUT_ID"
data GET "/v2/timeseries/$U/heartrate/grouped?start_date=2024-01-01&end_date=2024-01-03&provider=fitbit"
is "timeseries provider without data -> empty groups, null cursor" 'd' '{"groups": {}, "next_cursor": null, "next": null}'

# paging to the end: 30 days of steps (2 sources x 96/day) with page_days=7 -> 5 pages
follow() { # follow SEGMENT QUERY OUTPREFIX -> sets PAGES; pages in OUTPREFIX.N
    local seg=$1 q=$2 out=$3 cur="" n=0
    PAGES=0
    while :; do
        n=$((n + 1))
        if [ -n "$cur" ]; then
            data GET "/v2/timeseries/$U/$seg/grouped?$q&next_cursor=$cur"
        else
            data GET "/v2/timeseries/$U/$seg/grouped?$q"
        fi
        [ "$STATUS" = 200 ] || { PAGES=-1; return; }
        cp "$TMP/body" "$out.$n"
        cur=$(jb 'd["next_cursor"] or ""')
        [ -z "$cur" ] && break
        [ $n -gt 1000 ] && { PAGES=-2; return; }
    done
    PAGES=$n
}
count_pages() { # count_pages OUTPREFIX N -> total samples, unique (source, timestamp, type) keys
    python3 - "$1" "$2" <<'EOF'
import json, sys
total, keys = 0, set()
for i in range(1, int(sys.argv[2]) + 1):
    d = json.load(open("%s.%d" % (sys.argv[1], i)))
    for prov, gs in d["groups"].items():
        for g in gs:
            for x in g["data"]:
                total += 1
                keys.add((prov, g["source"]["type"], x["timestamp"], x["type"]))
print(total, len(keys))
EOF
}
follow steps "start_date=2024-01-01&end_date=2024-01-30" "$TMP/steps"
is_pages() { if [ "$PAGES" = "$2" ]; then ok "$1"; else bad "$1: $PAGES pages, want $2"; fi; }
is_pages "steps 30 days: 5 pages (7 days each)" 5
check "steps 30 days: 5760 samples, all distinct" test "$(count_pages "$TMP/steps" "$PAGES")" = "5760 5760"
follow steps "start_date=2024-01-01&end_date=2024-01-30" "$TMP/steps2"
check "paging is deterministic" cmp -s "$TMP/steps.3" "$TMP/steps2.3"
CUR=$(pj "$TMP/steps.1" 'd["next_cursor"]')
data GET "/v2/timeseries/$U/steps/grouped?start_date=2024-01-01&end_date=2024-01-30&cursor=$CUR"
check "deprecated cursor= alias" cmp -s "$TMP/body" "$TMP/steps.2"
data GET "/v2/timeseries/$U/steps/grouped?start_date=2024-01-01&end_date=2024-01-29&next_cursor=$CUR"
status "cursor reused with another range -> 422" 422
data GET "/v2/timeseries/$U/steps/grouped?start_date=2024-01-01&next_cursor=garbage"
status "garbage cursor -> 422" 422

# dense heartrate: 10000/day, 4000 samples per page -> pages split days
ctl POST config -d '{"dense": true, "page_samples": 4000}'
is "config dense -> heartrate 10000/day" 'd["density"]["heartrate"]' 10000
follow heartrate "start_date=2024-02-01&end_date=2024-02-03" "$TMP/hr"
is_pages "dense 3 days at 4000/page: 9 pages" 9
check "dense 3 days: 30000 samples, all distinct" test "$(count_pages "$TMP/hr" "$PAGES")" = "30000 30000"
truthy "a page holds at most page_samples" "sum(len(g['data']) for gs in d['groups'].values() for g in gs) <= 4000"
ctl POST config -d '{"page_samples": 10000}'
follow heartrate "start_date=2024-02-01&end_date=2024-02-03" "$TMP/hr10"
is_pages "dense 3 days at 10000/page: one day per page" 3
python3 - "$TMP/hr" "$TMP/hr10" >"$TMP/cmp" <<'EOF'
import json, sys
def samples(prefix, n):
    out = []
    for i in range(1, n + 1):
        d = json.load(open("%s.%d" % (prefix, i)))
        out += [x for gs in d["groups"].values() for g in gs for x in g["data"]]
    return out
print(samples(sys.argv[1], 9) == samples(sys.argv[2], 3))
EOF
check "page size does not change the data" test "$(cat "$TMP/cmp")" = True
ctl POST config -d '{"dense": false}'

# data_version: same ids/timestamps, new values and updated_at
data GET "/v2/summary/activity/$U?start_date=2024-01-01&end_date=2024-01-03"
cp "$TMP/body" "$TMP/v1"
data GET "/v2/timeseries/$U/heartrate/grouped?start_date=2024-01-01&end_date=2024-01-01"
cp "$TMP/body" "$TMP/hv1"
ctl POST config -d '{"data_version": 2}'
data GET "/v2/summary/activity/$U?start_date=2024-01-01&end_date=2024-01-03"
is "data_version 2: same summary ids" '[o["id"] for o in d["activity"]]' "$(pj "$TMP/v1" '[o["id"] for o in d["activity"]]')"
truthy "data_version 2: updated_at moves forward" "all(a['updated_at'] > b['updated_at'] for a, b in zip(d['activity'], json.load(open('$TMP/v1'))['activity']))"
data GET "/v2/timeseries/$U/heartrate/grouped?start_date=2024-01-01&end_date=2024-01-01"
truthy "data_version 2: same sample timestamps, different values" "[x['timestamp'] for x in d['groups']['apple_health_kit'][0]['data']] == [x['timestamp'] for x in json.load(open('$TMP/hv1'))['groups']['apple_health_kit'][0]['data']] and d != json.load(open('$TMP/hv1'))"
ctl POST config -d '{"data_version": 1}'

# ------------------------------------------------------------------ users
data POST /v2/user -H 'Content-Type: application/json' -d '{"client_user_id": "alice", "fallback_time_zone": "Europe/Paris"}'
status "create user -> 200" 200
ALICE=$(jb 'd["user_id"]')
truthy "user object fields" "d['client_user_id']=='alice' and d['team_id'] and d['created_on'] and d['fallback_time_zone']['id']=='Europe/Paris' and len(d['connected_sources'])==5"
data POST /v2/user -d '{"client_user_id": "alice"}'
status "duplicate client_user_id -> 400" 400
is "duplicate detail object" 'sorted(d["detail"])' '["created_on", "error_message", "error_type", "user_id"]'
is "duplicate detail names the existing user" 'd["detail"]["user_id"]' "$ALICE"
is "duplicate error_type" 'd["detail"]["error_type"]' "INVALID_REQUEST"
data POST /v2/user -d '{}'
status "create without client_user_id -> 422" 422
data POST /v2/user -d 'not json'
status "create with invalid JSON -> 422" 422
data GET "/v2/user/$ALICE"
status "get user -> 200" 200
is "get user client_user_id" 'd["client_user_id"]' alice
data GET "/v2/user/resolve/alice"
is "resolve by client_user_id" 'd["user_id"]' "$ALICE"
data GET "/v2/user/resolve/nobody"
status "resolve unknown -> 404" 404
is "404 detail" 'd["detail"]' "User not found"
data GET "/v2/user/00000000-0000-4000-8000-000000000000"
status "unknown user -> 404" 404
for i in 1 2 3 4; do data POST /v2/user -d "{\"client_user_id\": \"bob$i\"}"; done
data GET "/v2/user?offset=0&limit=2"
truthy "list users page 1" "len(d['users'])==2 and d['total']==5 and d['offset']==0 and d['limit']==2"
data GET "/v2/user?offset=4&limit=2"
is "list users last page" 'len(d["users"])' 1
data GET "/v2/user?limit=500"
status "list users limit 500 -> 200" 200
data GET "/v2/user?limit=501"
status "list users limit 501 -> 422" 422
data PATCH "/v2/user/$ALICE" -d '{"fallback_birth_date": "1990-05-01", "ingestion_start": "2024-01-01"}'
status "patch user -> 204" 204
check "204 has an empty body" test ! -s "$TMP/body"
data GET "/v2/user/$ALICE"
truthy "patch applied" "d['fallback_birth_date']['value']=='1990-05-01' and d['ingestion_start']=='2024-01-01' and d['fallback_time_zone']['id']=='Europe/Paris'"
data PATCH "/v2/user/$ALICE" -d '{"client_user_id": "bob1"}'
status "patch to an existing client_user_id -> 400" 400
data PATCH "/v2/user/00000000-0000-4000-8000-000000000000" -d '{}'
status "patch unknown user -> 404" 404

# ------------------------------------------------------------------ connections
data GET "/v2/user/providers/$ALICE"
status "providers -> 200" 200
is "providers slugs" '[p["slug"] for p in d["providers"]]' '["oura", "apple_health_kit", "withings", "freestyle_libre", "garmin"]'
truthy "provider fields" "all(set(p)>={'name','slug','logo','created_on','status','external_user_id','error_details','resource_availability'} for p in d['providers'])"
truthy "an errored connection with error_details" "[p for p in d['providers'] if p['status']=='error'][0]['error_details']['error_type']=='token_refresh_failed'"
truthy "resource_availability entries" "d['providers'][0]['resource_availability']['sleep']=={'status':'available','scope_requirements':None}"
data DELETE "/v2/user/$ALICE/withings"
is "deregister -> success" 'd' '{"success": true}'
data GET "/v2/user/providers/$ALICE"
is "deregistered provider gone" 'len(d["providers"])' 4
data DELETE "/v2/user/$ALICE/withings"
status "deregister again -> 404" 404
data GET "/v2/user/providers/00000000-0000-4000-8000-000000000000"
status "providers of unknown user -> 404" 404
data POST "/v2/user/refresh/$ALICE"
status "refresh -> 200" 200
truthy "refresh body" "d['success'] is True and d['user_id']=='$ALICE' and 'oura' in d['refreshed_sources'] and d['failed_sources']==['freestyle_libre']"
data POST "/v2/user/refresh/$ALICE?timeout=2"
status "refresh timeout below 5 -> 422" 422
ctl POST config -d '{"refresh_limit": 2}'
data POST "/v2/user/refresh/$ALICE"
status "refresh 2nd -> 200" 200
data POST "/v2/user/refresh/$ALICE"
status "refresh over the hourly limit -> 429" 429
ctl POST config -d '{"refresh_limit": 8}'

# ------------------------------------------------------------------ introspection (cursor paging)
for ep in resources historical_pull; do
    cur=""
    n=0
    : >"$TMP/pairs"
    while :; do
        n=$((n + 1))
        data GET "/v2/introspect/$ep?user_limit=50${cur:+&next_cursor=$cur}"
        [ "$STATUS" = 200 ] || break
        jb '"\n".join(e["user_id"] + " " + p for e in d["data"] for p in e["provider"])' >>"$TMP/pairs"
        cur=$(jb 'd["next_cursor"] or ""')
        [ -z "$cur" ] || [ $n -gt 100 ] && break
    done
    status "introspect $ep pages -> 200" 200
    check "introspect $ep: several pages ($n)" test "$n" -gt 1
    check "introspect $ep: 24 (user, provider) pairs, none twice" test "$(sort -u "$TMP/pairs" | grep -c .)" = 24
done
data GET "/v2/introspect/historical_pull?user_id=$ALICE&provider=oura"
truthy "historical_pull entry shape" "d['data'][0]['user_id']=='$ALICE' and d['data'][0]['provider']['oura']['pulled']['sleep']['status']=='success' and set(d['data'][0]['provider']['oura']['pulled']['sleep']['timeline'])=={'scheduled_at','started_at','ended_at'}"
data GET "/v2/introspect/resources?user_id=$ALICE&provider=oura"
truthy "resources entry shape" "set(d['data'][0]['provider']['oura']['sleep'])=={'last_attempt','oldest_data','newest_data','sent_count'} and d['next_cursor'] is None"

# ------------------------------------------------------------------ lab testing and Sense
LO1=8679b529-94d0-4b08-9bb6-75245e29b6fe
python3 - "$U" "$LO1" >"$TMP/lab.json" <<'EOF'
import json, sys
u, o1 = sys.argv[1], sys.argv[2]
orders = [{"id": o1 if i == 0 else "0190b2a7-0000-7000-8000-%012x" % i, "user_id": u if i < 3 else
           "0190b2a0-0000-7000-8000-000000000099", "status": "received", "updated_at": "2020-01-01T00:00:00Z"}
          for i in range(7)]
print(json.dumps({"orders": orders, "results": {o1: {"metadata": {"status": "final"},
      "results": [{"name": "Glucose", "slug": "glucose", "value": 99, "result": "99", "type": "numeric"}]}}}))
EOF
ctl POST lab -H 'Content-Type: application/json' --data-binary @"$TMP/lab.json"
status "seed lab orders -> 200" 200
data GET "/v3/orders?page=1&size=5"
status "GET /v3/orders -> 200" 200
is "orders page 1 of size 5" 'len(d["orders"])' "5"
is "orders total, page, size" '[d["total"], d["page"], d["size"]]' "[7, 1, 5]"
data GET "/v3/orders?page=2&size=5"
is "orders page 2 has the rest" 'len(d["orders"])' "2"
data GET "/v3/orders?user_id=$U"
is "orders filtered by user_id" 'len(d["orders"])' "3"
data GET "/v3/orders?size=101"
status "size above 100 -> 422" 422
data GET "/v3/orders?page=0"
status "page below 1 -> 422" 422
data GET "/v3/order/$LO1"
is "GET /v3/order/{id}" 'd["id"]' "$LO1"
data GET "/v3/order/0190b2a7-0000-7000-8000-0000000000ff"
status "unknown order -> 404" 404
data GET "/v3/order/not-a-uuid"
status "malformed order id -> 422" 422
data GET "/v3/order/$LO1/result"
is "GET /v3/order/{id}/result: LabResultsRaw" '[d["metadata"]["status"], d["results"][0]["slug"]]' '["final", "glucose"]'
data GET "/v3/order/0190b2a7-0000-7000-8000-000000000001/result"
status "order without results -> 404" 404
req GET "/v3/orders"
status "lab API without key -> 401" 401
ctl POST sense -H 'Content-Type: application/json' \
    -d "{\"user_id\": \"$U\", \"query\": \"sleep-analysis-v1\", \"table\": {\"group_key.0\": [\"2025-02-17T00:00:00\"], \"mean.sleep_score\": [76.75]}}"
status "seed a Sense result table -> 200" 200
data GET "/aggregate/v1/user/$U/continuous_query/sleep-analysis-v1/result_table"
is "Sense result table (column-oriented)" 'd["mean.sleep_score"]' "[76.75]"
data GET "/aggregate/v1/user/$U/continuous_query/unknown/result_table"
status "unknown continuous query -> 404" 404

# ------------------------------------------------------------------ team source priorities
data GET "/v2/team/source/priorities"
status "source priorities -> 200" 200
truthy "source priorities: every data_type, priorities 1.. in order, a provider object each" "isinstance(d, list) and {o['data_type'] for o in d}=={'workouts','activity','sleep','body','timeseries'} and all(set(o)=={'data_type','priority','source'} and o['source']['slug'] for o in d)"
data GET "/v2/team/source/priorities?data_type=sleep"
truthy "data_type=sleep: only sleep, oura first" "{o['data_type'] for o in d}=={'sleep'} and min(d, key=lambda o: o['priority'])['source']['slug']=='oura'"
data GET "/v2/team/source/priorities?data_type=steps"
status "data_type outside PriorityResource -> 422" 422
data PATCH "/v2/team/source/priorities" -H 'Content-Type: application/json' -d '{"sleep": ["garmin", "oura"]}'
status "PATCH source priorities -> 200" 200
data GET "/v2/team/source/priorities?data_type=sleep"
truthy "PATCH replaced the sleep list" "[o['source']['slug'] for o in sorted(d, key=lambda o: o['priority'])]==['garmin','oura']"
data PATCH "/v2/team/source/priorities" -H 'Content-Type: application/json' -d '{"sleep": "garmin"}'
status "PATCH with a non-list -> 422" 422

# ------------------------------------------------------------------ delete / undo
data DELETE "/v2/user/$ALICE"
is "delete user -> success" 'd' '{"success": true}'
data GET "/v2/user/$ALICE"
status "deleted user -> 404" 404
data POST "/v2/user/undo_delete?user_id=$ALICE"
is "undo_delete -> success" 'd' '{"success": true}'
data GET "/v2/user/$ALICE"
status "undeleted user is back" 200

# ------------------------------------------------------------------ management API: webhooks
mgmt POST "$WH" -d '{"description": "no url"}'
status "create webhook without url -> 422" 422
is "422 names url" 'd["detail"][0]["loc"]' '["body", "url"]'
mgmt POST "$WH" -d '{"url": "ftp://x"}'
status "create webhook with bad url -> 422" 422
mgmt POST "$WH" -H 'Content-Type: application/json' -d '{"url": "https://example.invalid/hook"}'
status "create webhook -> 200" 200
W1=$(jb 'd["id"]')
truthy "webhook defaults" "d['id'].startswith('ep_') and d['description']=='' and d['rate_limit'] is None and d['disabled'] is False and d['filter_types'] is None and d['created_at'] and d['updated_at'] and 'secret' not in d"
mgmt GET "$WH/$W1/secret"
S1=$(jb 'd["key"]')
check "generated secret is whsec_ + base64(24 bytes)" python3 -c "import base64,sys; k=sys.argv[1]; assert k.startswith('whsec_') and len(base64.b64decode(k[6:], validate=True))==24" "$S1"
GIVEN="whsec_$(python3 -c 'import base64; print(base64.b64encode(bytes(range(32))).decode())')"
mgmt POST "$WH" -d "{\"url\": \"https://example.invalid/2\", \"description\": \"two\", \"rate_limit\": 10, \"disabled\": true, \"filter_types\": [\"daily.data.sleep.created\"], \"secret\": \"$GIVEN\"}"
W2=$(jb 'd["id"]')
truthy "create with all fields" "d['description']=='two' and d['rate_limit']==10 and d['disabled'] is True and d['filter_types']==['daily.data.sleep.created']"
mgmt GET "$WH/$W2/secret"
is "given secret kept" 'd["key"]' "$GIVEN"
mgmt POST "$WH" -d '{"url": "https://example.invalid/3", "secret": "whsec_short"}'
status "invalid given secret -> 422" 422
for i in 3 4 5; do mgmt POST "$WH" -d "{\"url\": \"https://example.invalid/$i\"}"; done
cur=""
n=0
: >"$TMP/whids"
while :; do
    n=$((n + 1))
    mgmt GET "$WH?limit=2${cur:+&next_cursor=$cur}"
    jb '"\n".join(w["id"] for w in d["data"])' >>"$TMP/whids"
    cur=$(jb 'd["next_cursor"] or ""')
    [ -z "$cur" ] || [ $n -gt 20 ] && break
done
check "webhook list paged to the end: 3 pages of limit 2" test "$n" = 3
check "webhook list: 5 distinct ids" test "$(sort -u "$TMP/whids" | grep -c .)" = 5
mgmt GET "$WH"
is "webhook list default limit holds all" 'len(d["data"])' 5
mgmt GET "$WH?limit=0"
status "webhook list limit 0 -> 422" 422
mgmt GET "$WH/$W1"
is "get webhook" 'd["url"]' "https://example.invalid/hook"
mgmt PATCH "$WH/$W1" -d '{"description": "patched", "disabled": true}'
status "patch webhook -> 200" 200
truthy "patch is partial" "d['description']=='patched' and d['disabled'] is True and d['url']=='https://example.invalid/hook'"
mgmt PATCH "$WH/ep_doesnotexist" -d '{"description": "x"}'
status "patch unknown webhook -> 404" 404
mgmt GET "$WH/ep_doesnotexist"
status "get unknown webhook -> 404" 404
mgmt GET "$WH/$W1/headers"
is "headers initially empty" 'd' '{"headers": {}, "sensitive": []}'
mgmt PUT "$WH/$W1/headers" -d '{"headers": {"X-Shared": "abc", "Authorization": "Bearer t"}}'
status "put headers -> 204" 204
mgmt GET "$WH/$W1/headers"
is "headers after put (sensitive listed by name)" 'd' '{"headers": {"X-Shared": "abc"}, "sensitive": ["Authorization"]}'
mgmt PUT "$WH/$W1/headers" -d '{"headers": {"X-Other": "1"}}'
mgmt GET "$WH/$W1/headers"
is "put replaces the header set" 'd' '{"headers": {"X-Other": "1"}, "sensitive": []}'
mgmt PUT "$WH/$W1/headers" -d '{}'
status "put headers without headers -> 422" 422
mgmt POST "$WH/$W1/secret/rotate"
status "rotate without body -> 204" 204
mgmt GET "$WH/$W1/secret"
S2=$(jb 'd["key"]')
check "rotate changes the secret" test "$S1" != "$S2"
check "rotated secret well-formed" python3 -c "import base64,sys; k=sys.argv[1]; assert k.startswith('whsec_') and len(base64.b64decode(k[6:]))==24" "$S2"
mgmt POST "$WH/$W1/secret/rotate" -d "{\"key\": \"$GIVEN\"}"
status "rotate with key -> 204" 204
mgmt GET "$WH/$W1/secret"
is "rotate with key sets it" 'd["key"]' "$GIVEN"
mgmt POST "$WH/$W1/secret/rotate" -d '{"key": "nope"}'
status "rotate with invalid key -> 422" 422
mgmt GET "/v1/org/$ORG/team/$TEAM/sandbox/webhook"
is "sandbox scope is separate" 'd' '{"data": [], "next_cursor": null}'
mgmt GET "/v1/org/$ORG/team/$TEAM/staging/webhook"
status "unknown environment -> 422" 422
mgmt GET "/v1/org/not-a-uuid/team/$TEAM/production/webhook"
status "non-uuid org -> 422" 422
mgmt GET "/v1/org/$ORG/team/$TEAM/production/event_delivery_metric?interval=5m"
status "event_delivery_metric -> 200" 200
mgmt DELETE "$WH/$W1"
status "delete webhook -> 204" 204
check "delete webhook: empty body" test ! -s "$TMP/body"
mgmt GET "$WH/$W1"
status "deleted webhook -> 404" 404
mgmt DELETE "$WH/$W1"
status "delete again -> 404" 404

# ------------------------------------------------------------------ faults
ctl POST faults -d '{"path_prefix": "/v2/summary", "responses": [{"status": 429, "headers": {"Retry-After": "1"}}, {"status": 503}, {"delay_ms": 1500}, {"body": "not json{", "status": 200}, {"status": 401}]}'
status "queue faults -> 200" 200
is "faults queued" 'd["queued"]' 5
ctl GET faults
is "pending faults listed" 'len(d[0]["remaining"])' 5
data GET "$S"
status "fault 1: 429" 429
check "fault 1: Retry-After header" test "$(header Retry-After)" = 1
is "fault 1: FastAPI detail" 'd["detail"]' "Too Many Requests"
data GET "$S"
status "fault 2: 503" 503
t0=$(date +%s%N)
data GET "$S"
t1=$(date +%s%N)
status "fault 3: delayed, then normal" 200
check "fault 3: delay >= 1.4 s" test $(((t1 - t0) / 1000000)) -ge 1400
is "fault 3: normal body" 'len(d["activity"])' 3
data GET "$S"
status "fault 4: status 200" 200
check "fault 4: scripted non-JSON body" test "$(cat "$TMP/body")" = "not json{"
data GET "$S" -H "X-Vital-API-Key: $KEY"
status "fault 5: 401 even with a valid key" 401
data GET "$S"
status "after the script: normal behaviour" 200
ctl GET faults
is "no pending faults" 'd' '[]'
data GET "/v2/timeseries/$U/heartrate/grouped?start_date=2024-01-01&end_date=2024-01-01"
ctl POST faults -d '{"path_prefix": "/v2/timeseries", "responses": [{"drop": true}]}'
data GET "/v2/timeseries/$U/heartrate/grouped?start_date=2024-01-01&end_date=2024-01-01"
check "drop: connection closed without response (curl 52)" test "$CURL_RC" = 52
ctl POST faults -d '{"path_prefix": "/v2/timeseries", "responses": [{"truncate": true}]}'
data GET "/v2/timeseries/$U/heartrate/grouped?start_date=2024-01-01&end_date=2024-01-01"
check "truncate: body cut short (curl 18)" test "$CURL_RC" = 18
ctl POST faults -d '{"path_prefix": "/v2/summary", "responses": [{"delay_ms": 3000}]}'
data GET "$S" --max-time 1
check "delay beyond the client timeout (curl 28)" test "$CURL_RC" = 28
data GET "$S"
status "mock serves normally after a client gave up" 200
# the abandoned request finishes (and is logged) 2 s later: wait for it, so later counts are exact
for i in $(seq 1 50); do
    ctl GET "requests?path_prefix=/v2/summary"
    [ "$(jb 'any((e.get("fault") or {}).get("delay_ms") == 3000 for e in d)')" = True ] && break
    sleep 0.1
done
ctl POST faults -d '{"path_prefix": "/v2/user", "method": "POST", "repeat": 2, "responses": [{"status": 500, "body": {"detail": "boom"}}]}'
data GET "/v2/user"
status "method filter: GET not faulted" 200
data POST /v2/user -d '{"client_user_id": "carol"}'
status "method filter + repeat: POST #1 -> 500" 500
is "JSON body in a fault" 'd["detail"]' boom
data POST /v2/user -d '{"client_user_id": "carol"}'
status "repeat: POST #2 -> 500" 500
data POST /v2/user -d '{"client_user_id": "carol"}'
status "repeat exhausted -> 200" 200
ctl POST faults -d '{"path_prefix": "/v2/summary", "responses": [{"headers": {"X-Mock": "yes"}}]}'
data GET "$S"
check "headers-only fault: normal body plus header" test "$(header X-Mock)/$STATUS" = "yes/200"
ctl POST faults -d '{"path_prefix": "/v1/org", "responses": [{"status": 503}]}'
mgmt GET "$WH"
status "faults apply to the management API" 503
ctl POST faults -d '{"path_prefix": "/v2/summary", "responses": [{"status": 503}, {"status": 503}]}'
ctl DELETE faults
data GET "$S"
status "DELETE /_mock/faults clears them" 200
ctl POST faults -d '{"path_prefix": "v2", "responses": []}'
status "bad fault spec -> 422" 422

# ------------------------------------------------------------------ request log and stats
ctl GET requests
status "requests log -> 200" 200
truthy "log entries carry method/path/query/key-state/UA" "all({'method','path','query','api_key','management_key','user_agent','status'} <= set(e) for e in d)"
truthy "log reports key presence/validity" "{'valid','invalid','absent'} <= {e['api_key'] for e in d}"
truthy "log reports the User-Agent" "any(e['user_agent']=='$UA' for e in d)"
check "log never contains key values" test "$(grep -c -e "$KEY" -e "$MKEY" "$TMP/body")" = 0
truthy "log holds at most 1000 entries" "len(d) <= 1000"
truthy "log excludes /_mock" "not any(e['path'].startswith('/_mock') for e in d)"
# (a request of an earlier fault test may still be finishing in another thread and be logged
# late: count this one's entries, and take the highest seq, not the last entry's)
LAST=$(jb 'max(e["seq"] for e in d)')
data GET "$S&since_check=1"
ctl GET "requests?since=$LAST"
is "requests?since=SEQ" 'len([e for e in d if e["query"].get("since_check") == "1"])' 1
truthy "requests?since=SEQ returns only later entries" "all(e['seq'] > $LAST for e in d)"
ctl GET stats
truthy "stats per prefix" "d['by_prefix']['/v2/summary'] > 0 and d['by_prefix']['/v1/org'] > 0 and d['by_status']['401'] > 0 and d['faults_injected'] >= 10 and d['dropped'] >= 1"

# ------------------------------------------------------------------ transport
KA=$(curl -s -o /dev/null -o /dev/null -w '%{num_connects} ' -H "X-Vital-API-Key: $KEY" "$BASE$S" "$BASE$S")
check "keep-alive: second request reuses the connection ($KA)" test "$KA" = "1 0 "
req GET "$S" -H "X-Vital-API-Key: $KEY" -H 'Connection: close'
check "Connection: close honoured" test "$(header Connection)" = close
OTHER=$(hostname -I 2>/dev/null | awk '{print $1}')
if [ -n "$OTHER" ] && [ "$OTHER" != 127.0.0.1 ]; then
    curl -s -o /dev/null --max-time 2 "http://$OTHER:$PORT/_mock/health"
    check "not reachable on $OTHER (127.0.0.1 only)" test $? -ne 0
fi
check "quiet: nothing on stderr" test ! -s "$TMP/mock.err"

# ------------------------------------------------------------------ reset
ctl POST reset
data GET "/v2/user"
is "reset clears users" 'd["total"]' 0
mgmt GET "$WH"
is "reset clears webhooks" 'd["data"]' '[]'
ctl GET stats
is "reset clears counters" 'd["total"]' 2
ctl GET config
is "reset restores the CLI config" 'd["density"]' '{}'

# ------------------------------------------------------------------ serving rate: 90 days dense heartrate
ctl POST config -d '{"dense": true, "page_samples": 10000}'
python3 - "$PORT" "$KEY" "$U" >"$TMP/bench" <<'EOF'
import http.client, sys, time, urllib.parse
port, key, user = int(sys.argv[1]), sys.argv[2], sys.argv[3]
def run():
    conn = http.client.HTTPConnection("127.0.0.1", port)
    cur, pages, samples, nbytes = None, 0, 0, 0
    t = time.perf_counter()
    while True:
        q = {"start_date": "2024-01-01", "end_date": "2024-03-30"}
        if cur:
            q["next_cursor"] = cur
        conn.request("GET", "/v2/timeseries/%s/heartrate/grouped?%s" % (user, urllib.parse.urlencode(q)),
                     headers={"X-Vital-API-Key": key})
        r = conn.getresponse()
        b = r.read()
        if r.status != 200:
            raise SystemExit("status %d" % r.status)
        pages += 1
        nbytes += len(b)
        samples += b.count(b'"timestamp"')
        tail = b[b.rfind(b'"next_cursor":') + 14:]
        cur = None if tail.startswith(b"null") else tail[1:tail.index(b'"', 1)].decode()
        if not cur:
            break
    return pages, samples, nbytes, time.perf_counter() - t
p1, s1, b1, t1 = run()          # cold: pages generated
p2, s2, b2, t2 = run()          # warm: pages from the cache
print(p1, s1, b1, "%.0f" % (s1 / t1), "%.0f" % (s2 / t2), "%.1f" % (b1 / t1 / 1e6), "%.1f" % (b2 / t2 / 1e6),
      "%.2f" % t1, "%.2f" % t2)
EOF
read -r BP BS BB COLD WARM COLDMB WARMMB T1 T2 <"$TMP/bench"
check "dense 90 days: 90 pages" test "${BP:-0}" = 90
check "dense 90 days: 900000 samples" test "${BS:-0}" = 900000
echo "serving rate, 90 days dense heartrate (900000 samples, 90 pages of 10000, $((BB / 1000000)) MB):"
echo "  cold (generated): ${COLD} samples/s, ${COLDMB} MB/s, ${T1} s"
echo "  warm (cached):    ${WARM} samples/s, ${WARMMB} MB/s, ${T2} s"

# ------------------------------------------------------------------ SIGTERM
kill -TERM "$PID"
for _ in $(seq 1 40); do kill -0 "$PID" 2>/dev/null || break; sleep 0.05; done
if kill -0 "$PID" 2>/dev/null; then
    bad "exits on SIGTERM within 2 s"
else
    wait "$PID"
    RC=$?
    check "exits on SIGTERM with status 0 ($RC)" test "$RC" = 0
fi
PID=

echo "$PASS passed, $FAIL failed"
[ "$FAIL" = 0 ]
