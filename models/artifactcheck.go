package models

import (
	"fmt"

	"github.com/nlpswarm/nlpswarm/modelmgr/onnxcheck"
)

// checkArtifact runs the upload's safety check again before any engine reads
// the folder (issue 17): a model folder reaches the runtime from the blob
// store, a --modeldir or a shared cache volume, and none of those is trusted.
// It refuses external data outside dir, negative or absurd dims, tensors
// larger than their data and oversize JSON files.
func checkArtifact(dir string) error {
	if _, err := onnxcheck.CheckDir(dir); err != nil {
		return fmt.Errorf("load %s: %w", dir, err)
	}
	return nil
}
