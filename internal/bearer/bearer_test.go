package bearer

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/nlpswarm/nlpswarm/internal/apierror"
)

func TestRequire(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusTeapot) })
	for _, tc := range []struct {
		name, token, auth string
		want              int
	}{
		{"right token", "s3cret", Header("s3cret"), http.StatusTeapot},
		{"scheme in another case", "s3cret", "bearer s3cret", http.StatusTeapot},
		{"no header", "s3cret", "", http.StatusUnauthorized},
		{"wrong token", "s3cret", Header("s3cre7"), http.StatusUnauthorized},
		{"a prefix of it", "s3cret", Header("s3cre"), http.StatusUnauthorized},
		{"longer", "s3cret", Header("s3cret2"), http.StatusUnauthorized},
		{"no scheme", "s3cret", "s3cret", http.StatusUnauthorized},
		{"basic", "s3cret", "Basic s3cret", http.StatusUnauthorized},
		{"empty token configured, empty sent", "", "Bearer ", http.StatusUnauthorized},
		{"empty token configured, none sent", "", "", http.StatusUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/sd", nil)
			if tc.auth != "" {
				r.Header.Set("Authorization", tc.auth)
			}
			w := httptest.NewRecorder()
			Require(tc.token, "the test token", ok).ServeHTTP(w, r)
			if w.Code != tc.want {
				t.Fatalf("status %d, want %d", w.Code, tc.want)
			}
			if tc.want != http.StatusUnauthorized {
				return
			}
			var b apierror.Body
			if err := json.Unmarshal(w.Body.Bytes(), &b); err != nil || b.Error.Code != Code || b.Error.Message == "" {
				t.Fatalf("body %q: %v", w.Body, err)
			}
			if w.Header().Get("WWW-Authenticate") == "" {
				t.Error("no WWW-Authenticate")
			}
		})
	}
}
