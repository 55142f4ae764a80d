# Each target is one line; anything longer lives in scripts/.
.PHONY: run build test lint fuzz bench deps chaos soak

run:
	GODEBUG=adaptivestackstart=0 go run ./cmd/roomchatd

build:
	mkdir -p bin && go build -o bin/ ./cmd/...

test:
	bash scripts/test.sh

lint:
	bash scripts/lint.sh

fuzz:
	bash scripts/fuzz.sh

chaos:
	ROOMCHAT_CHAOS=$${CHAOS_CYCLES:-100} go test ./cmd/roomchatd -run '^TestChaos$$' -count=1 -v -timeout 60m

soak:
	bash scripts/soak.sh

bench:
	bash scripts/bench.sh

deps:
	bash scripts/deps.sh
