"""Turns bench/proxy/run.sh's results.tsv into the Markdown tables of bench/README.md.

Rows of results.tsv (tab-separated; ROUND counts from 1):
  info  KEY VALUE
  sat   ROUND NAME PROTO requests errors proxy_cpu_s wall_s load_cpu_busy_pct other_pct
        [proxy_kernel_cpu_s]
  lat   ROUND NAME PROTO count=.. errors=.. p50_us=.. p90_us=.. p99_us=.. max_us=..
        lag_p99_us=.. other_pct=..
  rss   NAME idle_rss_kib idle_pss_kib peak_rss_kib

A number is the median over the rounds of that round's value. "Added" latency is
proxied minus direct (no proxy) in the same round. A graylane / peer ratio is taken per
round (the two ran a minute apart, so slow drifts of the host cancel), then the median;
the range over the rounds follows in brackets.
"""

import statistics
import sys
from collections import defaultdict

PEERS = ["nginx", "haproxy", "envoy"]
NAMES = ["graylane"] + PEERS
TITLE = {"graylane": "graylane", "nginx": "nginx", "haproxy": "HAProxy",
         "envoy": "Envoy", "direct": "no proxy"}
PROTOS = [("h1", "HTTP/1.1"), ("h2", "HTTP/2"), ("grpc", "gRPC")]
RSS_TARGET_KIB = 8 * 1024  # 8 MiB (issue 15)


def load(path):
    info, rss = {}, {}
    sat, lat = defaultdict(dict), defaultdict(dict)  # (name, proto) -> round -> row
    for line in open(path, encoding="utf-8"):
        f = line.rstrip("\n").split("\t")
        if f[0] == "info":
            info[f[1]] = f[2]
        elif f[0] == "sat":
            reqs, errors, cpu, wall, load_busy, other = f[4:10]
            sat[f[2], f[3]][f[1]] = dict(
                reqs=int(reqs), errors=int(errors), cpu=float(cpu), wall=float(wall),
                load_busy=float(load_busy), other=float(other),
                kernel=float(f[10]) if len(f) > 10 else None)
        elif f[0] == "lat":
            kv = dict(p.split("=") for p in f[4].split())
            lat[f[2], f[3]][f[1]] = {k: float(v) for k, v in kv.items()}
        elif f[0] == "rss":
            rss[f[1]] = dict(idle=int(f[2]), pss=int(f[3]), peak=int(f[4]))
    return info, sat, lat, rss


def core_rounds(sat, name, proto):
    """Round -> requests per proxy CPU-second."""
    return {k: r["reqs"] / r["cpu"] for k, r in sat.get((name, proto), {}).items()
            if r["cpu"] > 0}


def added_rounds(lat, name, proto, key):
    """Round -> proxied minus direct latency (µs)."""
    mine, direct = lat.get((name, proto), {}), lat.get(("direct", proto), {})
    return {k: mine[k][key] - direct[k][key] for k in mine if k in direct}


def med(rounds):
    return statistics.median(rounds.values()) if rounds else None


def ratio_rounds(a, b):
    """Per-round a / b; a denominator under 1 (µs of added latency: noise) counts as 1."""
    return {k: a[k] / max(b[k], 1) for k in a if k in b}


def spread(rounds, fmt):
    lo, hi = min(rounds.values()), max(rounds.values())
    return f"{fmt(med(rounds))} [{fmt(lo)}–{fmt(hi)}]"


def verdict(rounds, ok):
    hits = sum(ok(v) for v in rounds.values())
    word = "**met**" if ok(med(rounds)) else "**missed**"
    return word if hits in (0, len(rounds)) else f"{word} ({hits} of {len(rounds)} rounds)"


def mib(kib):
    return f"{kib / 1024:.1f}"


def sat_cell(sat, name, proto):
    rounds = sat.get((name, proto))
    if not rounds:
        return "–"
    errors = sum(r["errors"] for r in rounds.values())
    err = f", {errors} errors" if errors else ""
    if name == "direct":
        rate = statistics.median(r["reqs"] / r["wall"] for r in rounds.values())
        return f"({rate / 1e3:.1f}k req/s{err})"
    busy = statistics.median(100 * r["cpu"] / r["wall"] for r in rounds.values())
    return (f"**{spread(core_rounds(sat, name, proto), lambda v: f'{v / 1e3:.1f}k')}** "
            f"at {busy:.0f}% CPU{err}")


def split_cell(sat, name, proto):
    """µs of the proxy's CPU per request: user + kernel (median over rounds)."""
    rounds = [r for r in sat.get((name, proto), {}).values()
              if r["kernel"] is not None and r["reqs"] > 0]
    if not rounds:
        return "–"
    user, kernel = (statistics.median(1e6 * v(r) / r["reqs"] for r in rounds)
                    for v in (lambda r: r["cpu"] - r["kernel"], lambda r: r["kernel"]))
    return f"{user:.1f} + {kernel:.1f}"


def lat_cell(lat, name, proto):
    rounds = lat.get((name, proto))
    if not rounds:
        return "–"
    p50, p99 = (statistics.median(r[k] for r in rounds.values()) for k in ("p50_us", "p99_us"))
    errors = sum(r["errors"] for r in rounds.values())
    err = f", {errors:.0f} errors" if errors else ""
    if name == "direct":
        return f"({p50:.0f} / {p99:.0f}{err})"
    a50, a99 = (med(added_rounds(lat, name, proto, k)) for k in ("p50_us", "p99_us"))
    return f"**{a50:+.0f} / {a99:+.0f}** ({p50:.0f} / {p99:.0f}{err})"


def tables(info, sat, lat, rss):
    cols = NAMES + ["direct"]
    out = ["| | " + " | ".join(TITLE[n] for n in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for proto, label in PROTOS:
        cells = [sat_cell(sat, n, proto) for n in cols]
        out.append(f"| {label}: req/s per proxy core, saturated | " + " | ".join(cells) + " |")
    for proto, label in PROTOS:
        cells = [split_cell(sat, n, proto) for n in NAMES] + [""]
        out.append(f"| {label}: µs of proxy CPU per request, user + kernel | "
                   + " | ".join(cells) + " |")
    for proto, label in PROTOS:
        cells = [lat_cell(lat, n, proto) for n in cols]
        out.append(f"| {label} at {info.get('rate', '?')} req/s: added p50 / p99, µs "
                   "(measured p50 / p99) | " + " | ".join(cells) + " |")
    for key, label in [("idle", "idle RSS, MiB"), ("pss", "idle PSS, MiB"),
                       ("peak", "peak RSS (VmHWM) over the run, MiB")]:
        cells = [mib(rss[n][key]) if n in rss else "–" for n in cols]
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    return out


def targets(info, sat, lat, rss):
    rate = info.get("rate", "?")
    times = lambda v: f"{v:.2f}×"  # noqa: E731
    core = {(n, p): core_rounds(sat, n, p) for n in NAMES for p, _ in PROTOS}
    ratio = {(n, p): ratio_rounds(core["graylane", p], core[n, p])
             for n in PEERS for p, _ in PROTOS}
    out = ["| target (issue 15) | graylane, median [range over rounds] | result |",
           "|---|---|---|"]
    for p, label in PROTOS:
        best = max(PEERS, key=lambda n: med(core[n, p]))
        r = ratio[best, p]
        out.append(f"| {label} req/s per core ≥ 1.2× best peer's ({TITLE[best]}) | "
                   f"{spread(r, times)} | {verdict(r, lambda v: v >= 1.2)} |")
    for p, label in PROTOS:
        r = ratio["envoy", p]
        out.append(f"| {label} req/s per core ≥ 2× Envoy's | {spread(r, times)} Envoy's | "
                   f"{verdict(r, lambda v: v >= 2)} |")
    for key, bar, word in [("p50_us", 0.8, "0.8× "), ("p99_us", 1.0, "")]:
        for p, label in PROTOS:
            mine = added_rounds(lat, "graylane", p, key)
            peers = {n: added_rounds(lat, n, p, key) for n in PEERS}
            best = min(peers, key=lambda n: med(peers[n]))
            r = ratio_rounds(mine, peers[best])
            out.append(f"| {label} added {key[:3]} at {rate} req/s ≤ {word}best peer's "
                       f"({TITLE[best]}: {med(peers[best]):+.0f} µs) | {med(mine):+.0f} µs; "
                       f"{spread(r, times)} | {verdict(r, lambda v, b=bar: v <= b)} |")
    idle = rss["graylane"]["idle"]
    out.append(f"| idle RSS ≤ {RSS_TARGET_KIB / 1024:.0f} MiB | {mib(idle)} MiB | "
               f"{'**met**' if idle <= RSS_TARGET_KIB else '**missed**'} |")
    out += floor(sat, core)
    out += ["", "Graylane / peer, per round, median [range]:", "",
            "| | " + " | ".join(TITLE[n] for n in PEERS) + " |", "|---" * 4 + "|"]
    for p, label in PROTOS:
        cells = [spread(ratio[n, p], times) for n in PEERS]
        out.append(f"| {label} req/s per core | " + " | ".join(cells) + " |")
    for p, label in PROTOS:
        mine = added_rounds(lat, "graylane", p, "p99_us")
        cells = [spread(ratio_rounds(mine, added_rounds(lat, n, p, "p99_us")), times)
                 for n in PEERS]
        out.append(f"| {label} added p99 | " + " | ".join(cells) + " |")
    return out


def floor(sat, core):
    """What 1.2× the best peer's rate leaves per request, beside that peer's own kernel
    time per request: a proxy makes the same system calls per request (a read and a
    write each way), so where the budget is under the peer's kernel time alone, no
    user-space work can reach it."""
    out = ["", "CPU budget per request at 1.2× the best peer's rate, against that peer's "
           "kernel time alone (µs, medians):", "",
           "| | best peer | its µs per request, user + kernel | 1.2× its rate leaves | "
           "graylane's, user + kernel |", "|---|---|---|---|---|"]
    for p, label in PROTOS:
        best = max(PEERS, key=lambda n: med(core[n, p]))
        if not core[best, p]:
            continue
        budget = 1e6 / (1.2 * med(core[best, p]))
        out.append(f"| {label} | {TITLE[best]} | {split_cell(sat, best, p)} | "
                   f"{budget:.1f} | {split_cell(sat, 'graylane', p)} |")
    return out


def checks(sat, lat):
    """How clean the runs were: the load generator's core, its pacing, other CPU use."""
    load = [f"{TITLE[n]} {p} {statistics.median(r['load_busy'] for r in rs.values()):.0f}%"
            for (n, p), rs in sorted(sat.items())]
    lag = max(r["lag_p99_us"] for rounds in lat.values() for r in rounds.values())
    other = max([r["other"] for rounds in sat.values() for r in rounds.values()] +
                [r["other_pct"] for rounds in lat.values() for r in rounds.values()])
    return ["", f"Load-generator core busy during the saturated runs (median): "
            f"{', '.join(load)}.",
            f"Fixed-rate pacing: worst lag p99 (scheduled → sent) {lag:.0f} µs. "
            f"CPU used by anything else during any measured run: at most {other:.1f}% of a "
            "core."]


def main():
    info, sat, lat, rss = load(sys.argv[1])
    lines = tables(info, sat, lat, rss) + [""] + targets(info, sat, lat, rss)
    print("\n".join(lines + checks(sat, lat)))


if __name__ == "__main__":
    main()
