#!/usr/bin/env bash
# hypache benchmark harness: hypache, nginx and HAProxy in front of the same nginx backend, driven by wrk.
# Usage: bash integration/bench/run.sh [--smoke] [--duration 10s] [--rounds 3] [--out results.json]
#                                      [--conns 64,256] [--proxies hypache,nginx,haproxy] [--warmup 1s]
# See integration/bench/README.md for what the columns mean.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
bench_py=(python3 "$here/bench.py")
HOST=bench.test

usage() { sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//'; }

# ------------------------------------------------------------------------------------------- arguments
smoke=0 duration='' rounds='' out='' conns_arg='' proxies_arg='' warmup=''
need_value() { [ $# -ge 2 ] && [ -n "$2" ] || { echo "run.sh: $1 needs a value" >&2; exit 2; }; }
while [ $# -gt 0 ]; do
  case $1 in
    --smoke) smoke=1 ;;
    --duration) need_value "$@"; duration=$2; shift ;;
    --duration=*) duration=${1#*=} ;;
    --rounds) need_value "$@"; rounds=$2; shift ;;
    --rounds=*) rounds=${1#*=} ;;
    --out) need_value "$@"; out=$2; shift ;;
    --out=*) out=${1#*=} ;;
    --conns) need_value "$@"; conns_arg=$2; shift ;;
    --conns=*) conns_arg=${1#*=} ;;
    --proxies) need_value "$@"; proxies_arg=$2; shift ;;
    --proxies=*) proxies_arg=${1#*=} ;;
    --warmup) need_value "$@"; warmup=$2; shift ;;
    --warmup=*) warmup=${1#*=} ;;
    -h|--help) usage; exit 0 ;;
    *) echo "run.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
if [ "$smoke" = 1 ]; then
  # CI mode: hypache and the backend only, one short run; fails when hypache served nothing or non-2xx.
  : "${duration:=2s}" "${rounds:=1}" "${conns_arg:=16}" "${proxies_arg:=hypache}" "${warmup:=0}"
else
  : "${duration:=10s}" "${rounds:=3}" "${conns_arg:=64,256}" "${proxies_arg:=hypache,nginx,haproxy}" "${warmup:=1s}"
fi
: "${out:=$here/results/latest.json}"
out=$(realpath -m -- "$out")
read -ra conns_list <<<"${conns_arg//,/ }"
read -ra wanted <<<"${proxies_arg//,/ }"

# wrk durations: 10s, 2m, 500ms is not accepted by wrk; this converts to whole seconds for time limits.
to_seconds() {
  local d=$1
  case $d in
    *h) echo $(( ${d%h} * 3600 )) ;;
    *m) echo $(( ${d%m} * 60 )) ;;
    *s) echo "${d%s}" ;;
    *) echo "$d" ;;
  esac
}
for v in "$duration" "$warmup"; do
  [[ $v =~ ^[0-9]+[smh]?$ ]] || { echo "run.sh: bad duration '$v' (use e.g. 5s, 2m)" >&2; exit 2; }
done
[[ $rounds =~ ^[1-9][0-9]*$ ]] || { echo "run.sh: --rounds must be a positive integer" >&2; exit 2; }
for c in "${conns_list[@]}"; do
  [[ $c =~ ^[1-9][0-9]*$ ]] || { echo "run.sh: bad connection count '$c'" >&2; exit 2; }
done
duration_s=$(to_seconds "$duration")
warmup_s=$(to_seconds "$warmup")

log() { printf '%s\n' "--- $*"; }
die() { printf 'run.sh: %s\n' "$*" >&2; exit 1; }

# ------------------------------------------------------------------------------------------- cleanup
work=$(mktemp -d -t hypache-bench.XXXXXX)
chmod 755 "$work"   # nginx workers may run as another user; they must reach their temp dirs
started=()          # pids of every server this script started (their descendants are found at stop time)
declare -A NAME_OF=()

stop_all() {
  local pid all=() alive deadline
  for pid in "${started[@]}"; do
    # descendants first (nginx workers), so none is orphaned if its parent has to be killed
    mapfile -t kids < <("${bench_py[@]}" descendants "$pid" 2>/dev/null || true)
    all+=("${kids[@]}" "$pid")
  done
  [ ${#all[@]} -gt 0 ] || return 0
  for pid in "${started[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  deadline=$((SECONDS + 5))
  while :; do
    alive=$("${bench_py[@]}" alive "${all[@]}" 2>/dev/null || true)
    [ -z "$alive" ] && break
    if [ $SECONDS -ge $deadline ]; then
      # shellcheck disable=SC2086
      kill -KILL $alive 2>/dev/null || true
      break
    fi
    sleep 0.05
  done
  for pid in "${started[@]}"; do wait "$pid" 2>/dev/null || true; done
  started=()
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "${client_pid:-}" ]; then kill -TERM "$client_pid" 2>/dev/null || true; wait "$client_pid" 2>/dev/null || true; fi
  stop_all
  if [ "$rc" != 0 ] && [ "$rc" != 130 ] && [ "$rc" != 143 ]; then
    for f in "$work"/*.log; do
      [ -s "$f" ] || continue
      echo "--- last lines of $(basename "$f"):" >&2
      tail -n 15 "$f" >&2
    done
  fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Wait until "$@" succeeds, for at most $1 seconds; fail early when the server process ($2) died.
wait_ready() {
  local limit=$1 pid=$2 what=$3; shift 3
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    if [ -z "$("${bench_py[@]}" alive "$pid")" ]; then die "$what exited during start-up (see its log above)"; fi
    [ $SECONDS -lt $deadline ] || die "$what not ready after ${limit}s"
    sleep 0.05
  done
}

# ------------------------------------------------------------------------------------------- tools
skipped=()   # "name=reason" for the report
can_install=0
[ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && can_install=1
apt_updated=0
# Install a Debian package when its command is missing (root only). Returns non-zero when unavailable.
ensure() {
  local cmd=$1 pkg=$2
  command -v "$cmd" >/dev/null 2>&1 && return 0
  [ "$can_install" = 1 ] || return 1
  log "installing $pkg (Debian package)"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -qq "$pkg" >"$work/apt.log" 2>&1; then
    if [ "$apt_updated" = 0 ]; then
      apt_updated=1
      apt-get update -qq >>"$work/apt.log" 2>&1 || true
      apt-get install -y -qq "$pkg" >>"$work/apt.log" 2>&1 || true
    fi
  fi
  command -v "$cmd" >/dev/null 2>&1
}
export PATH="$PATH:/usr/sbin:/sbin"

ensure wrk wrk || die "wrk is missing and could not be installed (apt-get install -y wrk, as root)"
ensure redis-server redis-server || die "redis-server is missing and could not be installed"
have_nginx=1
ensure nginx nginx || have_nginx=0
backend_kind=nginx   # HYPACHE_BENCH_BACKEND=python forces the slow python3 backend (a test of the fallback)
[ "$have_nginx" = 1 ] && [ "${HYPACHE_BENCH_BACKEND:-nginx}" != python ] || backend_kind=python
declare -A WANT=()
for p in "${wanted[@]}"; do
  case $p in
    hypache|nginx|haproxy) WANT[$p]=1 ;;
    *) die "unknown proxy '$p' (known: hypache, nginx, haproxy)" ;;
  esac
done
if [ -n "${WANT[nginx]:-}" ] && [ "$have_nginx" = 0 ]; then
  unset 'WANT[nginx]'; skipped+=("nginx=not installed and could not be installed (needs root and apt-get)")
  echo "skipping nginx: not installed and could not be installed"
fi
if [ -n "${WANT[haproxy]:-}" ] && ! ensure haproxy haproxy; then
  unset 'WANT[haproxy]'; skipped+=("haproxy=not installed and could not be installed (needs root and apt-get)")
  echo "skipping haproxy: not installed and could not be installed"
fi
if [ "$backend_kind" = python ] && [ "$smoke" = 0 ]; then
  die "a full run needs nginx as the fixed backend (apt-get install -y nginx, as root; unset HYPACHE_BENCH_BACKEND)"
fi

# ------------------------------------------------------------------------------------------- hypache binary
if [ -n "${HYPACHE_BIN:-}" ]; then
  bin=$(realpath -- "$HYPACHE_BIN")
  [ -x "$bin" ] || die "HYPACHE_BIN=$HYPACHE_BIN is not executable"
elif [ -n "${WANT[hypache]:-}" ]; then
  log "cargo build --release --locked"
  (cd "$repo" && cargo build --release --locked)
  bin="${CARGO_TARGET_DIR:-$repo/target}/release/hypache"
  [[ $bin = /* ]] || bin="$repo/$bin"
fi

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# ------------------------------------------------------------------------------------------- servers
declare -A URL=() PID=()
read -ra ports <<<"$("${bench_py[@]}" ports 8)"
next_port() { # sets $port; all ports are picked together so none is handed out twice
  [ ${#ports[@]} -gt 0 ] || read -ra ports <<<"$("${bench_py[@]}" ports 8)"
  port=${ports[0]}; ports=("${ports[@]:1}")
}

nginx_common() { # $1 = name: paths inside the work dir, nothing under /etc or /var
  cat <<EOF
daemon off;
pid $work/$1.pid;
error_log $work/$1.log warn;
events { worker_connections 8192; }
EOF
}
nginx_temp_paths() {
  local t
  for t in client_body proxy fastcgi uwsgi scgi; do echo "  ${t}_temp_path $work/$1-tmp/$t;"; done
}

start_redis() {
  next_port; redis_port=$port
  redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no >"$work/redis.log" 2>&1 &
  started+=($!)
  wait_ready 10 $! redis-server redis-cli -p "$redis_port" ping
  log "redis-server on 127.0.0.1:$redis_port"
}

start_backend() {
  next_port; backend_port=$port
  if [ "$backend_kind" = nginx ]; then
    mkdir -p "$work/backend-tmp"
    { echo "worker_processes 1;"; nginx_common backend
      cat <<EOF
http {
  access_log off;
  keepalive_requests 100000000;
  keepalive_timeout 120s;
$(nginx_temp_paths backend)
  server {
    listen 127.0.0.1:$backend_port backlog=4096;
    location / { default_type text/plain; return 200 "ok\n"; }
  }
}
EOF
    } >"$work/backend.conf"
    nginx -e "$work/backend.log" -p "$work" -c "$work/backend.conf" >>"$work/backend.log" 2>&1 &
  else
    echo "using the python3 backend (nginx unavailable or HYPACHE_BENCH_BACKEND=python; smoke mode only, it is slow)"
    "${bench_py[@]}" backend "$backend_port" >"$work/backend.log" 2>&1 &
  fi
  started+=($!); PID[backend]=$!; URL[backend]="http://127.0.0.1:$backend_port/"
  wait_ready 10 $! backend "${bench_py[@]}" probe "${URL[backend]}"
  log "backend on 127.0.0.1:$backend_port"
}

# start_hypache NAME [extra flags...]: another scenario can start a second instance with other flags.
start_hypache() {
  local name=$1; shift
  next_port
  "$bin" --listen "127.0.0.1:$port" --read-redis-port "$redis_port" --write-redis-port "$redis_port" \
    --access-log none --shutdown-timeout 2s "$@" >"$work/$name.log" 2>&1 &
  started+=($!); PID[$name]=$!; URL[$name]="http://127.0.0.1:$port/"
  wait_ready 15 $! "$name" "${bench_py[@]}" probe "${URL[$name]}" "$HOST"
  log "$name on 127.0.0.1:$port ($("$bin" --version 2>/dev/null || echo '?'))"
}

start_nginx() {
  next_port
  mkdir -p "$work/nginx-tmp"
  { echo "worker_processes auto;"; nginx_common nginx
    cat <<EOF
http {
  access_log off;
  keepalive_requests 100000000;
  keepalive_timeout 120s;
$(nginx_temp_paths nginx)
  upstream b {
    server 127.0.0.1:$backend_port;
    keepalive 64;
    keepalive_requests 100000000;
  }
  server {
    listen 127.0.0.1:$port backlog=4096;
    location / {
      proxy_pass http://b;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$http_host;
    }
  }
}
EOF
  } >"$work/nginx.conf"
  nginx -e "$work/nginx.log" -p "$work" -c "$work/nginx.conf" >>"$work/nginx.log" 2>&1 &
  started+=($!); PID[nginx]=$!; URL[nginx]="http://127.0.0.1:$port/"
  wait_ready 10 $! nginx "${bench_py[@]}" probe "${URL[nginx]}" "$HOST"
  log "nginx on 127.0.0.1:$port ($(nginx -v 2>&1 | sed 's/.*version: //'), $(nproc) workers)"
}

start_haproxy() {
  next_port
  cat >"$work/haproxy.cfg" <<EOF
global
  nbthread 2
  maxconn 4096
defaults
  mode http
  option http-keep-alive
  http-reuse always
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout http-keep-alive 60s
frontend f
  bind 127.0.0.1:$port
  default_backend b
backend b
  server s1 127.0.0.1:$backend_port
EOF
  haproxy -c -q -f "$work/haproxy.cfg" >"$work/haproxy.log" 2>&1 || die "haproxy rejected its configuration"
  haproxy -db -f "$work/haproxy.cfg" >>"$work/haproxy.log" 2>&1 &
  started+=($!); PID[haproxy]=$!; URL[haproxy]="http://127.0.0.1:$port/"
  wait_ready 10 $! haproxy "${bench_py[@]}" probe "${URL[haproxy]}" "$HOST"
  log "haproxy on 127.0.0.1:$port ($(haproxy -v | sed -n '1s/^HAProxy version \([^ ]*\).*/\1/p'), nbthread 2)"
}

# ------------------------------------------------------------------------------------------- measuring
runs="$work/runs.jsonl"
: >"$runs"

# run_client DURATION WRK-ARGS...: wrk in the background, so a signal to this script is handled at once
# (bash runs traps only between foreground commands, but does interrupt `wait`).
client_pid=''
run_client() {
  local dur=$1; shift
  timeout $(( $(to_seconds "$dur") + 30 )) wrk "$@" 2>&1 &
  client_pid=$!
  wait "$client_pid" || true
  client_pid=''
}

# run_wrk SCENARIO NAME CONNS ROUND DURATION [extra wrk args...]: one measured run against NAME.
run_wrk() {
  local scenario=$1 name=$2 conns=$3 round=$4 dur=$5; shift 5
  local pid=${PID[$name]} before after alive=yes
  before=$("${bench_py[@]}" tree "$pid")
  run_client "$dur" -t1 -c"$conns" -d"$dur" --latency -H "Host: $HOST" "$@" "${URL[$name]}" >"$work/wrk.out"
  after=$("${bench_py[@]}" tree "$pid")
  [ -n "$("${bench_py[@]}" alive "$pid")" ] || alive=no
  "${bench_py[@]}" record --out "$runs" --wrk "$work/wrk.out" --scenario "$scenario" --proxy "$name" \
    --conns "$conns" --round "$round" --before "$before" --after "$after" --alive "$alive"
}

warm_up() { # NAME...: an unmeasured run so pools and caches are filled before the first measurement
  [ "$warmup_s" -gt 0 ] || return 0
  local name max=0 c
  for c in "${conns_list[@]}"; do [ "$c" -gt "$max" ] && max=$c; done
  for name in "$@"; do
    run_client "$warmup" -t1 -c"$max" -d"$warmup" -H "Host: $HOST" "${URL[$name]}" >/dev/null
  done
}

# measure_matrix SCENARIO REFERENCE(yes|no) NAME...: for each connection count, the backend once (reference),
# then every round runs every proxy, the order rotated by one each round so no proxy always goes first.
measure_matrix() {
  local scenario=$1 reference=$2; shift 2
  local names=("$@") conns r i n=$#
  warm_up "${names[@]}"
  for conns in "${conns_list[@]}"; do
    if [ "$reference" = yes ]; then run_wrk "$scenario" backend "$conns" 0 "$duration"; fi
    for ((r = 0; r < rounds; r++)); do
      for ((i = 0; i < n; i++)); do
        run_wrk "$scenario" "${names[$(((i + r) % n))]}" "$conns" "$((r + 1))" "$duration"
      done
    done
  done
}

# ------------------------------------------------------------------------------------------- scenarios
# A scenario starts whatever it needs beyond the shared servers and calls measure_matrix. To add one
# (--backend-cache, TLS, WebSocket, idle connections), write scenario_<name> and append it to SCENARIOS;
# e.g. backend-cache: start_hypache hypache-cache --backend-cache; measure_matrix backend-cache no hypache-cache nginx haproxy.
SCENARIOS=(plain)
[ "$smoke" = 1 ] || SCENARIOS+=(backend-cache)

scenario_plain() { # plain HTTP/1.1 keep-alive GET / with a 3-byte body
  local reference=yes
  [ "$smoke" = 1 ] && reference=no
  measure_matrix plain "$reference" "${proxies[@]}"
}

scenario_backend-cache() { # the same requests with --backend-cache: route changes visible within 2 s
  [ -n "${WANT[hypache]:-}" ] || return 0
  start_hypache hypache-cache --backend-cache
  local others=() p
  for p in "${proxies[@]}"; do [ "$p" = hypache ] || others+=("$p"); done
  measure_matrix backend-cache no hypache-cache "${others[@]}"
}

# ------------------------------------------------------------------------------------------- main
loadavg_before=$(cut -d' ' -f1-3 /proc/loadavg)
start_redis
start_backend
if [ -n "${WANT[hypache]:-}" ]; then
  redis-cli -p "$redis_port" rpush "frontend:$HOST" id "http://127.0.0.1:$backend_port" >/dev/null
fi
proxies=()
for p in hypache nginx haproxy; do
  [ -n "${WANT[$p]:-}" ] || continue
  if [ "$p" = hypache ]; then start_hypache hypache; else "start_$p"; fi
  proxies+=("$p")
done
[ ${#proxies[@]} -gt 0 ] || die "no proxy to measure"

log "measuring: ${proxies[*]}; connections ${conns_list[*]}; $rounds round(s) of $duration; 2 cores shared by wrk, proxy and backend"
for s in "${SCENARIOS[@]}"; do
  log "scenario $s"
  "scenario_$s"
done
loadavg_after=$(cut -d' ' -f1-3 /proc/loadavg)
stop_all

report_args=(--runs "$runs" --out "$out"
  --meta "duration=$duration" --meta "rounds=$rounds" --meta "smoke=$smoke"
  --meta "cpus=$(nproc)" --meta "kernel=$(uname -r)"
  --meta "loadavg_before=$loadavg_before" --meta "loadavg_after=$loadavg_after"
  --meta "wrk=$(wrk -v 2>&1 | head -n1 | awk '{print $2}')"
  --meta "commit=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  --meta "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)")
[ -n "${bin:-}" ] && report_args+=(--meta "hypache=$("$bin" --version 2>/dev/null || echo '?')")
[ "$have_nginx" = 1 ] && report_args+=(--meta "nginx=$(nginx -v 2>&1 | sed 's/.*version: //')")
command -v haproxy >/dev/null 2>&1 && report_args+=(--meta "haproxy=$(haproxy -v | sed -n '1s/^HAProxy version \([^ ]*\).*/\1/p')")
for s in "${skipped[@]}"; do report_args+=(--skipped "$s"); done
[ -n "${WANT[hypache]:-}" ] && report_args+=(--require-hypache)
"${bench_py[@]}" report "${report_args[@]}"
