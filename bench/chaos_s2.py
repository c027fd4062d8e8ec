"""Chaos run S2 (issue 5): the generator hangs. Every question must still be answered (200, extractive,
cited) within the generator's deadline, and ragd's memory must stay flat (±10%) over the run.

The hung generator is a stand-in: an HTTP server that accepts connections and never answers.
Usage: python3 bench/chaos_s2.py [--ragd target/release/ragd] [--minutes 5] [--clients 10]
"""
import argparse, json, os, socket, subprocess, tempfile, threading, time, urllib.request

ap = argparse.ArgumentParser()
ap.add_argument("--ragd", default="target/release/ragd")
ap.add_argument("--models", default=os.path.expanduser("~/.cache/ragd/models"))
ap.add_argument("--minutes", type=float, default=5)
ap.add_argument("--clients", type=int, default=10)
ap.add_argument("--timeout-ms", type=int, default=2000)
args = ap.parse_args()

# The stand-in: accepts, reads, never answers (until the run ends).
hang = socket.socket(); hang.bind(("127.0.0.1", 0)); hang.listen(1024)
held = []
def accept_forever():
    while True:
        try:
            c, _ = hang.accept(); held.append(c)
        except OSError:
            return
threading.Thread(target=accept_forever, daemon=True).start()

port = socket.socket(); port.bind(("127.0.0.1", 0)); PORT = port.getsockname()[1]; port.close()
BASE = f"http://127.0.0.1:{PORT}"
data = tempfile.mkdtemp(prefix="ragd-s2-")
env = dict(os.environ, RAGD_LOG="error", RAGD_ADMIN_LISTEN="", RAGD_GENERATOR__KIND="openai",
           RAGD_GENERATOR__URL=f"http://127.0.0.1:{hang.getsockname()[1]}", RAGD_GENERATOR__MODEL="hung",
           RAGD_GENERATOR__TIMEOUT_MS=str(args.timeout_ms))
server = subprocess.Popen([args.ragd, "serve", "--listen", f"127.0.0.1:{PORT}", "--data", data, "--models", args.models],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)

def call(path, body=None, timeout=30):
    req = urllib.request.Request(BASE + path, data=json.dumps(body).encode() if body is not None else None,
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, json.loads(r.read())

for _ in range(600):
    try:
        urllib.request.urlopen(BASE + "/health/live", timeout=1); break
    except Exception:
        time.sleep(0.05)
call("/api/v1/collections", {"name": "s2"})
call("/api/v1/collections/s2/documents?wait=true", {"documents": [
    {"id": "lighthouse", "text": "The Brisa lighthouse was built in 1874 on the northern cape. Its lamp is visible for 22 nautical miles."},
    {"id": "bakery", "text": "The Corner Bakery opens at 6 am every day except Sunday. It sells rye bread."},
]})

def rss_mb():
    for line in open(f"/proc/{server.pid}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
deadline_s = args.timeout_ms / 1000 + 11  # generator timeout + queue wait (10 s) + 1 s margin, as configured by app.rs
stop = time.time() + args.minutes * 60
results, lock = [], threading.Lock()
def client(c):
    i = 0
    while time.time() < stop:
        t = time.time()
        try:
            s, b = call("/api/v1/collections/s2/query", {"question": f"When was the Brisa lighthouse built? {c}-{i}"}, timeout=60)
            ok = s == 200 and b["degraded"] == ["generator"] and "[" in b["answer"]
        except Exception as e:
            s, ok = str(e), False
        with lock:
            results.append((time.time() - t, s, ok))
        i += 1
threads = [threading.Thread(target=client, args=(c,)) for c in range(args.clients)]
for t in threads: t.start()
samples = []
while time.time() < stop:
    time.sleep(10)
    samples.append(round(rss_mb(), 1))
for t in threads: t.join()
_, status = call("/api/v1/status")
server.terminate(); server.wait(); hang.close()

lat = sorted(r[0] for r in results)
bad = [r for r in results if not r[2]]
warm = samples[2:] or samples  # after the first 20 s
mid = sorted(warm)[len(warm) // 2]
spread = (max(warm) - min(warm)) / mid
print(json.dumps({
    "minutes": args.minutes, "clients": args.clients, "requests": len(results), "not_ok": len(bad), "non_200": sum(1 for r in results if r[1] != 200),
    "latency_s": {"p50": round(lat[len(lat) // 2], 3), "p99": round(lat[int(len(lat) * 0.99)], 3), "max": round(lat[-1], 3)},
    "deadline_s": deadline_s, "over_deadline": sum(1 for x in lat if x > deadline_s),
    "rss_mb_samples": samples, "rss_spread_after_warmup": round(spread, 3),
    "generator_breaker": status["breakers"].get("generator", {}).get("state"),
}, indent=1))
raise SystemExit(1 if bad or any(x > deadline_s for x in lat) or spread > 0.2 else 0)
