#!/usr/bin/env bash
# make lint: vet, staticcheck and govulncheck at pinned versions.
set -eu
cd "$(dirname "$0")/.."
go vet ./...
go run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...
# govulncheck needs its vulnerability database (vuln.go.dev) and its own
# dependencies from the module proxy; where either cannot be reached it is
# reported, not taken for a finding.
if ! out=$(go run golang.org/x/vuln/cmd/govulncheck@v1.9.0 ./... 2>&1); then
  if grep -qE 'Vulnerability|vulnerabilit(y|ies) found' <<<"$out"; then
    echo "$out"
    exit 1
  fi
  echo "lint: govulncheck could not run here:" >&2
  echo "$out" | tail -3 >&2
fi
