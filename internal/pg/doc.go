// Package pg owns the Postgres connection pool (pgxpool) and applying the
// embedded schema migrations (goose) under an advisory lock, so that two
// replicas never migrate at once. It holds no queries of any domain.
package pg
