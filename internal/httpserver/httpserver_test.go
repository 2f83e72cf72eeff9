package httpserver

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestServeDrainsInFlight(t *testing.T) {
	health := NewHealth(Check{Name: "dep", Fn: func(context.Context) error { return nil }})
	started := make(chan struct{})
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		time.Sleep(300 * time.Millisecond)
		io.WriteString(w, "done")
	})
	opts := Defaults("127.0.0.1:0")
	opts.DrainDelay = 200 * time.Millisecond
	srv, err := Listen(opts, Handler(app, health, NewRegistry()), health, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()
	base := "http://" + srv.Addr()

	for path, want := range map[string]int{"/healthz": 200, "/readyz": 200, "/metrics": 200} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("%s: %d %s", path, resp.StatusCode, body)
		}
		if path == "/metrics" && !strings.Contains(string(body), "go_goroutines") {
			t.Fatalf("metrics lack go collector")
		}
	}

	slow := make(chan string, 1)
	go func() {
		resp, err := http.Get(base + "/work")
		if err != nil {
			slow <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		slow <- string(b)
	}()
	<-started
	cancel()
	time.Sleep(50 * time.Millisecond)
	// readiness is off while draining, the listener is still open
	resp, err := http.Get(base + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("readyz while draining: %d", resp.StatusCode)
	}
	if got := <-slow; got != "done" {
		t.Fatalf("in-flight request: %q", got)
	}
	if err := <-served; err != nil {
		t.Fatal(err)
	}
}

func TestReadiness(t *testing.T) {
	h := NewHealth(Check{Name: "postgres", Fn: func(context.Context) error { return errors.New("connection refused") }})
	if err := h.Ready(context.Background()); err == nil || !strings.Contains(err.Error(), "postgres") {
		t.Fatalf("want postgres error, got %v", err)
	}
	h2 := NewHealth()
	h2.SetNotReady("loading model")
	if err := h2.Ready(context.Background()); err == nil {
		t.Fatal("want not ready")
	}
	h2.SetNotReady("")
	if err := h2.Ready(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// issue 18: a dependency the process serves on without (Postgres for the
// apiserver and the scheduler) degrades /readyz but keeps its 200, so that
// Swarm's healthcheck does not kill the process during a database outage; a
// hard check still fails it, and draining still wins.
func TestReadyzDegradedKeeps200(t *testing.T) {
	pgDown := errors.New("dial tcp 10.0.1.7:5432: connection refused")
	var pgErr, hardErr error = pgDown, nil
	h := NewHealth(
		Check{Name: "postgres", Degrades: true, Fn: func(context.Context) error { return pgErr }},
		Check{Name: "catalogue", Fn: func(context.Context) error { return hardErr }},
	)
	get := func() (int, string) {
		rec := httptest.NewRecorder()
		Handler(nil, h, nil).ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
		return rec.Code, rec.Body.String()
	}
	for _, tc := range []struct {
		name       string
		pg, hard   error
		drain      bool
		code       int
		body, leak string
	}{
		{"all up", nil, nil, false, 200, `"ready"`, ""},
		{"postgres down", pgDown, nil, false, 200, `{"degraded":["postgres unreachable"],"status":"degraded"}`, "5432"},
		{"hard check down too", pgDown, errors.New("no catalogue"), false, 503, `"catalogue unreachable"`, ""},
		{"draining", pgDown, nil, true, 503, `"draining"`, ""},
	} {
		pgErr, hardErr = tc.pg, tc.hard
		if tc.drain {
			h.SetDraining()
		}
		code, body := get()
		if code != tc.code || !strings.Contains(body, tc.body) {
			t.Errorf("%s: %d %s, want %d with %s", tc.name, code, body, tc.code, tc.body)
		}
		if tc.leak != "" && strings.Contains(body, tc.leak) {
			t.Errorf("%s: body shows %q: %s", tc.name, tc.leak, body)
		}
	}
}

// issue 17 finding 8: /readyz, served on the public ports, names the
// failing dependency and never prints its error (a driver's message names
// hosts, ports, users and databases).
func TestReadyzHidesCheckErrors(t *testing.T) {
	cause := errors.New(`failed to connect to user=nlpswarm_gateway database=nlpswarm: 10.0.1.7:5432 (postgres): password authentication failed`)
	h := NewHealth(Check{Name: "postgres", Fn: func(context.Context) error { return cause }})
	rec := httptest.NewRecorder()
	Handler(nil, h, nil).ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("status %d", rec.Code)
	}
	body := rec.Body.String()
	for _, leak := range []string{"nlpswarm_gateway", "10.0.1.7", "5432", "password", "database="} {
		if strings.Contains(body, leak) {
			t.Errorf("/readyz shows %q: %s", leak, body)
		}
	}
	if !strings.Contains(body, `"postgres unreachable"`) {
		t.Errorf("/readyz does not name the dependency: %s", body)
	}
	// the cause stays available to the process (logs)
	if err := h.Ready(context.Background()); !errors.Is(err, cause) {
		t.Errorf("Ready: %v does not wrap the cause", err)
	}
}

// With an ops address, /metrics leaves the main (public) address.
func TestRunOpsListener(t *testing.T) {
	free := func() string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return l.Addr().String()
	}
	opts := Defaults(free())
	opts.OpsListen = free()
	opts.DrainDelay = 0
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "app") })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, opts, app, NewHealth(), NewRegistry(), slog.New(slog.DiscardHandler)) }()
	get := func(addr, path string) int {
		for i := 0; i < 50; i++ {
			resp, err := http.Get("http://" + addr + path)
			if err == nil {
				resp.Body.Close()
				return resp.StatusCode
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatalf("%s%s never answered", addr, path)
		return 0
	}
	for _, c := range []struct {
		addr, path string
		want       int
	}{
		{opts.Listen, "/metrics", 200}, // the app's own answer, not the metrics
		{opts.OpsListen, "/metrics", 200},
		{opts.Listen, "/readyz", 200},
		{opts.OpsListen, "/readyz", 200},
		{opts.OpsListen, "/anything", 404},
	} {
		if got := get(c.addr, c.path); got != c.want {
			t.Errorf("%s%s: %d, want %d", c.addr, c.path, got, c.want)
		}
	}
	resp, _ := http.Get("http://" + opts.Listen + "/metrics")
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "app" {
		t.Fatalf("the main address serves metrics: %.80s", body)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
