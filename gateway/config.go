package gateway

import (
	"fmt"
	"strings"
	"time"
)

// Config tunes the gateway. It is the gateway role's configuration as
// loaded from flags, environment and config file (internal/config: each
// field's flag is its lowercased name, its description the --help text), so
// that every setting is defined once. Zero values take DefaultConfig's.
type Config struct {
	Timeout           time.Duration `description:"deadline of a customer request, upstream retry included"`
	ModelTimeouts     string        `description:"per-model deadlines: model=30s,model2=2m"`
	MaxBodyBytes      int64         `description:"largest request body (413 beyond)"`
	MaxTexts          int           `description:"most texts in one request (the task API's texts and the v2 infer route's BYTES input alike)"`
	BodyTimeout       time.Duration `description:"deadline to read a whole request body once the handler starts reading it (408 beyond); keep it under the server's --readtimeout"`
	MaxInflightPerKey int           `description:"requests one API key may have in progress at once (429 too_many_inflight with Retry-After beyond); at least --holdmax, so that a burst held for a model at zero fits"`
	MaxInflightBytes  int64         `description:"request body bytes all requests in progress may hold together (503 overloaded with Retry-After beyond); default a quarter of the Go memory limit, or 256 MiB without one"`
	UnauthorizedRate  float64       `description:"401 answers per second one remote address earns back (token bucket); with --unauthorizedburst spent, its uncached keys get 429 too_many_unauthorized without a lookup"`
	UnauthorizedBurst int           `description:"401 answers one remote address may get in a burst before --unauthorizedrate applies"`
	EjectAfter        int           `description:"consecutive failures that eject a replica until /v2/health/ready answers 200"`
	ProbeInterval     time.Duration `description:"how often an ejected replica is probed"`
	DiscoveryInterval time.Duration `description:"how often replicas are looked up (and at once after a connection error)"`
	CatalogRefresh    time.Duration `description:"how often the deployed models are reloaded from Postgres"`
	CatalogSnapshot   string        `description:"file (on a volume) keeping the last model catalogue loaded from Postgres; a gateway that cannot reach Postgres at start serves from it until Postgres answers; empty: none (such a gateway answers 503 until then)"`
	KeyCacheTTL       time.Duration `description:"how long an API key lookup is cached (at most 2s: a revoked key stops within 5s)"`
	UsageFlush        time.Duration `description:"how often usage counters are written to Postgres"`
	UsageSpool        string        `description:"folder (on a volume) where every request is journaled before it is answered and usage not yet in Postgres is kept, replayed by the next gateway on it; empty: usage is kept in memory only (a killed gateway loses up to --usageflush of it)"`
	UsageSpoolBytes   int64         `description:"most bytes the usage spool may hold; beyond, requests are counted in memory only (nlpswarm_gateway_usage_at_risk_total{kind=\"unspooled\"})"`
	IdleConnTimeout   time.Duration `description:"keep-alive idle timeout of upstream connections (keep well under Swarm's 900s IPVS drop)"`
	DeadReplicaAfter  time.Duration `description:"a replica silent this long (its node gone: no reset, no answer to TCP keep-alive) fails the attempt, which is retried on another replica"`
	RedisPrefix       string        `description:"prefix of the gateway's Redis keys"`
	Frontend          string        `description:"HTTP/1.1 server of the customer API: nethttp (net/http's server, the default) or fast (fasthttp; opt-in, issue 22)"`
	LimitSync         time.Duration `description:"how often the requests admitted against local rate limit buckets are settled with Redis, where every gateway's count meets"`
	Balancer          string        `description:"replica selection: least-outstanding (power of two choices) or round-robin"`
	Upstream          string        `description:"HTTP client to the replicas: fast (the gateway's own HTTP/1.1 client, less CPU per request) or nethttp (net/http's Transport)"`
	DiscoveryConfig
	JobsConfig // asynchronous jobs (jobs_config.go)
	// Autoscaling (autoscale.go): load figures for the scheduler, and the
	// hold of requests for a model at zero.
	GatewayID      string        `description:"names this gateway's load figures in Redis (default: hostname and a random suffix)"`
	LoadReport     time.Duration `description:"how often per-model in-flight and request figures go to Redis for the autoscaler (they expire after 3 periods)"`
	HoldMax        int           `description:"requests held per model while a model at zero starts a replica; beyond, 503 with Retry-After"`
	HoldRetryAfter time.Duration `description:"Retry-After of a request refused by a full hold or held past its deadline"`
	HoldPoll       time.Duration `description:"how often a held model's replicas are looked up and probed for readiness"`
	WakeResend     time.Duration `description:"a held model's wake-up is sent again after this long without a replica"`
	WakeCoalesce   time.Duration `description:"how long the wake-up of a model at zero waits at most for the rest of a burst (it goes once no request joined for 50 ms), so that it asks for enough replicas at once"`
	// Canary and shadow (canary.go)
	ShadowInflight int `description:"shadow copies one model may have in flight to its shadow canary at once; a copy beyond is dropped and counted (nlpswarm_gateway_shadow_dropped_total)"`
}

// maxKeyCacheTTL keeps revocation within 5 s.
const maxKeyCacheTTL = 2 * time.Second

// DefaultConfig is what the gateway role starts from.
func DefaultConfig() Config {
	return Config{
		Timeout: 30 * time.Second, MaxBodyBytes: 1 << 20, MaxTexts: 64,
		BodyTimeout: 10 * time.Second, MaxInflightPerKey: 128, UnauthorizedRate: 10, UnauthorizedBurst: 100,
		CatalogRefresh: 3 * time.Second, DiscoveryInterval: time.Second, KeyCacheTTL: maxKeyCacheTTL,
		UsageFlush: 10 * time.Second, UsageSpoolBytes: 64 << 20, EjectAfter: 3, ProbeInterval: time.Second,
		IdleConnTimeout: 60 * time.Second, DeadReplicaAfter: 5 * time.Second, RedisPrefix: "nlpswarm:",
		Balancer: "least-outstanding", Upstream: upstreamFast, Frontend: FrontendNetHTTP, DiscoveryConfig: DiscoveryConfig{Discovery: "dns", UpstreamPort: 8080}, LoadReport: time.Second, HoldMax: 100, HoldRetryAfter: 3 * time.Second,
		HoldPoll: 150 * time.Millisecond, WakeResend: 5 * time.Second, WakeCoalesce: 300 * time.Millisecond, LimitSync: DefaultLimitSync,
		ShadowInflight: 16,
	}
}

// settings is a checked Config with its defaults filled and its strings
// parsed: what the gateway runs on.
type settings struct {
	Config
	modelTimeouts map[string]time.Duration
	policy        Policy
}

// Check reports the first setting that is refused, naming its flag.
func (c Config) Check() error {
	if _, err := c.settle(); err != nil {
		return err
	}
	_, err := c.Discoverer()
	return err
}

// settle fills the defaults of zero (or negative) settings and parses and
// checks the rest.
func (c Config) settle() (settings, error) {
	d := DefaultConfig()
	orDefault(&c.Timeout, d.Timeout)
	orDefault(&c.MaxBodyBytes, d.MaxBodyBytes)
	orDefault(&c.MaxTexts, d.MaxTexts)
	orDefault(&c.BodyTimeout, d.BodyTimeout)
	orDefault(&c.MaxInflightPerKey, d.MaxInflightPerKey)
	orDefault(&c.MaxInflightBytes, defaultInflightBytes())
	orDefault(&c.UnauthorizedRate, d.UnauthorizedRate)
	orDefault(&c.UnauthorizedBurst, d.UnauthorizedBurst)
	orDefault(&c.CatalogRefresh, d.CatalogRefresh)
	orDefault(&c.DiscoveryInterval, d.DiscoveryInterval)
	orDefault(&c.KeyCacheTTL, d.KeyCacheTTL)
	orDefault(&c.UsageFlush, d.UsageFlush)
	orDefault(&c.UsageSpoolBytes, d.UsageSpoolBytes)
	orDefault(&c.EjectAfter, d.EjectAfter)
	orDefault(&c.ProbeInterval, d.ProbeInterval)
	orDefault(&c.IdleConnTimeout, d.IdleConnTimeout)
	orDefault(&c.DeadReplicaAfter, d.DeadReplicaAfter)
	orDefault(&c.LoadReport, d.LoadReport)
	orDefault(&c.HoldMax, d.HoldMax)
	orDefault(&c.HoldRetryAfter, d.HoldRetryAfter)
	orDefault(&c.HoldPoll, d.HoldPoll)
	orDefault(&c.WakeResend, d.WakeResend)
	orDefault(&c.WakeCoalesce, d.WakeCoalesce)
	orDefault(&c.ShadowInflight, d.ShadowInflight)
	orDefault(&c.LimitSync, d.LimitSync)
	if c.GatewayID == "" {
		c.GatewayID = defaultGatewayID()
	}
	s := settings{Config: c}
	if c.MaxInflightBytes < c.MaxBodyBytes {
		return s, fmt.Errorf("--maxinflightbytes=%d: at least --maxbodybytes (%d), or no large body is ever admitted", c.MaxInflightBytes, c.MaxBodyBytes)
	}
	if c.KeyCacheTTL > maxKeyCacheTTL {
		return s, fmt.Errorf("--keycachettl=%s: at most %s, so that a revoked key stops within 5s", c.KeyCacheTTL, maxKeyCacheTTL)
	}
	var err error
	if s.modelTimeouts, err = parseModelTimeouts(c.ModelTimeouts); err != nil {
		return s, err
	}
	switch c.Upstream {
	case upstreamFast, upstreamNetHTTP:
	case "":
		s.Upstream = upstreamFast
	default:
		return s, fmt.Errorf("--upstream=%q: want %s or %s", c.Upstream, upstreamFast, upstreamNetHTTP)
	}
	if s.Frontend, err = frontendName(c.Frontend); err != nil {
		return s, err
	}
	switch c.Balancer {
	case "least-outstanding", "":
		s.policy = LeastOutstanding{}
	case "round-robin":
		s.policy = &RoundRobin{}
	default:
		return s, fmt.Errorf("--balancer=%q: want least-outstanding or round-robin", c.Balancer)
	}
	return s, nil
}

// parseModelTimeouts reads "model=30s,model2=2m".
func parseModelTimeouts(s string) (map[string]time.Duration, error) {
	out := map[string]time.Duration{}
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part == "" {
			continue
		}
		name, val, ok := strings.Cut(part, "=")
		d, err := time.ParseDuration(strings.TrimSpace(val))
		if name = strings.TrimSpace(name); !ok || name == "" || err != nil || d <= 0 {
			return nil, fmt.Errorf("--modeltimeouts: %q: want model=duration", part)
		}
		out[name] = d
	}
	return out, nil
}

// orDefault replaces a zero or negative setting with its default.
func orDefault[T int | int64 | float64 | time.Duration](v *T, def T) {
	if *v <= 0 {
		*v = def
	}
}
