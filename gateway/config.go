package gateway

import "time"

// Options tune the gateway. Zero values take the defaults of DefaultOptions.
type Options struct {
	Timeout           time.Duration            // per request, upstream attempts included
	ModelTimeouts     map[string]time.Duration // per model overrides
	MaxBodyBytes      int64
	MaxTexts          int
	CatalogRefresh    time.Duration
	DiscoveryInterval time.Duration
	KeyCacheTTL       time.Duration // at most 2 s, so that revocation bites within 5 s
	UsageFlush        time.Duration
	EjectAfter        int // consecutive failures that eject a replica
	ProbeInterval     time.Duration
	IdleConnTimeout   time.Duration // upstream keep-alive; well under Swarm's 900 s IPVS drop
	// DeadReplicaTimeout: a replica silent this long (its node gone, no
	// reset) fails the attempt, which is retried on another replica.
	DeadReplicaTimeout time.Duration
	RedisPrefix        string
	// LimitSync is how often the requests admitted against the local rate
	// limit buckets are settled with Redis (limit.go).
	LimitSync time.Duration
	// Autoscaling (autoscale.go): load figures for the scheduler, and the
	// hold of requests for a model at zero.
	GatewayID      string        // names this gateway's load figures in Redis (hostname-random by default)
	LoadReport     time.Duration // how often load figures go to Redis (they expire after 3 periods)
	HoldMax        int           // requests held per model at zero; beyond, 503 + Retry-After
	HoldRetryAfter time.Duration // Retry-After of a refused or timed-out held request
	HoldPoll       time.Duration // how often a model's replicas are looked up while requests are held
	WakeResend     time.Duration // a held model's wake-up is sent again after this long without a replica
	WakeCoalesce   time.Duration // how long a wake-up waits at most for the rest of a burst (it goes 50 ms after the last arrival), to carry its size
}

// DefaultOptions are the defaults the gateway role starts from.
func DefaultOptions() Options {
	return Options{
		Timeout: 30 * time.Second, MaxBodyBytes: 1 << 20, MaxTexts: 64,
		CatalogRefresh: 3 * time.Second, DiscoveryInterval: time.Second, KeyCacheTTL: 2 * time.Second,
		UsageFlush: 10 * time.Second, EjectAfter: 3, ProbeInterval: time.Second,
		IdleConnTimeout: 60 * time.Second, DeadReplicaTimeout: 5 * time.Second, RedisPrefix: "nlpswarm:",
		LoadReport: time.Second, HoldMax: 100, HoldRetryAfter: 3 * time.Second, HoldPoll: 150 * time.Millisecond,
		WakeResend: 5 * time.Second, WakeCoalesce: 300 * time.Millisecond, LimitSync: DefaultLimitSync,
	}
}

// orDefault replaces a zero or negative option with its default.
func orDefault[T int | int64 | time.Duration](v *T, def T) {
	if *v <= 0 {
		*v = def
	}
}
