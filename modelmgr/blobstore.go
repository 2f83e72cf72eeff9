package modelmgr

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"
)

// BlobStore keeps archives by content digest ("sha256:<hex>"). The filesystem
// store is the one here; an S3-compatible store can implement the same.
type BlobStore interface {
	// Put moves the verified temp file at tmpPath into the store under digest;
	// a digest already stored is kept and tmpPath removed.
	Put(ctx context.Context, tmpPath, digest string) error
	// Open opens a stored blob for reading (with Seek, for Range requests).
	Open(digest string) (*os.File, error)
	// Delete removes a blob; a missing blob is not an error.
	Delete(digest string) error
	// TempDir is where uploads are staged (same filesystem, so rename is atomic).
	TempDir() string
}

var digestRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// ErrBadDigest is returned for a digest that is not sha256:<64 hex>.
var ErrBadDigest = errors.New("digest must be sha256:<64 lowercase hex>")

// ValidDigest reports whether d is a well-formed sha256 digest.
func ValidDigest(d string) bool { return digestRE.MatchString(d) }

// FSStore is a BlobStore on a local directory: blobs/sha256/<hex>.
type FSStore struct {
	dir string
	// mu orders Put against the garbage collector's delete (blobgc.go): a
	// blob Put finds already there is touched under it, so that the
	// collector, which re-checks the age under it, never removes a blob a
	// new version is about to reference.
	mu sync.Mutex
}

// NewFSStore creates the store's folders under dir and empties its temp
// folder: what an interrupted upload or validation left there (a crash, a
// kill) belongs to nobody now. One apiserver owns a store directory.
func NewFSStore(dir string) (*FSStore, error) {
	for _, d := range []string{filepath.Join(dir, "blobs", "sha256"), filepath.Join(dir, "tmp")} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return nil, fmt.Errorf("blob store %s: %w", dir, err)
		}
	}
	s := &FSStore{dir: dir}
	if err := cleanDir(s.TempDir()); err != nil {
		return nil, fmt.Errorf("blob store %s: clean temp folder: %w", dir, err)
	}
	return s, nil
}

// cleanDir removes everything inside dir.
func cleanDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (s *FSStore) path(digest string) (string, error) {
	if !ValidDigest(digest) {
		return "", ErrBadDigest
	}
	return filepath.Join(s.dir, "blobs", "sha256", strings.TrimPrefix(digest, "sha256:")), nil
}

// TempDir implements BlobStore.
func (s *FSStore) TempDir() string { return filepath.Join(s.dir, "tmp") }

// Put implements BlobStore: fsync, rename, fsync the folder.
func (s *FSStore) Put(_ context.Context, tmpPath, digest string) error {
	dst, err := s.path(digest)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := os.Stat(dst); err == nil {
		// a duplicate upload: the stored blob is young again, out of the
		// garbage collector's reach until its version row is written
		now := time.Now()
		if err := os.Chtimes(dst, now, now); err != nil {
			return fmt.Errorf("touch blob: %w", err)
		}
		return os.Remove(tmpPath)
	}
	f, err := os.Open(tmpPath)
	if err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("fsync %s: %w", tmpPath, err)
	}
	f.Close()
	if err := os.Rename(tmpPath, dst); err != nil {
		return fmt.Errorf("store blob: %w", err)
	}
	if d, err := os.Open(filepath.Dir(dst)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// Open implements BlobStore.
func (s *FSStore) Open(digest string) (*os.File, error) {
	p, err := s.path(digest)
	if err != nil {
		return nil, err
	}
	return os.Open(p)
}

// Delete implements BlobStore.
func (s *FSStore) Delete(digest string) error {
	p, err := s.path(digest)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// ErrTooLarge is returned when an upload passes its size limit.
var ErrTooLarge = errors.New("archive exceeds the size limit")

// Received is an archive staged in the store's temp folder.
type Received struct {
	Path   string
	Digest string
	Size   int64
}

// MinFreeBytes is the free space an upload must leave on the store's
// filesystem: an upload is refused when less is free before it starts, and
// cut off when the free space falls below it while it streams.
var MinFreeBytes int64 = 512 << 20

// ErrNoSpace is returned when the store's filesystem is short of free space.
// It matches ErrTooLarge, so the API answers it as 413 unless told otherwise.
var ErrNoSpace error = noSpaceError{}

type noSpaceError struct{}

func (noSpaceError) Error() string {
	return "not enough free space in the blob store to accept this upload; nothing was stored"
}
func (noSpaceError) Is(target error) bool { return target == ErrTooLarge }

// freeBytes is the space available to unprivileged writers on dir's filesystem.
func freeBytes(dir string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	return int64(st.Bavail) * st.Bsize, nil
}

// spaceWatcher writes to w and checks the free space every 16 MiB.
type spaceWatcher struct {
	w     io.Writer
	dir   string
	since int64
}

const spaceCheckEvery = 16 << 20

func (s *spaceWatcher) Write(p []byte) (int, error) {
	s.since += int64(len(p))
	if s.since >= spaceCheckEvery {
		s.since = 0
		if free, err := freeBytes(s.dir); err == nil && free < MinFreeBytes {
			return 0, ErrNoSpace
		}
	}
	return s.w.Write(p)
}

// Receive streams r into a temp file in dir, hashing as it goes, and refuses
// more than limit bytes, or an upload that would leave less than MinFreeBytes
// free (ErrNoSpace). On any error the temp file is removed.
func Receive(ctx context.Context, r io.Reader, dir string, limit int64) (Received, error) {
	free, err := freeBytes(dir)
	if err != nil {
		return Received{}, fmt.Errorf("stage upload: %w", err)
	}
	if free < MinFreeBytes {
		return Received{}, ErrNoSpace
	}
	f, err := os.CreateTemp(dir, "upload-*.part")
	if err != nil {
		return Received{}, fmt.Errorf("stage upload: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	h := sha256.New()
	n, err := io.Copy(&spaceWatcher{w: io.MultiWriter(f, h), dir: dir}, &ctxLimitReader{ctx: ctx, r: r, n: limit + 1})
	if errors.Is(err, ErrNoSpace) || errors.Is(err, syscall.ENOSPC) {
		return Received{}, ErrNoSpace
	}
	if err != nil {
		return Received{}, fmt.Errorf("receive archive: %w", err)
	}
	if n > limit {
		return Received{}, ErrTooLarge
	}
	if err := f.Close(); err != nil {
		return Received{}, err
	}
	ok = true
	return Received{Path: f.Name(), Digest: digestOf(h), Size: n}, nil
}

func digestOf(h hash.Hash) string { return "sha256:" + hex.EncodeToString(h.Sum(nil)) }

// ctxLimitReader stops at n bytes and when ctx ends (a client gone away).
type ctxLimitReader struct {
	ctx context.Context
	r   io.Reader
	n   int64
}

func (l *ctxLimitReader) Read(p []byte) (int, error) {
	if err := l.ctx.Err(); err != nil {
		return 0, err
	}
	if l.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}
