package scheduler

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/nlpswarm/nlpswarm/internal/deployment"
	"github.com/nlpswarm/nlpswarm/scheduler/placement"
)

// Engines of text-generation deployments (issue 15; doc.go, "Generation"):
// not asked for, decided by the deployment's task and GPUs.
const (
	// BackendLlama is llama.cpp on CPUs: the nlpswarm-llama image
	// (SpecConfig.LlamaImage).
	BackendLlama = "llama"
	// BackendLlamaCUDA is llama.cpp with ggml's CUDA backend, the model's
	// layers offloaded to the replica's GPUs: nlpswarm-llama-cuda
	// (SpecConfig.LlamaCUDAImage).
	BackendLlamaCUDA = "llama-cuda"
)

// Generation replicas' settings, the same for every deployment (the
// deployment record has no field for them yet).
const (
	// GenerationSlots is the replica's parallel sequences (llama-server's
	// --parallel, continuous batching), each of the model's own context: the
	// figure the upload's memory estimate assumed (modelmgr's
	// generationSlots), so the memory the deployment reserves is the memory
	// the replica needs.
	GenerationSlots = 4
	// GPULayersAll offloads every layer of the model to the GPUs
	// (llama.cpp caps --n-gpu-layers at the model's layer count).
	GPULayersAll = 999
	// GenerationStartPeriod is the health check's start period of a
	// generation replica: a GGUF file is GiBs to fetch and load, where an
	// encoder's archive is MiBs (60 s).
	GenerationStartPeriod = 10 * time.Minute
)

// TaskTextGeneration is modelmgr.TextGeneration (a test holds them equal),
// without importing the model manager.
const TaskTextGeneration = "text-generation"

// TaskFeatureExtraction is modelmgr.FeatureExtraction (a test holds them
// equal): the task of an embedding GGUF, served by the generation runtime
// in its embeddings mode (--generation.embeddings).
const TaskFeatureExtraction = "feature-extraction"

// Generation reports whether d is served by the generation runtime: a
// text-generation model, or any GGUF version (an embedding GGUF of task
// feature-extraction; deployment.FormatGGUF, recorded at deploy).
func Generation(d deployment.Desired) bool {
	return d.Task == TaskTextGeneration || d.Format == deployment.FormatGGUF
}

// GenerationEmbeddings reports whether d's generation replicas run in the
// embeddings mode (serving /v1/embeddings only): a GGUF of task
// feature-extraction.
func GenerationEmbeddings(d deployment.Desired) bool {
	return Generation(d) && d.Task == TaskFeatureExtraction
}

// EngineOf is the engine d's replicas run: for a generation model (text
// generation, or an embedding GGUF), llama.cpp, on the CUDA image when d asks for GPUs and the CPU image
// otherwise; for the others, the backend d asks for (Engine). A generation
// deployment that names an encoder backend, or whose image the scheduler
// was not given, is refused with what to do.
func (c SpecConfig) EngineOf(d deployment.Desired) (Engine, error) {
	if !Generation(d) {
		return c.Engine(d.Backend)
	}
	switch {
	case d.Backend != deployment.BackendDefault:
		return Engine{}, fmt.Errorf("backend %q is an encoder engine; a %s GGUF model runs on llama.cpp: redeploy without --backend", d.Backend, d.Task)
	case d.GPUs > 0 && c.LlamaCUDAImage == "":
		return Engine{}, fmt.Errorf("a GGUF (%s) deployment on GPUs needs the CUDA generation image, and the scheduler has none (start it with --llamacudaimage, e.g. make up GPU=1), or redeploy with --gpus 0 to run it on CPUs", d.Task)
	case d.GPUs > 0:
		return Engine{Backend: BackendLlamaCUDA, Image: c.LlamaCUDAImage}, nil
	case c.LlamaImage == "":
		return Engine{}, fmt.Errorf("the scheduler has no generation image for GGUF models (%s here; start it with --llamaimage=nlpswarm-llama:dev; make up builds it)", d.Task)
	}
	return Engine{Backend: BackendLlama, Image: c.LlamaImage}, nil
}

// GPUTooSmall refuses a GPU deployment of a generation model that asks
// more memory of each GPU than any GPU of the inventory has in all: it
// could never be placed, whatever else ran. nil when it fits one, when it
// asks no GPU, or when the inventory has no GPU (placement says so).
func GPUTooSmall(d deployment.Desired, nodes []placement.Node) error {
	if !Generation(d) || d.GPUs <= 0 || d.GPUMemory <= 0 {
		return nil
	}
	var largest int64
	where := ""
	for _, n := range nodes {
		for _, g := range n.GPUs {
			if g.Total > largest {
				largest, where = g.Total, n.Hostname
			}
		}
	}
	if largest == 0 || d.GPUMemory <= largest {
		return nil
	}
	return fmt.Errorf("the model needs %s on each of %d GPU(s) (its memory estimate: weights, the KV cache of %d slots of its context and a margin), more than any GPU has (the largest: %s on %s): deploy it on more GPUs (--gpus), or on CPUs",
		placement.HumanBytes(d.GPUMemory), d.GPUs, GenerationSlots, placement.HumanBytes(largest), where)
}

// generationArgs are the `generate` role's arguments for d on eng: the
// model's artifact and credentials as a runtime's, its slots, the CPU
// threads its limit gives (nanoCPUs), every layer offloaded on the CUDA
// engine, and the embeddings mode for an embedding GGUF.
func generationArgs(d Desired, c SpecConfig, eng Engine, nanoCPUs int64) []string {
	args := []string{"generate",
		"--generation.name=" + d.Model,
		"--artifacturl=" + strings.TrimRight(c.ArtifactBaseURL, "/") + "/internal/blobs/" + d.Digest,
		"--digest=" + d.Digest,
		"--listen=:" + strconv.Itoa(RuntimePort),
		"--cachedir=" + ArtifactCacheDir,
		"--generation.parallel=" + strconv.Itoa(GenerationSlots),
		"--generation.threads=" + strconv.Itoa(max(1, int(math.Ceil(float64(nanoCPUs)/1e9)))),
	}
	if eng.Backend == BackendLlamaCUDA {
		args = append(args, "--generation.gpulayers="+strconv.Itoa(GPULayersAll))
	}
	if GenerationEmbeddings(d.Desired) {
		args = append(args, "--generation.embeddings")
	}
	return append(args, credentialArgs(d, c)...)
}
