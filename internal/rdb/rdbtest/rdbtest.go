// Package rdbtest gives tests a Redis client on the real server named by
// NLPSWARM_TEST_REDIS_ADDR (default 127.0.0.1:6379) with a key prefix of
// their own. It skips without a server, except under CI=true, where it fails.
package rdbtest

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/nlpswarm/nlpswarm/internal/dockertest"
	"github.com/nlpswarm/nlpswarm/internal/pg/pgtest"
	"github.com/nlpswarm/nlpswarm/internal/rdb"
)

// Addr is the test server's address.
func Addr() string {
	if a := os.Getenv("NLPSWARM_TEST_REDIS_ADDR"); a != "" {
		return a
	}
	return "127.0.0.1:6379"
}

// New returns a client and a unique key prefix; keys under it are deleted
// when the test ends.
func New(t testing.TB) (*redis.Client, string) {
	t.Helper()
	c := rdb.DefaultConfig()
	c.Addr = Addr()
	cl, err := rdb.Connect(context.Background(), c)
	if err != nil {
		pgtest.Unavailable(t, "redis", err)
	}
	b := make([]byte, 6)
	rand.Read(b)
	prefix := "test:" + hex.EncodeToString(b) + ":"
	t.Cleanup(func() {
		ctx := context.Background()
		iter := cl.Scan(ctx, 0, prefix+"*", 100).Iterator()
		for iter.Next(ctx) {
			cl.Del(ctx, iter.Val())
		}
		cl.Close()
	})
	return cl, prefix
}

// Role returns a client logged in as a new ACL user of the test server with
// the rules the stack's Redis gives role (deployments/images/redis/roles.acl,
// its {prefix} replaced by prefix); admin, a client of the default user,
// makes the user and deletes it when the test ends. A command the role's
// code sends that its rules do not allow fails with NOPERM.
func Role(t testing.TB, admin *redis.Client, prefix, role string) *redis.Client {
	t.Helper()
	rules := RoleRules(t, role)
	b := make([]byte, 6)
	rand.Read(b)
	user, pw := "test-"+role+"-"+hex.EncodeToString(b), hex.EncodeToString(b)+"pw"
	ctx := context.Background()
	args := []any{"ACL", "SETUSER", user, "reset", "on", ">" + pw, "resetchannels"}
	for _, r := range rules {
		args = append(args, strings.ReplaceAll(r, "{prefix}", prefix))
	}
	if err := admin.Do(ctx, args...).Err(); err != nil {
		t.Fatalf("ACL SETUSER %s: %v", role, err)
	}
	c := rdb.DefaultConfig()
	cl := redis.NewClient(&redis.Options{Addr: Addr(), Username: user, Password: pw, DialTimeout: c.DialTimeout, ReadTimeout: c.Timeout, WriteTimeout: c.Timeout})
	t.Cleanup(func() {
		cl.Close()
		admin.Do(context.Background(), "ACL", "DELUSER", user)
	})
	return cl
}

// RoleRules is role's line of deployments/images/redis/roles.acl, split.
func RoleRules(t testing.TB, role string) []string {
	t.Helper()
	dir := dockertest.RepoRoot(t)
	f, err := os.Open(filepath.Join(dir, "deployments", "images", "redis", "roles.acl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fs := strings.Fields(sc.Text()); len(fs) > 1 && fs[0] == role {
			return fs[1:]
		}
	}
	t.Fatalf("roles.acl has no line for %s", role)
	return nil
}
