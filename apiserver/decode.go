package apiserver

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	units "github.com/docker/go-units"
	"io"
	"net/http"
	"strings"
)

func decodeJSON(r io.Reader, v any) error {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError // (from the caller's http.MaxBytesReader)
		if errors.As(err, &mbe) {
			return errors.New("body larger than 1 MiB")
		}
		return fmt.Errorf("body: %v", err)
	}
	if dec.More() {
		return errors.New("body: trailing data after the JSON object")
	}
	return nil
}

// Bytes is a size given as a number of bytes or a string like "512M", "1G",
// "1.5GiB".
type Bytes int64

// UnmarshalJSON implements json.Unmarshaler.
func (b *Bytes) UnmarshalJSON(p []byte) error {
	p = bytes.TrimSpace(p)
	if len(p) > 0 && p[0] == '"' {
		var s string
		if err := json.Unmarshal(p, &s); err != nil {
			return err
		}
		n, err := ParseBytes(s)
		if err != nil {
			return err
		}
		*b = Bytes(n)
		return nil
	}
	var n int64
	if err := json.Unmarshal(p, &n); err != nil {
		return fmt.Errorf("size must be bytes or a string like \"1G\"")
	}
	if n < 0 {
		return fmt.Errorf("size must not be negative")
	}
	*b = Bytes(n)
	return nil
}

// FormatBytes writes a size in binary units with one decimal ("2.0 GiB"),
// the form the pages and the CLI show; ParseBytes reads it back.
func FormatBytes(n int64) string {
	return units.CustomSize("%.1f %s", float64(n), 1024, []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB"})
}

// ParseBytes parses "1G", "512M", "1.5GiB", "2048" (binary units) with
// go-units, the engine's own parser; sizes above 1 PiB are refused.
func ParseBytes(s string) (int64, error) {
	n, err := units.RAMInBytes(strings.TrimSpace(s))
	if err != nil || n < 0 || n > 1<<50 {
		return 0, fmt.Errorf("bad size %q (want e.g. 512M, 1G)", s)
	}
	return n, nil
}
