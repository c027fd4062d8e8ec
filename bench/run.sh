#!/usr/bin/env bash
# Ingest throughput and search latency of ragd on msmarco-5k, with sentence-transformers' embedding
# throughput on the same passages side by side. Not a test: numbers depend on the machine.
# Usage: bench/run.sh [DATASET_DIR]   (needs: pip install sentence-transformers rank_bm25)
set -euo pipefail
cd "$(dirname "$0")/.."
DATASET="${1:-../shared/datasets/msmarco-5k}"
MODELS="${RAGD_MODELS_DIR:-$HOME/.cache/ragd/models}"
cargo build --release --quiet --bin ragd
echo "== ragd (release, in-process, embedded store): eval + ingest throughput + search latency"
RAGD_LOG=warn target/release/ragd eval --dataset "$DATASET" --json | tee /tmp/ragd-bench-eval.json
echo "== peer: sentence-transformers embedding throughput on the same passages"
python3 bench/st_throughput.py "$DATASET" "$MODELS/all-MiniLM-L6-v2"
echo "== peer: reference retrieval scores (beir_reference.py)"
python3 ../shared/bench/beir_reference.py "$DATASET" "$MODELS/all-MiniLM-L6-v2" || echo "(beir_reference.py not available here)"
