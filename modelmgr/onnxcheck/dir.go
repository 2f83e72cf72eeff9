package onnxcheck

import (
	"fmt"
	"os"
	"path/filepath"
)

// JSON files of a model folder and the most bytes each may have: a
// config.json is a few KiB (a large id2label some hundred), the largest
// tokenizer.json of a Hugging Face model is about 20 MiB. Without a cap a
// 50 MB config.json (49 KB gzipped) decoded into 1.3 GB.
var MaxJSONBytes = map[string]int64{
	"config.json":             4 << 20,
	"tokenizer.json":          64 << 20,
	"tokenizer_config.json":   4 << 20,
	"special_tokens_map.json": 1 << 20,
}

// CheckSizes refuses a JSON file of dir larger than its MaxJSONBytes, or one
// that is not a regular file (a link, a folder). Missing files are not its
// business.
func CheckSizes(dir string) error {
	for name, limit := range MaxJSONBytes {
		st, err := os.Lstat(filepath.Join(dir, name))
		if err != nil {
			continue
		}
		if !st.Mode().IsRegular() {
			return refuse("%s is not a regular file", name)
		}
		if st.Size() > limit {
			return refuse("%s is %d bytes; the limit is %d", name, st.Size(), limit)
		}
	}
	return nil
}

// CheckDir is the check a model folder gets before any engine reads it, at
// upload and again at load: the JSON sizes and model.onnx.
func CheckDir(dir string) (Report, error) {
	if err := CheckSizes(dir); err != nil {
		return Report{}, err
	}
	st, err := os.Lstat(filepath.Join(dir, "model.onnx"))
	if err != nil {
		return Report{}, fmt.Errorf("onnx check: %w", err)
	}
	if !st.Mode().IsRegular() {
		return Report{}, refuse("model.onnx is not a regular file")
	}
	return CheckFile(dir, "model.onnx", DefaultLimits)
}
