package scheduler

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/api/types/events"
	"github.com/moby/moby/client"

	"github.com/nlpswarm/nlpswarm/internal/pg/pgtest"
)

// fakeEvents serves one scripted stream per Events call: the messages,
// then the error (nil: the stream stays open until the context ends).
type fakeEvents struct {
	mu      sync.Mutex
	streams []fakeStream
	calls   int
	filters []client.Filters
}

type fakeStream struct {
	msgs []events.Message
	err  error
}

func (f *fakeEvents) Events(ctx context.Context, o client.EventsListOptions) client.EventsResult {
	f.mu.Lock()
	var s fakeStream
	if f.calls < len(f.streams) {
		s = f.streams[f.calls]
	}
	f.calls++
	f.filters = append(f.filters, o.Filters)
	f.mu.Unlock()
	msgs, errs := make(chan events.Message), make(chan error, 1)
	go func() {
		for _, m := range s.msgs {
			select {
			case msgs <- m:
			case <-ctx.Done():
				return
			}
		}
		if s.err != nil {
			errs <- s.err
			return
		}
		<-ctx.Done()
		errs <- ctx.Err()
	}()
	return client.EventsResult{Messages: msgs, Err: errs}
}

func (f *fakeEvents) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

// WatchSwarm wakes the loop on each node or service event, coalescing a
// burst, and opens the stream again after it fails or ends, until its
// context ends.
func TestWatchSwarm(t *testing.T) {
	node := events.Message{Type: events.NodeEventType, Action: events.ActionUpdate, Actor: events.Actor{ID: "n1", Attributes: map[string]string{"state.new": "down"}}}
	src := &fakeEvents{streams: []fakeStream{
		{err: errors.New("connection refused")},                 // the engine not up yet
		{msgs: []events.Message{node, node, node}, err: io.EOF}, // a burst, then the engine restarts
		{msgs: []events.Message{node}},                          // open until the end
	}}
	ctx, cancel := context.WithCancel(context.Background())
	wake := make(chan struct{}, 1)
	done := make(chan struct{})
	go func() { WatchSwarm(ctx, src, wake, slog.New(slog.DiscardHandler)); close(done) }()
	deadline := time.After(10 * time.Second)
	wakes := 0
	for src.count() < 3 || wakes < 3 {
		select {
		case <-wake:
			wakes++
		case <-deadline:
			t.Fatalf("after 10 s: %d streams opened, %d wake-ups", src.count(), wakes)
		case <-time.After(10 * time.Millisecond):
		}
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("WatchSwarm did not end with its context")
	}
	if n := src.count(); n != 3 {
		t.Errorf("%d streams opened, want 3 (one per failure, none after the end)", n)
	}
	for _, f := range src.filters {
		if got := f["type"]; len(f) != 1 || len(got) != 2 || !got["node"] || !got["service"] {
			t.Errorf("filters %v, want type node and service", f)
		}
	}
	// a full wake channel never blocks the watcher
	signal(wake)
	signal(wake)
}

// loopDocker is the Engine API of an empty swarm that counts the reconcile
// loop's passes (one node list per pass); what a pass with nothing desired
// does not call is left unimplemented.
type loopDocker struct {
	Docker
	mu     sync.Mutex
	passes int
}

func (d *loopDocker) NodeList(context.Context, client.NodeListOptions) (client.NodeListResult, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.passes++
	return client.NodeListResult{}, nil
}

func (d *loopDocker) ServiceList(context.Context, client.ServiceListOptions) (client.ServiceListResult, error) {
	return client.ServiceListResult{}, nil
}

func (d *loopDocker) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.passes
}

// The reconcile loop runs a pass on a Swarm event, not only on NOTIFY and
// its resync timer (an hour here): a node lost is re-placed as soon as
// Swarm marks it down.
func TestLoopWakesOnSwarmEvents(t *testing.T) {
	db := pgtest.New(t, true)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	leader, err := AcquireLease(ctx, db.Pool, LeaseConfig{Holder: "loop-test"})
	if err != nil {
		t.Fatal(err)
	}
	defer leader.Release()
	docker := &loopDocker{}
	stream := &chanEvents{msgs: make(chan events.Message)}
	r := &Reconciler{DB: db.Pool, Docker: docker, Events: stream, Log: slog.New(slog.DiscardHandler)}
	done := make(chan error, 1)
	go func() { done <- r.Loop(ctx, leader, time.Hour) }()
	waitPasses := func(n int, what string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for docker.count() < n {
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d passes after 5 s, want %d", what, docker.count(), n)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitPasses(1, "the first pass")
	time.Sleep(300 * time.Millisecond) // the wake-up of the stream's opening, if it came after the first pass
	before := docker.count()
	select {
	case stream.msgs <- events.Message{Type: "node", Action: "update", Actor: events.Actor{ID: "n2", Attributes: map[string]string{"state.new": "down"}}}:
	case <-time.After(5 * time.Second):
		t.Fatal("the loop does not watch Swarm's events")
	}
	waitPasses(before+1, "after a node event")
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Loop: %v", err)
	}
}

// chanEvents is one events stream fed by the test, open until its context
// ends.
type chanEvents struct{ msgs chan events.Message }

func (c *chanEvents) Events(ctx context.Context, _ client.EventsListOptions) client.EventsResult {
	out, errs := make(chan events.Message), make(chan error, 1)
	go func() {
		for {
			select {
			case m := <-c.msgs:
				select {
				case out <- m:
				case <-ctx.Done():
					errs <- ctx.Err()
					return
				}
			case <-ctx.Done():
				errs <- ctx.Err()
				return
			}
		}
	}()
	return client.EventsResult{Messages: out, Err: errs}
}
