package models

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/nlpswarm/nlpswarm/internal/coldstart"
)

func TestColdStartEndpoint(t *testing.T) {
	s := NewServer("sentiment", TextClassification, "sha256:ab", nil, DefaultLimits(), NewMetrics(nil), slog.New(slog.DiscardHandler))
	get := func() *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		s.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/coldstart", nil))
		return w
	}
	if w := get(); w.Code != 503 {
		t.Fatalf("before the start is known: %d", w.Code)
	}
	now := time.Now()
	s.SetColdStart(coldstart.Report{Model: "sentiment", Started: now.Add(-time.Second), FetchSeconds: 0.3, Cached: true, Ready: now})
	w := get()
	var r coldstart.Report
	if w.Code != 200 || json.Unmarshal(w.Body.Bytes(), &r) != nil || !r.Cached || r.FetchSeconds != 0.3 || r.TotalSeconds() < 0.99 {
		t.Fatalf("cold start: %d %s", w.Code, w.Body)
	}
}
