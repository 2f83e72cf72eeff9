package client_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nlpswarm/nlpswarm/client"
	"github.com/nlpswarm/nlpswarm/gateway/gatewaytest"
)

// A job through the client: created, waited for, its results paged.
func TestJob(t *testing.T) {
	c, _ := newClient(t, shared.URL, shared.Key)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	texts := make([]string, 50)
	for i := range texts {
		texts[i] = fmt.Sprintf("text %d", i)
	}
	j, err := c.CreateJob(ctx, client.JobRequest{Model: gatewaytest.Sentiment, Task: "sentiment", Texts: texts})
	if err != nil || j.Total != 50 || j.State != "queued" {
		t.Fatalf("create: %+v %v", j, err)
	}
	polls := 0
	j, err = c.WaitJob(ctx, j.ID, 50*time.Millisecond, func(client.Job) { polls++ })
	if err != nil || j.State != "succeeded" || j.Done != 50 || polls == 0 {
		t.Fatalf("wait: %+v %v", j, err)
	}
	next := 0
	if err := c.JobResults(ctx, j.ID, 7, false, func(it client.JobItem) error {
		if it.Index != next || it.Error != nil || len(it.Result) == 0 {
			return fmt.Errorf("item %+v, want index %d", it, next)
		}
		next++
		return nil
	}); err != nil || next != 50 {
		t.Fatalf("results: %d items, %v", next, err)
	}
	if _, err := c.CancelJob(ctx, j.ID); err == nil {
		t.Fatal("cancelled a finished job")
	} else if ae := (*client.Error)(nil); !errors.As(err, &ae) || ae.Code != "job_finished" {
		t.Fatalf("cancel: %v", err)
	}
	s1, err := c.WebhookSecret(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	s2, err := c.WebhookSecret(ctx, true)
	if err != nil || s2 == s1 {
		t.Fatalf("rotate: %q %v", s2, err)
	}
}
