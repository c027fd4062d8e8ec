#!/usr/bin/env bash
# Runs every test of ragd on a fresh machine: system packages, the tests' npm and Python packages
# (both from lock files), the built-in models, then the whole workspace's tests with cargo-nextest.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh

command -v promtool >/dev/null 2>&1 || apt_install "the observability tests scrape ragd with Prometheus and check the shipped rules" prometheus
command -v curl >/dev/null 2>&1 || apt_install "the HTTPS test checks HTTP/2 with it" curl
[ -x /usr/bin/chromium ] || apt_install "the web dashboard is tested in a real browser" chromium fonts-dejavu-core fonts-liberation
command -v node >/dev/null 2>&1 || apt_install "Playwright drives the browser from Node.js" nodejs npm
command -v tesseract >/dev/null 2>&1 || apt_install "scanned PDF pages and images are read by OCR (Tesseract) in the format tests" tesseract-ocr tesseract-ocr-eng
command -v pdftoppm >/dev/null 2>&1 || apt_install "scanned PDF pages are drawn for OCR by Poppler's pdftoppm" poppler-utils
command -v redis-server >/dev/null 2>&1 || apt_install "cluster mode's shared cache, limiter and job queue are tested against a real Redis" redis-server
if ! redis-cli -p 6379 ping >/dev/null 2>&1; then
  echo "==> starting Redis on 127.0.0.1:6379 (the Redis tests use it; nothing is kept on disk)"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
  for _ in $(seq 20); do redis-cli -p 6379 ping >/dev/null 2>&1 && break; sleep 0.25; done
fi

echo "==> npm packages of the browser test (playwright-core, from its lock file)"
(cd crates/ragd/tests/web && npm ci --no-audit --no-fund --loglevel=error >/dev/null)

# The Python packages the tests drive (the official openai client, llama.cpp's server) come from a
# lock file with every version and hash pinned, into a virtual environment of this script's own,
# rebuilt only when the lock changes (docs/testing.md: how to change the lock).
VENV=$PWD/.venv-test
LOCK=crates/ragd/tests/py/requirements.lock
lock_sum=$(sha256sum "$LOCK" | cut -d' ' -f1)
if [ "$(cat "$VENV/lock.sha256" 2>/dev/null)" = "$lock_sum" ] && "$VENV/bin/python3" -c "import openai, llama_cpp.server" 2>/dev/null; then
  echo "==> Python packages the tests drive: .venv-test/ matches $LOCK"
else
  echo "==> Python packages the tests drive, from $LOCK into .venv-test/ (llama.cpp's server is compiled once, then cached by pip)"
  rm -rf "$VENV"
  if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
    rm -rf "$VENV"
    apt_install "the tests' Python packages go into a virtual environment" python3-venv
    python3 -m venv "$VENV"
  fi
  "$VENV/bin/python3" -m pip install -q --disable-pip-version-check --require-hashes --no-deps -r "$LOCK"
  "$VENV/bin/python3" -c "import openai, llama_cpp.server" || { echo "the Python packages of $LOCK failed to install" >&2; exit 1; }
  echo "$lock_sum" > "$VENV/lock.sha256"
fi
# The tests run `python3` from PATH: the environment's comes first.
export PATH="$VENV/bin:$PATH"

# One build for everything: the tests' dev-dependencies change feature sets, so a separate
# `cargo run` first would compile the heavy crates (qdrant-edge, llama.cpp) twice.
echo "==> building ragd and its tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-run
else
  cargo build --workspace --tests
fi

echo "==> fetching the built-in models (idempotent)"
"${CARGO_TARGET_DIR:-target}/debug/ragd" models fetch

echo "==> running the tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  echo "cargo-nextest not found: falling back to cargo test"
  cargo test --workspace --no-fail-fast "$@"
fi
