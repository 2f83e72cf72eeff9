package scheduler

import (
	"bytes"
	"context"
	"io"
	"sync"
	"time"

	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"

	"github.com/nlpswarm/nlpswarm/internal/coldstart"
	"github.com/nlpswarm/nlpswarm/internal/deployment"
)

// Each replica's cold start, as `nlpswarm status MODEL` shows it, comes from
// two honest sources: Swarm's task (created = scheduled; running = its first
// healthcheck passed, which is also when tasks.<service> DNS lists it) and
// the runtime's own "cold start" log line (process start, artifact fetch with
// bytes and cache hit, load, warm-up, ready), read once through the Engine
// API's task logs when the scheduler first sees the task running. They land
// in replica_starts and in nlpswarm_scheduler_replica_start_seconds.

// maxLogReads bounds the log reads of one status pass.
const maxLogReads = 8

type startSeen struct {
	tries int
	done  bool
	pass  int
}

type startTracker struct {
	mu   sync.Mutex
	pass int
	seen map[string]*startSeen
}

// recordStarts stores the cold start of the running tasks of d not recorded
// yet (a few attempts each: a stand-in without the log line, or a log driver
// without reads, records Swarm's times only).
func (r *Reconciler) recordStarts(ctx context.Context, d deployment.Desired, tasks []swarm.Task, nodes map[string]string) {
	r.starts.mu.Lock()
	if r.starts.seen == nil {
		r.starts.seen = map[string]*startSeen{}
	}
	r.starts.pass++
	pass := r.starts.pass
	var todo []swarm.Task
	for _, t := range tasks {
		if t.DesiredState != swarm.TaskStateRunning || t.Status.State != swarm.TaskStateRunning {
			continue
		}
		s := r.starts.seen[t.ID]
		if s == nil {
			s = &startSeen{}
			r.starts.seen[t.ID] = s
		}
		s.pass = pass
		if !s.done && s.tries < 3 && len(todo) < maxLogReads {
			s.tries++
			todo = append(todo, t)
		}
	}
	for id, s := range r.starts.seen { // tasks long gone
		if pass-s.pass > 1000 {
			delete(r.starts.seen, id)
		}
	}
	r.starts.mu.Unlock()

	for _, t := range todo {
		rep, found := r.readColdStart(ctx, t.ID)
		node := nodes[t.NodeID]
		if node == "" {
			node = t.NodeID
		}
		if err := r.storeStart(ctx, d.Key(), t, node, rep, found); err != nil {
			r.Log.Warn("record cold start", "model", d.Model, "task", t.ID, "err", err)
			continue
		}
		if !found {
			continue
		}
		r.starts.mu.Lock()
		r.starts.seen[t.ID].done = true
		r.starts.mu.Unlock()
		running := t.Status.Timestamp
		r.Log.Info("replica cold start", "model", d.Model, "task", t.ID, "slot", t.Slot, "node", node,
			"scheduled_to_started_s", rep.Started.Sub(t.CreatedAt).Seconds(), "fetch_s", rep.FetchSeconds,
			"artifact_bytes", rep.ArtifactBytes, "cached", rep.Cached, "load_s", rep.LoadSeconds, "warmup_s", rep.WarmupSeconds,
			"ready_to_running_s", running.Sub(rep.Ready).Seconds(), "total_s", running.Sub(t.CreatedAt).Seconds())
		if r.Metrics != nil {
			h := r.Metrics.coldStart
			h.WithLabelValues("scheduled_to_started").Observe(rep.Started.Sub(t.CreatedAt).Seconds())
			h.WithLabelValues("started_to_ready").Observe(rep.TotalSeconds())
			h.WithLabelValues("ready_to_running").Observe(running.Sub(rep.Ready).Seconds())
			h.WithLabelValues("total").Observe(running.Sub(t.CreatedAt).Seconds())
		}
	}
}

// readColdStart finds the runtime's cold-start line in a task's log.
func (r *Reconciler) readColdStart(ctx context.Context, taskID string) (coldstart.Report, bool) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	rc, err := r.Docker.TaskLogs(ctx, taskID, client.TaskLogsOptions{ShowStdout: true, ShowStderr: true, Tail: "all"})
	if err != nil {
		return coldstart.Report{}, false
	}
	defer rc.Close()
	var buf bytes.Buffer
	// the runtime logs a handful of lines before it is ready; 1 MiB is plenty
	_, _ = stdcopy.StdCopy(&buf, &buf, io.LimitReader(rc, 1<<20))
	return coldstart.FindInLog(&buf)
}

func (r *Reconciler) storeStart(ctx context.Context, model string, t swarm.Task, node string, rep coldstart.Report, found bool) error {
	running := t.Status.Timestamp
	s := deployment.ReplicaStart{TaskID: t.ID, Slot: t.Slot, Node: node, ScheduledAt: t.CreatedAt, RunningAt: &running}
	if found {
		s.StartedAt, s.ReadyAt = &rep.Started, &rep.Ready
		s.FetchSeconds, s.LoadSeconds, s.WarmupSeconds = &rep.FetchSeconds, &rep.LoadSeconds, &rep.WarmupSeconds
		s.ArtifactBytes, s.ArtifactCached = &rep.ArtifactBytes, &rep.Cached
	}
	return deployment.RecordStart(ctx, r.DB, model, s)
}
