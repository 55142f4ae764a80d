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
