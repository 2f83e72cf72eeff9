package models

import (
	"context"
	"testing"
	"time"
)

// blockingPredictor (a test double for a slow model) holds each call until
// its context ends or a minute passes.
type blockingPredictor struct{ started, canceled chan struct{} }

func (p *blockingPredictor) Predict(ctx context.Context, texts []string, _ Params) ([]any, error) {
	close(p.started)
	select {
	case <-ctx.Done():
		close(p.canceled)
		return nil, ctx.Err()
	case <-time.After(time.Minute):
		return make([]any, len(texts)), nil
	}
}

// A pipeline call whose only client has gone is told to stop.
func TestBatcherStopsWorkOfGoneClient(t *testing.T) {
	p := &blockingPredictor{started: make(chan struct{}), canceled: make(chan struct{})}
	b := NewBatcher(p, BatchConfig{MaxSize: 1, Queue: 4}, NewMetrics(nil))
	run, stopRun := context.WithCancel(context.Background())
	defer stopRun()
	go b.Run(run)
	client, leave := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := b.Submit(client, []string{"a long job"}, Params{})
		done <- err
	}()
	<-p.started
	leave()
	select {
	case <-p.canceled:
	case <-time.After(5 * time.Second):
		t.Fatal("the pipeline call went on after its client left")
	}
	if err := <-done; err == nil {
		t.Error("Submit succeeded for a client that left")
	}
}

// With two clients in one call, one leaving does not stop the other's work.
func TestWhileWaitedNeedsEveryClientGone(t *testing.T) {
	a, leaveA := context.WithCancel(context.Background())
	c, leaveC := context.WithCancel(context.Background())
	defer leaveC()
	ctx, stop := whileWaited([]*job{{ctx: a}, {ctx: c}})
	defer stop()
	leaveA()
	time.Sleep(10 * time.Millisecond)
	if ctx.Err() != nil {
		t.Fatal("ended while a client still waits")
	}
	leaveC()
	select {
	case <-ctx.Done():
	case <-time.After(2 * time.Second):
		t.Fatal("did not end when every client left")
	}
}
