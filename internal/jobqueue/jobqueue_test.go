package jobqueue

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nlpswarm/nlpswarm/internal/pg/pgtest"
)

// newJob makes an account and a job of n texts in batches of size.
func newJob(t *testing.T, s *Store, n, size int, webhook string) (int64, string) {
	t.Helper()
	ctx := context.Background()
	var account int64
	if err := s.DB.QueryRow(ctx, `INSERT INTO accounts(name) VALUES ('acme-'||md5(random()::text)) RETURNING id`).Scan(&account); err != nil {
		t.Fatal(err)
	}
	id := NewID()
	up, err := s.Begin(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	i := 0
	if _, err := up.Texts(ctx, func() (string, bool, error) {
		if i == n {
			return "", false, nil
		}
		i++
		return "text " + strconv.Itoa(i-1), true, nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := up.Commit(ctx, NewJob{ID: id, AccountID: account, KeyID: 1, ModelID: 1, Model: "m", Task: "sentiment", WebhookURL: webhook}, size); err != nil {
		t.Fatal(err)
	}
	return account, id
}

func answer(c *Claim) []Outcome {
	outs := make([]Outcome, len(c.Items))
	for i, it := range c.Items {
		outs[i] = Outcome{Index: it.Index, Result: json.RawMessage(fmt.Sprintf(`{"of":%q}`, it.Text))}
	}
	return outs
}

// A worker that dies holding a batch (its lease runs out) loses it to the
// next claim; when it comes back late, its completion writes nothing: every
// item is answered once, by the live worker.
func TestDeadConsumerBatchReclaimedOnce(t *testing.T) {
	s := &Store{DB: pgtest.New(t, true).Pool}
	ctx := context.Background()
	account, id := newJob(t, s, 10, 4, "")
	dead, err := s.Claim(ctx, "dead", 50*time.Millisecond)
	if err != nil || dead == nil || dead.Batch != 0 || len(dead.Items) != 4 {
		t.Fatalf("claim: %+v %v", dead, err)
	}
	time.Sleep(100 * time.Millisecond) // the lease runs out
	var live *Claim
	for live == nil || live.Batch != 0 { // (the expired batch is due behind the new ones)
		if live, err = s.Claim(ctx, "live", time.Minute); err != nil || live == nil {
			t.Fatalf("reclaim: %+v %v", live, err)
		}
		if live.Batch != 0 {
			if r, err := s.Complete(ctx, live, answer(live)); err != nil || !r.Applied {
				t.Fatalf("complete %d: %+v %v", live.Batch, r, err)
			}
		}
	}
	if live.Attempts != 2 {
		t.Fatalf("reclaim attempts %d", live.Attempts)
	}
	if r, err := s.Complete(ctx, live, answer(live)); err != nil || !r.Applied || r.Done != 4 {
		t.Fatalf("complete: %+v %v", r, err)
	}
	if r, err := s.Complete(ctx, dead, answer(dead)); err != nil || r.Applied {
		t.Fatalf("the dead worker's late completion was applied: %+v %v", r, err)
	}
	for {
		c, err := s.Claim(ctx, "live", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if c == nil {
			break
		}
		if r, err := s.Complete(ctx, c, answer(c)); err != nil || !r.Applied {
			t.Fatalf("complete %d: %+v %v", c.Batch, r, err)
		}
	}
	j, err := s.Get(ctx, account, id)
	if err != nil || j.State != StateSucceeded || j.Done != 10 || j.Failed != 0 || j.FinishedAt == nil {
		t.Fatalf("job: %+v %v", j, err)
	}
	var seen []int
	if err := s.Items(ctx, id, -1, 100, false, func(it ItemRow) error {
		seen = append(seen, it.Index)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(seen) != 10 {
		t.Fatalf("items %v", seen)
	}
	for i, x := range seen {
		if x != i {
			t.Fatalf("items %v", seen)
		}
	}
	if _, err := s.Get(ctx, account+1, id); err != ErrNotFound {
		t.Fatalf("another account's get: %v", err)
	}
}

// Many workers draining one job concurrently: no batch twice, none lost.
func TestConcurrentWorkersExactlyOnce(t *testing.T) {
	s := &Store{DB: pgtest.New(t, true).Pool}
	ctx := context.Background()
	account, id := newJob(t, s, 1000, 7, "https://example.com/hook")
	var mu sync.Mutex
	applied := map[int]int{}
	var wg sync.WaitGroup
	for w := 0; w < 6; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				c, err := s.Claim(ctx, "w", time.Minute)
				if err != nil {
					t.Error(err)
					return
				}
				if c == nil {
					return
				}
				r, err := s.Complete(ctx, c, answer(c))
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				applied[c.Batch]++
				mu.Unlock()
				_ = r
			}
		}()
	}
	wg.Wait()
	if len(applied) != 143 {
		t.Fatalf("%d batches completed, want 143", len(applied))
	}
	for b, n := range applied {
		if n != 1 {
			t.Fatalf("batch %d completed %d times", b, n)
		}
	}
	j, _ := s.Get(ctx, account, id)
	if j.State != StateSucceeded || j.Done != 1000 || j.WebhookState != WebhookPending {
		t.Fatalf("job %+v", j)
	}
	d, err := s.ClaimWebhook(ctx, time.Minute)
	if err != nil || d == nil || d.Job.ID != id || d.Attempt != 1 || len(d.Secret) != len(SecretPrefix)+64 {
		t.Fatalf("webhook claim %+v %v", d, err)
	}
	if d2, err := s.ClaimWebhook(ctx, time.Minute); err != nil || d2 != nil {
		t.Fatalf("a claimed webhook claimed again: %+v %v", d2, err)
	}
	if err := s.WebhookResult(ctx, id, true, "", 0); err != nil {
		t.Fatal(err)
	}
	if j, _ := s.Get(ctx, account, id); j.WebhookState != WebhookDelivered {
		t.Fatalf("webhook state %s", j.WebhookState)
	}
}

// Cancel stops the work: no batch is claimed after it, and a batch in
// flight completes nothing; a finished job cannot be cancelled.
func TestCancel(t *testing.T) {
	s := &Store{DB: pgtest.New(t, true).Pool}
	ctx := context.Background()
	account, id := newJob(t, s, 10, 2, "https://example.com/hook")
	c, err := s.Claim(ctx, "w", time.Minute)
	if err != nil || c == nil {
		t.Fatal(c, err)
	}
	j, err := s.Cancel(ctx, account, id)
	if err != nil || j.State != StateCancelled || j.WebhookState != WebhookPending {
		t.Fatalf("cancel: %+v %v", j, err)
	}
	if r, err := s.Complete(ctx, c, answer(c)); err != nil || r.Applied {
		t.Fatalf("in-flight batch completed after cancel: %+v %v", r, err)
	}
	if c, err := s.Claim(ctx, "w", time.Minute); err != nil || c != nil {
		t.Fatalf("claimed after cancel: %+v %v", c, err)
	}
	if j, err := s.Cancel(ctx, account, id); err != nil || j.State != StateCancelled {
		t.Fatalf("second cancel: %+v %v", j, err)
	}
	if _, err := s.Cancel(ctx, account+1, id); err != ErrNotFound {
		t.Fatalf("another account cancelled: %v", err)
	}
}

// Dead-lettered items count as failed, never fail the job, and are listed.
func TestDeadLetter(t *testing.T) {
	s := &Store{DB: pgtest.New(t, true).Pool}
	ctx := context.Background()
	account, id := newJob(t, s, 3, 3, "")
	c, _ := s.Claim(ctx, "w", time.Minute)
	outs := answer(c)
	outs[1] = Outcome{Index: 1, ErrCode: "model_rejected_input", ErrMsg: "too long"}
	if r, err := s.Complete(ctx, c, outs); err != nil || r.Done != 2 || r.Failed != 1 || !r.Finished {
		t.Fatalf("%+v %v", r, err)
	}
	j, _ := s.Get(ctx, account, id)
	if j.State != StateSucceeded || j.Failed != 1 || j.Done != 2 {
		t.Fatalf("job %+v", j)
	}
	var dead []ItemRow
	_ = s.Items(ctx, id, -1, 10, true, func(it ItemRow) error { dead = append(dead, it); return nil })
	if len(dead) != 1 || dead[0].Index != 1 || dead[0].ErrCode != "model_rejected_input" || dead[0].Result != nil {
		t.Fatalf("dead letters %+v", dead)
	}
}

func TestSecretRotate(t *testing.T) {
	s := &Store{DB: pgtest.New(t, true).Pool}
	ctx := context.Background()
	account, _ := newJob(t, s, 1, 1, "")
	a, err := s.Secret(ctx, account)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := s.Secret(ctx, account); b != a {
		t.Fatal("secret changed without rotation")
	}
	r, err := s.RotateSecret(ctx, account)
	if err != nil || r == a {
		t.Fatal(r, err)
	}
	if b, _ := s.Secret(ctx, account); b != r {
		t.Fatal("rotation not kept")
	}
}

func TestValidID(t *testing.T) {
	if !ValidID(NewID()) || ValidID("job_XYZ") || ValidID("job_"+string(make([]byte, 32))) {
		t.Fatal("ValidID")
	}
}

// Batches are claimed round-robin across jobs: a small job accepted after
// a large one is done within a few claims, not after the large job's
// every batch.
func TestClaimRoundRobin(t *testing.T) {
	s := &Store{DB: pgtest.New(t, true).Pool}
	ctx := context.Background()
	_, big := newJob(t, s, 100, 4, "") // 25 batches
	smallAccount, small := newJob(t, s, 8, 4, "")
	var order []string
	for claims := 0; ; claims++ {
		c, err := s.Claim(ctx, "w", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if c == nil {
			break
		}
		name := "big"
		if c.Job.ID == small {
			name = "small"
		} else if c.Job.ID != big {
			t.Fatalf("claimed a batch of job %s", c.Job.ID)
		}
		order = append(order, name+strconv.Itoa(c.Batch))
		if r, err := s.Complete(ctx, c, answer(c)); err != nil || !r.Applied {
			t.Fatalf("complete: %+v %v", r, err)
		}
		if claims == 3 {
			if j, err := s.Get(ctx, smallAccount, small); err != nil || j.State != StateSucceeded {
				t.Fatalf("after 4 claims (%v) the small job is %+v %v, want succeeded", order, j, err)
			}
		}
	}
	if len(order) != 27 || fmt.Sprint(order[:4]) != "[big0 small0 big1 small1]" {
		t.Fatalf("claim order %v", order)
	}
}
