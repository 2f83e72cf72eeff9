package gateway

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nlpswarm/nlpswarm/internal/versionstats"
)

// versionStats counts, per model and version (and live or shadow), the
// answers of the models that have a canary: as Prometheus series (labels
// model, version, traffic) and as the figures published to Redis at most
// once a second (versionstats, loopVersionStats) for the scheduler's
// automatic rollback and `status`. Models without a canary are not counted
// here (their figures are the per-model metrics').
type versionStats struct {
	m      *metrics
	series sync.Map // versionstats.Series -> *seriesStats
}

// seriesStats is one series' counts since the last publish, and its
// Prometheus series. (Series are never deleted: they are bounded by the
// canaries ever deployed.)
type seriesStats struct {
	requests, errors, compared, agreed atomic.Int64
	latency                            [versionstats.NumBuckets]atomic.Int64

	ok, failed         prometheus.Counter
	duration           prometheus.Observer
	agreedC, disagreed prometheus.Counter
}

func (v *versionStats) get(s versionstats.Series) *seriesStats {
	if x, ok := v.series.Load(s); ok {
		return x.(*seriesStats)
	}
	version, traffic := strconv.Itoa(s.Version), "live"
	if s.Shadow {
		traffic = "shadow"
	}
	ns := &seriesStats{
		ok:       v.m.versionRequests.WithLabelValues(s.Model, version, traffic, "ok"),
		failed:   v.m.versionRequests.WithLabelValues(s.Model, version, traffic, "error"),
		duration: v.m.versionDuration.WithLabelValues(s.Model, version, traffic),
	}
	if s.Shadow {
		ns.agreedC = v.m.shadowCompared.WithLabelValues(s.Model, version, "agreed")
		ns.disagreed = v.m.shadowCompared.WithLabelValues(s.Model, version, "disagreed")
	}
	x, _ := v.series.LoadOrStore(s, ns)
	return x.(*seriesStats)
}

// record counts one answer of s that took d.
func (v *versionStats) record(s versionstats.Series, d time.Duration, fail bool) {
	ss := v.get(s)
	ss.requests.Add(1)
	if fail {
		ss.errors.Add(1)
		ss.failed.Inc()
	} else {
		ss.ok.Inc()
	}
	ss.latency[versionstats.Bucket(d)].Add(1)
	ss.duration.Observe(d.Seconds())
}

// compare counts n outputs of a shadow answer compared with the stable
// one's, agreed of them alike.
func (v *versionStats) compare(s versionstats.Series, n, agreed int64) {
	ss := v.get(s)
	ss.compared.Add(n)
	ss.agreed.Add(agreed)
	if ss.agreedC != nil {
		ss.agreedC.Add(float64(agreed))
		ss.disagreed.Add(float64(n - agreed))
	}
}

// take returns the counts since the last take (the series that counted
// something) and starts them again from zero.
func (v *versionStats) take() map[versionstats.Series]versionstats.Counts {
	out := map[versionstats.Series]versionstats.Counts{}
	v.series.Range(func(k, x any) bool {
		ss := x.(*seriesStats)
		c := versionstats.Counts{Requests: ss.requests.Swap(0), Errors: ss.errors.Swap(0), Compared: ss.compared.Swap(0), Agreed: ss.agreed.Swap(0)}
		for i := range ss.latency {
			c.Latency[i] = ss.latency[i].Swap(0)
		}
		if !c.Zero() {
			out[k.(versionstats.Series)] = c
		}
		return true
	})
	return out
}

// versionStatsPeriod is how often the figures go to Redis: at most once a
// second, as versionstats asks.
const versionStatsPeriod = time.Second

// loopVersionStats publishes the per-version figures every second (none
// when nothing was counted). Counts a failed publish could not write are
// lost, not carried over: the figures are for a window, late is wrong.
func (g *Gateway) loopVersionStats(ctx context.Context) {
	defer g.done.Done()
	t := time.NewTicker(versionStatsPeriod)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			counts := g.vstats.take()
			if len(counts) == 0 || g.rdb == nil {
				continue
			}
			pctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
			err := versionstats.Publish(pctx, g.rdb, g.opts.RedisPrefix, now, counts)
			cancel()
			if err != nil && ctx.Err() == nil {
				g.m.versionPublishes.WithLabelValues("error").Inc()
				g.log.Debug("version stats publish failed", "err", err)
			} else {
				g.m.versionPublishes.WithLabelValues("ok").Inc()
			}
		}
	}
}
