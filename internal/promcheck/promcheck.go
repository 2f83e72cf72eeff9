package promcheck

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

var (
	declared = regexp.MustCompile(`(Counter|Gauge|Histogram|Summary)Opts\{Name:\s*"(nlpswarm_[a-z0-9_]+)"`)
	// a collector's own series (prometheus.NewDesc): gauges or counters
	described = regexp.MustCompile(`NewDesc\(\s*"(nlpswarm_[a-z0-9_]+)"`)
	named     = regexp.MustCompile(`\bnlpswarm_[a-z0-9_]+`)
)

// Exported walks the Go files under root (tests left out) and returns every
// series name their metric declarations produce.
func Exported(root string) (map[string]bool, error) {
	out := map[string]bool{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") || d.Name() == "node_modules") && p != root {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, m := range declared.FindAllStringSubmatch(string(b), -1) {
			out[m[2]] = true
			if m[1] == "Histogram" || m[1] == "Summary" {
				for _, suffix := range []string{"_bucket", "_sum", "_count"} {
					out[m[2]+suffix] = true
				}
			}
		}
		for _, m := range described.FindAllStringSubmatch(string(b), -1) {
			out[m[1]] = true
		}
		return nil
	})
	return out, err
}

// Unknown lists the nlpswarm_* names in expr that exported lacks.
func Unknown(expr string, exported map[string]bool) []string {
	var out []string
	for _, n := range named.FindAllString(expr, -1) {
		if !exported[n] {
			out = append(out, n)
		}
	}
	return out
}
