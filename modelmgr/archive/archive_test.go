package archive

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type entry struct {
	name string
	typ  byte
	body []byte
	link string
}

func tarGz(entries []entry) []byte {
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: 0o644, Size: int64(len(e.body)), Linkname: e.link}
		if e.typ != tar.TypeReg {
			h.Size = 0
		}
		tw.WriteHeader(h)
		if e.typ == tar.TypeReg {
			tw.Write(e.body)
		}
	}
	tw.Close()
	gz.Close()
	return buf.Bytes()
}

func zipOf(entries []entry) []byte {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, e := range entries {
		h := &zip.FileHeader{Name: e.name, Method: zip.Deflate}
		switch e.typ {
		case tar.TypeSymlink:
			h.SetMode(os.ModeSymlink | 0o777)
		case tar.TypeDir:
			h.SetMode(os.ModeDir | 0o755)
		default:
			h.SetMode(0o644)
		}
		w, _ := zw.CreateHeader(h)
		if e.typ == tar.TypeSymlink {
			w.Write([]byte(e.link))
		} else {
			w.Write(e.body)
		}
	}
	zw.Close()
	return buf.Bytes()
}

func extract(t *testing.T, data []byte, lim Limits) (string, error) {
	t.Helper()
	dir := t.TempDir()
	src := filepath.Join(dir, "a")
	os.WriteFile(src, data, 0o644)
	dest := filepath.Join(dir, "out")
	return dest, Extract(context.Background(), src, dest, lim)
}

func TestExtract(t *testing.T) {
	good := []entry{{name: "config.json", typ: tar.TypeReg, body: []byte(`{}`)}, {name: "model.onnx", typ: tar.TypeReg, body: []byte("onnx")}}
	bomb := []entry{{name: "model.onnx", typ: tar.TypeReg, body: bytes.Repeat([]byte{0}, 4<<20)}}
	tests := []struct {
		name    string
		entries []entry
		lim     Limits
		wantErr string
	}{
		{"flat", good, DefaultLimits, ""},
		{"in a folder", []entry{{name: "m/", typ: tar.TypeDir}, {name: "m/config.json", typ: tar.TypeReg, body: []byte("{}")}}, DefaultLimits, ""},
		{"dot-dot", []entry{{name: "../evil", typ: tar.TypeReg, body: []byte("x")}}, DefaultLimits, "path traversal"},
		{"nested dot-dot", []entry{{name: "a/../../evil", typ: tar.TypeReg, body: []byte("x")}}, DefaultLimits, "path traversal"},
		{"absolute", []entry{{name: "/etc/passwd", typ: tar.TypeReg, body: []byte("x")}}, DefaultLimits, "absolute path"},
		{"symlink", []entry{{name: "link", typ: tar.TypeSymlink, link: "/etc/passwd"}}, DefaultLimits, "link entry"},
		{"hard link", []entry{{name: "link", typ: tar.TypeLink, link: "config.json"}}, DefaultLimits, "link entry"},
		{"device", []entry{{name: "dev", typ: tar.TypeChar}}, DefaultLimits, "devices"},
		{"fifo", []entry{{name: "fifo", typ: tar.TypeFifo}}, DefaultLimits, "devices"},
		{"duplicate", []entry{good[0], good[0]}, DefaultLimits, "duplicate"},
		{"ratio bomb", bomb, Limits{MaxTotalBytes: 1 << 30, MaxRatio: 50}, "past its limits"},
		{"total limit", bomb, Limits{MaxTotalBytes: 1 << 20}, "past its limits"},
		{"entry count", []entry{{name: "a", typ: tar.TypeReg}, {name: "b", typ: tar.TypeReg}, {name: "c", typ: tar.TypeReg}}, Limits{MaxEntries: 2}, "more than 2 entries"},
	}
	for _, format := range []string{"tar.gz", "zip"} {
		for _, tt := range tests {
			if format == "zip" && (tt.entries[0].typ == tar.TypeLink || tt.entries[0].typ == tar.TypeChar || tt.entries[0].typ == tar.TypeFifo) {
				continue // zip cannot express these
			}
			t.Run(format+"/"+tt.name, func(t *testing.T) {
				data := tarGz(tt.entries)
				if format == "zip" {
					data = zipOf(tt.entries)
				}
				dest, err := extract(t, data, tt.lim)
				if tt.wantErr == "" {
					if err != nil {
						t.Fatal(err)
					}
					if _, err := os.Stat(filepath.Join(ModelRoot(dest), "config.json")); err != nil {
						t.Fatalf("config.json not unpacked: %v", err)
					}
					return
				}
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want %q", err, tt.wantErr)
				}
				if _, serr := os.Stat(dest); !errors.Is(serr, os.ErrNotExist) {
					t.Fatalf("refused archive left %s behind", dest)
				}
				left, _ := filepath.Glob(filepath.Join(filepath.Dir(dest), ".extract-*"))
				if len(left) > 0 {
					t.Fatalf("temp folders left: %v", left)
				}
			})
		}
	}
	if _, err := extract(t, []byte("just text"), DefaultLimits); err == nil || !strings.Contains(err.Error(), "not a .tar.gz or .zip") {
		t.Fatalf("plain file: %v", err)
	}
}

// FuzzExtract: no input makes Extract panic, write outside its destination,
// or leave anything behind when it fails.
func FuzzExtract(f *testing.F) {
	f.Add(tarGz([]entry{{name: "config.json", typ: tar.TypeReg, body: []byte("{}")}}))
	f.Add(tarGz([]entry{{name: "../x", typ: tar.TypeReg, body: []byte("x")}}))
	f.Add(zipOf([]entry{{name: "a/b.txt", body: []byte("hello")}}))
	f.Add(zipOf([]entry{{name: "l", typ: tar.TypeSymlink, link: "/"}}))
	f.Add([]byte("PK\x03\x04garbage"))
	f.Add([]byte{0x1f, 0x8b, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		root := t.TempDir()
		src := filepath.Join(root, "a")
		os.WriteFile(src, data, 0o644)
		dest := filepath.Join(root, "sub", "out")
		err := Extract(context.Background(), src, dest, Limits{MaxTotalBytes: 1 << 20, MaxEntries: 64, MaxRatio: 200})
		entries, _ := os.ReadDir(filepath.Join(root, "sub"))
		if err != nil && len(entries) != 0 {
			t.Fatalf("failed extraction left %v", entries)
		}
		top, _ := os.ReadDir(root)
		for _, e := range top {
			if e.Name() != "a" && e.Name() != "sub" {
				t.Fatalf("wrote outside the destination: %s", e.Name())
			}
		}
	})
}
