//go:build !agentonly

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/nlpswarm/nlpswarm/internal/config"
)

// forward is the stack's loopback door to the backoffice and Prometheus
// (issue 17 finding 3). Swarm's host-mode ports bind every interface of the
// node and cannot be limited to one address, so the stack publishes
// neither: make up runs this forwarder as a plain container on the
// attachable nlpswarm-admin overlay, published on 127.0.0.1 (or
// BACKOFFICE_ADDR) only, passing each connection byte for byte to the
// service (TLS, if the operator puts it in front, passes through).
type forwardConfig struct {
	Routes      string        `description:"comma-separated listen=target pairs, e.g. :8081=apiserver:8081,:9090=prometheus:9090"`
	DialTimeout time.Duration `description:"how long to wait for a target to accept"`
	MaxConns    int           `description:"connections open at once per route; more wait in the kernel's backlog"`
	LogLevel    string        `description:"log level: debug, info, warn, error"`
}

type route struct{ listen, target string }

func init() {
	register(command{Name: "forward", Summary: "pass TCP connections from local addresses to services (the backoffice's loopback door)", Role: true, Run: runForward})
}

// parseRoutes reads "listen=target,..." (both host:port).
func parseRoutes(s string) ([]route, error) {
	var out []route
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		l, t, ok := strings.Cut(p, "=")
		if !ok {
			return nil, fmt.Errorf("route %q: want listen=target", p)
		}
		for _, a := range []string{l, t} {
			if _, port, err := net.SplitHostPort(a); err != nil || port == "" {
				return nil, fmt.Errorf("route %q: %q is not host:port", p, a)
			}
		}
		out = append(out, route{listen: l, target: t})
	}
	if len(out) == 0 {
		return nil, errors.New("no route (--routes=:8081=apiserver:8081)")
	}
	return out, nil
}

func runForward(ctx context.Context, args []string) error {
	cfg := &forwardConfig{DialTimeout: 5 * time.Second, MaxConns: 256, LogLevel: "info"}
	if err := loadConfig("forward", cfg, args); err != nil {
		return err
	}
	routes, err := parseRoutes(cfg.Routes)
	if err != nil {
		return &config.Error{Msg: err.Error()}
	}
	log, err := newLogger("forward", cfg.LogLevel)
	if err != nil {
		return err
	}
	return forwardAll(ctx, routes, cfg.DialTimeout, cfg.MaxConns, log)
}

// forwardAll listens on every route, then serves them until ctx ends.
func forwardAll(ctx context.Context, routes []route, dialTimeout time.Duration, maxConns int, log *slog.Logger) error {
	var lns []net.Listener
	for _, r := range routes {
		ln, err := net.Listen("tcp", r.listen)
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return fmt.Errorf("listen on %s: %w", r.listen, err)
		}
		lns = append(lns, ln)
		log.Info("forwarding", "listen", ln.Addr().String(), "target", r.target)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, len(lns))
	for i, ln := range lns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errc <- serveRoute(ctx, ln, routes[i].target, dialTimeout, maxConns, log)
			cancel()
		}()
	}
	<-ctx.Done()
	for _, ln := range lns {
		ln.Close()
	}
	wg.Wait()
	close(errc)
	var errs []error
	for err := range errc {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func serveRoute(ctx context.Context, ln net.Listener, target string, dialTimeout time.Duration, maxConns int, log *slog.Logger) error {
	slots := make(chan struct{}, maxConns)
	var conns sync.WaitGroup
	defer conns.Wait()
	for {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("accept on %s: %w", ln.Addr(), err)
		}
		conns.Add(1)
		go func() {
			defer func() { <-slots; conns.Done() }()
			pipe(ctx, c, target, dialTimeout, log)
		}()
	}
}

// pipe passes c to a new connection to target (resolved anew each time: a
// dnsrr service name picks one of its tasks) until either side closes or
// ctx ends.
func pipe(ctx context.Context, c net.Conn, target string, dialTimeout time.Duration, log *slog.Logger) {
	defer c.Close()
	d := net.Dialer{Timeout: dialTimeout}
	up, err := d.DialContext(ctx, "tcp", target)
	if err != nil {
		log.Warn("target unreachable", "target", target, "err", err)
		return
	}
	defer up.Close()
	stop := context.AfterFunc(ctx, func() { c.Close(); up.Close() })
	defer stop()
	done := make(chan struct{}, 2)
	half := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
		done <- struct{}{}
	}
	go half(up, c)
	go half(c, up)
	<-done
	<-done
}
