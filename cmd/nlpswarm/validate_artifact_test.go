//go:build !agentonly

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime/multipart"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nlpswarm/nlpswarm/internal/sandbox"
	"github.com/nlpswarm/nlpswarm/modelmgr"
	"github.com/nlpswarm/nlpswarm/modelmgr/onnxcheck/onnxtest"
)

// fixture is the shared fixture name (embeddings, sentiment, ner) as files.
func fixture(t *testing.T, name string) map[string][]byte {
	t.Helper()
	files, err := onnxtest.FixtureFiles(filepath.Join("..", "..", "..", "shared", "fixtures", "nlp", name))
	if err != nil {
		t.Skipf("fixture absent: %v", err)
	}
	return files
}

// hostileFixture is the embeddings fixture with model.onnx replaced by
// model (nil keeps the real one), as files.
func hostileFixture(t *testing.T, model []byte) map[string][]byte {
	t.Helper()
	files := fixture(t, "embeddings")
	if model != nil {
		files["model.onnx"] = model
	}
	return files
}

func tarGzBytes(_ *testing.T, files map[string][]byte) []byte { return onnxtest.TarGz(files) }

// The real child (`nlpswarm validate-artifact`) validates and smoke-tests
// the three fixtures inside its sandbox (Landlock where the kernel has it,
// reported in the metadata), and refuses the model of issue 17 before any
// engine reads it.
func TestValidateArtifactChild(t *testing.T) {
	iso := &modelmgr.Isolation{Command: []string{binPath, "validate-artifact"}, Limits: modelmgr.DefaultChildLimits}
	v := modelmgr.Validator{Isolation: iso, SmokeTimeout: 2 * time.Minute}
	write := func(b []byte) string {
		p := filepath.Join(t.TempDir(), "m.tar.gz")
		os.WriteFile(p, b, 0o644)
		return p
	}
	probe := sandbox.Probe()
	probe.NoSockets = true // the validation child's policy asks for the socket filter
	if !probe.Enforced() {
		t.Logf("Landlock unavailable here, the child validates without it: %s", probe)
	}
	for _, f := range []struct{ name, task string }{{"embeddings", "feature-extraction"}, {"sentiment", "text-classification"}, {"ner", "token-classification"}} {
		md, err := v.Validate(context.Background(), write(tarGzBytes(t, fixture(t, f.name))), t.TempDir(), f.task)
		if err != nil || !md.SmokeTested || md.OnnxBytes == 0 {
			t.Fatalf("the %s fixture in the child: %v %+v", f.name, err, md)
		}
		if md.Sandbox != probe {
			t.Fatalf("the %s fixture was validated under %+v, the probe says %+v", f.name, md.Sandbox, probe)
		}
	}
	_, err := v.Validate(context.Background(), write(tarGzBytes(t, hostileFixture(t, onnxtest.Exfiltrating("../../run/secrets/internal_token")))), t.TempDir(), "feature-extraction")
	var ve *modelmgr.ValidationError
	if !errors.As(err, &ve) || !strings.Contains(fmt.Sprint(ve.Reasons), "not a plain relative name") {
		t.Fatalf("the exfiltrating model: %v", err)
	}
}

// Issue 17, end to end: the 494-byte model whose tensor is stored "externally"
// in the internal token is refused at upload with a 422 naming the reason,
// and the token appears nowhere in the answer.
func TestUploadRefusesExternalDataOutsideTheArchive(t *testing.T) {
	url, token := startAPIServer(t)
	runBinOK(t, []string{"NLPSWARM_SERVER=" + url, "NLPSWARM_TOKEN=" + token}, "models", "create", "exfil", "--task", "feature-extraction")
	// the apiserver's internal token file lies next to its store; the test
	// server's store is <dir>/store, so from <dir>/store/tmp/validate-*/... the
	// token is some levels up: try the plain and the deep traversal
	for _, loc := range []string{"../../run/secrets/internal_token", "../../../../../internal", "/etc/hostname"} {
		archive := tarGzBytes(t, hostileFixture(t, onnxtest.Exfiltrating(loc)))
		var body bytes.Buffer
		mw := multipart.NewWriter(&body)
		part, _ := mw.CreateFormFile("archive", "exfil.tar.gz")
		part.Write(archive)
		mw.Close()
		req, _ := http.NewRequest("POST", url+"/api/v1/models/exfil/versions", &body)
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", mw.FormDataContentType())
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnprocessableEntity || !strings.Contains(string(b), "not a plain relative name") {
			t.Fatalf("location %s: %d %s", loc, resp.StatusCode, b)
		}
		if strings.Contains(string(b), "cli-internal-token") {
			t.Fatalf("the answer holds the internal token: %s", b)
		}
	}
	out := runBinOK(t, []string{"NLPSWARM_SERVER=" + url, "NLPSWARM_TOKEN=" + token}, "models", "versions", "exfil")
	if strings.Contains(out, "sha256:") {
		t.Fatalf("a refused model was stored: %s", out)
	}
}

// The runtime checks a model folder again before loading it: the same model
// given as --modeldir never starts.
func TestRuntimeRefusesExternalDataAtLoad(t *testing.T) {
	dir := t.TempDir()
	tmp := t.TempDir()
	os.WriteFile(filepath.Join(tmp, "secret"), []byte("0123456789abcdef-secret"), 0o600)
	for name, b := range hostileFixture(t, onnxtest.Exfiltrating("../secret")) {
		os.WriteFile(filepath.Join(dir, name), b, 0o644)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binPath, "runtime", "--name=exfil", "--task=feature-extraction", "--modeldir="+dir, "--listen=127.0.0.1:0")
	cmd.Env = []string{"TMPDIR=" + tmp}
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("the runtime served the model: %s", out)
	}
	if err == nil || !strings.Contains(string(out), "not a plain relative name") {
		t.Fatalf("runtime: %v\n%s", err, out)
	}
}

// The apiserver says at start what its validation child will run under:
// the probed Landlock ABI as a gauge (0: none), and a log line, a warning
// when there is no sandbox.
func TestProbeValidationSandbox(t *testing.T) {
	reg := prometheus.NewRegistry()
	var logs bytes.Buffer
	probeValidationSandbox(reg, slog.New(slog.NewTextHandler(&logs, nil)))
	probe := sandbox.Probe()
	mfs, err := reg.Gather()
	if err != nil || len(mfs) != 1 || mfs[0].GetName() != "nlpswarm_apiserver_validation_sandbox_abi" ||
		mfs[0].GetMetric()[0].GetGauge().GetValue() != float64(probe.ABI) {
		t.Fatalf("gathered %v (%v), want the gauge at the probe's ABI %d", mfs, err, probe.ABI)
	}
	want := `level=INFO msg="upload validation sandbox"`
	if !probe.Enforced() {
		want = `level=WARN msg="upload validation runs without a sandbox`
	}
	if !strings.Contains(logs.String(), want) {
		t.Fatalf("log %q, want %q", logs.String(), want)
	}
}
