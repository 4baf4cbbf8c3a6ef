# Cohort build, test and check targets. `make run` and `make test` are the two
# commands a fresh machine needs; `make check` is what to run before every commit.

SHELL := /bin/bash
GO ?= go
BIN := bin
TOOLS := $(CURDIR)/bin/tools
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)

# Pinned tool versions (make proto / make check).
PROTOC_GEN_GO_VERSION := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.5.1
STATICCHECK_VERSION := v0.8.2
# protoc comes from Debian's protobuf-compiler package (3.21.12 on bookworm).
PROTOC_VERSION := 3.21.12

TEST_FLAGS ?= -count=1 -timeout 20m
RUN_SPEC ?= jobs/examples/attrition-mlp.yaml

.PHONY: all build build-static gpu-artifacts static run test test-race deps netns-deps check fmt vet lint proto proto-check imports bench chaos campaign bench-netns data clean

all: build

## build: bin/cohort, built without cgo; it links only glibc's dynamic loader, which
## loads the NVIDIA libraries at run time where they exist
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/cohort ./cmd/cohort

## build-static: a fully static bin/cohort-static without GPU support (-tags nogpu)
build-static:
	CGO_ENABLED=0 $(GO) build -tags nogpu -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/cohort-static ./cmd/cohort

## gpu-artifacts: the prebuilt files scripts/gpu-check.sh runs on a GPU machine without Go
gpu-artifacts: build
	CGO_ENABLED=0 $(GO) test -c -trimpath -ldflags '-s -w' -o $(BIN)/gpu.test ./internal/gpu
	CGO_ENABLED=0 $(GO) test -c -trimpath -ldflags '-s -w' -o $(BIN)/gpu-gorgoniaops.test ./internal/gpu/gorgoniaops
	CGO_ENABLED=0 $(GO) test -c -trimpath -ldflags '-s -w' -o $(BIN)/worker.test ./worker

## run: build, then train the example job on the embedded cluster and print its result
run: build
	$(BIN)/cohort dev --run $(RUN_SPEC) -o json

## deps: install what the tests need (Go modules; versitygw for the S3 tests; Debian's
## python3-onnx for the ONNX checker, python3-sklearn as the audit's reference, chromium for
## the dashboard, iptables for the test hosts' faults (internal/netns); through apt when
## missing; and onnxruntime-node, the ONNX Runtime the export tests run the models in,
## with npm into $(ONNXRUNTIME_DIR) when missing)
TEST_APT_PACKAGES := python3-onnx python3-sklearn chromium curl iptables
## Node.js and npm come from apt only where npm is missing.
NODE_APT_PACKAGES := $(if $(shell command -v npm),,nodejs npm)
ONNXRUNTIME_NODE_VERSION := 1
ONNXRUNTIME_DIR := $(TOOLS)/onnxruntime
## --ignore-scripts: the package's install script only downloads GPU libraries, from a
## host that may be unreachable; the CPU library ships inside the package.
ONNXRUNTIME_INSTALL := test -f $(ONNXRUNTIME_DIR)/node_modules/onnxruntime-node/package.json || \
	npm install --prefix $(ONNXRUNTIME_DIR) --ignore-scripts --no-audit --no-fund --loglevel=error \
		onnxruntime-node@$(ONNXRUNTIME_NODE_VERSION) >/dev/null
## The four installs run side by side (network, CPU and disk bound in turn); each must
## succeed. onnxruntime follows apt only where apt installs npm.
deps:
	@$(GO) mod download & mod=$$!; \
	scripts/install-versitygw.sh & gw=$$!; \
	scripts/apt-install.sh $(TEST_APT_PACKAGES) $(NODE_APT_PACKAGES) $(if $(NODE_APT_PACKAGES),&& { $(ONNXRUNTIME_INSTALL); }) & apt=$$!; \
	$(if $(NODE_APT_PACKAGES),,{ $(ONNXRUNTIME_INSTALL); } & ort=$$!;) \
	fail=0; for p in $$mod $$gw $$apt $$ort; do wait $$p || fail=1; done; exit $$fail

## data: install the real data sets the example jobs use (Fashion-MNIST)
data:
	scripts/apt-install.sh dataset-fashion-mnist

RACE_PKGS := ./coordinator/... ./paramserver/... ./internal/... ./storage/... ./serve/... ./web/... ./worker/ ./worker/model/ ./cmd/...

## test: install what the tests need and run the whole suite, then the concurrent
## packages again under the race detector
test: deps
	COHORT_REQUIRE_ONNX=1 COHORT_REQUIRE_SKLEARN=1 COHORT_REQUIRE_BROWSER=1 $(GO) test $(TEST_FLAGS) ./...
	$(GO) test -race $(TEST_FLAGS) $(RACE_PKGS)

## test-race: only the race-detector pass
test-race: deps
	$(GO) test -race $(TEST_FLAGS) $(RACE_PKGS)

## bench: every Go benchmark (figures go to BENCHMARKS.md)
bench:
	$(GO) test -run '^$$' -bench . -benchmem -count=1 ./...

## check: formatting, vet, lint, generated code current, import rules
check: fmt vet lint proto-check imports static

fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

$(TOOLS)/staticcheck:
	GOBIN=$(TOOLS) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

lint: $(TOOLS)/staticcheck
	$(TOOLS)/staticcheck ./...

$(TOOLS)/protoc-gen-go:
	GOBIN=$(TOOLS) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)

$(TOOLS)/protoc-gen-go-grpc:
	GOBIN=$(TOOLS) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)

protoc-installed:
	@command -v protoc >/dev/null || scripts/apt-install.sh protobuf-compiler
	@protoc --version | grep -q "$(PROTOC_VERSION)" || { echo "protoc $(PROTOC_VERSION) required, found $$(protoc --version)"; exit 1; }

## proto: regenerate proto/cohort/v1/*.pb.go with the pinned generators
proto: protoc-installed $(TOOLS)/protoc-gen-go $(TOOLS)/protoc-gen-go-grpc
	PATH=$(TOOLS):$$PATH protoc -I proto \
		--go_out=. --go_opt=module=github.com/cohort-dev/cohort \
		--go-grpc_out=. --go-grpc_opt=module=github.com/cohort-dev/cohort \
		proto/cohort/v1/*.proto

## proto-check: fail when the committed generated code is stale
proto-check: protoc-installed $(TOOLS)/protoc-gen-go $(TOOLS)/protoc-gen-go-grpc
	@tmp=$$(mktemp -d); trap 'rm -rf $$tmp' EXIT; \
	PATH=$(TOOLS):$$PATH protoc -I proto \
		--go_out=$$tmp --go_opt=module=github.com/cohort-dev/cohort \
		--go-grpc_out=$$tmp --go-grpc_opt=module=github.com/cohort-dev/cohort \
		proto/cohort/v1/*.proto; \
	diff -r $$tmp/proto/cohort/v1 proto/cohort/v1 -x '*.proto' >/dev/null || \
		{ echo "generated protobuf code is stale: run 'make proto'"; exit 1; }

## static: the -tags nogpu build must stay a fully static binary (no ELF interpreter)
static: build-static
	@if readelf -l $(BIN)/cohort-static | grep -q INTERP; then echo "bin/cohort-static is not static"; exit 1; fi

## imports: the architecture's import rules
imports:
	@scripts/check-imports.sh

## netns-deps: what the test hosts (internal/netns) need besides root and iproute2
netns-deps:
	@scripts/apt-install.sh iptables

## chaos: long soak and fault runs (not part of make test); the multi-host fault campaign
## (test/multihost, root) runs its long form here
chaos: netns-deps
	COHORT_CHAOS=1 $(GO) test -count=1 -timeout 60m -run 'Chaos|Soak' ./...

## campaign: only the long multi-host fault campaign, verbose; CAMPAIGN_SEED=N replays a
## schedule, CAMPAIGN_FAULTS=N sizes it, CAMPAIGN_REPORT=FILE writes its JSON summary
campaign: netns-deps
	COHORT_CHAOS=1 COHORT_CAMPAIGN_SEED=$(CAMPAIGN_SEED) COHORT_CAMPAIGN_FAULTS=$(CAMPAIGN_FAULTS) \
		COHORT_CAMPAIGN_REPORT=$(CAMPAIGN_REPORT) \
		$(GO) test -count=1 -timeout 60m -run TestChaosFaultCampaign -v ./test/multihost

## bench-netns: CNN training throughput with 2 workers and 2 parameter servers on
## namespaced hosts, direct and through shaped links (root; a few minutes); writes the
## table to BENCH_NETNS_REPORT when set
bench-netns: netns-deps
	COHORT_NETNS_BENCH=1 COHORT_NETNS_BENCH_REPORT=$(BENCH_NETNS_REPORT) \
		$(GO) test -count=1 -timeout 30m -run TestNetnsCNNThroughput -v ./test/multihost

clean:
	rm -rf $(BIN) cohort-data
