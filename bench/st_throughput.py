#!/usr/bin/env python3
"""Peer side of the ingest benchmark: sentence-transformers' embedding throughput (passages/s) for
all-MiniLM-L6-v2 on the same passages ragd ingests (title + " " + text, as beir_reference.py embeds them).

Usage: st_throughput.py DATASET_DIR MODEL_DIR [BATCH]
"""
import json
import sys
import time

import torch
from sentence_transformers import SentenceTransformer


def main():
    dataset, model_dir = sys.argv[1], sys.argv[2]
    batch = int(sys.argv[3]) if len(sys.argv) > 3 else 32
    corpus = [json.loads(l) for l in open(f"{dataset}/corpus.jsonl")]
    texts = [((d.get("title") or "") + " " + d["text"]).strip() for d in corpus]
    model = SentenceTransformer(model_dir, device="cpu")
    model.encode(texts[:64], batch_size=batch)  # warm-up
    t = time.perf_counter()
    model.encode(texts, batch_size=batch, normalize_embeddings=True)
    elapsed = time.perf_counter() - t
    print(json.dumps({
        "peer": "sentence-transformers",
        "passages": len(texts),
        "seconds": round(elapsed, 2),
        "passages_per_second": round(len(texts) / elapsed, 1),
        "torch_threads": torch.get_num_threads(),
        "batch_size": batch,
    }))


if __name__ == "__main__":
    main()
