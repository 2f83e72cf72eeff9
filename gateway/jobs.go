package gateway

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/nlpswarm/nlpswarm/internal/customerapi"
	"github.com/nlpswarm/nlpswarm/internal/jobqueue"
	"github.com/nlpswarm/nlpswarm/internal/limitkeys"
	"github.com/nlpswarm/nlpswarm/jobs"
)

// The asynchronous jobs' customer routes (issue 20): accept a job (its
// texts stream into Postgres, never whole in memory), show it, page its
// results and its dead-letter list as JSONL, cancel it, and read or rotate
// the account's webhook secret. The work itself is jobs_worker.go's.

// jobError is a refusal of a job upload found while its body streams.
type jobError struct {
	status    int
	code, msg string
}

func (e *jobError) Error() string { return e.msg }

func badJob(format string, a ...any) *jobError {
	return &jobError{http.StatusBadRequest, "invalid_request", fmt.Sprintf(format, a...)}
}

// capReader reads at most max bytes and fails past them.
type capReader struct {
	r   io.Reader
	n   int64
	max int64
}

func (c *capReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.n > c.max {
		return n, errBodyTooLarge
	}
	return n, err
}

// textSink takes a job's texts as they are parsed (*jobqueue.Upload).
type textSink interface {
	Texts(ctx context.Context, next func() (string, bool, error)) (int, error)
	Count() int
}

// jobUpload is what a job's upload says besides its texts.
type jobUpload struct {
	model, task, webhook string
	params               json.RawMessage
}

func (g *Gateway) createJob(w http.ResponseWriter, r *http.Request) {
	st := &reqState{r: r, start: time.Now(), model: "-"}
	defer g.finish(st)
	k, ok := g.authKey(w, r, st)
	if !ok {
		return
	}
	opts := g.jobs.cfg
	if r.ContentLength > opts.JobMaxBytes {
		w.Header().Set("Connection", "close")
		g.fail(w, st, http.StatusRequestEntityTooLarge, "payload_too_large", fmt.Sprintf("job upload over %d bytes", opts.JobMaxBytes))
		return
	}
	if !acquireKey(k, int32(g.opts.MaxInflightPerKey)) {
		w.Header()["Retry-After"] = retryAfterOne
		g.fail(w, st, http.StatusTooManyRequests, "too_many_inflight", fmt.Sprintf("this API key already has %d requests in progress", g.opts.MaxInflightPerKey))
		return
	}
	defer releaseKey(k)
	select {
	case g.jobs.uploads <- struct{}{}:
		defer func() { <-g.jobs.uploads }()
	default:
		g.m.shed.WithLabelValues("overloaded").Inc()
		w.Header()["Retry-After"] = retryAfterOne
		g.fail(w, st, http.StatusServiceUnavailable, "overloaded", "the gateway receives too many job uploads; retry")
		return
	}
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(opts.JobUploadTimeout))
	ctx, cancel := context.WithTimeout(r.Context(), opts.JobUploadTimeout)
	defer cancel()
	id := jobqueue.NewID()
	up, err := g.jobs.store.Begin(ctx, id)
	if err != nil {
		g.log.Error("job upload: cannot begin", "request_id", requestID(r), "err", err)
		g.fail(w, st, http.StatusServiceUnavailable, "unavailable", "cannot store jobs now; retry")
		return
	}
	defer up.Rollback(context.Background()) // (nothing after a commit)
	var m *Model
	var ju jobUpload
	// admitted once model and task are known: before the texts when the
	// body names them first, so a wrong model is refused without reading it
	admitted := false
	admit := func() bool {
		if admitted {
			return true
		}
		admitted = true
		var ok bool
		m, ok = g.admitJob(w, r, st, k, ju)
		return ok
	}
	body := &capReader{r: r.Body, max: opts.JobMaxBytes}
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	var jerr error
	if mt == customerapi.ContentTypeJSONL || mt == "application/jsonl" {
		q := r.URL.Query()
		ju = jobUpload{model: q.Get("model"), task: q.Get("task"), webhook: q.Get("webhook")}
		if p := q.Get("parameters"); p != "" {
			ju.params = json.RawMessage(p)
		}
		if !admit() {
			return
		}
		jerr = g.readJSONLTexts(ctx, up, body)
	} else {
		jerr = g.readJSONJob(ctx, up, body, &ju, func() bool { return admit() })
		if jerr == nil && !admitted && !admit() {
			return
		}
	}
	if jerr != nil {
		if errors.Is(jerr, errAdmitRefused) {
			return // answered by admit
		}
		g.failJobUpload(w, r, st, jerr)
		return
	}
	if m == nil { // refused by admit, answered
		return
	}
	if ju.webhook != "" { // (after the whole body: it may come last)
		if err := jobs.CheckWebhookURL(ju.webhook, g.jobs.cfg.JobWebhookPrivate); err != nil {
			g.fail(w, st, http.StatusBadRequest, "invalid_webhook", err.Error())
			return
		}
	}
	n := up.Count()
	if n == 0 {
		g.fail(w, st, http.StatusBadRequest, "invalid_request", `a job needs at least one text: "texts" (JSON) or one line per text (JSONL)`)
		return
	}
	if !g.limiter.chargeTexts(k, int64(n-1)) { // (admission counted the request's first)
		utc := time.Now().UTC()
		next := time.Date(utc.Year(), utc.Month()+1, 1, 0, 0, 0, 0, time.UTC)
		w.Header().Set("Retry-After", strconv.Itoa(int(next.Sub(utc).Seconds())+1))
		g.fail(w, st, http.StatusTooManyRequests, "quota_exceeded", fmt.Sprintf("a job of %d texts passes the monthly quota", n))
		return
	}
	nj := jobqueue.NewJob{ID: id, AccountID: k.AccountID, KeyID: k.ID, ModelID: m.ID, Model: m.Name, Task: ju.task, Parameters: ju.params, WebhookURL: ju.webhook}
	if err := up.Commit(ctx, nj, opts.JobBatch); err != nil {
		g.log.Error("job upload: cannot commit", "request_id", requestID(r), "job", id, "err", err)
		g.fail(w, st, http.StatusServiceUnavailable, "unavailable", "cannot store the job now; retry")
		return
	}
	// (usage: the texts count as they are answered, jobs_worker.go)
	j, err := g.jobs.store.Get(ctx, k.AccountID, id)
	if err != nil {
		g.fail(w, st, http.StatusServiceUnavailable, "unavailable", "job stored; cannot read it back now: GET "+customerapi.JobPath(id))
		return
	}
	g.log.Info("job accepted", "request_id", requestID(r), "job", id, "model", m.Name, "texts", n, "key", k.Prefix)
	w.Header().Set("Location", customerapi.JobPath(id))
	writeJSON(w, st, http.StatusAccepted, jobs.View(j))
}

var errAdmitRefused = errors.New("refused at admission")

// admitJob checks a job's model (admitModel: existence, visibility, rate
// limit and quota) and its task; it writes the refusal.
func (g *Gateway) admitJob(w http.ResponseWriter, r *http.Request, st *reqState, k *Key, ju jobUpload) (*Model, bool) {
	task, ok := taskRoutes[ju.task]
	if !ok {
		g.fail(w, st, http.StatusBadRequest, "invalid_request", fmt.Sprintf("a job needs a task: sentiment, classification, entities or embeddings, not %q", ju.task))
		return nil, false
	}
	if ju.model == "" {
		g.fail(w, st, http.StatusBadRequest, "invalid_request", `a job needs a "model"`)
		return nil, false
	}
	if len(ju.params) > 0 && (len(ju.params) > 64<<10 || !json.Valid(ju.params) || bytes.TrimSpace(ju.params)[0] != '{') {
		g.fail(w, st, http.StatusBadRequest, "invalid_request", `"parameters" must be an object (at most 64 KiB)`)
		return nil, false
	}
	m, ok := g.admitModel(w, r, st, k, ju.model)
	if !ok {
		return nil, false
	}
	if m.Task != task || m.GGUF {
		g.fail(w, st, http.StatusBadRequest, "task_not_supported", fmt.Sprintf("model %q does not serve %s jobs", m.Name, ju.task))
		return nil, false
	}
	return m, true
}

// readJSONJob streams a JSON job body: model, task, parameters and webhook
// are kept, the texts copied into up one by one. admit is called once
// model and task are both known (false: refused and answered).
func (g *Gateway) readJSONJob(ctx context.Context, up textSink, body io.Reader, ju *jobUpload, admit func() bool) error {
	dec := json.NewDecoder(body)
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return jsonJobErr(err, "a job is a JSON object")
	}
	seen := map[string]bool{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return jsonJobErr(err, "bad JSON")
		}
		key, _ := t.(string)
		if seen[key] {
			return badJob("field %q given twice", key)
		}
		seen[key] = true
		switch key {
		case "model", "task", "webhook":
			var s string
			if err := dec.Decode(&s); err != nil {
				return jsonJobErr(err, fmt.Sprintf("field %q: want a string", key))
			}
			switch key {
			case "model":
				ju.model = s
			case "task":
				ju.task = s
			default:
				ju.webhook = s
			}
			if ju.model != "" && ju.task != "" && !seen["texts"] && !admit() {
				return errAdmitRefused
			}
		case "parameters":
			if err := dec.Decode(&ju.params); err != nil {
				return jsonJobErr(err, `field "parameters": bad JSON`)
			}
			if bytes.Equal(ju.params, []byte("null")) {
				ju.params = nil
			}
		case "texts":
			if t, err := dec.Token(); err != nil || t != json.Delim('[') {
				return jsonJobErr(err, `"texts" must be a list of strings`)
			}
			if _, err := up.Texts(ctx, func() (string, bool, error) {
				if !dec.More() {
					return "", false, nil
				}
				var s string
				if err := dec.Decode(&s); err != nil {
					return "", false, jsonJobErr(err, fmt.Sprintf("text %d: want a string", up.Count()))
				}
				return s, true, g.checkJobText(s, up.Count())
			}); err != nil {
				return err
			}
			if _, err := dec.Token(); err != nil { // ']'
				return jsonJobErr(err, "bad JSON")
			}
		default:
			return badJob("unknown field %q: a job has model, task, texts, parameters and webhook", key)
		}
	}
	if _, err := dec.Token(); err != nil { // '}'
		return jsonJobErr(err, "bad JSON")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return jsonJobErr(err, "unexpected data after the JSON object")
	}
	return nil
}

// jsonJobErr keeps a too-large body's error (413) and words the others.
func jsonJobErr(err error, msg string) error {
	var je *jobError
	switch {
	case errors.Is(err, errBodyTooLarge), errors.As(err, &je):
		return err
	case err == nil:
		return badJob("%s", msg)
	}
	return badJob("%s: %s", msg, jsonErr(err))
}

// readJSONLTexts copies a JSONL upload's texts into up: one per line, a
// JSON string or {"text": "..."}; blank lines are skipped.
func (g *Gateway) readJSONLTexts(ctx context.Context, up textSink, body io.Reader) error {
	br := bufio.NewReaderSize(body, g.jobs.cfg.JobMaxTextBytes*2+1024) // room for a text escaped in JSON
	line := 0
	_, err := up.Texts(ctx, func() (string, bool, error) {
		for {
			b, err := br.ReadSlice('\n')
			if errors.Is(err, bufio.ErrBufferFull) {
				return "", false, &jobError{http.StatusRequestEntityTooLarge, "payload_too_large", fmt.Sprintf("line %d over %d bytes", line+1, br.Size())}
			}
			if err != nil && !errors.Is(err, io.EOF) {
				return "", false, err
			}
			line++
			b = bytes.TrimSpace(b)
			if len(b) == 0 {
				if err != nil { // EOF
					return "", false, nil
				}
				continue
			}
			var s string
			switch b[0] {
			case '"':
				if json.Unmarshal(b, &s) != nil {
					return "", false, badJob("line %d: not a JSON string", line)
				}
			case '{':
				var o struct {
					Text *string `json:"text"`
				}
				if json.Unmarshal(b, &o) != nil || o.Text == nil {
					return "", false, badJob(`line %d: want a JSON string or {"text": "..."}`, line)
				}
				s = *o.Text
			default:
				return "", false, badJob(`line %d: want a JSON string or {"text": "..."}`, line)
			}
			return s, true, g.checkJobText(s, up.Count())
		}
	})
	return err
}

// checkJobText holds a job's rules for its i-th text.
func (g *Gateway) checkJobText(s string, i int) error {
	switch {
	case i >= jobqueue.MaxTexts:
		return &jobError{http.StatusRequestEntityTooLarge, "payload_too_large", fmt.Sprintf("a job has at most %d texts", jobqueue.MaxTexts)}
	case len(s) > g.jobs.cfg.JobMaxTextBytes:
		return &jobError{http.StatusRequestEntityTooLarge, "payload_too_large", fmt.Sprintf("text %d over %d bytes", i, g.jobs.cfg.JobMaxTextBytes)}
	case s == "":
		return badJob("text %d is empty", i)
	case !utf8.ValidString(s):
		return badJob("text %d is not valid UTF-8", i)
	}
	return nil
}

func (g *Gateway) failJobUpload(w http.ResponseWriter, r *http.Request, st *reqState, err error) {
	var je *jobError
	switch {
	case errors.As(err, &je):
		if je.status == http.StatusRequestEntityTooLarge {
			w.Header().Set("Connection", "close")
		}
		g.fail(w, st, je.status, je.code, je.msg)
	case errors.Is(err, errBodyTooLarge):
		w.Header().Set("Connection", "close")
		g.fail(w, st, http.StatusRequestEntityTooLarge, "payload_too_large", fmt.Sprintf("job upload over %d bytes", g.jobs.cfg.JobMaxBytes))
	case errors.Is(err, context.DeadlineExceeded) || isTimeout(err):
		w.Header().Set("Connection", "close")
		g.fail(w, st, http.StatusRequestTimeout, "request_timeout", fmt.Sprintf("the job upload did not arrive within %s", g.jobs.cfg.JobUploadTimeout))
	default:
		g.log.Warn("job upload failed", "request_id", requestID(r), "err", err)
		g.fail(w, st, http.StatusServiceUnavailable, "unavailable", "cannot store the job now; retry")
	}
}

func isTimeout(err error) bool {
	var te interface{ Timeout() bool }
	return errors.As(err, &te) && te.Timeout()
}

func writeJSON(w http.ResponseWriter, st *reqState, status int, v any) {
	st.status = status
	w.Header()["Content-Type"] = jsonContentType
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// jobOf reads the job of the route's {id} for the caller's key; it writes
// the refusal.
func (g *Gateway) jobOf(w http.ResponseWriter, r *http.Request, st *reqState) (*Key, *jobqueue.Job, bool) {
	k, ok := g.authKey(w, r, st)
	if !ok {
		return nil, nil, false
	}
	id := r.PathValue("id")
	if !jobqueue.ValidID(id) {
		g.fail(w, st, http.StatusNotFound, "job_not_found", fmt.Sprintf("no job %q", id))
		return nil, nil, false
	}
	j, err := g.jobs.store.Get(r.Context(), k.AccountID, id)
	if errors.Is(err, jobqueue.ErrNotFound) {
		g.fail(w, st, http.StatusNotFound, "job_not_found", fmt.Sprintf("no job %q", id))
		return nil, nil, false
	}
	if err != nil {
		g.log.Warn("job read failed", "request_id", requestID(r), "err", err)
		g.fail(w, st, http.StatusServiceUnavailable, "unavailable", "cannot read jobs now; retry")
		return nil, nil, false
	}
	st.model = j.Model
	return k, j, true
}

func (g *Gateway) serveJob(w http.ResponseWriter, r *http.Request) {
	st := &reqState{r: r, start: time.Now(), model: "-"}
	defer g.finish(st)
	if _, j, ok := g.jobOf(w, r, st); ok {
		writeJSON(w, st, http.StatusOK, jobs.View(j))
	}
}

func (g *Gateway) cancelJob(w http.ResponseWriter, r *http.Request) {
	st := &reqState{r: r, start: time.Now(), model: "-"}
	defer g.finish(st)
	k, j, ok := g.jobOf(w, r, st)
	if !ok {
		return
	}
	j, err := g.jobs.store.Cancel(r.Context(), k.AccountID, j.ID)
	if err != nil {
		g.log.Warn("job cancel failed", "request_id", requestID(r), "err", err)
		g.fail(w, st, http.StatusServiceUnavailable, "unavailable", "cannot cancel jobs now; retry")
		return
	}
	if j.State != jobqueue.StateCancelled {
		g.fail(w, st, http.StatusConflict, "job_finished", fmt.Sprintf("job %s has already %s", j.ID, j.State))
		return
	}
	// the texts charged at acceptance and never processed go back to the
	// quota of the key that submitted the job, in the month it was
	// charged (usage meters only what was processed)
	if left := int64(j.Total - j.Done - j.Failed); left > 0 {
		if err := g.limiter.refundQuota(r.Context(), j.KeyID, limitkeys.Month(j.CreatedAt.UTC()), left); err != nil {
			g.log.Warn("job cancelled; its quota refund failed", "request_id", requestID(r), "job", j.ID, "texts", left, "err", err)
		}
	}
	g.log.Info("job cancelled", "request_id", requestID(r), "job", j.ID, "done", j.Done, "total", j.Total)
	writeJSON(w, st, http.StatusOK, jobs.View(j))
}

// maxResultsPage is the most items one results page lists.
const maxResultsPage = 10_000

func (g *Gateway) serveJobResults(w http.ResponseWriter, r *http.Request) {
	g.serveJobItems(w, r, false)
}
func (g *Gateway) serveJobErrors(w http.ResponseWriter, r *http.Request) { g.serveJobItems(w, r, true) }

// serveJobItems pages a job's answered items (or its dead-letter list) as
// JSONL, streamed from Postgres row by row.
func (g *Gateway) serveJobItems(w http.ResponseWriter, r *http.Request, errorsOnly bool) {
	st := &reqState{r: r, start: time.Now(), model: "-"}
	defer g.finish(st)
	q := r.URL.Query()
	after, limit := -1, 1000
	var err error
	if v := q.Get("after"); v != "" {
		if after, err = strconv.Atoi(v); err != nil || after < -1 {
			g.fail(w, st, http.StatusBadRequest, "invalid_request", `"after" must be an index (or -1)`)
			return
		}
	}
	if v := q.Get("limit"); v != "" {
		if limit, err = strconv.Atoi(v); err != nil || limit < 1 || limit > maxResultsPage {
			g.fail(w, st, http.StatusBadRequest, "invalid_request", fmt.Sprintf(`"limit" must be 1 to %d`, maxResultsPage))
			return
		}
	}
	_, j, ok := g.jobOf(w, r, st)
	if !ok {
		return
	}
	bw := bufio.NewWriterSize(w, 32<<10)
	started := false
	var line []byte
	err = g.jobs.store.Items(r.Context(), j.ID, after, limit, errorsOnly, func(it jobqueue.ItemRow) error {
		if !started {
			started = true
			st.status = http.StatusOK
			w.Header()["Content-Type"] = []string{customerapi.ContentTypeJSONL}
			w.WriteHeader(http.StatusOK)
		}
		ji := customerapi.JobItem{Index: it.Index, Result: it.Result}
		if it.ErrCode != "" {
			ji.Result, ji.Error = nil, &customerapi.ItemError{Code: it.ErrCode, Message: it.ErrMsg}
		}
		var err error
		if line, err = json.Marshal(ji); err != nil {
			return err
		}
		_, _ = bw.Write(line)
		return bw.WriteByte('\n')
	})
	if err != nil && !started {
		g.log.Warn("job results read failed", "request_id", requestID(r), "err", err)
		g.fail(w, st, http.StatusServiceUnavailable, "unavailable", "cannot read the job's results now; retry")
		return
	}
	if !started { // nothing (yet) past after: an empty page
		st.status = http.StatusOK
		w.Header()["Content-Type"] = []string{customerapi.ContentTypeJSONL}
		w.WriteHeader(http.StatusOK)
		return
	}
	_ = bw.Flush()
}

func (g *Gateway) serveWebhookSecret(w http.ResponseWriter, r *http.Request) {
	g.webhookSecret(w, r, false)
}
func (g *Gateway) rotateWebhookSecret(w http.ResponseWriter, r *http.Request) {
	g.webhookSecret(w, r, true)
}

// webhookSecret answers the caller's account's webhook signing secret,
// rotated first when asked.
func (g *Gateway) webhookSecret(w http.ResponseWriter, r *http.Request, rotate bool) {
	st := &reqState{r: r, start: time.Now(), model: "-"}
	defer g.finish(st)
	k, ok := g.authKey(w, r, st)
	if !ok {
		return
	}
	var sec string
	var err error
	if rotate {
		sec, err = g.jobs.store.RotateSecret(r.Context(), k.AccountID)
	} else {
		sec, err = g.jobs.store.Secret(r.Context(), k.AccountID)
	}
	if err != nil {
		g.log.Warn("webhook secret failed", "request_id", requestID(r), "err", err)
		g.fail(w, st, http.StatusServiceUnavailable, "unavailable", "cannot read the webhook secret now; retry")
		return
	}
	if rotate {
		g.log.Info("webhook secret rotated", "request_id", requestID(r), "account", k.AccountID, "key", k.Prefix)
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, st, http.StatusOK, customerapi.WebhookSecret{Secret: sec})
}
