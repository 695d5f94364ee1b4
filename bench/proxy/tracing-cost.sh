#!/usr/bin/env bash
# The CPU cost of tracing per request in graylane-sidecar: one HTTP/1.1 hop (client →
# sidecar inbound → upstream) saturated with wrk, spans off, sampled at 1 % and at
# 100 % (exported to graylane-control, which indexes them), same pinning as run.sh.
# Prints a Markdown table: proxy CPU-µs per request, and the difference to "off".
#
# Usage, after `cargo build --release --workspace --bins`:  bash bench/proxy/tracing-cost.sh
# Env: DURATION=10 WARMUP=2 ROUNDS=3 PROXY_CPU=1 LOAD_CPU=0
set -euo pipefail
ROUNDS=${ROUNDS:-3}
source "$(dirname "${BASH_SOURCE[0]}")/run.sh"

# measure_mode MODE (none | percent): sets COST to CPU-µs per request. Runs in this
# shell (not in $(...)), so the exit trap knows every process it starts.
measure_mode() {
    local mode=$1 flags=(--otlp-endpoint none)
    [[ $mode == none ]] || flags=(--trace-sampling "$mode")
    start "graylane-$mode" "$PROXY_CPU" "$BIN/graylane-sidecar" --concurrency 1 \
        --service bench --instance-id "bench-$mode" --app-addr "$UP" \
        --control-plane "http://$GRPC" --admin-addr 127.0.0.1:0 \
        --outbound-addr 127.0.0.1:0 --inbound-addr 127.0.0.1:0 "${flags[@]}"
    local pid=$LAST_PID inbound admin
    inbound=$(log_field "graylane-$mode" "$pid" inbound_addr)
    admin=$(log_field "graylane-$mode" "$pid" admin_addr)
    wait_ok "graylane-$mode" "$pid" "http://$admin/ready"
    local url=http://$inbound/
    timeout -k 5 "$BOUND" taskset -c "$LOAD_CPU" wrk -t1 -c64 "-d${WARMUP}s" "$url" >/dev/null
    local t0 t1 out reqs
    t0=$(ticks "$pid")
    out=$(timeout -k 5 "$BOUND" taskset -c "$LOAD_CPU" wrk -t1 -c64 "-d${DURATION}s" "$url")
    t1=$(ticks "$pid")
    reqs=$(awk '/requests in/ { print $1 }' <<<"$out")
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    COST=$(awk -v t="$((t1 - t0))" -v hz="$HZ" -v r="$reqs" 'BEGIN { printf "%.3f", 1e6 * t / hz / r }')
}

ensure_tools
start upstream "$LOAD_CPU" "$BIN/upstream"
UP=$(log_field upstream "$LAST_PID" upstream_addr)
start control "$LOAD_CPU" "$BIN/graylane-control" --store memory: \
    --grpc-addr 127.0.0.1:0 --http-addr 127.0.0.1:0
GRPC=$(log_field control "$LAST_PID" grpc_addr)
declare -A cost
for ((round = 1; round <= ROUNDS; round++)); do
    for mode in none 1 100; do
        measure_mode "$mode"
        cost[$mode]+="$COST "
        say "round $round, tracing $mode: $COST CPU-µs per request"
    done
done
median() { tr ' ' '\n' <<<"$1" | grep . | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
off=$(median "${cost[none]}")
echo "| spans | proxy CPU-µs per request (median of $ROUNDS) | tracing's cost per request |"
echo "|---|---|---|"
for mode in none 1 100; do
    m=$(median "${cost[$mode]}")
    label=$([[ $mode == none ]] && echo "off (--otlp-endpoint none)" || echo "sampled at $mode %")
    awk -v l="$label" -v m="$m" -v o="$off" 'BEGIN { printf "| %s | %.2f | %+.2f µs |\n", l, m, m - o }'
done
