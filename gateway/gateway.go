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
	g.unauth = newAddrThrottle(opts.UnauthorizedRate, opts.UnauthorizedBurst, 50_000)
	g.fleet = newFleet(g.log, g.m)
	g.mux = http.NewServeMux()
	// (ServeHTTP takes the usual forms of these two routes without the mux)
	g.mux.HandleFunc("POST /v1/{model}/{task}", func(w http.ResponseWriter, r *http.Request) {
		g.serveTask(w, r, r.PathValue("model"), r.PathValue("task"))
	})
	g.mux.HandleFunc("POST /v2/models/{model}/infer", func(w http.ResponseWriter, r *http.Request) {
		g.serveInfer(w, r, r.PathValue("model"))
	})
	g.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		apierror.Write(w, http.StatusNotFound, "not_found", "no such route: "+r.Method+" "+r.URL.Path)
	})
	if err := g.catalog.Refresh(ctx); err != nil {
		return nil, fmt.Errorf("gateway: load model catalogue: %w", err)
	}
	g.discoverAll(ctx)
	lctx, cancel := context.WithCancel(context.Background())
	g.cancel = cancel
	g.done.Add(5)
	go func() { defer g.done.Done(); g.limiter.Run(lctx) }()
	go g.loopCatalog(lctx)
	go g.loopUsage(lctx)
	go g.loopLoad(lctx)
	go g.listenDeployments(lctx, deps.DB)
	return g, nil
}

// Close stops the loops and flushes usage to Postgres.
func (g *Gateway) Close(ctx context.Context) error {
	if !g.closed.CompareAndSwap(false, true) {
		return nil
	}
	g.cancel()
	g.done.Wait()
	g.prober.client.CloseIdleConnections()
	g.upstream.closeIdle()
	g.fleet.closeIdle()
	if err := g.limiter.Settle(ctx); err != nil {
		g.log.Warn("rate limit settlement at shutdown failed", "err", err)
	}
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
			if err := g.catalog.Refresh(ctx); err != nil && ctx.Err() == nil {
				g.log.Warn("model catalogue refresh failed; keeping the previous one", "err", err)
			}
		case <-g.recatalog:
			if err := g.catalog.Refresh(ctx); err != nil && ctx.Err() == nil {
				g.log.Warn("model catalogue refresh failed; keeping the previous one", "err", err)
			}
		case <-dt.C:
		case <-g.rediscov:
		}
		g.discoverAll(ctx)
	}
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

func (g *Gateway) loopUsage(ctx context.Context) {
	defer g.done.Done()
	t := time.NewTicker(g.opts.UsageFlush)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			_ = g.FlushUsage(fctx)
			cancel()
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
	g.fleet.apply(g.discovery.scan(ctx, g.catalog.Names()))
}

// pool is model's replica pool (read only: the fleet writes it).
func (g *Gateway) pool(model string) *Pool { return &g.fleet.get(model).pool }
