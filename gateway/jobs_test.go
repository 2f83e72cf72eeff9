package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nlpswarm/nlpswarm/internal/customerapi"
	"github.com/nlpswarm/nlpswarm/internal/runtimeapi"
)

// jobEnv is a gateway with a sentiment model and an inference key, its job
// worker polling fast, webhooks allowed to loopback (the operator's flag).
func jobEnv(t *testing.T, cfg Config) (*env, *testRuntime, string) {
	t.Helper()
	e := newEnv(t, false)
	rt := newRuntime(t, runtimeapi.TextClassification)
	acct := e.account("acme", "")
	key, _ := e.key(acct, "inference")
	e.model("sentiment", runtimeapi.TextClassification, 0, rt)
	cfg.JobWebhookPrivate = true
	if cfg.JobBatch == 0 {
		cfg.JobBatch = 8
	}
	e.start(cfg)
	return e, rt, key
}

func jobTexts(n int) string {
	var b strings.Builder
	b.WriteString(`[`)
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `"text number %d"`, i)
	}
	b.WriteString(`]`)
	return b.String()
}

// waitJob polls the job until it has finished.
func waitJob(t *testing.T, e *env, key, id string) map[string]any {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		a := e.call(http.MethodGet, key, customerapi.JobPath(id), "")
		if a.status != http.StatusOK {
			t.Fatalf("get job: %d %s", a.status, a.raw)
		}
		if s := a.body["state"]; s == customerapi.JobSucceeded || s == customerapi.JobCancelled {
			return a.body
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("job %s did not finish", id)
	return nil
}

// items pages through a job's results (or errors) with limit per page.
func items(t *testing.T, e *env, key, path string, limit int) []customerapi.JobItem {
	t.Helper()
	var all []customerapi.JobItem
	after := -1
	for {
		a := e.call(http.MethodGet, key, fmt.Sprintf("%s?after=%d&limit=%d", path, after, limit), "")
		if a.status != http.StatusOK || a.header.Get("Content-Type") != customerapi.ContentTypeJSONL {
			t.Fatalf("results: %d %s", a.status, a.raw)
		}
		sc := bufio.NewScanner(strings.NewReader(a.raw))
		n := 0
		for sc.Scan() {
			var it customerapi.JobItem
			if err := json.Unmarshal(sc.Bytes(), &it); err != nil {
				t.Fatalf("line %q: %v", sc.Text(), err)
			}
			all = append(all, it)
			after = it.Index
			n++
		}
		if n == 0 {
			return all
		}
	}
}

// receiver is a test webhook receiver that verifies each delivery's
// signature with the account's secret, as a customer would.
type receiver struct {
	*httptest.Server
	mu     sync.Mutex
	secret string
	events []customerapi.WebhookEvent
	bad    int
	got    chan struct{}
}

func newReceiver(t *testing.T) *receiver {
	rc := &receiver{got: make(chan struct{}, 16)}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		rc.mu.Lock()
		defer rc.mu.Unlock()
		if err := customerapi.VerifyWebhook(rc.secret, r.Header.Get(customerapi.SignatureHeader), body, time.Now(), 5*time.Minute); err != nil {
			rc.bad++
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		var ev customerapi.WebhookEvent
		_ = json.Unmarshal(body, &ev)
		rc.events = append(rc.events, ev)
		rc.got <- struct{}{}
	}))
	t.Cleanup(rc.Close)
	return rc
}

// A job end to end: 202 with its URL, progress to succeeded, every text
// answered once across result pages, the webhook delivered and its
// signature verified with the account's secret.
func TestJobLifecycle(t *testing.T) {
	e, _, key := jobEnv(t, Config{})
	rc := newReceiver(t)
	sec := e.call(http.MethodGet, key, customerapi.PathWebhookSecret, "")
	if sec.status != http.StatusOK || !strings.HasPrefix(sec.body["secret"].(string), "whsec_") {
		t.Fatalf("secret: %d %s", sec.status, sec.raw)
	}
	rc.secret = sec.body["secret"].(string)
	a := e.post(key, customerapi.PathJobs, `{"model":"sentiment","task":"sentiment","webhook":"`+rc.URL+`/hook","texts":`+jobTexts(100)+`}`)
	if a.status != http.StatusAccepted {
		t.Fatalf("create: %d %s", a.status, a.raw)
	}
	id := a.body["id"].(string)
	if a.header.Get("Location") != customerapi.JobPath(id) || a.body["total"].(float64) != 100 || a.body["state"] != customerapi.JobQueued {
		t.Fatalf("create answer: %v %s", a.header, a.raw)
	}
	j := waitJob(t, e, key, id)
	if j["state"] != customerapi.JobSucceeded || j["done"].(float64) != 100 || j["failed"].(float64) != 0 {
		t.Fatalf("job %v", j)
	}
	got := items(t, e, key, customerapi.JobResultsPath(id), 7)
	if len(got) != 100 {
		t.Fatalf("%d results", len(got))
	}
	for i, it := range got {
		var la customerapi.LabelsAnswer
		if it.Index != i || json.Unmarshal(it.Result, &la) != nil || len(la.ScoredLabels) == 0 || it.Error != nil {
			t.Fatalf("result %d: %+v", i, it)
		}
	}
	if errs := items(t, e, key, customerapi.JobErrorsPath(id), 100); len(errs) != 0 {
		t.Fatalf("errors %v", errs)
	}
	select {
	case <-rc.got:
	case <-time.After(15 * time.Second):
		t.Fatalf("no webhook (bad signatures: %d)", rc.bad)
	}
	rc.mu.Lock()
	ev := rc.events[0]
	rc.mu.Unlock()
	if ev.Type != "job.succeeded" || ev.Job.ID != id || ev.Job.Done != 100 {
		t.Fatalf("event %+v", ev)
	}
	// delivered is recorded on the job
	deadline := time.Now().Add(5 * time.Second)
	for {
		j := e.call(http.MethodGet, key, customerapi.JobPath(id), "").body
		if wh, _ := j["webhook"].(map[string]any); wh["state"] == "delivered" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("webhook state %v", j["webhook"])
		}
		time.Sleep(50 * time.Millisecond)
	}
	// rotation: a new secret, which signs from then on
	rot := e.post(key, customerapi.PathWebhookRotate, "")
	if rot.status != http.StatusOK || rot.body["secret"] == rc.secret {
		t.Fatalf("rotate: %d %s", rot.status, rot.raw)
	}
	// another account sees no such job
	other, _ := e.key(e.account("other", ""), "inference")
	if a := e.call(http.MethodGet, other, customerapi.JobPath(id), ""); a.status != http.StatusNotFound || a.code() != "job_not_found" {
		t.Fatalf("other account: %d %s", a.status, a.raw)
	}
	if a := e.call(http.MethodGet, "", customerapi.JobPath(id), ""); a.status != http.StatusUnauthorized {
		t.Fatalf("no key: %d", a.status)
	}
}

// A JSONL upload (model and task in the query): strings and {"text"}
// objects, blank lines skipped.
func TestJobJSONL(t *testing.T) {
	e, _, key := jobEnv(t, Config{})
	body := "\"one\"\n{\"text\":\"two\"}\n\n\"three\"\n"
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+customerapi.PathJobs+"?model=sentiment&task=sentiment", strings.NewReader(body))
	req.Header.Set("Authorization", "Token "+key)
	req.Header.Set("Content-Type", customerapi.ContentTypeJSONL)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var j customerapi.Job
	_ = json.NewDecoder(resp.Body).Decode(&j)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted || j.Total != 3 {
		t.Fatalf("%d %+v", resp.StatusCode, j)
	}
	if got := waitJob(t, e, key, j.ID); got["done"].(float64) != 3 {
		t.Fatalf("job %v", got)
	}
}

// What a job upload refuses, each with its code.
func TestJobRefusals(t *testing.T) {
	e, _, key := jobEnv(t, Config{JobsConfig: JobsConfig{JobMaxTextBytes: 100, JobMaxBytes: 4096}})
	for _, c := range []struct {
		name, body string
		status     int
		code       string
	}{
		{"unknown model", `{"model":"nope","task":"sentiment","texts":["a"]}`, 404, "model_not_found"},
		{"unknown model after texts", `{"texts":["a"],"model":"nope","task":"sentiment"}`, 404, "model_not_found"},
		{"bad task", `{"model":"sentiment","task":"dance","texts":["a"]}`, 400, "invalid_request"},
		{"wrong task", `{"model":"sentiment","task":"entities","texts":["a"]}`, 400, "task_not_supported"},
		{"no texts", `{"model":"sentiment","task":"sentiment","texts":[]}`, 400, "invalid_request"},
		{"empty text", `{"model":"sentiment","task":"sentiment","texts":["a",""]}`, 400, "invalid_request"},
		{"not a string", `{"model":"sentiment","task":"sentiment","texts":["a",3]}`, 400, "invalid_request"},
		{"unknown field", `{"model":"sentiment","task":"sentiment","texts":["a"],"x":1}`, 400, "invalid_request"},
		{"text too large", `{"model":"sentiment","task":"sentiment","texts":["` + strings.Repeat("a", 101) + `"]}`, 413, "payload_too_large"},
		{"body too large", `{"model":"sentiment","task":"sentiment","texts":` + jobTexts(400) + `}`, 413, "payload_too_large"},
		{"trailing data", `{"model":"sentiment","task":"sentiment","texts":["a"]} x`, 400, "invalid_request"},
		{"not json", `hello`, 400, "invalid_request"},
		{"ftp webhook", `{"model":"sentiment","task":"sentiment","texts":["a"],"webhook":"ftp://x/"}`, 400, "invalid_webhook"},
	} {
		t.Run(c.name, func(t *testing.T) {
			a := e.post(key, customerapi.PathJobs, c.body)
			if a.status != c.status || a.code() != c.code {
				t.Fatalf("%d %s, want %d %s", a.status, a.raw, c.status, c.code)
			}
		})
	}
	if a := e.call(http.MethodGet, key, "/v1/jobs/job_123", ""); a.status != 404 || a.code() != "job_not_found" {
		t.Fatalf("bad id: %d %s", a.status, a.raw)
	}
	var n int
	_ = e.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM job_items`).Scan(&n)
	if n != 0 {
		t.Fatalf("%d items left by refused uploads", n)
	}
}

// Without the operator's flag a webhook to a loopback literal is refused
// at acceptance.
func TestJobWebhookPrivateRefused(t *testing.T) {
	e := newEnv(t, false)
	rt := newRuntime(t, runtimeapi.TextClassification)
	key, _ := e.key(e.account("acme", ""), "inference")
	e.model("sentiment", runtimeapi.TextClassification, 0, rt)
	e.start(Config{})
	for _, u := range []string{"http://127.0.0.1:9/h", "http://[::1]/h", "http://169.254.169.254/latest/meta-data", "http://10.0.0.1/"} {
		a := e.post(key, customerapi.PathJobs, `{"model":"sentiment","task":"sentiment","texts":["a"],"webhook":"`+u+`"}`)
		if a.status != 400 || a.code() != "invalid_webhook" {
			t.Fatalf("%s: %d %s", u, a.status, a.raw)
		}
	}
}

// Cancelling stops the work: GET says cancelled, and no more texts are
// answered after it.
func TestJobCancel(t *testing.T) {
	e, rt, key := jobEnv(t, Config{JobsConfig: JobsConfig{JobWorkers: 1}})
	rt.stub.delay.Store(int64(20 * time.Millisecond))
	a := e.post(key, customerapi.PathJobs, `{"model":"sentiment","task":"sentiment","texts":`+jobTexts(400)+`}`)
	if a.status != http.StatusAccepted {
		t.Fatalf("create: %d %s", a.status, a.raw)
	}
	id := a.body["id"].(string)
	for { // some work done first
		j := e.call(http.MethodGet, key, customerapi.JobPath(id), "").body
		if j["done"].(float64) > 0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	c := e.post(key, customerapi.JobCancelPath(id), "")
	if c.status != http.StatusOK || c.body["state"] != customerapi.JobCancelled {
		t.Fatalf("cancel: %d %s", c.status, c.raw)
	}
	time.Sleep(500 * time.Millisecond) // a batch in flight then completes nothing
	j1 := e.call(http.MethodGet, key, customerapi.JobPath(id), "").body
	time.Sleep(time.Second)
	j2 := e.call(http.MethodGet, key, customerapi.JobPath(id), "").body
	if j2["state"] != customerapi.JobCancelled || j2["done"] != j1["done"] || j2["done"].(float64) >= 400 {
		t.Fatalf("work went on after cancel: %v then %v", j1, j2)
	}
	if c := e.post(key, customerapi.JobCancelPath(id), ""); c.status != http.StatusOK {
		t.Fatalf("second cancel: %d %s", c.status, c.raw)
	}
}

// Texts the model refuses are dead-lettered with their error; the job
// still succeeds.
func TestJobDeadLetter(t *testing.T) {
	e, rt, key := jobEnv(t, Config{})
	rt.stub.fail.Store(true)
	a := e.post(key, customerapi.PathJobs, `{"model":"sentiment","task":"sentiment","texts":`+jobTexts(5)+`}`)
	id := a.body["id"].(string)
	j := waitJob(t, e, key, id)
	if j["state"] != customerapi.JobSucceeded || j["failed"].(float64) != 5 {
		t.Fatalf("job %v", j)
	}
	errs := items(t, e, key, customerapi.JobErrorsPath(id), 2)
	if len(errs) != 5 || errs[0].Error == nil || errs[0].Error.Code == "" {
		t.Fatalf("errors %+v", errs)
	}
	if c := e.post(key, customerapi.JobCancelPath(id), ""); c.status != http.StatusConflict || c.code() != "job_finished" {
		t.Fatalf("cancel a finished job: %d %s", c.status, c.raw)
	}
}

// Jobs yield to interactive traffic: no batch is claimed while this
// gateway's interactive requests in flight reach the threshold.
func TestJobPausedWhileInteractiveBusy(t *testing.T) {
	e, rt, key := jobEnv(t, Config{JobsConfig: JobsConfig{JobPauseInflight: 1}})
	rt.block()
	done := make(chan answer, 1)
	go func() { done <- e.post(key, "/v1/sentiment/sentiment", `{"text":"hold"}`) }()
	deadline := time.Now().Add(5 * time.Second)
	for e.gw.interactiveInflight() < 1 {
		if time.Now().After(deadline) {
			t.Fatal("the interactive request is not in flight")
		}
		time.Sleep(10 * time.Millisecond)
	}
	a := e.post(key, customerapi.PathJobs, `{"model":"sentiment","task":"sentiment","texts":["a","b"]}`)
	id := a.body["id"].(string)
	time.Sleep(1500 * time.Millisecond) // several polls of the worker
	if j := e.call(http.MethodGet, key, customerapi.JobPath(id), "").body; j["done"].(float64) != 0 || rt.hits.Load() != 1 {
		t.Fatalf("job worked while interactive traffic was busy: %v", j)
	}
	rt.release()
	<-done
	if j := waitJob(t, e, key, id); j["done"].(float64) != 2 {
		t.Fatalf("job %v", j)
	}
}

// A cancelled job's unprocessed texts go back to the quota: a key with a
// quota of 1,000 has a job of 600 texts cancelled early, and a second job
// of 600 is then accepted (without the refund the first job's 600 would
// leave room for 400). The refund is what was not processed: done texts
// stay charged. Cancelled at once, the charge is still this gateway's to
// settle; cancelled later, it is in Redis.
func TestJobCancelRefundsQuota(t *testing.T) {
	for _, settled := range []bool{false, true} {
		t.Run(fmt.Sprintf("settled=%v", settled), func(t *testing.T) {
			e := newEnv(t, true)
			rt := newRuntime(t, runtimeapi.TextClassification)
			acc := e.account("acme", "")
			plan := e.id(`INSERT INTO plans(name, requests_per_second, burst, monthly_quota) VALUES ('q', 100, 100, 1000) RETURNING id`)
			e.exec(`UPDATE accounts SET plan_id = $1 WHERE id = $2`, plan, acc)
			key, _ := e.key(acc, "inference")
			e.model("sentiment", runtimeapi.TextClassification, 0, rt)
			e.start(Config{JobsConfig: JobsConfig{JobWorkers: 1, JobBatch: 8, JobWebhookPrivate: true}})
			rt.stub.delay.Store(int64(50 * time.Millisecond))
			a := e.post(key, customerapi.PathJobs, `{"model":"sentiment","task":"sentiment","texts":`+jobTexts(600)+`}`)
			if a.status != http.StatusAccepted {
				t.Fatalf("first job: %d %s", a.status, a.raw)
			}
			id := a.body["id"].(string)
			if settled {
				time.Sleep(10 * DefaultLimitSync)
			}
			if b := e.post(key, customerapi.PathJobs, `{"model":"sentiment","task":"sentiment","texts":`+jobTexts(600)+`}`); b.status != http.StatusTooManyRequests || b.code() != "quota_exceeded" {
				t.Fatalf("a second job beside the first: %d %s", b.status, b.raw)
			}
			c := e.post(key, customerapi.JobCancelPath(id), "")
			if c.status != http.StatusOK {
				t.Fatalf("cancel: %d %s", c.status, c.raw)
			}
			done := int(c.body["done"].(float64) + c.body["failed"].(float64))
			b := e.post(key, customerapi.PathJobs, `{"model":"sentiment","task":"sentiment","texts":`+jobTexts(600)+`}`)
			if b.status != http.StatusAccepted {
				t.Fatalf("a second job after the cancel (%d texts of the first processed): %d %s", done, b.status, b.raw)
			}
			e.post(key, customerapi.JobCancelPath(b.body["id"].(string)), "")
		})
	}
}
