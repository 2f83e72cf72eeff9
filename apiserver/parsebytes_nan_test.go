package apiserver

import "testing"

// Issue 17: "NaN" parsed as a float and passed both range checks, giving an
// undefined int64 size.
func TestParseBytesRefusesNaN(t *testing.T) {
	for _, bad := range []string{"NaN", "nan", "NaNG", "nanKiB", "+NaN", "-NaN", "Inf", "infM"} {
		if n, err := ParseBytes(bad); err == nil {
			t.Errorf("%q accepted as %d", bad, n)
		}
	}
}
