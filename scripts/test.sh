#!/usr/bin/env bash
# Runs the whole test suite, the etcd backend's tests against a real etcd included.
#
# The etcd tests start their own etcd on free loopback ports; they need the `etcd` binary, and the
# etcd client needs `protoc` to build. On Debian or Ubuntu this installs both when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]} (needed by the etcd backend and its tests)"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

exec cargo test --workspace --all-features --locked "$@"
