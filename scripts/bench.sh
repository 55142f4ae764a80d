#!/usr/bin/env bash
# make bench: the short default benchmark set of issue 6. Builds roomchatd
# and roomchat-bench into a temp dir, runs every server pinned to CPU 0 and
# the load generator pinned to CPU 1 (taskset), GOMAXPROCS=1 each, all on
# loopback, and writes bench-results/<UTC stamp>.jsonl (one JSON object per
# result), a .txt copy of the tables and the latency chart .svg.
#
# Knobs (environment): BENCH_DURATION (measured window per step, 4s),
# BENCH_WARMUP (1s), BENCH_CONNS (idle connections, 19500), BENCH_CYCLES
# (churn cycles, 100000), BENCH_SETTLE (longest wait for the churned server
# to return to its start, 270s: roomchat keeps a closed connection's resume
# record for 2 min, and an idle Go process only collects every 2 min),
# BENCH_ONLY (space-separated subset of: fanout100 batch100
# fanout1000 batch fixed idle join storm churn), BENCH_JOIN_CONNS (connections of
# the connect + join comparison, 10000, into rooms of 100), BENCH_JOIN_RUNS
# (its runs per server, 3), BENCH_CENTRIFUGO (a centrifugo v6 binary: adds
# Centrifugo with and without presence to that comparison; unset, it is
# left out; see docs/benchmarks.md for how to build it).
set -eu
cd "$(dirname "$0")/.."

duration=${BENCH_DURATION:-4s}
warmup=${BENCH_WARMUP:-1s}
conns=${BENCH_CONNS:-19500}
cycles=${BENCH_CYCLES:-100000}
settle=${BENCH_SETTLE:-270s}
only=${BENCH_ONLY:-fanout100 batch100 fanout1000 batch fixed idle join storm churn}
join_conns=${BENCH_JOIN_CONNS:-10000}
join_runs=${BENCH_JOIN_RUNS:-3}
centrifugo=${BENCH_CENTRIFUGO:-}
if [ -n "$centrifugo" ] && ! [ -x "$centrifugo" ]; then
  echo "bench: BENCH_CENTRIFUGO=$centrifugo is not an executable" >&2
  exit 1
fi

command -v taskset >/dev/null || { echo "bench: taskset (util-linux) is required" >&2; exit 1; }
if [ "$(nproc)" -lt 2 ]; then
  echo "bench: needs 2 CPUs (server on 0, generator on 1)" >&2
  exit 1
fi

# Both sides hold one descriptor per connection.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
echo "bench: open-files limit $(ulimit -n)" >&2

# bench_tmp, free_port, listens, want: see scripts/benchlib.sh.
. scripts/benchlib.sh
bench_tmp

go build -o "$tmp/" ./cmd/roomchatd ./cmd/roomchat-bench
bench="$tmp/roomchat-bench"

mkdir -p bench-results
stamp=$(date -u +%Y%m%dT%H%M%SZ)
out="bench-results/$stamp.jsonl"
txt="bench-results/$stamp.txt"
svg="bench-results/$stamp-latency.svg"
{
  echo "# roomchat bench $stamp"
  echo "# commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (dirty tree)')"
  echo "# $(uname -srm); $(nproc) CPUs; $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
  echo "# go $(go env GOVERSION); open files $(ulimit -n); load $(cut -d' ' -f1-3 /proc/loadavg)"
  if [ -n "$centrifugo" ]; then
    # go install leaves the binary's own version string at v0.0.0; the
    # module version is in its build info.
    echo "# centrifugo: $centrifugo ($(go version -m "$centrifugo" 2>/dev/null | awk '$1 == "mod" { print $2, $3 }'))"
  fi
} | tee "$txt"

fan=(-duration "$duration" -warmup "$warmup" -drain 3s)

if want fanout100 || want batch100 || want fanout1000 || want batch || want fixed; then
  start baseline "$bench" baseline
  bl=$addr bpid=$pid
  start roomchatd-sqlite "$tmp/roomchatd" -rate 0 -db "$tmp/bench.db"
  rc=$addr rpid=$pid
  start roomchatd-mem "$tmp/roomchatd" -rate 0 -db :memory:
  rm_=$addr mpid=$pid

  # 100 rooms x 100 members, one sender each: find the max sustained
  # deliveries/s (p99 <= 250 ms, no loss) for SQLite, memory and the relay.
  if want fanout100; then
    gen fanout -server "ws://$rc" -pid "$rpid" -mem "ws://$rm_" -mem-pid "$mpid" -baseline "ws://$bl" -baseline-pid "$bpid" \
      -rooms 100 -members 100 -senders 1 -rate 3 -find-max "${fan[@]}" -label 100x100
  fi
  # The same with ?batch=1 (several events per frame) for roomchat.
  if want batch100; then
    gen fanout -server "ws://$rc" -pid "$rpid" -batch -baseline "ws://$bl" -baseline-pid "$bpid" \
      -rooms 100 -members 100 -senders 1 -rate 3 -find-max "${fan[@]}" -label 100x100-batch
  fi
  # p99, p99.9 and max at a fixed 20,000 deliveries/s (100 senders x 2
  # msgs/s x 100), from each message's intended send time.
  if want fixed; then
    gen fanout -server "ws://$rc" -pid "$rpid" -baseline "ws://$bl" -baseline-pid "$bpid" \
      -rooms 100 -members 100 -senders 1 -rate 2 -duration 30s -warmup 3s -label 100x100@20k
  fi
  # 1 room x 1000 members, one sender: one frame per event, then batched.
  if want fanout1000; then
    gen fanout -server "ws://$rc" -pid "$rpid" -baseline "ws://$bl" -baseline-pid "$bpid" \
      -rooms 1 -members 1000 -senders 1 -rate 60 -find-max "${fan[@]}" -label 1x1000
  fi
  if want batch; then
    gen fanout -server "ws://$rc" -pid "$rpid" -batch -baseline "ws://$bl" -baseline-pid "$bpid" \
      -rooms 1 -members 1000 -senders 1 -rate 80 -step 1.5 -find-max "${fan[@]}" -label 1x1000-batch
  fi
  stop "$bpid"; stop "$rpid"; stop "$mpid"
fi

# Idle memory per joined connection and connect+join rate: a fresh server
# each, so the RSS delta is the connections' alone.
if want idle; then
  start baseline "$bench" baseline
  gen idle -relay -server "ws://$addr" -pid "$pid" -conns "$conns" -hold 10s
  stop "$pid"
  # -max-conns: the default (the open-files limit less 256) fits 19,500
  # connections under 20,000 files; builds before it kept a tenth back,
  # and the measurement wants every connection whichever build it runs.
  start roomchatd-sqlite "$tmp/roomchatd" -rate 0 -db "$tmp/idle.db" -max-conns $((conns + 100))
  gen idle -server "ws://$addr" -pid "$pid" -conns "$conns" -hold 10s
  stop "$pid"
fi

# Connect + join into 100-member rooms (issue 12, budget item 3): a fresh
# server per run, the servers taking turns so that noise on this shared
# machine spreads over all of them. Centrifugo (opt-in) runs with presence and
# join/leave pushes to every member, as roomchat has them
# (presence.json), with presence and join/leave on but pushed only to
# members that ask for them, which the bench's do not (presence-nopush.json),
# and without either (nopresence.json). The targets are
# labelled apart from the idle section's "roomchat" and "baseline", which
# the summary reads.
if want join; then
  jr=(-conns "$join_conns" -rooms $((join_conns / 100)) -hold 10s)
  for run in $(seq "$join_runs"); do
    echo "# connect + join, run $run of $join_runs" | tee -a "$txt"
    start baseline "$bench" baseline
    gen idle -relay -label relay -server "ws://$addr" -pid "$pid" "${jr[@]}"
    stop "$pid"
    start roomchatd "$tmp/roomchatd" -rate 0 -db "$tmp/join-$run.db"
    gen idle -label roomchat-join -server "ws://$addr" -pid "$pid" "${jr[@]}"
    stop "$pid"
    if [ -n "$centrifugo" ]; then
      for cf in presence presence-nopush nopresence; do
        start "centrifugo-$cf" --centrifugo "$centrifugo" -c scripts/centrifugo/$cf.json
        gen idle -centrifugo -cf-secret roomchat-bench-not-a-secret -label "centrifugo-$cf" -server "ws://$addr" -pid "$pid" "${jr[@]}"
        stop "$pid"
      done
    fi
  done
fi

# Reconnect storm (issue 12, budget item 4): 10,000 clients joined in 100
# rooms of 100 lose their server, to SIGTERM and then to kill -9; the tool
# starts, stops and restarts roomchatd itself (through a wrapper that pins
# it to CPU 0, the generator's own CPU being 1) and reports the time until
# every client is back and caught up, messages lost and duplicated, the
# restarted server's peak RSS and the latency of messages sent meanwhile.
if want storm; then
  printf '#!/bin/sh\nGOMAXPROCS=1 exec taskset -c 0 %s "$@"\n' "$tmp/roomchatd" >"$tmp/roomchatd-cpu0"
  chmod +x "$tmp/roomchatd-cpu0"
  for sig in term kill; do
    gen storm -roomchatd "$tmp/roomchatd-cpu0" -addr "127.0.0.1:$(free_port)" -db "$tmp/storm-$sig.db" -signal "$sig" -rooms 100 -members 100
  done
fi

# Churn: connect, join, leave, close; goroutines and heap must come back.
if want churn; then
  start roomchatd-sqlite "$tmp/roomchatd" -rate 0 -db "$tmp/churn.db"
  gen churn -server "ws://$addr" -cycles "$cycles" -par 16 -settle "$settle"
  stop "$pid"
fi

if grep -q '"kind":"fanout"' "$out" 2>/dev/null; then
  "$bench" chart -in "$out" -out "$svg"
  echo "# chart: $svg" | tee -a "$txt"
fi
echo | tee -a "$txt"
"$bench" summary -in "$out" | tee -a "$txt"
echo "# results: $out" | tee -a "$txt"
