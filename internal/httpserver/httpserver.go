package httpserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Options are a server's timeouts and drain behaviour. Zero values take the
// defaults of Defaults.
type Options struct {
	Listen            string        `description:"address to listen on (host:port)"`
	OpsListen         string        `description:"address for /metrics when it must not be served on the main address (a public port); empty: the main address"`
	ReadTimeout       time.Duration `description:"max time to read a whole request, body included"`
	ReadHeaderTimeout time.Duration `description:"max time to read request headers"`
	WriteTimeout      time.Duration `description:"max time to write a response"`
	IdleTimeout       time.Duration `description:"keep-alive idle timeout"`
	DrainDelay        time.Duration `description:"after SIGTERM: time with readiness off before the listener closes"`
	ShutdownTimeout   time.Duration `description:"after the drain delay: max time for in-flight requests to finish"`
}

// Defaults returns options with the given listen address and sane timeouts.
func Defaults(listen string) Options {
	return Options{
		Listen:            listen,
		ReadTimeout:       60 * time.Second,
		ReadHeaderTimeout: 10 * time.Second,
		WriteTimeout:      120 * time.Second,
		IdleTimeout:       120 * time.Second,
		DrainDelay:        2 * time.Second,
		ShutdownTimeout:   30 * time.Second,
	}
}

// Check is a readiness dependency: nil means reachable.
type Check struct {
	Name string
	Fn   func(ctx context.Context) error
	// Degrades marks a dependency the process serves on without (some of
	// its requests fail cleanly meanwhile): its failure turns /readyz's body
	// to "degraded" but keeps the 200, so that a healthcheck on /readyz does
	// not have Swarm kill the process for an outage a restart cannot cure
	// (issue 18: Postgres down for minutes).
	Degrades bool
}

// Health answers /healthz and /readyz. Readiness is false while draining or
// while any check fails.
type Health struct {
	checks   []Check
	draining atomic.Bool
	notReady atomic.Pointer[string]
}

// NewHealth returns a Health with the given readiness checks.
func NewHealth(checks ...Check) *Health { return &Health{checks: checks} }

// SetDraining turns readiness off for good (SIGTERM).
func (h *Health) SetDraining() { h.draining.Store(true) }

// SetNotReady marks the process not ready with a reason ("" clears it), for
// roles that are not ready until something loads (a model).
func (h *Health) SetNotReady(reason string) {
	if reason == "" {
		h.notReady.Store(nil)
		return
	}
	h.notReady.Store(&reason)
}

// Ready reports nil when the process should receive traffic.
func (h *Health) Ready(ctx context.Context) error {
	_, err := h.readiness(ctx)
	return err
}

// readiness is Ready with the degraded checks listed.
func (h *Health) readiness(ctx context.Context) ([]*CheckError, error) {
	if h.draining.Load() {
		return nil, errors.New("draining")
	}
	if r := h.notReady.Load(); r != nil {
		return nil, errors.New(*r)
	}
	return h.check(ctx)
}

// check runs the checks: the first failure of a hard one is the error; the
// failures of those that only degrade are listed.
func (h *Health) check(ctx context.Context) (degraded []*CheckError, err error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	for _, c := range h.checks {
		if err := c.Fn(ctx); err != nil {
			ce := &CheckError{Name: c.Name, Err: err}
			if !c.Degrades {
				return degraded, ce
			}
			degraded = append(degraded, ce)
		}
	}
	return degraded, nil
}

// CheckError is a failed readiness check. Its text names the dependency
// and the cause; /readyz shows only the name (Public).
type CheckError struct {
	Name string
	Err  error
}

func (e *CheckError) Error() string { return e.Name + ": " + e.Err.Error() }
func (e *CheckError) Unwrap() error { return e.Err }

// Public is what /readyz may show anyone who reaches the port: the
// dependency's name, never its error, which can carry addresses, user
// names and driver messages.
func (e *CheckError) Public() string { return e.Name + " unreachable" }

func (h *Health) serveHealthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(`{"status":"alive"}` + "\n"))
}

func (h *Health) serveReadyz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	degraded, err := h.readiness(r.Context())
	if err != nil {
		reason := err.Error()
		var ce *CheckError
		if errors.As(err, &ce) {
			// the cause goes to the log only: /readyz is served on public ports
			slog.Default().Warn("not ready", "check", ce.Name, "err", ce.Err)
			reason = ce.Public()
		}
		w.WriteHeader(http.StatusServiceUnavailable)
		_ = json.NewEncoder(w).Encode(map[string]string{"status": "not ready", "reason": reason})
		return
	}
	if len(degraded) > 0 {
		reasons := make([]string, len(degraded))
		for i, ce := range degraded {
			slog.Default().Warn("degraded", "check", ce.Name, "err", ce.Err)
			reasons[i] = ce.Public()
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"status": "degraded", "degraded": reasons})
		return
	}
	_, _ = w.Write([]byte(`{"status":"ready"}` + "\n"))
}

// NewRegistry returns a metrics registry with the Go and process collectors.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Handler wraps app with the operational endpoints /healthz, /readyz and
// /metrics (none when reg is nil).
//
// Requests for other paths go straight to app, not through a ServeMux
// match: on the gateway that is every customer request.
func Handler(app http.Handler, h *Health, reg *prometheus.Registry) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", h.serveHealthz)
	mux.HandleFunc("GET /readyz", h.serveReadyz)
	if reg != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	}
	if app == nil {
		return mux
	}
	mux.Handle("/", app)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch p := r.URL.Path; {
		case p == "/healthz" || p == "/readyz" || (p == "/metrics" && reg != nil):
			mux.ServeHTTP(w, r)
		default:
			app.ServeHTTP(w, r)
		}
	})
}

// Engine is the HTTP/1.1 server behind a Server: net/http's by default,
// or another one (the gateway's fast front end) given to ListenEngine.
type Engine interface {
	Serve(ln net.Listener) error
	Shutdown(ctx context.Context) error
}

// EngineFunc makes a Server's engine from its (defaulted) options and handler.
type EngineFunc func(opts Options, handler http.Handler) Engine

// Server is one HTTP server with its listener.
type Server struct {
	opts   Options
	srv    Engine
	ln     net.Listener
	health *Health
	log    *slog.Logger
}

// Listen binds the address now, so that callers (and tests with ":0") learn
// the real address before serving.
func Listen(opts Options, handler http.Handler, health *Health, log *slog.Logger) (*Server, error) {
	return ListenEngine(opts, nil, handler, health, log)
}

// ListenEngine is Listen with another engine than net/http's (nil: net/http's).
func ListenEngine(opts Options, engine EngineFunc, handler http.Handler, health *Health, log *slog.Logger) (*Server, error) {
	d := Defaults(opts.Listen)
	if opts.ReadTimeout == 0 {
		opts.ReadTimeout = d.ReadTimeout
	}
	if opts.ReadHeaderTimeout == 0 {
		opts.ReadHeaderTimeout = d.ReadHeaderTimeout
	}
	if opts.WriteTimeout == 0 {
		opts.WriteTimeout = d.WriteTimeout
	}
	if opts.IdleTimeout == 0 {
		opts.IdleTimeout = d.IdleTimeout
	}
	if opts.ShutdownTimeout == 0 {
		opts.ShutdownTimeout = d.ShutdownTimeout
	}
	ln, err := net.Listen("tcp", opts.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", opts.Listen, err)
	}
	if engine != nil {
		return &Server{opts: opts, srv: engine(opts, handler), ln: ln, health: health, log: log}, nil
	}
	srv := &http.Server{
		Handler:           handler,
		ReadTimeout:       opts.ReadTimeout,
		ReadHeaderTimeout: opts.ReadHeaderTimeout,
		WriteTimeout:      opts.WriteTimeout,
		IdleTimeout:       opts.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	return &Server{opts: opts, srv: srv, ln: ln, health: health, log: log}, nil
}

// Addr is the bound address.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Serve serves until ctx ends (SIGTERM), then drains: readiness off, wait
// DrainDelay so load balancers notice, stop accepting, let in-flight requests
// finish within ShutdownTimeout.
func (s *Server) Serve(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.ln) }()
	s.log.Info("listening", "addr", s.Addr())
	select {
	case err := <-errc:
		return fmt.Errorf("serve %s: %w", s.Addr(), err)
	case <-ctx.Done():
	}
	if s.health != nil {
		s.health.SetDraining()
	}
	s.log.Info("draining", "delay", s.opts.DrainDelay.String())
	if s.opts.DrainDelay > 0 {
		time.Sleep(s.opts.DrainDelay)
	}
	sctx, cancel := context.WithTimeout(context.Background(), s.opts.ShutdownTimeout)
	defer cancel()
	if err := s.srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	s.log.Info("stopped")
	return nil
}

// Run serves app with the operational endpoints until ctx ends, then drains.
// With opts.OpsListen set, /metrics (with /healthz and /readyz) is served on
// that address instead of the main one: a public port then shows customers
// no metrics (model names, traffic), while Prometheus scrapes the other.
func Run(ctx context.Context, opts Options, app http.Handler, health *Health, reg *prometheus.Registry, log *slog.Logger) error {
	return RunWithOps(ctx, opts, app, nil, health, reg, log)
}

// RunWithOps is Run with opsApp served on the ops address besides /metrics,
// /healthz and /readyz: endpoints for the overlay only (the apiserver's
// artifact downloads), which the published address must not answer. opsApp
// needs opts.OpsListen.
func RunWithOps(ctx context.Context, opts Options, app, opsApp http.Handler, health *Health, reg *prometheus.Registry, log *slog.Logger) error {
	return RunEngine(ctx, opts, nil, app, opsApp, health, reg, log)
}

// RunEngine is RunWithOps with engine serving the main address (nil:
// net/http's server); the ops address is always net/http's.
func RunEngine(ctx context.Context, opts Options, engine EngineFunc, app, opsApp http.Handler, health *Health, reg *prometheus.Registry, log *slog.Logger) error {
	if opsApp != nil && opts.OpsListen == "" {
		return errors.New("internal endpoints need an ops address (--opslisten), apart from the published one")
	}
	if opts.OpsListen == "" {
		srv, err := ListenEngine(opts, engine, Handler(app, health, reg), health, log)
		if err != nil {
			return err
		}
		return srv.Serve(ctx)
	}
	main, err := ListenEngine(opts, engine, Handler(app, health, nil), health, log)
	if err != nil {
		return err
	}
	opsOpts := opts
	opsOpts.Listen = opts.OpsListen
	ops, err := Listen(opsOpts, Handler(opsApp, health, reg), health, log)
	if err != nil {
		main.ln.Close()
		return fmt.Errorf("ops listener: %w", err)
	}
	// both drain together; the first failure stops the other
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 2)
	for _, s := range []*Server{main, ops} {
		go func() {
			err := s.Serve(ctx)
			cancel()
			errc <- err
		}()
	}
	return errors.Join(<-errc, <-errc)
}
