package scheduler

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"reflect"
	"testing"

	"github.com/moby/moby/api/types/swarm"

	"github.com/nlpswarm/nlpswarm/internal/apierror"
	"github.com/nlpswarm/nlpswarm/internal/bearer"
)

func sdService(id, name string, labels map[string]string) swarm.Service {
	return swarm.Service{ID: id, Spec: swarm.ServiceSpec{Annotations: swarm.Annotations{Name: name, Labels: labels}}}
}

func sdTask(service, node string, slot int, desired swarm.TaskState, nets ...string) swarm.Task {
	t := swarm.Task{ServiceID: service, NodeID: node, Slot: slot, DesiredState: desired}
	for i := 0; i+1 < len(nets); i += 2 {
		t.NetworksAttachments = append(t.NetworksAttachments, swarm.NetworkAttachment{
			Network:   swarm.Network{Spec: swarm.NetworkSpec{Annotations: swarm.Annotations{Name: nets[i]}}},
			Addresses: []netip.Prefix{netip.MustParsePrefix(nets[i+1])},
		})
	}
	return t
}

func sdGroup(target, service, model, node, slot string) SDGroup {
	return SDGroup{Targets: []string{target}, Labels: map[string]string{"service": service, "model": model, "node": node, "slot": slot}}
}

func TestSDTargets(t *testing.T) {
	gateway := sdService("g", "nlp_gateway", map[string]string{LabelMetricsPort: "9100"})
	model := sdService("m", "nlp-sentiment", map[string]string{LabelMetricsPort: "8000", LabelModel: "sentiment"})
	nodes := map[string]string{"n1": "ml-1", "n2": "manager"}
	for _, tc := range []struct {
		name string
		snap SDSnapshot
		want []SDGroup
	}{
		{"empty", SDSnapshot{}, []SDGroup{}},
		{
			"a stack service on the control network, at its metrics port, not on admin",
			SDSnapshot{Services: []swarm.Service{gateway}, Nodes: nodes, Tasks: []swarm.Task{
				sdTask("g", "n2", 1, swarm.TaskStateRunning, SDControlNetwork, "10.0.1.5/24", "nlpswarm-admin", "10.0.3.5/24"),
			}},
			[]SDGroup{sdGroup("10.0.1.5:9100", "nlp_gateway", "", "manager", "1")},
		},
		{
			"a stack service is not scraped on the runtimes' network",
			SDSnapshot{Services: []swarm.Service{gateway}, Nodes: nodes, Tasks: []swarm.Task{
				sdTask("g", "n2", 1, swarm.TaskStateRunning, SDRuntimeNetwork, "10.0.2.5/24"),
			}},
			[]SDGroup{},
		},
		{
			"model replicas on the runtimes' network, ordered by slot; shut-down tasks left out; unknown node by ID",
			SDSnapshot{Services: []swarm.Service{model}, Nodes: nodes, Tasks: []swarm.Task{
				sdTask("m", "n1", 10, swarm.TaskStateRunning, SDRuntimeNetwork, "10.0.2.10/24"),
				sdTask("m", "n9", 2, swarm.TaskStateRunning, SDRuntimeNetwork, "10.0.2.2/24"),
				sdTask("m", "n1", 1, swarm.TaskStateShutdown, SDRuntimeNetwork, "10.0.2.1/24"),
			}},
			[]SDGroup{
				sdGroup("10.0.2.2:8000", "nlp-sentiment", "sentiment", "n9", "2"),
				sdGroup("10.0.2.10:8000", "nlp-sentiment", "sentiment", "ml-1", "10"),
			},
		},
		{
			"services without a valid metrics port, and tasks of unlisted services, are not targets",
			SDSnapshot{Services: []swarm.Service{
				sdService("p", "nlp_postgres", nil),
				sdService("x", "nlp_bad", map[string]string{LabelMetricsPort: "http"}),
			}, Tasks: []swarm.Task{
				sdTask("p", "n2", 1, swarm.TaskStateRunning, SDControlNetwork, "10.0.1.7/24"),
				sdTask("x", "n2", 1, swarm.TaskStateRunning, SDControlNetwork, "10.0.1.8/24"),
				sdTask("gone", "n2", 1, swarm.TaskStateRunning, SDControlNetwork, "10.0.1.9/24"),
			}},
			[]SDGroup{},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := SDTargets(tc.snap); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("SDTargets:\n got %v\nwant %v", got, tc.want)
			}
		})
	}
}

func TestSDHandler(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	snap := SDSnapshot{
		Services: []swarm.Service{sdService("g", "nlp_gateway", map[string]string{LabelMetricsPort: "9100"})},
		Tasks:    []swarm.Task{sdTask("g", "n1", 1, swarm.TaskStateRunning, SDControlNetwork, "10.0.1.5/24")},
		Nodes:    map[string]string{"n1": "manager"},
	}
	ok := func(context.Context) (SDSnapshot, error) { return snap, nil }
	fail := func(context.Context) (SDSnapshot, error) { return SDSnapshot{}, errors.New("engine down") }

	rec := httptest.NewRecorder()
	SDHandler(ok, "", log).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, SDPath, nil))
	if rec.Code != http.StatusOK || rec.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("GET: %d %q", rec.Code, rec.Header().Get("Content-Type"))
	}
	// Prometheus's HTTP SD format, exactly
	var got []map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	want := []map[string]any{{"targets": []any{"10.0.1.5:9100"}, "labels": map[string]any{"service": "nlp_gateway", "model": "", "node": "manager", "slot": "1"}}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("body %s", rec.Body)
	}

	rec = httptest.NewRecorder()
	SDHandler(fail, "", log).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, SDPath, nil))
	if rec.Code != http.StatusServiceUnavailable {
		t.Errorf("snapshot error: %d, want 503 (Prometheus keeps its targets)", rec.Code)
	}
	rec = httptest.NewRecorder()
	SDHandler(ok, "", log).ServeHTTP(rec, httptest.NewRequest(http.MethodPost, SDPath, nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d", rec.Code)
	}
}

// Issue 17: /sd and /plan (task addresses, service and node names) answer
// only the holders of the scheduler read token (Prometheus, the apiserver),
// not anyone on the control network.
func TestReadEndpointsNeedTheToken(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	const token = "read-token-of-the-test"
	snapshots := 0
	snap := func(context.Context) (SDSnapshot, error) { snapshots++; return SDSnapshot{}, nil }
	plan := (&Reconciler{Log: log}).PlanHandler(token) // refused before it reads anything
	for _, h := range []struct {
		name string
		h    http.Handler
		path string
	}{{"sd", SDHandler(snap, token, log), SDPath}, {"plan", plan, PlanPath}} {
		for _, c := range []struct{ name, auth string }{
			{"no token", ""},
			{"wrong token", bearer.Header("read-token-of-the-tesT")},
			{"a prefix of it", bearer.Header(token[:len(token)-1])},
			{"the token without its scheme", token},
		} {
			rec := httptest.NewRecorder()
			req := httptest.NewRequest(http.MethodGet, h.path, nil)
			if c.auth != "" {
				req.Header.Set("Authorization", c.auth)
			}
			h.h.ServeHTTP(rec, req)
			var e apierror.Body
			if rec.Code != http.StatusUnauthorized || json.Unmarshal(rec.Body.Bytes(), &e) != nil || e.Error.Code != bearer.Code {
				t.Errorf("%s with %s: %d %s, want 401", h.name, c.name, rec.Code, rec.Body)
			}
		}
	}
	if snapshots != 0 {
		t.Fatalf("a refused request read the engine %d times", snapshots)
	}
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, SDPath, nil)
	req.Header.Set("Authorization", bearer.Header(token))
	SDHandler(snap, token, log).ServeHTTP(rec, req)
	if rec.Code != http.StatusOK || snapshots != 1 {
		t.Fatalf("sd with the token: %d %s", rec.Code, rec.Body)
	}
	// a scheduler without a token (started by hand) serves them open
	rec = httptest.NewRecorder()
	SDHandler(snap, "", log).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, SDPath, nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("sd without a configured token: %d", rec.Code)
	}
}
