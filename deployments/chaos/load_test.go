package chaos

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// target is one kind of request the load sends.
type target struct {
	path string // /v1/sentiment/sentiment
	body string
}

var sentimentTarget = target{"/v1/sentiment/sentiment", `{"text":"i love this movie"}`}

// load is a closed-loop client: workers send one request after another,
// over keep-alive connections, and count what came back.
type load struct {
	ok, failed, limited atomic.Int64
	mu                  sync.Mutex
	samples             []string // the first failures, for the log
	lat                 []time.Duration
	stop                chan struct{}
	wg                  sync.WaitGroup
	started             time.Time
	elapsed             time.Duration
	workers             int
	pace                time.Duration // each worker sends at most one request per pace
	firstFail, lastFail time.Time
	failCodes           map[int]int   // failed answers by status (0: no answer)
	slowestFail         time.Duration // the longest a failed request took
	// of the failures without an answer (status 0): refused at connect
	// (nothing sent: a balancer would try another gateway) and the others
	// (sent, maybe processed: usage may count them)
	refused, noAnswer atomic.Int64
	// requests refused at connect by one gateway and sent to a standby
	// (stack.standbys), which answered or failed as counted above
	failovers atomic.Int64
}

// startLoad runs workers clients against the gateway, spread over targets,
// each sending its next request as soon as the last one is answered.
func (s *stack) startLoad(workers int, targets ...target) *load {
	return s.startPaced(workers, 0, targets...)
}

// startPaced is startLoad with each worker sending at most one request every
// pace, so that fast failures do not inflate the counts.
func (s *stack) startPaced(workers int, pace time.Duration, targets ...target) *load {
	if len(targets) == 0 {
		targets = []target{sentimentTarget}
	}
	l := &load{stop: make(chan struct{}), started: time.Now(), workers: workers, pace: pace, failCodes: map[int]int{}}
	tr := &http.Transport{MaxIdleConnsPerHost: workers, IdleConnTimeout: 90 * time.Second}
	cl := &http.Client{Transport: tr, Timeout: 40 * time.Second}
	for w := 0; w < workers; w++ {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := 0; ; i++ {
				select {
				case <-l.stop:
					return
				default:
				}
				tg := targets[(w+i)%len(targets)]
				t0 := time.Now()
				code, msg := s.inferVia(cl, tg, &l.failovers)
				d := time.Since(t0)
				if l.pace > d {
					time.Sleep(l.pace - d)
				}
				switch {
				case code == 200:
					l.ok.Add(1)
				case code == 429:
					l.limited.Add(1)
				default:
					l.failed.Add(1)
					if code == 0 && strings.Contains(msg, "connection refused") {
						l.refused.Add(1)
					} else if code == 0 {
						l.noAnswer.Add(1)
					}
					l.mu.Lock()
					if l.firstFail.IsZero() {
						l.firstFail = t0
					}
					l.lastFail = time.Now()
					l.failCodes[code]++
					l.slowestFail = max(l.slowestFail, d)
					if len(l.samples) < 8 {
						l.samples = append(l.samples, fmt.Sprintf("%s +%.1fs %s: %d %s", time.Now().Format("15:04:05.000"),
							time.Since(l.started).Seconds(), tg.path, code, msg))
					}
					l.mu.Unlock()
				}
				l.mu.Lock()
				l.lat = append(l.lat, d)
				l.mu.Unlock()
			}
		}()
	}
	return l
}

// infer sends tg to the gateway. With standby gateways (s.standbys, the
// other backends of the balancer a production deployment puts in front of
// its gateways) a connection refused by one, nothing sent, is tried on the
// next in order, as such a balancer does; failovers counts those retries
// when not nil. A request that was sent is never sent again.
func (s *stack) infer(cl *http.Client, tg target) (int, string) {
	return s.inferVia(cl, tg, nil)
}

func (s *stack) inferVia(cl *http.Client, tg target, failovers *atomic.Int64) (int, string) {
	code, msg := s.inferOn(cl, s.gateway, tg)
	for _, gw := range s.standbys {
		if code != 0 || !strings.Contains(msg, "connection refused") {
			break
		}
		if failovers != nil {
			failovers.Add(1)
		}
		code, msg = s.inferOn(cl, gw, tg)
	}
	return code, msg
}

func (s *stack) inferOn(cl *http.Client, gateway string, tg target) (int, string) {
	req, _ := http.NewRequest("POST", gateway+tg.path, strings.NewReader(tg.body))
	req.Header.Set("Authorization", "Token "+s.key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := cl.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != 200 {
		return resp.StatusCode, strings.TrimSpace(string(b))
	}
	if !bytes.HasPrefix(bytes.TrimSpace(b), []byte("{")) {
		return 599, "not JSON: " + string(b)
	}
	return 200, ""
}

// end stops the load and waits for the workers.
func (l *load) end() *load {
	close(l.stop)
	l.wg.Wait()
	l.elapsed = time.Since(l.started)
	return l
}

func (l *load) total() int64 { return l.ok.Load() + l.failed.Load() }

func (l *load) percentile(p float64) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.lat) == 0 {
		return 0
	}
	c := append([]time.Duration(nil), l.lat...)
	sort.Slice(c, func(i, j int) bool { return c[i] < c[j] })
	return c[min(len(c)-1, int(p*float64(len(c))))]
}

// describe is the load column of the report.
func (l *load) describe() string {
	return fmt.Sprintf("%d clients, %.0fs, %.0f req/s, p99 %s", l.workers, l.elapsed.Seconds(),
		float64(l.total())/l.elapsed.Seconds(), l.percentile(0.99).Round(time.Millisecond))
}

func (l *load) log(t *testing.T, what string) {
	t.Helper()
	t.Logf("%s: %d requests in %s (%.0f/s), %d failed (%.3f%%, within %s), %d rate-limited, p50 %s p99 %s max %s",
		what, l.total(), l.elapsed.Round(100*time.Millisecond), float64(l.total())/l.elapsed.Seconds(),
		l.failed.Load(), l.failedPct(), l.failWindow().Round(100*time.Millisecond), l.limited.Load(),
		l.percentile(0.5).Round(time.Millisecond), l.percentile(0.99).Round(time.Millisecond), l.percentile(1).Round(time.Millisecond))
	for _, s := range l.samples {
		t.Logf("  failure: %s", s)
	}
}

// failWindow is the time from the first failed request's start to the last
// failure's answer (0 without failures).
func (l *load) failWindow() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.firstFail.IsZero() {
		return 0
	}
	return l.lastFail.Sub(l.firstFail)
}

func (l *load) failedPct() float64 {
	return 100 * float64(l.failed.Load()) / float64(max(l.total(), 1))
}

// row is one line of the report table.
type row struct {
	scenario, load, faults, lost, notes string
}

type report struct {
	mu   sync.Mutex
	rows []row
}

func (r *report) add(x row) {
	r.mu.Lock()
	r.rows = append(r.rows, x)
	r.mu.Unlock()
}

func (r *report) markdown() string {
	var b strings.Builder
	b.WriteString("| scenario | load held | faults injected | requests lost | what was seen |\n| --- | --- | --- | --- | --- |\n")
	for _, x := range r.rows {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", x.scenario, x.load, x.faults, x.lost, x.notes)
	}
	return b.String()
}

func lostOf(l *load) string {
	return fmt.Sprintf("%d of %d (%.3f%%)", l.failed.Load(), l.total(), l.failedPct())
}

// waitFor polls cond every interval until it holds or timeout passes.
func waitFor(ctx context.Context, timeout, interval time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(interval)
	}
}
