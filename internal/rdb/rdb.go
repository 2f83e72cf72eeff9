package rdb

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nlpswarm/nlpswarm/internal/secret"
)

// Config is the Redis part of a role's configuration.
type Config struct {
	Addr         string        `description:"Redis address host:port"`
	Username     string        `description:"Redis ACL user (the stack gives each role its own, deployments/images/redis/roles.acl); empty: the default user"`
	PasswordFile string        `description:"file holding the Redis password (optional)"`
	DB           int           `description:"Redis database number"`
	DialTimeout  time.Duration `description:"dial timeout"`
	Timeout      time.Duration `description:"read and write timeout of one command (waiting for a pooled connection: 1s more)"`
	MaxRetries   int           `description:"retries of a failed command (-1: none)"`
}

// DefaultConfig matches .ci/run and the stack.
func DefaultConfig() Config {
	return Config{Addr: "127.0.0.1:6379", DialTimeout: 2 * time.Second, Timeout: 2 * time.Second, MaxRetries: 1}
}

// New builds a client from c, reading the password from its file; it does
// not contact Redis, so a role that runs on without Redis can start while it
// is down (the client connects when first used).
func New(c Config) (*redis.Client, error) {
	pw, err := secret.Optional("redis password", c.PasswordFile, "")
	if err != nil {
		return nil, err
	}
	return redis.NewClient(&redis.Options{
		Addr: c.Addr, Username: c.Username, Password: pw, DB: c.DB, DialTimeout: c.DialTimeout,
		ReadTimeout: c.Timeout, WriteTimeout: c.Timeout, MaxRetries: c.MaxRetries,
	}), nil
}

// Connect is New and a check that Redis answers within ctx.
func Connect(ctx context.Context, c Config) (*redis.Client, error) {
	cl, err := New(c)
	if err != nil {
		return nil, err
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := cl.Ping(pctx).Err(); err != nil {
		cl.Close()
		return nil, fmt.Errorf("redis %s unreachable: %w", c.Addr, err)
	}
	return cl, nil
}
