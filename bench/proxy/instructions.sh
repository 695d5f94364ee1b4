#!/usr/bin/env bash
# User-space instructions and malloc calls per request of one sidecar hop (client →
# graylane-sidecar inbound, --concurrency 1 → upstream), counted by valgrind's
# callgrind. HOP=outbound counts the calling side instead: client → sidecar A's
# outbound listener (the request names service `up` in its Host / :authority), routed
# to sidecar B's inbound (not counted) → upstream. Unlike req/s per core, the count
# does not move with what else runs on the machine, so an A/B of two builds means
# something on a shared 2-CPU VM. It does not count the kernel (about half of a hop's
# CPU on loopback: see bench/README.md).
#
# Usage, after `cargo build --release --workspace --bins`:
#   bash bench/proxy/instructions.sh                # this tree's target/release
#   BENCH_BIN=/tmp/before bash bench/proxy/instructions.sh
# Env: REQUESTS=3000 (counted, after 1,000 not counted) BENCH_BIN=target/release;
# HOP=inbound|outbound; KEEP=1 keeps the temp dir, with each protocol's profile
# (callgrind.h1, .h2, .grpc) for callgrind_annotate.
set -euo pipefail
ROUNDS=1
TMP_PREFIX=graylane-instructions
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
REQUESTS=${REQUESTS:-3000}
HOP=${HOP:-inbound}
[[ $HOP == inbound || $HOP == outbound ]] || die "HOP=$HOP: inbound or outbound"

for tool in valgrind=valgrind h2load=nghttp2-client curl=curl; do
    if ! command -v "${tool%%=*}" >/dev/null; then
        say "apt-get install ${tool#*=}"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${tool#*=}" >&2
    fi
done
for b in graylane-sidecar graylane-control upstream; do
    [[ -x $BIN/$b ]] || die "$BIN/$b missing: cargo build --release --workspace --bins"
done

start upstream 0 "$BIN/upstream"
UP=$(log_field upstream "$LAST_PID" upstream_addr)
start_control control 0
# Instrumentation off until the warm-up is done: start-up and first connections are
# not what a request costs.
WRAP=(valgrind --tool=callgrind --instr-atstart=no "--callgrind-out-file=$TMP/callgrind.%p")
AUTHORITY=()
if [[ $HOP == inbound ]]; then
    SIDECAR_WRAP=("${WRAP[@]}")
    start_sidecar sidecar 1 "$GRPC_ADDR" "$UP" --concurrency 1 --service bench \
        --instance-id bench-1 --otlp-endpoint none
    SIDECAR=$SIDECAR_PID
    TARGET=$INBOUND
else
    start_sidecar up 0 "$GRPC_ADDR" "$UP" --concurrency 1 --service up \
        --instance-id up-1 --otlp-endpoint none
    SIDECAR_WRAP=("${WRAP[@]}")
    start_sidecar sidecar 1 "$GRPC_ADDR" 127.0.0.1:9 --concurrency 1 --service client \
        --instance-id client-1 --otlp-endpoint none
    SIDECAR=$SIDECAR_PID
    TARGET=$OUTBOUND
    AUTHORITY=(-H ':authority: up')
    # A routes to `up` once its snapshot lists B.
    wait_ok sidecar "$SIDECAR" "http://$TARGET/" -H "Host: up"
fi

# count PROTO: one line "PROTO instructions/request mallocs/request".
count() {
    local proto=$1 load=(h2load -t1 -c8 -m16 ${AUTHORITY[@]+"${AUTHORITY[@]}"}) url=http://$TARGET/
    case $proto in
    h1) load=(h2load --h1 -t1 -c16 -m1 ${AUTHORITY[@]+"${AUTHORITY[@]}"}) ;;
    grpc)
        printf '\0\0\0\0\0' >"$TMP/grpc.bin" # one empty gRPC message
        load+=(-d "$TMP/grpc.bin" -H 'content-type: application/grpc' -H 'te: trailers')
        url=http://$TARGET$GRPC_PATH
        ;;
    esac
    timeout 300 "${load[@]}" -n 1000 "$url" >/dev/null
    callgrind_control --zero "$SIDECAR" >/dev/null 2>&1
    callgrind_control --instr=on "$SIDECAR" >/dev/null 2>&1
    local out
    out=$(timeout 300 "${load[@]}" -n "$REQUESTS" "$url")
    callgrind_control --instr=off "$SIDECAR" >/dev/null 2>&1
    callgrind_control --dump="$proto" "$SIDECAR" >/dev/null 2>&1
    local dump ok
    dump=$(ls -t "$TMP"/callgrind.*.* | head -n1)
    mv "$dump" "$TMP/callgrind.$proto"
    dump=$TMP/callgrind.$proto
    ok=$(awk '/^status codes:/ { print $3 }' <<<"$out")
    [[ $ok == "$REQUESTS" ]] || die "$proto: $ok of $REQUESTS requests answered 2xx"
    # malloc calls: callgrind's call counts into glibc's malloc, summed over callers.
    local ir mallocs
    ir=$(awk '/^(summary|totals):/ { if ($2 > m) m = $2 } END { print m + 0 }' "$dump")
    mallocs=$(callgrind_annotate --tree=caller "$dump" 2>/dev/null |
        awk 'BEGIN { RS = "" } /\*  [^\n]*malloc\.c:malloc \[/' |
        grep -o '([0-9,]*x)' | tr -d '(),x' | awk '{ s += $1 } END { print s + 0 }')
    python3 -c "print('$proto', 'instructions/request %.0f' % ($ir / $REQUESTS), \
        'mallocs/request %.1f' % ($mallocs / $REQUESTS))"
}
count h1
count h2
count grpc
