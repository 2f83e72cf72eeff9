//go:build !agentonly

package main

import (
	"regexp"
	"strings"
	"testing"
)

// TestCLIPlansAccountsKeys drives plans, an account's plan and revoking a
// key by its prefix through the real apiserver.
func TestCLIPlansAccountsKeys(t *testing.T) {
	url, token := startAPIServer(t)
	env := []string{"NLPSWARM_SERVER=" + url, "NLPSWARM_TOKEN=" + token}
	runSteps(t, env, []cliStep{
		{[]string{"plans", "ls"}, 0, "free"},
		{[]string{"plans", "create", "pro", "--rps", "20", "--burst", "40", "--quota", "100000"}, 0, "created plan pro"},
		{[]string{"plans", "create", "pro", "--rps", "1", "--burst", "1"}, 1, "exists"},
		{[]string{"plans", "create", "cheap", "--rps", "0", "--burst", "1"}, 2, "usage"},
		{[]string{"plans", "update", "pro", "--rps", "2.5"}, 0, "2.5"},
		{[]string{"plans", "update", "pro"}, 2, "name what changes"},
		{[]string{"plans", "update", "pro", "--burst", "0"}, 1, "burst"},
		{[]string{"plans", "update", "gold", "--burst", "3"}, 3, "not found"},
		{[]string{"plans", "ls"}, 0, "100000"},
		{[]string{"plans", "update", "pro", "--tokens-per-minute", "20000", "--tokens-per-month", "9000000"}, 0, "9000000"},
		{[]string{"plans", "create", "llm", "--rps", "1", "--burst", "1", "--tokens-per-month", "-1"}, 2, "usage"},
		{[]string{"plans", "ls"}, 0, "TOKENS/MONTH"},
		{[]string{"accounts", "create", "acme"}, 0, "created account 1 acme (plan free)"},
		{[]string{"accounts", "update", "1", "--plan", "pro"}, 0, "is on plan pro"},
		{[]string{"accounts", "update", "1", "--plan", "gold"}, 1, "no plan named gold"},
		{[]string{"accounts", "update", "1"}, 2, "usage"},
		{[]string{"accounts", "show", "1"}, 0, "limits per key: 2.5 requests/s, burst 40, monthly quota 100000"},
		{[]string{"accounts", "show", "1"}, 0, "generation tokens per key: 20000 a minute, 9000000 a month"},
		{[]string{"keys", "create", "1", "--name", "ci"}, 0, "nlp_"},
		{[]string{"keys", "create", "acme", "--name", "other"}, 0, "nlp_"}, // an account by its name too
		{[]string{"keys", "create", "nobody", "--name", "x"}, 1, `no account named "nobody"`},
		{[]string{"accounts", "show", "acme"}, 0, "generation tokens per key"},
	})
	// no Redis configured for this apiserver: the page says so rather than failing
	runSteps(t, env, []cliStep{{[]string{"accounts", "show", "1"}, 0, "Redis is not configured"}})
	stdout, _, code := runBin(t, env, "keys", "ls", "1")
	if code != 0 {
		t.Fatalf("keys ls: %d %s", code, stdout)
	}
	m := regexp.MustCompile(`(?m)^1\s+(\S+)\s+ci`).FindStringSubmatch(stdout)
	m2 := regexp.MustCompile(`(?m)^2\s+(\S+)\s+other`).FindStringSubmatch(stdout)
	if m == nil || m2 == nil {
		t.Fatalf("no prefix of key 1 or 2 in:\n%s", stdout)
	}
	other := m2[1]
	runSteps(t, env, []cliStep{
		{[]string{"keys", "revoke", m[1]}, 0, "revoked key 1 (prefix " + m[1] + ") of account 1"},
		{[]string{"keys", "revoke", "zzzzzzzz"}, 3, "no key with prefix"},
		// a whole key works too, and its secret is not what names it in the answer
		{[]string{"keys", "revoke", "nlp_" + other + "_" + strings.Repeat("a", 32)}, 0, "revoked key 2 (prefix " + other + ")"},
		{[]string{"keys", "revoke", "1", "2", "3"}, 2, "usage"},
	})
	stdout, _, _ = runBin(t, env, "keys", "ls", "1")
	if !regexp.MustCompile(`(?m)^1\s.*revoked`).MatchString(stdout) || !regexp.MustCompile(`(?m)^2\s.*revoked`).MatchString(stdout) {
		t.Errorf("after revoking keys 1 and 2 by prefix:\n%s", stdout)
	}
	if !strings.Contains(stdout, "PREFIX") {
		t.Errorf("keys ls: %s", stdout)
	}
}
