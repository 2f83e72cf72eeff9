package scheduler

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nlpswarm/nlpswarm/internal/deployment"
	"github.com/nlpswarm/nlpswarm/modelmgr"
	"github.com/nlpswarm/nlpswarm/scheduler/placement"
)

const (
	goImg        = "sha256:go00"
	ortImg       = "sha256:ort0"
	llamaImg     = "sha256:llama0"
	llamaCUDAImg = "sha256:llamacuda0"
)

func TestTaskTextGenerationIsModelmgrs(t *testing.T) {
	if TaskTextGeneration != modelmgr.TextGeneration || TaskFeatureExtraction != modelmgr.FeatureExtraction {
		t.Fatalf("scheduler's %q %q, modelmgr's %q %q", TaskTextGeneration, TaskFeatureExtraction, modelmgr.TextGeneration, modelmgr.FeatureExtraction)
	}
	if deployment.FormatGGUF != modelmgr.FormatGGUF || deployment.FormatONNX != modelmgr.FormatONNX {
		t.Fatalf("the record's formats %q %q, modelmgr's %q %q", deployment.FormatGGUF, deployment.FormatONNX, modelmgr.FormatGGUF, modelmgr.FormatONNX)
	}
}

// Issue 15: the generation runtime serves text-generation models and any
// GGUF version, an embedding GGUF (feature-extraction) in its embeddings
// mode; an ONNX encoder stays on the models runtime.
func TestGenerationOf(t *testing.T) {
	for _, tt := range []struct {
		task, format    string
		gen, embeddings bool
	}{
		{TaskTextGeneration, deployment.FormatGGUF, true, false},
		{TaskTextGeneration, "", true, false}, // (a record from before the format column's backfill)
		{TaskFeatureExtraction, deployment.FormatGGUF, true, true},
		{TaskFeatureExtraction, deployment.FormatONNX, false, false},
		{TaskFeatureExtraction, "", false, false},
		{"text-classification", deployment.FormatONNX, false, false},
	} {
		d := deployment.Desired{Task: tt.task, Format: tt.format}
		if Generation(d) != tt.gen || GenerationEmbeddings(d) != tt.embeddings {
			t.Errorf("%s %q: Generation %v GenerationEmbeddings %v, want %v %v", tt.task, tt.format, Generation(d), GenerationEmbeddings(d), tt.gen, tt.embeddings)
		}
	}
}

// Issue 15: a text-generation deployment runs llama.cpp, on the CUDA image
// when it asks for GPUs and the CPU image otherwise; the others keep their
// engine; what cannot be had is refused with what to do.
func TestEngineOf(t *testing.T) {
	full := SpecConfig{Image: goImg, ORTImage: ortImg, LlamaImage: llamaImg, LlamaCUDAImage: llamaCUDAImg}
	cpuOnly := SpecConfig{Image: goImg, LlamaImage: llamaImg}
	none := SpecConfig{Image: goImg, ORTImage: ortImg}
	gen := deployment.Desired{Model: "tiny", Task: TaskTextGeneration}
	onGPU := gen
	onGPU.GPUs = 1
	enc := deployment.Desired{Model: "sentiment", Task: "text-classification"}
	encGPU := enc
	encGPU.GPUs = 1
	withBackend := gen
	withBackend.Backend = deployment.BackendORT
	emb := deployment.Desired{Model: "embed", Task: TaskFeatureExtraction, Format: deployment.FormatGGUF}
	embGPU := emb
	embGPU.GPUs = 1
	embBackend := emb
	embBackend.Backend = deployment.BackendGo
	for _, tt := range []struct {
		name    string
		cfg     SpecConfig
		d       deployment.Desired
		backend string
		image   string
		err     string
	}{
		{"generation on CPUs: the CPU image", full, gen, BackendLlama, llamaImg, ""},
		{"generation on GPUs: the CUDA image", full, onGPU, BackendLlamaCUDA, llamaCUDAImg, ""},
		{"generation on GPUs without a CUDA image: refused", cpuOnly, onGPU, "", "", "needs the CUDA generation image"},
		{"generation on CPUs without a CUDA image: the CPU image", cpuOnly, gen, BackendLlama, llamaImg, ""},
		{"generation without any generation image: refused", none, gen, "", "", "no generation image"},
		{"generation naming an encoder backend: refused", full, withBackend, "", "", "runs on llama.cpp"},
		{"an encoder keeps its engine", full, enc, deployment.BackendORT, ortImg, ""},
		{"an encoder on GPUs keeps its engine", full, encGPU, deployment.BackendORT, ortImg, ""},
		{"an encoder with no generation image", none, enc, deployment.BackendORT, ortImg, ""},
		{"an embedding GGUF on CPUs: the CPU image", full, emb, BackendLlama, llamaImg, ""},
		{"an embedding GGUF on GPUs: the CUDA image", full, embGPU, BackendLlamaCUDA, llamaCUDAImg, ""},
		{"an embedding GGUF naming an encoder backend: refused", full, embBackend, "", "", "feature-extraction GGUF model runs on llama.cpp"},
		{"an embedding GGUF without any generation image: refused", none, emb, "", "", "no generation image for GGUF models (feature-extraction here"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			eng, err := tt.cfg.EngineOf(tt.d)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("EngineOf = %+v, %v; want an error with %q", eng, err, tt.err)
				}
				return
			}
			if err != nil || eng.Backend != tt.backend || eng.Image != tt.image {
				t.Fatalf("EngineOf = %+v, %v; want %s on %s", eng, err, tt.backend, tt.image)
			}
		})
	}
}

// A generation model whose estimate (per GPU) is larger than any GPU's
// whole memory can never be placed: refused with both figures.
func TestGPUTooSmall(t *testing.T) {
	nodes := []placement.Node{
		{ID: "n1", Hostname: "ml-1", GPUs: []placement.GPU{{UUID: "a", Total: 24 << 30}}},
		{ID: "n2", Hostname: "ml-2", GPUs: []placement.GPU{{UUID: "b", Total: 80 << 30}, {UUID: "c", Total: 40 << 30}}},
	}
	gen := func(gpus int, mem int64) deployment.Desired {
		return deployment.Desired{Model: "big", Task: TaskTextGeneration, Resources: deployment.Resources{GPUs: gpus, GPUMemory: mem}}
	}
	enc := gen(1, 100<<30)
	enc.Task = "feature-extraction"
	for _, tt := range []struct {
		name  string
		d     deployment.Desired
		nodes []placement.Node
		err   string
	}{
		{"fits the largest GPU", gen(1, 80<<30), nodes, ""},
		{"larger than any GPU", gen(1, 81<<30), nodes, "more than any GPU has (the largest: 80 GiB on ml-2)"},
		{"larger than any, on 2 GPUs each", gen(2, 90<<30), nodes, "needs 90 GiB on each of 2 GPU(s)"},
		{"on CPUs: nothing to check", gen(0, 0), nodes, ""},
		{"no GPU in the inventory: placement says so", gen(1, 81<<30), []placement.Node{{ID: "n1"}}, ""},
		{"an encoder: placement's reason", enc, nodes, ""},
		{"an embedding GGUF larger than any GPU", func() deployment.Desired {
			d := enc
			d.Format = deployment.FormatGGUF
			return d
		}(), nodes, "more than any GPU has"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := GPUTooSmall(tt.d, tt.nodes)
			if (tt.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.err)) {
				t.Fatalf("GPUTooSmall = %v, want %q", err, tt.err)
			}
		})
	}
}

// The generate role's command for a text-generation deployment: the model,
// its artifact and credentials, the slots its memory estimate assumed, the
// CPU threads of its limit, every layer on the GPU on the CUDA image only;
// the health check's start period leaves room for a GGUF's download.
func TestBuildSpecGeneration(t *testing.T) {
	cfg := SpecConfig{Image: goImg, LlamaImage: llamaImg, LlamaCUDAImage: llamaCUDAImg, Network: "n", ArtifactBaseURL: "http://apiserver:9100/",
		ArtifactKey: []byte("k"), CallKey: testCallKey(t)}
	cpu := Desired{Desired: deployment.Desired{Model: "tiny", Task: TaskTextGeneration, Version: 2, Digest: "sha256:feed", Replicas: 2,
		Resources: deployment.Resources{CPUs: 3.5, MemoryReservation: 1 << 30}}}
	gpu := Desired{Desired: cpu.Desired, Pin: &Pin{NodeID: "node-7", GPUUUIDs: []string{"GPU-a"}}}
	gpu.GPUs, gpu.GPUMemory = 1, 1<<30
	embCPU, embGPU := cpu, gpu
	embCPU.Task, embCPU.Format = TaskFeatureExtraction, deployment.FormatGGUF
	embGPU.Task, embGPU.Format = TaskFeatureExtraction, deployment.FormatGGUF
	for _, tt := range []struct {
		name    string
		d       Desired
		image   string
		backend string
		want    []string
		not     []string
		env     string
	}{
		{"CPU", cpu, llamaImg, BackendLlama,
			[]string{"generate", "--generation.name=tiny", "--artifacturl=http://apiserver:9100/internal/blobs/sha256:feed", "--digest=sha256:feed",
				"--listen=:8080", "--cachedir=" + ArtifactCacheDir, "--generation.parallel=4", "--generation.threads=4"},
			[]string{"--generation.gpulayers=999", "runtime", "--engine.backend=llama", "--generation.embeddings"}, "NVIDIA_VISIBLE_DEVICES=void"},
		{"GPU", gpu, llamaCUDAImg, BackendLlamaCUDA,
			[]string{"generate", "--generation.name=tiny", "--generation.parallel=4", "--generation.gpulayers=999"},
			[]string{"--generation.embeddings"}, "NVIDIA_VISIBLE_DEVICES=GPU-a"},
		// an embedding GGUF: the same role, in its embeddings mode
		{"embeddings CPU", embCPU, llamaImg, BackendLlama,
			[]string{"generate", "--generation.name=tiny", "--generation.embeddings", "--generation.threads=4"},
			[]string{"--generation.gpulayers=999", "runtime", "--task=feature-extraction"}, "NVIDIA_VISIBLE_DEVICES=void"},
		{"embeddings GPU", embGPU, llamaCUDAImg, BackendLlamaCUDA,
			[]string{"generate", "--generation.embeddings", "--generation.gpulayers=999"},
			nil, "NVIDIA_VISIBLE_DEVICES=GPU-a"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			spec := BuildSpec(tt.d, cfg)
			cs := spec.TaskTemplate.ContainerSpec
			if cs.Image != tt.image || spec.Labels[LabelBackend] != tt.backend || spec.Labels[LabelTask] != tt.d.Task {
				t.Fatalf("image %s backend %s task %s", cs.Image, spec.Labels[LabelBackend], spec.Labels[LabelTask])
			}
			for _, w := range tt.want {
				if !slices.Contains(cs.Args, w) {
					t.Errorf("args %v lack %s", cs.Args, w)
				}
			}
			for _, w := range tt.not {
				if slices.Contains(cs.Args, w) {
					t.Errorf("args %v hold %s", cs.Args, w)
				}
			}
			var artifact, call bool
			for _, a := range cs.Args {
				artifact = artifact || strings.HasPrefix(a, "--artifactcredential=")
				call = call || strings.HasPrefix(a, "--callcredential=")
			}
			if !artifact || !call {
				t.Errorf("args %v lack a credential", cs.Args)
			}
			if !slices.Contains(cs.Env, tt.env) {
				t.Errorf("env %v lacks %s", cs.Env, tt.env)
			}
			if cs.Healthcheck.StartPeriod != GenerationStartPeriod || cs.User != RuntimeUser || !cs.ReadOnly {
				t.Errorf("health check start period %s, user %s, read-only %v", cs.Healthcheck.StartPeriod, cs.User, cs.ReadOnly)
			}
			if r := spec.TaskTemplate.Resources; r.Reservations.MemoryBytes != 1<<30 || r.Limits.MemoryBytes != 2<<30 {
				t.Errorf("memory reservation %d limit %d, want the estimate and twice it", r.Reservations.MemoryBytes, r.Limits.MemoryBytes)
			}
			if tt.d.Pin != nil && !slices.Contains(spec.TaskTemplate.Placement.Constraints, "node.id=="+tt.d.Pin.NodeID) {
				t.Errorf("constraints %v", spec.TaskTemplate.Placement.Constraints)
			}
		})
	}
	// the default CPU limit (2) gives 2 threads
	d := cpu
	d.CPUs = 0
	if args := BuildSpec(d, cfg).TaskTemplate.ContainerSpec.Args; !slices.Contains(args, "--generation.threads=2") {
		t.Errorf("without a CPU figure: %v", args)
	}
	// an encoder keeps its start period
	enc := cpu
	enc.Task = "text-classification"
	if p := BuildSpec(enc, cfg).TaskTemplate.ContainerSpec.Healthcheck.StartPeriod; p != time.Minute {
		t.Errorf("an encoder's start period %s", p)
	}
}

// Diff places text-generation deployments like every other model: on CPUs
// one service on the CPU image; on GPUs one service per replica, its
// estimated GPU memory reserved by best fit and the CUDA image pinned
// there; and refuses, with the reason, what cannot run (what `nlpswarm
// status --plan` shows).
func TestDiffGeneration(t *testing.T) {
	cfg := SpecConfig{Image: goImg, LlamaImage: llamaImg, LlamaCUDAImage: llamaCUDAImg, Network: "net", ArtifactBaseURL: "http://apiserver:8081"}
	cpuOnly := cfg
	cpuOnly.LlamaCUDAImage = ""
	onCPU := deployment.Desired{Model: "chat", Task: TaskTextGeneration, Version: 1, Digest: "sha256:aa", Replicas: 2, Generation: 3,
		Resources: deployment.Resources{MemoryReservation: 5 << 30}}
	onGPU := deployment.Desired{Model: "chat-gpu", Task: TaskTextGeneration, Version: 1, Digest: "sha256:bb", Replicas: 2, Generation: 4,
		Resources: deployment.Resources{MemoryReservation: 4 << 30, GPUs: 1, GPUMemory: 20 << 30}}
	tooBig := onGPU
	tooBig.Model, tooBig.GPUMemory = "huge", 90<<30
	// a fake inventory: two nodes, a 24 GiB GPU with 10 GiB held by another
	// model, a 48 GiB and an 80 GiB one
	inv := placement.Snapshot{Nodes: []placement.Node{
		{ID: "n1", Hostname: "ml-1", Available: true, GPUs: []placement.GPU{{UUID: "GPU-24", Total: 24 << 30, Free: 24 << 30}, {UUID: "GPU-48", Total: 48 << 30, Free: 48 << 30}}},
		{ID: "n2", Hostname: "ml-2", Available: true, GPUs: []placement.GPU{{UUID: "GPU-80", Total: 80 << 30, Free: 80 << 30}}},
	}, Assigned: []placement.Assignment{{Owner: "other", Node: "n1", GPU: "GPU-24", Memory: 10 << 30}}}
	other := deployment.Desired{Model: "other", Task: "feature-extraction", Version: 1, Digest: "sha256:cc", Replicas: 1,
		Resources: deployment.Resources{GPUs: 1, GPUMemory: 10 << 30}}

	p := Diff([]deployment.Desired{onCPU, onGPU, tooBig, other}, nil, inv, cfg)
	byService := map[string]Change{}
	for _, c := range p.Creates {
		byService[c.Service] = c
	}
	c, ok := byService["nlp-chat"]
	if !ok || c.Backend != BackendLlama || c.Replicas != 2 || c.Spec.TaskTemplate.ContainerSpec.Image != llamaImg {
		t.Fatalf("the CPU deployment: %+v (creates %v)", c, p.Creates)
	}
	// best fit: the tightest GPU with 20 GiB free (48 GiB on ml-1), then the
	// other replica away from ml-1 (80 GiB on ml-2)
	want := map[string][2]string{"nlp-chat-gpu-g0": {"n1", "GPU-48"}, "nlp-chat-gpu-g1": {"n2", "GPU-80"}}
	for name, where := range want {
		c, ok := byService[name]
		cs := c.Spec.TaskTemplate.ContainerSpec
		if !ok || c.Backend != BackendLlamaCUDA || cs.Image != llamaCUDAImg || !slices.Contains(cs.Env, "NVIDIA_VISIBLE_DEVICES="+where[1]) ||
			!slices.Contains(c.Spec.TaskTemplate.Placement.Constraints, "node.id=="+where[0]) || !slices.Contains(cs.Args, "--generation.gpulayers=999") {
			t.Errorf("%s: %+v, want llama-cuda pinned to %v", name, c, where)
		}
		if !strings.Contains(c.Why, "on llama-cuda pinned to node "+where[0]+" GPU "+where[1]) {
			t.Errorf("%s: the plan says %q", name, c.Why)
		}
	}
	var assigned []deployment.GPUAssignment
	for _, a := range p.GPUAssigns {
		if a.Model == "chat-gpu" {
			assigned = a.Assignments
		}
	}
	if len(assigned) != 2 || assigned[0].Memory != 20<<30 || assigned[1].Memory != 20<<30 {
		t.Errorf("chat-gpu's assignments %+v, want 20 GiB on each of 2 GPUs", assigned)
	}
	if len(p.Unplaceable) != 1 || p.Unplaceable[0].Model != "huge" || !strings.Contains(p.Unplaceable[0].Reason, "more than any GPU has (the largest: 80 GiB on ml-2)") {
		t.Errorf("unplaceable %+v, want huge refused as larger than any GPU", p.Unplaceable)
	}

	// no CUDA image: the GPU deployments are refused and keep their services;
	// the CPU one runs
	p = Diff([]deployment.Desired{onCPU, onGPU}, nil, inv, cpuOnly)
	if len(p.Unplaceable) != 1 || p.Unplaceable[0].Model != "chat-gpu" || !strings.Contains(p.Unplaceable[0].Reason, "--llamacudaimage") ||
		len(p.Creates) != 1 || p.Creates[0].Service != "nlp-chat" || len(p.GPUAssigns) != 0 {
		t.Errorf("without a CUDA image: unplaceable %+v, creates %d, assigns %+v", p.Unplaceable, len(p.Creates), p.GPUAssigns)
	}
	// no generation image at all: the CPU one is refused too
	p = Diff([]deployment.Desired{onCPU}, nil, inv, SpecConfig{Image: goImg, Network: "net"})
	if len(p.Unplaceable) != 1 || !strings.Contains(p.Unplaceable[0].Reason, "--llamaimage") || len(p.Creates) != 0 {
		t.Errorf("without a generation image: %+v", p)
	}
}

// Issue 15: an embedding GGUF (feature-extraction) is planned like a
// generation model: on CPUs one service on the CPU image, in embeddings
// mode; on GPUs its estimate reserved by best fit, the CUDA image pinned
// there; an ONNX encoder of the same task keeps its engine.
func TestDiffEmbeddingGGUF(t *testing.T) {
	cfg := SpecConfig{Image: goImg, LlamaImage: llamaImg, LlamaCUDAImage: llamaCUDAImg, Network: "net", ArtifactBaseURL: "http://apiserver:8081"}
	onCPU := deployment.Desired{Model: "embed", Task: TaskFeatureExtraction, Format: deployment.FormatGGUF, Version: 1, Digest: "sha256:aa", Replicas: 1,
		Generation: 1, Resources: deployment.Resources{MemoryReservation: 300 << 20}}
	onGPU := deployment.Desired{Model: "embed-gpu", Task: TaskFeatureExtraction, Format: deployment.FormatGGUF, Version: 1, Digest: "sha256:bb", Replicas: 1,
		Generation: 1, Resources: deployment.Resources{MemoryReservation: 300 << 20, GPUs: 1, GPUMemory: 1 << 30}}
	onnx := deployment.Desired{Model: "minilm", Task: TaskFeatureExtraction, Format: deployment.FormatONNX, Version: 1, Digest: "sha256:cc", Replicas: 1,
		Generation: 1, Resources: deployment.Resources{MemoryReservation: 300 << 20}}
	inv := placement.Snapshot{Nodes: []placement.Node{{ID: "n1", Hostname: "ml-1", Available: true,
		GPUs: []placement.GPU{{UUID: "GPU-24", Total: 24 << 30, Free: 24 << 30}}}}}
	p := Diff([]deployment.Desired{onCPU, onGPU, onnx}, nil, inv, cfg)
	by := map[string]Change{}
	for _, c := range p.Creates {
		by[c.Service] = c
	}
	for _, tt := range []struct {
		service, backend, image string
		embeddings              bool
	}{
		{"nlp-embed", BackendLlama, llamaImg, true},
		{"nlp-embed-gpu-g0", BackendLlamaCUDA, llamaCUDAImg, true},
		{"nlp-minilm", deployment.BackendGo, goImg, false},
	} {
		c, ok := by[tt.service]
		cs := c.Spec.TaskTemplate.ContainerSpec
		if !ok || c.Backend != tt.backend || cs.Image != tt.image || slices.Contains(cs.Args, "--generation.embeddings") != tt.embeddings {
			t.Errorf("%s: %+v, want %s on %s (embeddings mode %v); creates %v", tt.service, c, tt.backend, tt.image, tt.embeddings, p.Creates)
		}
	}
	if len(p.Unplaceable) != 0 || len(p.GPUAssigns) != 1 || p.GPUAssigns[0].Model != "embed-gpu" {
		t.Errorf("unplaceable %+v, GPU assignments %+v", p.Unplaceable, p.GPUAssigns)
	}
}
