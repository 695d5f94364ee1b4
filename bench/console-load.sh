#!/usr/bin/env bash
# The web console's first load on loopback, in Debian's headless chromium over WebDriver:
# bytes transferred, requests, and time to first render (first-contentful-paint) and to
# the first view drawn with data (the Lanes <h1> and its table), median over N cold loads
# (a new browser profile each time, so nothing is cached).
#
# Usage, after `cargo build --release --workspace --bins`:  bash bench/console-load.sh
# Env: N=5. Needs chromium and chromium-driver (scripts/deps.sh test installs them).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${BENCH_BIN:-$ROOT/target/release}
N=${N:-5}
TMP=$(mktemp -d /tmp/graylane-console-bench.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT

# wait_log FILE KEY: the first KEY=VALUE (or "port N" for chromedriver) in FILE, ≤ 20 s.
wait_field() {
    local file=$1 pattern=$2 i value
    for ((i = 0; i < 200; i++)); do
        value=$(grep -o -m1 -E "$pattern" "$file" | head -n1 | grep -o -E '[0-9.:]+$') || true
        [[ -n $value ]] && { echo "$value"; return; }
        sleep 0.1
    done
    cat "$file" >&2
    echo "no match for $pattern in $file" >&2
    exit 1
}

"$BIN/graylane-control" --store memory: --grpc-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 \
    >"$TMP/control.log" 2>&1 &
PIDS+=($!)
HTTP=$(wait_field "$TMP/control.log" 'http_addr=[0-9.:]+')
chromedriver --port=0 >"$TMP/driver.log" 2>&1 &
PIDS+=($!)
DRIVER=http://127.0.0.1:$(wait_field "$TMP/driver.log" 'started successfully on port [0-9]+')

wd() { curl -sf -X "$1" -H 'Content-Type: application/json' ${3:+-d "$3"} "$DRIVER$2"; }

RESULTS=$TMP/results.tsv
for ((i = 1; i <= N; i++)); do
    profile=$TMP/profile-$i
    session=$(wd POST /session "{\"capabilities\":{\"alwaysMatch\":{\"goog:chromeOptions\":{\"args\":[\"--headless=new\",\"--no-sandbox\",\"--disable-gpu\",\"--user-data-dir=$profile\",\"--window-size=1440,900\"]}}}}" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["value"]["sessionId"])')
    wd POST "/session/$session/url" "{\"url\":\"http://$HTTP/#/lanes\"}" >/dev/null
    # Bounded wait for the first view with data: the empty-mesh text of the Lanes view.
    script='const main = document.querySelector("main");
      const done = main && main.querySelector("h1") && main.querySelector("p, table")
        && !main.textContent.includes("Loading");
      if (!done) return null;
      const nav = performance.getEntriesByType("navigation")[0];
      const res = performance.getEntriesByType("resource");
      const fcp = performance.getEntriesByName("first-contentful-paint")[0];
      return [res.length + 1, nav.transferSize + res.reduce((s, r) => s + r.transferSize, 0),
              nav.encodedBodySize + res.reduce((s, r) => s + r.encodedBodySize, 0),
              fcp ? fcp.startTime : -1, performance.now()];'
    row=null
    for ((t = 0; t < 100; t++)); do
        [[ $row == null ]] || break
        row=$(wd POST "/session/$session/execute/sync" "$(python3 -c 'import json,sys; print(json.dumps({"script": sys.argv[1], "args": []}))' "$script")" |
            python3 -c 'import json,sys; v=json.load(sys.stdin)["value"]; print("null" if v is None else "\t".join(str(x) for x in v))')
        [[ $row == null ]] && sleep 0.05
        true
    done
    [[ $row != null ]] || { echo "the Lanes view never drew" >&2; exit 1; }
    echo "$row" >>"$RESULTS"
    wd DELETE "/session/$session" >/dev/null
done

python3 - "$RESULTS" "$N" <<'PY'
import statistics, sys
rows = [list(map(float, l.split("\t"))) for l in open(sys.argv[1])]
med = lambda i: statistics.median(r[i] for r in rows)
print(f"| console first load, {sys.argv[2]} cold loads (median) | |")
print("|---|---|")
print(f"| requests (page, styles, scripts, icon, API calls) | {med(0):.0f} |")
print(f"| bytes on the wire (headers included) | {med(1)/1024:.1f} KiB |")
print(f"| bytes of bodies | {med(2)/1024:.1f} KiB |")
print(f"| first contentful paint | {med(3):.0f} ms |")
print(f"| the Lanes view drawn with data (measured when seen) | ≤ {med(4):.0f} ms |")
PY
