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
