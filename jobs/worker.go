package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/nlpswarm/nlpswarm/internal/jobqueue"
)

// CallError is why a call of the model failed: Code and Message as the
// customer API would answer them; Retryable when the same texts may well
// succeed later (no replica, 5xx, timeouts, a busy model), not when the
// model refused the input (4xx).
type CallError struct {
	Code, Message string
	Retryable     bool
}

func (e *CallError) Error() string { return e.Code + ": " + e.Message }

// Caller answers texts of job on its model and task: one result per text,
// in order (the task's answer for one text, as JSON).
type Caller func(ctx context.Context, job *jobqueue.Job, texts []string) ([]json.RawMessage, error)

// Config tunes a Worker.
type Config struct {
	Name        string        // the worker's name in the queue (claimed_by) and the logs
	Workers     int           // batches in flight at once in this process
	Lease       time.Duration // how long a claim holds a batch: longer than one call of the model with its retries
	Poll        time.Duration // how long an idle worker waits before asking the queue again
	MaxAttempts int           // claims of a batch that fails retryably before its texts are tried one by one
	// Busy, when set, says that interactive traffic needs the replicas:
	// no batch is claimed while it is true (jobs take spare capacity only)
	Busy func() bool
}

func (c *Config) defaults() {
	if c.Workers <= 0 {
		c.Workers = 2
	}
	if c.Lease <= 0 {
		c.Lease = 2 * time.Minute
	}
	if c.Poll <= 0 {
		c.Poll = 500 * time.Millisecond
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = 3
	}
}

// Worker drains the job queue: it claims due batches, calls the model,
// completes them (exactly once: jobqueue.Complete) or releases them for a
// retry with backoff.
type Worker struct {
	cfg   Config
	store *jobqueue.Store
	call  Caller
	log   *slog.Logger
	// Texts, when set, is told the texts each applied completion answered
	// or dead-lettered (the gateway's usage metering)
	Texts func(job *jobqueue.Job, done, failed int)
}

// NewWorker is a worker on store calling the model through call.
func NewWorker(cfg Config, store *jobqueue.Store, call Caller, log *slog.Logger) *Worker {
	cfg.defaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Worker{cfg: cfg, store: store, call: call, log: log}
}

// Run works until ctx ends; a batch in flight then is left to its lease
// (claimed again by another worker when it runs out).
func (w *Worker) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for i := 0; i < w.cfg.Workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.loop(ctx)
		}()
	}
	wg.Wait()
}

func (w *Worker) loop(ctx context.Context) {
	for ctx.Err() == nil {
		wait := w.cfg.Poll
		if w.cfg.Busy != nil && w.cfg.Busy() {
			wait = busyPoll // interactive traffic first: look again soon
		} else {
			worked, err := w.Step(ctx)
			if err != nil && ctx.Err() == nil {
				w.log.Warn("job worker step failed", "err", err)
			}
			if worked && err == nil {
				continue
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(jitter(wait)):
		}
	}
}

// busyPoll is how often a worker paused by interactive traffic looks
// again: spare capacity is taken as soon as it appears.
const busyPoll = 20 * time.Millisecond

// Step claims one due batch and works it; worked says whether there was
// one due.
func (w *Worker) Step(ctx context.Context) (worked bool, err error) {
	c, err := w.store.Claim(ctx, w.cfg.Name, w.cfg.Lease)
	if err != nil || c == nil {
		return false, err
	}
	// interactive traffic may have arrived since the loop looked: the call
	// waits for a gap, the claim held at most half its lease (then the
	// batch goes back, due at once, for a less busy gateway)
	for waited := time.Duration(0); w.cfg.Busy != nil && w.cfg.Busy(); waited += busyPoll {
		if waited >= w.cfg.Lease/2 || ctx.Err() != nil {
			if ctx.Err() != nil {
				return true, nil // shutting down: its lease brings it back
			}
			return true, w.store.Release(ctx, c, 0)
		}
		select {
		case <-ctx.Done():
		case <-time.After(busyPoll):
		}
	}
	// the lease bounds the work: past it the batch is another worker's
	cctx, cancel := context.WithTimeout(ctx, w.cfg.Lease)
	defer cancel()
	outs, retry := w.work(cctx, c)
	if retry != nil {
		wait := Backoff(c.Attempts)
		w.log.Info("job batch failed; retried later", "job", c.Job.ID, "batch", c.Batch, "attempt", c.Attempts, "in", wait, "err", retry)
		if ctx.Err() != nil { // shutting down: its lease brings it back
			return true, nil
		}
		return true, w.store.Release(ctx, c, wait)
	}
	res, err := w.store.Complete(ctx, c, outs)
	if err != nil {
		return true, err
	}
	if !res.Applied {
		w.log.Info("job batch completed elsewhere or cancelled; results dropped", "job", c.Job.ID, "batch", c.Batch)
		return true, nil
	}
	if w.Texts != nil {
		w.Texts(c.Job, res.Done, res.Failed)
	}
	if res.Finished {
		w.log.Info("job finished", "job", c.Job.ID, "total", c.Job.Total)
	}
	return true, nil
}

// work answers a claimed batch: its outcomes, or the error that has it
// retried later (Decide).
func (w *Worker) work(ctx context.Context, c *jobqueue.Claim) ([]jobqueue.Outcome, error) {
	if len(c.Items) == 0 { // answered by a completion that was not applied... or none left
		return nil, nil
	}
	texts := make([]string, len(c.Items))
	for i, it := range c.Items {
		texts[i] = it.Text
	}
	results, err := w.call(ctx, c.Job, texts)
	if err == nil && len(results) != len(texts) {
		err = &CallError{Code: "upstream_error", Message: fmt.Sprintf("%d answers for %d texts", len(results), len(texts)), Retryable: true}
	}
	switch Decide(err, c.Attempts, w.cfg.MaxAttempts) {
	case Answered:
		outs := make([]jobqueue.Outcome, len(texts))
		for i, it := range c.Items {
			outs[i] = jobqueue.Outcome{Index: it.Index, Result: results[i]}
		}
		return outs, nil
	case RetryBatch:
		return nil, err
	}
	// one by one: a text the model refuses (or that keeps failing) is
	// dead-lettered alone, the others answered
	outs := make([]jobqueue.Outcome, 0, len(texts))
	for i, it := range c.Items {
		r, err := w.call(ctx, c.Job, texts[i:i+1])
		if err == nil && len(r) == 1 {
			outs = append(outs, jobqueue.Outcome{Index: it.Index, Result: r[0]})
			continue
		}
		if ctx.Err() != nil {
			return nil, ctx.Err() // not the text's fault: the whole batch again later
		}
		ce := asCallError(err)
		outs = append(outs, jobqueue.Outcome{Index: it.Index, ErrCode: ce.Code, ErrMsg: ce.Message})
	}
	return outs, nil
}

func asCallError(err error) *CallError {
	var ce *CallError
	if errors.As(err, &ce) {
		return ce
	}
	if err == nil {
		return &CallError{Code: "upstream_error", Message: "no answer for the text"}
	}
	return &CallError{Code: "upstream_error", Message: err.Error(), Retryable: true}
}

// Action is what a batch's call leads to.
type Action int

const (
	Answered   Action = iota // every text has its answer
	RetryBatch               // release the batch, due again after Backoff
	OneByOne                 // try each text alone; those that fail are dead-lettered
)

// Decide is the retry policy of a batch whose call ended with err on its
// attempt-th claim: a retryable failure is retried whole until the
// attempts are spent; a refusal of the input (or the attempts spent) tries
// the texts one by one, so that one bad text fails alone.
func Decide(err error, attempt, maxAttempts int) Action {
	if err == nil {
		return Answered
	}
	if asCallError(err).Retryable && attempt < maxAttempts {
		return RetryBatch
	}
	return OneByOne
}

// Backoff is the wait before a batch's next claim after its attempt-th
// failed: 1 s doubling, at most a minute.
func Backoff(attempt int) time.Duration {
	return doubling(time.Second, time.Minute, attempt)
}

// doubling is first·2^(n-1), at most longest (n from 1).
func doubling(first, longest time.Duration, n int) time.Duration {
	d := first
	for i := 1; i < n && d < longest; i++ {
		d *= 2
	}
	return min(d, longest)
}

// jitter is d ± 20 %, so that idle workers do not ask in step.
func jitter(d time.Duration) time.Duration {
	return d - d/5 + rand.N(d*2/5+1)
}
