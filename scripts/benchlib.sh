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
