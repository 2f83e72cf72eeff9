package gateway

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// Every fuzz target of this package runs in CI: the Makefile's
// FUZZ_TARGETS names it.
func TestFuzzTargetsInMakefile(t *testing.T) {
	mk, err := os.ReadFile("../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	var listed string
	for _, line := range strings.Split(string(mk), "\n") {
		if strings.HasPrefix(line, "FUZZ_TARGETS ") { // "?=" and the "+=" lines after it
			listed += " " + line + " "
		}
	}
	files, _ := filepath.Glob("*_test.go")
	re := regexp.MustCompile(`(?m)^func (Fuzz\w+)\(`)
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range re.FindAllStringSubmatch(string(src), -1) {
			if !strings.Contains(listed, " ./gateway:"+m[1]+" ") {
				t.Errorf("%s (%s) is not in the Makefile's FUZZ_TARGETS", m[1], f)
			}
		}
	}
}
