package apiserver

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// hostileStrings are SQL injection classics, path traversal, a NUL and an
// overlong value: every text field must either store them verbatim or refuse
// them with a 4xx and a machine-readable code, never answer 5xx, and never
// touch anything else in the database.
var hostileStrings = []string{
	`' OR '1'='1`,
	`'; DROP TABLE models; --`,
	`x'); DELETE FROM api_keys; --`,
	`" OR ""="`,
	`1 UNION SELECT hash, prefix FROM api_keys`,
	`$$; DROP TABLE accounts; $$`,
	`\'; SELECT pg_sleep(10); --`,
	`../../../../etc/passwd`,
	`..\..\windows\system32`,
	"nul\x00byte",
	"<script>alert(1)</script>",
	strings.Repeat("A", 70_000),
}

// TestHostileTextInEveryField sends each hostile string in every text field
// of the backoffice API (bodies, paths, query strings) and checks the
// answers and the tables.
func TestHostileTextInEveryField(t *testing.T) {
	e := newEnv(t)
	if c, _ := e.do("POST", "/api/v1/accounts", adminTok, map[string]any{"name": "acme"}); c != 201 {
		t.Fatal(c)
	}
	if c, _ := e.do("POST", "/api/v1/models", adminTok, map[string]any{"name": "sentiment", "task": "text-classification"}); c != 201 {
		t.Fatal(c)
	}
	tables := []string{"models", "model_versions", "deployments", "accounts", "api_keys", "plans", "usage"}
	counts := func() map[string]int {
		out := map[string]int{}
		for _, tb := range tables {
			out[tb] = e.count(`SELECT count(*) FROM ` + tb)
		}
		return out
	}
	// ok: a 2xx (the value stored, checked by the caller) or a 4xx with a code
	check := func(what string, code int, body map[string]any) bool {
		t.Helper()
		if code >= 500 || code == 0 {
			t.Errorf("%s: %d %v", what, code, body)
			return false
		}
		if code >= 400 {
			if er, _ := body["error"].(map[string]any); er == nil || er["code"] == "" {
				t.Errorf("%s: %d without an error code: %v", what, code, body)
			}
			return false
		}
		return true
	}
	short := func(s string) string {
		if len(s) > 30 {
			return s[:30] + "…"
		}
		return s
	}
	for i, s := range hostileStrings {
		before := counts()
		added := map[string]int{}
		q := url.QueryEscape(s)
		p := url.PathEscape(s)

		// models: name, task, description, visibility, owner
		c, b := e.do("POST", "/api/v1/models", adminTok, map[string]any{"name": s, "task": "text-classification"})
		if check("model name "+short(s), c, b) {
			t.Errorf("model name %q accepted", short(s))
		}
		c, b = e.do("POST", "/api/v1/models", adminTok, map[string]any{"name": "m", "task": s})
		if check("model task "+short(s), c, b) {
			t.Errorf("model task %q accepted", short(s))
		}
		c, b = e.do("POST", "/api/v1/models", adminTok, map[string]any{"name": "m", "task": "text-classification", "visibility": s})
		if check("model visibility "+short(s), c, b) {
			t.Errorf("visibility %q accepted", short(s))
		}
		name := "desc" + string(rune('a'+i))
		c, b = e.do("POST", "/api/v1/models", adminTok, map[string]any{"name": name, "task": "text-classification", "description": s})
		if check("model description "+short(s), c, b) {
			added["models"]++
			if _, got := e.do("GET", "/api/v1/models/"+name, adminTok, nil); got["description"] != s {
				t.Errorf("description %q stored as %q", short(s), got["description"])
			}
		}
		for _, method := range []string{"GET", "DELETE"} {
			c, b = e.do(method, "/api/v1/models/"+p, adminTok, nil)
			check(method+" /models/"+short(s), c, b)
			c, b = e.do(method, "/api/v1/models/"+p+"/deployment", adminTok, nil)
			check(method+" /models/"+short(s)+"/deployment", c, b)
		}
		c, b = e.do("GET", "/api/v1/models/"+p+"/versions", adminTok, nil)
		check("versions of "+short(s), c, b)
		c, b = e.upload(p, []byte("not an archive"))
		check("upload to "+short(s), c, b)
		c, b = e.do("POST", "/api/v1/models/"+p+"/scale", adminTok, map[string]any{"replicas": 1})
		check("scale "+short(s), c, b)
		// deployment placement labels: key and value
		for _, labels := range []map[string]string{{s: "x"}, {"zone": s}} {
			c, b = e.do("PUT", "/api/v1/models/sentiment/deployment", adminTok, map[string]any{"replicas": 0, "placement": map[string]any{"labels": labels}})
			check("placement label "+short(s), c, b)
		}
		// plans, accounts, keys
		c, b = e.do("POST", "/api/v1/plans", adminTok, map[string]any{"name": s, "requests_per_second": 1, "burst": 1})
		planMade := check("plan name "+short(s), c, b)
		if planMade {
			added["plans"]++
		}
		c, b = e.do("POST", "/api/v1/accounts", adminTok, map[string]any{"name": s})
		if check("account name "+short(s), c, b) {
			added["accounts"]++
			if b["name"] != s {
				t.Errorf("account name %q stored as %q", short(s), b["name"])
			}
		}
		c, b = e.do("POST", "/api/v1/accounts", adminTok, map[string]any{"name": "acct" + string(rune('a'+i)), "plan": s})
		switch ok := check("account plan "+short(s), c, b); {
		case ok && planMade: // the plan just made under that name
			added["accounts"]++
		case ok:
			t.Errorf("unknown plan %q accepted", short(s))
		case planMade:
			t.Errorf("plan %q made but refused for an account: %d %v", short(s), c, b)
		}
		c, b = e.do("POST", "/api/v1/accounts/1/keys", adminTok, map[string]any{"name": s})
		if check("key name "+short(s), c, b) {
			added["api_keys"]++
		}
		for _, path := range []string{"/api/v1/accounts/" + p + "/keys", "/api/v1/accounts/1/keys/" + p} {
			for _, method := range []string{"GET", "POST", "DELETE"} {
				c, b = e.do(method, path, adminTok, nil)
				if c < 400 && method != "GET" {
					t.Errorf("%s %s: %d", method, short(path), c)
				}
				check(method+" "+short(path), c, b)
			}
		}
		c, b = e.do("GET", "/api/v1/usage?account="+q+"&model="+q, adminTok, nil)
		check("usage filters "+short(s), c, b)
		c, b = e.do("GET", "/api/v1/usage?from="+q, adminTok, nil)
		if check("usage from "+short(s), c, b) {
			t.Errorf("usage from=%q accepted", short(s))
		}
		// the blob route with the internal token
		req, _ := http.NewRequest("GET", e.ihttp.URL+"/internal/blobs/"+p, nil)
		req.Header.Set("Authorization", "Bearer "+internalTok)
		if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode < 400 || resp.StatusCode >= 500 {
			t.Errorf("blob %q: %v %v", short(s), resp.StatusCode, err)
		} else {
			resp.Body.Close()
		}

		after := counts()
		for _, tb := range tables {
			if after[tb] != before[tb]+added[tb] {
				t.Errorf("%q: table %s went from %d to %d rows (%d expected added)", short(s), tb, before[tb], after[tb], added[tb])
			}
		}
	}
}
