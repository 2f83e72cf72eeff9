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
	PasswordFile string        `description:"file holding the Redis password (optional)"`
	DB           int           `description:"Redis database number"`
	DialTimeout  time.Duration `description:"dial timeout"`
}

// DefaultConfig matches .ci/run and the stack.
func DefaultConfig() Config {
	return Config{Addr: "127.0.0.1:6379", DialTimeout: 2 * time.Second}
}

// Connect builds a client and checks that Redis answers within ctx.
func Connect(ctx context.Context, c Config) (*redis.Client, error) {
	pw, err := secret.Optional("redis password", c.PasswordFile, "")
	if err != nil {
		return nil, err
	}
	cl := redis.NewClient(&redis.Options{
		Addr: c.Addr, Password: pw, DB: c.DB,
		DialTimeout: c.DialTimeout, ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second,
		PoolTimeout: 3 * time.Second,
	})
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := cl.Ping(pctx).Err(); err != nil {
		cl.Close()
		return nil, fmt.Errorf("redis %s unreachable: %w", c.Addr, err)
	}
	return cl, nil
}
