package secret

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRead(t *testing.T) {
	dir := t.TempDir()
	ok := filepath.Join(dir, "ok")
	os.WriteFile(ok, []byte("s3cret-value\n"), 0o600)
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, []byte(" \n"), 0o600)
	tests := []struct {
		name, path, want, wantErr string
	}{
		{"ok", ok, "s3cret-value", ""},
		{"missing", filepath.Join(dir, "nope"), "", "does not exist"},
		{"empty", empty, "", "is empty"},
		{"dir", dir, "", "not a small regular file"},
		{"unset", "", "", "no file given"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Read("admin token", tt.path)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %q, %v", got, err)
			}
		})
	}
	if v, err := Optional("x", "", "dflt"); err != nil || v != "dflt" {
		t.Fatalf("Optional: %q %v", v, err)
	}
}
