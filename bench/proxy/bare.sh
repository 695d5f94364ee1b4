#!/usr/bin/env bash
# How far a codec of our own could take HTTP/1.1, and what hyper costs by itself
# (issue 15): run.sh's saturated HTTP/1.1 measurement for graylane, `bare-proxy` in its
# three modes (tokio + httparse and nothing else; hyper's server and client connections
# and nothing else; tokio + httparse with the inbound hop's per-request work done on
# the buffers: see bench/src/bin/bare-proxy.rs), nginx and HAProxy, same
# placement, interleaved rounds. Prints req/s per proxy core and the proxy's CPU per
# request split into user and kernel time.
#
# Usage, after `cargo build --release --workspace --bins`:  bash bench/proxy/bare.sh
# Env: DURATION=10 WARMUP=2 ROUNDS=3 PROXY_CPU=1 LOAD_CPU=0 KEEP=0.
set -euo pipefail
ROUNDS=${ROUNDS:-3}
source "$(dirname "${BASH_SOURCE[0]}")/run.sh"

ensure_tools nginx=nginx haproxy=haproxy bare-proxy
start_all
for codec in bare hyper mesh; do
    start "$codec" "$PROXY_CPU" "$BIN/bare-proxy" --upstream "$UP" --codec "$codec"
    PROCS[$codec]=$LAST_PID
    H1[$codec]=http://$(log_field "$codec" "$LAST_PID" bare_addr)
    wait_ok "$codec" "$LAST_PID" "${H1[$codec]}/"
done
for ((round = 1; round <= ROUNDS; round++)); do
    for name in graylane hyper mesh bare nginx haproxy; do
        saturate "$round" "$name" h1
    done
done

python3 - "$RESULTS" <<'EOF'
import statistics
import sys
from collections import defaultdict

rows = defaultdict(list)  # name -> [(req/s per core, user µs, kernel µs)]
for line in open(sys.argv[1], encoding="utf-8"):
    f = line.rstrip("\n").split("\t")
    if f[0] == "sat":
        reqs, cpu, kernel = int(f[4]), float(f[6]), float(f[10])
        rows[f[2]].append((reqs / cpu, 1e6 * (cpu - kernel) / reqs, 1e6 * kernel / reqs))
med = {n: [statistics.median(r[i] for r in rs) for i in range(3)] for n, rs in rows.items()}
title = {"graylane": "graylane", "hyper": "bare-proxy --codec hyper (hyper only)",
         "bare": "bare-proxy --codec bare (tokio + httparse)",
         "mesh": "bare-proxy --codec mesh (tokio + httparse + the hop's header work and metrics)",
         "nginx": "nginx",
         "haproxy": "HAProxy"}
print("| HTTP/1.1, saturated | req/s per proxy core | ÷ nginx | µs per request, user + kernel |")
print("|---|---|---|---|")
for n in ("graylane", "hyper", "mesh", "bare", "nginx", "haproxy"):
    rate, user, kernel = med[n]
    print(f"| {title[n]} | {rate / 1e3:.1f}k | {rate / med['nginx'][0]:.2f}× | "
          f"{user:.1f} + {kernel:.1f} |")
EOF
