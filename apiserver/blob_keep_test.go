package apiserver

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/nlpswarm/nlpswarm/modelmgr"
)

// issue 18 item 5: the database goes away in the middle of a duplicate
// upload (after the archive is stored, before its version row). The upload
// fails, and the blob that an earlier version references stays: a failed
// "in use" check was read as "not in use" and deleted it.
func TestDatabaseCutMidUploadKeepsBlobs(t *testing.T) {
	e := newEnv(t)
	down, err := pgxpool.New(context.Background(), "postgres://u@127.0.0.1:1/x?sslmode=disable&connect_timeout=1")
	if err != nil {
		t.Fatal(err)
	}
	down.Close()
	var cut atomic.Bool
	e.smoke = func(context.Context, string, string) error {
		if cut.Load() { // validation done, the blob is stored next: the database goes now
			e.srv.reg = &modelmgr.Registry{DB: down}
		}
		return nil
	}
	e.start()
	for _, name := range []string{"sentiment", "copy"} {
		if code, body := e.do("POST", "/api/v1/models", adminTok, map[string]any{"name": name, "task": "text-classification"}); code != 201 {
			t.Fatalf("create %s: %d %v", name, code, body)
		}
	}
	arch := tarGz(t, fixtureFiles(t, "sentiment"))
	code, v1 := e.upload("sentiment", arch)
	if code != 201 {
		t.Fatalf("upload: %d %v", code, v1)
	}
	digest := v1["digest"].(string)

	cut.Store(true)
	if code, body := e.upload("copy", arch); code < 500 {
		t.Fatalf("upload with the database cut: %d %v, want a 5xx", code, body)
	}
	e.srv.reg = &modelmgr.Registry{DB: e.db.Pool}
	blobs, _ := e.leftovers()
	if len(blobs) != 1 || blobs[0] != strings.TrimPrefix(digest, "sha256:") {
		t.Fatalf("blobs after the cut upload: %v, want version 1's %s", blobs, digest)
	}
	if n := e.count(`SELECT count(*) FROM model_versions WHERE digest = $1`, digest); n != 1 {
		t.Fatalf("versions of %s: %d", digest, n)
	}
}
