#!/usr/bin/env bash
# Starts a throwaway PostgreSQL on a free port and prints its admin URL on stdout.
# Usage: eval "$(tests/pg.sh start DIR)"   → exports HUB_TEST_POSTGRES_URL and HUB_TEST_PG_DIR
#        eval "$(tests/pg.sh start DIR durable)"  the same with fsync on (for benchmarks; tests
#                                                  run with fsync off, as a throwaway server may)
#        tests/pg.sh stop DIR
# Installs PostgreSQL from Debian's packages if it is missing (a fresh machine of this kind has
# it, but not every machine does).
set -euo pipefail

cmd=${1:?usage: pg.sh start|stop DIR}
dir=${2:?usage: pg.sh start|stop DIR}

find_bin() {
    local b
    for b in /usr/lib/postgresql/*/bin; do
        if [ -x "$b/initdb" ]; then echo "$b"; return 0; fi
    done
    return 1
}

case "$cmd" in
start)
    if ! bin=$(find_bin); then
        echo "tests/pg.sh: PostgreSQL not found; installing it (apt-get install postgresql)" >&2
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) >&2
        bin=$(find_bin)
    fi
    mkdir -p "$dir"
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    runas=()
    if [ "$(id -u)" = 0 ]; then
        # initdb refuses to run as root.
        chown -R postgres:postgres "$dir"
        runas=(su postgres -s /bin/sh -c)
    else
        runas=(sh -c)
    fi
    "${runas[@]}" "$bin/initdb -D '$dir/data' -U postgres --auth=trust -E UTF8 --no-sync" >"$dir/initdb.log" 2>&1
    fast="-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    if [ "${3:-}" = durable ]; then fast=""; fi
    "${runas[@]}" "$bin/pg_ctl -D '$dir/data' -l '$dir/server.log' -w -o \"-p $port -k '$dir' -c listen_addresses=127.0.0.1 -c max_connections=400 $fast\" start" >&2
    echo "export HUB_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:$port/postgres"
    echo "export HUB_TEST_PG_DIR=$dir"
    ;;
stop)
    bin=$(find_bin)
    if [ "$(id -u)" = 0 ]; then
        su postgres -s /bin/sh -c "$bin/pg_ctl -D '$dir/data' -m immediate stop" >&2 || true
    else
        "$bin/pg_ctl" -D "$dir/data" -m immediate stop >&2 || true
    fi
    ;;
*)
    echo "usage: pg.sh start|stop DIR" >&2; exit 2 ;;
esac
