# nlpswarm: `make up` runs the platform on the local engine, `make test` tests it.
SHELL := /bin/bash
GO ?= go
BIN := bin/nlpswarm
IMAGE ?= nlpswarm:dev
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
# Fuzz targets run briefly by `make test` (package:Target).
FUZZ_TARGETS ?= ./models:FuzzPredictRequest ./modelmgr/archive:FuzzExtract ./apiserver:FuzzDeploymentRequest ./gateway:FuzzDecodeRequest
FUZZTIME ?= 10s

.PHONY: build agent test test-unit fuzz image up down bench lint clean

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/nlpswarm

# The NVML agent for GPU nodes: the one cgo build (libnvidia-ml is loaded at
# run time; without it the agent reports zero GPUs).
agent:
	CGO_ENABLED=1 CGO_CFLAGS=-Wno-deprecated-declarations $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/nlpswarm-agent ./cmd/nlpswarm

test: build
	$(GO) vet ./...
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

bench:
	$(GO) test -run='^$$' -bench=. -benchtime=1x ./...

lint:
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

clean:
	rm -rf bin
