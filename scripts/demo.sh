#!/usr/bin/env bash
# ragd's main job on the embedded default, from nothing: fetch the models, build, start the server,
# ingest this repository's docs/, run a search, ask a question, and leave the server running.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh

LISTEN="${RAGD_LISTEN:-127.0.0.1:8080}"
DATA="${RAGD_DATA_DIR:-$PWD/.ragd/data}"
LOG="$PWD/.ragd/server.log"
mkdir -p .ragd

echo "==> building ragd (release; the first build takes a while)"
cargo build --release --quiet --bin ragd
RAGD=target/release/ragd

echo "==> fetching the built-in models"
$RAGD models fetch

if [ -f .ragd/server.pid ] && kill -0 "$(cat .ragd/server.pid)" 2>/dev/null; then
  echo "==> stopping the previous demo server (pid $(cat .ragd/server.pid))"
  kill "$(cat .ragd/server.pid)"; sleep 1
fi
echo "==> starting the server on $LISTEN (data: $DATA, log: $LOG)"
nohup $RAGD serve --listen "$LISTEN" --data "$DATA" >"$LOG" 2>&1 &
echo $! > .ragd/server.pid
for _ in $(seq 1 120); do
  curl -fsS "http://$LISTEN/health/ready" >/dev/null 2>&1 && break
  kill -0 "$(cat .ragd/server.pid)" 2>/dev/null || { echo "the server exited; see $LOG" >&2; tail -20 "$LOG" >&2; exit 1; }
  sleep 0.5
done

echo "==> ingesting docs/ into the collection 'docs'"
$RAGD ingest docs --collection docs --server "http://$LISTEN"

echo "==> searching: how does ragd keep acknowledged documents safe?"
$RAGD search "how does ragd keep acknowledged documents safe after a crash?" --collection docs --server "http://$LISTEN" --top-k 3

echo
echo "==> asking (built-in LLM, streamed, checked against its evidence): what is stored before ragd acknowledges an upload?"
$RAGD ask "What is stored before ragd acknowledges an upload?" --collection docs --server "http://$LISTEN"

cat <<MSG

ragd is running at http://$LISTEN (pid $(cat .ragd/server.pid), log $LOG, data $DATA).
Try:  curl -s http://$LISTEN/api/v1/collections/docs/search -H 'content-type: application/json' -d '{"query":"hybrid search"}'
      $RAGD ask "what happens when the generator is down?" --collection docs --server http://$LISTEN
Stop: kill \$(cat .ragd/server.pid)
MSG
