package scheduler

import (
	"context"
	"log/slog"
	"time"

	"github.com/moby/moby/client"
)

// EventSource is the part of the Engine API the reconcile loop watches to
// wake up early (*client.Client satisfies it).
type EventSource interface {
	Events(ctx context.Context, o client.EventsListOptions) client.EventsResult
}

// swarmEvents are the events that can change a reconcile pass's inputs
// without a NOTIFY: a node's state or availability (a power cut, a drain,
// a node back), and a service's update status (a rolling update done,
// which a deferred stop-first roll waits for). Filters of one key are ORed.
var swarmEvents = client.Filters{}.Add("type", "node", "service")

// Watch backoff: after a failed or ended stream, the next try waits this
// long, doubling up to the maximum.
const (
	watchBackoffMin = 500 * time.Millisecond
	watchBackoffMax = 10 * time.Second
)

// WatchSwarm sends on wake for every Swarm node or service event, and once
// after each (re)connection (events may have been missed meanwhile), until
// ctx ends. wake should be buffered (1): a send never blocks, so a burst of
// events is one wake-up. A stream that fails or ends is opened again after
// a backoff (watchBackoffMin doubling to watchBackoffMax, back to the
// minimum once a stream delivered an event), so a restarted Docker
// engine is watched again.
func WatchSwarm(ctx context.Context, src EventSource, wake chan<- struct{}, log *slog.Logger) {
	backoff := watchBackoffMin
	for ctx.Err() == nil {
		sctx, cancel := context.WithCancel(ctx)
		res := src.Events(sctx, client.EventsListOptions{Filters: swarmEvents})
		signal(wake)
		var err error
	stream:
		for {
			select {
			case <-ctx.Done():
				break stream
			case _, ok := <-res.Messages:
				if !ok {
					break stream
				}
				backoff = watchBackoffMin
				signal(wake)
			case err = <-res.Err:
				break stream
			}
		}
		cancel()
		if ctx.Err() != nil {
			return
		}
		log.Warn("docker events stream ended; reconnecting", "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, watchBackoffMax)
	}
}

// signal sends on wake without blocking.
func signal(wake chan<- struct{}) {
	select {
	case wake <- struct{}{}:
	default:
	}
}
