#!/usr/bin/env bash
# Where the added latency of one hop goes at a low rate: run.sh's fixed-rate
# measurement (RATE req/s, open loop) for no proxy, graylane, nginx, HAProxy and
# Envoy, with the proxies placed three ways:
#
#   apart     proxy on PROXY_CPU, client and upstream on LOAD_CPU (run.sh's placement):
#             each request crosses CPUs four times, and at a low rate the proxy's CPU
#             is idle (on a VM, its vCPU halted) every time a request arrives
#   busy      the same, with a nice-19 spinner keeping the proxy's CPU from idling: what
#             an idle CPU's wake-up adds
#   together  every process on LOAD_CPU: no cross-CPU wake-up at all; what is left is
#             the proxies' own work and their context switches
#
# Usage, after `cargo build --release --workspace --bins`:  bash bench/proxy/wakeups.sh
# Env: RATE=2000 DURATION=10 WARMUP=2 ROUNDS=1 PROTOCOLS="h1 h2" (or grpc) PROXY_CPU=1
# LOAD_CPU=0 KEEP=0.
# Prints a Markdown table of added p50 / p99 (µs, proxied − direct in the same
# placement and round).
set -euo pipefail
ROUNDS=${ROUNDS:-1}
source "$(dirname "${BASH_SOURCE[0]}")/run.sh"
read -r -a PROTOS <<<"${PROTOCOLS:-h1 h2}"

# stop_all: every process started so far, as the exit trap would.
stop_all() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    PIDS=()
    PROCS=()
}

ensure_tools nginx=nginx haproxy=haproxy
printf '\0\0\0\0\0' >"$TMP/grpc.bin"
APART=$PROXY_CPU
for place in apart busy together; do
    PROXY_CPU=$APART
    [[ $place == together ]] && PROXY_CPU=$LOAD_CPU
    say "$place: proxies on CPU $PROXY_CPU, client and upstream on CPU $LOAD_CPU"
    start_all
    for name in direct "${PROXIES[@]}"; do check "$name"; done
    if [[ $place == busy ]]; then
        # Started like the proxies, so the CPU accounting does not count it as
        # someone else's load.
        start spinner "$PROXY_CPU" nice -n 19 sh -c 'while :; do :; done'
    fi
    for ((round = 1; round <= ROUNDS; round++)); do
        for proto in "${PROTOS[@]}"; do
            for name in direct "${PROXIES[@]}"; do
                fixed "$place.$round" "$name" "$proto"
            done
        done
    done
    stop_all
done

python3 - "$RESULTS" <<'EOF'
import statistics
import sys
from collections import defaultdict

lat = defaultdict(dict)  # (place, proto, name) -> round -> {p50, p99}
for line in open(sys.argv[1], encoding="utf-8"):
    f = line.rstrip("\n").split("\t")
    if f[0] != "lat":
        continue
    place, rnd = f[1].split(".")
    kv = dict(p.split("=") for p in f[4].split())
    lat[place, f[3], f[2]][rnd] = (float(kv["p50_us"]), float(kv["p99_us"]))
names = ["graylane", "nginx", "haproxy", "envoy"]
title = {"graylane": "graylane", "nginx": "nginx", "haproxy": "HAProxy", "envoy": "Envoy"}
print("| placement | protocol | no proxy p50 / p99 | "
      + " | ".join(f"{title[n]} added p50 / p99" for n in names) + " |")
print("|---" * (3 + len(names)) + "|")
for place in ("apart", "busy", "together"):
    for proto in sorted({k[1] for k in lat if k[0] == place}):
        direct = lat[place, proto, "direct"]
        cells = []
        for n in names:
            mine = lat[place, proto, n]
            added = [tuple(m - d for m, d in zip(mine[r], direct[r])) for r in mine if r in direct]
            cells.append("+%.0f / +%.0f" % tuple(statistics.median(a[i] for a in added)
                                                 for i in (0, 1)))
        d50 = statistics.median(v[0] for v in direct.values())
        d99 = statistics.median(v[1] for v in direct.values())
        print(f"| {place} | {proto} | {d50:.0f} / {d99:.0f} | " + " | ".join(cells) + " |")
EOF
