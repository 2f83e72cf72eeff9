package apiserver

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nlpswarm/nlpswarm/internal/limitkeys"
)

// quotaCollector exports, at each scrape, how much of its monthly quota
// every active key has used (keys on a plan with a quota that have used
// any), for the stack's "quota near its end" alert. The gateways count in
// Redis; it reads their counts through internal/limitkeys.
type quotaCollector struct {
	s    *Server
	desc *prometheus.Desc
}

// quotaScrapeMax bounds one scrape's keys (the series and the Redis reads).
const quotaScrapeMax = 10000

// QuotaCollector is the collector of the keys' quota use; register it on
// the metrics registry when Redis is configured.
func (s *Server) QuotaCollector() prometheus.Collector {
	return &quotaCollector{s: s, desc: prometheus.NewDesc("nlpswarm_apikey_quota_used_ratio",
		"Share of its monthly request quota an API key has used this UTC month (keys that used some of a limited quota).",
		[]string{"account", "key_prefix", "plan"}, nil)}
}

func (q *quotaCollector) Describe(ch chan<- *prometheus.Desc) { ch <- q.desc }

type quotaKeyRow struct {
	id                    int64
	account, prefix, plan string
	quota                 int64
}

func (q *quotaCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := q.collect(ctx, ch); err != nil {
		q.s.log.Warn("quota metrics not collected", "err", err)
		ch <- prometheus.NewInvalidMetric(q.desc, err)
	}
}

func (q *quotaCollector) collect(ctx context.Context, ch chan<- prometheus.Metric) error {
	if q.s.cfg.Redis == nil {
		return nil
	}
	rows, err := q.s.db.Query(ctx, `SELECT k.id, a.name, k.prefix, p.name, p.monthly_quota
		FROM api_keys k JOIN accounts a ON a.id = k.account_id JOIN plans p ON p.id = a.plan_id
		WHERE k.revoked_at IS NULL AND p.monthly_quota > 0 ORDER BY k.id LIMIT $1`, quotaScrapeMax)
	if err != nil {
		return fmt.Errorf("read keys with a quota: %w", err)
	}
	keys, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (quotaKeyRow, error) {
		var k quotaKeyRow
		return k, r.Scan(&k.id, &k.account, &k.prefix, &k.plan, &k.quota)
	})
	if err != nil {
		return fmt.Errorf("read keys with a quota: %w", err)
	}
	plans := make([]limitkeys.Plan, len(keys))
	for i, k := range keys {
		plans[i] = limitkeys.Plan{ID: k.id}
	}
	states, err := limitkeys.Read(ctx, q.s.cfg.Redis, q.s.cfg.RedisPrefix, plans, limitkeys.Month(time.Now()))
	if err != nil {
		return err
	}
	for i, st := range states {
		if st.QuotaUsed > 0 {
			k := keys[i]
			ch <- prometheus.MustNewConstMetric(q.desc, prometheus.GaugeValue, float64(st.QuotaUsed)/float64(k.quota), k.account, k.prefix, k.plan)
		}
	}
	return nil
}
