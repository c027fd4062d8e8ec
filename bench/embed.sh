#!/usr/bin/env bash
# Embedding throughput of ragd's built-in embedder against sentence-transformers (the library users
# would pick instead), same model (all-MiniLM-L6-v2), same texts, same machine, one run, alternating
# sides so both see the same background load. Two input shapes cut from the dataset's passages:
#   short: the first sentence of each passage;
#   long:  consecutive passages joined and cut to 200 words (~260 tokens; both sides truncate at 256).
# Prints texts/s per side and ratio (ragd / peer), and one short query's latency; JSON in $OUT.
#
# Usage: bench/embed.sh [DATASET_DIR]   env: OUT (target/bench), PYTHON, BENCH_RAGD, ROUNDS (2)
# Needs: a ragd binary (release build by default), the models (`ragd models fetch`),
#        the peer's packages in a venv, from bench/requirements.lock (bench/requirements.in says how; PYTHON=that venv's python3)
set -euo pipefail
cd "$(dirname "$0")/.."
DATASET="${1:-../shared/datasets/msmarco-5k}"
MODELS="${RAGD_MODELS_DIR:-$HOME/.cache/ragd/models}"
OUT="${OUT:-target/bench}"
RAGD="${BENCH_RAGD:-target/release/ragd}"
PY="${PYTHON:-python3}"
ROUNDS="${ROUNDS:-2}"
mkdir -p "$OUT"

"$PY" -c "import sentence_transformers" 2>/dev/null || {
  echo "the peer's packages are missing: install bench/requirements.lock into a venv (bench/requirements.in says how) and set PYTHON=<venv>/bin/python3" >&2
  exit 1
}
[ -x "$RAGD" ] || cargo build --release --bin ragd

"$PY" - "$DATASET" "$OUT" <<'PYEOF'
import json, re, sys
dataset, out = sys.argv[1], sys.argv[2]
docs = [json.loads(l) for l in open(f"{dataset}/corpus.jsonl", encoding="utf-8")]
texts = [((d.get("title") or "") + " " + d["text"]).strip() for d in docs]
with open(f"{out}/embed-short.txt", "w", encoding="utf-8") as f:
    for t in texts:
        first = re.split(r"(?<=[.!?])\s+", t, maxsplit=1)[0].strip()
        if first:
            f.write(first.replace("\n", " ") + "\n")
words = " ".join(texts).split()
with open(f"{out}/embed-long.txt", "w", encoding="utf-8") as f:
    for i in range(0, min(len(words), 640 * 200) - 199, 200):
        f.write(" ".join(words[i:i + 200]) + "\n")
PYEOF

for shape in short long; do
  for round in $(seq 1 "$ROUNDS"); do
    echo "== $shape, round $round: ragd" >&2
    RAGD_LOG=warn "$RAGD" bench embed --texts "$OUT/embed-$shape.txt" --json >"$OUT/embed-$shape-ragd-$round.json"
    echo "== $shape, round $round: sentence-transformers" >&2
    "$PY" bench/st_throughput.py "$OUT/embed-$shape.txt" "$MODELS/all-MiniLM-L6-v2" >"$OUT/embed-$shape-st-$round.json"
  done
done

"$PY" - "$OUT" "$ROUNDS" <<'PYEOF'
import json, sys
out, rounds = sys.argv[1], int(sys.argv[2])
load = lambda p: json.load(open(p))
print(f"{'shape':<7}{'texts':>7}{'tokens':>8}{'ragd texts/s':>14}{'st texts/s':>12}{'ratio':>8}{'ragd CPU-s':>12}{'st CPU-s':>10}{'query ms ragd/st':>18}")
for shape in ["short", "long"]:
    r = [load(f"{out}/embed-{shape}-ragd-{i}.json") for i in range(1, rounds + 1)]
    s = [load(f"{out}/embed-{shape}-st-{i}.json") for i in range(1, rounds + 1)]
    best = lambda xs, k: max(x[k] for x in xs)
    least = lambda xs, k: min(x[k] for x in xs)
    rt, st = best(r, "texts_per_second"), best(s, "texts_per_second")
    print(f"{shape:<7}{r[0]['texts']:>7}{r[0]['mean_tokens']:>8}{rt:>14}{st:>12}{rt / st:>7.2f}x"
          f"{least(r, 'cpu_seconds'):>12}{least(s, 'cpu_seconds'):>10}"
          f"{least(r, 'one_query_ms'):>9}/{least(s, 'one_query_ms')}")
print(f"(best of {rounds} alternating rounds per side; every round's JSON is in {out})")
PYEOF
