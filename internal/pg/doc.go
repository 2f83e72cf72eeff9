// Package pg owns the Postgres connection pool (pgxpool) and applying the
// embedded schema migrations (goose) under an advisory lock, so that two
// replicas never migrate at once. It holds no queries of any domain.
//
// In the stack only the one-shot `nlpswarm migrate up` service applies the
// schema, as its owner. Each role waits at start (WaitSchema) until goose's
// version table holds at least the version its binary embeds
// (EmbeddedVersion), so that a rolling upgrade never runs a new role on an
// old schema; ClassifySchema is that decision, pure. Every service role may
// read the version table (migration 00021), none may write it.
package pg
