package models

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nlpswarm/nlpswarm/internal/pg/pgtest"
	"github.com/nlpswarm/nlpswarm/internal/sandbox"
)

// The go engine loads and answers inside the sandbox the apiserver's
// validation child confines itself to: EngineFiles and the model's folder
// readable, a scratch folder writable, nothing else.
func TestEngineLoadsInSandbox(t *testing.T) {
	engineInSandbox(t, "TestEngineLoadsInSandbox", EngineConfig{Backend: BackendGo})
}

// engineInSandbox runs test (the calling test's name) again in a child
// process, which confines itself and loads the embeddings fixture on eng
// (no fallback to another engine) and predicts. A child, because the
// sandbox cannot be undone and ORT allows one session per process.
func engineInSandbox(t *testing.T, test string, eng EngineConfig) {
	dir, err := filepath.Abs(fixture(t, "embeddings"))
	if err != nil {
		t.Fatal(err)
	}
	if scratch := os.Getenv("NLPSWARM_SANDBOX_SCRATCH"); scratch != "" {
		pol := EngineFiles()
		pol.ReadDirs = append(pol.ReadDirs, dir)
		pol.WriteDirs = append(pol.WriteDirs, scratch)
		st, err := sandbox.Restrict(pol)
		if err != nil || !st.Enforced() {
			t.Fatalf("sandbox: %+v %v", st, err)
		}
		if _, err := os.ReadFile("/etc/passwd"); !errors.Is(err, os.ErrPermission) {
			t.Fatalf("the sandbox let /etc/passwd be read: %v", err)
		}
		m, err := LoadWith(dir, "embed", FeatureExtraction, eng)
		if err != nil {
			t.Fatalf("load on %s in the sandbox: %v", eng.Backend, err)
		}
		defer m.Close()
		p := Params{}
		p.Check(FeatureExtraction)
		out, err := m.Predict(context.Background(), []string{"hello world"}, p)
		if err != nil || len(out) != 1 || m.Backend != eng.Backend {
			t.Fatalf("predict on %s (%s) in the sandbox: %v %v", eng.Backend, m.Backend, out, err)
		}
		t.Logf("%s loaded and answered under %s", m.Backend, st)
		return
	}
	if st := sandbox.Probe(); !st.Enforced() {
		pgtest.Unavailable(t, "Landlock", errors.New(st.Unavailable))
	}
	scratch := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^"+test+"$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), "NLPSWARM_SANDBOX_SCRATCH="+scratch, "TMPDIR="+scratch)
	out, err := cmd.CombinedOutput()
	t.Logf("child:\n%s", filterSchemaErrors(out))
	if err != nil {
		t.Fatalf("%s in a sandboxed child: %v", eng.Backend, err)
	}
}

// filterSchemaErrors drops the "Schema error" lines Debian's libonnx prints
// at load (schemas registered twice, harmless).
func filterSchemaErrors(b []byte) string {
	var keep []string
	for _, l := range strings.Split(string(b), "\n") {
		if l != "" && !strings.HasPrefix(l, "Schema error") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}
