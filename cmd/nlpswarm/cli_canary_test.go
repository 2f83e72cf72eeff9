//go:build !agentonly

package main

import "testing"

// The canary verbs against the real apiserver: deploy --canary/--shadow
// and their refusals, status with both versions, promote and rollback.
func TestCLICanary(t *testing.T) {
	env, fixture := cliSession(t)
	runSteps(t, env, []cliStep{
		{[]string{"models", "create", "sentiment", "--task", "text-classification"}, 0, "created model sentiment"},
		{[]string{"models", "push", "sentiment", fixture}, 0, "pushed sentiment version 1"},
		{[]string{"models", "push", "sentiment", fixture}, 0, "pushed sentiment version 2"},
		{[]string{"deploy", "sentiment", "--version", "2", "--canary", "5%"}, 3, "not deployed"},
		{[]string{"deploy", "sentiment", "--version", "1", "--replicas", "2"}, 0, "deploy: sentiment version 1, 2 replica(s)"},
		{[]string{"deploy", "sentiment", "--version", "2", "--canary", "0%"}, 2, "--canary must be a share above 0%"},
		{[]string{"deploy", "sentiment", "--version", "2", "--canary", "5%", "--shadow"}, 2, "exclude each other"},
		{[]string{"deploy", "sentiment", "--version", "2", "--sticky"}, 2, "need --canary"},
		{[]string{"deploy", "sentiment", "--version", "2", "--canary", "5%", "--rollback-error-rate", "5%"}, 2, "needs a window"},
		{[]string{"deploy", "sentiment", "--version", "9", "--canary", "5%"}, 1, "no such version"},
		{[]string{"deploy", "sentiment", "--version", "2", "--canary", "10%", "--sticky", "--rollback-error-rate", "5%", "--rollback-p99", "800ms", "--rollback-window", "30s"}, 0,
			"deploy: sentiment version 2 as canary 10% sticky beside version 1, 1 replica(s)"},
		{[]string{"deploy", "sentiment", "--version", "2", "--shadow"}, 1, "already has a canary"},
		{[]string{"status", "sentiment"}, 0, "canary: version 2, canary 10% sticky, active"},
		{[]string{"status", "sentiment"}, 0, "automatic rollback: error rate > 5% or p99 > 800ms over 30s"},
		{[]string{"status"}, 0, "  canary 10% sticky"},
		{[]string{"promote", "sentiment"}, 0, "promote: sentiment to version 2"},
		{[]string{"status", "sentiment"}, 0, "promoting: the stable service rolls to version 2"},
		{[]string{"rollback", "sentiment"}, 0, "rollback: sentiment answers from version 1 only"},
		{[]string{"status", "sentiment"}, 0, "rolled_back: rolled back by an operator"},
		{[]string{"rollback", "sentiment"}, 3, "it has none running"},
		{[]string{"deploy", "sentiment", "--version", "2", "--shadow"}, 0, "as shadow beside version 1"},
	})
}
