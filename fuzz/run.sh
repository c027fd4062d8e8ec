#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 600) one after the other and prints, per target, the
# executions, the corpus size and whether it crashed. Crashes are left in fuzz/artifacts/<target>/.
# Usage: fuzz/run.sh [SECONDS] [TARGET...]     (installs cargo-fuzz when missing)
set -uo pipefail
cd "$(dirname "$0")"
SECONDS_PER_TARGET="${1:-600}"; shift || true
TARGETS=("$@"); [ ${#TARGETS[@]} -gt 0 ] || TARGETS=(parse_pdf parse_docx parse_html parse_markdown parse_pptx parse_xlsx parse_ods parse_odt parse_epub parse_eml parse_csv parse_json parse_jsonl chunk json_bodies)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1   # cargo fuzz passes nightly-only flags; this allows them on stable
status=0
for t in "${TARGETS[@]}"; do
  mkdir -p "work/$t"
  cargo fuzz build -O "$t" >/dev/null 2>&1 || { echo "$t: build failed"; cargo fuzz build -O "$t"; exit 1; }
  log="work/$t.log"
  cargo fuzz run -O "$t" "work/$t" "corpus/$t" -- -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=4096 >"$log" 2>&1
  rc=$?
  done_line=$(grep -E "^Done [0-9]+ runs" "$log" | tail -1)
  stat=$(grep -E "#[0-9]+\s+(DONE|pulse|NEW|REDUCE)" "$log" | tail -1)
  if [ $rc -eq 0 ]; then
    echo "$t: ok, ${done_line:-?} | last: ${stat:-?}"
  else
    status=1
    echo "$t: CRASH (exit $rc), see fuzz/$log and fuzz/artifacts/$t/"
    grep -E "panicked|ERROR|SUMMARY" "$log" | head -5
  fi
done
exit $status
