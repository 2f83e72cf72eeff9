package ggufcheck

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/nlpswarm/nlpswarm/modelmgr/ggufcheck/ggufgen"
)

// FuzzCheck: no input panics, hangs or is accepted with tensors outside the
// file; every failure is a refusal (*Error).
func FuzzCheck(f *testing.F) {
	f.Add(tiny().Build())
	f.Add(ggufgen.TinyLlamaEmbedding(1).Build())
	b := tiny().Build()
	f.Add(b[:len(b)/2])
	f.Add([]byte("GGUF\x03\x00\x00\x00"))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		p := filepath.Join(dir, "model.gguf")
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		info, err := Check(p, DefaultLimits)
		if err != nil {
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("not a refusal: %v", err)
			}
			return
		}
		if info.HeaderBytes < 0 || uint64(info.HeaderBytes)+info.TensorBytes > uint64(len(b))+uint64(info.Tensors)*64 {
			t.Fatalf("accepted %d tensor bytes after a %d-byte header in a %d-byte file", info.TensorBytes, info.HeaderBytes, len(b))
		}
		if _, err := info.MemoryBytes(0, 4); err != nil && !errors.Is(err, ErrTooLarge) {
			t.Fatal(err)
		}
	})
}
