#!/usr/bin/env bash
# A real, throwaway PostgreSQL cluster for the PostgreSQL tests and CI.
#
#   tests/postgres/cluster.sh up      install (root, when missing), initdb, start, wait ready
#   tests/postgres/cluster.sh down    stop the server by the pid in its postmaster.pid
#   tests/postgres/cluster.sh status  exit 0 when the server accepts connections
#
# The cluster runs as the `postgres` user (the server refuses to run as root, and CI runs as
# root), listens on a Unix socket in $SKYDECK_PG_DIR (default /tmp/skydeck-pg) and on no TCP
# address, trusts local connections as the superuser `skydeck`, and runs with fsync off:
# its data are thrown away. `up` is idempotent (a running server is left as it is) and
# writes $SKYDECK_PG_DIR/env, which tests read: SKYDECK_PG_HOST, SKYDECK_PG_PORT,
# SKYDECK_PG_USER and SKYDECK_TEST_STATE_URL (the maintenance database's URL).
# Facts behind it: the reference notes on PostgreSQL on this machine (docs/design.md, "State
# on PostgreSQL").
set -euo pipefail

DIR="${SKYDECK_PG_DIR:-/tmp/skydeck-pg}"
PORT="${SKYDECK_PG_PORT:-55432}"
USER_NAME=skydeck
WAIT_S="${SKYDECK_PG_WAIT_S:-30}"

die() { echo "cluster.sh: $*" >&2; exit 1; }

bindir() {
    local d
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && { echo "$d"; return 0; }
    done
    command -v pg_ctl >/dev/null && { dirname "$(command -v pg_ctl)"; return 0; }
    return 1
}

install_packages() {
    bindir >/dev/null && return 0
    [ "$(id -u)" -eq 0 ] || die "PostgreSQL missing and not root: install the postgresql package"
    command -v apt-get >/dev/null || die "PostgreSQL missing and no apt-get: install postgresql"
    echo "cluster.sh: installing postgresql" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >&2
    bindir >/dev/null || die "installed postgresql but initdb/pg_ctl are still missing"
}

as_owner() {  # run a command as the cluster's owner (postgres when we are root)
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

server_pid() {  # the postmaster's pid from its pid file, when that process runs
    local f="$DIR/data/postmaster.pid" pid
    [ -s "$f" ] || return 1
    pid="$(head -n1 "$f")"
    kill -0 "$pid" 2>/dev/null || return 1
    echo "$pid"
}

ready() {
    "$(bindir)/pg_isready" -q -h "$DIR" -p "$PORT" -U "$USER_NAME" -d postgres
}

write_env() {
    cat > "$DIR/env.tmp" <<ENV
SKYDECK_PG_HOST=$DIR
SKYDECK_PG_PORT=$PORT
SKYDECK_PG_USER=$USER_NAME
SKYDECK_TEST_STATE_URL=postgresql://$USER_NAME@/postgres?host=$DIR&port=$PORT
ENV
    mv "$DIR/env.tmp" "$DIR/env"
    chmod 0644 "$DIR/env"
}

up() {
    install_packages
    local bin
    bin="$(bindir)"
    if server_pid >/dev/null && ready; then
        write_env
        echo "cluster.sh: PostgreSQL already running on $DIR port $PORT"
        return 0
    fi
    if [ "$(id -u)" -eq 0 ]; then
        install -d -o postgres -g postgres -m 0755 "$DIR"
    else
        mkdir -p "$DIR"
    fi
    if [ ! -s "$DIR/data/PG_VERSION" ]; then
        rm -rf "$DIR/data"
        as_owner "$bin/initdb" -D "$DIR/data" -A trust -U "$USER_NAME" --no-sync \
            -E UTF8 --locale=C.UTF-8 >"$DIR/initdb.log" 2>&1 \
            || { cat "$DIR/initdb.log" >&2; die "initdb failed (log above)"; }
    fi
    rm -f "$DIR/data/postmaster.pid"  # left by a killed server whose pid is gone
    as_owner "$bin/pg_ctl" -D "$DIR/data" -l "$DIR/pg.log" -w -t "$WAIT_S" \
        -o "-p $PORT -k $DIR -c listen_addresses='' -c fsync=off -c full_page_writes=off -c max_connections=200" \
        start >/dev/null || { tail -n 20 "$DIR/pg.log" >&2; die "pg_ctl start failed (log above)"; }
    local waited=0
    until ready; do
        [ "$waited" -ge "$WAIT_S" ] && { tail -n 20 "$DIR/pg.log" >&2; die "server not ready after ${WAIT_S}s"; }
        sleep 1; waited=$((waited + 1))
    done
    write_env
    echo "cluster.sh: PostgreSQL up on $DIR port $PORT (user $USER_NAME)"
}

down() {
    local pid
    if pid="$(server_pid)"; then
        kill -INT "$pid" 2>/dev/null || true   # fast shutdown
        local i
        for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -0 "$pid" 2>/dev/null && { kill -KILL "$pid" 2>/dev/null || true; }
        echo "cluster.sh: PostgreSQL stopped (pid $pid)"
    else
        echo "cluster.sh: PostgreSQL not running"
    fi
}

status() {
    server_pid >/dev/null && ready
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    status) status ;;
    *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
