package generation

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nlpswarm/nlpswarm/modelmgr/ggufcheck"
)

func TestServerArgs(t *testing.T) {
	model := ggufcheck.Info{Architecture: "llama", ContextLength: 4096}
	embed := model
	embed.Pooling, embed.PoolingType = true, "mean"
	for _, c := range []struct {
		name  string
		cfg   Config
		info  ggufcheck.Info
		want  string // the command line after -m PATH --host 127.0.0.1 --port 1
		error string
	}{
		{"generation, the model's context per slot", Config{Parallel: 4}, model, "--parallel 4 -c 16384 -t 2 --n-gpu-layers 0 --no-webui", ""},
		{"generation, a shorter context", Config{Parallel: 2, Context: 256}, model, "--parallel 2 -c 512 -t 2 --n-gpu-layers 0 --no-webui", ""},
		{"generation, never past the model's context", Config{Parallel: 1, Context: 1 << 20}, model, "--parallel 1 -c 4096 -t 2 --n-gpu-layers 0 --no-webui", ""},
		{"a pooling model served for generation pools nothing", Config{Parallel: 1}, embed, "--parallel 1 -c 4096 -t 2 --n-gpu-layers 0 --no-webui", ""},
		{"the model named as customers call it, on every layer of a GPU", Config{Name: "tiny", Parallel: 1, GPULayers: 999}, model, "--parallel 1 -c 4096 -t 2 --n-gpu-layers 999 --no-webui --alias tiny", ""},
		{"embeddings: the GGUF's pooling, a slot in one batch", Config{Parallel: 2, Context: 512, Embeddings: true}, embed,
			"--parallel 2 -c 1024 -t 2 --n-gpu-layers 0 --no-webui --embeddings --pooling mean -b 512 -ub 512", ""},
		{"embeddings of a model that does not pool", Config{Embeddings: true}, model, "", `has ""`},
		{"embeddings of a per-token model", Config{Embeddings: true}, ggufcheck.Info{Architecture: "bert", ContextLength: 512, Pooling: true, PoolingType: "none"}, "", `has "none"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			args, err := serverArgs(c.cfg, c.info, "/m/model.gguf", 1, 2)
			if c.error != "" {
				if err == nil || !strings.Contains(err.Error(), c.error) {
					t.Fatalf("got %v, %v; want an error naming %s", args, err, c.error)
				}
				return
			}
			head := []string{"-m", "/m/model.gguf", "--host", "127.0.0.1", "--port", "1"}
			if err != nil || !slices.Equal(args[:len(head)], head) || strings.Join(args[len(head):], " ") != c.want {
				t.Errorf("got %q, %v; want %q", args, err, c.want)
			}
		})
	}
}

// A replica serves one mode's routes and answers the other's with a 400
// that says what it serves (after the call credential, like every route).
func TestRoutesOfEachMode(t *testing.T) {
	t.Setenv("GENERATION_FAKE", "ok")
	t.Setenv("GENERATION_FAKE_CANCELLED", filepath.Join(t.TempDir(), "cancelled"))
	for _, embeddings := range []bool{false, true} {
		cfg := DefaultConfig()
		cfg.Name, cfg.Server, cfg.Embeddings = "tiny", os.Args[0], embeddings
		dir := modelDir(t)
		if embeddings {
			dir = embeddingModelDir(t)
		}
		r, err := Start(context.Background(), cfg, dir, slog.New(slog.DiscardHandler), NewMetrics(prometheus.NewRegistry()))
		if err != nil {
			t.Fatal(err)
		}
		r.SetCallCredential("cred")
		srv := httptest.NewServer(r.Handler())
		wrong, right := "/v1/embeddings", "/v1/completions"
		if embeddings {
			wrong, right = right, wrong
		}
		call := func(path, cred string) (int, string) {
			req, _ := http.NewRequest("POST", srv.URL+path, strings.NewReader(`{"prompt":"x","input":"x","max_tokens":1}`))
			req.Header.Set("Authorization", "Bearer "+cred)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, string(b)
		}
		if code, body := call(wrong, "cred"); code != 400 || !strings.Contains(body, `"wrong_task"`) || !strings.Contains(body, right+")") {
			t.Errorf("embeddings %v: %s answered %d %s, want 400 wrong_task naming %s", embeddings, wrong, code, body, right)
		}
		if code, _ := call(wrong, "nope"); code != 401 {
			t.Errorf("embeddings %v: %s without the credential answered %d, want 401", embeddings, wrong, code)
		}
		if code, body := call(right, "cred"); code == 400 && strings.Contains(body, "wrong_task") {
			t.Errorf("embeddings %v: %s refused: %s", embeddings, right, body)
		}
		srv.Close()
		r.kill()
	}
}
