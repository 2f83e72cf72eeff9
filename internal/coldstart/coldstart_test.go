package coldstart

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestLogRoundTripAndMetrics(t *testing.T) {
	start := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	r := Report{Model: "sentiment", Digest: "sha256:ab", Started: start, FetchSeconds: 0.2, ArtifactBytes: 384000,
		LoadSeconds: 0.15, WarmupSeconds: 0.05, Ready: start.Add(450 * time.Millisecond)}
	var buf bytes.Buffer
	buf.WriteString(`{"msg":"listening"}` + "\n" + "not json\n")
	Log(slog.New(slog.NewJSONHandler(&buf, nil)), r)
	buf.WriteString(`{"msg":"cold start","coldstart":{"model":"other"}}` + "\n")
	got, ok := FindInLog(&buf)
	if !ok || got.Model != "sentiment" || got.ArtifactBytes != 384000 || !got.Ready.Equal(r.Ready) || got.TotalSeconds() != 0.45 {
		t.Fatalf("FindInLog: %+v %v", got, ok)
	}
	if _, ok := FindInLog(strings.NewReader(`{"msg":"model ready"}`)); ok {
		t.Fatal("found a report in a log without one")
	}

	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	m.Observe(r)
	r.Cached, r.ArtifactBytes = true, 0
	m.Observe(r)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]float64{}
	for _, mf := range mfs {
		for _, mt := range mf.GetMetric() {
			switch {
			case mt.GetHistogram() != nil:
				seen[mf.GetName()+"/"+mt.GetLabel()[0].GetValue()] = float64(mt.GetHistogram().GetSampleCount())
			case mt.GetCounter() != nil:
				seen[mf.GetName()] = mt.GetCounter().GetValue()
			}
		}
	}
	for k, want := range map[string]float64{
		"nlpswarm_runtime_coldstart_phase_seconds/fetch": 2, "nlpswarm_runtime_coldstart_phase_seconds/load": 2,
		"nlpswarm_runtime_coldstart_phase_seconds/warmup": 2, "nlpswarm_runtime_coldstart_phase_seconds/total": 2,
		"nlpswarm_runtime_artifact_downloaded_bytes_total": 384000, "nlpswarm_runtime_artifact_cache_hits_total": 1,
	} {
		if seen[k] != want {
			t.Errorf("%s = %v, want %v", k, seen[k], want)
		}
	}
}
