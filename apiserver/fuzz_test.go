package apiserver

import (
	"strings"
	"testing"
)

// FuzzDeploymentRequest: decoding and checking a deployment body never panics
// and never accepts out-of-range values.
func FuzzDeploymentRequest(f *testing.F) {
	for _, s := range []string{
		`{"version":1,"replicas":2,"resources":{"cpus":0.5,"memory":"1G","gpus":1,"gpu_memory":"8G"},"placement":{"labels":{"zone":"a"}}}`,
		`{"replicas":-1}`, `{"resources":{"memory":"lots"}}`, `{"resources":{"memory":1e300}}`, `[]`, `{"x":1}`, ``, `{"replicas":1}{}`,
		`{"placement":{"labels":{"a\"b":"c"}}}`, `{"resources":{"gpu_memory":"1G"}}`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		var r DeploymentRequest
		if err := decodeJSON(strings.NewReader(body), &r); err != nil {
			return
		}
		if err := r.Check(); err != nil {
			return
		}
		if *r.Replicas < 0 || *r.Replicas > MaxReplicas || r.Resources.CPUs < 0 || r.Resources.Memory < 0 || r.Resources.GPUMemory < 0 {
			t.Fatalf("accepted out-of-range request %+v", r)
		}
	})
}

func TestParseBytes(t *testing.T) {
	for in, want := range map[string]int64{"1G": 1 << 30, "512M": 512 << 20, "1.5GiB": 3 << 29, "2048": 2048, "8g": 8 << 30, "64KB": 64 << 10} {
		if got, err := ParseBytes(in); err != nil || got != want {
			t.Errorf("%s: %d %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "G", "-1M", "lots", "1e40"} {
		if _, err := ParseBytes(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// issue 17 finding 8: the deploy form's numbers refuse NaN and infinities,
// which strconv.ParseFloat accepts and range checks let through.
func TestParseFiniteRefusesNaN(t *testing.T) {
	for _, bad := range []string{"NaN", "nan", "Inf", "-Inf", "+inf", "1e400", "x"} {
		if f, err := parseFinite(bad); err == nil {
			t.Errorf("%q accepted as %v", bad, f)
		}
	}
	if f, err := parseFinite("0.5"); err != nil || f != 0.5 {
		t.Errorf("0.5: %v %v", f, err)
	}
}
