#!/usr/bin/env bash
# make cluster: a roomchat cluster on this machine, on loopback only. Builds
# roomchatd, starts redis-server, three roomchatd nodes with -redis and
# nginx with docs/deploy/nginx-roomchat.conf in front of them, all in a
# temporary directory, and prints the URL to open. Ctrl-C (SIGINT) or
# SIGTERM stops everything it started, by PID, and removes the directory.
#
# Ports: nginx on CLUSTER_PORT (8080), the nodes on the next three, Redis on
# the one after (8081-8083, 8084): CLUSTER_PORT=9000 make cluster moves them.
# ROOMCHAT_* variables in the environment reach the nodes (-addr and -redis
# are set here).
set -eu
cd "$(dirname "$0")/.."

port=${CLUSTER_PORT:-8080}
nodes=3
redis_port=$((port + nodes + 1))
node_ports=()
for i in $(seq 1 "$nodes"); do node_ports+=($((port + i))); done

nginx_bin=$(command -v nginx || true)
[ -n "$nginx_bin" ] || [ ! -x /usr/sbin/nginx ] || nginx_bin=/usr/sbin/nginx
redis_bin=$(command -v redis-server || true)
if [ -z "$nginx_bin" ] || [ -z "$redis_bin" ]; then
  echo "cluster: needs redis-server and nginx; make deps installs them (Debian: apt-get install redis-server nginx)" >&2
  exit 1
fi

# probe HOST:PORT REQUEST prints the first line of the answer to REQUEST,
# or fails if nothing listens or nothing comes back within 2 s.
probe() {
  local line
  { printf '%b' "$2" >&3 && IFS= read -r -t 2 line <&3; } 2>/dev/null 3<>"/dev/tcp/${1%:*}/${1##*:}" || return 1
  printf '%s\n' "${line%$'\r'}"
}
# http_status HOST:PORT PATH prints the HTTP status of GET PATH.
http_status() {
  local line
  line=$(probe "$1" "GET $2 HTTP/1.0\r\nHost: $1\r\n\r\n") || return 1
  set -- $line
  printf '%s\n' "${2:-}"
}

for p in "$port" "${node_ports[@]}" "$redis_port"; do
  if { : 3<>"/dev/tcp/127.0.0.1/$p"; } 2>/dev/null; then
    echo "cluster: port $p on 127.0.0.1 is in use; choose others with CLUSTER_PORT=9000 make cluster" >&2
    exit 1
  fi
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/roomchat-cluster.XXXXXX")
pids=()  # every process started, in start order
names=() # what each is, for messages
gone=()  # 1 once reported as exited

# stop PID NAME: SIGTERM, then up to 15 s (roomchatd's shutdown takes at
# most -shutdown-timeout, 10 s), then SIGKILL.
stop() {
  kill -TERM "$1" 2>/dev/null || { wait "$1" 2>/dev/null || true; return 0; }
  for _ in $(seq 150); do
    kill -0 "$1" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$1" 2>/dev/null; then
    echo "cluster: $2 (pid $1) still running 15 s after SIGTERM; killing it" >&2
    kill -KILL "$1" 2>/dev/null || true
  fi
  wait "$1" 2>/dev/null || true
}

cleanup() {
  trap '' INT TERM
  trap - EXIT
  echo "cluster: stopping" >&2
  # Last started first: nginx, then the nodes together, then Redis, which
  # writes its append-only file on SIGTERM.
  local i
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    case ${names[i]} in node*) kill -TERM "${pids[i]}" 2>/dev/null || true ;; esac
  done
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    stop "${pids[i]}" "${names[i]}"
  done
  rm -rf "$tmp"
  echo "cluster: stopped" >&2
}
trap cleanup EXIT
trap 'exit 0' INT TERM

# fail MESSAGE LOG: says what failed, shows the end of its log, and exits
# (the EXIT trap stops what was started).
fail() {
  echo "cluster: $1" >&2
  if [ -s "${2:-}" ]; then
    echo "--- last lines of $2:" >&2
    tail -n 20 "$2" >&2
  fi
  exit 1
}

# await WHAT LOG PID SECONDS CHECK...: runs CHECK every 0.1 s until it
# succeeds, failing after SECONDS or when PID has exited.
await() {
  local what=$1 log=$2 pid=$3 secs=$4
  shift 4
  for _ in $(seq $((secs * 10))); do
    if "$@"; then return 0; fi
    kill -0 "$pid" 2>/dev/null || fail "$what exited while starting" "$log"
    sleep 0.1
  done
  fail "$what did not come up within $secs s" "$log"
}

echo "cluster: building roomchatd" >&2
go build -o "$tmp/roomchatd" ./cmd/roomchatd

mkdir -p "$tmp/redis"
# appendonly + everysec: an acked message survives a crash of roomchatd
# and of Redis, except the last second's on a Redis crash; noeviction:
# Redis refuses writes when full instead of dropping rooms
# (docs/operations.md, "Cluster").
"$redis_bin" --bind 127.0.0.1 --port "$redis_port" --dir "$tmp/redis" \
  --appendonly yes --appendfsync everysec --save '' \
  --maxmemory-policy noeviction --daemonize no \
  --logfile "$tmp/redis/redis.log" >/dev/null 2>&1 &
pids+=($!) names+=(redis) gone+=(0)
redis_pid=$!
redis_up() { [ "$(probe "127.0.0.1:$redis_port" 'PING\r\n')" = +PONG ]; }
await "redis-server" "$tmp/redis/redis.log" "$redis_pid" 10 redis_up

for i in $(seq 1 "$nodes"); do
  p=${node_ports[i - 1]}
  "$tmp/roomchatd" -addr "127.0.0.1:$p" \
    -redis "redis://127.0.0.1:$redis_port" -trust-proxy 127.0.0.1/32 >/dev/null 2>"$tmp/node$i.log" &
  pids+=($!) names+=("node$i") gone+=(0)
done
ready() { [ "$(http_status "127.0.0.1:$1" /readyz)" = 200 ]; }
for i in $(seq 1 "$nodes"); do
  p=${node_ports[i - 1]}
  # A node waits up to 10 s for Redis pub/sub before it listens.
  await "node$i (127.0.0.1:$p)" "$tmp/node$i.log" "${pids[i]}" 20 ready "$p"
done

mkdir -p "$tmp/nginx/conf" "$tmp/nginx/logs" "$tmp/nginx/temp"
cp docs/deploy/nginx-local.conf "$tmp/nginx/conf/nginx.conf"
# Fill in the placeholders, on lines that are not comments: @LISTEN@,
# @SERVER_NAME@ (the address clients use as Host: other names are dropped),
# @ACCESS_LOG@, and the @NODE@ line once per node.
awk -v listen="127.0.0.1:$port" -v nodes="${node_ports[*]}" '
  BEGIN { n = split(nodes, p, " ") }
  /^[ \t]*#/ { print; next }
  /@NODE@/ { for (i = 1; i <= n; i++) { l = $0; gsub(/@NODE@/, "127.0.0.1:" p[i], l); print l }; next }
  { gsub(/@LISTEN@/, listen); gsub(/@SERVER_NAME@/, "127.0.0.1"); gsub(/@ACCESS_LOG@/, "logs/access.log"); print }
' docs/deploy/nginx-roomchat.conf >"$tmp/nginx/conf/roomchat.conf"
nginx_args=(-p "$tmp/nginx/" -c conf/nginx.conf -e "$tmp/nginx/logs/error.log"
  -g "daemon off; pid $tmp/nginx/nginx.pid;")
if ! out=$("$nginx_bin" -t "${nginx_args[@]}" 2>&1); then
  fail "nginx -t refuses the configuration:
$out"
fi
"$nginx_bin" "${nginx_args[@]}" >/dev/null 2>&1 &
pids+=($!) names+=(nginx) gone+=(0)
nginx_pid=$!
lb_up() { [ "$(http_status "127.0.0.1:$port" /healthz)" = 200 ]; }
await "nginx" "$tmp/nginx/logs/error.log" "$nginx_pid" 10 lb_up

cat >&2 <<EOF

roomchat cluster: open http://127.0.0.1:$port/

  nginx   127.0.0.1:$port (pid $nginx_pid)    -> the nodes, least connections first
$(for i in $(seq 1 "$nodes"); do echo "  node$i   127.0.0.1:${node_ports[i - 1]} (pid ${pids[i]})"; done)
  redis   127.0.0.1:$redis_port (pid $redis_pid)
  logs    $tmp/node*.log, $tmp/nginx/logs/, $tmp/redis/redis.log

Try it: two browsers in one room; kill -9 a node's pid and both keep
chatting after a reconnect; kill -STOP $redis_pid (Redis unreachable) and
sending shows an error; kill -CONT $redis_pid and chat resumes by itself.
Ctrl-C stops everything and removes $tmp.
EOF

# Wait for Ctrl-C. A node that exits (kill -9 is part of trying it) is
# reported and the rest go on; without Redis or nginx there is no cluster.
while :; do
  wait -n 2>/dev/null || true # 2>: without bash's "Killed" notice
  for i in "${!pids[@]}"; do
    if [ "${gone[i]}" = 0 ] && ! kill -0 "${pids[i]}" 2>/dev/null; then
      gone[i]=1
      case ${names[i]} in
        node*) echo "cluster: ${names[i]} (pid ${pids[i]}) exited; the others serve its clients" >&2 ;;
        *) fail "${names[i]} (pid ${pids[i]}) exited" ;;
      esac
    fi
  done
done
