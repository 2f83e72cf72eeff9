package gateway

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/nlpswarm/nlpswarm/internal/artifactcred"
	"github.com/nlpswarm/nlpswarm/internal/bearer"
	"github.com/nlpswarm/nlpswarm/internal/runtimeapi"
)

// Issue 17: a replica answers inference and metadata only with its model's
// call credential, which the gateway derives from the replica call secret
// and sends on every upstream request, on both upstream clients. A gateway
// on another secret (or none) gets the replica's 401, which it answers 502
// upstream_error: the platform's fault, never relayed as the customer's 401.
func TestCallCredentialToReplicas(t *testing.T) {
	otherKey, err := artifactcred.CallKey(strings.Repeat("another-secret-", 3))
	if err != nil {
		t.Fatal(err)
	}
	eachUpstream(t, func(t *testing.T, upstream string) {
		for _, c := range []struct {
			name    string
			key     []byte
			want    int
			errCode string
		}{
			{"the scheduler's secret", testCallKey, http.StatusOK, ""},
			{"another secret", otherKey, http.StatusBadGateway, "upstream_error"},
			{"no secret", nil, http.StatusBadGateway, "upstream_error"},
		} {
			t.Run(c.name, func(t *testing.T) {
				e := newEnv(t, false)
				e.upstream, e.callKey = upstream, c.key
				key, _ := e.key(e.account("acme", "standard"), "inference")
				rt := newRuntime(t, runtimeapi.TextClassification)
				e.model("sentiment", runtimeapi.TextClassification, 0, rt)
				e.start(Config{})
				for _, r := range []struct{ method, path, body string }{
					{"POST", "/v1/sentiment/sentiment", `{"text":"great"}`},
					{"POST", "/v2/models/sentiment/infer", `{"inputs":[{"name":"text","shape":[1],"datatype":"BYTES","data":["great"]}]}`},
					{"GET", "/v2/models/sentiment", ""},
				} {
					req, _ := http.NewRequest(r.method, e.srv.URL+r.path, strings.NewReader(r.body))
					req.Header.Set("Authorization", "Token "+key)
					resp, err := http.DefaultClient.Do(req)
					if err != nil {
						t.Fatal(err)
					}
					a := answer{status: resp.StatusCode}
					_ = decodeBody(resp, &a)
					if a.status != c.want || a.code() != c.errCode {
						t.Errorf("%s %s: %d %s, want %d %q", r.method, r.path, a.status, a.raw, c.want, c.errCode)
					}
				}
			})
		}
	})

	// the replica itself, as another container on the runtimes' network
	// reaches it: no credential, another model's, its own
	rt := newRuntime(t, runtimeapi.TextClassification)
	rt.rt.SetCallCredential(artifactcred.Call(testCallKey, "sentiment"))
	for _, c := range []struct {
		name, auth string
		want       int
	}{
		{"none", "", http.StatusUnauthorized},
		{"another model's", callAuth("ner"), http.StatusUnauthorized},
		{"its own", callAuth("sentiment"), http.StatusOK},
	} {
		req, _ := http.NewRequest("POST", rt.URL+runtimeapi.PathPredict, strings.NewReader(`{"texts":["x"]}`))
		if c.auth != "" {
			req.Header.Set("Authorization", c.auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		a := answer{status: resp.StatusCode}
		_ = decodeBody(resp, &a)
		if a.status != c.want || (c.want == http.StatusUnauthorized && a.code() != bearer.Code) {
			t.Errorf("direct /predict with %s credential: %d %s, want %d", c.name, a.status, a.raw, c.want)
		}
	}
}

// decodeBody reads resp's body into a (raw and decoded) and closes it.
func decodeBody(resp *http.Response, a *answer) error {
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	a.raw, a.header = string(raw), resp.Header
	_ = json.Unmarshal(raw, &a.body)
	return err
}
