"""Chaos run S4 (issue 5): ragd is SIGKILLed N times at random moments while msmarco-5k is ingested.

Uploads go in batches with an Idempotency-Key; a batch that got no answer (the server died) is sent
again with the same key once the server is back, so every batch is acknowledged exactly once. After the
last kill, every job must end `done` (or `failed` with a reason), and every acknowledged document must
be stored with exactly its chunks (`indexed_chunks == chunks`) and be found by a search filtered to it.

Usage: python3 bench/chaos_s4.py [--ragd target/release/ragd] [--dataset ../shared/datasets/msmarco-5k] [--kills 20]
"""
import argparse, json, os, random, signal, socket, subprocess, sys, tempfile, threading, time, urllib.error, urllib.request

ap = argparse.ArgumentParser()
ap.add_argument("--ragd", default="target/release/ragd")
ap.add_argument("--dataset", default="../shared/datasets/msmarco-5k")
ap.add_argument("--models", default=os.path.expanduser("~/.cache/ragd/models"))
ap.add_argument("--kills", type=int, default=20)
ap.add_argument("--batch", type=int, default=100)
ap.add_argument("--min-gap", type=float, default=1.0)
ap.add_argument("--max-gap", type=float, default=6.0)
ap.add_argument("--seed", type=int, default=7)
args = ap.parse_args()
random.seed(args.seed)

docs = [json.loads(l) for l in open(os.path.join(args.dataset, "corpus.jsonl"))]
docs = [{"id": d["_id"], "title": d.get("title") or None, "text": d["text"]} for d in docs]
batches = [docs[i:i + args.batch] for i in range(0, len(docs), args.batch)]
data = tempfile.mkdtemp(prefix="ragd-chaos-")
port = socket.socket(); port.bind(("127.0.0.1", 0)); PORT = port.getsockname()[1]; port.close()
BASE = f"http://127.0.0.1:{PORT}"
log = open(os.path.join(data, "server.log"), "ab")
server = None
lock = threading.Lock()

def start():
    global server
    env = dict(os.environ, RAGD_LOG="warn", RAGD_ADMIN_LISTEN="", RAGD_GENERATOR__KIND="none")
    server = subprocess.Popen([args.ragd, "serve", "--listen", f"127.0.0.1:{PORT}", "--data", data, "--models", args.models],
                              stdout=subprocess.DEVNULL, stderr=log, env=env)
    for _ in range(600):
        try:
            urllib.request.urlopen(BASE + "/health/ready", timeout=1); return
        except Exception:
            time.sleep(0.05)
    raise SystemExit("ragd did not come up")

def call(method, path, body=None, headers=None, timeout=60):
    req = urllib.request.Request(BASE + path, method=method, data=json.dumps(body).encode() if body is not None else None,
                                 headers={"content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")

start()
call("POST", "/api/v1/collections", {"name": "chaos"})
acked = {}          # job id -> batch index
kills = 0
stop = threading.Event()

def killer():
    global kills
    while kills < args.kills and not stop.is_set():
        time.sleep(random.uniform(args.min_gap, args.max_gap))
        with lock:
            server.send_signal(signal.SIGKILL); server.wait()
            kills += 1
            print(f"kill {kills}/{args.kills} (acknowledged batches so far: {len(acked)})", flush=True)
            start()

t0 = time.time()
k = threading.Thread(target=killer); k.start()
i = 0
while i < len(batches):
    try:
        s, b = call("POST", "/api/v1/collections/chaos/documents", {"documents": batches[i]}, {"Idempotency-Key": f"chaos-batch-{i}"})
        if s == 202:
            acked[b["job_id"]] = i; i += 1
        else:
            raise SystemExit(f"batch {i}: HTTP {s} {b}")
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        time.sleep(0.2)  # the server is down: send the same batch, same key, once it is back
# Keep killing during processing until all kills are done.
while kills < args.kills:
    time.sleep(0.2)
stop.set(); k.join()
print(f"all {len(batches)} batches acknowledged; {kills} kills in {time.time() - t0:.0f} s; waiting for the jobs", flush=True)

states = {}
for job_id in acked:
    for _ in range(3000):
        s, job = call("GET", f"/api/v1/jobs/{job_id}")
        if job["status"] in ("done", "failed"):
            break
        time.sleep(0.2)
    states[job_id] = job
done = sum(1 for j in states.values() if j["status"] == "done")
failed = [j for j in states.values() if j["status"] == "failed"]
unfinished = [j for j in states.values() if j["status"] not in ("done", "failed")]
problems = []
for j in failed:
    if not (j.get("error") or {}).get("code"):
        problems.append(f"job {j['id']} failed without a reason")
for j in unfinished:
    problems.append(f"job {j['id']} still {j['status']}")

checked = 0
for j in states.values():
    if j["status"] != "done":
        continue
    for d in j["documents"]:
        s, doc = call("GET", "/api/v1/collections/chaos/documents/" + urllib.request.quote(d["id"], safe=""))
        if s != 200:
            problems.append(f"acknowledged document {d['id']} missing ({s})"); continue
        if doc["indexed_chunks"] != doc["chunks"]:
            problems.append(f"document {d['id']}: {doc['indexed_chunks']} stored chunks, expected {doc['chunks']}")
        checked += 1
sample = random.sample([d["id"] for d in docs], 200)
found = 0
for did in sample:
    s, r = call("POST", "/api/v1/collections/chaos/search", {"query": "the", "mode": "dense", "top_k": 3, "filter": {"doc_id": [did]}})
    found += 1 if s == 200 and r["results"] and all(h["doc_id"] == did for h in r["results"]) else 0
s, info = call("GET", "/api/v1/collections/chaos")
server.send_signal(signal.SIGTERM); server.wait()
print(json.dumps({"kills": kills, "batches": len(batches), "jobs_done": done, "jobs_failed": len(failed), "jobs_unfinished": len(unfinished),
                  "documents_checked_exactly_once": checked, "documents_in_collection": info.get("documents"),
                  "chunks_in_collection": info.get("chunks"), "sampled_searchable": f"{found}/{len(sample)}",
                  "seconds": round(time.time() - t0), "problems": problems[:20]}, indent=1))
sys.exit(1 if problems or found != len(sample) else 0)
