package versionstats

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Bounds are the latency histogram's upper bounds (a latency d falls in the
// first bucket i with d <= Bounds[i]; past the last, in the overflow bucket
// len(Bounds)). Fixed: changing them changes the contract.
var Bounds = [...]time.Duration{
	1 * time.Millisecond, 2 * time.Millisecond, 3 * time.Millisecond, 5 * time.Millisecond,
	7500 * time.Microsecond, 10 * time.Millisecond, 15 * time.Millisecond, 20 * time.Millisecond,
	30 * time.Millisecond, 50 * time.Millisecond, 75 * time.Millisecond, 100 * time.Millisecond,
	150 * time.Millisecond, 200 * time.Millisecond, 300 * time.Millisecond, 500 * time.Millisecond,
	750 * time.Millisecond, 1 * time.Second, 1500 * time.Millisecond, 2 * time.Second,
	3 * time.Second, 5 * time.Second, 7500 * time.Millisecond, 10 * time.Second,
	15 * time.Second, 30 * time.Second, 60 * time.Second,
}

// NumBuckets is the histogram's bucket count, the overflow bucket included.
const NumBuckets = len(Bounds) + 1

// Bucket is the histogram bucket of latency d.
func Bucket(d time.Duration) int {
	lo, hi := 0, len(Bounds) // first i with d <= Bounds[i]
	for lo < hi {
		mid := (lo + hi) / 2
		if d <= Bounds[mid] {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return lo
}

// MaxWindow is the longest window Read sums; KeyTTL keeps a second's
// figures that long, and a little more.
const (
	MaxWindow = 10 * time.Minute
	KeyTTL    = MaxWindow + time.Minute
)

// Series names one set of figures: a model's version, live or shadow.
type Series struct {
	Model   string
	Version int
	Shadow  bool // the figures of shadow copies sent to the version
}

// Counts are one series' figures over some time (one flush).
type Counts struct {
	Requests, Errors int64
	Latency          [NumBuckets]int64 // requests per Bounds bucket
	Compared, Agreed int64             // shadow comparisons, and those that agreed
}

// Add counts one request of latency d, failed or not.
func (c *Counts) Add(d time.Duration, failed bool) {
	c.Requests++
	if failed {
		c.Errors++
	}
	c.Latency[Bucket(d)]++
}

// Zero reports whether c counts nothing.
func (c *Counts) Zero() bool { return c.Requests == 0 && c.Compared == 0 }

// Key is the hash of model's figures in the UTC second of at.
func Key(prefix, model string, at time.Time) string {
	return prefix + "vstats:" + model + ":" + strconv.FormatInt(at.Unix(), 10)
}

func seriesField(version int, shadow bool) string {
	s := strconv.Itoa(version)
	if shadow {
		s += "s"
	}
	return s
}

// Publish adds counts to the second of at (one pipeline; zero counts are
// not written). Each gateway calls it at most once a second with what it
// counted since its last call.
func Publish(ctx context.Context, rdb redis.Cmdable, prefix string, at time.Time, counts map[Series]Counts) error {
	touched := map[string]bool{}
	_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for s, c := range counts {
			if c.Zero() {
				continue
			}
			key := Key(prefix, s.Model, at)
			touched[key] = true
			f := seriesField(s.Version, s.Shadow) + ":"
			incr := func(name string, n int64) {
				if n != 0 {
					p.HIncrBy(ctx, key, f+name, n)
				}
			}
			incr("n", c.Requests)
			incr("e", c.Errors)
			incr("c", c.Compared)
			incr("a", c.Agreed)
			for i, n := range c.Latency {
				incr("b"+strconv.Itoa(i), n)
			}
		}
		for key := range touched {
			p.Expire(ctx, key, KeyTTL)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("version stats: publish: %w", err)
	}
	return nil
}

// Stats are one version's figures over a window, summed over the gateways.
// The live figures (Requests to P99) are the customer traffic the version
// answered; a version that only received shadow copies has Shadow set and
// its figures are those of the copies.
type Stats struct {
	Version          int
	Shadow           bool // the figures are those of shadow copies
	Requests, Errors int64
	RPS, ErrorRate   float64 // requests per second over the window; Errors/Requests (0 when none)
	P50, P99         time.Duration
	// ShadowCompared and ShadowAgreed count the version's shadow answers
	// compared with the customer's; Agreement is their ratio (0 when none)
	ShadowCompared, ShadowAgreed int64
	Agreement                    float64
	// Latency is the histogram the quantiles come from (per Bounds bucket)
	Latency [NumBuckets]int64
}

// Read sums model's figures over the last window (clamped to [1s,
// MaxWindow]; the current second left out), per version. A version that
// had both live and shadow traffic in the window is reported by its live
// figures (its shadow comparisons kept).
func Read(ctx context.Context, rdb redis.Cmdable, prefix, model string, window time.Duration) (map[int]Stats, error) {
	return ReadAt(ctx, rdb, prefix, model, time.Now(), window)
}

// ReadAt is Read as of now (tests, and readers that fix their clock).
func ReadAt(ctx context.Context, rdb redis.Cmdable, prefix, model string, now time.Time, window time.Duration) (map[int]Stats, error) {
	secs := int64(window.Round(time.Second) / time.Second)
	secs = min(max(secs, 1), int64(MaxWindow/time.Second))
	end := now.Unix() // exclusive: the current second is incomplete
	cmds := make([]*redis.MapStringStringCmd, 0, secs)
	_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for s := end - secs; s < end; s++ {
			cmds = append(cmds, p.HGetAll(ctx, Key(prefix, model, time.Unix(s, 0))))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("version stats: read %s: %w", model, err)
	}
	type key struct {
		v      int
		shadow bool
	}
	sums := map[key]*Counts{}
	for _, c := range cmds {
		for field, raw := range c.Val() {
			v, shadow, name, ok := parseField(field)
			if !ok {
				continue
			}
			n, err := strconv.ParseInt(raw, 10, 64)
			if err != nil || n < 0 {
				continue
			}
			k := key{v, shadow}
			cs := sums[k]
			if cs == nil {
				cs = &Counts{}
				sums[k] = cs
			}
			switch {
			case name == "n":
				cs.Requests += n
			case name == "e":
				cs.Errors += n
			case name == "c":
				cs.Compared += n
			case name == "a":
				cs.Agreed += n
			case name[0] == 'b':
				if i, err := strconv.Atoi(name[1:]); err == nil && i >= 0 && i < NumBuckets {
					cs.Latency[i] += n
				}
			}
		}
	}
	versions := map[int]bool{}
	for k := range sums {
		versions[k.v] = true
	}
	out := make(map[int]Stats, len(versions))
	for v := range versions {
		live, shadow := sums[key{v, false}], sums[key{v, true}]
		var st Stats
		switch {
		case live != nil && (live.Requests > 0 || shadow == nil):
			st = figures(v, false, live, float64(secs))
		default:
			st = figures(v, true, shadow, float64(secs))
		}
		st.ShadowCompared, st.ShadowAgreed = 0, 0
		for _, c := range []*Counts{live, shadow} {
			if c != nil {
				st.ShadowCompared += c.Compared
				st.ShadowAgreed += c.Agreed
			}
		}
		if st.ShadowCompared > 0 {
			st.Agreement = float64(st.ShadowAgreed) / float64(st.ShadowCompared)
		}
		out[v] = st
	}
	return out, nil
}

// figures are c's Stats over a window of secs seconds.
func figures(version int, shadow bool, c *Counts, secs float64) Stats {
	st := Stats{Version: version, Shadow: shadow, Requests: c.Requests, Errors: c.Errors,
		RPS: float64(c.Requests) / secs, Latency: c.Latency}
	if c.Requests > 0 {
		st.ErrorRate = float64(c.Errors) / float64(c.Requests)
	}
	st.P50, st.P99 = Quantile(&c.Latency, 0.50), Quantile(&c.Latency, 0.99)
	return st
}

// Quantile estimates the q-quantile (0 < q <= 1) of a histogram over
// Bounds, interpolating linearly within the bucket it falls in, as
// Prometheus' histogram_quantile does; the overflow bucket gives the last
// bound. 0 for an empty histogram.
func Quantile(h *[NumBuckets]int64, q float64) time.Duration {
	var total int64
	for _, n := range h {
		total += n
	}
	if total == 0 {
		return 0
	}
	rank := q * float64(total)
	var cum int64
	for i, n := range h {
		if n == 0 || float64(cum+n) < rank {
			cum += n
			continue
		}
		if i == len(Bounds) {
			return Bounds[len(Bounds)-1]
		}
		lo := time.Duration(0)
		if i > 0 {
			lo = Bounds[i-1]
		}
		frac := (rank - float64(cum)) / float64(n)
		return lo + time.Duration(math.Round(frac*float64(Bounds[i]-lo)))
	}
	return Bounds[len(Bounds)-1]
}

// parseField splits a hash field "<version>[s]:<name>"; ok false for a
// field this contract does not define.
func parseField(f string) (version int, shadow bool, name string, ok bool) {
	vs, name, found := strings.Cut(f, ":")
	if !found || name == "" {
		return 0, false, "", false
	}
	vs, shadow = strings.CutSuffix(vs, "s")
	v, err := strconv.Atoi(vs)
	if err != nil || v < 0 {
		return 0, false, "", false
	}
	switch {
	case name == "n", name == "e", name == "c", name == "a":
	case name[0] == 'b' && len(name) > 1:
	default:
		return 0, false, "", false
	}
	return v, shadow, name, true
}
