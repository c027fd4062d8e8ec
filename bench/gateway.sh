#!/usr/bin/env bash
# What authentication + rate limiting add to a trivial route, with an nginx proxy hop on the same
# machine beside it for scale. One connection, closed loop, wrk's latency percentiles. Not a test.
#   A: ragd, auth off                      GET /api/v1/collections
#   B: ragd, auth on, API key + GCRA       GET /api/v1/collections   (quota raised: every request is checked, none refused)
#   C: nginx → ragd A (keep-alive upstream) GET /api/v1/collections
# Usage: bench/gateway.sh   (env: RAGD_BIN, DURATION=20s; installs wrk and nginx-light when root)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${RAGD_BIN:-target/release/ragd}"
DURATION="${DURATION:-20s}"
for tool in wrk nginx; do
  if ! command -v "$tool" >/dev/null 2>&1 && ! [ -x "/usr/sbin/$tool" ]; then
    [ "$(id -u)" = 0 ] || { echo "skipped: $tool is not installed (apt-get install wrk nginx-light)"; exit 0; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx-light >/dev/null
  fi
done
[ -x "$BIN" ] || cargo build --release --quiet --bin ragd
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

KEY=$("$BIN" keys create --role read --tenant bench --data "$work/b" 2>/dev/null | tail -1)
start() { # name port data [env...]
  local name=$1 port=$2 data=$3; shift 3
  env RAGD_LOG=warn RAGD_GENERATOR__KIND=none RAGD_ADMIN_LISTEN= "$@" "$BIN" serve --listen "127.0.0.1:$port" --data "$data" >"$work/$name.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 300); do curl -fs "http://127.0.0.1:$port/health/live" >/dev/null && return; sleep 0.2; done
  echo "ragd $name did not start:"; cat "$work/$name.log"; exit 1
}
start a 18081 "$work/a"
start b 18082 "$work/b" RAGD_AUTH__ENABLED=true RAGD_RATE_LIMIT__QUERY__REQUESTS=1000000000
cat >"$work/nginx.conf" <<NGINX
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx.err;
events { worker_connections 64; }
http {
  access_log off;
  upstream ragd { server 127.0.0.1:18081; keepalive 8; }
  server {
    listen 127.0.0.1:18083;
    location / { proxy_pass http://ragd; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
NGINX
"$NGINX" -c "$work/nginx.conf" -p "$work" -g 'daemon off;' &
pids+=($!)
sleep 0.5
curl -fs -H "Authorization: Bearer $KEY" http://127.0.0.1:18082/api/v1/collections >/dev/null || { echo "the key does not work"; exit 1; }

run() { # label url [header]
  local label=$1 url=$2; shift 2
  wrk -t1 -c1 -d2s "$@" "$url" >/dev/null   # warm-up
  local out; out=$(wrk -t1 -c1 -d"$DURATION" --latency "$@" "$url")
  local p50 p99 rps
  p50=$(awk '/^ +50%/{print $2}' <<<"$out"); p99=$(awk '/^ +99%/{print $2}' <<<"$out")
  rps=$(awk '/^Requests\/sec/{print $2}' <<<"$out")
  if ! grep -q "Non-2xx" <<<"$out"; then ok=yes; else ok="NO: $(grep Non-2xx <<<"$out")"; fi
  printf '%-44s p50 %-9s p99 %-9s %10s req/s  all 2xx: %s\n' "$label" "$p50" "$p99" "$rps" "$ok"
}
echo "== $(nproc) cores, $DURATION per run, 1 connection; $("$BIN" --version)"
run "A ragd, auth off" http://127.0.0.1:18081/api/v1/collections
run "B ragd, API key + rate limit" http://127.0.0.1:18082/api/v1/collections -H "Authorization: Bearer $KEY"
run "C nginx -> ragd (auth off)" http://127.0.0.1:18083/api/v1/collections
