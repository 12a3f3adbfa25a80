# teatree — build, test and demo targets. `make help` lists them.
GO      ?= go
BIN     ?= bin
# go test flags; CI adds nothing, a developer may pass e.g. TESTFLAGS='-run Lease -v'.
TESTFLAGS ?=
# duckdb-go's Arrow interface (the reader's query results) needs the
# duckdb_arrow build tag; every build and test here sets it.
export GOFLAGS += -tags=duckdb_arrow
export TEATREE_MINIO_BIN ?= $(shell scripts/minio.sh --path 2>/dev/null)
export TEATREE_K8S_BIN_DIR ?= $(shell scripts/k8s-test-bins.sh --path 2>/dev/null)

.PHONY: help build test vet fmt demo data clean minio k8s-test-bins chaos fuzz bench bench-large bench-wasm

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

build: ## build teactl, dispatcher and dbmanager into bin/
	$(GO) build -o $(BIN)/ ./cmd/...

vet: ## go vet
	$(GO) vet ./...

fmt: ## gofmt check
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi

minio: ## build and cache the pinned MinIO used by the S3 tests
	scripts/minio.sh

k8s-test-bins: ## build and cache etcd, kube-apiserver, kube-controller-manager and kwok for the Kubernetes tests
	scripts/k8s-test-bins.sh

test: fmt vet data ## vet and run every test with the race detector (real NATS, Postgres, DuckDB, MinIO, a Kubernetes control plane, the flights data)
	$(GO) test -race -count=1 -timeout 20m $(TESTFLAGS) ./...

chaos: data fuzz ## bounded fuzzing (every target, 30 s each), then the full fault-injection run (10,000 requests, 200 faults; about 15 minutes)
	$(GO) test -count=1 -tags chaos,duckdb_arrow -run '^TestChaosFull$$' -v -timeout 80m ./internal/chaos $(CHAOSFLAGS)

FUZZTIME ?= 30s
fuzz: ## run every fuzz target for FUZZTIME (30s) each
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeRequest$$' -fuzztime $(FUZZTIME) ./model
	$(GO) test -run '^$$' -fuzz '^FuzzValidateID$$' -fuzztime $(FUZZTIME) ./model
	$(GO) test -run '^$$' -fuzz '^FuzzValidateRequestID$$' -fuzztime $(FUZZTIME) ./model
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeAndValidate$$' -fuzztime $(FUZZTIME) ./functions
	$(GO) test -run '^$$' -fuzz '^FuzzValidate$$' -fuzztime $(FUZZTIME) ./functions
	$(GO) test -run '^$$' -fuzz '^FuzzReadsOf$$' -fuzztime $(FUZZTIME) ./functions
	$(GO) test -run '^$$' -fuzz '^FuzzValidateSelect$$' -fuzztime $(FUZZTIME) ./functions
	@# Each Arrow input converts a file: minimizing a new input for the default 60 s would use the whole run.
	$(GO) test -run '^$$' -fuzz '^FuzzArrowToParquet$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 10x ./functions
	$(GO) test -run '^$$' -fuzz '^FuzzCoerce$$' -fuzztime $(FUZZTIME) ./functions
	$(GO) test -run '^$$' -fuzz '^FuzzCopyReader$$' -fuzztime $(FUZZTIME) ./functions
	$(GO) test -run '^$$' -fuzz '^FuzzSmallNumeric$$' -fuzztime $(FUZZTIME) ./functions
	$(GO) test -run '^$$' -fuzz '^FuzzValidateKey$$' -fuzztime $(FUZZTIME) ./objstore
	$(GO) test -run '^$$' -fuzz '^FuzzStatefulSetName$$' -fuzztime $(FUZZTIME) ./kube
	$(GO) test -run '^$$' -fuzz '^FuzzSubjectMatches$$' -fuzztime $(FUZZTIME) ./console
	$(GO) test -run '^$$' -fuzz '^FuzzDigest$$' -fuzztime $(FUZZTIME) ./model
	$(GO) test -run '^$$' -fuzz '^FuzzStagedKeys$$' -fuzztime $(FUZZTIME) ./model
	$(GO) test -run '^$$' -fuzz '^FuzzValidateRequestPayload$$' -fuzztime $(FUZZTIME) ./functions
	$(GO) test -run '^$$' -fuzz '^FuzzDuckGist$$' -fuzztime $(FUZZTIME) ./functions
	$(GO) test -run '^$$' -fuzz '^FuzzModuleOutput$$' -fuzztime $(FUZZTIME) ./functions
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeStream$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 10x ./udf/sdk
	$(GO) test -run '^$$' -fuzz '^FuzzReadFrame$$' -fuzztime $(FUZZTIME) ./udf
	$(GO) test -run '^$$' -fuzz '^FuzzFiniteJSON$$' -fuzztime $(FUZZTIME) ./internal/cli
	$(GO) test -run '^$$' -fuzz '^FuzzParseMap$$' -fuzztime $(FUZZTIME) ./blocks
	$(GO) test -run '^$$' -fuzz '^FuzzReadHeader$$' -fuzztime $(FUZZTIME) ./blocks
	$(GO) test -run '^$$' -fuzz '^FuzzParseType$$' -fuzztime $(FUZZTIME) ./snapshot
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) ./profile
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeRequest$$' -fuzztime $(FUZZTIME) ./reader
	$(GO) test -run '^$$' -fuzz '^FuzzFanOutPlan$$' -fuzztime $(FUZZTIME) ./reader
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeInfo$$' -fuzztime $(FUZZTIME) ./internal/svcinfo
	$(GO) test -run '^$$' -fuzz '^FuzzResolve$$' -fuzztime $(FUZZTIME) ./client

demo: ## the main job on real data: 3 M flights through teactl dev (a few minutes)
	scripts/demo.sh

data: ## fetch and verify the demo data (data/flights-3m.parquet)
	scripts/fetch-flights.sh

clean: ## remove build output
	rm -rf $(BIN)

bench: build data $(BIN)/delayclass.wasm ## benchmarks side by side with JetStream and DuckDB alone (about 5 minutes; BENCHFLAGS=-quick: 2 minutes); writes internal/bench/results.json
	$(BIN)/teabench -bin $(BIN) -json internal/bench/results.json $(BENCHFLAGS)

$(BIN)/delayclass.wasm: $(shell git ls-files udf/sdk udf/examples/delayclass) ## the WebAssembly module of bench scenario 6 (udf/examples/delayclass)
	GOOS=wasip1 GOARCH=wasm GOFLAGS= CGO_ENABLED=0 $(GO) build -buildmode=c-shared -o $@ ./udf/examples/delayclass

bench-wasm: ## issue 18: a WebAssembly map over 3 M rows vs SQL vs native Go over the same Arrow batches, and the 1-row overhead (about 2 minutes; TEATREE_BENCH_ROWS to change the rows)
	$(GO) test -run '^$$' -bench '^BenchmarkWasmMap$$' -benchtime 1x ./functions

bench-large: build ## scenario 3L alone: a synthetic 2 GB model (one-row appends, incremental pulls, a 1 % update; about 6 minutes, 20 GB of disk); writes internal/bench/results-large.json
	$(BIN)/teabench -bin $(BIN) -scenarios 3L -idle-timeout 1m -json internal/bench/results-large.json $(BENCHFLAGS)
