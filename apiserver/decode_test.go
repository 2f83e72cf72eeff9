package apiserver

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"

	"net/http"
)

// decodeJSON names a body cut by the caller's http.MaxBytesReader as too
// large, and any other failure as a body problem.
func TestDecodeJSONTooLarge(t *testing.T) {
	var v map[string]any
	big := `{"a":"` + strings.Repeat("x", 2<<20) + `"}`
	r := http.MaxBytesReader(httptest.NewRecorder(), io.NopCloser(strings.NewReader(big)), 1<<20)
	if err := decodeJSON(r, &v); err == nil || err.Error() != "body larger than 1 MiB" {
		t.Fatalf("over the limit: %v", err)
	}
	if err := decodeJSON(strings.NewReader(`{"a":`), &v); err == nil || !strings.HasPrefix(err.Error(), "body: ") {
		t.Fatalf("truncated: %v", err)
	}
}
