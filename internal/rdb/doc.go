// Package rdb owns the Redis client setup (go-redis v9): address, password
// from a file, timeouts, connect-time check. Every role's Redis client comes
// from New or Connect. It holds no keys of any domain.
package rdb
