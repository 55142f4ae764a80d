#!/usr/bin/env bash
# make soak: the soak campaign of docs/reliability.md against one roomchatd
# for SOAK_DURATION of load (default 30m), then up to a minute for it to
# settle. The samples (CSV), the chart (SVG) and the test's whole output
# (with the server's log if it fails) go to soak-results/; the terminal
# gets the campaign's own lines.
set -eu
cd "$(dirname "$0")/.."
d=${SOAK_DURATION:-30m}
mkdir -p soak-results
log=soak-results/soak-$(date -u +%Y%m%dT%H%M%SZ).log
set +e
ROOMCHAT_SOAK="$d" ROOMCHAT_SOAK_OUT="$PWD/soak-results" \
  go test ./cmd/roomchatd -run '^TestSoak$' -count=1 -v -timeout 12h >"$log" 2>&1
rc=$?
set -e
grep -E 'soak:|^(--- |ok|FAIL|PASS)' "$log" || true
echo "soak: full output in $log"
exit "$rc"
