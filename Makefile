# nlpswarm: `make up` runs the platform on the local engine, `make test` tests it.
SHELL := /bin/bash
GO ?= go
BIN := bin/nlpswarm
IMAGE ?= nlpswarm:dev
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
# Fuzz targets run briefly by `make test` (package:Target).
FUZZ_TARGETS ?= ./models:FuzzPredictRequest ./modelmgr/archive:FuzzExtract ./apiserver:FuzzDeploymentRequest ./gateway:FuzzDecodeRequest ./gateway:FuzzDecodeSimple ./gateway:FuzzParseHead ./modelmgr/onnxcheck:FuzzCheck ./modelmgr/archive:FuzzZipDeclaredEntries ./gateway:FuzzDecodeLabelsSimple ./gateway:FuzzAppendJSON ./internal/artifactcred:FuzzParse
FUZZTIME ?= 10s

.PHONY: build agent test test-unit fuzz image up down bench bench-pinned lint clean chaos chaos-managers chaos-gpu soak

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/nlpswarm

# The NVML agent: the one cgo build of nlpswarm (libnvidia-ml is loaded at
# run time; without it the agent reports zero GPUs). Tag agentonly leaves
# out every other role and verb (cmd/nlpswarm/doc.go), which halves what it
# compiles; netgo and osusergo keep glibc the whole closure. agent-image
# puts it on bookworm's glibc (deployments/images/agent), the stack's agent.
AGENT_IMAGE ?= nlpswarm-agent:dev
.PHONY: agent-image test-agent-image
agent:
	CGO_ENABLED=1 CGO_CFLAGS=-Wno-deprecated-declarations $(GO) build -trimpath -tags agentonly,netgo,osusergo -ldflags '$(LDFLAGS)' -o bin/nlpswarm-agent ./cmd/nlpswarm

agent-image:
	AGENT_IMAGE=$(AGENT_IMAGE) GO=$(GO) ./deployments/images/agent/build.sh

# The agent image run on this machine: no driver, a fake bind-mounted
# libnvidia-ml, the closure (seconds warm).
test-agent-image:
	AGENT_IMAGE=$(AGENT_IMAGE) GO=$(GO) ./deployments/images/agent/test.sh

# Everything CI checks (.ci/test: build, go vet, staticcheck, go test ./...,
# fuzz, test-ort, test-agent-image, test-llama and the agent package with
# cgo), phases stamped and timed; the Debian roots and the stack tests run
# in the background beside the CPU work (README, "make test on a fresh
# machine").
test:
	GO=$(GO) FUZZTIME=$(FUZZTIME) FUZZ_TARGETS='$(FUZZ_TARGETS)' ./.ci/test

test-unit:
	$(GO) test -count=1 -short ./...

fuzz:
	GO=$(GO) ./.ci/fuzz $(FUZZTIME) $(FUZZ_TARGETS)

# one staging at a time in this checkout (bin/image is shared; make test
# runs the stack tests beside the other packages' tests)
image: build
	@mkdir -p bin
	flock bin/.image-stage.lock sh -c './deployments/image/stage.sh bin/image && docker build -q -t $(IMAGE) bin/image'

up:
	./deployments/up.sh

down:
	./deployments/down.sh

# Fault injection on a three-node swarm started on this machine
# (internal/swarmlab; root, about 25 minutes with issue 18's scenarios on
# two loaded cores): prints the README's table.
chaos: build
	NLPSWARM_CHAOS=1 $(GO) test -count=1 -v -timeout 60m -run '^TestChaos$$' ./deployments/chaos
	$(MAKE) chaos-managers

# Issue 18 items 3 and 4 on a lab of three managers and a worker: the
# leading scheduler's node loses power; one manager, then two, are lost
# (root, about 10 minutes; make chaos runs it after TestChaos).
chaos-managers: build
	NLPSWARM_CHAOS_MANAGERS=1 $(GO) test -count=1 -v -timeout 60m -run '^TestChaosManagers$$' ./deployments/chaos

# Issue 16's GPU scenarios on the lab, two fake GPUs on each worker: spread,
# drain, power cut, autoscaling (root, about 4 minutes).
chaos-gpu: build
	NLPSWARM_CHAOS_GPU=1 $(GO) test -count=1 -v -timeout 60m -run '^TestChaosGPU$$' ./deployments/chaos

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
	$(MAKE) bench-pinned

# The gateway against nginx, each proxy alone on one pinned CPU (issue 22,
# gateway/BENCHMARKS.md): needs nginx-light and wrk (Debian), two CPUs.
bench-pinned:
	$(GO) test -run='^$$' -bench=Pinned -benchtime=1x -timeout=30m ./gateway/

# Issue 15: the gateway's added time to first token and tokens/s ratio on
# streamed generation, against a fake replica at a fixed token rate
# (gateway/BENCHMARKS.md). Needs the test Postgres (NLPSWARM_TEST_DB_URL).
.PHONY: bench-generation
bench-generation:
	$(GO) test -run='^$$' -bench=GenerationRelay -benchtime=100x ./gateway/

# staticcheck is pinned in go.mod's tool directive: nothing is fetched at run time.
lint:
	$(GO) vet ./...
	$(GO) tool staticcheck ./...

clean:
	rm -rf bin

# ONNX Runtime engine (issue 14): the nlpswarm-ort image is the cgo build
# (tag ORT) on the ldd closure of it and Debian sid's libonnxruntime1.23,
# no shell; the sid root is cached in /var/cache/nlpswarm/ort-sid.
ORT_IMAGE ?= nlpswarm-ort:dev
.PHONY: ort-image test-ort minilm bench-ort bench-stack
ort-image:
	ORT_IMAGE=$(ORT_IMAGE) ./deployments/images/ort/build.sh

# ORT parity with transformers, run inside the image (about a minute warm).
test-ort:
	ORT_IMAGE=$(ORT_IMAGE) ./deployments/images/ort/test.sh

# The MiniLM-sized random-weight encoder for the engine benchmarks.
minilm: bin/minilm/model.onnx
bin/minilm/model.onnx: models/testdata/gen/minilm.py
	@/usr/bin/python3 -c 'import onnx, numpy' 2>/dev/null || apt-get install -y -qq --no-install-recommends python3-onnx python3-numpy >/dev/null
	/usr/bin/python3 models/testdata/gen/minilm.py bin/minilm ../shared/fixtures/nlp/embeddings

# go vs ort side by side in one run, inside the ORT image (figures in models/BENCHMARKS.md).
bench-ort: minilm
	ORT_IMAGE=$(ORT_IMAGE) ORT_TEST_RUN='^$$' ORT_TEST_ARGS='-test.bench=^BenchmarkEngines$$ -test.benchtime=1x' \
	  NLPSWARM_MINILM_DIR=$(CURDIR)/bin/minilm ./deployments/images/ort/test.sh
FUZZ_TARGETS += ./models:FuzzTruncateChars
FUZZ_TARGETS += ./gateway:FuzzInferTexts
FUZZ_TARGETS += ./gateway:FuzzAgreement ./internal/versionstats:FuzzParseField
FUZZ_TARGETS += ./gateway:FuzzGenHead ./gateway:FuzzNLPGeneration ./gateway:FuzzEmbeddingsAnswers
FUZZ_TARGETS += ./modelmgr/ggufcheck:FuzzCheck

# The generation runtime's CPU image (issue 15): Debian sid's llama-server
# and ggml's CPU backends, pinned, on an empty root; the sid root is cached
# in /var/cache/nlpswarm/llama-sid. test-llama runs it on ggufgen's tiny
# random-weight llama (seconds warm).
LLAMA_IMAGE ?= nlpswarm-llama:dev
.PHONY: llama-image test-llama
llama-image: build
	LLAMA_IMAGE=$(LLAMA_IMAGE) ./deployments/images/llama/build.sh

test-llama: llama-image
	LLAMA_IMAGE=$(LLAMA_IMAGE) $(GO) test -count=1 -v -run '^TestImageServesTinyLlama$$' ./deployments/images/llama

# issue 15's continuous batching gain: one replica of the image, 16 slots vs
# 1, driven by 1 and 16 clients (a table; asserts nothing about speed).
.PHONY: bench-llama
bench-llama: llama-image
	NLPSWARM_BENCH=1 LLAMA_IMAGE=$(LLAMA_IMAGE) $(GO) test -count=1 -v -timeout 15m -run '^TestContinuousBatchingGain$$' ./deployments/images/llama

# transformers' greedy answers and pooled embeddings on ggufgen's tiny llama,
# the fixture test-llama compares the generation runtime with (issue 15):
# Debian sid's python3-transformers/torch/gguf in a cached root
# (/var/cache/nlpswarm/py-sid, minutes once); not in CI, commit the JSON.
.PHONY: parity-fixture
parity-fixture:
	GO=$(GO) ./deployments/images/llama/parity/run.sh

# Its CUDA variant for GPU nodes (nlpswarm-llama-cuda): the same plus ggml's
# CUDA backend (sid contrib) and Debian's CUDA 12.4 runtime (non-free),
# pinned, without the driver library (the NVIDIA container runtime mounts
# the node's); its root is cached in /var/cache/nlpswarm/llama-cuda-sid.
# About 1.2 GB: not part of make test, nor of make up unless GPU=1.
# test-llama-cuda checks it without a GPU: its files and closure, and the
# generate role with every layer asked on the GPU serving on the CPU.
LLAMA_CUDA_IMAGE ?= nlpswarm-llama-cuda:dev
.PHONY: llama-cuda-image test-llama-cuda
llama-cuda-image: build
	CUDA=1 LLAMA_IMAGE=$(LLAMA_CUDA_IMAGE) ./deployments/images/llama/build.sh

test-llama-cuda: llama-cuda-image
	LLAMA_CUDA_IMAGE=$(LLAMA_CUDA_IMAGE) $(GO) test -count=1 -v -run '^TestCUDAImage$$' ./deployments/images/llama

# The whole stack (gateway → one replica of the MiniLM-sized encoder) at
# concurrency 16, ort vs go alternated (deployments/bench/stack.sh; brings
# the stack up fresh with ORT=1 unless KEEP_STACK=1; holds the engine's lock).
bench-stack:
	flock /tmp/nlpswarm-stack.lock ./deployments/bench/stack.sh
FUZZ_TARGETS += ./gateway:FuzzJobUpload ./internal/customerapi:FuzzVerifyWebhook
