package pg_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/nlpswarm/nlpswarm/internal/pg/pgtest"
)

// issue 17 finding 7: every service has its own database role with only
// the grants its code uses; the internet-facing gateway above all cannot
// write keys, accounts or deployments, and no service role can change the
// schema.
func TestServiceRolesLeastPrivilege(t *testing.T) {
	db := pgtest.New(t, true)
	ctx := context.Background()
	try := func(role, stmt string) error {
		tx, err := db.Pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx)
		if _, err := tx.Exec(ctx, "SET LOCAL ROLE "+role); err != nil {
			t.Fatalf("set role %s: %v", role, err)
		}
		_, err = tx.Exec(ctx, stmt)
		return err
	}
	denied := func(err error) bool {
		var pe *pgconn.PgError
		return errors.As(err, &pe) && pe.Code == "42501" // insufficient_privilege
	}
	for _, c := range []struct {
		role, stmt string
		allowed    bool
	}{
		{"nlpswarm_gateway", `SELECT k.id FROM api_keys k JOIN accounts a ON a.id = k.account_id LEFT JOIN plans p ON p.id = a.plan_id`, true},
		{"nlpswarm_gateway", `SELECT d.replicas FROM deployments d JOIN models m ON m.id = d.model_id`, true},
		{"nlpswarm_gateway", `INSERT INTO usage (api_key_id, model_id, day) SELECT 1, 1, now()::date WHERE false`, true},
		{"nlpswarm_gateway", `INSERT INTO api_keys (account_id, name, prefix, hash) SELECT 1, 'x', 'x', 'x' WHERE false`, false},
		{"nlpswarm_gateway", `UPDATE accounts SET plan_id = NULL WHERE false`, false},
		{"nlpswarm_gateway", `UPDATE deployments SET replicas = 0 WHERE false`, false},
		{"nlpswarm_gateway", `DELETE FROM usage WHERE false`, false},
		{"nlpswarm_gateway", `INSERT INTO usage (api_key_id, account_id, model_id, model_name, day) SELECT 1, 1, 1, 'm', now()::date WHERE false`, true},
		{"nlpswarm_gateway", `INSERT INTO usage_batches (id, rows) SELECT repeat('a', 32), 1 WHERE false ON CONFLICT (id) DO NOTHING`, true},
		{"nlpswarm_gateway", `DELETE FROM usage_batches WHERE applied_at < now() - make_interval(secs => 1)`, true},
		{"nlpswarm_gateway", `SELECT * FROM model_versions`, false},
		{"nlpswarm_gateway", `CREATE TABLE mine (x int)`, false},
		{"nlpswarm_scheduler", `UPDATE deployments SET status = status WHERE false`, true},
		{"nlpswarm_scheduler", `DELETE FROM gpu_assignments WHERE false`, true},
		{"nlpswarm_scheduler", `INSERT INTO scheduler_lease (name, holder, backend_pid, expires_at) SELECT 'leader', 'x', pg_backend_pid(), now() WHERE false`, true},
		{"nlpswarm_scheduler", `SELECT pid FROM pg_stat_activity WHERE pid = pg_backend_pid()`, true},
		{"nlpswarm_scheduler", `DELETE FROM scheduler_lease WHERE false`, true},
		{"nlpswarm_gateway", `SELECT * FROM scheduler_lease`, false},
		{"nlpswarm_scheduler", `SELECT * FROM api_keys`, false},
		{"nlpswarm_scheduler", `DELETE FROM deployments WHERE false`, false},
		{"nlpswarm_agent", `INSERT INTO nodes (id) SELECT 'n' WHERE false`, true},
		{"nlpswarm_agent", `DELETE FROM gpus WHERE false`, true},
		{"nlpswarm_agent", `SELECT * FROM api_keys`, false},
		{"nlpswarm_agent", `UPDATE deployments SET replicas = 0 WHERE false`, false},
		// each role reads the schema version at start (WaitSchema), none writes it
		{"nlpswarm_gateway", `SELECT max(version_id) FROM goose_db_version`, true},
		{"nlpswarm_scheduler", `SELECT max(version_id) FROM goose_db_version`, true},
		{"nlpswarm_apiserver", `SELECT max(version_id) FROM goose_db_version`, true},
		{"nlpswarm_agent", `SELECT max(version_id) FROM goose_db_version`, true},
		{"nlpswarm_apiserver", `DELETE FROM goose_db_version WHERE false`, false},
		{"nlpswarm_apiserver", `DELETE FROM api_keys WHERE false`, true},
		{"nlpswarm_apiserver", `INSERT INTO web_session_revocations (session_id, expires_at) SELECT repeat('a', 32), now() WHERE false`, true},
		{"nlpswarm_apiserver", `DROP TABLE usage`, false},
		{"nlpswarm_apiserver", `ALTER TABLE api_keys ADD COLUMN x int`, false},
	} {
		err := try(c.role, c.stmt)
		if c.allowed && err != nil {
			t.Errorf("%s: %s: %v", c.role, c.stmt, err)
		}
		if !c.allowed && !denied(err) {
			t.Errorf("%s may: %s (%v)", c.role, c.stmt, err)
		}
	}
	// the roles do not log in until the stack's postgres image gives them
	// a password (a test cluster shares the roles, never their passwords)
	var login bool
	if err := db.Pool.QueryRow(ctx, `SELECT bool_or(rolsuper OR rolcreaterole OR rolcreatedb OR rolbypassrls) FROM pg_roles WHERE rolname LIKE 'nlpswarm\_%'`).Scan(&login); err != nil {
		t.Fatal(err)
	}
	if login {
		t.Errorf("a service role has superuser, createrole, createdb or bypassrls")
	}
}

// issue 18: a service role whose process can vanish with its node (a power
// cut sends no FIN) must not hold row locks until TCP notices, hours later:
// migration 00041 makes Postgres end its sessions idle inside a transaction
// after 10 s, and bounds the scheduler's lock waits. Role settings apply
// at login, so this reads them from the catalogue; make chaos-gpu's
// WorkerPowerCut is the behaviour (an agent cut between INSERT and COMMIT).
func TestDeadSessionsLetGoOfLocks(t *testing.T) {
	db := pgtest.New(t, true)
	want := map[string][]string{
		"nlpswarm_agent":     {"idle_in_transaction_session_timeout=10s"},
		"nlpswarm_gateway":   {"idle_in_transaction_session_timeout=10s"},
		"nlpswarm_scheduler": {"idle_in_transaction_session_timeout=10s", "lock_timeout=20s"},
	}
	for role, settings := range want {
		var got []string
		err := db.Pool.QueryRow(context.Background(), `SELECT coalesce(s.setconfig, '{}') FROM pg_roles r
			LEFT JOIN pg_db_role_setting s ON s.setrole = r.oid AND s.setdatabase = 0 WHERE r.rolname = $1`, role).Scan(&got)
		if err != nil {
			t.Fatalf("%s: %v", role, err)
		}
		for _, s := range settings {
			if !slices.Contains(got, s) {
				t.Errorf("%s has %v, want %s among them", role, got, s)
			}
		}
	}
}
