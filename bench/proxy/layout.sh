#!/usr/bin/env bash
# Writes sidecar/layout/graylane-sidecar.order: the functions a running sidecar
# executes, grouped by configuration and hottest first, for the linker to place side
# by side at the start of .text (sidecar/build.rs passes it to lld as
# --symbol-ordering-file in release builds).
#
# Why: the kernel maps 64 KiB of a file around every page fault, so code executed here
# and there across an 8 MiB .text left 6 MiB of it resident, most of an idle sidecar's
# RSS. Packed together, 3.6 MiB of it is (see bench/README.md, "Sidecar memory").
#
# How: the sidecar runs under valgrind's callgrind from its first instruction, through
# start-up, a rule push, mesh mTLS, span export, HTTP/1.1, HTTP/2 and gRPC on both
# listeners, tagged requests, the admin endpoints and a graceful stop; every function
# of the binary that executed is listed (grouping and order: see the end). Symbol
# names carry a hash of the build's settings and dependencies, so run this after
# changing the toolchain, Cargo.lock or the release profile; names that no longer
# exist are skipped by the linker, and new code is laid out after the listed code.
#
# Usage, after `cargo build --release --workspace --bins`:  bash bench/proxy/layout.sh
#   --symbols: writes nothing; prints how many listed functions the release sidecar
#   has, and fails under 90 % or when they do not come first in its .text (run.sh
#   prints the line beside its results).
#   --check: --symbols, then the sidecar must serve a request (.ci/test runs this).
# The names are those of a `--workspace` build (features unify differently with
# `-p graylane-sidecar`, and symbol hashes follow them): the README's, the image's and
# the benchmarks' build.
# Env: REQUESTS=2000 (per protocol and listener) BENCH_BIN=target/release KEEP=0
set -euo pipefail

if [[ ${1:-} == --symbols || ${1:-} == --check ]]; then
    root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
    sidecar=${BENCH_BIN:-$root/target/release}/graylane-sidecar
    [[ -x $sidecar ]] || { echo "$sidecar missing: cargo build --release" >&2; exit 1; }
    nm -n "$sidecar" | python3 -c '
import sys
order = [line.strip() for line in open(sys.argv[1]) if line.strip()]
listed = set(order)
code = [(int(f[0], 16), f[2]) for f in map(str.split, sys.stdin)
        if len(f) == 3 and f[1] in "tTwW"]
present = [a for a, name in code if name in listed]
share = len(present) / len(order)
# Placed first: hardly any other function lies before the last listed one (a few
# assembly routines share sections with listed ones).
last = max(present, default=0)
before = sum(1 for a, name in code if name not in listed and a < last)
print(f"layout: {len(present)} of {len(order)} listed functions present ({share:.0%}), "
      f"{before} other functions among them")
if share < 0.9:
    sys.exit("layout: the order is stale (a new toolchain or Cargo.lock?): run "
             "`bash bench/proxy/layout.sh` after a release build and commit "
             "sidecar/layout/graylane-sidecar.order")
if before > len(code) // 100:
    sys.exit("layout: the linker did not place the listed functions first "
             "(sidecar/build.rs: is the linker rust-lld?)")
' "$root/sidecar/layout/graylane-sidecar.order"
    if [[ $1 == --symbols ]]; then exit; fi
fi

ROUNDS=1
TMP_PREFIX=graylane-layout
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
REQUESTS=${REQUESTS:-2000}
OUT=$ROOT/sidecar/layout/graylane-sidecar.order

if [[ ${1:-} == --check ]]; then
    # And the binary so linked serves (packed relocations need the dynamic loader's
    # support): one HTTP/1.1 and one h2c request through its inbound listener.
    start upstream 0 "$BIN/upstream"
    up=$(log_field upstream "$LAST_PID" upstream_addr)
    start_control control 0
    start_sidecar sidecar 1 "$GRPC_ADDR" "$up" --concurrency 1 --service check \
        --otlp-endpoint none
    for version in --http1.1 --http2-prior-knowledge; do
        got=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$version" "http://$INBOUND/")
        [[ $got == 200 ]] || die "the release sidecar answered $got ($version)"
    done
    say "layout: the release sidecar serves HTTP/1.1 and h2c"
    exit
fi

for tool in valgrind=valgrind h2load=nghttp2-client curl=curl openssl=openssl; do
    if ! command -v "${tool%%=*}" >/dev/null; then
        say "apt-get install ${tool#*=}"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${tool#*=}" >&2
    fi
done
for b in graylane graylane-sidecar graylane-control upstream; do
    [[ -x $BIN/$b ]] || die "$BIN/$b missing: cargo build --release --workspace --bins"
done

start upstream 0 "$BIN/upstream"
UP=$(log_field upstream "$LAST_PID" upstream_addr)
# A mesh CA for the first control plane: its sidecar gets a workload certificate, and
# its outbound listener reaches its inbound one over mTLS.
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
    -out "$TMP/ca-key.pem" 2>/dev/null
openssl req -x509 -new -key "$TMP/ca-key.pem" -subj "/O=graylane layout/CN=layout mesh CA" \
    -days 2 -sha256 -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" -out "$TMP/ca.pem" 2>/dev/null
printf '\0\0\0\0\0' >"$TMP/grpc.bin" # one empty gRPC message
load() { # load URL [h2load args...]: REQUESTS requests, all answered 2xx
    local url=$1 out ok
    shift
    out=$(timeout 300 h2load -t1 -c4 -n "$REQUESTS" "$@" "$url")
    ok=$(awk '/^status codes:/ { print $3 }' <<<"$out")
    [[ $ok == "$REQUESTS" ]] || die "$url $*: $ok of $REQUESTS requests answered 2xx"
}

# profile N [SIDECAR ARGS...]: the whole workload against sidecar N, its profile
# written to $TMP/callgrind.N when it stops.
profile() {
    local n=$1 listener host
    shift
    local ca=()
    ((n == 1)) && ca=(--ca-cert "$TMP/ca.pem" --ca-key "$TMP/ca-key.pem")
    start_control "control$n" 0 "${ca[@]}"
    # Mangled names (what the linker matches), one string table entry per name.
    SIDECAR_WRAP=(valgrind --tool=callgrind --demangle=no --compress-strings=no
        --compress-pos=no "--callgrind-out-file=$TMP/callgrind.$n")
    start_sidecar "sidecar$n" 1 "$GRPC_ADDR" "$UP" --service "bench$n" \
        --instance-id "bench-$n" --labels version=v2 "$@"
    local pid=$SIDECAR_PID
    # A pushed revision to compile (the first snapshot has none).
    "$BIN/graylane" --server "http://$GRPC_ADDR" rules apply --wait --timeout 60s \
        -f "$ROOT/deploy/rules/gray-release.yaml" -f "$TMP/canary.yaml" >&2
    for listener in "http://$INBOUND" "http://$OUTBOUND"; do
        host=()
        [[ $listener == "http://$OUTBOUND" ]] && host=(-H ":authority: bench$n")
        load "$listener/" --h1 -m1 "${host[@]}"
        load "$listener/" --h1 -m1 "${host[@]}" -H 'gray-publish: gray'
        load "$listener/" -m8 "${host[@]}"
        load "$listener$GRPC_PATH" -m8 "${host[@]}" -d "$TMP/grpc.bin" \
            -H 'content-type: application/grpc' -H 'te: trailers'
    done
    for path in /live /ready /metrics /config /gates/self; do
        curl -s -o /dev/null "http://$ADMIN$path"
    done
    kill -TERM "$pid"
    wait "$pid" || true
    [[ -s $TMP/callgrind.$n ]] || die "sidecar $n: no profile written"
}
cat >"$TMP/canary.yaml" <<'EOF'
apiVersion: graylane.io/v1
kind: Lane
metadata:
  name: canary
spec:
  tag: canary
  selector:
    version: v3
  fallback: [base]
EOF
# 1: as a pod runs it (a worker per CPU, mesh mTLS, spans exported to the control
# plane); 2: as the benchmarks do (one worker, plaintext, no export); 3: a worker per
# CPU, plaintext, no export (what tells the multi-threaded runtime's code from mTLS's
# and export's).
profile 1
profile 2 --concurrency 1 --otlp-endpoint none
profile 3 --otlp-endpoint none

# Exclusive instructions per function of the sidecar binary (the cost lines under
# `fn=`, not the inclusive cost line that follows each `calls=`), and which runs
# executed it. Grouped by that set, each group hottest first: what every run executed,
# then the multi-threaded runtime (1 and 3), what only a plain multi-threaded sidecar
# ran, what 2 and 3 share (plaintext, no export), the rest of the single worker's (2),
# what 1 and 2 share, and last mTLS and span export (1). Each configuration finds the
# code it runs in a few long stretches, not interleaved with code it never runs: the
# kernel maps 64 KiB around each fault, so only fine interleaving costs pages.
mkdir -p "$(dirname "$OUT")"
awk -v bin="$BIN/graylane-sidecar" '
    FNR == 1 { run++ }
    /^ob=/ { ours = (substr($0, 4) == bin); next }
    /^fn=/ { fn = ours ? substr($0, 4) : ""; sub(/'"'"'.*/, "", fn); next }
    /^calls=/ { skip = 1; next }
    /^[0-9+-]/ {
        if (skip) { skip = 0; next }
        if (fn != "" && $NF > 0) { cost[fn] += $NF; ran[fn, run] = 1 }
        next
    }
    END {
        split("123 13 3 23 2 12 1", order, " ")
        for (i in order) rank[order[i]] = i
        for (f in cost) {
            set = ""
            for (r = 1; r <= 3; r++) if ((f, r) in ran) set = set r
            print rank[set], cost[f], f
        }
    }' "$TMP/callgrind.1" "$TMP/callgrind.2" "$TMP/callgrind.3" |
    sort -k1,1n -k2,2nr | awk '{ print $3 }' >"$OUT"
# The first run's outbound → inbound hop is the only TLS here: without rustls in the
# list, the mesh certificate never came and mTLS's code is missing from the layout.
grep -q rustls "$OUT" || die "no mTLS in the first run's profile (see $TMP/sidecar1.log)"
say "$(wc -l <"$OUT") functions in ${OUT#"$ROOT"/}"
