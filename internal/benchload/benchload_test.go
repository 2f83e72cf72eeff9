package benchload

import (
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

func TestRun(t *testing.T) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) > 50 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok"))
	}))
	defer srv.Close()
	req := func(c, i int) *http.Request { r, _ := http.NewRequest(http.MethodGet, srv.URL, nil); return r }
	lat, err := Run(srv.Client(), 3, time.Millisecond, 5*time.Second, req)
	if err == nil || len(lat) != 50 {
		t.Fatalf("%d latencies, error %v; want 50 and the 503", len(lat), err)
	}
	if q := Quantile(lat, 0.5); q <= 0 || q > Quantile(lat, 0.99) {
		t.Fatalf("quantiles %v %v", q, Quantile(lat, 0.99))
	}
	if Quantile(nil, 0.5) != 0 || Quantile([]time.Duration{3, 1, 2}, 0) != 1 || Quantile([]time.Duration{3, 1, 2}, 1) != 3 {
		t.Fatal("quantile of small inputs")
	}
}
