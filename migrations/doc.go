// Package migrations owns the Postgres schema: goose SQL migrations embedded
// in the binary. It holds no Go logic; internal/pg applies it.
package migrations

import "embed"

// FS holds the migration files, applied in version order.
//
//go:embed *.sql
var FS embed.FS
