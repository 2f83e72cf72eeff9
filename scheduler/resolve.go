package scheduler

import (
	"context"
	"fmt"
	"strings"

	"github.com/moby/moby/client"
)

// ResolveSpecConfig turns names into IDs: the image tags (the runtime's, and
// the ORT runtime's and the generation runtimes', if any) into image IDs (so
// that no node tries to pull).
func ResolveSpecConfig(ctx context.Context, docker *client.Client, c SpecConfig) (SpecConfig, error) {
	if !strings.HasPrefix(c.Image, "sha256:") {
		img, err := docker.ImageInspect(ctx, c.Image)
		if err != nil {
			return c, fmt.Errorf("runtime image %s: %w", c.Image, err)
		}
		c.Image = img.ID
	}
	if c.ORTImage != "" && !strings.HasPrefix(c.ORTImage, "sha256:") {
		img, err := docker.ImageInspect(ctx, c.ORTImage)
		if err != nil {
			return c, fmt.Errorf("ORT runtime image %s (build it with make ort-image, or leave --ortimage empty): %w", c.ORTImage, err)
		}
		c.ORTImage = img.ID
	}
	for _, img := range []struct {
		ref  *string
		what string
	}{
		{&c.LlamaImage, "generation image %s (build it with make llama-image, or leave --llamaimage empty)"},
		{&c.LlamaCUDAImage, "CUDA generation image %s (build it with make llama-cuda-image, or leave --llamacudaimage empty)"},
	} {
		if *img.ref == "" || strings.HasPrefix(*img.ref, "sha256:") {
			continue
		}
		got, err := docker.ImageInspect(ctx, *img.ref)
		if err != nil {
			return c, fmt.Errorf(img.what+": %w", *img.ref, err)
		}
		*img.ref = got.ID
	}
	return c, nil
}
