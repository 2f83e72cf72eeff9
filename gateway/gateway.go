package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/nlpswarm/nlpswarm/internal/apierror"
	"github.com/nlpswarm/nlpswarm/internal/deployment"
)

// Deps are what the gateway talks to.
type Deps struct {
	DB        *pgxpool.Pool
	Redis     *redis.Client // optional: no rate limits nor quotas without it
	Discovery Discoverer    // the one Config's discovery settings give when nil
	Policy    Policy        // the one Config.Balancer names when nil
	Log       *slog.Logger
	Registry  prometheus.Registerer // optional
	// KeySecret seals the key verdicts the gateways share in Redis
	// (HMAC-SHA256, at least MinKeyCacheSecret bytes); without it verdicts
	// stay out of Redis and each gateway asks Postgres itself
	KeySecret []byte
	// CallKey derives the call credential sent to each model's replicas
	// (artifactcred.CallKey of the replica call secret, which the scheduler
	// derives their credentials from); nil: none sent, and replicas that
	// require one answer 401, which the gateway answers 502
	CallKey []byte
}

// Gateway is an http.Handler serving the customer API.
type Gateway struct {
	opts     settings
	log      *slog.Logger
	catalog  *Catalog
	keys     *KeyStore
	limiter  *Limiter
	usage    *Usage
	policy   Policy
	upstream upstreamClient // sends requests to the replicas
	m        *metrics
	mux      *http.ServeMux

	discovery discoveryProvider // finds replicas,
	fleet     *fleet            // which the fleet applies to each model's pool
	prober    *prober           // readiness checks of replicas
	rdb       *redis.Client
	rediscov  chan struct{}
	recatalog chan struct{}
	cancel    context.CancelFunc
	done      sync.WaitGroup
	closed    atomic.Bool
	lastWarn  atomic.Int64

	// canary and shadow (canary.go, versions.go)
	vstats         versionStats
	shadowCtx      context.Context // ends at Close: the shadow copies in flight end with it
	shadowStop     context.CancelFunc
	shadowsRunning atomic.Int64

	jobs   *gatewayJobs  // asynchronous jobs (jobs.go, jobs_worker.go)
	bodies inflightBytes // body bytes held by requests in progress (shed.go)
	unauth *addrThrottle // 401s per remote address
}

// New loads the catalogue once and starts the background loops (catalogue,
// discovery, usage flush); Close stops them and flushes usage.
func New(ctx context.Context, cfg Config, deps Deps) (*Gateway, error) {
	opts, err := cfg.settle()
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	if deps.Discovery == nil {
		if deps.Discovery, err = cfg.Discoverer(); err != nil {
			return nil, fmt.Errorf("gateway: %w", err)
		}
	}
	if deps.DB == nil || deps.Discovery == nil {
		return nil, errors.New("gateway: DB and Discovery are required")
	}
	if deps.Log == nil {
		deps.Log = slog.New(slog.DiscardHandler)
	}
	if n := len(deps.KeySecret); n > 0 && n < MinKeyCacheSecret {
		return nil, fmt.Errorf("gateway: key cache secret of %d bytes: at least %d", n, MinKeyCacheSecret)
	}
	if deps.Policy == nil {
		deps.Policy = opts.policy
	}
	dial := upstreamDialer(opts.DeadReplicaAfter).DialContext
	tr := &http.Transport{ // health probes; requests go through each upstream's connPool
		DialContext:         dial,
		MaxIdleConns:        4096,
		MaxIdleConnsPerHost: 512,
		IdleConnTimeout:     opts.IdleConnTimeout,
		DisableCompression:  true,
	}
	g := &Gateway{
		opts: opts, log: deps.Log, catalog: newCatalog(deps.DB), keys: newKeyStore(deps.DB, opts.KeyCacheTTL, deps.Redis, opts.RedisPrefix, deps.KeySecret),
		limiter: newLimiter(deps.Redis, deps.DB, opts.RedisPrefix, opts.LimitSync), usage: newUsage(deps.DB),
		policy: deps.Policy, upstream: newUpstreamClient(opts.Upstream, dial, opts.IdleConnTimeout), m: newMetrics(deps.Registry),
		discovery: discoveryProvider{disc: deps.Discovery, log: deps.Log}, prober: &prober{client: &http.Client{Transport: tr}},
		rediscov: make(chan struct{}, 1), recatalog: make(chan struct{}, 1), rdb: deps.Redis,
	}
	g.bodies.max = opts.MaxInflightBytes
	g.vstats.m = g.m
	g.shadowCtx, g.shadowStop = context.WithCancel(context.Background())
	g.catalog.log = g.log
	g.usage.log = g.log
	g.usage.rejected = func(n int) { g.m.usageRisk.WithLabelValues("rejected").Add(float64(n)) }
	g.usage.queued = func(n int) { g.m.usageQueue.Set(float64(n)) }
	if opts.UsageSpool != "" {
		unspooled := g.m.usageRisk.WithLabelValues("unspooled")
		if err := g.usage.openSpool(opts.UsageSpool, opts.UsageSpoolBytes, unspooled.Inc); err != nil {
			// serving without it beats a crash loop: usage is then kept in
			// memory only, as without --usagespool
			g.log.Error("usage spool unusable; usage kept in memory only (a kill loses up to --usageflush of it)", "err", err)
		}
	}
	g.unauth = newAddrThrottle(opts.UnauthorizedRate, opts.UnauthorizedBurst, 50_000)
	g.fleet = newFleet(g.log, g.m, deps.CallKey)
	g.mux = http.NewServeMux()
	for _, rt := range routes { // (handler.go)
		g.mux.HandleFunc(rt.pattern, func(w http.ResponseWriter, r *http.Request) { rt.serve(g, w, r) })
	}
	g.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		apierror.Write(w, http.StatusNotFound, "not_found", "no such route: "+r.Method+" "+r.URL.Path)
	})
	g.catalog.snapshot = opts.CatalogSnapshot
	g.loadCatalog(ctx)
	g.discoverAll(ctx)
	lctx, cancel := context.WithCancel(context.Background())
	g.cancel = cancel
	g.done.Add(6)
	go func() { defer g.done.Done(); g.limiter.Run(lctx) }()
	go g.loopCatalog(lctx)
	go g.loopUsage(lctx)
	go g.loopLoad(lctx)
	go g.loopVersionStats(lctx)
	go g.listenDeployments(lctx, deps.DB)
	if err := g.startJobs(lctx, deps.DB); err != nil {
		_ = g.Close(ctx)
		return nil, fmt.Errorf("gateway: %w", err)
	}
	return g, nil
}

// Close stops the loops and flushes usage to Postgres; with a spool, what
// the flush could not write within ctx stays there for the next gateway.
func (g *Gateway) Close(ctx context.Context) error {
	if !g.closed.CompareAndSwap(false, true) {
		return nil
	}
	g.cancel()
	g.shadowStop()
	g.done.Wait()
	for end := time.Now().Add(time.Second); g.shadowsRunning.Load() > 0 && time.Now().Before(end); {
		time.Sleep(5 * time.Millisecond) // (the copies in flight end with shadowCtx)
	}
	g.prober.client.CloseIdleConnections()
	g.upstream.closeIdle()
	g.fleet.closeIdle()
	if err := g.limiter.Settle(ctx); err != nil {
		g.log.Warn("rate limit settlement at shutdown failed", "err", err)
	}
	defer g.usage.closeSpool()
	return g.FlushUsage(ctx)
}

// FlushUsage writes the usage gathered so far.
func (g *Gateway) FlushUsage(ctx context.Context) error {
	err := g.usage.Flush(ctx)
	if err != nil {
		g.m.usageFlush.WithLabelValues("error").Inc()
		g.log.Warn("usage flush failed", "err", err)
	} else {
		g.m.usageFlush.WithLabelValues("ok").Inc()
	}
	return err
}

func (g *Gateway) loopCatalog(ctx context.Context) {
	defer g.done.Done()
	ct := time.NewTicker(g.opts.CatalogRefresh)
	dt := time.NewTicker(g.opts.DiscoveryInterval)
	defer ct.Stop()
	defer dt.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ct.C:
			g.refreshCatalog(ctx)
		case <-g.recatalog:
			g.refreshCatalog(ctx)
		case <-dt.C:
		case <-g.rediscov:
		}
		g.discoverAll(ctx)
	}
}

// catalogTimeout bounds one catalogue load: a Postgres that does not
// answer must not stall the loop that also runs discovery.
const catalogTimeout = 5 * time.Second

// loadCatalog loads the catalogue at start: from Postgres, else from the
// snapshot, else none yet (the gateway answers 503 until Postgres answers;
// it starts anyway, so that a database outage never keeps it from serving
// the keys it can).
func (g *Gateway) loadCatalog(ctx context.Context) {
	cctx, cancel := context.WithTimeout(ctx, catalogTimeout)
	err := g.catalog.Refresh(cctx)
	cancel()
	if err == nil || g.catalog.Loaded() {
		if err != nil {
			g.log.Warn("model catalogue snapshot not written", "err", err)
		}
		return
	}
	n, serr := g.catalog.loadSnapshot()
	if serr != nil {
		g.log.Warn("postgres unreachable at start and no catalogue snapshot: every model answers 503 until postgres does", "err", err, "snapshot_err", serr)
		return
	}
	g.log.Warn("postgres unreachable at start: serving the catalogue snapshot until it answers", "err", err, "models", n)
}

// refreshCatalog reloads the catalogue, keeping the previous one on error.
func (g *Gateway) refreshCatalog(ctx context.Context) {
	cctx, cancel := context.WithTimeout(ctx, catalogTimeout)
	defer cancel()
	if err := g.catalog.Refresh(cctx); err != nil && ctx.Err() == nil {
		g.log.Warn("model catalogue refresh failed; keeping the previous one", "err", err)
	}
}

// Ready is the gateway's readiness: it has a model catalogue (from Postgres
// or its snapshot). Postgres itself is no part of it: with a catalogue the
// gateway serves the keys it knows through a database outage, and a
// healthcheck that failed on Postgres would have Swarm kill every gateway.
func (g *Gateway) Ready(context.Context) error {
	if !g.catalog.Loaded() {
		return errors.New("no model catalogue yet (postgres unreachable since start, no snapshot)")
	}
	return nil
}

// listenDeployments reloads the catalogue as soon as the apiserver signals a
// deployment change (LISTEN/NOTIFY), on top of the periodic refresh.
func (g *Gateway) listenDeployments(ctx context.Context, db *pgxpool.Pool) {
	defer g.done.Done()
	for ctx.Err() == nil {
		err := func() error {
			conn, err := db.Acquire(ctx)
			if err != nil {
				return err
			}
			defer conn.Release()
			if err := deployment.Listen(ctx, conn.Conn()); err != nil {
				return err
			}
			defer func() { // leave the pooled connection clean
				uctx, cancel := context.WithTimeout(context.Background(), time.Second)
				_, _ = conn.Exec(uctx, "UNLISTEN *")
				cancel()
			}()
			for {
				if _, err := conn.Conn().WaitForNotification(ctx); err != nil {
					return err
				}
				select {
				case g.recatalog <- struct{}{}:
				default:
				}
			}
		}()
		if ctx.Err() != nil {
			return
		}
		g.log.Warn("listening for deployment changes failed; retrying", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(2 * time.Second):
		}
	}
}

// usageBatchRetention is how long written batch ids are remembered: a
// spooled batch replayed later than that would count twice.
const usageBatchRetention = 30 * 24 * time.Hour

// loopUsage flushes usage every UsageFlush, the first time at once (what a
// previous gateway left in the spool), and forgets old batch ids hourly.
func (g *Gateway) loopUsage(ctx context.Context) {
	defer g.done.Done()
	t := time.NewTicker(g.opts.UsageFlush)
	defer t.Stop()
	var pruned time.Time
	for {
		fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if g.FlushUsage(fctx) == nil && time.Since(pruned) > time.Hour {
			if err := pruneUsageBatches(fctx, g.usage.db, usageBatchRetention); err != nil && ctx.Err() == nil {
				g.log.Warn("forgetting old usage batch ids failed", "err", err)
			} else {
				pruned = time.Now()
			}
		}
		cancel()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (g *Gateway) triggerDiscovery() {
	select {
	case g.rediscov <- struct{}{}:
	default:
	}
}

// discoverAll looks up every deployed model's replicas and applies them.
func (g *Gateway) discoverAll(ctx context.Context) {
	g.fleet.apply(g.discovery.scan(ctx, g.catalog.Models()))
}

// pool is model's replica pool (read only: the fleet writes it).
func (g *Gateway) pool(model string) *Pool { return &g.fleet.get(model).pool }
