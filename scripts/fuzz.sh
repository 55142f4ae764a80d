#!/usr/bin/env bash
# make fuzz: run each fuzz target for FUZZTIME (default 60s).
set -eu
cd "$(dirname "$0")/.."
t=${FUZZTIME:-60s}
go test ./internal/protocol -run '^$' -fuzz '^FuzzDecodeEnvelope$' -fuzztime "$t"
