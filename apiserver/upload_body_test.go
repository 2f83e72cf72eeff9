package apiserver

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nlpswarm/nlpswarm/internal/pg/pgtest"
)

// A client that sends less than its upload is the client's fault, not a
// database outage: before, the body's io.ErrUnexpectedEOF or the idle
// deadline's net.Error reached the outage classifier and the client was told
// 503 "the database is unreachable" with Retry-After.
func TestTruncatedOrStalledUploadIsNotAnOutage(t *testing.T) {
	e := &env{t: t, db: pgtest.New(t, true), dir: t.TempDir()}
	e.cfg.UploadIdle = 300 * time.Millisecond
	e.start()
	if a := e.send("POST", "/api/v1/models", "application/json", []byte(`{"name":"sentiment","task":"text-classification"}`)); a.status != 201 {
		t.Fatalf("create: %d %s", a.status, a.raw)
	}
	form, contentType := archiveForm("sentiment", []byte(strings.Repeat("x", 64<<10)))
	whole := form.Bytes()
	noClose := whole[:strings.LastIndex(string(whole), "\r\n--")] // no closing boundary

	cases := []struct {
		name         string
		declared     int    // Content-Length
		sent         []byte // what is written before the write side closes
		stall        bool   // keep the connection open, send nothing more
		status       int
		code, inText string
	}{
		{"connection closed before the declared length", len(whole), whole[:len(whole)/2], false, 400, "invalid_request", "ended early"},
		{"body ends before the closing boundary", len(noClose), noClose, false, 400, "invalid_request", "closing boundary"},
		{"body stalls past the idle time", len(whole), whole[:len(whole)/2], true, 408, "request_timeout", "stalled"},
	}
	u, _ := url.Parse(e.http.URL)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", u.Host)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			fmt.Fprintf(conn, "POST /api/v1/models/sentiment/versions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n", adminTok, contentType, c.declared)
			conn.Write(c.sent)
			if !c.stall {
				conn.(*net.TCPConn).CloseWrite()
			}
			conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			raw, _ := io.ReadAll(resp.Body)
			var eb struct {
				Error struct{ Code, Message string } `json:"error"`
			}
			json.Unmarshal(raw, &eb)
			if resp.StatusCode != c.status || eb.Error.Code != c.code || !strings.Contains(eb.Error.Message, c.inText) {
				t.Errorf("%d %s, want %d %s saying %q", resp.StatusCode, raw, c.status, c.code, c.inText)
			}
			if resp.Header.Get("Retry-After") != "" {
				t.Errorf("Retry-After %q on the client's own fault", resp.Header.Get("Retry-After"))
			}
		})
	}
	if n := e.count(`SELECT count(*) FROM model_versions`); n != 0 {
		t.Errorf("%d versions stored from broken uploads", n)
	}
}
