#!/usr/bin/env bash
# make bench-cluster: the cluster figures of issue 13 (docs/benchmarks.md,
# "Cluster"). Everything listens on 127.0.0.1 and everything started here
# is stopped here, by PID. Parts, in order:
#
#   publish  the publish step alone: go test -bench Publish in
#            internal/cluster (rueidis, go-redis, the store's path), once
#            per run; not pinned (the test starts its own redis-server)
#   restart  a node's catch-up after a Redis kill -9 and restart, 1,000
#            active rooms: go test -bench RedisRestart, 5 samples per run
#   fixed    single node (roomchatd -db :memory:) against three nodes on
#            one redis-server, 100 rooms x 100 members, clients spread
#            over the nodes: p99 at a fixed 20,000 deliveries/s, both in
#            the same roomchat-bench run, once per run
#   max      the same servers: max sustained deliveries/s (-find-max)
#   idle     three fresh nodes on a fresh redis-server, one idle
#            generator per node (each process may hold 20,000 files),
#            sharing rooms, all holding at once; bytes per connection per
#            node, and the peak of open connections over the cluster; then
#            the same count on one node (-db :memory:) for comparison
#
# Pinning (fanout, idle): every server process (the nodes, redis-server,
# the single node) on CPU 0 with GOMAXPROCS=1, the load generators on CPU
# 1 with GOMAXPROCS=1, so that the single node and the whole cluster get
# the same one core. Results: bench-results/cluster-<UTC stamp>.jsonl
# (fanout and idle, one JSON object per result) and .txt (everything).
#
# Knobs (environment): BENCH_RUNS (3), BENCH_DURATION (measured window per
# find-max step, 4s), BENCH_WARMUP (1s), BENCH_QUIET (wait for other
# processes to go quiet before each step, 20s), BENCH_CONNS (idle
# connections per node, 18500), BENCH_HOLD (idle hold, 60s), BENCH_ONLY
# (space-separated subset of: publish restart fixed max idle).
set -eu
cd "$(dirname "$0")/.."

runs=${BENCH_RUNS:-3}
duration=${BENCH_DURATION:-4s}
warmup=${BENCH_WARMUP:-1s}
quiet=${BENCH_QUIET:-20s}
conns=${BENCH_CONNS:-18500}
hold=${BENCH_HOLD:-60s}
only=${BENCH_ONLY:-publish restart fixed max idle}

for cmd in taskset redis-server; do
  command -v "$cmd" >/dev/null || { echo "bench-cluster: $cmd is required (make deps)" >&2; exit 1; }
done
if [ "$(nproc)" -lt 2 ]; then
  echo "bench-cluster: needs 2 CPUs (servers on 0, generators on 1)" >&2
  exit 1
fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# bench_tmp, free_port, listens, want: see scripts/benchlib.sh.
. scripts/benchlib.sh
bench_tmp

go build -o "$tmp/" ./cmd/roomchatd ./cmd/roomchat-bench
go test -c -o "$tmp/cluster.test" ./internal/cluster
bench="$tmp/roomchat-bench"

mkdir -p bench-results
stamp=$(date -u +%Y%m%dT%H%M%SZ)
out="bench-results/cluster-$stamp.jsonl"
txt="bench-results/cluster-$stamp.txt"
{
  echo "# roomchat cluster bench $stamp"
  echo "# commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (dirty tree)')"
  echo "# $(uname -srm); $(nproc) CPUs; $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
  echo "# go $(go env GOVERSION); $(redis-server --version | cut -d' ' -f1-3); open files $(ulimit -n); load $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$txt"
log() { echo "$*" | tee -a "$txt"; }

# http_get ADDR PATH prints the body of http://ADDR/PATH (HTTP/1.0 over
# bash's /dev/tcp, at most 2 s), or fails.
http_get() {
  (
    exec 3<>"/dev/tcp/${1%:*}/${1##*:}" || exit 1
    printf 'GET %s HTTP/1.0\r\nHost: %s\r\n\r\n' "$2" "$1" >&3
    IFS= read -r -t 2 status <&3 || exit 1
    case $status in "HTTP/1."[01]" 200 "*) ;; *) exit 1 ;; esac
    while IFS= read -r -t 2 line <&3; do [ "$line" = $'\r' ] && break; done
    timeout 2 cat <&3
  ) 2>/dev/null
}


# wait_up NAME PID ADDR CHECK waits (15 s at most) until PID listens on
# ADDR and the command CHECK ADDR succeeds; else shows NAME's log and exits.
wait_up() {
  local name=$1 pid=$2 addr=$3 check=$4 t0=$SECONDS why=""
  until listens "$pid" "${addr##*:}" && $check "$addr"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      why="exited before it answered on $addr"
      break
    fi
    if ((SECONDS - t0 >= 15)); then
      why="did not answer on $addr within 15 s"
      break
    fi
    sleep 0.1
  done
  if [ -n "$why" ]; then
    echo "bench-cluster: $name $why; its log:" >&2
    cat "$tmp/$name.log" >&2
    exit 1
  fi
}

ready() { http_get "$1" /readyz >/dev/null; }
pong() {
  (
    exec 3<>"/dev/tcp/${1%:*}/${1##*:}" || exit 1
    printf 'PING\r\n' >&3
    IFS= read -r -t 1 reply <&3 && [ "$reply" = $'+PONG\r' ]
  ) 2>/dev/null
}

# start_redis NAME sets $raddr and $rpid: a redis-server on CPU 0 with its
# append-only file fsynced once a second (docs/operations.md) and no
# eviction, as a cluster's Redis should run.
start_redis() {
  local port
  port=$(free_port)
  raddr=127.0.0.1:$port
  mkdir -p "$tmp/$1"
  taskset -c 0 redis-server --bind 127.0.0.1 --port "$port" --dir "$tmp/$1" --save "" \
    --appendonly yes --appendfsync everysec --maxmemory-policy noeviction \
    --daemonize no --logfile "$tmp/$1.log" &
  rpid=$!
  pids+=("$rpid")
  wait_up "$1" "$rpid" "$raddr" pong
  log "# $1: pid $rpid on $raddr (appendfsync everysec)"
}

# start_node NAME ARGS... sets $addr and $pid: roomchatd on CPU 0 with
# GOMAXPROCS=1 and no rate limit, ready (/readyz answers 200).
start_node() {
  local name=$1 port
  shift
  port=$(free_port)
  addr=127.0.0.1:$port
  GOMAXPROCS=1 taskset -c 0 "$tmp/roomchatd" -rate 0 "$@" -addr "$addr" 2>"$tmp/$name.log" &
  pid=$!
  pids+=("$pid")
  wait_up "$name" "$pid" "$addr" ready
  log "# $name: pid $pid on $addr: roomchatd -rate 0 $* -addr $addr"
}

stop() {
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

# gen ARGS... runs the load generator on CPU 1 with GOMAXPROCS=1; a failed
# run is reported and the set goes on.
gen() {
  log "\$ roomchat-bench $*"
  GOMAXPROCS=1 taskset -c 1 "$bench" "$@" -o "$out" 2>&1 | tee -a "$txt"
  local rc=${PIPESTATUS[0]}
  [ "$rc" -eq 0 ] || log "bench-cluster: roomchat-bench $1 failed (exit $rc)"
  return 0
}


if want publish; then
  for i in $(seq "$runs"); do
    log "# publish step, run $i of $runs (load $(cut -d' ' -f1 /proc/loadavg))"
    "$tmp/cluster.test" -test.run '^$' -test.bench Publish -test.benchmem -test.benchtime 2s 2>&1 | grep -E '^Benchmark|FAIL' | tee -a "$txt" || true
  done
fi

if want restart; then
  for i in $(seq "$runs"); do
    log "# Redis restart, 1,000 rooms, run $i of $runs (load $(cut -d' ' -f1 /proc/loadavg))"
    "$tmp/cluster.test" -test.run '^$' -test.bench RedisRestart -test.benchtime 1x -test.count 5 2>&1 | grep -E '^Benchmark|FAIL|gaps' | tee -a "$txt" || true
  done
fi

if want fixed || want max; then
  start_redis redis
  cluster_redis=$rpid
  urls="" cpids=""
  for k in 1 2 3; do
    start_node "node$k" -redis "redis://$raddr"
    urls+="${urls:+,}ws://$addr"
    cpids+="${cpids:+,}$pid"
  done
  cpids+=",$cluster_redis" # the cluster's CPU includes its Redis
  start_node single -db :memory:
  single=$addr spid=$pid
  common=(-server "$urls" -pid "$cpids" -mem "ws://$single" -mem-pid "$spid" -rooms 100 -members 100 -senders 1 -quiet-wait "$quiet")
  for i in $(seq "$runs"); do
    log "# fanout, run $i of $runs (load $(cut -d' ' -f1 /proc/loadavg))"
    # p99 at a fixed 20,000 deliveries/s: 100 senders x 2 msgs/s x 100.
    if want fixed; then
      gen fanout "${common[@]}" -rate 2 -duration 10s -warmup 2s -drain 3s -label 100x100@20k
    fi
    # Max sustained deliveries/s (p99 <= 250 ms, no loss).
    if want max; then
      gen fanout "${common[@]}" -rate 2 -find-max -duration "$duration" -warmup "$warmup" -drain 3s -label 100x100
    fi
  done
  for p in $(echo "$cpids" | tr , ' ') "$spid"; do stop "$p"; done
fi

# conns_open ADDR prints roomchat_connections of the node at ADDR (0 if
# it does not answer).
conns_open() {
  http_get "$1" /metrics | awk '$1 == "roomchat_connections" { printf "%d", $2; found = 1 } END { if (!found) print 0 }'
}

if want idle; then
  for i in $(seq "$runs"); do
    log "# idle, three nodes x $conns connections, run $i of $runs (load $(cut -d' ' -f1 /proc/loadavg))"
    start_redis "idle-redis-$i"
    ipids=() addrs=()
    for k in 1 2 3; do
      start_node "idle$i-node$k" -redis "redis://$raddr"
      ipids+=("$pid") addrs+=("$addr")
    done
    run_id="c$i$RANDOM"
    gpids=()
    for k in 0 1 2; do
      log "\$ roomchat-bench idle -server ws://${addrs[$k]} -pid ${ipids[$k]} -conns $conns -rooms 555 -run-id $run_id -per-addr 2500 -hold $hold"
      GOMAXPROCS=1 taskset -c 1 "$bench" idle -server "ws://${addrs[$k]}" -pid "${ipids[$k]}" -conns "$conns" -rooms 555 \
        -run-id "$run_id" -per-addr 2500 -hold "$hold" -o "$out" >"$tmp/idle-$k.txt" 2>&1 &
      gpids+=("$!")
      pids+=("$!")
    done
    # Sample the open connections of the three nodes while the generators
    # connect and hold: the peak is what the cluster held at once.
    peak=0
    while kill -0 "${gpids[0]}" 2>/dev/null || kill -0 "${gpids[1]}" 2>/dev/null || kill -0 "${gpids[2]}" 2>/dev/null; do
      sum=0
      for a in "${addrs[@]}"; do sum=$((sum + $(conns_open "$a"))); done
      ((sum > peak)) && peak=$sum
      sleep 1
    done
    for k in 0 1 2; do
      wait "${gpids[$k]}" || log "bench-cluster: idle generator $k failed"
      tee -a "$txt" <"$tmp/idle-$k.txt"
    done
    log "=> idle run $i: at most $peak connections open at once over the three nodes"
    echo "{\"kind\":\"idle-cluster\",\"run\":$i,\"nodes\":3,\"peakConns\":$peak}" >>"$out"
    for p in "${ipids[@]}" "$rpid"; do stop "$p"; done
    # The same count on one node without Redis, for bytes per connection
    # in the same run (100 members per room, all local).
    start_node "idle$i-single" -db :memory:
    gen idle -server "ws://$addr" -pid "$pid" -conns "$conns" -rooms $((conns / 100)) -per-addr 2500 -hold "$hold"
    stop "$pid"
  done
fi
log "# results: $out"
