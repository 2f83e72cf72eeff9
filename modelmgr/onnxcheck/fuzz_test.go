package onnxcheck

import (
	"bytes"
	"errors"
	"testing"

	"github.com/nlpswarm/nlpswarm/modelmgr/onnxcheck/onnxtest"
)

// FuzzCheck: whatever the bytes, Check returns (never panics, never reads
// past the file) and every refusal wraps ErrRefused.
func FuzzCheck(f *testing.F) {
	f.Add(onnxtest.Model(onnxtest.Graph([]T{{Name: "w", Dims: []int64{2, 2}, DataType: 1, Raw: make([]byte, 16)}})))
	f.Add(onnxtest.Exfiltrating("../../run/secrets/internal_token"))
	f.Add(onnxtest.Model(onnxtest.Graph([]T{{Dims: []int64{4}, DataType: 1, Location: 1, External: ext("w.bin", "8", "16")}})))
	f.Add(onnxtest.Model(onnxtest.Graph([]T{{Dims: []int64{-1, 4}, DataType: 7}})))
	f.Add([]byte{0x08, 0x08, 0x3a, 0x00})
	resolve := func(loc string) (int64, error) {
		if loc == "w.bin" {
			return 64, nil
		}
		return 0, refuse("no %q", loc)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		rep, err := Check(bytes.NewReader(b), int64(len(b)), resolve, DefaultLimits)
		if err != nil && !errors.Is(err, ErrRefused) {
			t.Fatalf("error not wrapping ErrRefused: %v", err)
		}
		if err == nil && rep.ExternalTensors > 0 && (len(rep.ExternalFiles) != 1 || rep.ExternalFiles[0] != "w.bin") {
			t.Fatalf("accepted external files %v", rep.ExternalFiles)
		}
	})
}
