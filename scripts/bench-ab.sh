#!/usr/bin/env bash
# make bench-ab BASE=<commit> [BASE2 ...]: the working tree's roomchatd
# against one or more earlier builds, measured alternately in one
# session, so that a change to the delivery, read or write path is
# compared with the last release on every scenario before it is called
# done (docs/benchmarks.md, "A/B runs").
#
# It builds roomchatd at each BASE (git archive into a temporary
# directory) and from the working tree, and one roomchat-bench, from the
# working tree, which measures every build. Then, ROUNDS times, it runs
# each scenario on every build, one after the other, with a fresh server
# each (pinned to CPU 0, GOMAXPROCS=1; the generator on CPU 1); the order
# of the builds turns each round, so drift on this shared machine spreads
# over all of them. Scenarios (BENCH_ONLY, space-separated subset):
#   fanout1000  1 room x 1,000 members, find-max
#   batch1000   the same with ?batch=1
#   fanout100   100 rooms x 100 members, find-max
#   fixed       p99 at a fixed 20,000 deliveries/s in 100 x 100
#   join        connect + join into rooms of 100, BENCH_JOIN_CONNS (10,000)
#   idle        memory per idle joined connection, BENCH_CONNS (10,000)
# Last it prints, per figure, the medians and the median ratio of the
# working tree's figure to each base's over the rounds, with its range:
#   roomchat-bench ab -in bench-results/ab-<stamp>.jsonl -base B -head head
# Knobs: ROUNDS (3), BENCH_DURATION (3s per find-max window),
# BENCH_FIXED (20s fixed-rate window).
set -eu
cd "$(dirname "$0")/.."

bases=${BASE:-}
if [ -z "$bases" ]; then
  echo "bench-ab: set BASE to the commit to compare with, e.g. make bench-ab BASE=cb4c511" >&2
  exit 2
fi
rounds=${ROUNDS:-3}
duration=${BENCH_DURATION:-3s}
fixed=${BENCH_FIXED:-20s}
conns=${BENCH_CONNS:-10000}
join_conns=${BENCH_JOIN_CONNS:-10000}
only=${BENCH_ONLY:-fanout1000 batch1000 fanout100 fixed join idle}

command -v taskset >/dev/null || { echo "bench-ab: taskset (util-linux) is required" >&2; exit 1; }
if [ "$(nproc)" -lt 2 ]; then
  echo "bench-ab: needs 2 CPUs (server on 0, generator on 1)" >&2
  exit 1
fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

. scripts/benchlib.sh
bench_tmp

# Builds: base-<short hash> for each BASE, head for the working tree.
names=()
for b in $bases; do
  short=$(git rev-parse --short "$b^{commit}") || { echo "bench-ab: $b is not a commit" >&2; exit 2; }
  mkdir -p "$tmp/src-$short"
  git archive "$short" | tar -x -C "$tmp/src-$short"
  (cd "$tmp/src-$short" && go build -o "$tmp/roomchatd-base-$short" ./cmd/roomchatd)
  names+=("base-$short")
done
go build -o "$tmp/roomchatd-head" ./cmd/roomchatd
go build -o "$tmp/" ./cmd/roomchat-bench
names+=(head)
bench="$tmp/roomchat-bench"

mkdir -p bench-results
stamp=$(date -u +%Y%m%dT%H%M%SZ)
out="bench-results/ab-$stamp.jsonl"
txt="bench-results/ab-$stamp.txt"
{
  echo "# roomchat bench-ab $stamp"
  echo "# head: $(git rev-parse --short HEAD)$(git diff --quiet HEAD 2>/dev/null || echo ' + working tree changes')"
  for b in $bases; do echo "# base-$(git rev-parse --short "$b"): $(git log -1 --format='%h %s' "$b")"; done
  echo "# $(uname -srm); $(nproc) CPUs; go $(go env GOVERSION); open files $(ulimit -n); load $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "# rounds $rounds; scenarios: $only"
} | tee "$txt"

# serve NAME [FLAGS...] starts build NAME's roomchatd on a fresh SQLite
# file. A base that predates -max-conns has no connection cap to lift.
serve() {
  local name=$1 bin="$tmp/roomchatd-$1"
  shift
  if [ "${1:-}" = -max-conns ] && ! "$bin" -h 2>&1 | grep -q -- '-max-conns'; then
    shift 2
  fi
  db="$tmp/$name-$RANDOM.db"
  start "$name" "$bin" -rate 0 -db "$db" "$@"
}

# scenario NAME runs one scenario against the server $addr/$pid of build
# $build, labelled with it. The find-max searches start near where the
# slowest build of the last session failed and step by 1.4 or 1.5, so
# each takes about a minute (-refine bisects after the first failure).
scenario() {
  local fan=(-duration "$duration" -warmup 1s -drain 3s -server "ws://$addr" -pid "$pid" -server-label "$build")
  case $1 in
  fanout1000) gen fanout "${fan[@]}" -rooms 1 -members 1000 -senders 1 -rate 150 -step 1.4 -find-max -label 1x1000 ;;
  batch1000) gen fanout "${fan[@]}" -batch -rooms 1 -members 1000 -senders 1 -rate 200 -step 1.5 -find-max -label 1x1000-batch ;;
  fanout100) gen fanout "${fan[@]}" -rooms 100 -members 100 -senders 1 -rate 5 -step 1.4 -find-max -label 100x100 ;;
  fixed) gen fanout "${fan[@]}" -rooms 100 -members 100 -senders 1 -rate 2 -duration "$fixed" -warmup 3s -label 100x100@20k ;;
  join) gen idle -label "join/$build" -server "ws://$addr" -pid "$pid" -conns "$join_conns" -rooms $((join_conns / 100)) -hold 2s ;;
  idle) gen idle -label "idle/$build" -server "ws://$addr" -pid "$pid" -conns "$conns" -hold 20s ;;
  esac
}

for round in $(seq "$rounds"); do
  # Turn the order each round: A B C, B C A, C A B, ...
  order=("${names[@]:$(( (round - 1) % ${#names[@]} ))}" "${names[@]:0:$(( (round - 1) % ${#names[@]} ))}")
  echo "# round $round of $rounds: ${order[*]}" | tee -a "$txt"
  for s in $only; do
    for build in "${order[@]}"; do
      case $s in
      idle) serve "$build" -max-conns $((conns + 100)) ;;
      *) serve "$build" ;;
      esac
      scenario "$s"
      stop "$pid"
      rm -f "$db" "$db-wal" "$db-shm"
    done
  done
done

echo | tee -a "$txt"
base_names=$(printf '%s,' "${names[@]:0:$((${#names[@]} - 1))}")
"$bench" ab -in "$out" -base "${base_names%,}" -head head | tee -a "$txt"
echo "# results: $out, $txt" >&2
