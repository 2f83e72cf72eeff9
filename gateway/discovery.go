package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nlpswarm/nlpswarm/internal/deployment"
)

// Discoverer finds the replica addresses (host:port) of a deployment, named
// by deployment.Key: a model's name for its stable track, name_canary for
// its canary (issue 20).
type Discoverer interface {
	Lookup(ctx context.Context, key string) ([]string, error)
}

// DiscoveryConfig chooses how replicas are found (part of Config).
type DiscoveryConfig struct {
	Discovery string `description:"replica discovery: dns (A records of tasks.nlp-<model>, and tasks.nlp-<model>_canary for a canary) or static"`
	Static    struct {
		Upstreams string `description:"static replicas: model=host:port|host:port,model2=host:port (a model's canary: model_canary=host:port)"`
	} `description:"static discovery"`
	UpstreamPort int `description:"runtime port on the replicas found by DNS"`
}

// Discoverer is the discovery c configures.
func (c DiscoveryConfig) Discoverer() (Discoverer, error) {
	switch c.Discovery {
	case "dns", "":
		return DNSDiscovery{Port: c.UpstreamPort}, nil
	case "static":
		s, err := ParseStatic(c.Static.Upstreams)
		if err != nil {
			return nil, err
		}
		if len(s) == 0 {
			return nil, errors.New("--discovery=static needs --static.upstreams (model=host:port|host:port, comma-separated)")
		}
		return s, nil
	}
	return nil, fmt.Errorf("--discovery=%q: want dns or static", c.Discovery)
}

// Resolver is the part of net.Resolver DNS discovery uses.
type Resolver interface {
	LookupHost(ctx context.Context, host string) ([]string, error)
}

// DNSDiscovery resolves tasks.<service>, the deployment's service
// (deployment.ServiceName: nlp-<model>, nlp-<model>_canary): Swarm's DNS
// answers one A record per running task of a dnsrr service.
type DNSDiscovery struct {
	Resolver Resolver // net.DefaultResolver when nil
	Port     int      // runtime port, 8080 when 0
}

// Lookup implements Discoverer. A name that does not exist means no replica.
func (d DNSDiscovery) Lookup(ctx context.Context, key string) ([]string, error) {
	r := d.Resolver
	if r == nil {
		r = net.DefaultResolver
	}
	port := d.Port
	if port == 0 {
		port = 8080
	}
	ips, err := r.LookupHost(ctx, "tasks."+deployment.ServiceName(deployment.SplitKey(key)))
	if err != nil {
		var de *net.DNSError
		if errors.As(err, &de) && de.IsNotFound {
			return nil, nil
		}
		return nil, err
	}
	out := make([]string, 0, len(ips))
	for _, ip := range ips {
		out = append(out, net.JoinHostPort(ip, strconv.Itoa(port)))
	}
	sort.Strings(out)
	return out, nil
}

// StaticDiscovery serves a fixed map of deployment (deployment.Key) to
// addresses.
type StaticDiscovery map[string][]string

// ParseStatic reads "sentiment=127.0.0.1:9001|127.0.0.1:9002,ner=127.0.0.1:9003".
func ParseStatic(s string) (StaticDiscovery, error) {
	out := StaticDiscovery{}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, list, ok := strings.Cut(part, "=")
		name = strings.TrimSpace(name)
		if !ok || name == "" {
			return nil, fmt.Errorf("static upstreams: %q: want model=host:port|host:port", part)
		}
		for _, a := range strings.Split(list, "|") {
			a = strings.TrimSpace(a)
			if _, _, err := net.SplitHostPort(a); err != nil {
				return nil, fmt.Errorf("static upstreams: model %s: address %q: want host:port", name, a)
			}
			out[name] = append(out[name], a)
		}
	}
	return out, nil
}

// Lookup implements Discoverer.
func (s StaticDiscovery) Lookup(_ context.Context, key string) ([]string, error) {
	return s[key], nil
}

// replicaSnapshot is what one discovery pass found, as plain data: the
// deployments routed (Live) and the replica addresses of each one looked up
// successfully (Addrs; a deployment missing there keeps its replicas), by
// deployment.Key.
type replicaSnapshot struct {
	Live  map[string]bool
	Addrs map[string][]string
}

// discoveryProvider looks replicas up through a Discoverer; it only reports
// what it found, and the fleet applies it.
type discoveryProvider struct {
	disc Discoverer
	log  *slog.Logger
}

// lookupTimeout bounds one deployment's lookup.
const lookupTimeout = 2 * time.Second

// scan looks up every model, and its canary's replicas apart (issue 20). A
// deployment whose lookup fails keeps the replicas
// it had (a resolver's hiccup must not empty a pool), unless its deployment
// wants none: Swarm's DNS holds no name for a service without a running
// task and forwards the question to the node's resolvers, which on a node
// with no route out (an air-gapped cluster, the lab) time out instead of
// answering NXDOMAIN. Keeping the replicas of a model scaled to zero sent
// the request that should wake it to replicas that were gone (502 instead
// of held while one starts).
func (p discoveryProvider) scan(ctx context.Context, models []*Model) replicaSnapshot {
	snap := replicaSnapshot{Live: make(map[string]bool, len(models)), Addrs: make(map[string][]string, len(models))}
	for _, m := range models {
		p.scanOne(ctx, snap, m.Name, m.Replicas)
		if c := m.Canary; c != nil {
			p.scanOne(ctx, snap, c.key, c.Replicas)
		}
	}
	return snap
}

// scanOne looks up the replicas of the deployment key, whose desired count
// is replicas, into snap.
func (p discoveryProvider) scanOne(ctx context.Context, snap replicaSnapshot, key string, replicas int) {
	snap.Live[key] = true
	addrs, err := p.lookup(ctx, key)
	switch {
	case err == nil:
		snap.Addrs[key] = addrs
	case ctx.Err() != nil:
	case replicas == 0:
		snap.Addrs[key] = nil
		p.log.Debug("discovery failed for a deployment at zero: no replica", "deployment", key, "err", err)
	default:
		p.log.Warn("discovery failed; keeping the previous replicas", "deployment", key, "err", err)
	}
}

// lookup finds the replicas of the deployment key, within lookupTimeout.
func (p discoveryProvider) lookup(ctx context.Context, key string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	defer cancel()
	return p.disc.Lookup(ctx, key)
}
