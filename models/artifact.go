package models

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/nlpswarm/nlpswarm/modelmgr/archive"
)

var digestRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// FetchResult says where the model is and whether the cache served it.
type FetchResult struct {
	Dir    string
	Bytes  int64
	Cached bool
}

// Fetch downloads the archive at url (Bearer token), verifies its sha256
// against digest while streaming, and unpacks it into cacheDir/<hex>. A
// second call with the same digest reuses the unpacked folder. A mismatch
// refuses, leaving nothing in the cache.
//
// cacheDir may be shared by every replica on a node (the scheduler mounts one
// volume there): a lock file per digest makes the second replica wait for the
// first one's download instead of downloading again, and the unpack goes to a
// temporary folder renamed into place, so nobody sees half a model.
func Fetch(ctx context.Context, url, digest, token, cacheDir string) (FetchResult, error) {
	if !digestRE.MatchString(digest) {
		return FetchResult{}, fmt.Errorf("digest %q: want sha256:<64 hex>", digest)
	}
	hexd := strings.TrimPrefix(digest, "sha256:")
	dest := filepath.Join(cacheDir, hexd)
	if st, err := os.Stat(dest); err == nil && st.IsDir() {
		return FetchResult{Dir: dest, Cached: true}, nil
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return FetchResult{}, fmt.Errorf("artifact cache: %w", err)
	}
	unlock, err := lockFile(ctx, filepath.Join(cacheDir, "."+hexd+".lock"))
	if err != nil {
		return FetchResult{}, fmt.Errorf("artifact cache lock: %w", err)
	}
	defer unlock()
	if st, err := os.Stat(dest); err == nil && st.IsDir() { // fetched by another replica while we waited
		return FetchResult{Dir: dest, Cached: true}, nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return FetchResult{}, fmt.Errorf("artifact url: %w", err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return FetchResult{}, fmt.Errorf("download artifact: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return FetchResult{}, fmt.Errorf("download artifact: %s answered %s", url, resp.Status)
	}
	tmp, err := os.CreateTemp(cacheDir, ".download-*")
	if err != nil {
		return FetchResult{}, err
	}
	defer os.Remove(tmp.Name())
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), resp.Body)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return FetchResult{}, fmt.Errorf("download artifact: %w", err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != hexd {
		return FetchResult{}, fmt.Errorf("artifact digest mismatch: expected sha256:%s, downloaded sha256:%s (%d bytes); refusing to start", hexd, got, n)
	}
	if err := archive.Extract(ctx, tmp.Name(), dest, archive.DefaultLimits); err != nil {
		if _, serr := os.Stat(dest); serr == nil {
			// another replica on this node unpacked it meanwhile
			return FetchResult{Dir: dest, Bytes: n, Cached: true}, nil
		}
		return FetchResult{}, fmt.Errorf("unpack artifact: %w", err)
	}
	return FetchResult{Dir: dest, Bytes: n}, nil
}

// lockFile takes an exclusive flock on path (created if missing), waiting
// until ctx ends; the returned func releases it. The file stays: removing it
// would let two replicas lock two different files of the same name.
func lockFile(ctx context.Context, path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() {
				_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
				f.Close()
			}, nil
		}
		if err != syscall.EWOULDBLOCK && err != syscall.EINTR {
			f.Close()
			return nil, err
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}
