package layering

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// Every fuzz target in the module runs in CI: the Makefile's FUZZ_TARGETS
// lines (the first assignment and every +=) name it as ./pkg:Target.
func TestFuzzTargetsInMakefile(t *testing.T) {
	root := filepath.Join("..", "..")
	mk, err := os.ReadFile(filepath.Join(root, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	listed := " "
	for _, line := range strings.Split(string(mk), "\n") {
		if strings.HasPrefix(line, "FUZZ_TARGETS ") {
			_, targets, _ := strings.Cut(line, "=")
			listed += targets + " "
		}
	}
	re := regexp.MustCompile(`(?m)^func (Fuzz\w+)\(`)
	found := 0
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "bin" || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, filepath.Dir(path))
		for _, m := range re.FindAllStringSubmatch(string(src), -1) {
			found++
			if !strings.Contains(listed, " ./"+filepath.ToSlash(rel)+":"+m[1]+" ") {
				t.Errorf("%s (%s) is not in the Makefile's FUZZ_TARGETS", m[1], path)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if found == 0 {
		t.Fatal("no fuzz target found: the walk looked in the wrong place")
	}
}
