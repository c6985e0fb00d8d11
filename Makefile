# eddy — see README.md. Every target installs what it needs (scripts/deps.sh, idempotent).
GO       ?= go
BIN      := bin/eddy
PKGS     := ./...
DEMO_DIR ?= /tmp/eddy-demo

.PHONY: all build test test-unit test-faults vet bench bench-quick bench-sched bench-cluster demo fuzz clean deps

all: build

deps:
	@scripts/deps.sh fuse nfs ssh containers bench browser s3
	@scripts/versitygw.sh

build:
	$(GO) build -o $(BIN) ./cmd/eddy

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet $(PKGS)
	@$(GO) mod tidy -diff || { echo "go.mod/go.sum not tidy: run go mod tidy"; exit 1; }

# The whole test suite: unit tests, integration tests against real FUSE, NFS
# (nfs-ganesha), sshd/sshfs and containerd, the fault tests, and the POSIX
# conformance suite pjdfstest (built into $(PJDFSTEST), git-ignored; the test
# fails rather than skips when EDDY_PJDFSTEST names it). Packages run one at a
# time (-p 1): the mount and cluster tests measure nothing, but their bounded
# waits should not race another package's tests for the 2 cores.
PJDFSTEST ?= $(CURDIR)/.tools/pjdfstest
test: deps vet build
	@scripts/pjdfstest-build.sh $(PJDFSTEST) >/dev/null
	EDDY_PJDFSTEST=$(PJDFSTEST) $(GO) test -p 1 -count=1 -timeout 40m $(PKGS)

test-unit:
	$(GO) test -count=1 -short $(PKGS)

test-faults: deps build
	$(GO) test -count=1 -timeout 15m -run 'Fault' ./integration/...

fuzz:
	scripts/fuzz.sh $(FUZZTIME)

bench: deps build
	EDDY_BENCH_CLUSTER_SMOKE=1 EDDY_BENCH_EDDY=$(CURDIR)/$(BIN) $(GO) test -count=1 -run TestClusterSmoke ./bench/
	$(BIN) bench --out bench-results

bench-quick: deps build
	$(BIN) bench --quick --out bench-results-quick

bench-sched: build
	$(BIN) bench sched --trace bench/traces/lab-16.json

# N nodes reading one file at once from one NFS server: nfs, eddy, eddy with peer fetch.
bench-cluster: deps build
	$(BIN) bench cluster --out bench-results-cluster

# A single node over a local origin directory, no config. Leaves the mount up until Ctrl-C.
demo: build
	@scripts/deps.sh fuse
	@scripts/demo.sh $(DEMO_DIR)

clean:
	rm -rf bin
