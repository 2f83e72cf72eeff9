package chaos

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestSoak runs mixed traffic through the gateway of the lab stack for
// NLPSWARM_SOAK_DURATION (30m) while the sentiment and ner deployments are
// scaled up and down every three minutes, and samples the resident memory of
// the gateway and of the sentiment replica that lives through it all. After
// a five-minute warm-up, the last samples must be within 10 % of the
// warm-up's. Alongside, a keep-alive connection to the gateway sits idle for
// NLPSWARM_KEEPALIVE_IDLE (16m, past the 900 s after which Swarm's IPVS
// silently drops idle connections, seed 004) and is then used again, for a
// model no other traffic touches, so that the gateway's own connection to
// that replica was idle as long. Opt-in: NLPSWARM_SOAK=1 (make soak).
func TestSoak(t *testing.T) {
	optIn(t, "NLPSWARM_SOAK", "the soak run (30 minutes)")
	duration := envDuration(t, "NLPSWARM_SOAK_DURATION", 30*time.Minute)
	idle := envDuration(t, "NLPSWARM_KEEPALIVE_IDLE", 16*time.Minute)
	warmup := min(5*time.Minute, duration/6)
	s := startStack(t, fakeGPUNode)
	for _, m := range []struct{ name, task string }{{"sentiment", "text-classification"}, {"ner", "token-classification"}, {"embeddings", "feature-extraction"}} {
		s.mustCLI("models", "create", m.name, "--task", m.task)
		s.mustCLI("models", "push", m.name, filepath.Join(s.fixtures, m.name))
	}
	s.mustCLI("deploy", "sentiment", "--replicas", "2", "--memory", "256M", "--wait", "--timeout", "5m")
	s.mustCLI("deploy", "ner", "--replicas", "1", "--memory", "256M", "--wait", "--timeout", "5m")
	s.mustCLI("deploy", "embeddings", "--replicas", "1", "--memory", "256M", "--wait", "--timeout", "5m")

	var wg sync.WaitGroup
	wg.Add(1)
	var keepAlive string
	var keepAliveErr error
	go func() { defer wg.Done(); keepAlive, keepAliveErr = s.keepAliveProbe(idle) }()

	batch := `{"texts":["the plot was dull","a wonderful cast","i would not see it again","great music","too long","loved it","meh","superb"]}`
	l := s.startPaced(4, 20*time.Millisecond,
		sentimentTarget, target{"/v1/sentiment/sentiment", batch}, target{"/v1/ner/entities", `{"text":"Alice flew from Paris to Berlin with Bob"}`})
	start := time.Now()
	type sample struct {
		at               time.Duration
		gateway, runtime int64
	}
	var samples []sample
	gwPID, rtNode, rtPID := s.memoryTargets(t)
	scaleUp := true
	nextScale := start.Add(3 * time.Minute)
	scalings := 0
	for time.Since(start) < duration {
		time.Sleep(30 * time.Second)
		gw, rt := rss(gwPID), rss(rtPID)
		if rt == 0 { // the followed replica went away: follow another one
			t.Logf("sentiment replica %d on %s gone at %s; following another", rtPID, rtNode, time.Since(start).Round(time.Second))
			_, rtNode, rtPID = s.memoryTargets(t)
			rt = rss(rtPID)
		}
		samples = append(samples, sample{time.Since(start), gw, rt})
		t.Logf("%s: %d requests, %d failed; gateway RSS %.1f MiB, sentiment replica RSS %.1f MiB",
			time.Since(start).Round(time.Second), l.total(), l.failed.Load(), float64(gw)/(1<<20), float64(rt)/(1<<20))
		if time.Now().After(nextScale) {
			// scale down removes the highest slots: the followed replica
			// (slot 1 when possible) stays
			if scaleUp {
				s.mustCLI("scale", "sentiment", "3", "--wait", "--timeout", "3m")
				s.mustCLI("scale", "ner", "2", "--wait", "--timeout", "3m")
			} else {
				s.mustCLI("scale", "sentiment", "2", "--wait", "--timeout", "3m")
				s.mustCLI("scale", "ner", "1", "--wait", "--timeout", "3m")
			}
			scaleUp = !scaleUp
			scalings++
			nextScale = time.Now().Add(3 * time.Minute)
		}
	}
	l.end()
	l.log(t, "soak")
	wg.Wait()
	if keepAliveErr != nil {
		t.Errorf("keep-alive: %v", keepAliveErr)
	} else {
		t.Logf("keep-alive: %s", keepAlive)
	}
	// memory: the mean of the samples just after warm-up against the mean of
	// the last ones
	var base, last []sample
	for _, x := range samples {
		if x.at >= warmup && x.at < warmup+2*time.Minute {
			base = append(base, x)
		}
		if x.at >= duration-2*time.Minute {
			last = append(last, x)
		}
	}
	mean := func(xs []sample, f func(sample) int64) float64 {
		sum := 0.0
		for _, x := range xs {
			sum += float64(f(x))
		}
		return sum / float64(max(len(xs), 1))
	}
	gwBase, gwLast := mean(base, func(x sample) int64 { return x.gateway }), mean(last, func(x sample) int64 { return x.gateway })
	rtBase, rtLast := mean(base, func(x sample) int64 { return x.runtime }), mean(last, func(x sample) int64 { return x.runtime })
	gwGrowth, rtGrowth := 100*(gwLast-gwBase)/gwBase, 100*(rtLast-rtBase)/rtBase
	t.Logf("soak of %s, %d scalings: gateway RSS %.1f → %.1f MiB (%+.1f %%), sentiment replica RSS %.1f → %.1f MiB (%+.1f %%)",
		duration, scalings, gwBase/(1<<20), gwLast/(1<<20), gwGrowth, rtBase/(1<<20), rtLast/(1<<20), rtGrowth)
	row := fmt.Sprintf("| soak | %s, mixed sentiment/batch/ner, %.0f req/s | scaled sentiment 2↔3 and ner 1↔2 %d times | %s | gateway RSS %.1f → %.1f MiB (%+.1f %%), runtime RSS %.1f → %.1f MiB (%+.1f %%); keep-alive: %s |",
		duration, float64(l.total())/l.elapsed.Seconds(), scalings, lostOf(l), gwBase/(1<<20), gwLast/(1<<20), gwGrowth, rtBase/(1<<20), rtLast/(1<<20), rtGrowth, keepAlive)
	t.Logf("report row:\n%s", row)
	if f := os.Getenv("NLPSWARM_CHAOS_REPORT"); f != "" {
		_ = os.WriteFile(f, []byte(row+"\n"), 0o644)
	}
	if gwGrowth > 10 || rtGrowth > 10 {
		t.Errorf("memory grew more than 10 %%: gateway %+.1f %%, runtime %+.1f %%", gwGrowth, rtGrowth)
	}
	if l.failed.Load() > 0 {
		t.Errorf("%d requests failed during the soak", l.failed.Load())
	}
}

func envDuration(t *testing.T, name string, def time.Duration) time.Duration {
	if v := os.Getenv(name); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return d
	}
	return def
}

// memoryTargets finds the gateway's process (node 1) and the oldest
// sentiment replica's process, as host pids (the lab's dockerds share the
// host's pid namespace).
func (s *stack) memoryTargets(t *testing.T) (gw int, rtNode string, rt int) {
	ids := s.containersOf(1, "nlp_gateway")
	if len(ids) != 1 {
		t.Fatalf("gateway containers on node 1: %v", ids)
	}
	out, err := s.dockerOn(1, "inspect", "-f", "{{.State.Pid}}", ids[0])
	must(t, err)
	gw, _ = strconv.Atoi(strings.TrimSpace(out))
	oldest := ""
	for _, n := range s.lab.Nodes {
		for _, id := range s.containersOf(n.Index, "nlp-sentiment") {
			out, err := s.dockerOn(n.Index, "inspect", "-f", "{{.State.StartedAt}} {{.State.Pid}}", id)
			if err != nil {
				continue
			}
			if oldest == "" || out < oldest {
				oldest, rtNode = out, n.Name
			}
		}
	}
	if f := strings.Fields(oldest); len(f) == 2 {
		rt, _ = strconv.Atoi(f[1])
	}
	return gw, rtNode, rt
}

// rss is a process's resident set in bytes (0 if gone).
func rss(pid int) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if kb, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(kb), "kB")), 10, 64)
			return n << 10
		}
	}
	return 0
}

// keepAliveProbe opens one HTTP/1.1 keep-alive connection to the gateway,
// calls the embeddings model (which no other traffic uses), leaves the
// connection idle for idle, then calls it again. The connection must either
// still work, or have been closed cleanly by the gateway (its idle timeout),
// which a client sees at once: no silent drop that leaves a request hanging,
// as Swarm's IPVS does after 900 s. Either way a request after the idle
// period is answered within two seconds, through a gateway-to-replica
// connection idle as long.
func (s *stack) keepAliveProbe(idle time.Duration) (string, error) {
	addr := strings.TrimPrefix(s.gateway, "http://")
	req := "POST /v1/embeddings/embeddings HTTP/1.1\r\nHost: " + addr + "\r\nAuthorization: Token " + s.key +
		"\r\nContent-Type: application/json\r\nContent-Length: 16\r\n\r\n{\"text\":\"hello\"}"
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	br := bufio.NewReader(c)
	call := func() (int, error) {
		if _, err := io.WriteString(c, req); err != nil {
			return 0, err
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return 0, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	if code, err := call(); err != nil || code != 200 {
		return "", fmt.Errorf("first call: %d %v", code, err)
	}
	opened := time.Now()
	// watch for the gateway closing the idle connection
	closed := make(chan time.Duration, 1)
	go func() {
		c.SetReadDeadline(time.Now().Add(idle))
		if _, err := br.Peek(1); err == io.EOF {
			closed <- time.Since(opened)
		}
		close(closed)
	}()
	time.Sleep(idle)
	closedAfter, wasClosed := <-closed
	t0 := time.Now()
	if wasClosed {
		// a client sees the close at once and dials again
		c2, err := net.Dial("tcp", addr)
		if err != nil {
			return "", err
		}
		defer c2.Close()
		c, br = c2, bufio.NewReader(c2)
	}
	code, err := call()
	took := time.Since(t0)
	if err != nil || code != 200 || took > 2*time.Second {
		return "", fmt.Errorf("call after %s idle: %d %v after %s", idle, code, err, took)
	}
	if wasClosed {
		return fmt.Sprintf("idle %s: the gateway closed it cleanly (FIN) after %s, its idle timeout; a new connection answered in %s", idle, closedAfter.Round(time.Second), took.Round(time.Millisecond)), nil
	}
	return fmt.Sprintf("idle %s: the same connection answered in %s", idle, took.Round(time.Millisecond)), nil
}
