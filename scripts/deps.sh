#!/usr/bin/env bash
# Installs the Debian packages graylane needs, only those missing (a fresh Debian 12
# with the Rust toolchain has none of them).
#
#   scripts/deps.sh build   protoc (+ its well-known types): etcd-client's build script
#                           runs it (protobuf-compiler, libprotobuf-dev)
#   scripts/deps.sh test    the above, plus what the tests start: etcd-server;
#                           iptables and iproute2 for transparent interception in
#                           network namespaces; kubernetes-validate (PyPI, in a venv
#                           under target/py) for the Kubernetes schemas; chromium and
#                           chromium-driver for the console's browser tests
#                           (tests/tests/console.rs, over WebDriver); python3 for
#                           the memory check (bench/conn-memory.py --check)
set -euo pipefail

need=()
check() { # check COMMAND-OR-FILE PACKAGE
    if [[ $1 == /* ]]; then [[ -e $1 ]] || need+=("$2"); else command -v "$1" >/dev/null || need+=("$2"); fi
}
check protoc protobuf-compiler
check /usr/include/google/protobuf/timestamp.proto libprotobuf-dev
venv=target/py
need_validator=0
if [[ ${1:-build} == test ]]; then
    check etcd etcd-server
    check iptables iptables
    check ip iproute2
    check curl curl
    check openssl openssl
    check promtool prometheus # promtool check metrics: tests/tests/metrics.rs
    check chromium chromium
    check chromedriver chromium-driver # WebDriver for chromium: tests/tests/console.rs
    check python3 python3 # bench/conn-memory.py --check, the memory bounds .ci/test checks
    if ! command -v kubernetes-validate >/dev/null && [[ ! -x $venv/bin/kubernetes-validate ]]; then
        need_validator=1
        python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
    fi
fi
if ((${#need[@]})); then
    echo "== apt-get install ${need[*]}" >&2
    sudo=()
    ((EUID == 0)) || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
        "${need[@]}" >&2
fi
if ((need_validator)); then
    echo "== pip install kubernetes-validate (into $venv)" >&2
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install -q kubernetes-validate >&2
fi
