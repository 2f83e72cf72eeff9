// Package promcheck lets tests check that PromQL the platform ships (the
// stack's alert rules, the backoffice's monitoring queries) names only
// metrics that the code exports: it collects the metric names declared in
// the repository's Go source (prometheus.*Opts{Name: "nlpswarm_..."} and
// prometheus.NewDesc("nlpswarm_...")) and
// lists the nlpswarm_* names of an expression that none of them produces
// (histograms also export _bucket, _sum and _count). It is for tests and
// owns nothing at run time.
package promcheck
