package modelmgr

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/nlpswarm/nlpswarm/internal/pg/pgtest"
)

func TestGCCandidates(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	grace := time.Hour
	b := func(d string, age time.Duration) BlobInfo { return BlobInfo{Digest: d, ModTime: now.Add(-age)} }
	for _, c := range []struct {
		name  string
		blobs []BlobInfo
		want  string
	}{
		{"none", nil, ""},
		{"young blobs stay out", []BlobInfo{b("a", 0), b("b", 59*time.Minute)}, ""},
		{"exactly the grace period is not past it", []BlobInfo{b("a", time.Hour)}, ""},
		{"old ones, oldest first", []BlobInfo{b("a", 2*time.Hour), b("b", 30*time.Minute), b("c", 48*time.Hour)}, "c,a"},
	} {
		var got []string
		for _, x := range GCCandidates(c.blobs, now, grace) {
			got = append(got, x.Digest)
		}
		if strings.Join(got, ",") != c.want {
			t.Errorf("%s: %v, want %s", c.name, got, c.want)
		}
	}
}

// storeBlob puts content in s as digest d, last touched age ago.
func storeBlob(t *testing.T, s *FSStore, d string, age time.Duration) {
	t.Helper()
	tmp := filepath.Join(s.TempDir(), "up")
	if err := os.WriteFile(tmp, []byte(d), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(context.Background(), tmp, d); err != nil {
		t.Fatal(err)
	}
	p, _ := s.path(d)
	old := time.Now().Add(-age)
	if err := os.Chtimes(p, old, old); err != nil {
		t.Fatal(err)
	}
}

func fakeDigest(c byte) string { return "sha256:" + strings.Repeat(string(c), 64) }

// The collector removes only blobs that are unreferenced and past the grace
// period; a database error removes nothing; a duplicate upload makes an old
// unreferenced blob young again (its version row is on its way).
func TestCollectBlobs(t *testing.T) {
	db := pgtest.New(t, true)
	ctx := context.Background()
	s, err := NewFSStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	used, orphan, young, dup := fakeDigest('a'), fakeDigest('b'), fakeDigest('c'), fakeDigest('d')
	storeBlob(t, s, used, 48*time.Hour)
	storeBlob(t, s, orphan, 48*time.Hour)
	storeBlob(t, s, young, time.Minute)
	storeBlob(t, s, dup, 48*time.Hour)
	if _, err := db.Pool.Exec(ctx, `INSERT INTO models (name, task) VALUES ('m', 'text-classification')`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Pool.Exec(ctx, `INSERT INTO model_versions (model_id, version, digest, size_bytes, task)
		SELECT id, 1, $1, 64, 'text-classification' FROM models`, used); err != nil {
		t.Fatal(err)
	}
	have := func() map[string]bool {
		bs, err := s.List()
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]bool{}
		for _, b := range bs {
			m[b.Digest] = true
		}
		return m
	}

	// Postgres gone: nothing is deleted
	down, err := pgxpool.New(ctx, "postgres://u@127.0.0.1:1/x?sslmode=disable&connect_timeout=1")
	if err != nil {
		t.Fatal(err)
	}
	down.Close()
	res, err := CollectBlobs(ctx, s, &Registry{DB: down}, time.Hour, time.Now())
	if err == nil || len(res.Removed) != 0 || len(have()) != 4 {
		t.Fatalf("with the database down: removed %v, err %v, left %v", res.Removed, err, have())
	}

	// a duplicate upload of dup arrives: Put touches it
	tmp := filepath.Join(s.TempDir(), "again")
	if err := os.WriteFile(tmp, []byte(dup), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, tmp, dup); err != nil {
		t.Fatal(err)
	}
	res, err = CollectBlobs(ctx, s, &Registry{DB: db.Pool}, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	left := have()
	if len(res.Removed) != 1 || res.Removed[0] != orphan || left[orphan] || !left[used] || !left[young] || !left[dup] {
		t.Fatalf("removed %v, left %v: want only the old unreferenced blob gone", res.Removed, left)
	}
}
