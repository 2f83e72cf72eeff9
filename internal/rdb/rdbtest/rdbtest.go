// Package rdbtest gives tests a Redis client on the real server named by
// NLPSWARM_TEST_REDIS_ADDR (default 127.0.0.1:6379) with a key prefix of
// their own. It skips without a server, except under CI=true, where it fails.
package rdbtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"

	"github.com/redis/go-redis/v9"

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
