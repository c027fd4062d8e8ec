#!/usr/bin/env bash
# The replaced stack's load test, with ragd and its engine (LlamaIndex + FastAPI, the same model and
# corpus) side by side on this machine in one run, driven by the same load tool (`ragd bench`):
#   1. ingest msmarco-5k into ragd (documents/s until every job is done), then into the peer;
#   2. the seed's scenario: 50 virtual users, one search each per 222 ms (~4.5/s), distinct queries
#      from the dataset, latency corrected for coordinated omission; target p95 <= 6.77 ms;
#   3. saturation: 8 users searching back to back (requests/s at full load).
# ragd runs both scenarios twice: as configured by default (query-embedding cache on) and with the
# cache off (every request embeds its query). The dataset's queries repeat during a run (msmarco-5k
# has 50), so the cached figures mostly measure cache hits; the uncached ones are the fair comparison.
# Prints a table with ratios and leaves every result as JSON in $OUT (default target/bench).
#
# Usage: bench/load.sh [DATASET_DIR]      env: DURATION (60s), MODE (hybrid), OUT, PYTHON, BENCH_RAGD (the
#        binary; not RAGD_*: ragd reads every RAGD_* variable as a setting)
# Needs: a release build (built here if missing; long on 2 cores), the models (`ragd models fetch`),
#        the peer's packages in a venv, from bench/requirements.lock (bench/requirements.in says how; PYTHON=that venv's python3)
set -euo pipefail
cd "$(dirname "$0")/.."
DATASET="${1:-../shared/datasets/msmarco-5k}"
DURATION="${DURATION:-60s}"
MODE="${MODE:-hybrid}"
MODELS="${RAGD_MODELS_DIR:-$HOME/.cache/ragd/models}"
OUT="${OUT:-target/bench}"
RAGD="${BENCH_RAGD:-target/release/ragd}"
PY="${PYTHON:-python3}"  # the Python that has the peer's packages (e.g. a venv)
RAGD_PORT=18080
PEER_PORT=18090
mkdir -p "$OUT"

"$PY" -c "import llama_index.core, llama_index.embeddings.huggingface, fastapi, uvicorn" 2>/dev/null || {
  echo "the peer's packages are missing: install bench/requirements.lock into a venv (bench/requirements.in says how) and set PYTHON=<venv>/bin/python3" >&2
  exit 1
}
[ -x "$RAGD" ] || cargo build --release --bin ragd

pids=()
data=$(mktemp -d)
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$data"
}
trap cleanup EXIT

wait_for() { # URL SECONDS PID
  for _ in $(seq 1 "$2"); do
    curl -sf "$1" >/dev/null 2>&1 && return 0
    kill -0 "$3" 2>/dev/null || { echo "the server behind $1 exited; see $OUT" >&2; exit 1; }
    sleep 1
  done
  echo "$1 did not come up within $2 s" >&2
  exit 1
}

start_ragd() { # extra environment, e.g. RAGD_SEARCH__QUERY_CACHE_ENTRIES=0
  env RAGD_LOG=warn RAGD_GENERATOR__KIND=none RAGD_ADMIN_LISTEN="" "$@" "$RAGD" serve --data "$data" --listen "127.0.0.1:$RAGD_PORT" >>"$OUT/ragd.log" 2>&1 &
  pids+=($!)
  wait_for "http://127.0.0.1:$RAGD_PORT/health/ready" 120 "${pids[-1]}"
}
stop_ragd() { kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true; }

search() { # NAME TARGET PORT ARGS...
  local name=$1 target=$2 port=$3; shift 3
  echo "== $name: $target"
  "$RAGD" bench search --server "http://127.0.0.1:$port" -c msmarco --queries "$DATASET/queries.jsonl" --mode "$MODE" \
    --json "$@" >"$OUT/$target-$name.json" || true   # a failed threshold still leaves its result
}
scenarios() { # TARGET PORT
  search seed "$1" "$2" --vus 50 --pace 222ms --duration "$DURATION" --warmup 5s --threshold 'p95<6.77ms' --threshold 'errors<0.1%'
  search saturation "$1" "$2" --vus 8 --duration 30s --warmup 3s
}

echo "== ragd: serve (search only: no generator), ingest $(wc -l <"$DATASET/corpus.jsonl") documents"
: >"$OUT/ragd.log"
start_ragd
"$RAGD" bench ingest --server "http://127.0.0.1:$RAGD_PORT" -c msmarco --corpus "$DATASET/corpus.jsonl" \
  --batch 64 --vus 2 --duration 1h --json >"$OUT/ragd-ingest.json"
scenarios ragd "$RAGD_PORT"
stop_ragd
start_ragd RAGD_SEARCH__QUERY_CACHE_ENTRIES=0
scenarios ragd-nocache "$RAGD_PORT"
stop_ragd

echo "== peer: LlamaIndex ingest (in memory), then FastAPI"
"$PY" ../shared/bench/peer_llamaindex.py "$DATASET" "$MODELS/all-MiniLM-L6-v2" --serve "$PEER_PORT" >"$OUT/peer.log" 2>&1 &
pids+=($!)
wait_for "http://127.0.0.1:$PEER_PORT/health/live" 3600 "${pids[-1]}"
grep -m1 '"peer"' "$OUT/peer.log" >"$OUT/peer-ingest.json"

scenarios peer "$PEER_PORT"

python3 - "$OUT" "$MODE" <<'EOF'
import json, sys
out, mode = sys.argv[1], sys.argv[2]
load = lambda n: json.load(open(f"{out}/{n}.json"))
ri, pi = load("ragd-ingest"), load("peer-ingest")
rows = [("ingest msmarco-5k, documents/s", ri["ingest"]["documents_per_s"], None, round(pi["docs"] / pi["ingest_seconds"], 1), True)]
for name, label in [("seed", "seed (50 users x 4.5/s)"), ("saturation", "saturation (8 users)")]:
    r, n, p = load(f"ragd-{name}"), load(f"ragd-nocache-{name}"), load(f"peer-{name}")
    for m in ["p50", "p95", "p99"]:
        rows.append((f"{label}, {m} ms", r["latency_ms"][m], n["latency_ms"][m], p["latency_ms"][m], False))
    rows.append((f"{label}, requests/s", r["rps"], n["rps"], p["rps"], True))
    rows.append((f"{label}, error fraction", r["errors"], n["errors"], p["errors"], False))
def ratio(a, b, higher):
    if a is None or not a or not b:
        return "-"
    return f"{(a / b if higher else b / a):.2f}x"
show = lambda v: "-" if v is None else v
print(f"\nragd (search mode {mode}) vs LlamaIndex + FastAPI: same model, corpus, machine and load tool")
print("(ratio: how many times better ragd is; 'no cache': ragd with its query-embedding cache off)\n")
print(f"{'measure':<40} {'ragd':>9} {'no cache':>9} {'peer':>10} {'ratio':>9} {'no cache':>9}")
for label, a, n, b, higher in rows:
    print(f"{label:<40} {a:>9} {show(n):>9} {b:>10} {ratio(a, b, higher):>9} {ratio(n, b, higher):>9}")
for target in ["ragd", "ragd-nocache"]:
    seed = load(f"{target}-seed")
    ok = all(t["ok"] for t in seed["thresholds"])
    print(f"{target}: seed target p95 <= 6.77 ms, errors < 0.1%: {'met' if ok else 'NOT met'} (p95 {seed['latency_ms']['p95']} ms)")
EOF
