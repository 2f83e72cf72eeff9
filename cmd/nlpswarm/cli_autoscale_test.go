//go:build !agentonly

package main

import "testing"

// The autoscale flags of deploy, the floor semantics of scale and what
// status shows, against the real apiserver.
func TestCLIAutoscale(t *testing.T) {
	env, fixture := cliSession(t)
	runSteps(t, env, []cliStep{
		{[]string{"models", "create", "sentiment", "--task", "text-classification"}, 0, "created model sentiment"},
		{[]string{"models", "push", "sentiment", fixture}, 0, "pushed sentiment version 1"},
		{[]string{"deploy", "sentiment", "--min", "1"}, 2, "need --max"},
		{[]string{"deploy", "sentiment", "--max", "4", "--min", "5"}, 2, "--min must be 0..max"},
		{[]string{"deploy", "sentiment", "--max", "4", "--idle-to-zero", "1ms"}, 2, "--idle-to-zero must be"},
		{[]string{"deploy", "sentiment", "--min", "0", "--max", "4", "--target-inflight", "2", "--scale-down-delay", "10s", "--idle-to-zero", "1m", "--replicas", "0"}, 0,
			"deploy: sentiment version 1, 0 replica(s) autoscaled 0..4 @2"},
		{[]string{"status", "sentiment"}, 0, "autoscale: 0..4 replicas, target 2 in flight per replica, scale down after 10s, to zero after 1m0s idle"},
		{[]string{"status"}, 0, "0..4 @2"},
		{[]string{"scale", "sentiment", "2"}, 0, "its floor (min) is now 2, 2 replica(s) now"},
		{[]string{"status", "sentiment"}, 0, "manual scale: autoscaler floor set to 2"},
		{[]string{"status", "sentiment", "--json"}, 0, `"autoscale": {`},
		// a redeploy without --replicas keeps the current count
		{[]string{"deploy", "sentiment", "--max", "4"}, 0, "2 replica(s) autoscaled 0..4 @4"},
		{[]string{"deploy", "sentiment", "--replicas", "1"}, 0, "1 replica(s), generation"},
		{[]string{"status", "sentiment"}, 0, "   -   "},
	})
}
