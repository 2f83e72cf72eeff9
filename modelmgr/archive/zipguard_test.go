package archive

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// manyEntries is a zip of n empty stored files.
func manyEntries(t *testing.T, n int) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for i := range n {
		if _, err := zw.CreateHeader(&zip.FileHeader{Name: fmt.Sprintf("%x", i), Method: zip.Store}); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// extractAllocs extracts b with the default limits and returns the error
// and the bytes allocated meanwhile.
func extractAllocs(t *testing.T, b []byte) (uint64, error) {
	t.Helper()
	src := filepath.Join(t.TempDir(), "a.zip")
	if err := os.WriteFile(src, b, 0o644); err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	err := Extract(context.Background(), src, filepath.Join(t.TempDir(), "out"), DefaultLimits)
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc, err
}

// A zip with far more central directory records than the entry limit is
// refused from its end record (zip64 here, past 65535 entries), before
// archive/zip walks the directory; one whose end record lies about the count
// is stopped by the read budget. Neither allocates in proportion to the
// records (archive/zip takes some 250 bytes a record: 3M records were 750 MiB).
func TestZipDirectoryBomb(t *testing.T) {
	honest := manyEntries(t, 100_000)
	alloc, err := extractAllocs(t, honest)
	t.Logf("100k entries: %v; %d KiB allocated", err, alloc>>10)
	if !errors.Is(err, ErrUnsafe) || !strings.Contains(err.Error(), "declares 100000 entries: more than 1000 entries") {
		t.Fatalf("100k entries: %v", err)
	}
	if alloc > 4<<20 {
		t.Fatalf("100k entries: %d bytes allocated before the refusal", alloc)
	}

	lying := manyEntries(t, 60_000)
	end := lying[len(lying)-22:] // no comment: the end record is the last 22 bytes
	binary.LittleEndian.PutUint16(end[8:], 5)
	binary.LittleEndian.PutUint16(end[10:], 5)
	alloc, err = extractAllocs(t, lying)
	t.Logf("60k entries declared as 5: %v; %d KiB allocated", err, alloc>>10)
	if !errors.Is(err, ErrUnsafe) || !strings.Contains(err.Error(), "central directory holds more than 1000") {
		t.Fatalf("60k entries declared as 5: %v", err)
	}
	if alloc > 8<<20 {
		t.Fatalf("60k entries declared as 5: %d bytes allocated before the refusal", alloc)
	}
}

// A zip of exactly the limit's entries still unpacks.
func TestZipAtTheEntryLimit(t *testing.T) {
	_, err := extractAllocs(t, manyEntries(t, DefaultLimits.MaxEntries))
	if err != nil {
		t.Fatal(err)
	}
}

// FuzzZipDeclaredEntries: the end-record reader never panics or reads past
// the data, whatever the bytes (zip64 locators pointing anywhere included).
func FuzzZipDeclaredEntries(f *testing.F) {
	f.Add(zipOf([]entry{{name: "a", body: []byte("x")}}))
	z64 := manyEntries(&testing.T{}, 0)
	f.Add(z64)
	f.Add(append(bytes.Repeat([]byte{0}, 30), 'P', 'K', 6, 7, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 1, 0, 0, 0,
		'P', 'K', 5, 6, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = zipDeclaredEntries(bytes.NewReader(b), int64(len(b)))
	})
}
