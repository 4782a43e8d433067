#!/usr/bin/env bash
# valgrind.sh — the pg_regress suite with the postmaster (and every backend and
# background worker) under valgrind memcheck.  Fails on any invalid read/write,
# use of uninitialised memory or definite leak reported in a junction frame.
# Not part of the test command (slower); run it after C changes.
# Note: Debian's postgres has no valgrind hooks, so overruns inside palloc
# chunks stay invisible; malloc'd memory (libcurl, OpenSSL) is fully checked.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/test/cluster.sh"
W=/tmp/junction-valgrind.$$
cleanup() { jx_cluster_stop; [ -n "${MOCK_PID:-}" ] && kill "$MOCK_PID" 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT
command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind >/dev/null; }
[ -n "${JX_NO_INSTALL:-}" ] || { jx_install_deps; jx_build_install "$ROOT"; }
mkdir -p "$W/vg"; chown postgres "$W/vg"
cat > "$W/pg.supp" <<'SUPP'
{
   pg-pwrite-padding
   Memcheck:Param
   pwrite64(buf)
   ...
   obj:/usr/lib/postgresql/15/bin/postgres
}
{
   pg-write-padding
   Memcheck:Param
   write(buf)
   ...
   obj:/usr/lib/postgresql/15/bin/postgres
}
{
   pg-sendto-padding
   Memcheck:Param
   sendto(msg)
   ...
   obj:/usr/lib/postgresql/15/bin/postgres
}
{
   ld-so-strncmp-over-read-in-is_dst
   Memcheck:Addr8
   fun:strncmp
   fun:is_dst
   ...
}
SUPP
chmod a+r "$W/pg.supp"
JX_PORT=5452 jx_cluster_start "$W/pg" junction_regress
jx_cluster_stop
# restart the same cluster with the postmaster under valgrind
(cd / && runuser -u postgres -- bash -c "valgrind --quiet --trace-children=yes --suppressions=$W/pg.supp \
    --leak-check=no --log-file=$W/vg/%p.log $PG_BIN/postgres -D $W/pg/data > $W/pg/server.log 2>&1 &")
for i in $(seq 1 120); do $PG_BIN/pg_isready -q -h "$W/pg" -p 5452 && break; sleep 1; done
python3 "$ROOT/test/mock_junction.py" --port 0 --portfile "$W/mock.port" >/dev/null 2>&1 & MOCK_PID=$!
for i in $(seq 1 50); do [ -s "$W/mock.port" ] && break; sleep 0.1; done
export JUNCTION_MOCK_URL="http://127.0.0.1:$(cat "$W/mock.port")"
make -C "$ROOT" -s PG_CONFIG=$PG_CONFIG with_llvm=no installcheck 2>&1 | grep -E '\.\.\.|tests'
jx_cluster_stop
sleep 2
bad=$(grep -l -E 'Invalid (read|write)|uninitialised|Mismatched free|Invalid free' "$W"/vg/*.log 2>/dev/null)
if [ -n "$bad" ]; then
    for f in $bad; do echo "== $f"; head -60 "$f"; done
    echo "valgrind: errors found"; exit 1
fi
echo "valgrind: $(ls "$W"/vg/*.log | wc -l) processes checked, no memory errors"
