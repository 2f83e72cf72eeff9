package gateway

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"testing"
	"time"
)

// TestMain runs the package's tests once on each front end (Config.Frontend,
// see serveFrontend): net/http's server and the fast one. Both must pass
// every test: auth, limits, hostile clients, slow bodies, timeouts,
// smuggling, usage, retries. NLPSWARM_TEST_FRONTEND=fast (or nethttp) runs
// only one; fuzzing and benchmarks run once.
//
// The two runs go at the same time: the fast front end's in a child
// process of this test binary (the same flags, NLPSWARM_TEST_FRONTEND set),
// its output printed after this process's own run. The package's tests
// mostly wait (timers, deadlines, Postgres, Redis: about 48 CPU-seconds in
// 260 s of one run on a quiet machine), and each test has a database and
// a Redis prefix of its own, so the two runs do not meet; one after the
// other they made this package the longest of make test's package tests.
// NLPSWARM_TEST_FRONTENDS_SERIAL=1, or a flag that writes a file (a
// profile, coverage), runs them one after the other in this process.
func TestMain(m *testing.M) {
	flag.Parse()
	fronts := []string{FrontendNetHTTP, FrontendFast}
	if f := os.Getenv("NLPSWARM_TEST_FRONTEND"); f != "" {
		fronts = []string{f}
	} else if once("test.fuzz") || once("test.bench") {
		fronts = fronts[:1] // (the benchmarks choose their front ends)
	}
	if len(fronts) == 2 && os.Getenv("NLPSWARM_TEST_FRONTENDS_SERIAL") == "" && !writesFiles() {
		if code, ok := runBeside(m, fronts[0], fronts[1]); ok {
			os.Exit(code)
		}
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

// runBeside runs the tests on front end here in this process while a child
// process runs them on other, and returns the exit code (0 when both
// passed); ok is false when the child could not start, and nothing ran.
func runBeside(m *testing.M, here, other string) (code int, ok bool) {
	child := exec.Command(os.Args[0], os.Args[1:]...)
	child.Env = append(os.Environ(), "NLPSWARM_TEST_FRONTEND="+other)
	var out bytes.Buffer
	child.Stdout, child.Stderr = &out, &out
	if err := child.Start(); err != nil {
		fmt.Printf("cannot run front end %s beside %s (%v): one after the other\n", other, here, err)
		return 0, false
	}
	testFrontend = here
	if testing.Verbose() {
		fmt.Printf("--- front end: %s\n", here)
	}
	code = m.Run()
	if code != 0 {
		fmt.Printf("FAIL with front end %s\n", here)
	}
	err := child.Wait()
	if testing.Verbose() {
		fmt.Printf("--- front end: %s (ran beside %s)\n", other, here)
	}
	_, _ = os.Stdout.Write(out.Bytes())
	if err != nil {
		if !bytes.Contains(out.Bytes(), []byte("FAIL with front end "+other)) { // (the child ended before saying it)
			fmt.Printf("FAIL with front end %s\n", other)
		}
		var ee *exec.ExitError
		if code == 0 {
			code = 1
			if errors.As(err, &ee) && ee.ExitCode() > 0 {
				code = ee.ExitCode()
			}
		}
	}
	return code, true
}

// writesFiles: a flag is set that has the test binary write a file
// (profiles, coverage, a trace), which two processes would both write.
func writesFiles() bool {
	for _, name := range []string{"test.coverprofile", "test.cpuprofile", "test.memprofile", "test.blockprofile",
		"test.mutexprofile", "test.trace", "test.gocoverdir"} {
		if once(name) {
			return true
		}
	}
	return false
}

// once: the flag is set (fuzzing or benchmarks run once).
func once(name string) bool {
	f := flag.Lookup(name)
	return f != nil && f.Value.String() != ""
}

// TestGoneWatch: the fast front end's list of requests in progress
// (watchList) cancels a request whose client has gone, within a few
// clientGoneCheck, and no other; a request leaves the list from anywhere in
// it; the list's goroutine ends once no request is in progress.
func TestGoneWatch(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("peerGone looks at the socket on Linux only")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	pair := func() (client, server net.Conn) {
		client, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		server, err = ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { client.Close(); server.Close() })
		return client, server
	}
	var w watchList
	ctxs := make([]*fastCtx, 4)
	clients := make([]net.Conn, 4)
	for i := range ctxs {
		var server net.Conn
		clients[i], server = pair()
		ctxs[i] = &fastCtx{Context: context.Background(), conn: server, since: time.Now()}
		w.add(ctxs[i])
	}
	list := func() []*fastCtx {
		w.mu.Lock()
		defer w.mu.Unlock()
		var out, back []*fastCtx
		for c := w.head; c != nil; c = c.next {
			out = append(out, c)
		}
		for c := w.tail; c != nil; c = c.prev {
			back = append(back, c)
		}
		slices.Reverse(back)
		if !slices.Equal(out, back) {
			t.Fatal("the list's prev links disagree with its next links")
		}
		return out
	}
	w.remove(ctxs[1]) // the middle
	if got := list(); len(got) != 3 || got[0] != ctxs[0] || got[1] != ctxs[2] || got[2] != ctxs[3] {
		t.Fatalf("after removing the second: %v", got)
	}
	ran := make(chan struct{})
	ctxs[2].AfterFunc(func() { close(ran) })
	clients[2].Close() // its client goes
	select {
	case <-ran:
	case <-time.After(20 * clientGoneCheck):
		t.Fatal("the request whose client closed was not cancelled")
	}
	if !errors.Is(ctxs[2].Err(), context.Canceled) {
		t.Fatalf("its context: %v", ctxs[2].Err())
	}
	for _, i := range []int{0, 3} {
		if err := ctxs[i].Err(); err != nil {
			t.Fatalf("request %d, whose client is there: %v", i, err)
		}
	}
	for _, i := range []int{0, 3, 2} { // the head, the tail, the last
		w.remove(ctxs[i])
	}
	if got := list(); len(got) != 0 {
		t.Fatalf("left in the list: %d", len(got))
	}
	deadline := time.Now().Add(20 * clientGoneCheck)
	for {
		w.mu.Lock()
		running := w.running
		w.mu.Unlock()
		if !running {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the watch's goroutine still runs with no request in progress")
		}
		time.Sleep(clientGoneCheck / 5)
	}
}
