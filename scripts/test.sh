#!/usr/bin/env bash
# Runs the whole test suite with every feature: the etcd backend's tests against a real etcd and
# the tonic echo peer included.
#
# The etcd tests start their own etcd on free loopback ports; they need the `etcd` binary, and the
# etcd client and the tonic peer need `protoc` and its standard protos to build. On Debian or
# Ubuntu, `system-packages.sh` installs what is missing with apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/system-packages.sh

exec cargo test --workspace --all-features --locked "$@"
