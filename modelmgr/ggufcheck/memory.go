package ggufcheck

import (
	"errors"
	"math/bits"
)

// ErrTooLarge is returned by MemoryBytes when the arithmetic overflows.
var ErrTooLarge = errors.New("gguf: memory estimate overflows")

// kvBytesPerElement is the KV cache's element size: llama.cpp's default
// cache type is f16.
const kvBytesPerElement = 2

// computeMargin is llama.cpp's compute buffers and the runtime's own memory
// beside the weights and the KV cache: the larger of 64 MiB and a tenth of
// the weights. A planning figure, not a measurement of every architecture.
func computeMargin(weights uint64) uint64 { return max(64<<20, weights/10) }

// KVCacheBytes is the KV cache of ctx positions for each of slots parallel
// sequences: keys and values of every layer, per KV head, in f16.
func (i Info) KVCacheBytes(ctx, slots uint64) (uint64, error) {
	kv, carry := bits.Add64(i.KeyLength, i.ValueLength, 0)
	if carry != 0 {
		return 0, ErrTooLarge
	}
	return product(i.Layers, i.HeadCountKV, kv, kvBytesPerElement, ctx, slots)
}

// product multiplies, refusing overflow: every factor may come from a file.
func product(factors ...uint64) (uint64, error) {
	n := uint64(1)
	for _, f := range factors {
		hi, lo := bits.Mul64(n, f)
		if hi != 0 {
			return 0, ErrTooLarge
		}
		n = lo
	}
	return n, nil
}

// MemoryBytes is what a replica needs to serve the model with a context of
// ctx positions per slot and slots parallel sequences (llama-server's
// --ctx-size is ctx × slots, shared by --parallel slots): the weights, the
// KV cache and a compute margin. ctx 0 means the model's own context length.
// On a GPU node this is the VRAM the deployment reserves.
func (i Info) MemoryBytes(ctx, slots uint64) (uint64, error) {
	if ctx == 0 {
		ctx = i.ContextLength
	}
	slots = max(slots, 1)
	kv, err := i.KVCacheBytes(ctx, slots)
	if err != nil {
		return 0, err
	}
	total, carry := bits.Add64(i.TensorBytes, kv, 0)
	total, carry2 := bits.Add64(total, computeMargin(i.TensorBytes), 0)
	if carry != 0 || carry2 != 0 {
		return 0, ErrTooLarge
	}
	return total, nil
}
