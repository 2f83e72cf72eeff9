package gateway

import (
	"os"
	"path/filepath"
	"testing"
)

// TestMemoryLimit reads fake cgroup files (v2 memory.max, v1
// memory.limit_in_bytes) as the container's limit would be written.
func TestMemoryLimit(t *testing.T) {
	dir := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	missing := filepath.Join(dir, "missing")
	for _, tc := range []struct {
		name    string
		set     int64
		paths   []string
		want    int64
		ok, err bool
	}{
		{"v2 256M at 80%", 0, []string{file("v2", "268435456\n")}, 214748365, true, false},
		{"v2 unlimited", 0, []string{file("v2max", "max\n")}, 0, false, false},
		{"v1 after a missing v2", 0, []string{missing, file("v1", "536870912\n")}, 429496730, true, false},
		{"v1 unlimited", 0, []string{file("v1max", "9223372036854771712\n")}, 0, false, false},
		{"no cgroup file", 0, []string{missing}, 0, false, false},
		{"garbage", 0, []string{file("bad", "lots")}, 0, false, true},
		{"negative", 0, []string{file("neg", "-1")}, 0, false, true},
		{"flag wins", 100 << 20, []string{file("v2b", "268435456")}, 100 << 20, true, false},
	} {
		got, ok, err := MemoryLimit(tc.set, 80, tc.paths...)
		if got != tc.want || ok != tc.ok || (err != nil) != tc.err {
			t.Errorf("%s: %d %v %v, want %d %v err=%v", tc.name, got, ok, err, tc.want, tc.ok, tc.err)
		}
	}
}
