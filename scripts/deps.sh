#!/usr/bin/env bash
# Installs the Debian packages graylane needs, only those missing (a fresh Debian 12
# with the Rust toolchain has none of them).
#
#   scripts/deps.sh build   protoc (+ its well-known types): etcd-client's build script
#                           runs it (protobuf-compiler, libprotobuf-dev)
#   scripts/deps.sh test    the above, plus what the tests start: etcd-server, and
#                           iptables and iproute2 for transparent interception in
#                           network namespaces
set -euo pipefail

need=()
check() { # check COMMAND-OR-FILE PACKAGE
    if [[ $1 == /* ]]; then [[ -e $1 ]] || need+=("$2"); else command -v "$1" >/dev/null || need+=("$2"); fi
}
check protoc protobuf-compiler
check /usr/include/google/protobuf/timestamp.proto libprotobuf-dev
if [[ ${1:-build} == test ]]; then
    check etcd etcd-server
    check iptables iptables
    check ip iproute2
fi
if ((${#need[@]})); then
    echo "== apt-get install ${need[*]}" >&2
    sudo=()
    ((EUID == 0)) || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
        "${need[@]}" >&2
fi
