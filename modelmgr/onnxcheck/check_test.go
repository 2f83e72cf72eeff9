package onnxcheck

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nlpswarm/nlpswarm/modelmgr/onnxcheck/onnxtest"
)

type T = onnxtest.Tensor
type KV = onnxtest.KV

func ext(loc, off, ln string) []KV {
	kv := []KV{{"location", loc}}
	if off != "" {
		kv = append(kv, KV{"offset", off})
	}
	if ln != "" {
		kv = append(kv, KV{"length", ln})
	}
	return kv
}

// modelDir writes model.onnx and a 64-byte weights.bin (plus a symlink to it
// and a folder) in a fresh folder.
func modelDir(t *testing.T, model []byte) string {
	t.Helper()
	dir := t.TempDir()
	must(t, os.WriteFile(filepath.Join(dir, "model.onnx"), model, 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "weights.bin"), make([]byte, 64), 0o644))
	must(t, os.Symlink("weights.bin", filepath.Join(dir, "link.bin")))
	must(t, os.Mkdir(filepath.Join(dir, "sub"), 0o755))
	must(t, os.WriteFile(filepath.Join(dir, "sub", "w.bin"), make([]byte, 64), 0o644))
	must(t, os.Symlink("..", filepath.Join(dir, "up")))
	return dir
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestCheckFile(t *testing.T) {
	float4 := func(loc, off, ln string) []T {
		return []T{{Name: "w", Dims: []int64{4}, DataType: 1, Location: 1, External: ext(loc, off, ln)}}
	}
	cases := []struct {
		name  string
		model []byte
		want  string // "" accepts; else a piece of the refusal
	}{
		{"inline raw data", onnxtest.Model(onnxtest.Graph([]T{{Name: "w", Dims: []int64{2, 2}, DataType: 1, Raw: make([]byte, 16)}})), ""},
		{"external data inside the folder", onnxtest.Model(onnxtest.Graph(float4("weights.bin", "16", "16"))), ""},
		{"external data in a subfolder, no length", onnxtest.Model(onnxtest.Graph(float4("sub/w.bin", "48", ""))), ""},
		{"issue 17: external data reads the internal token", onnxtest.Exfiltrating("../../run/secrets/internal_token"), "not a plain relative name"},
		{"external data absolute", onnxtest.Model(onnxtest.Graph(float4("/etc/passwd", "", ""))), "not a plain relative name"},
		{"external data a..b traversal", onnxtest.Model(onnxtest.Graph(float4("sub/../weights.bin", "", ""))), "not a plain relative name"},
		{"external data through a symlink", onnxtest.Model(onnxtest.Graph(float4("link.bin", "", ""))), "link"},
		{"external data through a linked folder", onnxtest.Model(onnxtest.Graph(float4("up/weights.bin", "", ""))), "link"},
		{"external data missing", onnxtest.Model(onnxtest.Graph(float4("nope.bin", "", ""))), "not in the model folder"},
		{"external data is a folder", onnxtest.Model(onnxtest.Graph(float4("sub", "", ""))), "not a regular file"},
		{"external data NUL", onnxtest.Model(onnxtest.Graph(float4("weights.bin\x00x", "", ""))), "not a plain relative name"},
		{"external offset past the end", onnxtest.Model(onnxtest.Graph(float4("weights.bin", "65", ""))), "past the end"},
		{"external offset+length past the end", onnxtest.Model(onnxtest.Graph(float4("weights.bin", "60", "16"))), "past its end"},
		{"external length huge", onnxtest.Model(onnxtest.Graph(float4("weights.bin", "0", "9223372036854775807"))), "past its end"},
		{"external negative offset", onnxtest.Model(onnxtest.Graph(float4("weights.bin", "-8", "16"))), "non-negative"},
		{"external tensor larger than its span", onnxtest.Model(onnxtest.Graph(float4("weights.bin", "0", "8"))), "declares 16 bytes"},
		{"external entries without EXTERNAL", onnxtest.Model(onnxtest.Graph([]T{{Dims: []int64{4}, DataType: 1, External: ext("weights.bin", "", "")}})), "not marked EXTERNAL"},
		{"EXTERNAL without location", onnxtest.Model(onnxtest.Graph([]T{{Dims: []int64{4}, DataType: 1, Location: 1}})), "without a location"},
		{"two locations", onnxtest.Model(onnxtest.Graph([]T{{Dims: []int64{4}, DataType: 1, Location: 1, External: []KV{{"location", "weights.bin"}, {"location", "../x"}}}})), "two locations"},
		{"negative dim", onnxtest.Model(onnxtest.Graph([]T{{Dims: []int64{-1, 4}, DataType: 1, Raw: make([]byte, 16)}})), "negative dimension"},
		{"absurd dim", onnxtest.Model(onnxtest.Graph([]T{{Dims: []int64{1 << 40}, DataType: 1}})), "larger than"},
		{"product overflows", onnxtest.Model(onnxtest.Graph([]T{{Dims: []int64{1 << 32, 1 << 32, 1 << 32}, DataType: 1}})), "more elements"},
		{"declared larger than raw_data", onnxtest.Model(onnxtest.Graph([]T{{Dims: []int64{1000, 1000}, DataType: 1, Raw: make([]byte, 16)}})), "raw_data holds 16"},
		{"declared larger than the file", onnxtest.Model(onnxtest.Graph([]T{{Dims: []int64{1 << 20, 1 << 10}, DataType: 1}})), "more than the"},
		{"negative dim in an input shape", onnxtest.Model(onnxtest.Graph(nil, onnxtest.Msg(nil, 11, onnxtest.ValueInfo("z", -5)))), "negative dimension"},
		{"graph twice", append(onnxtest.Model(onnxtest.Graph(nil)), onnxtest.Msg(nil, 7, onnxtest.Graph(nil))...), "appears twice"},
		{"no ir_version", onnxtest.Msg(nil, 7, onnxtest.Graph(nil)), "no ir_version"},
		{"no graph", onnxtest.Varint(nil, 1, 8), "no graph"},
		{"truncated", onnxtest.Model(onnxtest.Graph(nil))[:40], "runs past"},
		{"not protobuf", []byte("this is a text file, not a model\n"), "refused"},
		{"group wire type", append(onnxtest.Varint(nil, 1, 8), 0x0b, 0x0c), "groups"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := modelDir(t, c.model)
			_, err := CheckFile(dir, "model.onnx", DefaultLimits)
			if c.want == "" {
				if err != nil {
					t.Fatalf("refused a fine model: %v", err)
				}
				return
			}
			if err == nil || !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want a refusal with %q", err, c.want)
			}
		})
	}
}

// A constant tensor in a node attribute, and one in a subgraph, are checked
// like initializers: hugot and ONNX Runtime load both.
func TestCheckNestedTensors(t *testing.T) {
	bad := onnxtest.TensorProto(T{Dims: []int64{4}, DataType: 1, Location: 1, External: ext("../../etc/shadow", "", "")})
	attrT := onnxtest.Msg(onnxtest.Msg(nil, 1, []byte("value")), 5, bad)
	node := onnxtest.Msg(onnxtest.Msg(nil, 4, []byte("Constant")), 5, attrT)
	if _, err := CheckFile(modelDir(t, onnxtest.Model(onnxtest.Graph(nil, onnxtest.Msg(nil, 1, node)))), "model.onnx", DefaultLimits); err == nil {
		t.Fatal("external data in a Constant node's attribute was accepted")
	}
	// the same node inside an If's then_branch subgraph
	sub := onnxtest.Graph(nil, onnxtest.Msg(nil, 1, node))
	ifNode := onnxtest.Msg(onnxtest.Msg(nil, 4, []byte("If")), 5, onnxtest.Msg(onnxtest.Msg(nil, 1, []byte("then_branch")), 6, sub))
	if _, err := CheckFile(modelDir(t, onnxtest.Model(onnxtest.Graph(nil, onnxtest.Msg(nil, 1, ifNode)))), "model.onnx", DefaultLimits); err == nil {
		t.Fatal("external data in a subgraph was accepted")
	}
}

func TestCheckDepthAndFieldLimits(t *testing.T) {
	g := onnxtest.Graph(nil)
	for range 40 {
		attr := onnxtest.Msg(onnxtest.Msg(nil, 1, []byte("body")), 6, g)
		g = onnxtest.Msg(nil, 1, onnxtest.Msg(onnxtest.Msg(nil, 4, []byte("Loop")), 5, attr))
	}
	_, err := CheckFile(modelDir(t, onnxtest.Model(g)), "model.onnx", DefaultLimits)
	if err == nil || !strings.Contains(err.Error(), "nested deeper") {
		t.Fatalf("40 nested graphs: %v", err)
	}
	lim := DefaultLimits
	lim.MaxFields = 10
	_, err = CheckFile(modelDir(t, onnxtest.Model(onnxtest.Graph(nil))), "model.onnx", lim)
	if err == nil || !strings.Contains(err.Error(), "protobuf fields") {
		t.Fatalf("field limit: %v", err)
	}
}

// The three exports in shared/fixtures pass, with nothing external.
func TestCheckFixtures(t *testing.T) {
	root := filepath.Join("..", "..", "..", "shared", "fixtures", "nlp")
	for _, m := range []string{"sentiment", "ner", "embeddings"} {
		dir := filepath.Join(root, m)
		if _, err := os.Stat(dir); err != nil {
			t.Skipf("fixtures not here: %v", err)
		}
		rep, err := CheckFile(dir, "model.onnx", DefaultLimits)
		if err != nil {
			t.Fatalf("%s: %v", m, err)
		}
		if rep.Tensors == 0 || rep.ExternalTensors != 0 || rep.IRVersion == 0 {
			t.Fatalf("%s: report %+v", m, rep)
		}
	}
}

// Check reads the model through a window: a model whose one tensor is 8 MiB
// of raw data is walked without reading that data.
func TestCheckSkipsRawData(t *testing.T) {
	m := onnxtest.Model(onnxtest.Graph([]T{{Dims: []int64{2 << 20}, DataType: 1, Raw: make([]byte, 8<<20)}}))
	cr := &countingReader{r: bytes.NewReader(m)}
	if _, err := Check(cr, int64(len(m)), nil, DefaultLimits); err != nil {
		t.Fatal(err)
	}
	if cr.n > 1<<20 {
		t.Fatalf("read %d bytes of an %d-byte model", cr.n, len(m))
	}
}

type countingReader struct {
	r *bytes.Reader
	n int64
}

func (c *countingReader) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.r.ReadAt(p, off)
	c.n += int64(n)
	return n, err
}

// BenchmarkCheckFixture: the walk of a real export (the sentiment fixture).
func BenchmarkCheckFixture(b *testing.B) {
	dir := filepath.Join("..", "..", "..", "shared", "fixtures", "nlp", "sentiment")
	if _, err := os.Stat(dir); err != nil {
		b.Skip(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := CheckDir(dir); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCheckLarge: a 256 MiB model of 64 tensors is walked without
// reading its data: time and memory do not grow with the bytes.
func BenchmarkCheckLarge(b *testing.B) {
	var ts []T
	for range 64 {
		ts = append(ts, T{Dims: []int64{1 << 20}, DataType: 1, Raw: make([]byte, 4<<20)})
	}
	m := onnxtest.Model(onnxtest.Graph(ts))
	b.SetBytes(int64(len(m)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Check(bytes.NewReader(m), int64(len(m)), nil, DefaultLimits); err != nil {
			b.Fatal(err)
		}
	}
}
