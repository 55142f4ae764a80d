# Each target is one line; anything longer lives in scripts/.
.PHONY: run build test lint fuzz bench bench-ab bench-cluster deps cluster chaos chaos-cluster soak

run:
	go run ./cmd/roomchatd

cluster:
	bash scripts/cluster.sh

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

chaos-cluster:
	ROOMCHAT_CHAOS_CLUSTER=$${CHAOS_MINUTES:-30} go test ./cmd/roomchatd -run '^TestChaosCluster$$' -count=1 -v -timeout $$(( $${CHAOS_MINUTES:-30} + 20 ))m

soak:
	bash scripts/soak.sh

bench:
	bash scripts/bench.sh

bench-cluster:
	bash scripts/bench-cluster.sh

deps:
	bash scripts/deps.sh

bench-ab:
	BASE="$(BASE)" bash scripts/bench-ab.sh
