#!/usr/bin/env bash
# One sidecar-to-sidecar hop, with and without mTLS: client → proxy A (the caller's
# side) → proxy B (the callee's side) → upstream, for
#   gl-mtls      graylane-sidecar A (outbound listener; the request names service `up` in
#                its Host / :authority) → graylane-sidecar B (inbound, service `up`,
#                --app-addr the upstream), a mesh-wide PeerPolicy `mtls: strict` applied
#                with the graylane CLI;
#   gl-plain     the same with `mtls: off`;
#   envoy-mtls   Envoy A (plaintext listener; cluster to B over TLS 1.3 with a client
#                certificate, checking B's URI SAN) → Envoy B (TLS 1.3 listener,
#                require_client_certificate, ALPN h2 and http/1.1, checking A's URI SAN;
#                key exchange X25519 on both, as rustls with ring does: Envoy's own
#                default is the post-quantum hybrid X25519MLKEM768);
#   envoy-plain  the same pair in plaintext;
# and `direct` (no proxy) for the added latency. Certificates: an EC P-256 CA made with
# openssl, given to graylane-control as --ca-cert/--ca-key (so the sidecars' certificates
# come from the same CA as Envoy's), and leaves with the URI SAN
# spiffe://cluster.local/ns/default/sa/NAME.
#
#   CPU $PROXY_CPU: both proxies of the pair under test, one worker thread each
#                   (graylane --concurrency 1, Envoy --concurrency 1); one pair loaded at
#                   a time, the others idle
#   CPU $LOAD_CPU:  the load generators, the upstream and the two graylane-controls
#
# For each pair and protocol (HTTP/1.1; HTTP/2 over h2c from the client to A, between A
# and B the protocol the client used):
#   saturation  closed loop (wrk -c64 / h2load -c8 -m16), $WARMUP s warm-up then
#               $DURATION s measured; req/s per proxy core = requests ÷ the CPU-seconds
#               of BOTH proxies (utime+stime from /proc/PID/stat)
#   latency     target/release/fixed-rate: open loop, evenly spaced, $RATE req/s for
#               $DURATION s after $WARMUP s; "added" = through the pair − direct
#   new connections per second per core of B: target/release/handshakes opens a new
#               connection for every request straight to B ($HS_CONCURRENCY at once,
#               one thread, $WARMUP s warm-up then $DURATION s): for the mTLS pairs a
#               full TLS 1.3 handshake (no resumption) with a client certificate from the
#               CA (graylane: spiffe://cluster.local/ns/default/sa/bench-client, SNI
#               up.default.identity.graylane.internal, the mesh SNI graylane's inbound
#               takes for mTLS; Envoy: .../sa/a), B's certificate checked against the CA
#               and its URI SAN, then GET / with Connection: close; for the plaintext
#               pairs the same over plain TCP. Connections ÷ B's CPU-seconds.
# Before measuring, it checks that the mTLS pairs really use mTLS: a plaintext request
# straight to B fails (and, for graylane, graylane_inbound_refused_total counts it), B's
# /config (graylane) or TLS stats (Envoy) show the certificate / handshakes.
#
# Usage, after `cargo build --release --workspace --bins`:  bash bench/proxy/mtls.sh
# Env: DURATION=10 WARMUP=2 RATE=2000 ROUNDS=3 PROXY_CPU=1 LOAD_CPU=0 KEEP=0
# HS_CONCURRENCY=8 MAX_OTHER=15 PAIRS="gl-mtls gl-plain envoy-mtls envoy-plain"; the
# whole sequence runs ROUNDS times (about 5 minutes each at the defaults) and each number
# is the median over the rounds; ratios are taken per round, then their median.
# Prints Markdown on stdout; configs, certificates and logs go to a temp dir (KEEP=1
# keeps it; results.tsv has every round's numbers).
set -euo pipefail
ROUNDS=${ROUNDS:-3}
HS_CONCURRENCY=${HS_CONCURRENCY:-8}
read -r -a PAIRS <<<"${PAIRS:-gl-mtls gl-plain envoy-mtls envoy-plain}"
PROTOS=(h1 h2)
TMP_PREFIX=graylane-mtls-bench
SPIFFE=spiffe://cluster.local/ns/default/sa
# Settings, temp dir, exit trap, ensure_tools, start, log_field, wait_ok, saturate,
# fixed and the CPU accounting.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

declare -A SERVER  # NAME -> B's PID (the handshake measurement's CPU)
declare -A B_ADDR  # NAME -> B's listener, IP:PORT
declare -A B_ADMIN # NAME -> B's admin listener, IP:PORT
declare -A A_ADMIN # NAME -> A's admin listener, IP:PORT

# pki: $TMP/pki/ca.pem (+ ca-key.pem) and a leaf NAME.pem / NAME-key.pem for a, b and
# bench-client, each with the URI SAN $SPIFFE/NAME (PKCS#8 keys, EC P-256).
pki() {
    local dir=$TMP/pki name
    mkdir -p "$dir"
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir/ca-key.pem" 2>/dev/null
    openssl req -x509 -new -key "$dir/ca-key.pem" -subj "/O=graylane bench/CN=bench mesh CA" \
        -days 2 -sha256 -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" -out "$dir/ca.pem" 2>/dev/null
    for name in a b bench-client; do
        openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
            -out "$dir/$name-key.pem" 2>/dev/null
        openssl req -new -key "$dir/$name-key.pem" -subj "/O=graylane bench" \
            -out "$dir/$name.csr" 2>/dev/null
        printf '%s\n' "basicConstraints=critical,CA:FALSE" \
            "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth,clientAuth" \
            "subjectAltName=URI:$SPIFFE/$name" >"$dir/$name.ext"
        openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca-key.pem" \
            -set_serial "0x$(openssl rand -hex 8)" -days 1 -sha256 -extfile "$dir/$name.ext" \
            -out "$dir/$name.pem" 2>/dev/null
    done
    openssl verify -CAfile "$dir/ca.pem" "$dir/a.pem" "$dir/b.pem" "$dir/bench-client.pem" >&2
}

# graylane_pair NAME MODE: a control plane with a mesh-wide PeerPolicy `mtls: MODE`,
# sidecar B (service up, in front of the upstream) and sidecar A (service client).
graylane_pair() {
    local name=$1 mode=$2 grpc pid_a pid_b a_port b_port
    start "$name-control" "$LOAD_CPU" "$BIN/graylane-control" --store "file:$TMP/$name-store" \
        --grpc-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 \
        --ca-cert "$TMP/pki/ca.pem" --ca-key "$TMP/pki/ca-key.pem"
    grpc=$(log_field "$name-control" "$LAST_PID" grpc_addr)
    cat >"$TMP/$name-peer.yaml" <<EOF
apiVersion: graylane.io/v1
kind: PeerPolicy
metadata:
  name: default
spec:
  mtls: "$mode"
EOF
    timeout -k 5 30 "$BIN/graylane" --server "http://$grpc" rules apply \
        -f "$TMP/$name-peer.yaml" >&2
    a_port=$(free_port)
    b_port=$(free_port)
    while [[ $b_port == "$a_port" ]]; do b_port=$(free_port); done
    # Spans off: Envoy traces nothing here either.
    start "$name-b" "$PROXY_CPU" "$BIN/graylane-sidecar" --concurrency 1 \
        --service up --instance-id "$name-up-1" --app-addr "$UP" \
        --control-plane "http://$grpc" --admin-addr 127.0.0.1:0 \
        --outbound-addr 127.0.0.1:0 --inbound-addr "127.0.0.1:$b_port" --otlp-endpoint none
    pid_b=$LAST_PID
    B_ADMIN[$name]=$(log_field "$name-b" "$pid_b" admin_addr)
    start "$name-a" "$PROXY_CPU" "$BIN/graylane-sidecar" --concurrency 1 \
        --service client --instance-id "$name-client-1" --app-addr 127.0.0.1:9 \
        --control-plane "http://$grpc" --admin-addr 127.0.0.1:0 \
        --outbound-addr "127.0.0.1:$a_port" --inbound-addr 127.0.0.1:0 --otlp-endpoint none
    pid_a=$LAST_PID
    A_ADMIN[$name]=$(log_field "$name-a" "$pid_a" admin_addr)
    wait_ok "$name-b" "$pid_b" "http://${B_ADMIN[$name]}/ready"
    wait_ok "$name-a" "$pid_a" "http://${A_ADMIN[$name]}/ready"
    PROCS[$name]="$pid_a $pid_b" SERVER[$name]=$pid_b B_ADDR[$name]=127.0.0.1:$b_port
    H1[$name]=http://127.0.0.1:$a_port H2[$name]=http://127.0.0.1:$a_port AUTH[$name]=up
    # A routes to `up` once its snapshot lists B.
    wait_ok "$name-a" "$pid_a" "${H1[$name]}/" -H "Host: up"
}

# envoy_pair NAME TLS (1 | 0): Envoy B in front of the upstream, Envoy A in front of B.
envoy_pair() {
    local name=$1 tls=$2 a_port b_port admin_a admin_b side keep pid_a pid_b
    a_port=$(free_port) b_port=$(free_port) admin_a=$(free_port) admin_b=$(free_port)
    [[ $(printf '%s\n' "$a_port" "$b_port" "$admin_a" "$admin_b" | sort -u | wc -l) == 4 ]] ||
        die "free_port gave the same port twice; run again"
    keep='s/^@TLS@//'
    ((tls)) || keep='/^@TLS@/d'
    for side in a b; do
        local admin=$admin_a
        [[ $side == b ]] && admin=$admin_b
        sed -e "$keep" -e "s|@DIR@|$TMP|g" -e "s|@UPSTREAM_PORT@|${UP##*:}|g" \
            -e "s|@A_PORT@|$a_port|g" -e "s|@B_PORT@|$b_port|g" -e "s|@ADMIN_PORT@|$admin|g" \
            "$HERE/envoy-mtls-$side.yaml.tmpl" >"$TMP/$name-$side.yaml"
    done
    start "$name-b" "$PROXY_CPU" "$ENVOY" -c "$TMP/$name-b.yaml" --concurrency 1 \
        --disable-hot-restart -l warn
    pid_b=$LAST_PID
    start "$name-a" "$PROXY_CPU" "$ENVOY" -c "$TMP/$name-a.yaml" --concurrency 1 \
        --disable-hot-restart -l warn
    pid_a=$LAST_PID
    B_ADMIN[$name]=127.0.0.1:$admin_b A_ADMIN[$name]=127.0.0.1:$admin_a
    wait_ok "$name-b" "$pid_b" "http://${B_ADMIN[$name]}/ready"
    wait_ok "$name-a" "$pid_a" "http://${A_ADMIN[$name]}/ready"
    PROCS[$name]="$pid_a $pid_b" SERVER[$name]=$pid_b B_ADDR[$name]=127.0.0.1:$b_port
    H1[$name]=http://127.0.0.1:$a_port H2[$name]=http://127.0.0.1:$a_port AUTH[$name]=up
    wait_ok "$name-a" "$pid_a" "${H1[$name]}/" -H "Host: up"
}

# check NAME: HTTP/1.1 and h2c requests through the pair answer 200 in their protocol.
check() {
    local name=$1 got
    got=$(curl -s --max-time 5 -o /dev/null -w '%{http_code} %{http_version}' -H "Host: up" \
        "${H1[$name]}/")
    [[ $got == "200 1.1" ]] || die "$name HTTP/1.1: got '$got'"
    got=$(curl -s --max-time 5 -o /dev/null -w '%{http_code} %{http_version}' --http2-prior-knowledge \
        -H "Host: up" "${H2[$name]}/")
    [[ $got == "200 2" ]] || die "$name HTTP/2: got '$got'"
}

# metric URL NAME: the sum of a Prometheus metric's samples (0 when absent).
metric() {
    curl -s --max-time 5 "$1" | awk -v m="$2" '$1 == m || index($1, m "{") == 1 { s += $NF }
        END { print s + 0 }'
}

# envoy_stat NAME STAT: a counter from an Envoy's admin /stats (0 when absent).
envoy_stat() {
    curl -s --max-time 5 "http://$1/stats?filter=$2" | awk -F': ' '{ s += $2 } END { print s + 0 }'
}

# verify NAME: the pair's hop A → B uses mTLS (mTLS pairs) or plaintext (the others);
# records what it saw as `info` rows and fails the run when the mode is not the one meant.
verify() {
    local name=$1 code before=0 after b=${B_ADDR[$1]}
    [[ $name != gl-mtls ]] ||
        before=$(metric "http://${B_ADMIN[$name]}/metrics" graylane_inbound_refused_total)
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 -H "Host: up" "http://$b/") || true
    case $name in
    gl-mtls)
        after=$(metric "http://${B_ADMIN[$name]}/metrics" graylane_inbound_refused_total)
        [[ $code != 200 ]] || die "$name: B's inbound answered a plaintext request (mTLS is not on)"
        ((after > before)) || die "$name: a plaintext probe did not raise B's" \
            "graylane_inbound_refused_total ($before → $after): is mTLS on?"
        curl -s --max-time 5 "http://${B_ADMIN[$name]}/config" >"$TMP/$name-b-config.json"
        grep -q "$SPIFFE/up" "$TMP/$name-b-config.json" ||
            die "$name: B's /config shows no identity $SPIFFE/up ($TMP/$name-b-config.json)"
        info "$name-check" "plaintext probe to B: HTTP $code, graylane_inbound_refused_total $before → $after; B's /config names $SPIFFE/up"
        ;;
    envoy-mtls)
        [[ $code != 200 ]] || die "$name: Envoy B answered a plaintext request"
        after=$(envoy_stat "${B_ADMIN[$name]}" 'listener\..*\.ssl\.handshake$')
        ((after > 0)) || die "$name: Envoy B counted no TLS handshake"
        info "$name-check" "plaintext probe to B: HTTP $code; B's TLS handshakes so far: $after, TLSv1.3: $(envoy_stat "${B_ADMIN[$name]}" 'listener\..*\.ssl\.versions\.TLSv1\.3$')"
        ;;
    *)
        [[ $code == 200 ]] || die "$name: B's listener refused a plaintext request (HTTP $code)"
        info "$name-check" "plaintext probe to B: HTTP $code"
        ;;
    esac
    say "$name: $(awk -F'\t' -v k="$name-check" '$2 == k { v = $3 } END { print v }' "$RESULTS")"
}

# handshakes ROUND NAME: new connections straight to B, one request each; an `hs` row.
handshakes() {
    local round=$1 name=$2 out=$TMP/hs-$2.txt try flags=()
    case $name in
    gl-mtls) flags=(--ca "$TMP/pki/ca.pem" --cert "$TMP/pki/bench-client.pem"
        --key "$TMP/pki/bench-client-key.pem" --peer-identity "$SPIFFE/up"
        --server-name up.default.identity.graylane.internal) ;;
    envoy-mtls) flags=(--ca "$TMP/pki/ca.pem" --cert "$TMP/pki/a.pem"
        --key "$TMP/pki/a-key.pem" --peer-identity "$SPIFFE/b"
        --server-name b.default.identity.graylane.internal) ;;
    *) flags=(--plaintext) ;;
    esac
    local cmd=(timeout -k 5 "$BOUND" taskset -c "$LOAD_CPU" "$BIN/handshakes"
        --addr "${B_ADDR[$name]}" --concurrency "$HS_CONCURRENCY" "${flags[@]}")
    PROCS[$name-server]=${SERVER[$name]}
    for try in 1 2 3; do
        "${cmd[@]}" --duration "$WARMUP" >/dev/null
        window_open "$name-server"
        "${cmd[@]}" --duration "$DURATION" >"$out"
        window_close "$name-server" sat
        ((try < 3)) && disturbed "$name new connections" || break
    done
    local line
    line=$(<"$out")
    grep -q '^count=[1-9]' <<<"$line" || die "$name new connections: $line"
    printf 'hs\t%s\t%s\t%s\t%s\n' "$round" "$name" "$line" "$WINDOW" >>"$RESULTS"
    say "round $round, $name new connections: $line; cpu_s wall_s load_busy% other%: $WINDOW"
}

main() {
    ensure_tools openssl=openssl graylane handshakes
    ((${#PIDS[@]} == 0)) || die "unexpected state"
    info rate "$RATE"
    info hs_concurrency "$HS_CONCURRENCY"
    say "certificates, the upstream, the control planes and the pairs (temp dir $TMP)"
    pki
    start upstream "$LOAD_CPU" "$BIN/upstream"
    UP=$(log_field upstream "$LAST_PID" upstream_addr)
    H1[direct]=http://$UP H2[direct]=http://$UP AUTH[direct]=up
    local name proto round
    for name in "${PAIRS[@]}"; do
        case $name in
        gl-mtls) graylane_pair "$name" strict ;;
        gl-plain) graylane_pair "$name" off ;;
        envoy-mtls) envoy_pair "$name" 1 ;;
        envoy-plain) envoy_pair "$name" 0 ;;
        *) die "unknown pair $name (PAIRS: gl-mtls gl-plain envoy-mtls envoy-plain)" ;;
        esac
    done
    for name in direct "${PAIRS[@]}"; do check "$name"; done
    for name in "${PAIRS[@]}"; do verify "$name"; done

    for ((round = 1; round <= ROUNDS; round++)); do
        for proto in "${PROTOS[@]}"; do
            for name in direct "${PAIRS[@]}"; do
                saturate "$round" "$name" "$proto"
                fixed "$round" "$name" "$proto"
            done
        done
        for name in "${PAIRS[@]}"; do handshakes "$round" "$name"; done
    done
    # After the load: Envoy's view of the hop A → B (connections by protocol, TLS).
    for name in "${PAIRS[@]}"; do
        [[ $name == envoy-* ]] || continue
        info "$name-b-stats" "downstream HTTP/1.1 connections $(envoy_stat "${B_ADMIN[$name]}" 'http\.inbound\.downstream_cx_http1_total$'), HTTP/2 $(envoy_stat "${B_ADMIN[$name]}" 'http\.inbound\.downstream_cx_http2_total$'), TLS handshakes $(envoy_stat "${B_ADMIN[$name]}" 'listener\..*\.ssl\.handshake$')"
    done
    for name in "${PAIRS[@]}"; do
        [[ $name == gl-* ]] || continue
        curl -s --max-time 5 "http://${B_ADMIN[$name]}/metrics" >"$TMP/$name-b-metrics.txt" || true
        curl -s --max-time 5 "http://${A_ADMIN[$name]}/metrics" >"$TMP/$name-a-metrics.txt" || true
    done
    python3 "$HERE/mtls_report.py" "$RESULTS"
    cat <<EOF

Machine: $(nproc) CPUs ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), Linux $(uname -r); load average before the run: $LOADAVG.
Versions: graylane $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet HEAD -- sidecar control-plane 2>/dev/null || echo ' (with uncommitted changes)')$([[ $BIN == "$ROOT/target/release" ]] || echo " (binaries from $BIN)"), Envoy $("$ENVOY" --version | grep -o 'version: [^ ]*' | cut -d/ -f2), $(openssl version | awk '{ print $1, $2 }'), $(wrk -v 2>&1 | awk 'NR == 1 { print $1, $2 }'), h2load $(h2load --version | awk '{ print $NF }'). Settings: DURATION=$DURATION WARMUP=$WARMUP RATE=$RATE ROUNDS=$ROUNDS HS_CONCURRENCY=$HS_CONCURRENCY PROXY_CPU=$PROXY_CPU LOAD_CPU=$LOAD_CPU.
EOF
}

# Sourced for its functions (debugging one pair); run for the benchmark.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    LOADAVG=$(cut -d' ' -f1-3 /proc/loadavg)
    main
fi
