# test/cluster.sh — sourced helpers: install dependencies, build, and run a
# throwaway Postgres cluster as the postgres user.  Used by run-tests.sh and demo.sh.
# Needs: root.  Sets PGHOST, PGPORT, PGUSER, PGDATABASE for the cluster it starts.

# JX_PG_BIN points at another (relocated) copy of the server, so that two checkouts can test side by side.
PG_BIN=${JX_PG_BIN:-/usr/lib/postgresql/15/bin}
export PG_CONFIG=$PG_BIN/pg_config

# Install the Debian packages we need, once (idempotent).
jx_install_deps() {
    # (Node.js is needed only to regenerate the Svix vectors, not to run the tests.)
    local pkgs="postgresql-15 postgresql-server-dev-15 libcurl4-openssl-dev libssl-dev postgresql-15-cron postgresql-15-plpgsql-check gcc make"
    local missing=""
    for p in $pkgs; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
    done
    command -v python3 >/dev/null || missing="$missing python3"
    if [ -n "$missing" ]; then
        echo "== apt-get install$missing"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
    fi
}

# Build and install the extension from the repo root ($1).
jx_build_install() {
    make -C "$1" -s PG_CONFIG=$PG_CONFIG with_llvm=no >/dev/null
    make -C "$1" -s PG_CONFIG=$PG_CONFIG with_llvm=no install >/dev/null
}

# Start a cluster in directory $1 serving database $2 (created before the workers start).
# Extra postgresql.conf lines may follow as $3.
jx_cluster_start() {
    JX_DIR=$1; local db=$2 extra=${3:-}
    rm -rf "$JX_DIR"; mkdir -p "$JX_DIR"; chown postgres: "$JX_DIR"
    export PGHOST=$JX_DIR PGPORT=${JX_PORT:-5433} PGUSER=postgres PGDATABASE=$db
    (cd / && runuser -u postgres -- $PG_BIN/initdb -D "$JX_DIR/data" -A trust -E UTF8 --locale=C.UTF-8 >/dev/null)
    # create the database before any worker can look for it
    (cd / && echo "CREATE DATABASE $db;" | runuser -u postgres -- $PG_BIN/postgres --single -D "$JX_DIR/data" postgres >/dev/null 2>&1)
    cat >> "$JX_DIR/data/postgresql.conf" <<CONF
listen_addresses = ''
unix_socket_directories = '$JX_DIR'
port = $PGPORT
shared_preload_libraries = 'junction,pg_cron'
junction.database = '$db'
cron.database_name = '$db'
cron.use_background_workers = on
max_worker_processes = 32
fsync = off
log_min_messages = warning
log_line_prefix = '%m [%p] %b: '
$extra
CONF
    (cd / && runuser -u postgres -- $PG_BIN/pg_ctl -D "$JX_DIR/data" -l "$JX_DIR/server.log" -w start >/dev/null)
}

# Stop the cluster started by jx_cluster_start (quietly, whatever its state).
jx_cluster_stop() {
    [ -n "${JX_DIR:-}" ] && [ -d "$JX_DIR/data" ] || return 0
    (cd / && runuser -u postgres -- $PG_BIN/pg_ctl -D "$JX_DIR/data" -m fast -w stop >/dev/null 2>&1) || true
}
