package models

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
)

// The OIP model metadata names the engine the runtime loaded.
func TestMetadataNamesBackend(t *testing.T) {
	m := sentiment(t)
	s := NewServer("sentiment", TextClassification, "sha256:test", NewBatcher(m, DefaultBatchConfig(), NewMetrics(nil)), DefaultLimits(), NewMetrics(nil), slog.New(slog.DiscardHandler))
	s.SetBackend(m.Backend)
	hs := httptest.NewServer(s)
	defer hs.Close()
	resp, err := http.Get(hs.URL + "/v2/models/sentiment")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var meta struct {
		Parameters map[string]string `json:"parameters"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&meta); err != nil {
		t.Fatal(err)
	}
	if meta.Parameters["backend"] != m.Backend || m.Backend == "" {
		t.Errorf("metadata parameters %v, model on %q", meta.Parameters, m.Backend)
	}
}
