#!/usr/bin/env bash
# Runs every test of ragd on a fresh machine: system packages, Python packages for the model fetch,
# the built-in models, then the whole workspace's tests with cargo-nextest.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh

echo "==> fetching the built-in models (idempotent)"
cargo run --quiet --bin ragd -- models fetch

echo "==> running the tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  echo "cargo-nextest not found: falling back to cargo test"
  cargo test --workspace --no-fail-fast "$@"
fi
