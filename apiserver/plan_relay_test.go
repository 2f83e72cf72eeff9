package apiserver

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/nlpswarm/nlpswarm/internal/bearer"
)

// Issue 17: the scheduler's /plan answers only its read token; the
// apiserver's relay of the dry run sends it, and says so when the scheduler
// refuses it.
func TestPlanRelaySendsTheReadToken(t *testing.T) {
	const token = "scheduler-read-test-token"
	sched := httptest.NewServer(bearer.Require(token, "the scheduler read token", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"creates":[]}`))
	})))
	defer sched.Close()
	e := newEnv(t)
	for _, c := range []struct {
		name, token string
		want        int
	}{
		{"the read token", token, http.StatusOK},
		{"no token", "", http.StatusBadGateway},
		{"another token", "not-the-read-token", http.StatusBadGateway},
	} {
		e.cfg.SchedulerURL, e.cfg.SchedulerToken = sched.URL, c.token
		e.start()
		code, body := e.do("GET", "/api/v1/plan", adminTok, nil)
		if code != c.want {
			t.Errorf("%s: %d %v, want %d", c.name, code, body, c.want)
		}
		if c.want == http.StatusOK && body["creates"] == nil {
			t.Errorf("%s: the plan was not relayed: %v", c.name, body)
		}
	}
}
