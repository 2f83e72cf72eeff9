//go:build !ORT

package models

// HaveORT tells whether this binary was built with ONNX Runtime (tag ORT).
const HaveORT = false
