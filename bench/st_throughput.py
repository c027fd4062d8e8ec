#!/usr/bin/env python3
"""Peer side of the embedding benchmark: sentence-transformers' throughput (texts/s) for all-MiniLM-L6-v2.

Usage: st_throughput.py TEXTS MODEL_DIR [BATCH]
TEXTS is either a BEIR dataset folder (its corpus.jsonl, title + " " + text, as beir_reference.py embeds them)
or a file with one text per line (plain, or JSON with `text` and optional `title`) — the same file
`ragd bench embed --texts` reads, so both sides embed exactly the same inputs.
"""
import json
import os
import sys
import time

import torch
from sentence_transformers import SentenceTransformer


def read_texts(path):
    if os.path.isdir(path):
        path = os.path.join(path, "corpus.jsonl")
    texts = []
    for line in open(path, encoding="utf-8"):
        line = line.strip()
        if not line:
            continue
        if line.startswith("{"):
            d = json.loads(line)
            texts.append(((d.get("title") or "") + " " + d["text"]).strip())
        else:
            texts.append(line)
    return texts


def main():
    texts, model_dir = read_texts(sys.argv[1]), sys.argv[2]
    batch = int(sys.argv[3]) if len(sys.argv) > 3 else 32
    model = SentenceTransformer(model_dir, device="cpu")
    tokens = sum(min(len(ids), model.max_seq_length) for ids in model.tokenizer(texts)["input_ids"])
    model.encode(texts[:batch], batch_size=batch)  # warm-up
    cpu, t = time.process_time(), time.perf_counter()
    model.encode(texts, batch_size=batch, normalize_embeddings=True)
    elapsed, cpu = time.perf_counter() - t, time.process_time() - cpu
    query = ["how do i reset my router"]
    t = time.perf_counter()
    for _ in range(50):
        model.encode(query, normalize_embeddings=True)
    query_ms = (time.perf_counter() - t) * 1000 / 50
    print(json.dumps({
        "peer": "sentence-transformers",
        "texts": len(texts),
        "mean_tokens": round(tokens / len(texts), 1),
        "seconds": round(elapsed, 2),
        "cpu_seconds": round(cpu, 2),
        "texts_per_second": round(len(texts) / elapsed, 1),
        "tokens_per_second": round(tokens / elapsed),
        "one_query_ms": round(query_ms, 2),
        "torch_threads": torch.get_num_threads(),
        "batch": batch,
    }))


if __name__ == "__main__":
    main()
