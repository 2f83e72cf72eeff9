package limitkeys_test

import (
	"context"
	"testing"
	"time"

	"github.com/go-redis/redis_rate/v10"

	"github.com/nlpswarm/nlpswarm/internal/limitkeys"
	"github.com/nlpswarm/nlpswarm/internal/rdb/rdbtest"
)

func TestBacklog(t *testing.T) {
	for _, tc := range []struct {
		name          string
		tat, now, rps float64
		want          float64
	}{
		{"no limit", 110, 100, 0, 0},
		{"tat in the past: under the rate", 90, 100, 5, 0},
		{"tat now", 100, 100, 5, 0},
		{"two seconds ahead at 5/s", 102, 100, 5, 10},
		{"fractional rate rounds to a tenth", 100.37, 100, 0.5, 0.2},
	} {
		if got := limitkeys.Backlog(tc.tat, tc.now, tc.rps); got != tc.want {
			t.Errorf("%s: Backlog(%v, %v, %v) = %v, want %v", tc.name, tc.tat, tc.now, tc.rps, got, tc.want)
		}
	}
}

func TestKeyNames(t *testing.T) {
	if got := limitkeys.QuotaKey("nlpswarm:", 42, "202612"); got != "nlpswarm:quota:42:202612" {
		t.Errorf("QuotaKey = %q", got)
	}
	if got := limitkeys.RateKey("nlpswarm:", 42); got != "nlpswarm:rl:42" {
		t.Errorf("RateKey = %q", got)
	}
	if got := limitkeys.Month(time.Date(2026, 12, 31, 23, 59, 0, 0, time.FixedZone("x", -3600))); got != "202701" {
		t.Errorf("Month of 2026-12-31 23:59 -01:00 = %q, want the UTC month 202701", got)
	}
}

// TestReadWhatTheGatewayWrites counts as the gateway does (redis_rate on
// RateKey, INCRBY on QuotaKey) against the real Redis and reads it back.
func TestReadWhatTheGatewayWrites(t *testing.T) {
	rc, prefix := rdbtest.New(t)
	ctx := context.Background()
	t.Cleanup(func() { rc.Del(context.Background(), "rate:"+limitkeys.RateKey(prefix, 7)) })
	month := limitkeys.Month(time.Now())
	if err := rc.IncrBy(ctx, limitkeys.QuotaKey(prefix, 7, month), 123).Err(); err != nil {
		t.Fatal(err)
	}
	// 8 requests at once on a 2/s plan with a burst of 10: 4 s of backlog
	if _, err := redis_rate.NewLimiter(rc).AllowAtMost(ctx, limitkeys.RateKey(prefix, 7), redis_rate.Limit{Rate: 2, Period: time.Second, Burst: 10}, 8); err != nil {
		t.Fatal(err)
	}
	got, err := limitkeys.Read(ctx, rc, prefix, []limitkeys.Plan{{ID: 7, RPS: 2}, {ID: 8, RPS: 2}}, month)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].QuotaUsed != 123 || got[0].Backlog < 7 || got[0].Backlog > 8 {
		t.Errorf("key 7: %+v, want 123 counted and a backlog of about 8 requests", got)
	}
	if got[1] != (limitkeys.State{ID: 8}) {
		t.Errorf("key 8, never used: %+v, want zeros", got[1])
	}
}

func TestTokenKeyNames(t *testing.T) {
	at := time.Date(2026, 12, 31, 23, 59, 30, 0, time.FixedZone("x", -3600))
	if got := limitkeys.TokenMinuteKey("nlpswarm:", 7, limitkeys.Minute(at)); got != "nlpswarm:tpm:7:202701010059" {
		t.Errorf("TokenMinuteKey = %q, want the UTC minute", got)
	}
	if got := limitkeys.TokenMonthKey("nlpswarm:", 7, limitkeys.Month(at)); got != "nlpswarm:tokens:7:202701" {
		t.Errorf("TokenMonthKey = %q", got)
	}
}
