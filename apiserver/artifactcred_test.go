package apiserver

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nlpswarm/nlpswarm/internal/artifactcred"
	"github.com/nlpswarm/nlpswarm/modelmgr"
)

// Issue 17 item 1: /internal/blobs/{digest} serves a blob only to an
// unexpired credential for exactly that digest. On the old code the shared
// internal token read every tenant's blob; it now opens nothing, and another
// digest's, an expired, a tampered or a forged credential are refused.
func TestBlobNeedsItsOwnCredential(t *testing.T) {
	store, err := modelmgr.NewFSStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	put := func(body string) string {
		sum := sha256.Sum256([]byte(body))
		digest := "sha256:" + hex.EncodeToString(sum[:])
		tmp := filepath.Join(store.TempDir(), "blob")
		if err := os.WriteFile(tmp, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := store.Put(context.Background(), tmp, digest); err != nil {
			t.Fatal(err)
		}
		return digest
	}
	mine, theirs := put("tenant A's model"), put("tenant B's model")
	srv := New(Config{AdminToken: adminTok, InternalToken: internalTok}, nil, store, modelmgr.Validator{}, slog.New(slog.DiscardHandler))
	now := time.Date(2026, 12, 1, 22, 0, 0, 0, time.UTC)
	srv.now = func() time.Time { return now }
	key := artifactcred.Key(internalTok)
	good := artifactcred.Mint(key, mine, now.Add(time.Hour))
	tampered := strings.Replace(good, mine, theirs, 1)
	for _, tc := range []struct {
		name, digest, tok string
		want              int
	}{
		{"own credential", mine, good, http.StatusOK},
		{"another digest's credential", theirs, good, http.StatusForbidden},
		{"digest rewritten in the credential", theirs, tampered, http.StatusUnauthorized},
		{"expired", mine, artifactcred.Mint(key, mine, now), http.StatusUnauthorized},
		{"signed with another key", mine, artifactcred.Mint(artifactcred.Key("guess"), mine, now.Add(time.Hour)), http.StatusUnauthorized},
		{"the shared internal token (read any digest before)", theirs, internalTok, http.StatusForbidden},
		{"the admin token", mine, adminTok, http.StatusForbidden},
		{"none", mine, "", http.StatusUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodGet, "/internal/blobs/"+tc.digest, nil)
			req.RemoteAddr = "10.0.0.9:40000"
			if tc.tok != "" {
				req.Header.Set("Authorization", "Bearer "+tc.tok)
			}
			w := httptest.NewRecorder()
			srv.InternalHandler().ServeHTTP(w, req)
			body, _ := io.ReadAll(w.Body)
			if w.Code != tc.want {
				t.Fatalf("%d %s, want %d", w.Code, body, tc.want)
			}
			if tc.want == http.StatusOK && string(body) != "tenant A's model" {
				t.Fatalf("served %q", body)
			}
			if tc.want != http.StatusOK && strings.Contains(string(body), "'s model") {
				t.Fatalf("refusal carries the blob: %q", body)
			}
		})
	}
}
