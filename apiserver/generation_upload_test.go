package apiserver

import (
	"reflect"
	"strings"
	"testing"

	"github.com/nlpswarm/nlpswarm/internal/deployment"

	"github.com/nlpswarm/nlpswarm/modelmgr/ggufcheck/ggufgen"
)

// A text-generation model (issue 15): its GGUF version uploads, is checked
// and records its header and memory estimate; its deployment reserves that
// estimate (host memory on CPUs, GPU memory on GPUs), and what cannot run
// (less memory than the estimate, an encoder backend) is a 400 with
// nothing written.
func TestTextGenerationUploadAndDeploy(t *testing.T) {
	e := newEnv(t)
	if code, body := e.do("POST", "/api/v1/models", adminTok, map[string]any{"name": "tiny", "task": "text-generation"}); code != 201 {
		t.Fatalf("create: %d %v", code, body)
	}
	code, v := e.upload("tiny", tarGz(t, map[string][]byte{"model.gguf": ggufgen.TinyLlama(1).Build()}))
	if code != 201 {
		t.Fatalf("upload: %d %v", code, v)
	}
	md, _ := v["metadata"].(map[string]any)
	gguf, _ := md["gguf"].(map[string]any)
	if gguf["architecture"] != "llama" || gguf["context_length"].(float64) != ggufgen.TinyContext || md["memory_estimate_bytes"].(float64) <= 0 {
		t.Fatalf("version metadata %v", md)
	}
	estimate := md["memory_estimate_bytes"].(float64)
	if code, body := e.upload("tiny", tarGz(t, map[string][]byte{"model.gguf": []byte("GGUF\x03\x00\x00\x00short")})); code != 422 {
		t.Errorf("a broken GGUF: %d %v, want 422", code, body)
	}
	put := func(body map[string]any) (int, map[string]any) {
		return e.do("PUT", "/api/v1/models/tiny/deployment", adminTok, body)
	}
	code, d := put(map[string]any{"replicas": 1})
	if code != 200 || d["memory_reservation_bytes"].(float64) != max(estimate, float64(deployment.MinMemory)) || d["memory_bytes"].(float64) != 0 || d["gpus"].(float64) != 0 {
		t.Fatalf("deploy on CPUs: %d %v, want the estimate %v reserved", code, d, estimate)
	}
	code, d = put(map[string]any{"resources": map[string]any{"gpus": 2}})
	if code != 200 || d["gpu_memory_bytes"].(float64) != float64((int64(estimate)+1)/2) {
		t.Fatalf("deploy on 2 GPUs: %d %v, want half the estimate %v per GPU", code, d, estimate)
	}
	e.refusedDeploys("tiny", d["generation"], []refusedDeploy{
		{map[string]any{"resources": map[string]any{"memory": "32M"}}, "below the model's memory estimate"},
		{map[string]any{"resources": map[string]any{"gpus": 1, "gpu_memory": "1K"}}, "below the model's share"},
		{map[string]any{"backend": "ort"}, "runs on llama.cpp"},
	})
}

// refusedDeploy is a deployment body refused with a message holding want.
type refusedDeploy struct {
	body map[string]any
	want string
}

// refusedDeploys checks that each body is a 400 invalid_request with its
// message, and that model's deployment kept its generation.
func (e *env) refusedDeploys(model string, generation any, bad []refusedDeploy) {
	e.t.Helper()
	for _, b := range bad {
		code, body := e.do("PUT", "/api/v1/models/"+model+"/deployment", adminTok, b.body)
		errObj, _ := body["error"].(map[string]any)
		if code != 400 || errObj == nil || errObj["code"] != "invalid_request" || !strings.Contains(errObj["message"].(string), b.want) {
			e.t.Errorf("deploy %v: %d %v, want 400 invalid_request with %q", b.body, code, body, b.want)
		}
	}
	if code, d := e.do("GET", "/api/v1/models/"+model+"/deployment", adminTok, nil); code != 200 || d["generation"] != generation {
		e.t.Fatalf("a refused deploy changed the deployment: %d %v", code, d)
	}
}

func TestGenerationResources(t *testing.T) {
	const gib = int64(1) << 30
	for _, tt := range []struct {
		name           string
		asked          deployment.Resources
		backend        string
		size, estimate int64
		want           deployment.Resources
		err            string
	}{
		{"CPU: the estimate reserved, no limit given", deployment.Resources{}, "", 4 * gib, 5 * gib, deployment.Resources{MemoryReservation: 5 * gib}, ""},
		{"CPU: a limit above the estimate kept", deployment.Resources{MemoryBytes: 8 * gib, CPUs: 4}, "", 4 * gib, 5 * gib,
			deployment.Resources{MemoryBytes: 8 * gib, MemoryReservation: 5 * gib, CPUs: 4}, ""},
		{"CPU: a limit below the estimate refused", deployment.Resources{MemoryBytes: 4 * gib}, "", 4 * gib, 5 * gib, deployment.Resources{}, "below the model's memory estimate 5.0 GiB"},
		{"CPU: a tiny model gets the floor", deployment.Resources{}, "", 1 << 20, 70 << 20, deployment.Resources{MemoryReservation: deployment.MinMemory}, ""},
		{"no estimate: the file's size", deployment.Resources{}, "", 300 << 20, 0, deployment.Resources{MemoryReservation: 300 << 20}, ""},
		{"1 GPU: the estimate on it, the file's size on the host", deployment.Resources{GPUs: 1}, "", 4 * gib, 5 * gib,
			deployment.Resources{GPUs: 1, GPUMemory: 5 * gib, MemoryReservation: 4 * gib}, ""},
		{"3 GPUs: each its share, rounded up", deployment.Resources{GPUs: 3}, "", 4 * gib, 10, deployment.Resources{GPUs: 3, GPUMemory: (4*gib + 2) / 3, MemoryReservation: 4 * gib}, ""},
		{"GPU memory above the share kept", deployment.Resources{GPUs: 1, GPUMemory: 16 * gib}, "", 4 * gib, 5 * gib,
			deployment.Resources{GPUs: 1, GPUMemory: 16 * gib, MemoryReservation: 4 * gib}, ""},
		{"GPU memory below the share refused", deployment.Resources{GPUs: 2, GPUMemory: 2 * gib}, "", 4 * gib, 5 * gib, deployment.Resources{}, "below the model's share of its memory estimate on 2 GPU(s), 2.5 GiB"},
		{"GPU: a host limit caps the reservation", deployment.Resources{GPUs: 1, MemoryBytes: 1 * gib}, "", 4 * gib, 5 * gib,
			deployment.Resources{GPUs: 1, GPUMemory: 5 * gib, MemoryBytes: gib, MemoryReservation: gib}, ""},
		{"an encoder backend refused", deployment.Resources{}, "go", 4 * gib, 5 * gib, deployment.Resources{}, "runs on llama.cpp"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := generationResources(tt.asked, tt.backend, tt.size, tt.estimate)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("got %+v, %v; want an error with %q", got, err, tt.err)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

// An embedding GGUF (issue 15: task feature-extraction, a model.gguf that
// pools): its deployment is the generation runtime's, with the same
// resources rule as text generation (the upload's memory estimate reserved
// on CPUs, each GPU's share on GPUs), an encoder backend a 400 with nothing
// written, and the record's format gguf (what the scheduler and the gateway
// route by); an ONNX encoder of the same task keeps its rule and format.
func TestEmbeddingGGUFDeploy(t *testing.T) {
	e := newEnv(t)
	if code, body := e.do("POST", "/api/v1/models", adminTok, map[string]any{"name": "embed", "task": "feature-extraction"}); code != 201 {
		t.Fatalf("create: %d %v", code, body)
	}
	code, v := e.upload("embed", tarGz(t, map[string][]byte{"model.gguf": ggufgen.TinyLlamaEmbedding(1).Build()}))
	if code != 201 {
		t.Fatalf("upload: %d %v", code, v)
	}
	md, _ := v["metadata"].(map[string]any)
	estimate, _ := md["memory_estimate_bytes"].(float64)
	if md["gguf"] == nil || estimate <= 0 {
		t.Fatalf("version metadata %v", md)
	}
	put := func(body map[string]any) (int, map[string]any) {
		return e.do("PUT", "/api/v1/models/embed/deployment", adminTok, body)
	}
	code, d := put(map[string]any{"replicas": 1})
	if code != 200 || d["memory_reservation_bytes"].(float64) != max(estimate, float64(deployment.MinMemory)) || d["gpus"].(float64) != 0 {
		t.Fatalf("deploy on CPUs: %d %v, want the estimate %v reserved", code, d, estimate)
	}
	ds, err := deployment.LoadDesired(t.Context(), e.db.Pool)
	if err != nil || len(ds) != 1 || ds[0].Format != deployment.FormatGGUF || ds[0].Task != "feature-extraction" {
		t.Fatalf("LoadDesired %+v %v, want format gguf", ds, err)
	}
	code, d = put(map[string]any{"resources": map[string]any{"gpus": 2}})
	if code != 200 || d["gpu_memory_bytes"].(float64) != float64((int64(estimate)+1)/2) {
		t.Fatalf("deploy on 2 GPUs: %d %v, want half the estimate %v per GPU", code, d, estimate)
	}
	e.refusedDeploys("embed", d["generation"], []refusedDeploy{
		{map[string]any{"backend": "ort"}, "runs on llama.cpp: leave backend out"},
		{map[string]any{"backend": "go", "resources": map[string]any{"gpus": 0}}, "runs on llama.cpp: leave backend out"},
		{map[string]any{"resources": map[string]any{"memory": "32M"}}, "below the model's memory estimate"},
	})
}
