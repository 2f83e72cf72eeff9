package gateway

import (
	"context"
	"net"
	"net/http"

	"github.com/lesismal/nbio/logging"
	"github.com/lesismal/nbio/nbhttp"

	"github.com/nlpswarm/nlpswarm/internal/httpserver"
)

// nbioEngine serves the gateway with nbio's HTTP/1.1 server (an epoll event
// loop that parses requests and hands each to a pooled goroutine), the
// second event-driven library BenchmarkPinned measures beside fasthttp
// (issue 22). A benchmark-only prototype, not a front end of the product:
// it keeps none of the front ends' guarantees (body deadline, header cap,
// client-gone cancellation, the smuggling tests).
func nbioEngine(_ httpserver.Options, h http.Handler) httpserver.Engine {
	return &nbioServer{h: h, stop: make(chan struct{})}
}

type nbioServer struct {
	h    http.Handler
	e    *nbhttp.Engine
	stop chan struct{}
}

func (s *nbioServer) Serve(ln net.Listener) error {
	logging.SetLevel(logging.LevelNone)
	s.e = nbhttp.NewEngine(nbhttp.Config{
		Network:           "tcp",
		Addrs:             []string{ln.Addr().String()},
		Listen:            func(string, string) (net.Listener, error) { return ln, nil },
		Handler:           s.h,
		NPoller:           1,
		SupportServerOnly: true,
	})
	if err := s.e.Start(); err != nil {
		return err
	}
	<-s.stop
	return nil
}

func (s *nbioServer) Shutdown(ctx context.Context) error {
	defer close(s.stop)
	return s.e.Shutdown(ctx)
}
