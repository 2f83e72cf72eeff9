package modelmgr

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nlpswarm/nlpswarm/modelmgr/onnxcheck/onnxtest"
)

const fixtures = "../../shared/fixtures/nlp"

// fixtureFiles reads a model folder of shared/fixtures.
func fixtureFiles(t *testing.T, name string) map[string][]byte {
	t.Helper()
	m, err := onnxtest.FixtureFiles(filepath.Join(fixtures, name))
	if err != nil {
		t.Skipf("fixture %s: %v", name, err)
	}
	return m
}

// tarGz writes files (name → content) as a .tar.gz in a temp folder.
func tarGz(t *testing.T, files map[string][]byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "model.tar.gz")
	if err := os.WriteFile(p, onnxtest.TarGz(files), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func with(base map[string][]byte, mod func(map[string][]byte)) map[string][]byte {
	m := map[string][]byte{}
	for k, v := range base {
		m[k] = v
	}
	mod(m)
	return m
}

// Validation refuses what issue 17 found hostile, and the smoke inference
// never sees it.
func TestValidateRefusesHostileArchives(t *testing.T) {
	good := fixtureFiles(t, "embeddings")
	secretDir := t.TempDir()
	os.WriteFile(filepath.Join(secretDir, "internal_token"), []byte("s3cr3t-internal-token"), 0o600)
	cases := []struct {
		name  string
		files map[string][]byte
		want  string
	}{
		{"external data outside the archive", with(good, func(m map[string][]byte) {
			m["model.onnx"] = onnxtest.Exfiltrating("../../run/secrets/internal_token")
		}), "not a plain relative name"},
		{"external data by absolute path", with(good, func(m map[string][]byte) {
			m["model.onnx"] = onnxtest.Exfiltrating(filepath.Join(secretDir, "internal_token"))
		}), "not a plain relative name"},
		{"negative dims", with(good, func(m map[string][]byte) {
			m["model.onnx"] = onnxtest.Model(onnxtest.Graph([]onnxtest.Tensor{{Dims: []int64{-3, 4}, DataType: 1, Raw: make([]byte, 16)}}))
		}), "negative dimension"},
		{"tensor larger than the file", with(good, func(m map[string][]byte) {
			m["model.onnx"] = onnxtest.Model(onnxtest.Graph([]onnxtest.Tensor{{Dims: []int64{1 << 30}, DataType: 1}}))
		}), "declares"},
		{"tokenizer without a model", with(good, func(m map[string][]byte) {
			m["tokenizer.json"] = []byte(`{"version":"1.0","added_tokens":[{"id":1}],"model":null}`)
		}), "model section that is not an object"},
		{"config.json with trailing data", with(good, func(m map[string][]byte) {
			m["config.json"] = append(append([]byte(nil), good["config.json"]...), []byte(`{"again":1}`)...)
		}), "data after the JSON value"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			smoked := false
			v := Validator{Extract: Extract, Smoke: func(context.Context, string, string) error { smoked = true; return nil }}
			_, err := v.Validate(context.Background(), tarGz(t, c.files), t.TempDir(), "feature-extraction")
			var ve *ValidationError
			if !errors.As(err, &ve) || !strings.Contains(fmt.Sprint(ve.Reasons), c.want) {
				t.Fatalf("got %v, want a refusal with %q", err, c.want)
			}
			if smoked {
				t.Fatal("the smoke inference ran on a refused model")
			}
		})
	}
	md, err := Validator{Extract: Extract}.Validate(context.Background(), tarGz(t, good), t.TempDir(), "feature-extraction")
	if err != nil || md.OnnxBytes == 0 {
		t.Fatalf("the fixture was refused: %v %+v", err, md)
	}
}

// A 50 MB config.json (49 KB gzipped in the audit) is refused by its size,
// before any decoding; so is an oversize tokenizer.json.
func TestCheckDirCapsJSON(t *testing.T) {
	good := fixtureFiles(t, "embeddings")
	for _, c := range []struct {
		file string
		size int64
	}{{"config.json", 50 << 20}, {"tokenizer.json", 65 << 20}} {
		dir := t.TempDir()
		for k, v := range good {
			os.WriteFile(filepath.Join(dir, k), v, 0o644)
		}
		f, err := os.OpenFile(filepath.Join(dir, c.file), os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.Truncate(c.size) // sparse: no disk used
		f.Close()
		_, reasons := CheckDir(dir, "feature-extraction")
		if !strings.Contains(fmt.Sprint(reasons), c.file+" is") || !strings.Contains(fmt.Sprint(reasons), "the limit is") {
			t.Fatalf("%s of %d bytes: reasons %v", c.file, c.size, reasons)
		}
	}
}

func TestHasObjectKey(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{`{"model":{"type":"WordPiece","vocab":{"a":1}}}`, ""},
		{`{"added":[1,{"model":2}],"model":{}}`, ""},
		{`{"added":[1,2]}`, "has no model section"},
		{`{"model":[1]}`, "not an object"},
		{`[1,2`, "not valid JSON"},
		{`{"model":{}`, "not valid JSON"},
		{`{"a":"\u0000`, "not valid JSON"},
	} {
		err := hasObjectKey(strings.NewReader(c.in), "model")
		if (c.want == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.in, err, c.want)
		}
	}
}
