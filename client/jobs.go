package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/nlpswarm/nlpswarm/internal/customerapi"
)

// Asynchronous jobs (issue 20): the gateway's wire types, as aliases.
type (
	JobRequest    = customerapi.JobRequest
	Job           = customerapi.Job
	JobItem       = customerapi.JobItem
	WebhookEvent  = customerapi.WebhookEvent
	WebhookSecret = customerapi.WebhookSecret
)

// SignatureHeader is the header of a job webhook's signature, which
// VerifyWebhook checks.
const SignatureHeader = customerapi.SignatureHeader

// VerifyWebhook checks a job webhook's signature (the SignatureHeader
// value) against its raw body under the account's secret (WebhookSecret),
// and that it was signed within tolerance of now.
func VerifyWebhook(secret, signature string, body []byte, tolerance time.Duration) error {
	return customerapi.VerifyWebhook(secret, signature, body, time.Now(), tolerance)
}

// CreateJob submits a job of up to 100,000 texts; the answer is the job,
// queued (202).
func (c *Client) CreateJob(ctx context.Context, req JobRequest) (Job, error) {
	var j Job
	body, err := json.Marshal(req)
	if err != nil {
		return j, fmt.Errorf("nlpswarm client: job request: %w", err)
	}
	err = c.call(ctx, http.MethodPost, customerapi.PathJobs, body, http.StatusAccepted, &j)
	return j, err
}

// GetJob reads a job's state and progress.
func (c *Client) GetJob(ctx context.Context, id string) (Job, error) {
	var j Job
	return j, c.call(ctx, http.MethodGet, customerapi.JobPath(id), nil, http.StatusOK, &j)
}

// CancelJob cancels a job; the answer is the job, cancelled.
func (c *Client) CancelJob(ctx context.Context, id string) (Job, error) {
	var j Job
	return j, c.call(ctx, http.MethodPost, customerapi.JobCancelPath(id), nil, http.StatusOK, &j)
}

// WaitJob polls a job every interval until it has finished (succeeded or
// cancelled) or ctx ends; progress, when not nil, sees each poll.
func (c *Client) WaitJob(ctx context.Context, id string, interval time.Duration, progress func(Job)) (Job, error) {
	for {
		j, err := c.GetJob(ctx, id)
		if err != nil {
			return j, err
		}
		if progress != nil {
			progress(j)
		}
		if j.State == customerapi.JobSucceeded || j.State == customerapi.JobCancelled {
			return j, nil
		}
		t := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return j, ctx.Err()
		case <-t.C:
		}
	}
}

// JobResults calls fn for each answered or dead-lettered text of a job, in
// index order, paging through its results (limit lines a page), one line in
// memory at a time. errorsOnly reads the dead-letter list instead.
func (c *Client) JobResults(ctx context.Context, id string, limit int, errorsOnly bool, fn func(JobItem) error) error {
	path := customerapi.JobResultsPath(id)
	if errorsOnly {
		path = customerapi.JobErrorsPath(id)
	}
	after := -1
	for {
		lines := 0
		err := c.stream(ctx, path+"?after="+strconv.Itoa(after)+"&limit="+strconv.Itoa(limit), func(r io.Reader) error {
			sc := bufio.NewScanner(r)
			sc.Buffer(make([]byte, 64<<10), int(min(c.maxBytes, 64<<20)))
			for sc.Scan() {
				var it JobItem
				if err := json.Unmarshal(sc.Bytes(), &it); err != nil {
					return fmt.Errorf("nlpswarm client: results of job %s: malformed line: %w", id, err)
				}
				after, lines = it.Index, lines+1
				if err := fn(it); err != nil {
					return err
				}
			}
			return sc.Err()
		})
		if err != nil || lines == 0 {
			return err
		}
	}
}

// WebhookSecret reads the account's webhook signing secret; rotate
// replaces it first.
func (c *Client) WebhookSecret(ctx context.Context, rotate bool) (string, error) {
	var s WebhookSecret
	method, path := http.MethodGet, customerapi.PathWebhookSecret
	if rotate {
		method, path = http.MethodPost, customerapi.PathWebhookRotate
	}
	return s.Secret, c.call(ctx, method, path, nil, http.StatusOK, &s)
}

// call sends one request of the job routes and decodes the answer of
// status want into out (no retry: the caller polls).
func (c *Client) call(ctx context.Context, method, path string, body []byte, want int, out any) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return fmt.Errorf("nlpswarm client: %w", err)
	}
	req.Header.Set("Authorization", "Token "+c.key)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("nlpswarm client: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, c.maxBytes+1))
	if err != nil || int64(len(raw)) > c.maxBytes {
		return fmt.Errorf("nlpswarm client: %s %s: answer unreadable or over %d bytes: %v", method, path, c.maxBytes, err)
	}
	if resp.StatusCode != want {
		return answerError(resp, raw)
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("nlpswarm client: %s %s: malformed answer: %w", method, path, err)
	}
	return nil
}

// stream GETs path and hands a 200's body to read.
func (c *Client) stream(ctx context.Context, path string, read func(io.Reader) error) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path, nil)
	if err != nil {
		return fmt.Errorf("nlpswarm client: %w", err)
	}
	req.Header.Set("Authorization", "Token "+c.key)
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("nlpswarm client: GET %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return answerError(resp, raw)
	}
	return read(resp.Body)
}
