package gateway

import (
	"flag"
	"fmt"
	"os"
	"testing"
)

// TestMain runs the package's tests once on each front end (Config.Frontend,
// see serveFrontend): net/http's server, then the fast one. Both must pass
// every test: auth, limits, hostile clients, slow bodies, timeouts,
// smuggling, usage, retries. NLPSWARM_TEST_FRONTEND=fast (or nethttp) runs
// only one; fuzzing and benchmarks run once.
func TestMain(m *testing.M) {
	flag.Parse()
	fronts := []string{FrontendNetHTTP, FrontendFast}
	if f := os.Getenv("NLPSWARM_TEST_FRONTEND"); f != "" {
		fronts = []string{f}
	} else if once("test.fuzz") || once("test.bench") {
		fronts = fronts[:1] // (the benchmarks choose their front ends)
	}
	code := 0
	for _, f := range fronts {
		testFrontend = f
		if len(fronts) > 1 && testing.Verbose() {
			fmt.Printf("--- front end: %s\n", f)
		}
		if c := m.Run(); c != 0 {
			fmt.Printf("FAIL with front end %s\n", f)
			code = c
		}
	}
	os.Exit(code)
}

// once: the flag is set (fuzzing or benchmarks run once).
func once(name string) bool {
	f := flag.Lookup(name)
	return f != nil && f.Value.String() != ""
}
