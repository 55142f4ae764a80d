#!/usr/bin/env bash
# Per-unit costs for docs/capacity.md: one roomchatd node in cluster mode
# on one redis-server, both on loopback, and roomchat-bench as the load.
# Each phase prints deltas of Redis's INFO (commandstats, CPU, network,
# memory) and of the node's CPU (/proc/PID/stat) and metrics. Every phase
# is under a minute; the whole script about three.
set -euo pipefail
cd "$(dirname "$0")/.."
W=$(mktemp -d /tmp/capmeasure.XXXXXX)
RPORT=${RPORT:-16391}
NADDR=${NADDR:-127.0.0.1:18391}
go build -o "$W/roomchatd" ./cmd/roomchatd
go build -o "$W/roomchat-bench" ./cmd/roomchat-bench
redis-server --bind 127.0.0.1 --port "$RPORT" --save "" --appendonly no --dir "$W" --maxmemory-policy noeviction >"$W/redis.log" 2>&1 &
RPID=$!
sleep 0.5
GODEBUG=adaptivestackstart=0 "$W/roomchatd" -rate 0 -redis "redis://127.0.0.1:$RPORT" -addr "$NADDR" >"$W/node.log" 2>&1 &
NPID=$!
trap 'kill $NPID $RPID 2>/dev/null; wait 2>/dev/null; rm -rf "$W"' EXIT
for _ in $(seq 50); do curl -sf "http://$NADDR/readyz" >/dev/null && break; sleep 0.2; done
R() { redis-cli -p "$RPORT" "$@"; }
TCK=$(getconf CLK_TCK)

# snap prints one line of key=value: Redis commands by name, Redis CPU
# (ms), network bytes, memory, the node's CPU (ms) and metrics.
snap() {
  {
    R info commandstats | tr -d '\r' | sed -n 's/^cmdstat_\([a-z|]*\):calls=\([0-9]*\),.*/cmd_\1=\2/p' | tr '|' '_'
    R info cpu | tr -d '\r' | awk -F: '/^used_cpu_(sys|user):/{s+=$2} END{printf "redis_cpu_ms=%d\n", s*1000}'
    R info stats | tr -d '\r' | sed -n 's/^\(total_net_input_bytes\|total_net_output_bytes\):/\1=/p'
    R info memory | tr -d '\r' | sed -n 's/^used_memory:/used_memory=/p'
    R dbsize | sed 's/^/keys=/'
    awk -v t="$TCK" '{printf "node_cpu_ms=%d\n", ($14+$15)*1000/t}' /proc/$NPID/stat
    awk '/^VmRSS/{printf "node_rss_kb=%d\n", $2}' /proc/$NPID/status
    curl -s "http://$NADDR/metrics" | sed -n 's/^\(roomchat_messages_delivered_total\|roomchat_messages_stored_total\|roomchat_connections_total\) \([0-9.e+]*\)$/\1=\2/p'
  } | tr '\n' ' '
  echo
}
# delta prints after-before for every key of two snap lines.
delta() {
  awk -v a="$1" -v b="$2" 'BEGIN{
    n=split(a, x, " "); for(i=1;i<=n;i++){split(x[i], kv, "="); A[kv[1]]=kv[2]}
    n=split(b, y, " "); for(i=1;i<=n;i++){split(y[i], kv, "="); d=kv[2]-A[kv[1]]; if (d!=0) printf "%s=%.0f\n", kv[1], d}
  }' | sort
}

echo "== phase 1: joins (2000 connections into 20 rooms, each joins once and leaves when closed)"
s0=$(snap)
"$W/roomchat-bench" idle -server "ws://$NADDR" -conns 2000 -rooms 20 -hold 2s -run-id join >"$W/idle1.txt" 2>&1
sleep 1
s1=$(snap)
delta "$s0" "$s1"

echo "== phase 2: held rooms, no traffic (200 rooms x 10 members, 30 s window)"
"$W/roomchat-bench" idle -server "ws://$NADDR" -conns 2000 -rooms 200 -hold 50s -run-id hold >"$W/idle2.txt" 2>&1 &
BPID=$!
sleep 12
s0=$(snap)
sleep 30
s1=$(snap)
delta "$s0" "$s1"
wait $BPID || true

for members in 2 20; do
  echo "== phase 3: messages, 50 rooms x $members members, 1 sender each at 20 msg/s (1,000 msg/s), 10 s + 2 s warm-up"
  s0=$(snap)
  "$W/roomchat-bench" fanout -server "ws://$NADDR" -rooms 50 -members "$members" -senders 1 -rate 20 -duration 10s -warmup 2s -drain 3s -quiet-wait 0s >"$W/fan$members.txt" 2>&1 || true
  s1=$(snap)
  delta "$s0" "$s1"
  tail -5 "$W/fan$members.txt"
done
echo "== redis memory after: $(R info memory | tr -d '\r' | grep '^used_memory:'), keys $(R dbsize)"
