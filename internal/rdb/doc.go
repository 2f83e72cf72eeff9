// Package rdb owns the Redis client setup (go-redis v9): address, password
// from a file, connect-time check. It holds no keys of any domain.
package rdb
