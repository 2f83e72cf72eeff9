package deployments

import (
	"bytes"
	"encoding/json"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nlpswarm/nlpswarm/internal/apierror"
	"github.com/nlpswarm/nlpswarm/internal/sandbox"
	"github.com/nlpswarm/nlpswarm/modelmgr/onnxcheck/onnxtest"
)

// apiserverSecrets are the Docker secrets the stack mounts in the
// apiserver, whose values make up keeps in .state.
var apiserverSecrets = []string{"internal_token", "admin_token", "db_password_apiserver", "redis_password_apiserver"}

// checkModelFileRead is issue 17's model-file read on the running stack
// (TestEndToEnd/ModelFileRead, on TestEndToEnd's stack rather than one of
// its own, which cost CI about 70 s): a model owner uploads, through the backoffice API, the embeddings
// fixture with a model.onnx whose initializer is "external data" stored at
// ../../run/secrets/internal_token (or deeper, or absolute, or another of
// the apiserver's secrets). Before the fix the secret came back as the
// embedding; now every upload is a 422 invalid_archive naming the
// location, no byte sequence of any apiserver secret is in the answer, and
// nothing is stored. Then the real fixture still uploads (validated and
// smoke-tested in the child, whose sandbox the stored metadata reports
// truthfully, as the apiserver's log does), deploys and answers through the
// gateway.
func checkModelFileRead(t *testing.T, root string, sh shFunc, cli func(args ...string) string, token []byte) {
	fixture := filepath.Join(root, "..", "shared", "fixtures", "nlp", "embeddings")
	files, err := onnxtest.FixtureFiles(fixture)
	if err != nil {
		t.Skipf("fixture absent: %v", err)
	}
	admin := "Bearer " + strings.TrimSpace(string(token))
	var secrets []string
	for _, s := range apiserverSecrets {
		b, err := os.ReadFile(filepath.Join(root, ".state", s))
		if err != nil || len(bytes.TrimSpace(b)) < 16 {
			t.Fatalf("secret %s in .state: %v (%d bytes)", s, err, len(b))
		}
		secrets = append(secrets, strings.TrimSpace(string(b)))
	}

	cli("models", "create", "exfil", "--task", "feature-extraction")
	for _, loc := range []string{
		"../../run/secrets/internal_token",
		"../../../../../../../../run/secrets/db_password_apiserver",
		"/run/secrets/admin_token",
		"model.onnx/../../../../../../run/secrets/redis_password_apiserver",
	} {
		files["model.onnx"] = onnxtest.Exfiltrating(loc)
		status, header, body := upload(t, backoffice, "exfil", admin, onnxtest.TarGz(files))
		var e apierror.Body
		if err := json.Unmarshal(body, &e); err != nil || status != http.StatusUnprocessableEntity || e.Error.Code != "invalid_archive" ||
			!strings.Contains(strings.Join(e.Error.Details, " "), "external data location \""+loc+"\" is not a plain relative name") {
			t.Fatalf("location %s: %d %s, want 422 invalid_archive naming the location", loc, status, body)
		}
		answer := header + string(body)
		for i, s := range secrets {
			if chunk := leakedChunk(answer, s, 8); chunk != "" {
				t.Fatalf("location %s: the answer holds %q of the apiserver's %s:\n%s", loc, chunk, apiserverSecrets[i], answer)
			}
		}
	}
	var vs struct {
		Versions []json.RawMessage `json:"versions"`
	}
	if !getJSON(backoffice+"/api/v1/models/exfil/versions", admin, &vs) || len(vs.Versions) != 0 {
		t.Fatalf("refused uploads were stored: %s", vs.Versions)
	}
	t.Log("4 exfiltrating models refused with 422 invalid_archive, no secret in the answers, nothing stored")

	// the real fixture through the same path, then deployed and called
	cli("models", "create", "embed", "--task", "feature-extraction")
	files["model.onnx"], err = os.ReadFile(filepath.Join(fixture, "model.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	if status, _, body := upload(t, backoffice, "embed", admin, onnxtest.TarGz(files)); status != http.StatusCreated {
		t.Fatalf("the embeddings fixture: %d %s", status, body)
	}
	var stored struct {
		Versions []struct {
			Metadata struct {
				SmokeTested bool           `json:"smoke_tested"`
				Sandbox     sandbox.Status `json:"sandbox"`
			} `json:"metadata"`
		} `json:"versions"`
	}
	if !getJSON(backoffice+"/api/v1/models/embed/versions", admin, &stored) || len(stored.Versions) != 1 {
		t.Fatalf("versions of embed: %+v", stored)
	}
	md := stored.Versions[0].Metadata
	if !md.SmokeTested || md.Sandbox.Enforced() == (md.Sandbox.Unavailable != "") {
		t.Fatalf("the stored validation report: %+v, want smoke-tested and a sandbox ABI or the reason for none", md)
	}
	// the apiserver says the same in its log, at start and for the upload
	logs := sh(time.Minute, nil, "docker", "service", "logs", "nlp_apiserver")
	if want := map[bool]string{true: "upload validation sandbox", false: "upload validated without a sandbox"}[md.Sandbox.Enforced()]; !strings.Contains(logs, want) {
		t.Fatalf("the apiserver's log lacks %q:\n%s", want, logs)
	}
	t.Logf("the fixture was validated in the apiserver's container under: %s", md.Sandbox)

	t.Log(cli("deploy", "embed", "--replicas", "1", "--memory", "512M", "--wait", "--timeout", "5m"))
	cli("accounts", "create", "owner", "--plan", "standard")
	lines := strings.Split(strings.TrimSpace(cli("keys", "create", "1", "--name", "owner")), "\n")
	key := strings.TrimSpace(lines[len(lines)-1])
	waitFor(t, 2*time.Minute, func() bool {
		return postOK("http://127.0.0.1:8080/v1/embed/embeddings", "Token "+key, `{"text":"hello world"}`)
	})
	t.Log("the embeddings fixture uploaded, deployed and answered through the gateway")
}

// backoffice is the stack's backoffice API, on loopback (make up's forwarder).
const backoffice = "http://127.0.0.1:8081"

// upload posts archive to the backoffice API at api as the multipart field
// "archive" of a new version of model, as the CLI's push does, and returns
// the status, headers and body.
func upload(t *testing.T, api, model, auth string, archive []byte) (int, string, []byte) {
	t.Helper()
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	part, _ := mw.CreateFormFile("archive", model+".tar.gz")
	part.Write(archive)
	mw.Close()
	req, _ := http.NewRequest("POST", api+"/api/v1/models/"+model+"/versions", &body)
	req.Header.Set("Authorization", auth)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var h strings.Builder
	resp.Header.Write(&h)
	return resp.StatusCode, h.String(), b
}

// leakedChunk returns the first n-byte piece of secret found in s, or "".
func leakedChunk(s, secret string, n int) string {
	for i := 0; i+n <= len(secret); i++ {
		if strings.Contains(s, secret[i:i+n]) {
			return secret[i : i+n]
		}
	}
	return ""
}
