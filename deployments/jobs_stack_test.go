package deployments

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nlpswarm/nlpswarm/internal/customerapi"
)

// checkAsyncJobs (issue 20) on the real stack: a 20,000-text job on the
// sentiment fixture whose gateway (the job worker) is killed midway
// completes with every text answered exactly once; its webhook, received
// by a receiver on the host's side of docker_gwbridge, carries a signature
// verified with the account's secret; a cancelled job stops.
func checkAsyncJobs(t *testing.T, sh shFunc, key string) {
	const gw = "http://127.0.0.1:8080"
	// the receiver is on a private address: the operator's flag lets this
	// stack's gateways call it (off again when the test ends); a short
	// lease has a killed gateway's batches claimed again sooner
	update := func(args ...string) {
		t.Log(sh(4*time.Minute, nil, "docker", append(append([]string{"service", "update", "--detach=false", "--quiet"}, args...), "nlp_gateway")...))
	}
	update("--env-add", "NLPSWARM_JOBWEBHOOKPRIVATE=true", "--env-add", "NLPSWARM_JOBLEASE=20s")
	t.Cleanup(func() { update("--env-rm", "NLPSWARM_JOBWEBHOOKPRIVATE", "--env-rm", "NLPSWARM_JOBLEASE") })
	waitFor(t, 2*time.Minute, func() bool { return postOK(gw+"/v1/sentiment/sentiment", "Token "+key, `{"text":"ready"}`) })

	hostIP := strings.TrimSpace(sh(time.Minute, nil, "docker", "network", "inspect", "-f", "{{(index .IPAM.Config 0).Gateway}}", "docker_gwbridge"))
	ln, err := net.Listen("tcp", net.JoinHostPort(hostIP, "0"))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var secret string
	var events []customerapi.WebhookEvent
	var rawEvents []string
	bad := 0
	got := make(chan struct{}, 8)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		mu.Lock()
		defer mu.Unlock()
		if err := customerapi.VerifyWebhook(secret, r.Header.Get(customerapi.SignatureHeader), body, time.Now(), 5*time.Minute); err != nil {
			bad++
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		var ev customerapi.WebhookEvent
		_ = json.Unmarshal(body, &ev)
		events = append(events, ev)
		rawEvents = append(rawEvents, r.Header.Get(customerapi.SignatureHeader)+" "+string(body))
		got <- struct{}{}
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	hook := "http://" + ln.Addr().String() + "/hooks/nlp"

	do := func(method, path, ctype, body string, out any) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, gw+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Token "+key)
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		if out != nil {
			_ = json.Unmarshal(raw, out)
		}
		return resp.StatusCode, string(raw)
	}
	var sec customerapi.WebhookSecret
	if code, raw := do("GET", customerapi.PathWebhookSecret, "", "", &sec); code != 200 {
		t.Fatalf("webhook secret: %d %s", code, raw)
	}
	mu.Lock()
	secret = sec.Secret
	mu.Unlock()

	const n = 20_000
	texts := make([]string, n)
	for i := range texts {
		if i%2 == 0 {
			texts[i] = fmt.Sprintf("review %d: i love this movie", i)
		} else {
			texts[i] = fmt.Sprintf("review %d: dull and far too long", i)
		}
	}
	body, _ := json.Marshal(customerapi.JobRequest{Model: "sentiment", Task: "sentiment", Texts: texts, Webhook: hook})
	var job customerapi.Job
	start := time.Now()
	code, raw := do("POST", customerapi.PathJobs, "application/json", string(body), &job)
	if code != http.StatusAccepted {
		t.Fatalf("create job: %d %s", code, raw)
	}
	t.Logf("$ POST /v1/jobs (%d texts, %d bytes) → %d in %s\n%s", n, len(body), code, time.Since(start).Round(time.Millisecond), raw)
	get := func(id string) customerapi.Job {
		var j customerapi.Job
		for i := 0; i < 100; i++ { // the gateway may be restarting
			if code, _ := do("GET", customerapi.JobPath(id), "", "", &j); code == 200 {
				return j
			}
			time.Sleep(time.Second)
		}
		t.Fatalf("GET job %s kept failing", id)
		return j
	}
	// midway, the gateway (and so the job worker) is killed; Swarm starts
	// another, which claims the dead one's batches once their lease ends
	waitFor(t, 10*time.Minute, func() bool { return get(job.ID).Done >= n/4 })
	before := get(job.ID)
	progress, _ := json.Marshal(before)
	t.Logf("$ GET %s (before the kill)\n%s", customerapi.JobPath(job.ID), progress)
	ids := strings.Fields(sh(time.Minute, nil, "docker", "ps", "-q", "--filter", "label=com.docker.swarm.service.name=nlp_gateway"))
	if len(ids) == 0 {
		t.Fatal("no gateway container")
	}
	if out, err := exec.Command("docker", "kill", ids[0]).CombinedOutput(); err != nil {
		t.Fatalf("docker kill %s: %v %s", ids[0], err, out)
	}
	killed := time.Now()
	t.Logf("killed gateway container %s with %d of %d texts done", ids[0], before.Done, n)
	var final customerapi.Job
	waitFor(t, 15*time.Minute, func() bool {
		final = get(job.ID)
		return final.State == customerapi.JobSucceeded
	})
	t.Logf("job %s succeeded %s after the kill, %s after it was accepted", job.ID, time.Since(killed).Round(time.Second), time.Since(start).Round(time.Second))
	if final.Done != n || final.Failed != 0 {
		t.Fatalf("job ended %+v, want %d done, 0 failed", final, n)
	}
	// every text answered exactly once, in order, across result pages
	seen := make([]int, n)
	after := -1
	var firstLines []string
	for pages := 0; ; pages++ {
		code, raw := do("GET", fmt.Sprintf("%s?after=%d&limit=10000", customerapi.JobResultsPath(job.ID), after), "", "", nil)
		if code != 200 {
			t.Fatalf("results: %d %.300s", code, raw)
		}
		sc := bufio.NewScanner(strings.NewReader(raw))
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		lines := 0
		for sc.Scan() {
			var it customerapi.JobItem
			if err := json.Unmarshal(sc.Bytes(), &it); err != nil || it.Index < 0 || it.Index >= n || it.Error != nil {
				t.Fatalf("result line %q: %v", sc.Text(), err)
			}
			var la customerapi.LabelsAnswer
			if json.Unmarshal(it.Result, &la) != nil || len(la.ScoredLabels) == 0 {
				t.Fatalf("result %d: %s", it.Index, it.Result)
			}
			if it.Index%4999 == 0 || it.Index == n-1 { // a sample: the same answer as an interactive call
				var want customerapi.LabelsAnswer
				ib, _ := json.Marshal(map[string]string{"text": texts[it.Index]})
				if code, raw := do("POST", "/v1/sentiment/sentiment", "application/json", string(ib), &want); code != 200 ||
					len(want.ScoredLabels) != len(la.ScoredLabels) || want.ScoredLabels[0] != la.ScoredLabels[0] {
					t.Fatalf("result %d (%q): %s; interactively: %d %s", it.Index, texts[it.Index], it.Result, code, raw)
				}
			}
			if len(firstLines) < 2 {
				firstLines = append(firstLines, sc.Text())
			}
			seen[it.Index]++
			after = it.Index
			lines++
		}
		if lines == 0 {
			break
		}
	}
	for i, c := range seen {
		if c != 1 {
			t.Fatalf("text %d answered %d times", i, c)
		}
	}
	t.Logf("$ GET %s?after=-1&limit=10000 (first lines of 2 pages, every one of the %d texts exactly once)\n%s", customerapi.JobResultsPath(job.ID), n, strings.Join(firstLines, "\n"))

	select {
	case <-got:
	case <-time.After(2 * time.Minute):
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("no webhook delivery verified (%d refused signatures); job: %+v", bad, get(job.ID).Webhook)
	}
	mu.Lock()
	ev, rawEv := events[0], rawEvents[0]
	mu.Unlock()
	if ev.Type != "job.succeeded" || ev.Job.ID != job.ID || ev.Job.Done != n {
		t.Fatalf("webhook event %+v", ev)
	}
	t.Logf("webhook received at %s, signature verified:\n%s", hook, rawEv)

	// cancellation stops the work
	body, _ = json.Marshal(customerapi.JobRequest{Model: "sentiment", Task: "sentiment", Texts: texts, Webhook: hook})
	if code, raw := do("POST", customerapi.PathJobs, "application/json", string(body), &job); code != http.StatusAccepted {
		t.Fatalf("create job: %d %s", code, raw)
	}
	waitFor(t, 5*time.Minute, func() bool { return get(job.ID).Done > 0 })
	var cancelled customerapi.Job
	if code, raw := do("POST", customerapi.JobCancelPath(job.ID), "", "", &cancelled); code != 200 || cancelled.State != customerapi.JobCancelled {
		t.Fatalf("cancel: %d %s", code, raw)
	}
	time.Sleep(3 * time.Second) // batches in flight at the cancel write nothing
	a := get(job.ID)
	time.Sleep(5 * time.Second)
	b := get(job.ID)
	if b.State != customerapi.JobCancelled || b.Done != a.Done || b.Done >= n {
		t.Fatalf("work went on after the cancel: %+v then %+v", a, b)
	}
	cj, _ := json.Marshal(b)
	t.Logf("$ POST %s → cancelled at %d of %d texts; 8 s later:\n%s", customerapi.JobCancelPath(job.ID), cancelled.Done, n, cj)
	deadline := time.After(2 * time.Minute)
	for {
		mu.Lock()
		var last customerapi.WebhookEvent
		if len(events) > 0 {
			last = events[len(events)-1]
		}
		mu.Unlock()
		if last.Job.ID == job.ID && last.Type == "job.cancelled" {
			break
		}
		select {
		case <-got:
		case <-deadline:
			t.Fatal("no job.cancelled webhook")
		}
	}
}
