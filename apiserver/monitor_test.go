package apiserver

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nlpswarm/nlpswarm/internal/promcheck"
)

func TestMonitorQueries(t *testing.T) {
	exported, err := promcheck.Exported("..")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		specs []chartSpec
		want  []string // every chart ID, in order
	}{
		{"model", modelQueries("sentiment"), []string{"requests", "errors", "latency", "replicas", "queue", "gpumem"}},
		{"cluster", clusterQueries(), []string{"requests", "errors", "latency-p50", "latency-p99", "replicas", "queue", "gpumem"}},
	} {
		var ids []string
		for _, sp := range tc.specs {
			ids = append(ids, sp.ID)
			for _, l := range sp.Lines {
				if u := promcheck.Unknown(l.Query, exported); len(u) > 0 {
					t.Errorf("%s %s: %s names metrics nothing exports: %v", tc.name, sp.ID, l.Query, u)
				}
				if tc.name == "model" && !strings.Contains(l.Query, `model="sentiment"`) {
					t.Errorf("model %s: %s is not about the model", sp.ID, l.Query)
				}
				if tc.name == "cluster" && l.By != "node" {
					t.Errorf("cluster %s: not per node", sp.ID)
				}
			}
		}
		if strings.Join(ids, ",") != strings.Join(tc.want, ",") {
			t.Errorf("%s charts %v, want %v", tc.name, ids, tc.want)
		}
	}
	// a name is a PromQL string, whatever it holds
	q := modelQueries(`a"b\c`)[0].Lines[0].Query
	if !strings.Contains(q, `model="a\"b\\c"`) {
		t.Errorf("escaping: %s", q)
	}
}

func TestNiceCeilFloatAndFormat(t *testing.T) {
	for _, tc := range []struct{ in, want float64 }{
		{0, 1}, {-3, 1}, {math.NaN(), 1}, {0.003, 0.005}, {0.7, 1}, {1, 1}, {1.2, 2}, {3, 5}, {7, 10}, {42, 50}, {5e9, 5e9},
	} {
		if got := niceCeilFloat(tc.in); math.Abs(got-tc.want) > 1e-12*tc.want {
			t.Errorf("niceCeilFloat(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
	for _, tc := range []struct {
		u    chartUnit
		v    float64
		want string
	}{
		{unitSeconds, 0.0123, "12.3 ms"}, {unitSeconds, 2.5, "2.5 s"}, {unitRate, 12.345, "12.3 req/s"},
		{unitCount, 3, "3"}, {unitBytes, 2 << 30, "2.0 GiB"}, {unitRate, math.NaN(), "—"},
	} {
		if got := formatValue(tc.u, tc.v); got != tc.want {
			t.Errorf("formatValue(%q, %v) = %q, want %q", tc.u, tc.v, got, tc.want)
		}
	}
}

func TestBuildLineChart(t *testing.T) {
	end := time.Date(2026, 12, 1, 22, 0, 0, 0, time.UTC)
	start := end.Add(-monitorWindow)
	grid := func(vals ...float64) series {
		s := series{Name: "x"}
		for i, v := range vals {
			s.Times = append(s.Times, start.Add(time.Duration(i)*30*time.Minute))
			s.Values = append(s.Values, v)
		}
		return s
	}
	nan := math.NaN()
	sp := chartSpec{ID: "requests", Title: "Requests per second", Unit: unitRate}
	bottom, top := plotTop+plotH, plotTop
	for _, tc := range []struct {
		name  string
		ss    []series
		paths []string
		dots  int
		empty bool
		ytop  string
	}{
		{"a line from 0 to the top", []series{grid(0, 2.5, 5)}, []string{fmt.Sprintf("%d,%d %d,%d %d,%d", plotLeft, bottom, plotLeft+plotW/2, plotTop+plotH/2, plotLeft+plotW, top)}, 0, false, "5 req/s"},
		{"a gap breaks the line; a lone sample is a dot", []series{grid(1, nan, 1)}, nil, 2, false, "1 req/s"},
		{"no samples", []series{grid(nan, nan, nan)}, nil, 0, true, "1 req/s"},
		{"no series", nil, nil, 0, true, "1 req/s"},
	} {
		ch := buildLineChart(sp, tc.ss, end)
		if ch.Empty != tc.empty || ch.YTicks[len(ch.YTicks)-1].Label != tc.ytop {
			t.Errorf("%s: empty %v, top tick %q", tc.name, ch.Empty, ch.YTicks[len(ch.YTicks)-1].Label)
		}
		var paths []string
		dots := 0
		for _, l := range ch.Lines {
			paths = append(paths, l.Paths...)
			dots += len(l.Dots)
		}
		if strings.Join(paths, "|") != strings.Join(tc.paths, "|") || dots != tc.dots {
			t.Errorf("%s: paths %q dots %d, want %q and %d", tc.name, paths, dots, tc.paths, tc.dots)
		}
	}
	// x ticks every 15 minutes, labelled in UTC; too many series are cut and said so
	many := make([]series, monitorMaxSeries+3)
	for i := range many {
		many[i] = grid(1)
	}
	ch := buildLineChart(sp, many, end)
	if len(ch.XTicks) != 5 || ch.XTicks[0].Label != "21:00" || ch.XTicks[4].X != plotLeft+plotW || len(ch.Lines) != monitorMaxSeries || ch.Cut != 3 {
		t.Errorf("x ticks %+v, %d lines, cut %d", ch.XTicks, len(ch.Lines), ch.Cut)
	}
}

// fakePrometheus answers query_range with one series per query (two
// nodes for per-node queries) and alerts with one firing alert for
// sentiment and one for another model; it records the queries.
func fakePrometheus(t *testing.T) (*httptest.Server, func() []string) {
	var mu sync.Mutex
	var queries []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/api/v1/query_range":
			q := r.FormValue("query")
			mu.Lock()
			queries = append(queries, q)
			mu.Unlock()
			end := float64(time.Now().Truncate(monitorStep).Unix()) // the page's grid
			vals := fmt.Sprintf(`[[%f,"1"],[%f,"1"],[%f,"3"],[%f,"2"]]`, end-1200, end-60, end-30, end)
			res := fmt.Sprintf(`{"metric":{},"values":%s}`, vals)
			if strings.Contains(q, "by (node") {
				res = fmt.Sprintf(`{"metric":{"node":"ml-1"},"values":%s},{"metric":{"node":"ml-2"},"values":%s}`, vals, vals)
			}
			fmt.Fprintf(w, `{"status":"success","data":{"resultType":"matrix","result":[%s]}}`, res)
		case "/api/v1/alerts":
			fmt.Fprint(w, `{"status":"success","data":{"alerts":[
				{"labels":{"alertname":"NlpswarmModelP99High","model":"sentiment","severity":"warning"},"annotations":{"summary":"p99 of sentiment above 1 s"},"state":"firing","activeAt":"2026-12-01T21:00:00Z","value":"1.5"},
				{"labels":{"alertname":"NlpswarmReplicaDown","model":"other","severity":"critical"},"annotations":{"summary":"other has no replica"},"state":"pending","activeAt":"2026-12-01T21:10:00Z","value":"0"}]}}`)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv, func() []string { mu.Lock(); defer mu.Unlock(); return append([]string(nil), queries...) }
}

func TestMonitorPagesAgainstFakePrometheus(t *testing.T) {
	e := newEnv(t)
	prom, queries := fakePrometheus(t)
	e.cfg.PrometheusURL = prom.URL
	e.start()
	e.seedSentimentV1()
	w, _ := e.login()
	r := w.get("/ui/models/sentiment/monitor")
	if r.status != 200 {
		t.Fatalf("model page: %d\n%s", r.status, r.body)
	}
	for _, want := range []string{`id="chart-requests"`, `id="chart-latency"`, `id="chart-gpumem"`, "<polyline", "<circle", "p99: 2", "NlpswarmModelP99High", "p99 of sentiment above 1 s", `data-refresh="30"`} {
		if !strings.Contains(r.body, want) {
			t.Errorf("model page lacks %q", want)
		}
	}
	if strings.Contains(r.body, "NlpswarmReplicaDown") || strings.Contains(r.body, "prometheus-problem") {
		t.Error("model page shows another model's alert, or a problem")
	}
	if got := len(queries()); got != 8 {
		t.Errorf("%d queries for the model page, want 8 (one per line)", got)
	}
	r = w.get("/ui/cluster")
	for _, want := range []string{"ml-1", "ml-2", "NlpswarmReplicaDown", "NlpswarmModelP99High", `id="chart-latency-p99"`} {
		if !strings.Contains(r.body, want) {
			t.Errorf("cluster page lacks %q", want)
		}
	}
	if r := w.get("/ui/models/nosuch/monitor"); r.status != 404 {
		t.Errorf("unknown model: %d, want 404", r.status)
	}
}

func TestMonitorPageWithoutPrometheus(t *testing.T) {
	e := newEnv(t)
	prom, _ := fakePrometheus(t)
	e.cfg.PrometheusURL = prom.URL
	prom.Close() // gone: refused connections
	e.start()
	e.seedSentimentV1()
	w, _ := e.login()
	for _, page := range []string{"/ui/models/sentiment/monitor", "/ui/cluster"} {
		r := w.get(page)
		if r.status != 200 || !strings.Contains(r.body, "Prometheus is unreachable") || !strings.Contains(r.body, "no data") {
			t.Errorf("%s without Prometheus: %d, want the page saying so\n%s", page, r.status, r.body)
		}
	}
	e.cfg.PrometheusURL = ""
	e.start()
	w, _ = e.login()
	if r := w.get("/ui/cluster"); r.status != 200 || !strings.Contains(r.body, "Prometheus is not configured") {
		t.Errorf("no Prometheus configured: %d", r.status)
	}
}

// TestMonitorQueriesOnRealPrometheus runs every query of the pages on the
// Prometheus at NLPSWARM_TEST_PROMETHEUS_URL (skipped without one): the
// real parser accepts each, and the alerts endpoint answers.
func TestMonitorQueriesOnRealPrometheus(t *testing.T) {
	addr := os.Getenv("NLPSWARM_TEST_PROMETHEUS_URL")
	if addr == "" {
		t.Skip("NLPSWARM_TEST_PROMETHEUS_URL not set")
	}
	s := &Server{cfg: Config{PrometheusURL: addr}, log: slog.New(slog.DiscardHandler)}
	for _, specs := range [][]chartSpec{modelQueries("sentiment"), clusterQueries()} {
		if d := s.fetchMonitor(context.Background(), specs, time.Now(), nil); d.Problem != "" {
			t.Errorf("%s: %s", specs[0].Lines[0].Query, d.Problem)
		}
		for _, sp := range specs {
			for _, l := range sp.Lines {
				resp, err := http.Get(addr + "/api/v1/query?query=" + url.QueryEscape(l.Query))
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					t.Errorf("%s %s: %d %s", sp.ID, l.Query, resp.StatusCode, b)
				}
			}
		}
	}
}
