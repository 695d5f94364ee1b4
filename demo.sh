#!/usr/bin/env bash
# The main job in one command: installs protoc if missing (etcd-client's build needs
# it), builds, and runs `graylane demo` (a whole mesh on loopback). Extra arguments go
# to `graylane demo`.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/deps.sh build
cargo build --release --workspace --bins
exec target/release/graylane demo "$@"
