#!/usr/bin/env bash
# The replaced stack's load test, with ragd and its engine (LlamaIndex + FastAPI, the same model and
# corpus) side by side on this machine in one run, driven by the same load tool (`ragd bench`):
#   1. ingest msmarco-5k into ragd (documents/s until every job is done), then into the peer;
#   2. the seed's scenario: 50 virtual users, one search each per 222 ms (~4.5/s), distinct queries
#      from the dataset, latency corrected for coordinated omission; target p95 <= 6.77 ms;
#   3. saturation: 8 users searching back to back (requests/s at full load).
# Prints a table with ratios and leaves every result as JSON in $OUT (default target/bench).
#
# Usage: bench/load.sh [DATASET_DIR]      env: DURATION (60s), MODE (hybrid), RAGD_BIN, OUT
# Needs: a release build (built here if missing; long on 2 cores), the models (`ragd models fetch`),
#        pip install llama-index-core llama-index-embeddings-huggingface fastapi uvicorn
set -euo pipefail
cd "$(dirname "$0")/.."
DATASET="${1:-../shared/datasets/msmarco-5k}"
DURATION="${DURATION:-60s}"
MODE="${MODE:-hybrid}"
MODELS="${RAGD_MODELS_DIR:-$HOME/.cache/ragd/models}"
OUT="${OUT:-target/bench}"
RAGD="${RAGD_BIN:-target/release/ragd}"
RAGD_PORT=18080
PEER_PORT=18090
mkdir -p "$OUT"

python3 -c "import llama_index.core, llama_index.embeddings.huggingface, fastapi, uvicorn" 2>/dev/null || {
  echo "the peer needs: pip install llama-index-core llama-index-embeddings-huggingface fastapi uvicorn" >&2
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

wait_for() { # URL SECONDS
  for _ in $(seq 1 "$2"); do curl -sf "$1" >/dev/null 2>&1 && return 0; sleep 1; done
  echo "$1 did not come up within $2 s" >&2
  exit 1
}

echo "== ragd: serve (search only: no generator), ingest $(wc -l <"$DATASET/corpus.jsonl") documents"
RAGD_LOG=warn RAGD_GENERATOR__KIND=none RAGD_ADMIN_LISTEN="" "$RAGD" serve --data "$data" --listen "127.0.0.1:$RAGD_PORT" >"$OUT/ragd.log" 2>&1 &
pids+=($!)
wait_for "http://127.0.0.1:$RAGD_PORT/health/ready" 120
"$RAGD" bench ingest --server "http://127.0.0.1:$RAGD_PORT" -c msmarco --corpus "$DATASET/corpus.jsonl" \
  --batch 64 --vus 2 --duration 1h --json >"$OUT/ragd-ingest.json"

echo "== peer: LlamaIndex ingest (in memory), then FastAPI"
python3 ../shared/bench/peer_llamaindex.py "$DATASET" "$MODELS/all-MiniLM-L6-v2" --serve "$PEER_PORT" >"$OUT/peer.log" 2>&1 &
pids+=($!)
wait_for "http://127.0.0.1:$PEER_PORT/health/live" 3600
grep -m1 '"peer"' "$OUT/peer.log" >"$OUT/peer-ingest.json"

search() { # NAME TARGET PORT ARGS...
  local name=$1 target=$2 port=$3; shift 3
  echo "== $name: $target"
  "$RAGD" bench search --server "http://127.0.0.1:$port" -c msmarco --queries "$DATASET/queries.jsonl" --mode "$MODE" \
    --json "$@" >"$OUT/$target-$name.json" || true   # a failed threshold still leaves its result
}
for target in ragd peer; do
  port=$RAGD_PORT; [ "$target" = peer ] && port=$PEER_PORT
  search seed "$target" "$port" --vus 50 --pace 222ms --duration "$DURATION" --warmup 5s --threshold 'p95<6.77ms' --threshold 'errors<0.1%'
  search saturation "$target" "$port" --vus 8 --duration 30s --warmup 3s
done

python3 - "$OUT" "$MODE" <<'EOF'
import json, sys
out, mode = sys.argv[1], sys.argv[2]
load = lambda n: json.load(open(f"{out}/{n}.json"))
ri, pi = load("ragd-ingest"), load("peer-ingest")
rows = [("ingest msmarco-5k, documents/s (higher is better)", ri["ingest"]["documents_per_s"], round(pi["docs"] / pi["ingest_seconds"], 1), True)]
for name, label in [("seed", "seed: 50 users x 4.5/s"), ("saturation", "saturation: 8 users back to back")]:
    r, p = load(f"ragd-{name}"), load(f"peer-{name}")
    for m in ["p50", "p95", "p99"]:
        rows.append((f"{label}, {m} ms (lower is better)", r["latency_ms"][m], p["latency_ms"][m], False))
    rows.append((f"{label}, requests/s", r["rps"], p["rps"], True))
    rows.append((f"{label}, errors", r["errors"], p["errors"], False))
print(f"\nragd (search mode {mode}) vs LlamaIndex + FastAPI, same model, corpus, machine and load tool\n")
print(f"{'measure':<58} {'ragd':>10} {'peer':>10} {'ragd better by':>15}")
for label, a, b, higher in rows:
    ratio = (a / b if higher else b / a) if a and b else float("nan")
    print(f"{label:<58} {a:>10} {b:>10} {ratio:>14.2f}x")
seed = load("ragd-seed")
ok = all(t["ok"] for t in seed["thresholds"])
print(f"\nseed target p95 <= 6.77 ms and errors < 0.1%: {'met' if ok else 'NOT met'} (p95 {seed['latency_ms']['p95']} ms)")
EOF
