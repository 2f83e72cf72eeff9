package modelmgr

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"time"

	"github.com/nlpswarm/nlpswarm/internal/deployment"
	"github.com/nlpswarm/nlpswarm/internal/sandbox"
	"github.com/nlpswarm/nlpswarm/modelmgr/archive"
	"github.com/nlpswarm/nlpswarm/modelmgr/ggufcheck"
	"github.com/nlpswarm/nlpswarm/modelmgr/onnxcheck"
)

// Tasks the platform serves, with the Hugging Face pipeline names.
// TextGeneration models (GGUF, issue 15) are uploaded and checked; they
// cannot be deployed yet.
var Tasks = []string{"text-classification", "token-classification", FeatureExtraction, TextGeneration}

// FeatureExtraction is the embeddings task: an ONNX encoder (the models
// runtime) or an embedding GGUF (the generation runtime's embeddings mode).
const FeatureExtraction = "feature-extraction"

// TextGeneration is the task of GGUF models served by the generation
// runtime (llama.cpp).
const TextGeneration = "text-generation"

// ValidTask reports whether t is one of Tasks.
func ValidTask(t string) bool {
	for _, v := range Tasks {
		if v == t {
			return true
		}
	}
	return false
}

// RequiredFiles must be in every archive of an encoder task; the optional
// ones are used if present. A TextGeneration archive holds ggufFile.
var RequiredFiles = []string{"model.onnx", "tokenizer.json", "config.json"}

// ggufFile is the one file of a GGUF archive (generation.ModelFile).
const ggufFile = "model.gguf"

// Formats of a model archive: what checks it and which runtime serves it.
const (
	FormatONNX = "onnx" // model.onnx, tokenizer.json, config.json: the models runtime
	FormatGGUF = "gguf" // model.gguf: the generation runtime (llama.cpp)
)

// ArchiveFormat is the format of an unpacked archive of task holding files:
// GGUF for text-generation, and for feature-extraction when it holds
// model.gguf and no model.onnx (an embedding GGUF); ONNX otherwise.
// A stored version's metadata says the same after validation (GGUF set).
func ArchiveFormat(task string, files []string) string {
	if task == TextGeneration {
		return FormatGGUF
	}
	if task == FeatureExtraction && slices.Contains(files, ggufFile) && !slices.Contains(files, "model.onnx") {
		return FormatGGUF
	}
	return FormatONNX
}

// Generation replicas are planned with this many parallel slots of the
// model's own context (the generation runtime's default) for the memory
// estimate recorded at upload.
const generationSlots = 4

// Extract is the safe extractor with the default limits, the total also
// bounded by the free space above MinFreeBytes where dest is: a bomb within
// the ratio must not fill the store's disk.
func Extract(ctx context.Context, path, dest string) error {
	lim := archive.DefaultLimits
	if free, err := freeBytes(filepath.Dir(dest)); err == nil {
		lim.MaxTotalBytes = min(lim.MaxTotalBytes, max(free-MinFreeBytes, 1)) // 0 would mean no limit
	}
	return archive.Extract(ctx, path, dest, lim)
}

// ExtractFunc unpacks the archive at path into dest (an empty folder),
// refusing unsafe entries and bombs.
type ExtractFunc func(ctx context.Context, path, dest string) error

// SmokeFunc loads the model in dir and runs one inference.
type SmokeFunc func(ctx context.Context, dir, task string) error

// Validator checks an uploaded archive before anything is stored.
type Validator struct {
	Extract      ExtractFunc
	Smoke        SmokeFunc // nil skips the smoke inference
	SmokeTimeout time.Duration
	// Engine is what the smoke inference's engine reads beyond the model
	// (its shared libraries): the validation child's sandbox allows it, on
	// top of the archive (read) and the child's scratch folder.
	Engine sandbox.Policy
	// Isolation, when set, runs all of the above in a child process under
	// limits (ServeChild on the child's side); nil validates in this process.
	Isolation *Isolation
}

// Metadata is what validation learns of a model, stored with its version.
type Metadata struct {
	Labels       []string `json:"labels,omitempty"`
	ModelType    string   `json:"model_type,omitempty"`
	ProblemType  string   `json:"problem_type,omitempty"`
	MaxPositions int      `json:"max_position_embeddings,omitempty"`
	OnnxBytes    int64    `json:"onnx_bytes"`
	// GGUF is a GGUF model's header (text generation or embeddings:
	// architecture, context, parameters, quantisation, chat template,
	// pooling); MemoryEstimate the bytes a replica needs with
	// generationSlots slots of its context.
	GGUF           *ggufcheck.Info `json:"gguf,omitempty"`
	MemoryEstimate int64           `json:"memory_estimate_bytes,omitempty"`
	Files          []string        `json:"files"`
	SmokeTested    bool            `json:"smoke_tested"`
	// Sandbox is what confined the validation: the Landlock ABI the child
	// enforced on itself, or why nothing did (zero when a child ended
	// without an answer).
	Sandbox sandbox.Status `json:"sandbox"`
}

// inProcess is the Sandbox of a validation without a child.
var inProcess = sandbox.Status{Unavailable: "validated in the server's own process (no isolation configured)"}

// ValidationError lists every reason an archive was refused.
type ValidationError struct{ Reasons []string }

func (e *ValidationError) Error() string {
	return fmt.Sprintf("archive refused: %d problem(s): %v", len(e.Reasons), e.Reasons)
}

// Validate extracts the archive into a temp folder under tmpDir (removed
// before returning) and checks it for task. It returns the metadata or a
// *ValidationError with every reason found.
func (v Validator) Validate(ctx context.Context, archivePath, tmpDir, task string) (Metadata, error) {
	dir, err := os.MkdirTemp(tmpDir, "validate-*")
	if err != nil {
		return Metadata{}, err
	}
	defer os.RemoveAll(dir)
	if v.Isolation != nil {
		return v.Isolation.validate(ctx, archivePath, dir, task, v.SmokeTimeout)
	}
	md, err := v.validateHere(ctx, archivePath, dir, task)
	md.Sandbox = inProcess
	return md, err
}

// validateHere is Validate's work in this process, in the empty folder dir.
func (v Validator) validateHere(ctx context.Context, archivePath, dir, task string) (Metadata, error) {
	dest := filepath.Join(dir, "model")
	if err := v.Extract(ctx, archivePath, dest); err != nil {
		return Metadata{}, &ValidationError{Reasons: []string{"archive: " + err.Error()}}
	}
	dest = archive.ModelRoot(dest)
	md, reasons := CheckDir(dest, task)
	if len(reasons) > 0 {
		return md, &ValidationError{Reasons: reasons}
	}
	if v.Smoke != nil && md.GGUF == nil { // the smoke runs an encoder engine
		timeout := v.SmokeTimeout
		if timeout <= 0 {
			timeout = 2 * time.Minute
		}
		sctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		if err := v.Smoke(sctx, dest, task); err != nil {
			return md, &ValidationError{Reasons: []string{"smoke inference failed: " + err.Error()}}
		}
		md.SmokeTested = true
	}
	return md, nil
}

// CheckDir checks an unpacked model folder for task without running it.
func CheckDir(dir, task string) (Metadata, []string) {
	var md Metadata
	var reasons []string
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		md.Files = append(md.Files, e.Name())
	}
	sort.Strings(md.Files)
	if ArchiveFormat(task, md.Files) == FormatGGUF {
		return md, checkGGUF(dir, task, &md)
	}
	for _, f := range RequiredFiles {
		if st, err := os.Stat(filepath.Join(dir, f)); err != nil || !st.Mode().IsRegular() {
			reasons = append(reasons, fmt.Sprintf("missing required file %s", f))
		}
	}
	if !ValidTask(task) {
		reasons = append(reasons, fmt.Sprintf("unknown task %q", task))
	}
	if err := onnxcheck.CheckSizes(dir); err != nil {
		// nothing larger than the caps is decoded below
		return md, append(reasons, err.Error())
	}
	if f, err := os.Open(filepath.Join(dir, "config.json")); err == nil {
		var cfg struct {
			ID2Label     map[string]string `json:"id2label"`
			ModelType    string            `json:"model_type"`
			ProblemType  *string           `json:"problem_type"`
			MaxPositions int               `json:"max_position_embeddings"`
		}
		err := decodeJSON(f, &cfg)
		f.Close()
		if err != nil {
			reasons = append(reasons, "config.json is not valid JSON: "+err.Error())
		} else {
			md.ModelType, md.MaxPositions = cfg.ModelType, cfg.MaxPositions
			if cfg.ProblemType != nil {
				md.ProblemType = *cfg.ProblemType
			}
			labels, err := orderedLabels(cfg.ID2Label)
			if err != nil {
				reasons = append(reasons, "config.json id2label: "+err.Error())
			}
			md.Labels = labels
			switch task {
			case "text-classification":
				if len(labels) < 2 {
					reasons = append(reasons, fmt.Sprintf("config.json id2label has %d label(s); text-classification needs at least 2", len(labels)))
				}
			case "token-classification":
				if len(labels) < 2 {
					reasons = append(reasons, fmt.Sprintf("config.json id2label has %d label(s); token-classification needs at least 2", len(labels)))
				} else if !hasTokenLabels(labels) {
					reasons = append(reasons, "config.json id2label has no O / B- / I- labels, which token-classification needs")
				}
			}
		}
	}
	if f, err := os.Open(filepath.Join(dir, "tokenizer.json")); err == nil {
		err := hasObjectKey(f, "model")
		f.Close()
		if err != nil {
			reasons = append(reasons, "tokenizer.json "+err.Error())
		}
	}
	if st, err := os.Lstat(filepath.Join(dir, "model.onnx")); err == nil {
		md.OnnxBytes = st.Size()
		if _, err := onnxcheck.CheckDir(dir); err != nil {
			reasons = append(reasons, "model.onnx: "+err.Error())
		}
	}
	return md, reasons
}

// checkGGUF checks a GGUF folder of task: model.gguf, parsed header only;
// an embeddings model must pool (mean, cls or last).
func checkGGUF(dir, task string, md *Metadata) []string {
	path := filepath.Join(dir, ggufFile)
	st, err := os.Lstat(path)
	if err != nil || !st.Mode().IsRegular() {
		return []string{"missing required file " + ggufFile + " (a text-generation archive holds one GGUF model)"}
	}
	info, err := ggufcheck.Check(path, ggufcheck.DefaultLimits)
	if err != nil {
		var ce *ggufcheck.Error
		if errors.As(err, &ce) {
			reasons := make([]string, len(ce.Reasons))
			for i, r := range ce.Reasons {
				reasons[i] = ggufFile + ": " + r
			}
			return reasons
		}
		return []string{ggufFile + ": " + err.Error()}
	}
	if task == FeatureExtraction && !info.Embeds() {
		got := "no " + info.Architecture + ".pooling_type"
		if info.Pooling {
			got = "pooling " + info.PoolingType
		}
		return []string{fmt.Sprintf("%s: a %s GGUF must pool its tokens into one vector (%s.pooling_type mean, cls or last); it has %s", ggufFile, FeatureExtraction, info.Architecture, got)}
	}
	if !info.ChatTemplate && !info.Pooling {
		// llama-server falls back to a generic template; say so, do not refuse
		md.ModelType = info.Architecture + " (no chat template)"
	} else {
		md.ModelType = info.Architecture
	}
	md.MaxPositions = int(min(info.ContextLength, 1<<31-1))
	md.GGUF = &info
	est, err := info.MemoryBytes(0, generationSlots)
	if err != nil {
		return []string{ggufFile + ": " + err.Error()}
	}
	md.MemoryEstimate = int64(min(est, 1<<62))
	return nil
}

// MaxLabels bounds id2label; the largest real classifiers have some thousands.
const MaxLabels = 100_000

// decodeJSON decodes one JSON value from r into v and refuses trailing data.
// The caller has capped r's size (onnxcheck.CheckSizes).
func decodeJSON(r io.Reader, v any) error {
	dec := json.NewDecoder(r)
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("data after the JSON value")
	}
	return nil
}

// hasObjectKey streams the JSON object in r (never holding it whole) and
// checks it has key with an object value: tokenizer.json's "model".
func hasObjectKey(r io.Reader, key string) error {
	dec := json.NewDecoder(r)
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return fmt.Errorf("is not valid JSON: want an object")
	}
	found := false
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return fmt.Errorf("is not valid JSON: %w", err)
		}
		k, _ := t.(string)
		if k == key && !found {
			if t, err := dec.Token(); err != nil || t != json.Delim('{') {
				return fmt.Errorf("has a %s section that is not an object", key)
			}
			found = true
			if err := skipRest(dec, 1); err != nil {
				return err
			}
			continue
		}
		if err := skipRest(dec, 0); err != nil {
			return err
		}
	}
	if _, err := dec.Token(); err != nil {
		return fmt.Errorf("is not valid JSON: %w", err)
	}
	if !found {
		return fmt.Errorf("has no %s section", key)
	}
	return nil
}

// skipRest reads tokens until depth open containers are closed, or one whole
// value when depth is 0.
func skipRest(dec *json.Decoder, depth int) error {
	for {
		t, err := dec.Token()
		if err != nil {
			return fmt.Errorf("is not valid JSON: %w", err)
		}
		if d, ok := t.(json.Delim); ok {
			if d == '{' || d == '[' {
				depth++
			} else {
				depth--
			}
		}
		if depth <= 0 {
			return nil
		}
	}
}

func orderedLabels(m map[string]string) ([]string, error) {
	if len(m) == 0 {
		return nil, nil
	}
	if len(m) > MaxLabels {
		return nil, fmt.Errorf("%d labels; at most %d", len(m), MaxLabels)
	}
	out := make([]string, len(m))
	for k, v := range m {
		i, err := strconv.Atoi(k)
		if err != nil || i < 0 || i >= len(m) {
			return nil, fmt.Errorf("ids must be 0..%d, got %q", len(m)-1, k)
		}
		out[i] = v
	}
	return out, nil
}

func hasTokenLabels(labels []string) bool {
	for _, l := range labels {
		if l == "O" || len(l) > 2 && (l[:2] == "B-" || l[:2] == "I-") {
			return true
		}
	}
	return false
}

// DefaultMemoryRatio is container RSS over model.onnx size, measured by the
// runtime benchmarks; reservations default to archive size × ratio. Measured
// on 2026-12-01 (models/BENCHMARKS.md, "Memory per engine"): a MiniLM-sized
// encoder (85.6 MiB) peaked at 386 MiB on the Go engine and 436 MiB on ONNX
// Runtime after one short inference, 4.5–5.1× the file; 6 leaves room for
// longer batches' activations. Small models sit on MinMemory (the engines'
// floors are 22 and 50 MiB).
const DefaultMemoryRatio = 6

// MinMemory is the floor of a default reservation: the deployment record's
// floor, which the scheduler also applies to every replica.
const MinMemory = deployment.MinMemory

// DefaultMemory is the default memory reservation for a model of size bytes.
func DefaultMemory(size int64) int64 {
	m := size * DefaultMemoryRatio
	if m < MinMemory {
		m = MinMemory
	}
	return m
}
