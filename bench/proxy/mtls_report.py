"""Turns bench/proxy/mtls.sh's results.tsv into the Markdown tables of bench/README.md.

Rows: those of report.py (info, sat, lat; a pair's `sat` CPU is both proxies'), and
  hs  ROUND NAME count=.. errors=.. wall_s=.. per_s=.. first_error=..
      server_cpu_s wall_s load_cpu_busy_pct other_pct
      (new connections, one request each, straight to B; server_cpu_s is B's alone)

Each cell is the median over the rounds, the range over the rounds in brackets. Ratios
(graylane / Envoy, mTLS / plaintext) are taken per round, then their median.
"""

import statistics
import sys
from collections import defaultdict

sys.dont_write_bytecode = True  # no __pycache__ beside report.py in the tree
import report  # noqa: E402  (report.py, beside this file: the tables' helpers)
from report import (  # noqa: E402
    added_rounds, core_rounds, lat_cell, ratio_rounds, sat_cell, spread)

PAIRS = ["gl-mtls", "gl-plain", "envoy-mtls", "envoy-plain"]
report.TITLE.update({"gl-mtls": "graylane mTLS", "gl-plain": "graylane plaintext",
                     "envoy-mtls": "Envoy mTLS", "envoy-plain": "Envoy plaintext"})
PROTOS = [("h1", "HTTP/1.1"), ("h2", "HTTP/2")]


def load_hs(path):
    hs = defaultdict(dict)  # name -> round -> row
    for line in open(path, encoding="utf-8"):
        f = line.rstrip("\n").split("\t")
        if f[0] != "hs":
            continue
        kv = dict(p.split("=", 1) for p in f[3].split())
        cpu, wall, load_busy, other = (float(x) for x in f[4:8])
        hs[f[2]][f[1]] = dict(count=int(kv["count"]), errors=int(kv["errors"]),
                              first_error=kv.get("first_error", "-"), cpu=cpu, wall=wall,
                              load_busy=load_busy, other=other)
    return hs


def hs_rounds(hs, name):
    """Round -> new connections per CPU-second of B."""
    return {k: r["count"] / r["cpu"] for k, r in hs.get(name, {}).items() if r["cpu"] > 0}


def hs_cell(hs, name):
    rounds = hs.get(name)
    if not rounds:
        return "–"
    busy = statistics.median(100 * r["cpu"] / r["wall"] for r in rounds.values())
    rate = statistics.median(r["count"] / r["wall"] for r in rounds.values())
    errors = sum(r["errors"] for r in rounds.values())
    err = f", {errors} errors" if errors else ""
    kilo = lambda v: f"{v / 1e3:.2f}k"  # noqa: E731
    return (f"**{spread(hs_rounds(hs, name), kilo)}** ({rate / 1e3:.2f}k/s, B at "
            f"{busy:.0f}% CPU{err})")


def us_per_req(rounds):
    """Round -> CPU-µs per request of the pair, from requests per CPU-second."""
    return {k: 1e6 / v for k, v in rounds.items() if v > 0}


def main():
    path = sys.argv[1]
    info, sat, lat, _ = report.load(path)
    hs = load_hs(path)
    names = [n for n in PAIRS if any((n, p) in sat for p, _ in PROTOS) or n in hs]
    cols = names + ["direct"]
    rate = info.get("rate", "?")
    out = ["| | " + " | ".join(report.TITLE[n] for n in cols) + " |",
           "|---" * (len(cols) + 1) + "|"]
    for proto, label in PROTOS:
        cells = [sat_cell(sat, n, proto) for n in cols]
        out.append(f"| {label}: req/s per proxy core (both proxies' CPU), saturated | "
                   + " | ".join(cells) + " |")
    for proto, label in PROTOS:
        cells = []
        for n in cols:
            r = us_per_req(core_rounds(sat, n, proto))
            cells.append(spread(r, lambda v: f"{v:.1f}") if r and n != "direct" else "–")
        out.append(f"| {label}: CPU-µs per request, both proxies | " + " | ".join(cells) + " |")
    for proto, label in PROTOS:
        cells = [lat_cell(lat, n, proto) for n in cols]
        out.append(f"| {label} at {rate} req/s: added p50 / p99, µs (measured p50 / p99) | "
                   + " | ".join(cells) + " |")
    cells = [hs_cell(hs, n) for n in names] + ["–"]
    out.append(f"| new connections per second per core of B, one request each "
               f"({info.get('hs_concurrency', '?')} at once; mTLS: full TLS 1.3 handshake "
               "with a client certificate) | " + " | ".join(cells) + " |")

    # Ratios per round.
    times = lambda v: f"{v:.2f}×"  # noqa: E731
    cols_r = [("h1 core", "HTTP/1.1 req/s per core"), ("h2 core", "HTTP/2 req/s per core"),
              ("h1 p99", "HTTP/1.1 added p99"), ("h2 p99", "HTTP/2 added p99"),
              ("hs", "new connections/s per core of B")]

    def metric(name, what):
        if what == "hs":
            return hs_rounds(hs, name)
        proto, kind = what.split()
        if kind == "core":
            return core_rounds(sat, name, proto)
        return added_rounds(lat, name, proto, "p99_us")

    rows = [("graylane / Envoy, mTLS", "gl-mtls", "envoy-mtls"),
            ("graylane / Envoy, plaintext", "gl-plain", "envoy-plain"),
            ("mTLS / plaintext, graylane", "gl-mtls", "gl-plain"),
            ("mTLS / plaintext, Envoy", "envoy-mtls", "envoy-plain")]
    out += ["", "Ratios, per round, median [range over rounds]:", "",
            "| | " + " | ".join(label for _, label in cols_r) + " |",
            "|---" * (len(cols_r) + 1) + "|"]
    for label, a, b in rows:
        if a not in names or b not in names:
            continue
        cells = []
        for what, _ in cols_r:
            r = ratio_rounds(metric(a, what), metric(b, what))
            cells.append(spread(r, times) if r else "–")
        out.append(f"| {label} | " + " | ".join(cells) + " |")

    # TLS's cost per request, in CPU-µs of the pair: mTLS minus plaintext, per round.
    cost = []
    for proto, label in PROTOS:
        for system, a, b in [("graylane", "gl-mtls", "gl-plain"),
                             ("Envoy", "envoy-mtls", "envoy-plain")]:
            ua, ub = us_per_req(core_rounds(sat, a, proto)), us_per_req(core_rounds(sat, b, proto))
            d = {k: ua[k] - ub[k] for k in ua if k in ub}
            if d:
                cost.append(f"{system} {label} {spread(d, lambda v: f'{v:+.1f}')} µs")
    if cost:
        out += ["", "mTLS's CPU cost per request on the pair (mTLS − plaintext, per round): "
                + "; ".join(cost) + "."]
    # And per new connection on B: the handshake (and TLS set-up) beside a plain accept.
    setup = []
    for system, a, b in [("graylane", "gl-mtls", "gl-plain"), ("Envoy", "envoy-mtls", "envoy-plain")]:
        ua, ub = us_per_req(hs_rounds(hs, a)), us_per_req(hs_rounds(hs, b))
        d = {k: ua[k] - ub[k] for k in ua if k in ub}
        if d:
            setup.append(f"{system} {spread(d, lambda v: f'{v:.0f}')} µs "
                         f"({spread(ua, lambda v: f'{v:.0f}')} − {spread(ub, lambda v: f'{v:.0f}')})")
    if setup:
        out += ["B's CPU per new mTLS connection beyond a plaintext one (mTLS − plaintext, "
                "per round): " + "; ".join(setup) + "."]

    checks = [f"{k[:-len('-check')]}: {v}" for k, v in info.items() if k.endswith("-check")]
    stats = [f"{k[:-len('-b-stats')]} B: {v}" for k, v in info.items() if k.endswith("-b-stats")]
    if checks:
        out += ["", "Checks before measuring: " + "; ".join(checks) + "."]
    if stats:
        out += ["After the run: " + "; ".join(stats) + "."]
    errs = [f"{n}: {r['first_error']}" for n, rounds in hs.items() for r in rounds.values()
            if r["errors"]]
    if errs:
        out += ["New-connection errors (first of a run): " + "; ".join(sorted(set(errs))) + "."]
    hs_load = [f"{report.TITLE[n]} {statistics.median(r['load_busy'] for r in rs.values()):.0f}%"
               for n, rs in sorted(hs.items())]
    if hs_load:
        out += [f"Load-generator core busy during the new-connection runs (median): "
                f"{', '.join(hs_load)}."]
    out += report.checks(sat, lat)[1:]
    other = max([r["other"] for rounds in hs.values() for r in rounds.values()], default=0)
    out += [f"Other processes during the new-connection runs: at most {other:.1f}% of a core."]
    print("\n".join(out))


if __name__ == "__main__":
    main()
