#!/usr/bin/env bash
# Every side-by-side measurement in one run on this machine, each printing its table with ratios:
#   1. bench/load.sh   ingest msmarco-5k, the seed's scenario (50 users x 4.5 searches/s) and saturation,
#                      ragd (query cache on and off) vs LlamaIndex + FastAPI with the same model;
#   2. bench/embed.sh  embedding throughput vs sentence-transformers, short sentences and 200-word chunks;
#   3. ragd bench store  search latency as the store grows (synthetic chunks: random unit vectors and
#                      Zipf-like words; no peer), with the store's optimizers run at each size as the
#                      server does;
#   4. retrieval quality: ragd eval vs ../shared/bench/beir_reference.py (same model).
# Not a test: the numbers depend on the machine. Results stay as JSON in $OUT (target/bench).
#
# Usage: bench/run.sh [DATASET_DIR]
#   env: PYTHON (a Python with the peers' packages: sentence-transformers llama-index-core
#        llama-index-embeddings-huggingface fastapi uvicorn rank_bm25), BENCH_RAGD (default
#        target/release/ragd, built if missing), STORE_SIZES (10000,100000,1000000),
#        SKIP (any of: load embed store eval)
set -euo pipefail
cd "$(dirname "$0")/.."
DATASET="${1:-../shared/datasets/msmarco-5k}"
MODELS="${RAGD_MODELS_DIR:-$HOME/.cache/ragd/models}"
OUT="${OUT:-target/bench}"
export BENCH_RAGD="${BENCH_RAGD:-target/release/ragd}"
PY="${PYTHON:-python3}"
STORE_SIZES="${STORE_SIZES:-10000,100000,1000000}"
SKIP="${SKIP:-}"
mkdir -p "$OUT"
[ -x "$BENCH_RAGD" ] || cargo build --release --bin ragd
skip() { [[ " $SKIP " == *" $1 "* ]]; }

skip load || { echo "==== 1. load: ragd vs LlamaIndex + FastAPI"; bench/load.sh "$DATASET"; }
skip embed || { echo "==== 2. embedding: ragd vs sentence-transformers"; bench/embed.sh "$DATASET"; }
if ! skip store; then
  echo "==== 3. search latency as the store grows ($STORE_SIZES chunks, synthetic)"
  RAGD_LOG=warn "$BENCH_RAGD" bench store --sizes "$STORE_SIZES" --optimize
fi
if ! skip eval; then
  echo "==== 4. retrieval quality on $(basename "$DATASET"): ragd eval, then the reference scores"
  RAGD_LOG=warn "$BENCH_RAGD" eval --dataset "$DATASET" --json | tee "$OUT/eval.json"
  "$PY" ../shared/bench/beir_reference.py "$DATASET" "$MODELS/all-MiniLM-L6-v2" || echo "(beir_reference.py not available here)"
fi
