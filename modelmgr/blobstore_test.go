package modelmgr

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// What an interrupted upload or validation left in store/tmp is removed when
// the store opens; stored blobs stay.
func TestNewFSStoreCleansTemp(t *testing.T) {
	dir := t.TempDir()
	s, err := NewFSStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	blob := "sha256:" + strings.Repeat("a", 64)
	os.WriteFile(filepath.Join(s.TempDir(), "upload-1.part"), []byte("half an upload"), 0o600)
	os.MkdirAll(filepath.Join(s.TempDir(), "validate-2", "model"), 0o755)
	os.WriteFile(filepath.Join(s.TempDir(), "validate-2", "model", "model.onnx"), []byte("x"), 0o600)
	os.WriteFile(filepath.Join(dir, "blobs", "sha256", strings.Repeat("a", 64)), []byte("kept"), 0o600)
	if _, err := NewFSStore(dir); err != nil {
		t.Fatal(err)
	}
	if left, _ := os.ReadDir(s.TempDir()); len(left) != 0 {
		t.Fatalf("left in tmp after a restart: %v", left)
	}
	if f, err := s.Open(blob); err != nil {
		t.Fatalf("a stored blob went: %v", err)
	} else {
		f.Close()
	}
}

// An upload is refused (413-style, ErrNoSpace matches ErrTooLarge) when the
// store's filesystem has less than MinFreeBytes free, before it starts or
// while it streams, and leaves no temp file.
func TestReceiveChecksFreeSpace(t *testing.T) {
	dir := t.TempDir()
	free, err := freeBytes(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer func(v int64) { MinFreeBytes = v }(MinFreeBytes)

	MinFreeBytes = free + 1<<30
	_, err = Receive(context.Background(), strings.NewReader("tiny"), dir, 1<<30)
	if !errors.Is(err, ErrNoSpace) || !errors.Is(err, ErrTooLarge) {
		t.Fatalf("with too little free space before: %v", err)
	}

	// the free space falls below the floor after some 24 MiB of this upload
	MinFreeBytes = free - 24<<20
	_, err = Receive(context.Background(), io.LimitReader(zeros{}, 256<<20), dir, 1<<30)
	if !errors.Is(err, ErrNoSpace) {
		t.Fatalf("with the free space running out during the upload: %v", err)
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Fatalf("a refused upload left %v", left)
	}

	MinFreeBytes = 0
	rec, err := Receive(context.Background(), strings.NewReader("fine"), dir, 1<<30)
	if err != nil || rec.Size != 4 {
		t.Fatalf("with room: %v %+v", err, rec)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// Unpacking for validation stops where it would leave less than
// MinFreeBytes free.
func TestExtractBoundedByFreeSpace(t *testing.T) {
	good := fixtureFiles(t, "embeddings")
	src := tarGz(t, good)
	dir := t.TempDir()
	free, err := freeBytes(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer func(v int64) { MinFreeBytes = v }(MinFreeBytes)
	MinFreeBytes = free + 1<<30 // no room at all: 0 must not read as "no limit"
	err = Extract(context.Background(), src, filepath.Join(dir, "model"))
	if err == nil || !strings.Contains(err.Error(), "past its limits") {
		t.Fatalf("extract with 1 KiB of room: %v", err)
	}
	MinFreeBytes = 0
	if err := Extract(context.Background(), src, filepath.Join(dir, "model")); err != nil {
		t.Fatal(err)
	}
}
