# nlpswarm: `make up` runs the platform on the local engine, `make test` tests it.
SHELL := /bin/bash
GO ?= go
BIN := bin/nlpswarm
IMAGE ?= nlpswarm:dev
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
# Fuzz targets run briefly by `make test` (package:Target).
FUZZ_TARGETS ?= ./models:FuzzPredictRequest ./modelmgr/archive:FuzzExtract ./apiserver:FuzzDeploymentRequest ./gateway:FuzzDecodeRequest ./gateway:FuzzDecodeSimple ./gateway:FuzzParseHead ./modelmgr/onnxcheck:FuzzCheck ./modelmgr/archive:FuzzZipDeclaredEntries ./gateway:FuzzDecodeLabelsSimple ./gateway:FuzzAppendJSON
FUZZTIME ?= 10s

.PHONY: build agent test test-unit fuzz image up down bench lint clean chaos soak

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/nlpswarm

# The NVML agent for GPU nodes: the one cgo build (libnvidia-ml is loaded at
# run time; without it the agent reports zero GPUs).
agent:
	CGO_ENABLED=1 CGO_CFLAGS=-Wno-deprecated-declarations $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/nlpswarm-agent ./cmd/nlpswarm

test: build
	$(GO) vet ./...
	$(GO) tool staticcheck ./...
	$(GO) test -count=1 -timeout 30m ./...
	@$(MAKE) --no-print-directory fuzz

test-unit:
	$(GO) test -count=1 -short ./...

fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
	  pkg=$${t%%:*}; name=$${t##*:}; \
	  echo "fuzz $$name in $$pkg for $(FUZZTIME)"; \
	  $(GO) test -run='^$$' -fuzz="^$$name\$$" -fuzztime=$(FUZZTIME) $$pkg; \
	done

image: build
	./deployments/image/stage.sh bin/image
	docker build -q -t $(IMAGE) bin/image

up:
	./deployments/up.sh

down:
	./deployments/down.sh

# Fault injection on a three-node swarm started on this machine
# (internal/swarmlab; root, about 5 minutes): prints the README's table.
chaos: build
	NLPSWARM_CHAOS=1 $(GO) test -count=1 -v -timeout 60m -run '^TestChaos$$' ./deployments/chaos

# 30 minutes of mixed traffic with scaling on the lab, memory flat within
# 10 %, and a keep-alive connection idle for 16 minutes.
soak: build
	NLPSWARM_SOAK=1 $(GO) test -count=1 -v -timeout 90m -run '^TestSoak$$' ./deployments/chaos

# Every benchmark for real (not one iteration): the gateway's proxy benchmark
# sizes itself by request count, the others by time.
BENCHTIME ?= 1s
bench:
	$(GO) test -run='^$$' -bench=. -benchtime=$(BENCHTIME) $$($(GO) list ./... | grep -v '/gateway$$')
	$(GO) test -run='^$$' -bench=Proxy -benchtime=150000x ./gateway/

# staticcheck is pinned in go.mod's tool directive: nothing is fetched at run time.
lint:
	$(GO) vet ./...
	$(GO) tool staticcheck ./...

clean:
	rm -rf bin
