package apiserver

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	promapi "github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
)

// The monitoring pages: a model's and the cluster's last hour, drawn from
// Prometheus's HTTP query API (query_range, alerts) as inline SVG line
// charts. Building the queries (monitorQueries) and laying out a chart
// (buildLineChart) are pure functions; fetchMonitor is the thin effect.

const (
	monitorWindow = time.Hour
	monitorStep   = 30 * time.Second
	// what one page may take from Prometheus: it is outside the backoffice
	monitorTimeout    = 5 * time.Second
	promMaxBody       = 4 << 20
	monitorMaxSeries  = 8 // lines per chart; more (a big cluster) are cut, and the chart says so
	monitorRateWindow = "1m"
)

// chartUnit says how a chart's values read.
type chartUnit string

const (
	unitRate    chartUnit = "req/s"
	unitSeconds chartUnit = "s"
	unitCount   chartUnit = ""
	unitBytes   chartUnit = "bytes"
)

// chartSpec is one chart: its queries, each a line (or, with by, a line per
// value of that label).
type chartSpec struct {
	ID, Title string
	Unit      chartUnit
	Lines     []lineQuery
}

type lineQuery struct {
	Name  string // the legend, or its prefix with By
	By    string // label whose values name the lines ("": one line)
	Query string
}

// promString quotes s as a PromQL string literal (Go's escapes, which
// PromQL reads the same way).
func promString(s string) string { return strconv.Quote(s) }

// modelQueries are the charts of one model, from the gateways' and the
// model's replicas' metrics (the stack's Prometheus labels every replica's
// series with model and node).
func modelQueries(modelName string) []chartSpec {
	m := "model=" + promString(modelName)
	quantile := func(q string) string {
		return fmt.Sprintf(`histogram_quantile(%s, sum by (le) (rate(nlpswarm_gateway_request_duration_seconds_bucket{%s}[%s])))`, q, m, monitorRateWindow)
	}
	return []chartSpec{
		{ID: "requests", Title: "Requests per second", Unit: unitRate, Lines: []lineQuery{
			{Name: "requests", Query: fmt.Sprintf(`sum(rate(nlpswarm_gateway_requests_total{%s}[%s]))`, m, monitorRateWindow)}}},
		{ID: "errors", Title: "Errors per second (5xx answers, failed upstream attempts)", Unit: unitRate, Lines: []lineQuery{
			{Name: "5xx", Query: fmt.Sprintf(`sum(rate(nlpswarm_gateway_requests_total{%s,status=~"5.."}[%s]))`, m, monitorRateWindow)},
			{Name: "upstream", Query: fmt.Sprintf(`sum(rate(nlpswarm_gateway_upstream_errors_total{%s}[%s]))`, m, monitorRateWindow)}}},
		{ID: "latency", Title: "Latency at the gateway", Unit: unitSeconds, Lines: []lineQuery{
			{Name: "p50", Query: quantile("0.5")}, {Name: "p99", Query: quantile("0.99")}}},
		{ID: "replicas", Title: "Replicas the gateways route to", Unit: unitCount, Lines: []lineQuery{
			{Name: "replicas", Query: fmt.Sprintf(`max(nlpswarm_gateway_replicas{%s})`, m)}}},
		{ID: "queue", Title: "Queue depth (requests waiting for the batcher)", Unit: unitCount, Lines: []lineQuery{
			{Name: "queued", Query: fmt.Sprintf(`sum(nlpswarm_runtime_queue_depth{%s})`, m)}}},
		{ID: "gpumem", Title: "GPU memory in use on the nodes running it", Unit: unitBytes, Lines: []lineQuery{
			{By: "node", Query: fmt.Sprintf(`sum by (node) (nlpswarm_agent_gpu_memory_total_bytes - nlpswarm_agent_gpu_memory_free_bytes) and on (node) group by (node) (nlpswarm_runtime_queue_depth{%s})`, m)}}},
	}
}

// clusterQueries are the same charts per node, from the replicas' own
// metrics (a gateway serves every node, so its figures are not per node).
func clusterQueries() []chartSpec {
	quantile := func(q string) string {
		return fmt.Sprintf(`histogram_quantile(%s, sum by (node, le) (rate(nlpswarm_runtime_request_duration_seconds_bucket[%s])))`, q, monitorRateWindow)
	}
	return []chartSpec{
		{ID: "requests", Title: "Requests per second", Unit: unitRate, Lines: []lineQuery{
			{By: "node", Query: fmt.Sprintf(`sum by (node) (rate(nlpswarm_runtime_requests_total[%s]))`, monitorRateWindow)}}},
		{ID: "errors", Title: "Errors per second (5xx answers)", Unit: unitRate, Lines: []lineQuery{
			{By: "node", Query: fmt.Sprintf(`sum by (node) (rate(nlpswarm_runtime_requests_total{status=~"5.."}[%s]))`, monitorRateWindow)}}},
		{ID: "latency-p50", Title: "Latency in the replicas, p50", Unit: unitSeconds, Lines: []lineQuery{{By: "node", Query: quantile("0.5")}}},
		{ID: "latency-p99", Title: "Latency in the replicas, p99", Unit: unitSeconds, Lines: []lineQuery{{By: "node", Query: quantile("0.99")}}},
		{ID: "replicas", Title: "Model replicas", Unit: unitCount, Lines: []lineQuery{
			{By: "node", Query: `count by (node) (nlpswarm_runtime_model_info)`}}},
		{ID: "queue", Title: "Queue depth", Unit: unitCount, Lines: []lineQuery{
			{By: "node", Query: `sum by (node) (nlpswarm_runtime_queue_depth)`}}},
		{ID: "gpumem", Title: "GPU memory in use", Unit: unitBytes, Lines: []lineQuery{
			{By: "node", Query: `sum by (node) (nlpswarm_agent_gpu_memory_total_bytes - nlpswarm_agent_gpu_memory_free_bytes)`}}},
	}
}

// series is one line's samples (NaN: no sample, a gap).
type series struct {
	Name   string
	Times  []time.Time
	Values []float64
}

// monitorAlert is an alert as the pages list it.
type monitorAlert struct {
	Name, State, Severity, Summary string
	Since                          time.Time
}

// monitorData is what fetchMonitor brings back: series per chart, alerts,
// and why some are missing.
type monitorData struct {
	Series  map[string][]series // by chart ID
	Alerts  []monitorAlert
	Problem string // "" when Prometheus answered everything
}

// limitBody caps what Prometheus may send back.
type limitBody struct{ rt http.RoundTripper }

func (l limitBody) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := l.rt.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	resp.Body = struct {
		io.Reader
		io.Closer
	}{io.LimitReader(resp.Body, promMaxBody), resp.Body}
	return resp, nil
}

// fetchMonitor runs specs' queries over the last hour before end and reads
// the alerts (keep filters them); every query runs at once, all within
// monitorTimeout. What fails is named in Problem, never a failed page.
func (s *Server) fetchMonitor(ctx context.Context, specs []chartSpec, end time.Time, keep func(model.LabelSet) bool) monitorData {
	out := monitorData{Series: map[string][]series{}}
	if s.cfg.PrometheusURL == "" {
		out.Problem = "Prometheus is not configured (--prometheus.url): no charts."
		return out
	}
	client, err := promapi.NewClient(promapi.Config{Address: s.cfg.PrometheusURL,
		Client: &http.Client{Transport: limitBody{http.DefaultTransport}, Timeout: monitorTimeout}})
	if err != nil {
		out.Problem = "Prometheus's address is not a URL: no charts."
		return out
	}
	api := promv1.NewAPI(client)
	ctx, cancel := context.WithTimeout(ctx, monitorTimeout)
	defer cancel()
	r := promv1.Range{Start: end.Add(-monitorWindow), End: end, Step: monitorStep}
	var mu sync.Mutex
	var wg sync.WaitGroup
	var failed []error
	for _, sp := range specs {
		for i, lq := range sp.Lines {
			wg.Go(func() {
				v, _, _, err := api.QueryRange(ctx, lq.Query, r)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					failed = append(failed, err)
					return
				}
				mat, _ := v.(model.Matrix)
				for _, ss := range matrixSeries(mat, lq, r) {
					ss.Name = fmt.Sprintf("%02d\x00%s", i, ss.Name) // keep the spec's line order
					out.Series[sp.ID] = append(out.Series[sp.ID], ss)
				}
			})
		}
	}
	var alerts promv1.AlertsResult
	var alertErr error
	wg.Go(func() { alerts, alertErr = api.Alerts(ctx) })
	wg.Wait()
	for id, ss := range out.Series {
		sort.Slice(ss, func(i, j int) bool { return ss[i].Name < ss[j].Name })
		for k := range ss {
			ss[k].Name = ss[k].Name[strings.IndexByte(ss[k].Name, 0)+1:]
		}
		out.Series[id] = ss
	}
	if alertErr != nil {
		failed = append(failed, alertErr)
	}
	for _, a := range alerts.Alerts {
		if keep != nil && !keep(a.Labels) {
			continue
		}
		out.Alerts = append(out.Alerts, monitorAlert{Name: string(a.Labels["alertname"]), State: string(a.State),
			Severity: string(a.Labels["severity"]), Summary: string(a.Annotations["summary"]), Since: a.ActiveAt})
	}
	sort.Slice(out.Alerts, func(i, j int) bool { return out.Alerts[i].Name < out.Alerts[j].Name })
	if len(failed) > 0 {
		s.log.Warn("prometheus queries failed", "failed", len(failed), "err", failed[0])
		out.Problem = fmt.Sprintf("Prometheus is unreachable or refused %d of the queries: what it did not answer is not drawn.", len(failed))
	}
	return out
}

// matrixSeries turns a query's answer into lines on r's grid (missing
// steps are NaN), named by lq.
func matrixSeries(mat model.Matrix, lq lineQuery, r promv1.Range) []series {
	n := int(r.End.Sub(r.Start)/r.Step) + 1
	var out []series
	for _, ss := range mat {
		name := lq.Name
		if lq.By != "" {
			name = strings.TrimSpace(lq.Name + " " + string(ss.Metric[model.LabelName(lq.By)]))
			if name == "" {
				name = "(no " + lq.By + ")"
			}
		}
		s := series{Name: name, Times: make([]time.Time, n), Values: make([]float64, n)}
		for i := range n {
			s.Times[i] = r.Start.Add(time.Duration(i) * r.Step)
			s.Values[i] = math.NaN()
		}
		for _, p := range ss.Values {
			i := int(math.Round(float64(p.Timestamp.Time().Sub(r.Start)) / float64(r.Step)))
			if i >= 0 && i < n {
				s.Values[i] = float64(p.Value)
			}
		}
		out = append(out, s)
	}
	return out
}
