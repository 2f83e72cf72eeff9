//go:build !agentonly

package main

import "testing"

// Issue 14: deploy --backend (checked before any request), and status shows
// each deployment's engine: the one asked for, or "default" until the
// scheduler resolves the platform's.
func TestCLIBackend(t *testing.T) {
	env, fixture := cliSession(t)
	runSteps(t, env, []cliStep{
		{[]string{"models", "create", "sentiment", "--task", "text-classification"}, 0, "created model sentiment"},
		{[]string{"models", "push", "sentiment", fixture}, 0, "pushed sentiment version 1"},
		{[]string{"deploy", "sentiment", "--backend", "tensorrt"}, 2, "--backend must be ort or go"},
		{[]string{"deploy", "sentiment"}, 0, "backend the platform's default"},
		{[]string{"status"}, 0, "BACKEND"},
		{[]string{"status", "sentiment"}, 0, " default "},
		{[]string{"deploy", "sentiment", "--backend", "ort"}, 0, "generation 2, backend ort"},
		{[]string{"status", "sentiment"}, 0, " ort "},
		{[]string{"status", "sentiment", "--json"}, 0, `"backend": "ort"`},
		{[]string{"deploy", "sentiment", "--backend", "go"}, 0, "backend go"},
		{[]string{"status"}, 0, " go "},
	})
}
