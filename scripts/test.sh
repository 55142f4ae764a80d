#!/usr/bin/env bash
# make test: install what the tests need, check formatting and the module
# under CI, then run every test with the race detector and every benchmark
# once so that none of them rots.
set -eu
cd "$(dirname "$0")/.."
bash scripts/deps.sh
if [ "${CI:-}" = true ]; then
  unformatted=$(gofmt -l $(git ls-files '*.go'))
  if [ -n "$unformatted" ]; then echo "gofmt would change: $unformatted" >&2; exit 1; fi
  # -e: a test-only dependency of modernc.org/sqlite's own tests is not
  # served by the module proxy; it is never built here.
  go mod tidy -e -diff
fi
go vet ./...
go test -race -count=1 -timeout 12m ./...
go test -run '^$' -bench . -benchtime 1x -timeout 5m ./...
