package versionstats_test

import (
	"context"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/nlpswarm/nlpswarm/internal/rdb/rdbtest"
	"github.com/nlpswarm/nlpswarm/internal/versionstats"
)

func TestBucket(t *testing.T) {
	for _, c := range []struct {
		d    time.Duration
		want int
	}{
		{0, 0}, {time.Millisecond, 0}, {time.Millisecond + 1, 1}, {2 * time.Millisecond, 1},
		{4 * time.Millisecond, 3}, {time.Second, 17}, {60 * time.Second, len(versionstats.Bounds) - 1},
		{time.Hour, len(versionstats.Bounds)},
	} {
		if got := versionstats.Bucket(c.d); got != c.want {
			t.Errorf("Bucket(%s) = %d, want %d", c.d, got, c.want)
		}
	}
}

func TestQuantile(t *testing.T) {
	var h [versionstats.NumBuckets]int64
	if q := versionstats.Quantile(&h, 0.99); q != 0 {
		t.Fatalf("empty: %s", q)
	}
	// 98 requests at 4 ms (bucket (3,5]), 2 at 400 ms (bucket (300,500])
	h[versionstats.Bucket(4*time.Millisecond)] = 98
	h[versionstats.Bucket(400*time.Millisecond)] = 2
	if p50 := versionstats.Quantile(&h, 0.5); p50 <= 3*time.Millisecond || p50 > 5*time.Millisecond {
		t.Errorf("p50 = %s, want within (3ms, 5ms]", p50)
	}
	if p99 := versionstats.Quantile(&h, 0.99); p99 <= 300*time.Millisecond || p99 > 500*time.Millisecond {
		t.Errorf("p99 = %s, want within (300ms, 500ms]", p99)
	}
	h = [versionstats.NumBuckets]int64{}
	h[versionstats.NumBuckets-1] = 1
	if q := versionstats.Quantile(&h, 0.5); q != versionstats.Bounds[len(versionstats.Bounds)-1] {
		t.Errorf("overflow: %s", q)
	}
}

func counts(reqs, errs int64, d time.Duration) versionstats.Counts {
	var c versionstats.Counts
	for i := int64(0); i < reqs; i++ {
		c.Add(d, i < errs)
	}
	return c
}

// Two gateways' figures add up, per version; shadow copies stay apart from
// live traffic; the current second and seconds out of the window are left
// out; the rates are over the window.
func TestPublishRead(t *testing.T) {
	rdb, prefix := rdbtest.New(t)
	ctx := context.Background()
	now := time.Unix(time.Now().Unix(), 0).Add(500 * time.Millisecond)
	stable, canary := versionstats.Series{Model: "sentiment", Version: 3}, versionstats.Series{Model: "sentiment", Version: 4}
	shadow := versionstats.Series{Model: "ner", Version: 9, Shadow: true}
	// gateway A, 2 s ago
	a := map[versionstats.Series]versionstats.Counts{stable: counts(90, 0, 4*time.Millisecond), canary: counts(10, 5, 40*time.Millisecond)}
	if err := versionstats.Publish(ctx, rdb, prefix, now.Add(-2*time.Second), a); err != nil {
		t.Fatal(err)
	}
	// gateway B, 1 s ago; a shadow model's figures too
	sh := counts(20, 1, 8*time.Millisecond)
	sh.Compared, sh.Agreed = 20, 19
	b := map[versionstats.Series]versionstats.Counts{stable: counts(90, 2, 4*time.Millisecond), canary: counts(10, 0, 40*time.Millisecond),
		shadow: sh, {Model: "ner", Version: 8}: counts(20, 0, 6*time.Millisecond)}
	if err := versionstats.Publish(ctx, rdb, prefix, now.Add(-time.Second), b); err != nil {
		t.Fatal(err)
	}
	// this second (incomplete: left out) and 30 s ago (outside a 10 s window)
	for _, at := range []time.Time{now, now.Add(-30 * time.Second)} {
		if err := versionstats.Publish(ctx, rdb, prefix, at, map[versionstats.Series]versionstats.Counts{stable: counts(1000, 1000, time.Second)}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := versionstats.ReadAt(ctx, rdb, prefix, "sentiment", now, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("versions: %+v", got)
	}
	s, c := got[3], got[4]
	if s.Version != 3 || s.Shadow || s.Requests != 180 || s.Errors != 2 || math.Abs(s.RPS-18) > 1e-9 || math.Abs(s.ErrorRate-2.0/180) > 1e-9 {
		t.Errorf("stable: %+v", s)
	}
	if s.P50 <= 3*time.Millisecond || s.P99 > 5*time.Millisecond {
		t.Errorf("stable latency: p50 %s p99 %s, want within (3ms, 5ms]", s.P50, s.P99)
	}
	if c.Requests != 20 || c.Errors != 5 || c.ErrorRate != 0.25 || c.P99 <= 30*time.Millisecond || c.P99 > 50*time.Millisecond {
		t.Errorf("canary: %+v", c)
	}
	got, err = versionstats.ReadAt(ctx, rdb, prefix, "ner", now, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	n9, n8 := got[9], got[8]
	if !n9.Shadow || n9.Requests != 20 || n9.Errors != 1 || n9.ShadowCompared != 20 || n9.ShadowAgreed != 19 || n9.Agreement != 0.95 {
		t.Errorf("shadow version: %+v", n9)
	}
	if n8.Shadow || n8.Requests != 20 || n8.ShadowCompared != 0 {
		t.Errorf("stable of the shadowed model: %+v", n8)
	}
	// a longer window takes the old second in
	got, err = versionstats.ReadAt(ctx, rdb, prefix, "sentiment", now, time.Minute)
	if err != nil || got[3].Requests != 1180 || got[3].Errors != 1002 {
		t.Fatalf("a minute: %+v %v", got[3], err)
	}
	// keys expire
	ttl, err := rdb.TTL(ctx, versionstats.Key(prefix, "sentiment", now.Add(-time.Second))).Result()
	if err != nil || ttl <= versionstats.MaxWindow || ttl > versionstats.KeyTTL {
		t.Fatalf("TTL %s %v, want within (MaxWindow, KeyTTL]", ttl, err)
	}
	// nothing: an empty map
	if got, err := versionstats.ReadAt(ctx, rdb, prefix, "nothing", now, time.Minute); err != nil || len(got) != 0 {
		t.Fatalf("no figures: %+v %v", got, err)
	}
}

// A version with live traffic and shadow copies in one window (a shadow
// turned into a canary) is reported by its live figures, with the
// comparisons of its shadow copies.
func TestLiveAndShadowInOneWindow(t *testing.T) {
	rdb, prefix := rdbtest.New(t)
	ctx := context.Background()
	now := time.Now()
	sh := counts(50, 50, time.Millisecond)
	sh.Compared, sh.Agreed = 50, 10
	if err := versionstats.Publish(ctx, rdb, prefix, now.Add(-3*time.Second), map[versionstats.Series]versionstats.Counts{{Model: "m", Version: 2, Shadow: true}: sh}); err != nil {
		t.Fatal(err)
	}
	if err := versionstats.Publish(ctx, rdb, prefix, now.Add(-time.Second), map[versionstats.Series]versionstats.Counts{{Model: "m", Version: 2}: counts(10, 0, time.Millisecond)}); err != nil {
		t.Fatal(err)
	}
	got, err := versionstats.ReadAt(ctx, rdb, prefix, "m", now, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if v := got[2]; v.Shadow || v.Requests != 10 || v.Errors != 0 || v.ShadowCompared != 50 || v.Agreement != 0.2 {
		t.Fatalf("%+v", v)
	}
}

// Fields that are not the contract's (another writer, a corrupted value)
// are skipped, not trusted.
func TestReadSkipsForeignFields(t *testing.T) {
	rdb, prefix := rdbtest.New(t)
	ctx := context.Background()
	now := time.Now()
	key := versionstats.Key(prefix, "m", now.Add(-time.Second))
	rdb.HSet(ctx, key, "1:n", "5", "1:e", "-3", "1:b999", "7", "x:n", "1", "1:zz", "1", "1:b0", "nope", "1:b2", "5", "junk", "1")
	got, err := versionstats.ReadAt(ctx, rdb, prefix, "m", now, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if v := got[1]; len(got) != 1 || v.Requests != 5 || v.Errors != 0 || v.Latency[2] != 5 {
		t.Fatalf("%+v", got)
	}
}

// The gateway's Redis user writes the figures, the scheduler's and the
// apiserver's read them (deployments/images/redis/roles.acl), and the
// readers cannot write them.
func TestRedisRoles(t *testing.T) {
	admin, prefix := rdbtest.New(t)
	gw := rdbtest.Role(t, admin, prefix, "gateway")
	ctx := context.Background()
	now := time.Now()
	s := versionstats.Series{Model: "m", Version: 1}
	if err := versionstats.Publish(ctx, gw, prefix, now.Add(-time.Second), map[versionstats.Series]versionstats.Counts{s: counts(4, 1, time.Millisecond)}); err != nil {
		t.Fatalf("publish as the gateway user: %v", err)
	}
	for _, role := range []string{"scheduler", "apiserver"} {
		r := rdbtest.Role(t, admin, prefix, role)
		got, err := versionstats.ReadAt(ctx, r, prefix, "m", now, 5*time.Second)
		if err != nil || got[1].Requests != 4 || got[1].Errors != 1 {
			t.Fatalf("read as the %s user: %+v %v", role, got, err)
		}
		err = versionstats.Publish(ctx, r, prefix, now, map[versionstats.Series]versionstats.Counts{s: counts(1, 0, 0)})
		if err == nil || !strings.Contains(err.Error(), "NOPERM") {
			t.Errorf("publish as the %s user: %v, want NOPERM", role, err)
		}
	}
}

// FuzzParseField: no field Redis hands back makes parseField panic, and
// what it accepts names a series and a figure of the contract.
func FuzzParseField(f *testing.F) {
	for _, s := range []string{"1:n", "7s:b12", "3:a", "x:n", ":", "s:n", "1:b", "-1:n", "1s:zz", "99999999999999999999:n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, field string) {
		v, _, name, ok := versionstats.ParseField(field)
		if ok && (v < 0 || name == "" || !strings.Contains("neca", name[:1]) && name[0] != 'b') {
			t.Fatalf("%q: accepted as %d %q", field, v, name)
		}
	})
}
