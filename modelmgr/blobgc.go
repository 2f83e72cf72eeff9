package modelmgr

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"time"
)

// Blob garbage collection (issue 18 item 5). A blob is deleted only by the
// collector, never on the error path of an upload: an upload whose version
// row fails leaves its blob, and so does a deleted model. The collector
// deletes a blob only when it is older than the grace period, Postgres has
// answered that no version references it, and it is still that old under
// the store's lock (a duplicate upload touches it in Put). Any error while
// checking stops the pass: an error is never read as "not in use".

// BlobInfo is a stored blob.
type BlobInfo struct {
	Digest  string
	ModTime time.Time
	Size    int64
}

// List returns the stored blobs.
func (s *FSStore) List() ([]BlobInfo, error) {
	dir := filepath.Join(s.dir, "blobs", "sha256")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	out := make([]BlobInfo, 0, len(ents))
	for _, e := range ents {
		d := "sha256:" + e.Name()
		if !ValidDigest(d) || !e.Type().IsRegular() {
			continue
		}
		fi, err := e.Info()
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, BlobInfo{Digest: d, ModTime: fi.ModTime(), Size: fi.Size()})
	}
	return out, nil
}

// deleteIfOlder removes digest's blob if it was last stored or touched
// before cutoff, under the lock Put takes; it says whether it did.
func (s *FSStore) deleteIfOlder(digest string, cutoff time.Time) (bool, error) {
	p, err := s.path(digest)
	if err != nil {
		return false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	fi, err := os.Stat(p)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if !fi.ModTime().Before(cutoff) {
		return false, nil
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return false, err
	}
	return true, nil
}

// GCCandidates are the blobs old enough to be collected if unreferenced:
// stored or touched before now - grace, oldest first.
func GCCandidates(blobs []BlobInfo, now time.Time, grace time.Duration) []BlobInfo {
	cutoff := now.Add(-grace)
	var out []BlobInfo
	for _, b := range blobs {
		if b.ModTime.Before(cutoff) {
			out = append(out, b)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ModTime.Before(out[j].ModTime) })
	return out
}

// GCResult is what one collection did.
type GCResult struct {
	Removed []string
	Bytes   int64
}

// CollectBlobs removes the blobs no version references that are older than
// grace. It stops at the first error (a database error above all) with what
// it removed so far.
func CollectBlobs(ctx context.Context, store *FSStore, reg *Registry, grace time.Duration, now time.Time) (GCResult, error) {
	var res GCResult
	blobs, err := store.List()
	if err != nil {
		return res, fmt.Errorf("blob gc: list: %w", err)
	}
	cutoff := now.Add(-grace)
	for _, b := range GCCandidates(blobs, now, grace) {
		used, err := reg.DigestInUse(ctx, b.Digest)
		if err != nil {
			return res, fmt.Errorf("blob gc: is %s in use: %w", b.Digest, err)
		}
		if used {
			continue
		}
		removed, err := store.deleteIfOlder(b.Digest, cutoff)
		if err != nil {
			return res, fmt.Errorf("blob gc: delete %s: %w", b.Digest, err)
		}
		if removed {
			res.Removed = append(res.Removed, b.Digest)
			res.Bytes += b.Size
		}
	}
	return res, nil
}

// RunBlobGC collects every interval until ctx ends.
func RunBlobGC(ctx context.Context, store *FSStore, reg *Registry, grace, interval time.Duration, log *slog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		gctx, cancel := context.WithTimeout(ctx, interval)
		res, err := CollectBlobs(gctx, store, reg, grace, time.Now())
		cancel()
		if len(res.Removed) > 0 {
			log.Info("unreferenced blobs removed", "blobs", len(res.Removed), "bytes", res.Bytes)
		}
		if err != nil && ctx.Err() == nil {
			log.Warn("blob garbage collection stopped; nothing is deleted on an error", "err", err)
		}
	}
}
