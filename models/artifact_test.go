package models

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Replicas on one node share the artifact cache (a volume keyed by digest):
// four starting at once download the archive once, and all four load the
// same unpacked folder; nothing half-written is left beside it.
func TestFetchSharedCacheConcurrently(t *testing.T) {
	arch := tarGzDir(t, fixture(t, "sentiment"))
	sum := sha256.Sum256(arch)
	digest := "sha256:" + hex.EncodeToString(sum[:])
	var downloads atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		downloads.Add(1)
		time.Sleep(200 * time.Millisecond) // a slow link: the four overlap
		w.Write(arch)
	}))
	defer srv.Close()
	cache := t.TempDir()
	results := make([]FetchResult, 4)
	errs := make([]error, 4)
	var wg sync.WaitGroup
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = Fetch(context.Background(), srv.URL, digest, "", cache)
		}()
	}
	wg.Wait()
	cached := 0
	for i, r := range results {
		if errs[i] != nil || r.Dir != results[0].Dir {
			t.Fatalf("fetch %d: %+v %v", i, r, errs[i])
		}
		if r.Cached {
			cached++
		} else if r.Bytes != int64(len(arch)) {
			t.Fatalf("the downloading fetch reports %d bytes, want %d", r.Bytes, len(arch))
		}
	}
	if n := downloads.Load(); n != 1 || cached != 3 {
		t.Fatalf("%d downloads, %d cache hits: want 1 and 3", n, cached)
	}
	if _, err := Load(results[0].Dir, "sentiment", TextClassification); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(cache)
	for _, e := range entries {
		if e.IsDir() && e.Name() != digest[len("sha256:"):] {
			t.Errorf("left in the cache: %s", e.Name())
		}
	}
	// a fetch that cannot get the lock gives up with its context
	unlock, err := lockFile(context.Background(), cache+"/.x.lock")
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := lockFile(ctx, cache+"/.x.lock"); err == nil {
		t.Fatal("took a lock another holder has")
	}
}
