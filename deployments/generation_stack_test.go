package deployments

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nlpswarm/nlpswarm/deployments/images/llama/parity"
	"github.com/nlpswarm/nlpswarm/internal/artifactcred"
	"github.com/nlpswarm/nlpswarm/internal/bearer"
)

// checkGeneration is issue 15's placement on the running stack
// (TestEndToEnd/Generation, on TestEndToEnd's stack): ggufgen's tiny
// llama is pushed as a text-generation model and deployed with no
// resources given; the scheduler runs it as a Swarm service like every
// model, on the CPU generation image make up built (nlpswarm-llama, by ID),
// its `generate` role with the model's slots, its memory reservation the
// upload's estimate; the replica turns healthy and answers
// /v1/completions on the runtimes' overlay with the model's call
// credential only (from the Prometheus container, which shares that
// network, as checkCallCredentials does). The gateway's generation routes
// are not part of it.
func checkGeneration(t *testing.T, sh shFunc, cli func(args ...string) string, token []byte, key string) {
	admin := "Bearer " + strings.TrimSpace(string(token))
	ref, model, err := parity.Load() // the tiny llama transformers' answers were taken on
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "model.gguf"), model, 0o644); err != nil {
		t.Fatal(err)
	}
	cli("models", "create", "tiny", "--task", "text-generation")
	t.Log(cli("models", "push", "tiny", dir))
	var versions struct {
		Versions []struct {
			Metadata struct {
				MemoryEstimate int64 `json:"memory_estimate_bytes"`
			} `json:"metadata"`
		} `json:"versions"`
	}
	if !getJSON(backoffice+"/api/v1/models/tiny/versions", admin, &versions) || len(versions.Versions) != 1 || versions.Versions[0].Metadata.MemoryEstimate <= 0 {
		t.Fatalf("tiny's version: %+v", versions)
	}
	estimate := versions.Versions[0].Metadata.MemoryEstimate

	start := time.Now()
	t.Log(cli("deploy", "tiny", "--replicas", "1"))
	var d struct {
		Status            string `json:"status"`
		StatusMessage     string `json:"status_message"`
		MemoryReservation int64  `json:"memory_reservation_bytes"`
		EffectiveBackend  string `json:"effective_backend"`
		Observed          struct {
			Running int `json:"running"`
		} `json:"observed"`
	}
	waitFor(t, 5*time.Minute, func() bool {
		return getJSON(backoffice+"/api/v1/models/tiny/deployment", admin, &d) && d.Status == "running" && d.Observed.Running >= 1
	})
	t.Logf("deploy tiny: request → replica running (healthy, in Swarm) %s", time.Since(start).Round(10*time.Millisecond))
	if d.EffectiveBackend != "llama" || d.MemoryReservation != max(estimate, 256<<20) {
		t.Fatalf("deployment %+v: want backend llama, the estimate %d reserved", d, estimate)
	}

	// the service: the CPU generation image by ID, the generate role
	llamaID := strings.TrimSpace(sh(time.Minute, nil, "docker", "image", "inspect", "-f", "{{.Id}}", "nlpswarm-llama:dev"))
	spec := sh(time.Minute, nil, "docker", "service", "inspect", "-f",
		`{{.Spec.TaskTemplate.ContainerSpec.Image}}|{{index .Spec.Labels "nlpswarm.backend"}}|{{.Spec.TaskTemplate.Resources.Reservations.MemoryBytes}}|{{join .Spec.TaskTemplate.ContainerSpec.Args " "}}`, "nlp-tiny")
	parts := strings.SplitN(strings.TrimSpace(spec), "|", 4)
	if len(parts) != 4 || parts[0] != llamaID || parts[1] != "llama" || parts[2] != fmt.Sprint(d.MemoryReservation) ||
		!strings.HasPrefix(parts[3], "generate --generation.name=tiny ") || !strings.Contains(parts[3], "--generation.parallel=4") {
		t.Fatalf("nlp-tiny's spec %q, want the llama image %s, backend llama, the reservation, the generate role", spec, llamaID)
	}
	if out := cli("status"); !strings.Contains(out, "tiny") || !strings.Contains(out, "llama") {
		t.Errorf("nlpswarm status does not show tiny on llama:\n%s", out)
	}

	// the replica answers on the runtimes' overlay, with tiny's call credential only
	callKey, err := artifactcred.CallKey(strings.TrimSpace(sh(time.Minute, nil, "cat", filepath.Join(".state", "replica_call_secret"))))
	if err != nil || callKey == nil {
		t.Fatalf("call key: %v", err)
	}
	prom := strings.Fields(sh(time.Minute, nil, "docker", "ps", "-q", "--filter", "label=com.docker.swarm.service.name=nlp_prometheus"))
	if len(prom) == 0 {
		t.Fatal("no prometheus container")
	}
	post := func(auth, body string) string {
		t.Helper()
		hdr := ""
		if auth != "" {
			hdr = "Authorization: " + auth + "\r\n"
		}
		req := fmt.Sprintf("POST /v1/completions HTTP/1.0\r\nHost: nlp-tiny\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s", len(body), hdr, body)
		cmd := exec.Command("docker", "exec", prom[0], "bash", "-c", `exec 3<>/dev/tcp/nlp-tiny/8080 && printf '%s' "$1" >&3 && cat <&3`, "probe", req)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		// a refusal (401) may come before the replica read the body, which
		// it then resets on close: cat prints the answer, then fails
		if err != nil && !strings.HasPrefix(string(out), "HTTP/1.") {
			t.Fatalf("POST /v1/completions from the prometheus container: %v %s%s", err, stderr.String(), out)
		}
		return string(out)
	}
	body := `{"prompt":"hello world","max_tokens":4,"temperature":0}`
	if got := post("", body); !strings.Contains(strings.SplitN(got, "\n", 2)[0], " 401 ") {
		t.Fatalf("without a credential: %q, want 401", got)
	}
	if got := post(bearer.Header(artifactcred.Call(callKey, "sentiment")), body); !strings.Contains(strings.SplitN(got, "\n", 2)[0], " 401 ") {
		t.Fatalf("with sentiment's credential: %q, want 401", got)
	}
	got := post(bearer.Header(artifactcred.Call(callKey, "tiny")), body)
	if !strings.Contains(strings.SplitN(got, "\n", 2)[0], " 200 ") || !strings.Contains(got, `"completion_tokens":4`) {
		t.Fatalf("with tiny's credential: %q, want 200 and 4 completion tokens", got)
	}
	t.Logf("nlp-tiny runs on nlpswarm-llama (%s), reserves %d bytes (the estimate, at least 256 MiB), answers /v1/completions with tiny's call credential only",
		llamaID[:19], d.MemoryReservation)
	t.Run("ThroughTheGateway", func(t *testing.T) { checkGenerationGateway(t, "tiny", key, admin, ref) })
	t.Log(cli("undeploy", "tiny"))
	t.Run("EmbeddingGGUF", func(t *testing.T) { checkEmbeddingGGUF(t, cli, key, ref) })
}
