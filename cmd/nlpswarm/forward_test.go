//go:build !agentonly

package main

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"
)

func TestParseRoutes(t *testing.T) {
	r, err := parseRoutes(":8081=apiserver:8081, 127.0.0.1:9090=prometheus:9090")
	if err != nil || len(r) != 2 || r[0] != (route{":8081", "apiserver:8081"}) || r[1] != (route{"127.0.0.1:9090", "prometheus:9090"}) {
		t.Fatalf("%+v %v", r, err)
	}
	for _, bad := range []string{"", ",", ":8081", ":8081=apiserver", "8081=apiserver:8081", ":8081=:"} {
		if _, err := parseRoutes(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// The forwarder passes bytes both ways, lets the client half-close, and
// stops with its context.
func TestForwardPassesConnections(t *testing.T) {
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- forwardAll(ctx, []route{{addr, echo.Addr().String()}}, time.Second, 4, slog.New(slog.DiscardHandler))
	}()
	var c net.Conn
	for i := 0; i < 100; i++ {
		if c, err = net.Dial("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, "hello\n")
	c.(*net.TCPConn).CloseWrite()
	got, _ := io.ReadAll(bufio.NewReader(c))
	c.Close()
	if strings.TrimSpace(string(got)) != "hello" {
		t.Fatalf("echo through the forwarder: %q", got)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("forwarder did not stop")
	}
}
