#!/usr/bin/env bash
# hypache benchmark harness: hypache, nginx and HAProxy in front of the same backends, driven by wrk and load.py.
# Usage: bash integration/bench/run.sh [--smoke] [--scenario plain,tls,...] [--duration 10s] [--rounds 3]
#          [--out results.json] [--conns 64,256] [--proxies hypache,nginx,haproxy] [--warmup 1s]
#          [--idle-conns 10000] [--stream-size 1G]
# Scenarios: plain backend-cache tls tls-resume websocket idle stream policy instructions paths mirror (default: all).
# The instructions scenario also counts a routes-file mode (--routes) beside the three Redis modes.
# Environment: HYPACHE_BIN=path runs that binary instead of building one; BENCH_CALLGRIND_DIR=dir keeps each
# callgrind count's profile there as NAME.callgrind.
# See integration/bench/README.md for what each scenario and column means.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
bench_py=(python3 "$here/bench.py")
load_py=(python3 "$here/load.py")
HOST=bench.test
ALL_SCENARIOS=(plain backend-cache tls tls-resume websocket idle stream policy instructions paths mirror)

usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; }

# ------------------------------------------------------------------------------------------- arguments
smoke=0 duration='' rounds='' out='' conns_arg='' proxies_arg='' warmup='' scenario_arg='' idle_conns='' stream_size=''
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
    --scenario|--scenarios) need_value "$@"; scenario_arg+=",$2"; shift ;;
    --scenario=*|--scenarios=*) scenario_arg+=",${1#*=}" ;;
    --idle-conns) need_value "$@"; idle_conns=$2; shift ;;
    --idle-conns=*) idle_conns=${1#*=} ;;
    --stream-size) need_value "$@"; stream_size=$2; shift ;;
    --stream-size=*) stream_size=${1#*=} ;;
    -h|--help) usage; exit 0 ;;
    *) echo "run.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
notes=()   # lines printed under the tables (and kept in the JSON)
if [ "$smoke" = 1 ]; then
  # CI mode: hypache and the backends only, one short run of every scenario, the heavy ones scaled down; fails
  # when hypache served nothing, any non-2xx, dropped an idle connection or lost a byte.
  : "${duration:=2s}" "${rounds:=1}" "${conns_arg:=16}" "${proxies_arg:=hypache}" "${warmup:=0}"
  : "${idle_conns:=1000}" "${stream_size:=64M}"
  idle_hold=1
  notes+=("smoke mode: hypache only, 1 short round")
else
  : "${duration:=10s}" "${rounds:=3}" "${conns_arg:=64,256}" "${proxies_arg:=hypache,nginx,haproxy}" "${warmup:=1s}"
  : "${idle_conns:=10000}" "${stream_size:=1G}"
  idle_hold=3   # seconds every idle connection is held open while the proxy's RSS is sampled
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
[[ $idle_conns =~ ^[1-9][0-9]*$ ]] || { echo "run.sh: --idle-conns must be a positive integer" >&2; exit 2; }
to_bytes() { # 1G, 64M, 512K, 1000: binary units
  local n=${1%[KMGkmg]}
  case $1 in
    *[Gg]) echo $(( n << 30 )) ;;
    *[Mm]) echo $(( n << 20 )) ;;
    *[Kk]) echo $(( n << 10 )) ;;
    *) echo "$n" ;;
  esac
}
[[ $stream_size =~ ^[1-9][0-9]*[KMGkmg]?$ ]] || { echo "run.sh: bad --stream-size '$stream_size' (use e.g. 1G, 64M)" >&2; exit 2; }
stream_bytes=$(to_bytes "$stream_size")

# scenarios: the default is all of them, always run in ALL_SCENARIOS' order
declare -A PICKED=()
if [ -n "$scenario_arg" ]; then
  read -ra picked <<<"${scenario_arg//,/ }"
  for p in "${picked[@]}"; do
    [[ " ${ALL_SCENARIOS[*]} " = *" $p "* ]] || { echo "run.sh: unknown scenario '$p' (known: ${ALL_SCENARIOS[*]})" >&2; exit 2; }
    PICKED[$p]=1
  done
else
  for p in "${ALL_SCENARIOS[@]}"; do PICKED[$p]=1; done
  [ "$smoke" = 1 ] && unset 'PICKED[backend-cache]'   # the same path as plain, one Redis read less
fi
SCENARIOS=()
for p in "${ALL_SCENARIOS[@]}"; do [ -z "${PICKED[$p]:-}" ] || SCENARIOS+=("$p"); done
if [ "$smoke" = 1 ]; then
  [ -z "${PICKED[idle]:-}" ] || [ "$idle_conns" -ge 10000 ] || notes+=("smoke mode: idle with $idle_conns connections, not 10000")
  [ -z "${PICKED[stream]:-}" ] || [ "$stream_bytes" -ge $((1 << 30)) ] || notes+=("smoke mode: stream with $stream_size, not 1G")
fi

log() { printf '%s\n' "--- $*"; }
die() { printf 'run.sh: %s\n' "$*" >&2; exit 1; }

# ------------------------------------------------------------------------------------------- cleanup
work=$(mktemp -d -t hypache-bench.XXXXXX)
chmod 755 "$work"   # nginx workers may run as another user; they must reach their temp dirs
started=()          # pids of every server this script started (their descendants are found at stop time)
declare -A NAME_OF=()

# stop_pids PID...: TERM each server and, after 5 s, KILL whatever is left of it and its descendants.
stop_pids() {
  local pid all=() alive deadline
  for pid in "$@"; do
    # descendants first (nginx workers), so none is orphaned if its parent has to be killed
    mapfile -t kids < <("${bench_py[@]}" descendants "$pid" 2>/dev/null || true)
    all+=("${kids[@]}" "$pid")
  done
  [ ${#all[@]} -gt 0 ] || return 0
  for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
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
  for pid in "$@"; do wait "$pid" 2>/dev/null || true; done
}

stop_all() {
  [ ${#started[@]} -gt 0 ] || return 0
  stop_pids "${started[@]}"
  started=()
}

# stop_server NAME...: stop servers a scenario started for itself, so the next one has the cores and memory.
stop_server() {
  local name pid pids=() keep=()
  for name in "$@"; do pids+=("${PID[$name]}"); done
  stop_pids "${pids[@]}"
  for pid in "${started[@]}"; do [[ " ${pids[*]} " = *" $pid "* ]] || keep+=("$pid"); done
  started=("${keep[@]}")
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
have_openssl=1   # the tls scenarios make their certificate with it
if [ -n "${PICKED[tls]:-}${PICKED[tls-resume]:-}" ]; then ensure openssl openssl || have_openssl=0; fi
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
# the idle client holds one descriptor per connection, and so does each proxy; keep 500 spare
if [ -n "${PICKED[idle]:-}" ] && [ "$(ulimit -n)" != unlimited ] && [ $((idle_conns + 500)) -gt "$(ulimit -n)" ]; then
  notes+=("idle: $idle_conns connections asked, but the open-files limit is $(ulimit -n): measured $(( $(ulimit -n) - 500 ))")
  idle_conns=$(( $(ulimit -n) - 500 ))
fi

# ------------------------------------------------------------------------------------------- servers
# Per server NAME: PID, URL (what clients connect to), LABEL (the row name in the table: instances started for one
# scenario, e.g. nginx-tls, are labelled nginx), HOST_OF (Host header, default bench.test) and HDRS_OF (more wrk
# headers, one per line). A NAME may share another's PID and URL (the policy rows all measure one hypache).
declare -A URL=() PID=() LABEL=() HOST_OF=() HDRS_OF=()
read -ra ports <<<"$("${bench_py[@]}" ports 8)"
next_port() { # sets $port; all ports are picked together so none is handed out twice
  [ ${#ports[@]} -gt 0 ] || read -ra ports <<<"$("${bench_py[@]}" ports 8)"
  port=${ports[0]}; ports=("${ports[@]:1}")
}

nginx_common() { # $1 = name, $2 = worker_connections: paths inside the work dir, nothing under /etc or /var
  cat <<EOF
daemon off;
pid $work/$1.pid;
error_log $work/$1.log warn;
events { worker_connections ${2:-8192}; }
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

route() { # route HOST URL: frontend:HOST -> URL in the bench Redis (hypache's routes; nginx and HAProxy get files)
  redis-cli -p "$redis_port" del "frontend:$1" >/dev/null
  redis-cli -p "$redis_port" rpush "frontend:$1" id "$2" >/dev/null
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

# start_load_backend NAME KIND: a load.py backend (ws-echo, stream-backend), labelled "backend" in the tables.
start_load_backend() {
  local name=$1 kind=$2
  next_port
  "${load_py[@]}" "$kind" "$port" >"$work/$name.log" 2>&1 &
  started+=($!); PID[$name]=$!; URL[$name]="http://127.0.0.1:$port/"; LABEL[$name]=backend
  wait_ready 10 $! "$name" "${bench_py[@]}" open "$port"
  log "$name ($kind) on 127.0.0.1:$port"
}

# What starts a server (a scenario can put valgrind in front) and how long it may take to answer.
launcher=()
ready_s=10

# start_hypache NAME [extra flags...]: another scenario can start a second instance with other flags.
start_hypache() {
  local name=$1; shift
  next_port
  "${launcher[@]}" "$bin" --listen "127.0.0.1:$port" --read-redis-port "$redis_port" \
    --write-redis-port "$redis_port" --access-log none --shutdown-timeout 2s "$@" >"$work/$name.log" 2>&1 &
  started+=($!); PID[$name]=$!; URL[$name]="http://127.0.0.1:$port/"; LABEL[$name]=hypache
  wait_ready $((ready_s + 5)) $! "$name" "${bench_py[@]}" probe "${URL[$name]}" "$HOST"
  log "$name on 127.0.0.1:$port ($("$bin" --version 2>/dev/null || echo '?'))"
}

# start_nginx NAME BACKEND_PORT [KIND]: nginx as a reverse proxy, one worker per core. KIND adds what a scenario
# needs and nothing else: tls (TLS termination, session cache), ws (Upgrade), stream (no body buffering, no size
# limit), idle (enough worker connections for the idle ones).
start_nginx() {
  local name=$1 upstream_port=$2 kind=${3:-plain} listen http_extra='' loc_extra='' conns=8192 top=''
  next_port
  listen="listen 127.0.0.1:$port backlog=4096;"
  case $kind in
    tls)
      listen="listen 127.0.0.1:$port ssl backlog=4096;
    ssl_certificate $work/certs/localhost.crt;
    ssl_certificate_key $work/certs/localhost.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:SSL:10m;
    ssl_session_timeout 1h;"
      loc_extra='proxy_set_header Connection "";' ;;
    ws)
      http_extra='map $http_upgrade $connection_upgrade { default upgrade; "" ""; }'
      loc_extra='proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_read_timeout 300s;' ;;
    stream)
      # uploads of any size, passed on as they arrive (not spooled to a temp file first); responses through
      # 64 KB buffers in memory only (the default 4 KB ones, or proxy_buffering off, cap nginx at a third of
      # the others' throughput here)
      loc_extra='proxy_set_header Connection "";
      client_max_body_size 0;
      client_body_buffer_size 64k;
      proxy_request_buffering off;
      proxy_buffer_size 64k;
      proxy_buffers 8 64k;
      proxy_busy_buffers_size 128k;
      proxy_max_temp_file_size 0;' ;;
    idle)
      conns=$((idle_conns + 1024)); top="worker_rlimit_nofile $((idle_conns + 2048));"
      loc_extra='proxy_set_header Connection "";' ;;
    *) loc_extra='proxy_set_header Connection "";' ;;
  esac
  [ "$kind" = single ] && top="master_process off;"   # one process, the worker itself (for callgrind)
  mkdir -p "$work/$name-tmp"
  { if [ "$kind" = single ]; then echo "worker_processes 1;"; else echo "worker_processes auto;"; fi
    [ -z "$top" ] || echo "$top"; nginx_common "$name" "$conns"
    cat <<EOF
http {
  access_log off;
  keepalive_requests 100000000;
  keepalive_timeout 120s;
$(nginx_temp_paths "$name")
  $http_extra
  upstream b {
    server 127.0.0.1:$upstream_port;
    keepalive 64;
    keepalive_requests 100000000;
  }
  server {
    $listen
    location / {
      proxy_pass http://b;
      proxy_http_version 1.1;
      proxy_set_header Host \$http_host;
      $loc_extra
    }
  }
}
EOF
  } >"$work/$name.conf"
  "${launcher[@]}" nginx -e "$work/$name.log" -p "$work" -c "$work/$name.conf" >>"$work/$name.log" 2>&1 &
  started+=($!); PID[$name]=$!; LABEL[$name]=nginx
  if [ "$kind" = tls ]; then URL[$name]="https://localhost:$port/"; else URL[$name]="http://127.0.0.1:$port/"; fi
  if [ "$kind" = ws ] || [ "$kind" = stream ]; then
    wait_ready 10 $! "$name" "${bench_py[@]}" open "$port"
  else
    wait_ready "$ready_s" $! "$name" "${bench_py[@]}" probe "${URL[$name]}" "$HOST"
  fi
  local workers=$(nproc); [ "$kind" = single ] && workers=1
  log "$name on 127.0.0.1:$port ($(nginx -v 2>&1 | sed 's/.*version: //'), $workers worker(s))"
}

# start_haproxy NAME BACKEND_PORT [KIND]: as start_nginx; HAProxy streams bodies and tunnels WebSocket by default.
start_haproxy() {
  local name=$1 upstream_port=$2 kind=${3:-plain} bind_extra='' maxconn=4096 global_extra=
  next_port
  case $kind in
    tls) bind_extra=" ssl crt $work/haproxy-tls.pem" ;;
    idle)
      maxconn=$((idle_conns + 1024))
      # HAProxy reserves two descriptors per connection and, with strict-limits (its default), refuses to start
      # when it cannot raise its limit that far; an idle client connection needs only one (the backend
      # connections come from a small pool), so let it start with a warning.
      if [ "$(ulimit -n)" != unlimited ] && [ $((2 * maxconn + 100)) -gt "$(ulimit -n)" ]; then
        global_extra="  no strict-limits"
      fi ;;
  esac
  cat >"$work/$name.cfg" <<EOF
global
  nbthread 2
  maxconn $maxconn
$global_extra
defaults
  mode http
  option http-keep-alive
  http-reuse always
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout http-keep-alive 60s
  timeout tunnel 300s
frontend f
  bind 127.0.0.1:$port$bind_extra
  default_backend b
backend b
  server s1 127.0.0.1:$upstream_port
EOF
  haproxy -c -q -f "$work/$name.cfg" >"$work/$name.log" 2>&1 || die "haproxy rejected its configuration ($name)"
  haproxy -db -f "$work/$name.cfg" >>"$work/$name.log" 2>&1 &
  started+=($!); PID[$name]=$!; LABEL[$name]=haproxy
  if [ "$kind" = tls ]; then URL[$name]="https://localhost:$port/"; else URL[$name]="http://127.0.0.1:$port/"; fi
  if [ "$kind" = ws ] || [ "$kind" = stream ]; then
    wait_ready 10 $! "$name" "${bench_py[@]}" open "$port"
  else
    wait_ready 10 $! "$name" "${bench_py[@]}" probe "${URL[$name]}" "$HOST"
  fi
  log "$name on 127.0.0.1:$port ($(haproxy -v | sed -n '1s/^HAProxy version \([^ ]*\).*/\1/p'), nbthread 2)"
}

# start_peers SUFFIX BACKEND_PORT KIND: a fresh nginx and HAProxy (those wanted) for one scenario; sets $peers.
start_peers() {
  local suffix=$1 upstream_port=$2 kind=$3
  peers=()
  if [ -n "${WANT[nginx]:-}" ]; then start_nginx "nginx-$suffix" "$upstream_port" "$kind"; peers+=("nginx-$suffix"); fi
  if [ -n "${WANT[haproxy]:-}" ]; then start_haproxy "haproxy-$suffix" "$upstream_port" "$kind"; peers+=("haproxy-$suffix"); fi
}

# ------------------------------------------------------------------------------------------- measuring
runs="$work/runs.jsonl"
: >"$runs"

# run_client LIMIT_S CMD...: a client in the background, so a signal to this script is handled at once
# (bash runs traps only between foreground commands, but does interrupt `wait`).
client_pid=''
run_client() {
  local limit=$1; shift
  timeout "$limit" "$@" 2>&1 &
  client_pid=$!
  wait "$client_pid" || true
  client_pid=''
}

wrk_args=()
wrk_args_for() { # NAME: sets wrk_args to NAME's Host and extra headers
  local h
  wrk_args=(-H "Host: ${HOST_OF[$1]:-$HOST}")
  if [ -n "${HDRS_OF[$1]:-}" ]; then
    while IFS= read -r h; do wrk_args+=(-H "$h"); done <<<"${HDRS_OF[$1]}"
  fi
}

scenario_wrk_args=()   # more wrk arguments for every run of the current scenario (tls-resume: Connection: close)

# run_wrk SCENARIO NAME CONNS ROUND DURATION: one measured wrk run against NAME.
run_wrk() {
  local scenario=$1 name=$2 conns=$3 round=$4 dur=$5
  local pid=${PID[$name]} before after alive=yes
  wrk_args_for "$name"
  before=$("${bench_py[@]}" tree "$pid")
  run_client $(( $(to_seconds "$dur") + 30 )) \
    wrk -t1 -c"$conns" -d"$dur" --latency "${wrk_args[@]}" "${scenario_wrk_args[@]}" "${URL[$name]}" >"$work/wrk.out"
  after=$("${bench_py[@]}" tree "$pid")
  [ -n "$("${bench_py[@]}" alive "$pid")" ] || alive=no
  "${bench_py[@]}" record --out "$runs" --wrk "$work/wrk.out" --scenario "$scenario" --proxy "${LABEL[$name]:-$name}" \
    --conns "$conns" --round "$round" --before "$before" --after "$after" --alive "$alive"
}

# run_load SCENARIO KIND NAME CONNS CASE ROUND LIMIT_S LOAD_PY_ARGS...: one measured load.py run against NAME.
run_load() {
  local scenario=$1 kind=$2 name=$3 conns=$4 case=$5 round=$6 limit=$7; shift 7
  local pid=${PID[$name]} before after alive=yes
  rm -f "$work/client.json"
  before=$("${bench_py[@]}" tree "$pid")
  run_client "$limit" "${load_py[@]}" "$@" --out "$work/client.json" >"$work/client.log"
  after=$("${bench_py[@]}" tree "$pid")
  [ -n "$("${bench_py[@]}" alive "$pid")" ] || alive=no
  if [ ! -s "$work/client.json" ]; then
    echo "    load.py $1 gave no result (exceeded ${limit}s or failed):" >&2
    tail -n 5 "$work/client.log" >&2
  fi
  "${bench_py[@]}" record --out "$runs" --client-json "$work/client.json" --kind "$kind" --case "$case" \
    --scenario "$scenario" --proxy "${LABEL[$name]:-$name}" --conns "$conns" --round "$round" \
    --before "$before" --after "$after" --alive "$alive"
}

warm_up() { # NAME...: an unmeasured run so pools and caches are filled before the first measurement
  [ "$warmup_s" -gt 0 ] || return 0
  local name max=0 c
  for c in "${conns_list[@]}"; do [ "$c" -gt "$max" ] && max=$c; done
  for name in "$@"; do
    wrk_args_for "$name"
    run_client $((warmup_s + 30)) wrk -t1 -c"$max" -d"$warmup" "${wrk_args[@]}" "${scenario_wrk_args[@]}" \
      "${URL[$name]}" >/dev/null
  done
}

# measure_matrix SCENARIO REFERENCE(NAME|no) NAME...: for each connection count, the backend once (reference),
# then every round runs every proxy, the order rotated by one each round so no proxy always goes first.
measure_matrix() {
  local scenario=$1 reference=$2; shift 2
  local names=("$@") conns r i n=$#
  warm_up "${names[@]}"
  for conns in "${conns_list[@]}"; do
    if [ "$reference" != no ]; then run_wrk "$scenario" "$reference" "$conns" 0 "$duration"; fi
    for ((r = 0; r < rounds; r++)); do
      for ((i = 0; i < n; i++)); do
        run_wrk "$scenario" "${names[$(((i + r) % n))]}" "$conns" "$((r + 1))" "$duration"
      done
    done
  done
}

# ------------------------------------------------------------------------------------------- scenarios
# A scenario starts whatever it needs beyond the shared servers (redis, the nginx backend, hypache, nginx and
# HAProxy in front of it), measures, and stops what it started. To add one, write scenario_<name> and add the
# name to ALL_SCENARIOS.

reference_or_no() { # the backend measured directly once per connection count, except in smoke mode
  if [ "$smoke" = 1 ]; then echo no; else echo "$1"; fi
}

scenario_plain() { # plain HTTP/1.1 keep-alive GET / with a 3-byte body
  measure_matrix plain "$(reference_or_no backend)" "${proxies[@]}"
}

# The same requests with --backend-cache (route changes visible within 2 s) and with --backend-cache-events
# (visible as soon as Redis's keyspace notification arrives; no request reads Redis).
scenario_backend-cache() {
  [ -n "${WANT[hypache]:-}" ] || return 0
  redis-cli -p "$redis_port" config set notify-keyspace-events Kglshx >/dev/null
  start_hypache hypache-cache --backend-cache
  LABEL[hypache-cache]=hypache-cache   # its own row name, as in results from before the other scenarios
  start_hypache hypache-events --backend-cache-events
  LABEL[hypache-events]=hypache-events
  local others=() p
  for p in "${proxies[@]}"; do [ "$p" = hypache ] || others+=("$p"); done
  measure_matrix backend-cache no hypache-cache hypache-events "${others[@]}"
  stop_server hypache-cache hypache-events
  redis-cli -p "$redis_port" config set notify-keyspace-events "" >/dev/null
}

# Instructions per request, counted by callgrind in user space. Unlike req/s on a shared 2-core machine, the same
# binary, flags and request give the same count run after run, so this is the figure that shows what a change did
# to the hot path. Each proxy runs one worker (thread or process) under valgrind; wrk warms it up, the counters
# are zeroed, and the count covers instr_seconds of 4 keep-alive connections.
instr_seconds=5
callgrind_count() { # NAME: prints "<requests> <instructions>"
  local name=$1 pid=${PID[$1]} out dump deadline
  wrk_args_for "$name"
  run_client 60 wrk -t1 -c4 -d2s "${wrk_args[@]}" "${URL[$name]}" >/dev/null
  # an instance counted before has dumped already: this count is its next dump file
  local n; n=$(find "$work" -maxdepth 1 -name "cg.$pid.[0-9]*" | wc -l)
  callgrind_control -z "$pid" >/dev/null 2>&1
  out=$(run_client $((instr_seconds + 60)) wrk -t1 -c4 -d"${instr_seconds}s" "${wrk_args[@]}" "${URL[$name]}")
  callgrind_control -d "$pid" >/dev/null 2>&1
  deadline=$((SECONDS + 30))
  dump="$work/cg.$pid.$((n + 1))"
  until [ -s "$dump" ] && grep -q '^totals:' "$dump"; do
    [ $SECONDS -lt $deadline ] || { echo "0 0"; return; }
    sleep 0.1
  done
  # Kept for reading with callgrind_annotate (docs/benchmark.md#where-a-requests-instructions-go).
  [ -z "${BENCH_CALLGRIND_DIR:-}" ] || cp "$dump" "$BENCH_CALLGRIND_DIR/$name.callgrind"
  echo "$(awk '/requests in/ {print $1}' <<<"$out") $(awk '/^totals:/ {print $2}' "$dump")"
}

scenario_instructions() {
  if ! ensure valgrind valgrind || ! command -v callgrind_control >/dev/null 2>&1; then
    skipped+=("instructions=valgrind is not installed"); return 0
  fi
  local names=() rows=() row name counts requests total per nginx_per=''
  [ "$smoke" = 0 ] || instr_seconds=2
  launcher=(valgrind --tool=callgrind --callgrind-out-file="$work/cg.%p")
  ready_s=60
  if [ -n "${WANT[hypache]:-}" ]; then
    start_hypache cg-default --workers 1
    start_hypache cg-cache --workers 1 --backend-cache
    redis-cli -p "$redis_port" config set notify-keyspace-events Kglshx >/dev/null
    start_hypache cg-events --workers 1 --backend-cache-events
    # The routes file: the same route, from the in-process table instead of Redis.
    printf '[frontends."%s"]\nbackends = ["http://127.0.0.1:%s"]\n' "$HOST" "$backend_port" >"$work/routes.toml"
    start_hypache cg-file --workers 1 --routes "$work/routes.toml"
    names+=(cg-default cg-cache cg-events cg-file)
  fi
  if [ "$smoke" = 0 ] && [ "$have_nginx" = 1 ] && [ -n "${WANT[nginx]:-}" ]; then
    start_nginx cg-nginx "$backend_port" single
    names+=(cg-nginx)
  fi
  launcher=(); ready_s=10
  printf '\nscenario: instructions   (callgrind, user space, one worker, 4 connections, %ss)\n' "$instr_seconds"
  printf '%-16s %10s %14s %10s\n' proxy requests "instr/request" "vs nginx"
  for name in "${names[@]}"; do
    counts=$(callgrind_count "$name"); requests=${counts% *}; total=${counts#* }
    if [ "${requests:-0}" -gt 0 ] && [ "${total:-0}" -gt 0 ]; then per=$((total / requests)); else per=0; fi
    [ "$per" -gt 0 ] || die "instructions: no count for $name (see $work/$name.log)"
    [ "$name" = cg-nginx ] && nginx_per=$per
    rows+=("$name $requests $per")
  done
  for row in "${rows[@]}"; do
    read -r name requests per <<<"$row"
    local label=${name#cg-}; [ "$label" = nginx ] || label="hypache-$label"
    local ratio=''; [ -n "$nginx_per" ] && ratio=$(awk -v a="$per" -v b="$nginx_per" 'BEGIN {printf "%.2f", a / b}')
    printf '%-16s %10s %14s %10s\n' "$label" "$requests" "$per" "$ratio"
    notes+=("instructions: $label $per per request (callgrind, user space, one worker)${ratio:+, ${ratio}x nginx}")
  done
  redis-cli -p "$redis_port" config set notify-keyspace-events "" >/dev/null
  stop_server "${names[@]}"
}

# Path frontends' cost: instructions per request (callgrind, as above) of a host with three path frontends,
# asked for a path under the deepest one, against a host without path frontends asked for the same path, in the
# default mode and with --backend-cache. Both hosts share one instance per mode, so the path index is the same.
scenario_paths() {
  if ! ensure valgrind valgrind || ! command -v callgrind_control >/dev/null 2>&1; then
    skipped+=("paths=valgrind is not installed"); return 0
  fi
  [ -n "${WANT[hypache]:-}" ] || { notes+=("paths skipped: it measures hypache only"); return 0; }
  local b="http://127.0.0.1:$backend_port" mode name counts requests total per rows=() base=''
  [ "$smoke" = 0 ] || instr_seconds=2
  route "plain.$HOST" "$b"
  for key in "paths.$HOST" "paths.$HOST/api" "paths.$HOST/api/v1" "paths.$HOST/static"; do route "$key" "$b"; done
  launcher=(valgrind --tool=callgrind --callgrind-out-file="$work/cg.%p")
  ready_s=60
  start_hypache cg-paths-default --workers 1
  start_hypache cg-paths-cache --workers 1 --backend-cache
  launcher=(); ready_s=10
  printf '\nscenario: paths   (callgrind, user space, one worker, 4 connections, %ss, GET /api/v1/x)\n' "$instr_seconds"
  printf '%-28s %10s %14s %10s\n' proxy requests "instr/request" "vs plain"
  for mode in default cache; do
    base=''
    for host in plain paths; do
      name=cg-$host-$mode
      PID[$name]=${PID[cg-paths-$mode]}; URL[$name]="${URL[cg-paths-$mode]}api/v1/x"; HOST_OF[$name]="$host.$HOST"
      # one dump per instance and count: the second count of an instance reads its second dump file
      counts=$(callgrind_count "$name"); requests=${counts% *}; total=${counts#* }
      if [ "${requests:-0}" -gt 0 ] && [ "${total:-0}" -gt 0 ]; then per=$((total / requests)); else per=0; fi
      [ "$per" -gt 0 ] || die "paths: no count for $name (see $work/cg-paths-$mode.log)"
      [ -n "$base" ] || base=$per
      local ratio; ratio=$(awk -v a="$per" -v b="$base" 'BEGIN {printf "%.3f", a / b}')
      printf '%-28s %10s %14s %10s\n' "hypache-$mode $host.$HOST" "$requests" "$per" "$ratio"
      notes+=("paths: hypache-$mode $host.$HOST/api/v1/x $per instructions per request (${ratio}x the host without path frontends)")
    done
  done
  stop_server cg-paths-default cg-paths-cache
}

# Mirroring's cost. Instructions per request (callgrind, as above, --backend-cache) of a host mirrored at 100% to
# one shadow (the same backend) against a host without a mirror, on one instance; then wrk's p99 at 64
# connections for a host without a mirror and one mirrored to a shadow that accepts and never answers.
scenario_mirror() {
  if ! ensure valgrind valgrind || ! command -v callgrind_control >/dev/null 2>&1; then
    skipped+=("mirror=valgrind is not installed"); return 0
  fi
  [ -n "${WANT[hypache]:-}" ] || { notes+=("mirror skipped: it measures hypache only"); return 0; }
  local b="http://127.0.0.1:$backend_port" host name counts requests total per base='' ratio stall_port out p99
  [ "$smoke" = 0 ] || instr_seconds=2
  route "plain.$HOST" "$b"; route "mirrored.$HOST" "$b"; route "stalled.$HOST" "$b"
  redis-cli -p "$redis_port" hset "mirror:mirrored.$HOST" to:shadow "$b" >/dev/null
  next_port; stall_port=$port
  "${bench_py[@]}" stall "$stall_port" >"$work/stall.log" 2>&1 &
  started+=($!)
  wait_ready 10 $! stall "${bench_py[@]}" open "$stall_port"
  redis-cli -p "$redis_port" hset "mirror:stalled.$HOST" to:stalled "http://127.0.0.1:$stall_port" timeout 30s >/dev/null
  launcher=(valgrind --tool=callgrind --callgrind-out-file="$work/cg.%p")
  ready_s=60
  start_hypache cg-mirror --workers 1 --backend-cache
  launcher=(); ready_s=10
  printf '\nscenario: mirror   (callgrind, user space, one worker, --backend-cache, 4 connections, %ss)\n' "$instr_seconds"
  printf '%-32s %10s %14s %10s\n' proxy requests "instr/request" "vs plain"
  for host in plain mirrored; do
    name=cg-mirror-$host
    PID[$name]=${PID[cg-mirror]}; URL[$name]=${URL[cg-mirror]}; HOST_OF[$name]="$host.$HOST"
    counts=$(callgrind_count "$name"); requests=${counts% *}; total=${counts#* }
    if [ "${requests:-0}" -gt 0 ] && [ "${total:-0}" -gt 0 ]; then per=$((total / requests)); else per=0; fi
    [ "$per" -gt 0 ] || die "mirror: no count for $name (see $work/cg-mirror.log)"
    [ -n "$base" ] || base=$per
    ratio=$(awk -v a="$per" -v b="$base" 'BEGIN {printf "%.3f", a / b}')
    printf '%-32s %10s %14s %10s\n' "hypache-cache $host.$HOST" "$requests" "$per" "$ratio"
    notes+=("mirror: hypache-cache $host.$HOST $per instructions per request (${ratio}x without a mirror)")
  done
  stop_server cg-mirror
  start_hypache mirror-p99 --backend-cache
  printf '\nscenario: mirror   (wrk, 64 connections, %s, --backend-cache: p99 with a stalled shadow)\n' "${duration:-10s}"
  for host in plain stalled; do
    out=$(run_client 120 wrk -t1 -c64 -d"${duration:-10s}" --latency -H "Host: $host.$HOST" "${URL[mirror-p99]}")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    printf '%-32s p99 %s, %s\n' "hypache-cache $host.$HOST" "$p99" "$(awk '/Requests\/sec/ {print $2 " req/s"}' <<<"$out")"
    notes+=("mirror: hypache-cache $host.$HOST p99 $p99 at 64 connections (stalled shadow: $host)")
  done
  stop_server mirror-p99
}

# One self-signed ECDSA P-256 certificate for "localhost", shared by every TLS terminator. wrk sends the URL's host
# as SNI, so the URL says localhost (127.0.0.1 in /etc/hosts) and the Host header still says bench.test.
tls_started=0
start_tls_servers() {
  [ "$tls_started" = 0 ] || return 0
  tls_started=1
  mkdir -p "$work/certs"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost" -keyout "$work/certs/localhost.key" -out "$work/certs/localhost.crt" \
    >"$work/openssl.log" 2>&1 || die "openssl could not make the certificate (see openssl.log)"
  cat "$work/certs/localhost.crt" "$work/certs/localhost.key" >"$work/haproxy-tls.pem"
  tls_names=()
  if [ -n "${WANT[hypache]:-}" ]; then
    next_port; local tls_port=$port
    start_hypache hypache-tls --tls-listen "127.0.0.1:$tls_port" --load-certificates-from "$work/certs"
    URL[hypache-tls]="https://localhost:$tls_port/"
    wait_ready 15 "${PID[hypache-tls]}" hypache-tls "${bench_py[@]}" probe "${URL[hypache-tls]}" "$HOST"
    tls_names+=(hypache-tls)
  fi
  start_peers tls "$backend_port" tls
  tls_names+=("${peers[@]}")
  local name
  for name in "${tls_names[@]}"; do
    log "$name TLS: $("${bench_py[@]}" tls-info "${URL[$name]}" "$HOST")"
  done
}

scenario_tls() { # HTTP/1.1 keep-alive over TLS: handshakes only at connect, then the record layer
  if [ "$have_openssl" = 0 ]; then notes+=("tls skipped: openssl is missing and could not be installed"); return 0; fi
  start_tls_servers
  measure_matrix tls no "${tls_names[@]}"
}

scenario_tls-resume() { # Connection: close over TLS: wrk reconnects for every request and resumes its session
  if [ "$have_openssl" = 0 ]; then notes+=("tls-resume skipped: openssl is missing"); return 0; fi
  start_tls_servers
  scenario_wrk_args=(-H "Connection: close")
  measure_matrix tls-resume no "${tls_names[@]}"
  scenario_wrk_args=()
}

scenario_websocket() { # WebSocket echo through each proxy: one 64-byte message in flight per connection
  local names=() conns r i n name dur=$duration_s
  start_load_backend ws-backend ws-echo
  route ws.test "${URL[ws-backend]%/}"
  if [ -n "${WANT[hypache]:-}" ]; then names+=(hypache); fi
  start_peers ws "$(port_of ws-backend)" ws
  names+=("${peers[@]}")
  n=${#names[@]}
  for conns in "${conns_list[@]}"; do
    if [ "$(reference_or_no ws-backend)" != no ]; then
      run_load websocket ws ws-backend "$conns" "$conns" 0 $((dur + 60)) \
        ws-client "ws://127.0.0.1:$(port_of ws-backend)/" ws.test --conns "$conns" --duration "$dur"
    fi
    for ((r = 0; r < rounds; r++)); do
      for ((i = 0; i < n; i++)); do
        name=${names[$(((i + r) % n))]}
        run_load websocket ws "$name" "$conns" "$conns" "$((r + 1))" $((dur + 60)) \
          ws-client "ws://127.0.0.1:$(port_of "$name")/" ws.test --conns "$conns" --duration "$dur"
      done
    done
  done
  stop_server "${peers[@]}" ws-backend
}

port_of() { # NAME: the port of NAME's URL
  local u=${URL[$1]%/}
  echo "${u##*:}"
}

scenario_idle() { # idle_conns keep-alive connections, each after one request, held by a fresh instance of each proxy
  local names=() name
  if [ -n "${WANT[hypache]:-}" ]; then start_hypache hypache-idle; names+=(hypache-idle); fi
  start_peers idle "$backend_port" idle
  names+=("${peers[@]}")
  for name in "${names[@]}"; do
    run_load idle idle "$name" "$idle_conns" "$idle_conns" 1 300 \
      idle-client "${URL[$name]}" "$HOST" --conns "$idle_conns" --hold "$idle_hold" --watch-pid "${PID[$name]}"
    stop_server "$name"   # its memory and descriptors go back before the next one is measured
  done
}

scenario_stream() { # one stream_bytes upload and one download per proxy and round, RSS sampled meanwhile
  local names=() dir r i n name
  start_load_backend stream-backend stream-backend
  route stream.test "${URL[stream-backend]%/}"
  if [ -n "${WANT[hypache]:-}" ]; then start_hypache hypache-stream; names+=(hypache-stream); fi
  start_peers stream "$(port_of stream-backend)" stream
  names+=("${peers[@]}")
  n=${#names[@]}
  local limit=$((stream_bytes / (1 << 20) + 120))   # down to 1 MB/s before the run is called failed
  for dir in upload download; do
    if [ "$(reference_or_no stream-backend)" != no ]; then
      run_load stream stream stream-backend 1 "$dir" 0 "$limit" stream-client "${URL[stream-backend]}" stream.test \
        --direction "$dir" --bytes "$stream_bytes" --watch-pid "${PID[stream-backend]}"
    fi
    for ((r = 0; r < rounds; r++)); do
      for ((i = 0; i < n; i++)); do
        name=${names[$(((i + r) % n))]}
        run_load stream stream "$name" 1 "$dir" "$((r + 1))" "$limit" stream-client "${URL[$name]}" stream.test \
          --direction "$dir" --bytes "$stream_bytes" --watch-pid "${PID[$name]}"
      done
    done
  done
  stop_server "${names[@]}" stream-backend
}

redis_script_calls() { # EVAL + EVALSHA calls so far on the bench Redis
  redis-cli -p "$redis_port" info commandstats | tr -d '\r' \
    | awk -F'[=,:]' '/^cmdstat_eval(sha)?:/ { n += $3 } END { print n + 0 }'
}

# hypache alone (the shared instance, reading Redis on every request), three frontends on the same backend:
# none, a guard (hmac-sha256, one pre-signed request replayed: a day's time_window and nonce_ttl 0, so no nonce
# is spent), a global rate limit that never limits (one EVALSHA on the write Redis per request).
scenario_policy() {
  [ -n "${WANT[hypache]:-}" ] || { notes+=("policy skipped: it measures hypache only"); return 0; }
  local r secret ts headers status
  for h in open guard limit; do route "$h.$HOST" "http://127.0.0.1:$backend_port"; done
  secret=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
  ts=$(date +%s)
  redis-cli -p "$redis_port" hset "guard:guard.$HOST" mode hmac-sha256 secret "$secret" time_window 86400 \
    nonce_ttl 0 >/dev/null
  redis-cli -p "$redis_port" hset "ratelimit:limit.$HOST" rate 1000000000 period 1s burst 1000000000 \
    scope global >/dev/null
  headers=$("${bench_py[@]}" guard-sign --secret "$secret" --host "guard.$HOST" --timestamp "$ts" \
    --nonce "bench$ts")
  for r in none guard ratelimit; do PID[policy-$r]=${PID[hypache]}; URL[policy-$r]=${URL[hypache]}; done
  LABEL[policy-none]=hypache;             HOST_OF[policy-none]="open.$HOST"
  LABEL[policy-guard]=hypache+guard;      HOST_OF[policy-guard]="guard.$HOST"; HDRS_OF[policy-guard]=$headers
  LABEL[policy-ratelimit]=hypache+ratelimit; HOST_OF[policy-ratelimit]="limit.$HOST"
  # the policies must be in force, or the rows measure nothing: unsigned is refused, signed passes, and the
  # global limit leaves its state in Redis
  status=$("${bench_py[@]}" status "${URL[hypache]}" "guard.$HOST")
  [ "$status" != 200 ] || die "policy: guard:guard.$HOST did not refuse an unsigned request"
  local hargs=()
  while IFS= read -r h; do hargs+=(-H "$h"); done <<<"$headers"
  "${bench_py[@]}" probe "${URL[hypache]}" "guard.$HOST" "${hargs[@]}" \
    || die "policy: the signed request was refused ($("${bench_py[@]}" status "${URL[hypache]}" "guard.$HOST" "${hargs[@]}"))"
  # the state key expires as soon as the bucket is full again (at once, with this rate): count the scripts run
  local scripts_before scripts_after
  scripts_before=$(redis_script_calls)
  "${bench_py[@]}" probe "${URL[hypache]}" "limit.$HOST" || die "policy: limit.$HOST did not answer 200"
  scripts_after=$(redis_script_calls)
  [ "$scripts_after" -gt "$scripts_before" ] \
    || die "policy: a request to limit.$HOST ran no script on Redis: the global rate limit is not applied"
  log "policy: unsigned guard request -> $status, signed -> 200, rate-limited request -> one Redis script"
  measure_matrix policy no policy-none policy-guard policy-ratelimit
}

# ------------------------------------------------------------------------------------------- main
loadavg_before=$(cut -d' ' -f1-3 /proc/loadavg)
start_redis
start_backend
route "$HOST" "http://127.0.0.1:$backend_port"
proxies=()
for p in hypache nginx haproxy; do
  [ -n "${WANT[$p]:-}" ] || continue
  if [ "$p" = hypache ]; then start_hypache hypache; else start_"$p" "$p" "$backend_port"; fi
  proxies+=("$p")
done
[ ${#proxies[@]} -gt 0 ] || die "no proxy to measure"

log "measuring: ${proxies[*]}; scenarios ${SCENARIOS[*]}; connections ${conns_list[*]}; $rounds round(s) of $duration;" \
  "2 cores shared by the client, proxy and backend"
for s in "${SCENARIOS[@]}"; do
  log "scenario $s"
  "scenario_$s"
done
loadavg_after=$(cut -d' ' -f1-3 /proc/loadavg)
stop_all

report_args=(--runs "$runs" --out "$out"
  --meta "duration=$duration" --meta "rounds=$rounds" --meta "smoke=$smoke"
  --meta "scenarios=${SCENARIOS[*]}" --meta "idle_conns=$idle_conns" --meta "stream_bytes=$stream_bytes"
  --meta "cpus=$(nproc)" --meta "kernel=$(uname -r)"
  --meta "loadavg_before=$loadavg_before" --meta "loadavg_after=$loadavg_after"
  --meta "wrk=$(wrk -v 2>&1 | head -n1 | awk '{print $2}')"
  --meta "python=$(python3 -c 'import platform; print(platform.python_version())')"
  --meta "commit=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  --meta "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)")
[ -n "${bin:-}" ] && report_args+=(--meta "hypache=$("$bin" --version 2>/dev/null || echo '?')")
[ "$have_nginx" = 1 ] && report_args+=(--meta "nginx=$(nginx -v 2>&1 | sed 's/.*version: //')")
command -v haproxy >/dev/null 2>&1 && report_args+=(--meta "haproxy=$(haproxy -v | sed -n '1s/^HAProxy version \([^ ]*\).*/\1/p')")
command -v openssl >/dev/null 2>&1 && report_args+=(--meta "openssl=$(openssl version)")
for s in "${skipped[@]}"; do report_args+=(--skipped "$s"); done
for s in "${notes[@]}"; do report_args+=(--note "$s"); done
# (the instructions scenario prints its own table: alone, it records no wrk run)
wrk_scenarios=" ${SCENARIOS[*]} "
for s in instructions paths mirror; do wrk_scenarios=${wrk_scenarios// $s / }; done
[ -n "${WANT[hypache]:-}" ] && [ -n "${wrk_scenarios// /}" ] && report_args+=(--require-hypache)
report_args+=(--scenario-order "${ALL_SCENARIOS[@]}")
"${bench_py[@]}" report "${report_args[@]}"
