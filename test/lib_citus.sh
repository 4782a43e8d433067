# test/lib_citus.sh — sourced: build Citus from ../shared/citus when the server
# has none, and run a throwaway 3-node Citus cluster (a coordinator and two
# workers on free 127.0.0.1 ports) as the postgres user.
# Needs: root, test/cluster.sh sourced first (PG_BIN, PG_CONFIG).

# The Citus source: $JX_CITUS_SRC, else ../shared/citus beside the repository, else /work/shared/citus.
CITUS_SRC=${JX_CITUS_SRC:-}
if [ -z "$CITUS_SRC" ]; then
    for d in "$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/shared/citus" /work/shared/citus; do
        [ -f "$d/citus-13.2.2.tar.gz" ] && { CITUS_SRC=$d; break; }
    done
fi

# Build and install Citus into the server at PG_BIN unless it already has it.
jx_citus_install() {
    local libdir; libdir=$($PG_CONFIG --pkglibdir)
    [ -f "$libdir/citus.so" ] && return 0
    local tarball=$CITUS_SRC/citus-13.2.2.tar.gz patch=$CITUS_SRC/pg15.20-have_createdb_privilege.patch
    [ -f "$tarball" ] || { echo "no Citus source (citus-13.2.2.tar.gz) in ../shared/citus or /work/shared/citus: set JX_CITUS_SRC"; return 1; }
    local pkgs="liblz4-dev libzstd-dev libkrb5-dev libselinux1-dev libpam0g-dev libreadline-dev libxslt1-dev libicu-dev" missing="" p
    for p in $pkgs; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
    done
    if [ -n "$missing" ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null || return 1
    fi
    local b; b=$(mktemp -d /tmp/citus-build.XXXXXX)
    echo "== building Citus 13.2.2 into $libdir (about a minute)"
    tar xzf "$tarball" -C "$b" && cd "$b"/citus-* &&
        { $PG_CONFIG --version | grep -q ' 15\.' && patch -p1 -s < "$patch" || true; } &&
        ./configure -q --without-libcurl PG_CONFIG=$PG_CONFIG >"$b/configure.log" 2>&1 &&
        make -s -j2 with_llvm=no >"$b/make.log" 2>&1 &&
        make -s install with_llvm=no >"$b/install.log" 2>&1
    local rc=$?
    cd - >/dev/null
    [ $rc -eq 0 ] && rm -rf "$b" || echo "Citus build failed: see $b/*.log"
    return $rc
}

# A free TCP port on 127.0.0.1 (the kernel's choice; nothing listens on it afterwards).
jx_free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Start one node: dir, port, database, extra conf.
jx_citus_node() {
    local dir=$1 port=$2 db=$3 extra=$4
    rm -rf "$dir"; mkdir -p "$dir"; chown postgres: "$dir"
    (cd / && runuser -u postgres -- $PG_BIN/initdb -D "$dir/data" -A trust -E UTF8 --locale=C.UTF-8 >/dev/null)
    (cd / && echo "CREATE DATABASE $db;" | runuser -u postgres -- $PG_BIN/postgres --single -D "$dir/data" postgres >/dev/null 2>&1)
    cat >> "$dir/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
port = $port
fsync = off
max_worker_processes = 32
log_min_messages = warning
log_line_prefix = '%m [%p] %b: '
$extra
CONF
    (cd / && runuser -u postgres -- $PG_BIN/pg_ctl -D "$dir/data" -l "$dir/server.log" -w start >/dev/null)
}

# Start a coordinator ($1/coord) and two workers ($1/w1, $1/w2) serving database $2.
# The coordinator preloads citus and junction (its workers drain there); the
# workers preload citus only and hold the shards.  Sets CITUS_PORTS (coordinator
# first), PGHOST/PGPORT/PGDATABASE for the coordinator.  Extra coordinator conf: $3.
jx_citus_start() {
    CITUS_DIR=$1; local db=$2 extra=${3:-} i
    CITUS_PORTS="$(jx_free_port) $(jx_free_port) $(jx_free_port)"
    set -- $CITUS_PORTS
    local cport=$1 w1=$2 w2=$3
    jx_citus_node "$CITUS_DIR/coord" "$cport" "$db" "shared_preload_libraries = 'citus,junction'
junction.database = '$db'
$extra" || return 1
    jx_citus_node "$CITUS_DIR/w1" "$w1" "$db" "shared_preload_libraries = 'citus'" || return 1
    jx_citus_node "$CITUS_DIR/w2" "$w2" "$db" "shared_preload_libraries = 'citus'" || return 1
    for i in $w1 $w2; do
        psql -qX -h 127.0.0.1 -p $i -U postgres -d $db -v ON_ERROR_STOP=1 -c "CREATE EXTENSION citus" >/dev/null || return 1
    done
    export PGHOST=$CITUS_DIR/coord PGPORT=$cport PGUSER=postgres PGDATABASE=$db
    psql -qX -v ON_ERROR_STOP=1 >/dev/null <<SQL || return 1
CREATE EXTENSION citus;
SELECT citus_set_coordinator_host('127.0.0.1', $cport);
SELECT citus_add_node('127.0.0.1', $w1);
SELECT citus_add_node('127.0.0.1', $w2);
SQL
}

# Stop every node of the cluster started by jx_citus_start.
jx_citus_stop() {
    [ -n "${CITUS_DIR:-}" ] || return 0
    local n
    for n in coord w1 w2; do
        [ -d "$CITUS_DIR/$n/data" ] &&
            (cd / && runuser -u postgres -- $PG_BIN/pg_ctl -D "$CITUS_DIR/$n/data" -m fast -w stop >/dev/null 2>&1)
    done
    return 0
}

# psql on worker node k (1 or 2) of the cluster.
jx_citus_worker_psql() {  # k, psql args...
    local k=$1; shift
    set -- $CITUS_PORTS "$@"
    local port; [ "$k" = 1 ] && port=$2 || port=$3
    shift 3
    psql -qXAt -h 127.0.0.1 -p "$port" -U postgres "$@"
}
