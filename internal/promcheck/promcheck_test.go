package promcheck

import (
	"slices"
	"testing"
)

func TestExportedAndUnknown(t *testing.T) {
	got, err := Exported("../..")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"nlpswarm_gateway_requests_total", "nlpswarm_gateway_request_duration_seconds_bucket", "nlpswarm_agent_gpu_memory_free_bytes", "nlpswarm_apikey_quota_used_ratio"} {
		if !got[want] {
			t.Errorf("%s not found among the exported metrics", want)
		}
	}
	if got["nlpswarm_gateway_requests_total_bucket"] {
		t.Error("a counter got histogram suffixes")
	}
	for _, tc := range []struct {
		expr string
		want []string
	}{
		{`sum(rate(nlpswarm_gateway_requests_total{status=~"5.."}[5m]))`, nil},
		{`nlpswarm_gateway_request_total > 1 and nlpswarm_nothing`, []string{"nlpswarm_gateway_request_total", "nlpswarm_nothing"}},
	} {
		if u := Unknown(tc.expr, got); !slices.Equal(u, tc.want) {
			t.Errorf("Unknown(%q) = %v, want %v", tc.expr, u, tc.want)
		}
	}
}
