package gateway

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"reflect"
	"testing"
)

func ups(inflight ...int64) []*Upstream {
	out := make([]*Upstream, len(inflight))
	for i, n := range inflight {
		out[i] = NewUpstream(string(rune('a' + i)))
		out[i].inflight.Store(n)
	}
	return out
}

func TestLeastOutstanding(t *testing.T) {
	tests := []struct {
		name     string
		inflight []int64
		never    map[int]bool // indexes that must never win
		only     int          // index that must always win, -1 if none
	}{
		{"empty", nil, nil, -1},
		{"single", []int64{5}, nil, 0},
		{"two: lower wins", []int64{3, 1}, nil, 1},
		{"two equal", []int64{2, 2}, nil, -1},
		{"busiest never wins", []int64{0, 0, 9}, map[int]bool{2: true}, -1},
		{"one idle among busy", []int64{5, 5, 5, 0}, map[int]bool{}, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pool := ups(tt.inflight...)
			wins := map[*Upstream]int{}
			for i := 0; i < 2000; i++ {
				u := LeastOutstanding{}.Select(pool, nil)
				if len(pool) == 0 {
					if u != nil {
						t.Fatal("picked from an empty pool")
					}
					return
				}
				wins[u]++
			}
			for i, u := range pool {
				if tt.never[i] && wins[u] > 0 {
					t.Errorf("upstream %d (inflight %d) won %d times", i, tt.inflight[i], wins[u])
				}
				if tt.only >= 0 && i != tt.only && wins[u] > 0 {
					t.Errorf("upstream %d won; only %d should", i, tt.only)
				}
			}
		})
	}
	// Power of two choices: the idle one among four busy wins about half the time
	// (it wins whenever drawn: 1 - (3/4 * 2/3) = 1/2), the rest share the other half.
	pool := ups(5, 5, 5, 0)
	n := 0
	for i := 0; i < 4000; i++ {
		if (LeastOutstanding{}).Select(pool, nil) == pool[3] {
			n++
		}
	}
	if n < 1700 || n > 2300 {
		t.Errorf("idle replica won %d/4000, want about 2000", n)
	}
}

func TestRoundRobin(t *testing.T) {
	pool := ups(0, 0, 0)
	p := &RoundRobin{}
	var got []*Upstream
	for i := 0; i < 6; i++ {
		got = append(got, p.Select(pool, nil))
	}
	want := []*Upstream{pool[0], pool[1], pool[2], pool[0], pool[1], pool[2]}
	if !reflect.DeepEqual(got, want) {
		t.Fatal("not round robin")
	}
}

func TestCandidatesAndEjection(t *testing.T) {
	pool := ups(0, 0, 0)
	tests := []struct {
		name    string
		failing int // failures on pool[0]
		exclude *Upstream
		want    []*Upstream
	}{
		{"all healthy", 0, nil, pool},
		{"below threshold", 2, nil, pool},
		{"ejected at threshold", 3, nil, pool[1:]},
		{"ejected and one excluded", 3, pool[1], pool[2:]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, u := range pool {
				u.fails.Store(0)
				u.ejected.Store(false)
			}
			ejected := false
			for i := 0; i < tt.failing; i++ {
				if pool[0].markFailure(3) {
					if ejected {
						t.Fatal("ejected twice")
					}
					ejected = true
				}
			}
			if ejected != (tt.failing >= 3) {
				t.Fatalf("ejected=%v after %d failures", ejected, tt.failing)
			}
			if got := candidates(pool, tt.exclude); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %d candidates, want %d", len(got), len(tt.want))
			}
		})
	}
	u := NewUpstream("x")
	u.markFailure(3)
	u.markFailure(3)
	u.markSuccess()
	if u.markFailure(3) || !u.Available() {
		t.Fatal("success did not reset the consecutive failure count")
	}
}

func TestPoolSetKeepsState(t *testing.T) {
	var p Pool
	if !p.Set([]string{"a:1", "b:1"}) {
		t.Fatal("first set: no change")
	}
	a := p.Upstreams()[0]
	a.inflight.Store(7)
	if p.Set([]string{"a:1", "b:1"}) {
		t.Fatal("same set reported as changed")
	}
	if !p.Set([]string{"c:1", "a:1", "a:1"}) {
		t.Fatal("changed set not reported")
	}
	got := p.Upstreams()
	if len(got) != 2 || got[1] != a || a.Inflight() != 7 || got[0].Addr != "c:1" {
		t.Fatalf("state of a kept replica lost: %+v", got)
	}
	p.Set(nil)
	if len(p.Upstreams()) != 0 {
		t.Fatal("not emptied")
	}
}

type fakeResolver map[string][]string

func (f fakeResolver) LookupHost(_ context.Context, host string) ([]string, error) {
	if host == "tasks.nlp-broken" {
		return nil, errors.New("server misbehaving")
	}
	ips, ok := f[host]
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	return ips, nil
}

func TestDNSDiscovery(t *testing.T) {
	d := DNSDiscovery{Resolver: fakeResolver{"tasks.nlp-sentiment": {"10.0.1.7", "10.0.1.5"}}}
	got, err := d.Lookup(context.Background(), "sentiment")
	if err != nil || !reflect.DeepEqual(got, []string{"10.0.1.5:8080", "10.0.1.7:8080"}) {
		t.Fatalf("%v %v", got, err)
	}
	d.Port = 9000
	if got, _ := d.Lookup(context.Background(), "sentiment"); got[0] != "10.0.1.5:9000" {
		t.Fatal(got)
	}
	if got, err := d.Lookup(context.Background(), "gone"); err != nil || len(got) != 0 {
		t.Fatalf("NXDOMAIN should mean no replica: %v %v", got, err)
	}
	if _, err := d.Lookup(context.Background(), "broken"); err == nil {
		t.Fatal("resolver failure hidden")
	}
}

func TestParseStatic(t *testing.T) {
	s, err := ParseStatic("sentiment=127.0.0.1:9001|127.0.0.1:9002, ner=127.0.0.1:9003")
	if err != nil {
		t.Fatal(err)
	}
	want := StaticDiscovery{"sentiment": {"127.0.0.1:9001", "127.0.0.1:9002"}, "ner": {"127.0.0.1:9003"}}
	if !reflect.DeepEqual(s, want) {
		t.Fatal(s)
	}
	for _, bad := range []string{"sentiment", "=1.2.3.4:1", "a=1.2.3.4", "a=1.2.3.4:1|"} {
		if _, err := ParseStatic(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// timeoutResolver answers like Swarm's DNS on a node with no route out: a
// name it holds (a service with running tasks) resolves, any other times
// out (forwarded to resolvers that do not answer) instead of NXDOMAIN.
type timeoutResolver map[string][]string

func (f timeoutResolver) LookupHost(_ context.Context, host string) ([]string, error) {
	if ips, ok := f[host]; ok {
		return ips, nil
	}
	return nil, &net.DNSError{Err: "dial udp 127.0.0.11:53: i/o timeout", Name: host, IsTimeout: true}
}

// TestDiscoveryScan: a model whose lookup fails keeps its replicas, unless
// its deployment wants none (scaled to zero): then it has none, so a request
// is held and wakes it instead of going to replicas that are gone.
func TestDiscoveryScan(t *testing.T) {
	p := discoveryProvider{disc: DNSDiscovery{Resolver: timeoutResolver{"tasks.nlp-up": {"10.0.1.5"}}}, log: slog.New(slog.DiscardHandler)}
	for _, c := range []struct {
		name     string
		model    Model
		want     []string
		replaced bool // Addrs holds the model: its pool is set to want
	}{
		{"found", Model{Name: "up", Replicas: 2}, []string{"10.0.1.5:8080"}, true},
		{"found while the record says zero (waking)", Model{Name: "up", Replicas: 0, Autoscaled: true}, []string{"10.0.1.5:8080"}, true},
		{"lookup fails, replicas wanted: keep", Model{Name: "flaky", Replicas: 2}, nil, false},
		{"lookup fails at zero: none", Model{Name: "asleep", Replicas: 0, Autoscaled: true}, nil, true},
	} {
		snap := p.scan(context.Background(), []*Model{&c.model})
		got, ok := snap.Addrs[c.model.Name]
		if !snap.Live[c.model.Name] || ok != c.replaced || !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: live %v, replaced %v with %v; want replaced %v with %v", c.name, snap.Live[c.model.Name], ok, got, c.replaced, c.want)
		}
	}
}
