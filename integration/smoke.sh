#!/usr/bin/env bash
# An operator's smoke test: real binary, redis-cli and curl, free ports, everything stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -q
dir=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { for _ in $(seq 1 100); do if eval "$1" >/dev/null 2>&1; then return 0; fi; sleep 0.05; done; echo "timed out: $1"; exit 1; }

rport=$(free_port); bport=$(free_port); pport=$(free_port); dead_port=$(free_port)
redis-server --port "$rport" --save "" --appendonly no >/dev/null & pids+=($!)
wait_for "redis-cli -p $rport ping"
mkdir -p "$dir/www" && echo hello > "$dir/www/index.html"
(cd "$dir/www" && exec python3 -m http.server "$bport" --bind 127.0.0.1 >/dev/null 2>&1) & pids+=($!)
wait_for "curl -sf http://127.0.0.1:$bport/"
./target/release/hypache --listen "127.0.0.1:$pport" --read-redis-port "$rport" --write-redis-port "$rport" \
  --access-log "$dir/access.log" 2>"$dir/err.log" & pids+=($!)
wait_for "curl -sf -H 'Host: __ping__' http://127.0.0.1:$pport/"

redis-cli -p "$rport" rpush frontend:smoke.test id "http://127.0.0.1:$dead_port" "http://127.0.0.1:$bport" >/dev/null
body=$(curl -sf -H 'Host: smoke.test' "http://127.0.0.1:$pport/index.html")
[ "$body" = hello ] || { echo "unexpected body: $body"; exit 1; }
[ "$(redis-cli -p "$rport" smembers dead:smoke.test)" = 0 ] || { echo "dead backend not marked"; exit 1; }
code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Host: unknown.test' "http://127.0.0.1:$pport/")
[ "$code" = 400 ] || { echo "unknown host gave $code"; exit 1; }
echo "smoke: ok"
