# Shell helpers shared by scripts/bench.sh and scripts/bench-cluster.sh
# (sourced, not run).

# listens PID PORT reports whether process PID holds a socket listening on
# TCP port PORT (from /proc/net/tcp and /proc/PID/fd; no ss or lsof). It
# tells our server from another process that took the port meanwhile.
listens() {
  local inode
  for inode in $(awk -v p="$(printf ':%04X' "$2")" \
    '$4 == "0A" && substr($2, length($2) - 4) == p { print $10 }' /proc/net/tcp); do
    ls -l "/proc/$1/fd" 2>/dev/null | grep -qF "socket:[$inode]" && return 0
  done
  return 1
}

# bench_tmp makes $tmp, a temporary directory, and $pids, the servers the
# script starts; when the script exits, each of them is stopped and
# waited for and $tmp is removed.
bench_tmp() {
  tmp=$(mktemp -d)
  pids=()
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM
}

bench_cleanup() {
  for p in "${pids[@]}"; do
    kill "$p" 2>/dev/null || true
  done
  for p in "${pids[@]}"; do
    wait "$p" 2>/dev/null || true
  done
  rm -rf "$tmp"
}

# free_port prints a TCP port on 127.0.0.1 on which nothing listens now.
# It picks from 20000-29999: below Linux's ephemeral range (32768-60999),
# so neither the generator's outgoing connections nor a server or test
# elsewhere that listens on port 0 is handed it by the kernel.
free_port() {
  local p
  for _ in $(seq 100); do
    p=$((20000 + RANDOM % 10000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"
      return 0
    fi
  done
  echo "${0##*/}: no free port on 127.0.0.1 in 20000-29999 after 100 tries" >&2
  return 1
}

# want ITEM reports whether ITEM is in $only (BENCH_ONLY).
want() { case " $only " in *" $1 "*) return 0 ;; esac; return 1; }

# The functions below are bench.sh's and bench-ab.sh's: they use $tmp and
# $pids (bench_tmp), $txt and $out (the results' text and JSON-lines
# files) and $bench (the roomchat-bench binary).

# healthy ADDR reports whether http://ADDR/healthz answers 200 (roomchatd
# and the relay both serve it), waiting at most 1 s for the answer. It
# speaks HTTP through bash's /dev/tcp, so it needs no curl.
healthy() {
  (
    exec 3<>"/dev/tcp/${1%:*}/${1##*:}" || exit 1
    printf 'GET /healthz HTTP/1.0\r\nHost: %s\r\n\r\n' "$1" >&3
    IFS= read -r -t 1 status <&3 || exit 1
    case $status in "HTTP/1."[01]" 200 "*) exit 0 ;; esac
    exit 1
  ) 2>/dev/null
}

# start NAME CMD... starts a server on CPU 0 with GOMAXPROCS=1, told by
# -addr to listen on a free loopback port, and sets $addr and $pid once it
# listens there and http://$addr/healthz answers. It gives up after 15 s,
# or as soon as the server exits (e.g. because it could not listen), and
# shows its log. start NAME --centrifugo CMD... tells the port by
# CENTRIFUGO_HTTP_SERVER_PORT instead (the configs in scripts/centrifugo
# bind 127.0.0.1 and serve /healthz).
start() {
  local name=$1 port t0=$SECONDS why="" how=-addr
  shift
  port=$(free_port)
  addr=127.0.0.1:$port
  if [ "$1" = --centrifugo ]; then
    shift
    how=CENTRIFUGO_HTTP_SERVER_PORT
    CENTRIFUGO_HTTP_SERVER_PORT="$port" GOMAXPROCS=1 taskset -c 0 "$@" >"$tmp/$name.log" 2>&1 &
  else
    GOMAXPROCS=1 taskset -c 0 "$@" -addr "$addr" 2>"$tmp/$name.log" &
  fi
  pid=$!
  pids+=("$pid")
  until listens "$pid" "$port" && healthy "$addr"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      why="exited before it answered on http://$addr/healthz"
      break
    fi
    if ((SECONDS - t0 >= 15)); then
      why="did not answer on http://$addr/healthz within 15 s"
      break
    fi
    sleep 0.1
  done
  if [ -n "$why" ]; then
    echo "bench: $name $why; its log:" >&2
    cat "$tmp/$name.log" >&2
    exit 1
  fi
  if [ "$how" = -addr ]; then
    echo "# $name: pid $pid on $addr: $* -addr $addr" | tee -a "$txt"
  else
    echo "# $name: pid $pid on $addr: CENTRIFUGO_HTTP_SERVER_PORT=$port $*" | tee -a "$txt"
  fi
}

# stop PID stops one server we started and waits for it.
stop() {
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

# gen ARGS... runs the load generator on CPU 1 with GOMAXPROCS=1.
# A failed run is reported and the set goes on.
gen() {
  echo "\$ roomchat-bench $*" | tee -a "$txt"
  GOMAXPROCS=1 taskset -c 1 "$bench" "$@" -o "$out" 2>&1 | tee -a "$txt"
  local rc=${PIPESTATUS[0]}
  if [ "$rc" -ne 0 ]; then
    echo "bench: roomchat-bench $1 failed (exit $rc)" | tee -a "$txt" >&2
  fi
  return 0
}
