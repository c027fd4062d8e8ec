#!/usr/bin/env python3
"""Writes the sentence-transformers reference embeddings that ragd-models' equivalence test compares against.

Usage: scripts/make_embedding_fixture.py MODEL_DIR OUT_JSON
MODEL_DIR is the all-MiniLM-L6-v2 folder installed by `ragd models fetch` (e.g. ~/.cache/ragd/models/all-MiniLM-L6-v2),
so the reference and the Rust code read the very same weights and tokenizer.
"""

import json
import sys

import sentence_transformers
from sentence_transformers import SentenceTransformer

# Long enough to pass 256 tokens, so the reference shows what sentence-transformers' truncation keeps.
LONG = " ".join(
    [
        "Retrieval-augmented generation combines a search step with a language model.",
        "First, documents are split into chunks that fit the embedding model's context window.",
        "Each chunk is turned into a dense vector and stored in a vector database such as Qdrant.",
        "At query time the question is embedded with the same model, the nearest chunks are retrieved,",
        "and they are handed to the generator as context, which grounds the answer in the sources.",
        "Chunk size is a trade-off: small chunks are precise but lose context, large ones dilute the signal.",
        "Overlapping windows reduce the chance that an answer is cut in half at a chunk boundary.",
    ]
    * 6
)

TEXTS = [
    "hello",
    "",
    "how do I reset my password?",
    "The quick brown fox jumps over the lazy dog.",
    # msmarco-like passage
    "The Manhattan Project was a research and development undertaking during World War II that produced the "
    "first nuclear weapons. It was led by the United States with the support of the United Kingdom and Canada. "
    "From 1942 to 1946, the project was under the direction of Major General Leslie Groves of the U.S. Army "
    "Corps of Engineers, while physicist J. Robert Oppenheimer directed the Los Alamos Laboratory.",
    "Café crème brûlée — naïve façade; 東京は日本の首都です。 Привет, мир! 🚀 Ünïcödé ß",
    'fn main() { let x = 41; println!("{}", x + 1); } // 42 % 7 == 0 && a->b != NULL',
    "COVID-19 VACCINES were approved in December 2020; efficacy ~95% (Pfizer/BioNTech BNT162b2).",
    LONG,
]


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    model_dir, out = sys.argv[1], sys.argv[2]
    model = SentenceTransformer(model_dir, device="cpu")
    assert model.max_seq_length == 256, model.max_seq_length
    vectors = model.encode(TEXTS, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
    tokenizer = model.tokenizer
    items = []
    for text, vec in zip(TEXTS, vectors):
        items.append(
            {
                "text": text,
                # Without special tokens and untruncated: what ragd's token counter must report.
                "tokens_untruncated": len(tokenizer(text, add_special_tokens=False, truncation=False)["input_ids"]),
                "embedding": [round(float(x), 6) for x in vec],
            }
        )
    fixture = {
        "generator": f"sentence-transformers {sentence_transformers.__version__}, "
        "SentenceTransformer(MODEL_DIR).encode(texts, normalize_embeddings=True)",
        "model": "all-MiniLM-L6-v2",
        "max_seq_length": model.max_seq_length,
        "dimensions": int(vectors.shape[1]),
        "items": items,
    }
    with open(out, "w", encoding="utf-8") as f:
        json.dump(fixture, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    main()
