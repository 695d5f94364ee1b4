import socket, subprocess, time, os, re, sys, signal
B = "/work/main/target/release"
def rss(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"): return int(line.split()[1])
ALL=[]
def cleanup():
    for p in ALL:
        try: p.kill()
        except Exception: pass
import atexit
atexit.register(cleanup)
def wait_log(path, pat, t=20):
    end=time.time()+t
    while time.time()<end:
        try:
            m=re.search(pat, open(path).read())
            if m: return m
        except FileNotFoundError: pass
        time.sleep(0.05)
    raise SystemExit(f"no {pat} in {path}")
d="/tmp/connmem"; os.makedirs(d, exist_ok=True)
procs=[]
cp=subprocess.Popen([f"{B}/graylane-control","--grpc-addr","127.0.0.1:0","--http-addr","127.0.0.1:0","--store","memory:"],stdout=open(f"{d}/cp.log","w"),stderr=subprocess.STDOUT); ALL.append(cp)
g=wait_log(f"{d}/cp.log", r"grpc_addr=([0-9.:]+)").group(1)
app=subprocess.Popen([f"{B}/graylane-demo-app","--service","orders","--version","v1"],stdout=open(f"{d}/app.log","w"),stderr=subprocess.STDOUT); ALL.append(app)
a=wait_log(f"{d}/app.log", r"addr=([0-9.:]+)").group(1)
sc=subprocess.Popen([f"{B}/graylane-sidecar","--service","orders","--labels","version=v1","--app-addr",a,"--control-plane",f"http://{g}","--concurrency","1","--inbound-addr","127.0.0.1:0","--outbound-addr","127.0.0.1:0","--admin-addr","127.0.0.1:0"],stdout=open(f"{d}/sc.log","w"),stderr=subprocess.STDOUT); ALL.append(sc)
inb=(lambda: [p for p in [0]] and wait_log(f"{d}/sc.log", r"inbound_addr=([0-9.:]+)"))().group(1)
host,port=inb.rsplit(":",1); port=int(port)
time.sleep(2)
# warm up: one request
def req(s):
    s.sendall(b"GET / HTTP/1.1\r\nHost: orders\r\n\r\n")
    data=b""
    while b"\r\n\r\n" not in data: data+=s.recv(4096)
    head,_,body=data.partition(b"\r\n\r\n")
    m=re.search(rb"content-length: (\d+)", head, re.I)
    n=int(m.group(1)) if m else 0
    while len(body)<n: body+=s.recv(4096)
    return head.split(b"\r\n")[0]
s=socket.create_connection((host,port)); print("warm", req(s)); s.close()
time.sleep(1)
idle=rss(sc.pid); print("idle RSS KiB", idle)
conns=[]
for i in range(1000):
    s=socket.create_connection((host,port)); req(s); conns.append(s)
time.sleep(1)
full=rss(sc.pid); print("RSS with 1000 idle keep-alive KiB", full, "per conn KiB", (full-idle)/1000)
for s in conns: s.close()
for p in (sc,app,cp): p.send_signal(signal.SIGTERM)
for p in (sc,app,cp): p.wait()
