#!/usr/bin/env bash
# Measures chat-load against three chat-server nodes sharing one etcd (presence, the list of
# nodes) and one PostgreSQL (messages, identities, rooms), all on loopback in a temporary
# directory that is removed at the end. Needs a release build with etcd:
#   cargo build --release -p examples -p chat-server --features chat-server/etcd
# Usage: scripts/chat-nodes-bench.sh [chat-load flags...], e.g. --clients 2000 --rate 2000
# --seconds 20. NODES (default 3) sets how many nodes. As root, PostgreSQL runs as the `postgres` user.
set -euo pipefail

target=${CARGO_TARGET_DIR:-target}/release
pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
dir=$(mktemp -d /tmp/chat-nodes-bench.XXXXXX)
etcd_port=${ETCD_PORT:-23790}
pg_port=${PG_PORT:-54330}
as_pg=()
if [ "$(id -u)" = 0 ]; then
    chown postgres: "$dir"
    as_pg=(runuser -u postgres --)
fi

etcd_pid=
cleanup() {
    set +e
    if [ -n "$etcd_pid" ]; then
        kill "$etcd_pid"
        wait "$etcd_pid"
    fi 2>/dev/null
    [ -f "$dir/pg/postmaster.pid" ] &&
        "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$dir/pg" -m immediate -w stop >/dev/null 2>&1
    rm -rf "$dir"
}
trap cleanup EXIT

etcd --name bench --data-dir "$dir/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" \
    --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$((etcd_port + 1))" \
    --initial-advertise-peer-urls "http://127.0.0.1:$((etcd_port + 1))" \
    --initial-cluster "bench=http://127.0.0.1:$((etcd_port + 1))" >"$dir/etcd.log" 2>&1 &
etcd_pid=$!

"${as_pg[@]}" "$pg_bin/initdb" -D "$dir/pg" -U postgres --auth=trust --no-sync >/dev/null
"${as_pg[@]}" "$pg_bin/pg_ctl" -D "$dir/pg" -l "$dir/pg.log" -w \
    -o "-p $pg_port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null
"${as_pg[@]}" "$pg_bin/createdb" -h 127.0.0.1 -p "$pg_port" -U postgres chat

"$target/chat-load" --nodes "${NODES:-3}" \
    --store "postgres://postgres@127.0.0.1:$pg_port/chat" \
    --registry "etcd://127.0.0.1:$etcd_port" "$@"
