#!/usr/bin/env bash
# Installs with apt-get (Debian or Ubuntu) the system packages that the full build and test suite
# (`--all-features`) need and that are missing:
#
#   gcc, libc6-dev     the linker, and the C compiler of mimalloc's sources
#   procps             `kill`, with which the example programs' tests signal the servers
#   protobuf-compiler  `protoc`, for the etcd client's generated code and the tonic echo peer
#   libprotobuf-dev    the protos `protoc` imports from /usr/include (google/protobuf/*.proto);
#                      the etcd client's protos import descriptor.proto
#   etcd-server        `etcd`, which the etcd backend's tests start
#   postgresql         `initdb`, `pg_ctl` and `postgres` (in /usr/lib/postgresql/*/bin), which
#                      the chat server's PostgreSQL store's tests start
#   chromium,          headless Chromium and its WebDriver server, in which the JavaScript
#   chromium-driver    client's tests run (examples/tests/browser_rpc.rs)
#   iproute2, iptables, `ip netns` and the NAT rules of the NAT lab (scripts/natlab), in
#   ipset              which the chat client's NAT tests run
#
# With `fuzz`, also what building the fuzz targets needs:
#
#   g++                the C++ compiler of libFuzzer's sources
#
# A plain `cargo build` (default features) needs only the first two lines; a plain `cargo test`
# also postgresql.
set -euo pipefail

missing=()
command -v cc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
# `type -P`, since `command -v` finds the shell's builtin `kill`.
type -P kill >/dev/null 2>&1 || missing+=(procps)
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
[ -e /usr/include/google/protobuf/descriptor.proto ] || missing+=(libprotobuf-dev)
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
# Debian's postgresql puts its programs outside PATH, under the major version.
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
type -P ip >/dev/null 2>&1 || missing+=(iproute2)
type -P iptables >/dev/null 2>&1 || missing+=(iptables)
type -P ipset >/dev/null 2>&1 || missing+=(ipset)
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
for extra in "$@"; do
  case "$extra" in
    fuzz) command -v c++ >/dev/null 2>&1 || missing+=(g++) ;;
    *) echo "usage: $0 [fuzz]" >&2; exit 2 ;;
  esac
done
[ ${#missing[@]} -gt 0 ] || exit 0

echo "installing ${missing[*]} with apt-get"
sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)
"${sudo[@]}" apt-get update -q
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y -q --no-install-recommends "${missing[@]}"
