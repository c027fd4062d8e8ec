#!/usr/bin/env python3
"""Exercises the loopback cluster that deploy/loopback/cluster.sh started (stdlib only).

Phases, each printing what it measured; the exit code is 1 when a check fails:
  A. ingest msmarco-5k through HAProxy while ragd replica 2, then Qdrant node 1, are SIGKILLed and
     restarted; queries run through HAProxy all along. Then every acknowledged document must be
     listed, counted and searchable exactly once on every replica.
  B. rate limits across the 3 replicas: one key, 100 queries/min, 300 asked.
  C. the query cache is shared: a query answered by replica 1 is a cache hit on replica 2; a
     conversation started on replica 1 continues on replica 3.
  D. Redis stopped: queries keep working, readiness says `degraded` with redis down, limits fall back.
  E. an embedded ragd snapshotted while ingesting, restored into a new folder and moved into the
     cluster (`ragd cluster import --verify-queries`) gives the same search results.
  F. Qdrant's full snapshot on every node (`ragd cluster snapshot`).
  G. restore drill: a standalone Qdrant started from node 1's snapshot, a ragd on it, same counts.
"""
import http.client
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid

WORK = os.environ["WORK"]
PIDS = os.environ["PIDS"]
RAGD = os.environ["LOOPBACK_RAGD"]
KEY = os.environ["KEY"]
ROOT = os.environ["ROOT"]
QDRANT_BIN = os.environ["QDRANT_BIN"]
DATASET = os.environ.get("DATASET", os.path.join(ROOT, "..", "shared", "datasets", "msmarco-5k"))
DOCS = int(os.environ.get("DOCS", "5000"))
HA = ("127.0.0.1", 18080)
REPLICA = {i: ("127.0.0.1", 18080 + i) for i in (1, 2, 3)}
ADMIN = {i: ("127.0.0.1", 19080 + i) for i in (1, 2, 3)}
COLLECTION = "msmarco"

results = {}
failures = []


def check(ok, what):
    print(("    ok: " if ok else "    FAILED: ") + what, flush=True)
    if not ok:
        failures.append(what)


def call(addr, method, path, body=None, headers=None, timeout=30, key=KEY):
    """(status, parsed JSON or text); status 0 when the connection failed."""
    h = {"Content-Type": "application/json"}
    if key:
        h["Authorization"] = f"Bearer {key}"
    h.update(headers or {})
    try:
        c = http.client.HTTPConnection(*addr, timeout=timeout)
        c.request(method, path, body=None if body is None else json.dumps(body), headers=h)
        r = c.getresponse()
        data = r.read()
        c.close()
        try:
            return r.status, json.loads(data)
        except ValueError:
            return r.status, data.decode("utf-8", "replace")
    except Exception as e:  # refused, reset, timed out
        return 0, str(e)


# ---- processes -------------------------------------------------------------------------------

def pid_of(name):
    pid = None
    with open(PIDS) as f:
        for line in f:
            n, p = line.split()
            if n == name:
                pid = int(p)
    return pid


def kill(name, sig=signal.SIGKILL):
    pid = pid_of(name)
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
    # Reap it if it is our child; otherwise wait until it is gone (a SIGTERM that has not ended it
    # in 20 s becomes a SIGKILL, so the port is free for the next start).
    for n in range(600):
        if n == 400 and sig != signal.SIGKILL:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                return
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        try:
            if os.waitpid(pid, os.WNOHANG) != (0, 0):
                return
        except ChildProcessError:
            pass
        time.sleep(0.05)


def record(name, proc):
    with open(PIDS, "a") as f:
        f.write(f"{name} {proc.pid}\n")


def start_ragd(i, extra_env=None):
    env = dict(os.environ, RAGD_LISTEN=f"127.0.0.1:{18080 + i}", RAGD_ADMIN_LISTEN=f"127.0.0.1:{19080 + i}",
               RAGD_DATA_DIR=f"{WORK}/ragd{i}")
    env.update(extra_env or {})
    log = open(f"{WORK}/ragd{i}.log", "a")
    p = subprocess.Popen([RAGD, "--config", f"{WORK}/ragd.toml", "serve"], env=env, stdout=log, stderr=log)
    record(f"ragd{i}", p)
    return p


def start_qdrant(i):
    # Loopback only (Qdrant's default is 0.0.0.0; the host also binds the p2p port): cluster.sh checks it.
    env = dict(os.environ, QDRANT__SERVICE__HOST="127.0.0.1", QDRANT__SERVICE__HTTP_PORT=f"163{i}3", QDRANT__SERVICE__GRPC_PORT=f"163{i}4",
               QDRANT__CLUSTER__ENABLED="true", QDRANT__CLUSTER__P2P__PORT=f"163{i}5",
               QDRANT__STORAGE__STORAGE_PATH=f"{WORK}/qdrant{i}/storage",
               QDRANT__STORAGE__SNAPSHOTS_PATH=f"{WORK}/qdrant{i}/snapshots",
               QDRANT__TELEMETRY_DISABLED="true", QDRANT__LOG_LEVEL="WARN")
    log = open(f"{WORK}/qdrant{i}.log", "a")
    # A restarted node rejoins with its stored state; --uri keeps its address.
    args = [QDRANT_BIN, "--uri", f"http://127.0.0.1:163{i}5"]
    p = subprocess.Popen(args, env=env, cwd=f"{WORK}/qdrant{i}", stdout=log, stderr=log)
    record(f"qdrant{i}", p)
    return p


def start_redis():
    log = open(f"{WORK}/redis.log", "a")
    p = subprocess.Popen(["redis-server", "--port", "16379", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                         stdout=log, stderr=log)
    record("redis", p)
    time.sleep(0.5)


def wait_ready(addr, seconds=120):
    end = time.time() + seconds
    while time.time() < end:
        s, _ = call(addr, "GET", "/health/ready", key=None, timeout=3)
        if s == 200:
            return True
        time.sleep(0.5)
    return False


def metric(i, name, labels):
    """The value of one series on replica i's /metrics (0 when absent)."""
    s, text = call(ADMIN[i], "GET", "/metrics", key=None)
    if s != 200:
        return None
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
    return total if want is not None else None


# ---- phase A: ingestion and queries under failures --------------------------------------------

def load_corpus():
    docs = []
    with open(os.path.join(DATASET, "corpus.jsonl")) as f:
        for line in f:
            d = json.loads(line)
            docs.append({"id": d["_id"], "title": d.get("title") or None, "text": d["text"]})
            if len(docs) >= DOCS:
                break
    queries = []
    with open(os.path.join(DATASET, "queries.jsonl")) as f:
        for line in f:
            queries.append(json.loads(line)["text"])
    return docs, queries


class Windows:
    """Counts outcomes of requests by the failure window they started in."""

    def __init__(self):
        self.lock = threading.Lock()
        self.current = "before"
        self.counts = {}

    def set(self, name):
        with self.lock:
            self.current = name

    def add(self, kind, ok):
        with self.lock:
            c = self.counts.setdefault((kind, self.current), [0, 0])
            c[0] += 1
            c[1] += 0 if ok else 1


def phase_a():
    print("==> A. ingest msmarco-5k through HAProxy; SIGKILL ragd2, then qdrant1; queries all along", flush=True)
    docs, queries = load_corpus()
    s, body = call(HA, "POST", "/api/v1/collections", {"name": COLLECTION})
    check(s in (201, 409), f"collection created through HAProxy ({s})")
    batches = [docs[i:i + 50] for i in range(0, len(docs), 50)]
    windows = Windows()
    acked = {}  # batch index -> job id
    jobs_docs = {}
    stop = threading.Event()

    def querier():
        while not stop.is_set():
            q = random.choice(queries)
            s, _ = call(HA, "POST", f"/api/v1/collections/{COLLECTION}/search", {"query": q, "top_k": 5}, timeout=10)
            windows.add("query", s == 200)
            time.sleep(0.05)

    def submit(n):
        s, body = call(HA, "POST", f"/api/v1/collections/{COLLECTION}/documents", {"documents": batches[n]},
                       headers={"Idempotency-Key": f"loopback-{n}"}, timeout=30)
        windows.add("ingest", s == 202)
        if s == 202:
            acked[n] = body["job_id"]
            jobs_docs[body["job_id"]] = [d["id"] for d in batches[n]]
        return s

    q = threading.Thread(target=querier, daemon=True)
    q.start()
    t0 = time.time()
    # Qdrant node 1 is the one every replica talks to first (and bootstrapped the cluster): killing it
    # makes every replica fail over to another node.
    plan = [(10, "kill ragd2", lambda: kill("ragd2")), (25, "restart ragd2", lambda: start_ragd(2)),
            (40, "kill qdrant1", lambda: kill("qdrant1")), (60, "restart qdrant1", lambda: start_qdrant(1))]
    events = []
    pace = max(0.2, 70.0 / max(1, len(batches)))
    n = 0
    while n < len(batches) or plan:
        now = time.time() - t0
        while plan and now >= plan[0][0]:
            at, what, act = plan.pop(0)
            act()
            events.append((round(time.time() - t0, 1), what))
            print(f"    t={time.time() - t0:5.1f}s {what}", flush=True)
            windows.set({"kill ragd2": "ragd2 down", "restart ragd2": "after ragd2", "kill qdrant1": "qdrant1 down",
                         "restart qdrant1": "after qdrant1"}[what])
        if n < len(batches):
            submit(n)
            n += 1
            time.sleep(pace)
        else:
            time.sleep(0.2)
    # Batches refused during a window are sent again (same Idempotency-Key) until acknowledged.
    windows.set("resubmit")
    for attempt in range(30):
        missing = [i for i in range(len(batches)) if i not in acked]
        if not missing:
            break
        for i in missing:
            submit(i)
        time.sleep(1)
    submitted_s = time.time() - t0
    print(f"    every batch acknowledged after {submitted_s:.1f}s; waiting for the jobs", flush=True)
    deadline = time.time() + 1800
    pending = set(acked.values())
    failed_jobs = {}
    while pending and time.time() < deadline:
        for job in list(pending):
            s, body = call(HA, "GET", f"/api/v1/jobs/{job}", timeout=10)
            if s == 200 and body.get("status") in ("done", "failed"):
                pending.discard(job)
                if body["status"] == "failed":
                    failed_jobs[job] = body.get("error")
        if pending:
            time.sleep(2)
    ingest_s = time.time() - t0
    windows.set("after jobs")
    time.sleep(3)
    stop.set()
    q.join()
    check(not pending, f"every job finished ({len(acked)} jobs, {len(pending)} still unfinished after {ingest_s:.0f}s)")
    check(not failed_jobs, f"no job failed ({failed_jobs})")
    print("    error rates by window (requests started in it):")
    table = {}
    for (kind, win), (total, bad) in sorted(windows.counts.items()):
        print(f"      {kind:6} {win:14} {bad:4}/{total:<5} failed = {100.0 * bad / max(1, total):5.1f}%")
        table[f"{kind}:{win}"] = {"requests": total, "failed": bad}
    results["A"] = {"events": events, "windows": table, "documents": len(docs), "acked_batches": len(acked),
                    "seconds_to_ack_all": round(submitted_s, 1), "seconds_to_ingest_all": round(ingest_s, 1)}
    for win in ("ragd2 down", "qdrant1 down"):
        total, bad = windows.counts.get(("query", win), [0, 0])
        check(total > 0 and bad / total < 0.05, f"queries through HAProxy while {win}: {bad}/{total} failed")

    # Every acknowledged document, exactly once, on every replica.
    expected = sorted({d for ids in jobs_docs.values() for d in ids})
    by_id = {d["id"]: d for d in docs}
    for i in (1, 2, 3):
        listed, cursor = [], None
        while True:
            path = f"/api/v1/collections/{COLLECTION}/documents?limit=500" + (f"&cursor={cursor}" if cursor else "")
            s, body = call(REPLICA[i], "GET", path, timeout=60)
            if s != 200:
                break
            listed += [(d["id"], d.get("chunks", 0)) for d in body["documents"]]
            cursor = body.get("next_cursor")
            if not cursor:
                break
        ids = [d for d, _ in listed]
        s, info = call(REPLICA[i], "GET", f"/api/v1/collections/{COLLECTION}")
        chunk_sum = sum(c for _, c in listed)
        check(sorted(ids) == expected and len(ids) == len(set(ids)),
              f"replica {i} lists each of the {len(expected)} acknowledged documents once ({len(ids)} listed, {len(set(ids))} distinct)")
        check(s == 200 and info.get("documents") == len(expected) and info.get("chunks") == chunk_sum,
              f"replica {i} counts {info.get('documents')} documents, {info.get('chunks')} chunks (records say {chunk_sum} chunks)")
        sample = random.Random(i).sample(expected, min(150, len(expected)))
        found, dup = 0, 0
        for d in sample:
            words = " ".join(by_id[d]["text"].split()[:12])
            s, body = call(REPLICA[i], "POST", f"/api/v1/collections/{COLLECTION}/search",
                           {"query": words, "top_k": 10, "mode": "lexical", "filter": {"doc_id": d}})
            hits = body.get("results", []) if s == 200 else []
            found += 1 if hits else 0
            chunks = [h["chunk_id"] for h in hits]
            dup += 1 if len(chunks) != len(set(chunks)) else 0
        check(found == len(sample) and dup == 0, f"replica {i}: {found}/{len(sample)} sampled documents searchable, {dup} with duplicate chunks")
        results["A"][f"replica{i}"] = {"listed": len(ids), "distinct": len(set(ids)), "documents": info.get("documents"),
                                        "chunks": info.get("chunks"), "sample_found": found, "sample_size": len(sample)}


# ---- phase B: one rate limit across the replicas ----------------------------------------------

def phase_b():
    print("==> B. rate limit: 100 queries/min for one key across 3 replicas; 300 asked", flush=True)
    for i in (1, 2, 3):  # rolling restart with the limit (replicas are stateless)
        kill(f"ragd{i}", signal.SIGTERM)
        start_ragd(i, {"RAGD_RATE_LIMIT__QUERY__REQUESTS": "100"})
        check(wait_ready(REPLICA[i]), f"replica {i} back with 100/min")
    time.sleep(2)  # HAProxy sees all three up
    key = subprocess.run([RAGD, "--config", f"{WORK}/ragd.toml", "keys", "--data", f"{WORK}/keys-cli", "create",
                          "--role", "read", "--tenant", "default", "--name", "limit-probe"],
                         capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    counts = {}
    by_replica = {}
    t0 = time.time()
    lock = threading.Lock()

    def one(n):
        s, _ = call(HA, "POST", f"/api/v1/collections/{COLLECTION}/search", {"query": f"limit probe {n % 7}", "top_k": 1},
                    key=key)
        with lock:
            counts[s] = counts.get(s, 0) + 1

    threads = []
    for n in range(300):
        t = threading.Thread(target=one, args=(n,))
        t.start()
        threads.append(t)
        if len(threads) >= 6:
            threads.pop(0).join()
    for t in threads:
        t.join()
    elapsed = time.time() - t0
    refill = int(elapsed / 0.6)
    allowed = counts.get(200, 0)
    print(f"    {counts} in {elapsed:.1f}s (GCRA refills one per 0.6 s: up to {refill} more than 100)")
    check(100 <= allowed <= 100 + refill, f"{allowed} of 300 allowed across 3 replicas (100 + at most {refill} refilled; 300 if per replica)")
    results["B"] = {"statuses": counts, "seconds": round(elapsed, 2), "allowed": allowed, "refill_allowance": refill}
    for i in (1, 2, 3):
        kill(f"ragd{i}", signal.SIGTERM)
        start_ragd(i)
        wait_ready(REPLICA[i])
    time.sleep(2)


# ---- phase C: the cache is shared -----------------------------------------------------------------

def phase_c():
    print("==> C. shared query cache", flush=True)
    q = f"which river flows through the capital {uuid.uuid4().hex[:8]}"
    labels = {"cache": "query_embedding", "result": "hit"}
    before = metric(2, "ragd_cache_requests_total", labels)
    s1, b1 = call(REPLICA[1], "POST", f"/api/v1/collections/{COLLECTION}/search", {"query": q, "top_k": 3})
    s2, b2 = call(REPLICA[2], "POST", f"/api/v1/collections/{COLLECTION}/search", {"query": q, "top_k": 3})
    after = metric(2, "ragd_cache_requests_total", labels)
    check(s1 == 200 and s2 == 200 and before is not None and after == before + 1,
          f"a query first answered by replica 1 is a cache hit on replica 2 (replica 2 hits {before} -> {after})")
    conv = f"loopback-{uuid.uuid4().hex[:8]}"
    s1, a1 = call(REPLICA[1], "POST", f"/api/v1/collections/{COLLECTION}/query",
                  {"question": "what is the fahrenheit scale", "conversation_id": conv})
    s3, a3 = call(REPLICA[3], "POST", f"/api/v1/collections/{COLLECTION}/query",
                  {"question": "who invented it", "conversation_id": conv})
    rq = a3.get("retrieval_query", "") if isinstance(a3, dict) else ""
    check(s1 == 200 and s3 == 200 and "fahrenheit scale" in rq,
          f"a conversation started on replica 1 continues on replica 3 (its follow-up searched as {rq!r})")
    results["C"] = {"hits_before": before, "hits_after": after, "follow_up_retrieval_query": rq}


# ---- phase D: Redis stopped ----------------------------------------------------------------------

def phase_d():
    print("==> D. Redis stopped", flush=True)
    kill("redis")
    time.sleep(1)
    ok, degraded = 0, 0
    for n in range(50):
        s, body = call(HA, "POST", f"/api/v1/collections/{COLLECTION}/search", {"query": f"redis down probe {n}", "top_k": 3})
        ok += s == 200
        degraded += s == 200 and "cache" in body.get("degraded", [])
    check(ok == 50, f"{ok}/50 queries answered with Redis down ({degraded} said degraded: cache)")
    readiness = {}
    for i in (1, 2, 3):
        s, body = call(REPLICA[i], "GET", "/health/ready", key=None)
        redis = body.get("checks", {}).get("redis", {}) if isinstance(body, dict) else {}
        readiness[i] = (s, body.get("status") if isinstance(body, dict) else None, redis.get("status"))
        check(s == 200 and readiness[i][1] == "degraded" and redis.get("status") == "down",
              f"replica {i} stays ready and says so: HTTP {s}, status {readiness[i][1]}, redis {redis.get('status')}")
    fallback = sum(metric(i, "ragd_ratelimit_fallback_decisions_total", {}) or 0 for i in (1, 2, 3))
    check(fallback > 0, f"rate limits fell back to per-replica ({fallback:.0f} decisions counted in ragd_ratelimit_fallback_decisions_total)")
    start_redis()
    back = False
    for _ in range(40):
        if all(call(REPLICA[i], "GET", "/health/ready", key=None)[1].get("status") == "ok" for i in (1, 2, 3)):
            back = True
            break
        time.sleep(0.5)
    check(back, "readiness back to ok on every replica once Redis answers again")
    results["D"] = {"answered": ok, "degraded_cache": degraded, "readiness": readiness, "fallback_decisions": fallback}


# ---- phase E: embedded snapshot -> restore -> cluster import ---------------------------------------

def phase_e():
    print("==> E. embedded ragd: snapshot while ingesting, restore, move into the cluster", flush=True)
    emb = ("127.0.0.1", 18095)
    data = f"{WORK}/embedded"
    env = dict(os.environ, RAGD_LISTEN="127.0.0.1:18095", RAGD_ADMIN_LISTEN="127.0.0.1:19095", RAGD_DATA_DIR=data,
               RAGD_AUTH__ENABLED="false", RAGD_GENERATOR__KIND="none", RAGD_INGEST__BATCH_DOCUMENTS="32")
    log = open(f"{WORK}/embedded.log", "a")
    p = subprocess.Popen([RAGD, "serve"], env=env, stdout=log, stderr=log)
    record("embedded", p)
    check(wait_ready(emb), "embedded ragd up")
    docs, queries = load_corpus()
    call(emb, "POST", "/api/v1/collections", {"name": "moved"}, key=None)
    s, job = call(emb, "POST", "/api/v1/collections/moved/documents", {"documents": docs[:1500]}, key=None, timeout=120)
    check(s == 202, f"1500 documents acknowledged by the embedded ragd ({s})")
    while True:
        s, j = call(emb, "GET", f"/api/v1/jobs/{job['job_id']}", key=None)
        if j.get("progress", {}).get("done", 0) >= 200 or j.get("status") in ("done", "failed"):
            break
        time.sleep(0.3)
    s, snap = call(emb, "POST", "/api/v1/snapshots", {}, key=None)
    check(s == 202, f"snapshot started while the job runs ({s}, job at {j.get('progress')})")
    name = snap.get("name")
    while True:
        s, st = call(emb, "GET", "/api/v1/snapshots", key=None)
        mine = [x for x in st.get("snapshots", []) if x.get("name") == name]
        if mine and mine[0].get("status") in ("ready", "failed"):
            break
        time.sleep(0.3)
    check(mine[0].get("status") == "ready", f"snapshot {name} ready")
    tar = f"{WORK}/{name}.tar"
    c = http.client.HTTPConnection(*emb, timeout=120)
    c.request("GET", f"/api/v1/snapshots/{name}")
    r = c.getresponse()
    with open(tar, "wb") as f:
        f.write(r.read())
    kill("embedded", signal.SIGTERM)
    restored = f"{WORK}/restored"
    r = subprocess.run([RAGD, "snapshot", "restore", tar, "--data", restored], capture_output=True, text=True)
    print("    " + (r.stdout + r.stderr).strip().replace("\n", "\n    "))
    check(r.returncode == 0, "snapshot restored into a new folder")
    qfile = f"{WORK}/queries-moved.txt"
    with open(qfile, "w") as f:
        for qq in random.Random(7).sample(queries, 50):
            f.write(qq + "\n")
    r = subprocess.run([RAGD, "--config", f"{WORK}/ragd.toml", "cluster", "import", "--from", restored,
                        "--collection", "moved", "--verify-queries", qfile], capture_output=True, text=True)
    print("    " + (r.stdout + r.stderr).strip().replace("\n", "\n    "))
    check(r.returncode == 0, "moved into the cluster; counts and search results agree (ragd cluster import --verify-queries)")
    s, info = call(HA, "GET", "/api/v1/collections/moved")
    check(s == 200 and info.get("documents", 0) > 0, f"the moved collection is served through HAProxy ({info.get('documents')} documents, {info.get('chunks')} chunks)")
    results["E"] = {"import_output": r.stdout.strip(), "served": info}


# ---- phase F: Qdrant snapshots of the cluster ----------------------------------------------------

def phase_f():
    print("==> F. Qdrant snapshots of every node (ragd cluster snapshot)", flush=True)
    r = subprocess.run([RAGD, "--config", f"{WORK}/ragd.toml", "cluster", "snapshot"], capture_output=True, text=True)
    print("    " + (r.stdout + r.stderr).strip().replace("\n", "\n    "))
    files = {i: sorted(f for f in os.listdir(f"{WORK}/qdrant{i}/snapshots") if f.endswith(".snapshot"))
             for i in (1, 2, 3) if os.path.isdir(f"{WORK}/qdrant{i}/snapshots")}
    check(r.returncode == 0 and len(files) == 3 and all(files.values()),
          f"a full snapshot on each of the 3 nodes ({ {i: len(v) for i, v in files.items()} } files)")
    results["F"] = {"output": r.stdout.strip(), "files": files}


# ---- phase G: restore drill ---------------------------------------------------------------------

def phase_g():
    print("==> G. restore drill: a standalone Qdrant from node 1's full snapshot, a ragd on it", flush=True)
    snaps = sorted(f for f in os.listdir(f"{WORK}/qdrant1/snapshots") if f.endswith(".snapshot"))
    if not snaps:
        check(False, "no snapshot of node 1 to restore")
        return
    os.makedirs(f"{WORK}/restore-qdrant", exist_ok=True)
    env = dict(os.environ, QDRANT__SERVICE__HOST="127.0.0.1", QDRANT__SERVICE__HTTP_PORT="16343", QDRANT__SERVICE__GRPC_PORT="16344",
               QDRANT__STORAGE__STORAGE_PATH=f"{WORK}/restore-qdrant/storage",
               QDRANT__STORAGE__SNAPSHOTS_PATH=f"{WORK}/restore-qdrant/snapshots", QDRANT__TELEMETRY_DISABLED="true",
               QDRANT__LOG_LEVEL="WARN")
    log = open(f"{WORK}/restore-qdrant.log", "a")
    p = subprocess.Popen([QDRANT_BIN, "--storage-snapshot", f"{WORK}/qdrant1/snapshots/{snaps[-1]}"], env=env,
                         cwd=f"{WORK}/restore-qdrant", stdout=log, stderr=log)
    record("restore-qdrant", p)
    with open(f"{WORK}/restore.toml", "w") as f:
        f.write('[store]\nbackend = "qdrant"\n[store.qdrant]\nurls = ["http://127.0.0.1:16344"]\n'
                'replication_factor = 1\nwrite_consistency_factor = 1\n[generator]\nkind = "none"\n')
    env = dict(os.environ, RAGD_LISTEN="127.0.0.1:18094", RAGD_ADMIN_LISTEN="127.0.0.1:19094",
               RAGD_DATA_DIR=f"{WORK}/restore-ragd", RAGD_AUTH__ENABLED="false",
               RAGD_MODELS_DIR=os.environ.get("RAGD_MODELS_DIR", os.path.expanduser("~/.cache/ragd/models")))
    log = open(f"{WORK}/restore-ragd.log", "a")
    time.sleep(3)
    r = subprocess.Popen([RAGD, "--config", f"{WORK}/restore.toml", "serve"], env=env, stdout=log, stderr=log)
    record("restore-ragd", r)
    ready = wait_ready(("127.0.0.1", 18094), 60)
    s, info = call(("127.0.0.1", 18094), "GET", f"/api/v1/collections/{COLLECTION}", key=None)
    want = results.get("A", {}).get("replica1", {})
    check(ready and s == 200 and info.get("documents") == want.get("documents") and info.get("chunks") == want.get("chunks"),
          f"restored from {snaps[-1]}: {info.get('documents')} documents, {info.get('chunks')} chunks (the cluster had {want.get('documents')}, {want.get('chunks')})")
    s, found = call(("127.0.0.1", 18094), "POST", f"/api/v1/collections/{COLLECTION}/search", {"query": "fahrenheit scale", "top_k": 3}, key=None)
    check(s == 200 and len(found.get("results", [])) == 3, "the restored collection answers searches")
    results["G"] = {"snapshot": snaps[-1], "collection": info}


def main():
    for phase in (phase_a, phase_b, phase_c, phase_d, phase_e, phase_f, phase_g):
        try:
            phase()
        except Exception as e:  # a phase that crashes is a failure, the others still run
            import traceback
            traceback.print_exc()
            check(False, f"{phase.__name__} crashed: {e}")
    with open(f"{WORK}/results.json", "w") as f:
        json.dump(results, f, indent=2, default=str)
    print(f"==> results in {WORK}/results.json")
    if failures:
        print(f"==> {len(failures)} check(s) FAILED:")
        for f_ in failures:
            print("    - " + f_)
        sys.exit(1)
    print("==> every check passed")


if __name__ == "__main__":
    main()
