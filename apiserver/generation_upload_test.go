package apiserver

import (
	"strings"
	"testing"

	"github.com/nlpswarm/nlpswarm/modelmgr/ggufcheck/ggufgen"
)

// A text-generation model (issue 15): its GGUF version uploads, is checked
// and records its header and memory estimate; deploying it is refused with
// the reason until the scheduler runs the generation runtime.
func TestTextGenerationUploadAndDeployRefusal(t *testing.T) {
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
		t.Errorf("version metadata %v", md)
	}
	if code, body := e.upload("tiny", tarGz(t, map[string][]byte{"model.gguf": []byte("GGUF\x03\x00\x00\x00short")})); code != 422 {
		t.Errorf("a broken GGUF: %d %v, want 422", code, body)
	}
	code, body := e.do("PUT", "/api/v1/models/tiny/deployment", adminTok, map[string]any{})
	errObj, _ := body["error"].(map[string]any)
	if code != 400 || errObj == nil || !strings.Contains(errObj["message"].(string), "text-generation") {
		t.Errorf("deploy: %d %v, want 400 naming text-generation", code, body)
	}
}
