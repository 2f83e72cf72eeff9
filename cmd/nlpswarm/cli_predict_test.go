//go:build !agentonly

package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nlpswarm/nlpswarm/gateway/gatewaytest"
)

// nlpswarm predict calls a real gateway through the Go client.
func TestPredictAgainstGateway(t *testing.T) {
	gw := gatewaytest.Start(t, gatewaytest.Options{})
	env := []string{"NLPSWARM_GATEWAY=" + gw.URL, "NLPSWARM_KEY=" + gw.Key}
	keyFile := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(keyFile, []byte(gw.Key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		env  []string
		args []string
		code int
		want string
	}{
		{env, []string{"predict", "sentiment", "sentiment", "great", "awful"}, 0, "awful   NEGATIVE   0.1000"},
		{env, []string{"predict", "ner", "entities", "Alice went home"}, 0, "PER Alice [0:5]"},
		{env, []string{"predict", "embed", "embeddings", "abcd"}, 0, "vector of 3: 0.1 0.2 4 ..."},
		{env, []string{"predict", "sentiment", "classification", "great", "--params", `{"top_k":1}`, "--json"}, 0, `"label": "POSITIVE"`},
		{[]string{"NLPSWARM_GATEWAY=" + gw.URL}, []string{"predict", "--keyfile", keyFile, "sentiment", "sentiment", "x"}, 0, "POSITIVE"},
		{env, []string{"predict", "nope", "sentiment", "x"}, 3, "404 model_not_found"},
		{env, []string{"predict", "sentiment", "entities", "x"}, 1, "400 task_not_supported"},
		{env, []string{"predict", "sentiment", "translate", "x"}, 2, "unknown task"},
		{env, []string{"predict", "sentiment", "sentiment"}, 2, "usage"},
		{env, []string{"predict", "sentiment", "sentiment", "x", "--params", "[1]"}, 2, "want a JSON object"},
		{[]string{"NLPSWARM_GATEWAY=" + gw.URL}, []string{"predict", "sentiment", "sentiment", "x"}, 2, "no API key"},
		{[]string{"NLPSWARM_GATEWAY=" + gw.URL, "NLPSWARM_KEY=nlp_zzzzzzzz_" + strings.Repeat("a", 32)}, []string{"predict", "sentiment", "sentiment", "x"}, 1, "401 unauthorized"},
	} {
		out, stderr, code := runBin(t, tt.env, tt.args...)
		if code != tt.code || !strings.Contains(out+stderr, tt.want) {
			t.Errorf("nlpswarm %v: exit %d, want %d with %q:\n%s%s", tt.args, code, tt.code, tt.want, out, stderr)
		}
	}
}
