#!/usr/bin/env bash
# make fuzz: run each fuzz target for FUZZTIME (default 60s), one at a
# time, each with FUZZPARALLEL workers (default 1: the machine is shared).
# Every decoder and validator of input from outside has a target
# (docs/reliability.md lists them). A target that fails leaves its input in
# the package's testdata/fuzz/<target>/ (a regression test from then on);
# the others still run, and the script exits 1 at the end.
# FUZZONLY (space-separated target names) runs a subset.
set -eu
cd "$(dirname "$0")/.."
t=${FUZZTIME:-60s}
par=${FUZZPARALLEL:-1}
only=${FUZZONLY:-}

targets=(
  "./internal/protocol FuzzDecodeEnvelope"
  "./internal/protocol FuzzDecodePayload"
  "./internal/protocol FuzzCheckID"
  "./internal/protocol FuzzCheckRoomID"
  "./internal/protocol FuzzCleanName"
  "./internal/protocol FuzzCheckMessage"
  "./internal/protocol FuzzCheckEvent"
  "./internal/room FuzzVerifyToken"
  "./internal/policy FuzzParse"
  "./internal/identity FuzzVerify"
  "./internal/server FuzzPostMessage"
  "./internal/server FuzzPostEvent"
  "./internal/server FuzzListMessages"
)

failed=()
for entry in "${targets[@]}"; do
  read -r pkg name <<<"$entry"
  if [ -n "$only" ] && [[ " $only " != *" $name "* ]]; then
    continue
  fi
  echo "fuzz: $name ($pkg) for $t, $(date -u +%H:%M:%SZ)"
  if ! go test "$pkg" -run '^$' -fuzz "^$name\$" -fuzztime "$t" -parallel "$par"; then
    failed+=("$name")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: failed: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz: every target passed"
