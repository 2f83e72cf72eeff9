package loadreport_test

import (
	"context"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/nlpswarm/nlpswarm/internal/loadreport"
	"github.com/nlpswarm/nlpswarm/internal/rdb/rdbtest"
)

func TestPublishReadExpire(t *testing.T) {
	rdb, prefix := rdbtest.New(t)
	ctx := context.Background()
	last := time.Now().Add(-time.Second).Truncate(time.Millisecond)
	ttl := 400 * time.Millisecond
	if err := loadreport.Publish(ctx, rdb, prefix, "gw-a", map[string]loadreport.Figures{
		"sentiment": {Inflight: 2.5, Requests: 10, Period: 1, LastRequest: last.UnixMilli()},
		"ner":       {Inflight: 0, Held: 3, Requests: 0, Period: 1},
	}, ttl); err != nil {
		t.Fatal(err)
	}
	if err := loadreport.Publish(ctx, rdb, prefix, "gw-b", map[string]loadreport.Figures{
		"sentiment": {Inflight: 1.5, Requests: 4, Period: 2, LastRequest: last.Add(-time.Minute).UnixMilli()},
	}, time.Minute); err != nil {
		t.Fatal(err)
	}
	got, err := loadreport.Read(ctx, rdb, prefix, ttl)
	if err != nil {
		t.Fatal(err)
	}
	s := got["sentiment"]
	if s.Inflight != 4 || math.Abs(s.Rate-12) > 1e-9 || s.Gateways != 2 || !s.LastRequest.Equal(last) {
		t.Fatalf("sentiment summed over two gateways: %+v", s)
	}
	if n := got["ner"]; n.Held != 3 || n.Gateways != 1 {
		t.Fatalf("ner: %+v", n)
	}
	// gw-a goes silent: its figures expire; gw-b keeps reporting
	time.Sleep(ttl + 200*time.Millisecond)
	if err := loadreport.Publish(ctx, rdb, prefix, "gw-b", map[string]loadreport.Figures{"sentiment": {Inflight: 1, Period: 1}}, ttl); err != nil {
		t.Fatal(err)
	}
	got, err = loadreport.Read(ctx, rdb, prefix, ttl)
	if err != nil {
		t.Fatal(err)
	}
	if s := got["sentiment"]; s.Inflight != 1 || s.Gateways != 1 {
		t.Fatalf("after gw-a died: %+v", s)
	}
	if _, ok := got["ner"]; ok {
		t.Fatal("a dead gateway's figures are still counted")
	}
}

func TestWake(t *testing.T) {
	rdb, prefix := rdbtest.New(t)
	ctx := context.Background()
	start := time.Now()
	if m, err := loadreport.WaitWake(ctx, rdb, prefix, time.Second); m.Model != "" || err != nil || time.Since(start) < 900*time.Millisecond {
		t.Fatalf("empty list: %+v %v after %s", m, err, time.Since(start))
	}
	got := make(chan loadreport.Wakeup, 1)
	go func() {
		m, _ := loadreport.WaitWake(ctx, rdb, prefix, 5*time.Second)
		got <- m
	}()
	time.Sleep(50 * time.Millisecond)
	sent := time.Now()
	if err := loadreport.Wake(ctx, rdb, prefix, loadreport.Wakeup{Model: "sentiment", Held: 7}); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-got:
		if m != (loadreport.Wakeup{Model: "sentiment", Held: 7}) {
			t.Fatalf("woke %+v", m)
		}
		t.Logf("wake-up delivered in %s", time.Since(sent).Round(time.Microsecond))
	case <-time.After(3 * time.Second):
		t.Fatal("the blocked reader never woke")
	}
}

// The scheduler's Redis user (deployments/images/redis/roles.acl) reads the
// figures the gateway user publishes and takes its wake-ups, and nothing
// else: it cannot write a key verdict or a quota, touch the figures' writes,
// or run server commands (issue 17 finding 4).
func TestSchedulerRedisRole(t *testing.T) {
	admin, prefix := rdbtest.New(t)
	gw, sched := rdbtest.Role(t, admin, prefix, "gateway"), rdbtest.Role(t, admin, prefix, "scheduler")
	ctx := context.Background()
	if err := loadreport.Publish(ctx, gw, prefix, "g1", map[string]loadreport.Figures{"m": {Inflight: 2, Requests: 5, Period: 1}}, time.Minute); err != nil {
		t.Fatalf("publish as the gateway user: %v", err)
	}
	if err := loadreport.Wake(ctx, gw, prefix, loadreport.Wakeup{Model: "m", Held: 1}); err != nil {
		t.Fatalf("wake as the gateway user: %v", err)
	}
	tot, err := loadreport.Read(ctx, sched, prefix, time.Minute)
	if err != nil || tot["m"].Inflight != 2 {
		t.Fatalf("read as the scheduler user: %+v %v", tot, err)
	}
	if w, err := loadreport.WaitWake(ctx, sched, prefix, time.Second); err != nil || w.Model != "m" {
		t.Fatalf("wake-up as the scheduler user: %+v %v", w, err)
	}
	for name, args := range map[string][]any{
		"a key verdict":  {"SET", prefix + "apikey:00", "x"},
		"a quota":        {"SET", prefix + "quota:1:202601", "0"},
		"a load figure":  {"HSET", prefix + "load:gw:g2", "m", "1"},
		"a wake-up":      {"LPUSH", prefix + "load:wake", "x"},
		"FLUSHALL":       {"FLUSHALL"},
		"CONFIG GET":     {"CONFIG", "GET", "*"},
		"a script":       {"EVAL", "return 1", "0"},
		"another prefix": {"HGETALL", "other:load:gw:g1"},
	} {
		if err := sched.Do(ctx, args...).Err(); err == nil || !strings.Contains(err.Error(), "NOPERM") {
			t.Errorf("%s as the scheduler user: %v, want NOPERM", name, err)
		}
	}
}
