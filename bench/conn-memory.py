"""Sidecar memory: idle, and per idle keep-alive connection (issue 15).

Run after `cargo build --release --workspace --bins`:

    python3 bench/conn-memory.py [CONNECTIONS]    # default 1000

Starts graylane-control (`memory:`), a demo app and a release sidecar
(`--concurrency 1`) on loopback, sends one request, reads the sidecar's memory, then
opens CONNECTIONS connections to its inbound listener, each sending one request and
staying open (keep-alive, idle), and reads it again ("first burst"). It then closes
them, opens as many again and reads a third time ("second burst"): the first burst
includes what the allocator keeps of the burst's own peak (glibc does not return
freed memory from the middle of its heap), the second what holding a connection costs
once that peak has been reached.

Each reading gives VmRSS and its anonymous part (`/proc/PID/smaps_rollup`): the rest
of the RSS is the binary's own pages (text, read-only data), shared and clean.
"""
import atexit
import os
import re
import signal
import socket
import subprocess
import sys
import time

B = "/work/main/target/release"
N = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
D = "/tmp/connmem"
ALL = []


def memory(pid):
    """(RSS, anonymous) in KiB."""
    fields = {}
    for line in open(f"/proc/{pid}/smaps_rollup"):
        parts = line.split()
        if len(parts) >= 2 and parts[0].endswith(":"):
            fields[parts[0][:-1]] = parts[1]
    return int(fields["Rss"]), int(fields["Anonymous"])


def cleanup():
    for p in ALL:
        try:
            p.kill()
        except Exception:
            pass


atexit.register(cleanup)


def wait_log(path, pat, t=20):
    end = time.time() + t
    while time.time() < end:
        try:
            m = re.search(pat, open(path).read())
            if m:
                return m
        except FileNotFoundError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"no {pat} in {path}")


def start(name, argv, pat):
    p = subprocess.Popen(argv, stdout=open(f"{D}/{name}.log", "w"), stderr=subprocess.STDOUT)
    ALL.append(p)
    return p, wait_log(f"{D}/{name}.log", pat).group(1)


def req(s):
    s.sendall(b"GET / HTTP/1.1\r\nHost: orders\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(4096)
    head, _, body = data.partition(b"\r\n\r\n")
    m = re.search(rb"content-length: (\d+)", head, re.I)
    n = int(m.group(1)) if m else 0
    while len(body) < n:
        body += s.recv(4096)
    return head.split(b"\r\n")[0]


def burst(addr):
    conns = []
    for _ in range(N):
        s = socket.create_connection(addr)
        req(s)
        conns.append(s)
    return conns


os.makedirs(D, exist_ok=True)
cp, grpc = start("cp", [f"{B}/graylane-control", "--grpc-addr", "127.0.0.1:0",
                        "--http-addr", "127.0.0.1:0", "--store", "memory:"], r"grpc_addr=([0-9.:]+)")
app, app_addr = start("app", [f"{B}/graylane-demo-app", "--service", "orders", "--version", "v1"],
                      r"addr=([0-9.:]+)")
sc, inbound = start("sc", [f"{B}/graylane-sidecar", "--service", "orders", "--labels", "version=v1",
                           "--app-addr", app_addr, "--control-plane", f"http://{grpc}",
                           "--concurrency", "1", "--inbound-addr", "127.0.0.1:0",
                           "--outbound-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"],
                    r"inbound_addr=([0-9.:]+)")
host, port = inbound.rsplit(":", 1)
addr = (host, int(port))
time.sleep(2)
s = socket.create_connection(addr)
print("warm-up:", req(s).decode())
s.close()
time.sleep(1)
idle, idle_anon = memory(sc.pid)
print(f"idle: RSS {idle / 1024:.1f} MiB ({idle_anon / 1024:.1f} MiB anonymous, "
      f"{(idle - idle_anon) / 1024:.1f} MiB the binary's and libraries' pages)")
for label in ("first burst", "second burst"):
    conns = burst(addr)
    time.sleep(1)
    rss, anon = memory(sc.pid)
    print(f"{label}: {N} idle keep-alive connections: RSS {rss / 1024:.1f} MiB, "
          f"per connection {(rss - idle) / N:.1f} KiB RSS, {(anon - idle_anon) / N:.1f} KiB anonymous")
    for c in conns:
        c.close()
    time.sleep(1)
for p in (sc, app, cp):
    p.send_signal(signal.SIGTERM)
for p in (sc, app, cp):
    p.wait()
