//go:build !ORT

package models

import "github.com/nlpswarm/nlpswarm/internal/sandbox"

// HaveORT tells whether this binary was built with ONNX Runtime (tag ORT).
const HaveORT = false

// EngineFiles is what the engines of this binary read to load a model,
// beyond the model's own folder: nothing, the pure-Go engine is linked in.
// The validation child's sandbox allows it (modelmgr.Validator.Engine).
func EngineFiles() sandbox.Policy { return sandbox.Policy{} }
