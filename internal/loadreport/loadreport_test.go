package loadreport_test

import (
	"context"
	"math"
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
