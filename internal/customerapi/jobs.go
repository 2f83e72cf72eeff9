package customerapi

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Routes of asynchronous jobs (issue 20).
const (
	PathJobs          = "/v1/jobs"
	PathWebhookSecret = "/v1/jobs/webhook-secret"
	PathWebhookRotate = "/v1/jobs/webhook-secret/rotate"
	// ContentTypeJSONL is the type of a JSONL upload (each line a JSON
	// string or {"text": "..."}) and of the results pages.
	ContentTypeJSONL = "application/x-ndjson"
)

// JobPath is the route of job id; JobResultsPath, JobErrorsPath and
// JobCancelPath are its results, its dead-letter list and its
// cancellation.
func JobPath(id string) string        { return PathJobs + "/" + url.PathEscape(id) }
func JobResultsPath(id string) string { return JobPath(id) + "/results" }
func JobErrorsPath(id string) string  { return JobPath(id) + "/errors" }
func JobCancelPath(id string) string  { return JobPath(id) + "/cancel" }

// JobRequest is the JSON body of POST /v1/jobs: the model and task of
// POST /v1/{model}/{task}, up to 100,000 texts, optional parameters and an
// optional webhook URL that gets the job's end (a JSONL upload gives model,
// task and webhook as query parameters instead).
type JobRequest struct {
	Model      string          `json:"model"`
	Task       string          `json:"task"`
	Texts      []string        `json:"texts"`
	Parameters json.RawMessage `json:"parameters,omitempty"`
	Webhook    string          `json:"webhook,omitempty"`
}

// Job states.
const (
	JobQueued    = "queued"
	JobRunning   = "running"
	JobSucceeded = "succeeded" // every text answered or dead-lettered (Failed)
	JobCancelled = "cancelled"
)

// Job is a job as GET /v1/jobs/{id} (and the 202 of its creation, and its
// webhook) show it. Done counts texts answered, Failed texts that failed
// for good after their retries (listed at ErrorsURL); the results are paged
// as JSONL at ResultsURL.
type Job struct {
	ID         string     `json:"id"`
	Model      string     `json:"model"`
	Task       string     `json:"task"`
	State      string     `json:"state"`
	Total      int        `json:"total"`
	Done       int        `json:"done"`
	Failed     int        `json:"failed"`
	URL        string     `json:"url"`
	ResultsURL string     `json:"results_url"`
	ErrorsURL  string     `json:"errors_url"`
	Webhook    *Webhook   `json:"webhook,omitempty"`
	CreatedAt  time.Time  `json:"created_at"`
	StartedAt  *time.Time `json:"started_at,omitempty"`
	FinishedAt *time.Time `json:"finished_at,omitempty"`
}

// Webhook is a job's webhook and the state of its delivery: none yet
// (pending), delivered, or failed after its retries.
type Webhook struct {
	URL       string `json:"url"`
	State     string `json:"state"`
	Attempts  int    `json:"attempts"`
	LastError string `json:"last_error,omitempty"`
}

// JobItem is one line of a results page: the text's index in the job and
// its answer (the task's answer for one text, as POST /v1/{model}/{task}
// gives it), or its error (a dead-lettered text).
type JobItem struct {
	Index  int             `json:"index"`
	Result json.RawMessage `json:"result,omitempty"`
	Error  *ItemError      `json:"error,omitempty"`
}

// ItemError is why a text failed for good.
type ItemError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Results pages (JSONL, one JobItem a line, in index order): ?after=<index>
// (exclusive; -1 or absent: from the first) and ?limit=<n> (1 to 10,000,
// default 1,000). The next page is after= the last line's index; an empty
// page of a finished job is the end (of one still running: nothing more
// yet).

// WebhookEvent is the body POSTed to a job's webhook when the job ends.
type WebhookEvent struct {
	Type string `json:"type"` // job.succeeded or job.cancelled
	Job  Job    `json:"job"`
}

// WebhookSecret is the answer of GET /v1/jobs/webhook-secret and its
// rotation: the account's secret that signs its webhooks.
type WebhookSecret struct {
	Secret string `json:"secret"`
}

// SignatureHeader carries a webhook's signature: "t=<unix seconds>,v1=<hex
// HMAC-SHA256 of "<t>.<body>" under the account's webhook secret>".
const SignatureHeader = "Nlpswarm-Signature"

// SignWebhook is the SignatureHeader value of body sent at t.
func SignWebhook(secret string, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + hex.EncodeToString(webhookMAC(secret, ts, body))
}

func webhookMAC(secret, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// Errors of VerifyWebhook.
var (
	ErrBadSignature = errors.New("webhook signature does not match")
	ErrStaleWebhook = errors.New("webhook timestamp outside the tolerance")
)

// VerifyWebhook checks a webhook's SignatureHeader value against body
// under secret, and that its timestamp lies within tolerance of now (a
// replayed old delivery is refused).
func VerifyWebhook(secret, header string, body []byte, now time.Time, tolerance time.Duration) error {
	var ts, sig string
	for _, part := range strings.Split(header, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			sig = v
		}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	got, herr := hex.DecodeString(sig)
	if err != nil || herr != nil || len(got) != sha256.Size {
		return ErrBadSignature
	}
	if !hmac.Equal(got, webhookMAC(secret, ts, body)) {
		return ErrBadSignature
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return ErrStaleWebhook
	}
	return nil
}
