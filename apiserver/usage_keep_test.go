package apiserver

import (
	"fmt"
	"strings"
	"testing"
)

// Billing history outlives what it counts (issue 18 item 2, migration
// 00020): `models rm` and deleting a key no longer erase usage, and the
// usage report still names the account and the model.
func TestUsageOutlivesModelAndKey(t *testing.T) {
	e := newEnv(t)
	e.seedSentimentV1()
	e.seed(`INSERT INTO accounts (name) VALUES ('acme')`,
		`INSERT INTO api_keys (account_id, prefix, hash, kind) SELECT id, 'abcd', '\x00', 'inference' FROM accounts WHERE name = 'acme'`,
		// as the gateway writes it
		`INSERT INTO usage (api_key_id, account_id, model_id, model_name, day, requests, texts, errors)
			SELECT k.id, k.account_id, m.id, m.name, '2026-11-30', 7, 9, 1 FROM api_keys k, models m`,
		// a row from before migration 00020 (its names backfilled there, none here)
		`INSERT INTO usage (api_key_id, model_id, day, requests, texts, errors)
			SELECT k.id, m.id, '2026-11-29', 2, 2, 0 FROM api_keys k, models m`)
	if code, body := e.do("DELETE", "/api/v1/models/sentiment", adminTok, nil); code != 204 {
		t.Fatalf("models rm: %d %v", code, body)
	}
	e.seed(`DELETE FROM api_keys`)
	if n := e.count(`SELECT count(*) FROM usage`); n != 2 {
		t.Fatalf("usage rows after the model and key went: %d, want 2", n)
	}
	code, body := e.do("GET", "/api/v1/usage?from=2026-11-01&to=2026-11-30&account=acme", adminTok, nil)
	rows, _ := body["usage"].([]any)
	if code != 200 || len(rows) != 1 {
		t.Fatalf("usage report: %d %v", code, body)
	}
	got := fmt.Sprint(rows[0])
	for _, want := range []string{"account:acme", "model:sentiment", "day:2026-11-30", "requests:7", "texts:9", "errors:1"} {
		if !strings.Contains(got, want) {
			t.Errorf("usage row %s lacks %s", got, want)
		}
	}
	// the old row lost its key before it had an account: it is still
	// counted, under a name that says so
	code, body = e.do("GET", "/api/v1/usage?from=2026-11-29&to=2026-11-29", adminTok, nil)
	if rows, _ := body["usage"].([]any); code != 200 || len(rows) != 1 || !strings.Contains(fmt.Sprint(rows[0]), "requests:2") {
		t.Errorf("old row: %d %v", code, body)
	}
}
