#!/usr/bin/env bash
# Quick start: build, start graylane-control on its embedded file store, apply the
# sample gray-release rules, show what is in force, and keep running until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bins
bin=target/release
data=${GRAYLANE_DATA:-./graylane-data}
"$bin/graylane-control" --store "file:$data" &
control=$!
trap 'kill $control 2>/dev/null; wait $control 2>/dev/null' EXIT INT TERM
for _ in $(seq 100); do
  "$bin/graylane" rules get >/dev/null 2>&1 && break
  kill -0 $control 2>/dev/null || { echo "graylane-control did not start" >&2; exit 1; }
  sleep 0.1
done
"$bin/graylane" rules apply -f deploy/rules/gray-release.yaml
echo; "$bin/graylane" rules get -o table
echo; "$bin/graylane" rules history
echo
echo "graylane-control is running (gRPC 127.0.0.1:15010, probes http://127.0.0.1:15014/ready)."
echo "Try: $bin/graylane release set orders gray && $bin/graylane release get"
echo "     $bin/graylane rules rollback --to 1 && $bin/graylane status"
echo "Ctrl-C stops it; the rules stay in $data."
wait $control
