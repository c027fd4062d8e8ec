#!/usr/bin/env bash
# Runs ragd's cluster mode for real on this machine's loopback — 3 Qdrant nodes (Raft), Redis,
# 3 ragd replicas, HAProxy in front — and exercises it (exercise.py): ingestion through HAProxy
# while a replica and then a Qdrant node are SIGKILLed and restarted, queries while a replica is
# down, rate limits across replicas, the shared cache, Redis stopped, and an embedded collection
# snapshotted while ingesting, restored and moved into the cluster.
#
#   QDRANT_BIN=/path/to/qdrant deploy/loopback/cluster.sh
#
# There is no Qdrant package for this machine: QDRANT_BIN is a Qdrant server built from Qdrant's
# public source outside this repository (v1.14.1 forms a 3-node cluster on loopback here; see
# docs/cluster.md). Without it the script says so and exits 0.
# Other knobs (none may start with RAGD_, which ragd reads as settings): LOOPBACK_RAGD (default target/release/ragd, else target/debug/ragd), DOCS (documents
# of msmarco-5k to ingest, default all), KEEP=1 (leave the processes and folder for a look).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

if [ -z "${QDRANT_BIN:-}" ]; then
  echo "skipped: QDRANT_BIN not set (a Qdrant server binary built outside this repository; see docs/cluster.md)"
  exit 0
fi
[ -x "$QDRANT_BIN" ] || { echo "QDRANT_BIN=$QDRANT_BIN is not an executable" >&2; exit 2; }
LOOPBACK_RAGD=${LOOPBACK_RAGD:-}
if [ -z "$LOOPBACK_RAGD" ]; then
  for c in target/release/ragd target/debug/ragd; do [ -x "$c" ] && { LOOPBACK_RAGD=$ROOT/$c; break; }; done
fi
[ -x "${LOOPBACK_RAGD:-}" ] || { echo "no ragd binary: build one (cargo build --release --bin ragd) or set LOOPBACK_RAGD" >&2; exit 2; }
command -v haproxy >/dev/null || { echo "haproxy is not installed (apt-get install haproxy)" >&2; exit 2; }
command -v redis-server >/dev/null || { echo "redis-server is not installed" >&2; exit 2; }

WORK=${WORK:-$(mktemp -d /tmp/ragd-cluster.XXXXXX)}
mkdir -p "$WORK"
echo "==> working in $WORK (QDRANT_BIN=$QDRANT_BIN, LOOPBACK_RAGD=$LOOPBACK_RAGD)"
PIDS="$WORK/pids"; : > "$PIDS"

cleanup() {
  if [ "${KEEP:-0}" = 1 ]; then echo "KEEP=1: processes left running; their pids are in $PIDS"; return; fi
  while read -r name pid; do kill -9 "$pid" 2>/dev/null || true; done < "$PIDS"
}
trap cleanup EXIT

# Ports: Qdrant node i: http 163i3, grpc 163i4, p2p 163i5; Redis 16379; ragd i: api 1808i, admin
# 1908i; HAProxy 18080 (stats 18090). Everything listens on 127.0.0.1 only (checked with `ss` below):
# Qdrant's default host is 0.0.0.0, and its host setting also binds the p2p (Raft) port.
qdrant_start() {
  local i=$1 boot
  mkdir -p "$WORK/qdrant$i"
  if [ "$i" = 1 ]; then boot=(--uri "http://127.0.0.1:16315"); else boot=(--bootstrap "http://127.0.0.1:16315" --uri "http://127.0.0.1:163${i}5"); fi
  (cd "$WORK/qdrant$i" && QDRANT__SERVICE__HOST=127.0.0.1 QDRANT__SERVICE__HTTP_PORT=163${i}3 QDRANT__SERVICE__GRPC_PORT=163${i}4 \
    QDRANT__CLUSTER__ENABLED=true QDRANT__CLUSTER__P2P__PORT=163${i}5 \
    QDRANT__STORAGE__STORAGE_PATH="$WORK/qdrant$i/storage" QDRANT__STORAGE__SNAPSHOTS_PATH="$WORK/qdrant$i/snapshots" \
    QDRANT__TELEMETRY_DISABLED=true QDRANT__LOG_LEVEL=WARN \
    exec "$QDRANT_BIN" "${boot[@]}" >>"$WORK/qdrant$i.log" 2>&1) &
  echo "qdrant$i $!" >> "$PIDS"
}

# Fails the run if a process it started (a pid in $PIDS) listens on anything but loopback, or if
# `ss` shows none of them listening at all (it could not see them: the check would prove nothing).
check_loopback_only() { # when
  command -v ss >/dev/null || { echo "ss (iproute2) is needed to check that the cluster listens on loopback only" >&2; exit 2; }
  local pids mine bad
  pids=$(awk '{print $2}' "$PIDS" | paste -sd'|')
  mine=$(ss -H -ltunp | awk -v re="pid=($pids)," '$0 ~ re')
  [ -n "$mine" ] || { echo "FAILED ($1): ss shows no listening socket of this run's processes ($PIDS)" >&2; exit 1; }
  # Columns with -tu: Netid State Recv-Q Send-Q Local Peer Process.
  bad=$(printf '%s\n' "$mine" | awk '$5 !~ /^(127\.[0-9]+\.[0-9]+\.[0-9]+|\[::1\]):[0-9]+$/')
  if [ -n "$bad" ]; then
    echo "FAILED ($1): a process of this run listens beyond loopback:" >&2
    printf '%s\n' "$bad" >&2
    exit 1
  fi
  echo "    $(printf '%s\n' "$mine" | wc -l) listening sockets of this run, every one on loopback ($1)"
}

wait_http() { # url, seconds
  local t=0
  until curl -fsS -o /dev/null "$1" 2>/dev/null; do
    sleep 0.5; t=$((t + 1))
    [ $t -lt $(( $2 * 2 )) ] || { echo "timed out waiting for $1" >&2; return 1; }
  done
}

echo "==> Qdrant: 3 nodes"
qdrant_start 1; wait_http http://127.0.0.1:16313/readyz 60
qdrant_start 2; sleep 2; qdrant_start 3
wait_http http://127.0.0.1:16323/readyz 60; wait_http http://127.0.0.1:16333/readyz 60
for _ in $(seq 60); do
  peers=$(curl -fsS http://127.0.0.1:16313/cluster | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["result"]["peers"]))' 2>/dev/null || echo 0)
  [ "$peers" = 3 ] && break; sleep 1
done
[ "$peers" = 3 ] || { echo "the Qdrant cluster did not form (peers: $peers); see $WORK/qdrant*.log" >&2; exit 1; }
echo "    3 peers in the Raft cluster"

echo "==> Redis on 16379 (no persistence, like the machine's own)"
redis-server --port 16379 --bind 127.0.0.1 --save "" --appendonly no --daemonize no >"$WORK/redis.log" 2>&1 &
echo "redis $!" >> "$PIDS"
for _ in $(seq 40); do redis-cli -p 16379 ping >/dev/null 2>&1 && break; sleep 0.25; done

cat > "$WORK/ragd.toml" <<TOML
models_dir = "${RAGD_MODELS_DIR:-$HOME/.cache/ragd/models}"
[auth]
enabled = true
[generator]
kind = "none"
[store]
backend = "qdrant"
[store.qdrant]
urls = ["http://127.0.0.1:16314", "http://127.0.0.1:16324", "http://127.0.0.1:16334"]
timeout_ms = 5000
connect_timeout_ms = 1000
replication_factor = 3
write_consistency_factor = 2
[redis]
url = "redis://127.0.0.1:16379/0"
[ingest]
job_stale_secs = 15
batch_documents = 64
[rate_limit.query]
requests = 1000000
period_secs = 60
[rate_limit.ingest]
requests = 1000000
period_secs = 60
TOML
[ -d "${RAGD_MODELS_DIR:-$HOME/.cache/ragd/models}" ] || "$LOOPBACK_RAGD" models fetch >/dev/null

ragd_start() { # i [extra env...]
  local i=$1; shift
  mkdir -p "$WORK/ragd$i"
  env "$@" RAGD_LISTEN=127.0.0.1:1808$i RAGD_ADMIN_LISTEN=127.0.0.1:1908$i RAGD_DATA_DIR="$WORK/ragd$i" \
    "$LOOPBACK_RAGD" --config "$WORK/ragd.toml" serve >>"$WORK/ragd$i.log" 2>&1 &
  echo "ragd$i $!" >> "$PIDS"
}

echo "==> an API key, stored in the cluster (every replica sees it)"
if ! "$LOOPBACK_RAGD" --config "$WORK/ragd.toml" keys --data "$WORK/keys-cli" create --role admin --tenant default --name loopback \
    >"$WORK/key.out" 2>"$WORK/key.err"; then
  echo "could not create a key in the cluster:" >&2; cat "$WORK/key.err" >&2; exit 1
fi
KEY=$(tail -1 "$WORK/key.out")

echo "==> 3 ragd replicas"
for i in 1 2 3; do ragd_start $i; done
for i in 1 2 3; do wait_http http://127.0.0.1:1808$i/health/ready 120; done

echo "==> HAProxy on 18080"
sed -e "s#@SOCKET@#$WORK/haproxy.sock#" "$ROOT/deploy/loopback/haproxy.cfg" > "$WORK/haproxy.cfg"
haproxy -f "$WORK/haproxy.cfg" -db >"$WORK/haproxy.log" 2>&1 &
echo "haproxy $!" >> "$PIDS"
wait_http http://127.0.0.1:18080/health/ready 30
echo "==> every service on loopback only"
check_loopback_only "all started"

echo "==> exercising it"
export WORK PIDS LOOPBACK_RAGD KEY ROOT QDRANT_BIN
rc=0
python3 "$ROOT/deploy/loopback/exercise.py" || rc=$?
# The exercise restarts nodes and replicas and starts a restore drill's Qdrant and ragd: check again.
check_loopback_only "after the exercise"
exit "$rc"
