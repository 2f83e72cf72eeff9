package gateway

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// BenchmarkPinned measures each proxy alone on one pinned CPU, as a
// deployment runs it (issue 22):
//
//	go test -run '^$' -bench Pinned -benchtime 1x -timeout 30m ./gateway/
//
// (make bench-pinned). One core (NLPSWARM_PINNED_CPUS, "0,1": the proxy's,
// then the load's) runs the proxy under test and nothing else of the
// benchmark: nginx with one worker, or the gateway (GOMAXPROCS=1) on each
// front end: net/http's server, fasthttp's (--frontend=fast) and, as a
// benchmark-only prototype, nbio's (nbio_bench_test.go); and, as the
// ceiling of any gateway on fasthttp, a bare fasthttp proxy with none of
// the gateway's work (bare-fast; bare-adapter and bare-nethttp on request,
// bare_bench_test.go). NLPSWARM_PINNED_FRONTENDS picks them
// (nethttp,fast,nbio,bare-fast by default); FRONTEND@BINARY runs another
// build of this package's tests (go test -c at another commit) as a
// gateway on that front end, to compare two versions of the gateway in the
// same rounds. The other core runs
// the load generator (wrk, or this process's own loader when wrk is not
// installed) and the upstream, an nginx answering every POST at once with a
// text-classification output; Postgres and Redis run where the system puts
// them. Every connection is kept alive on both sides; 64 client connections.
// Everything it runs runs at nice -20 (pinnedNice), in a session (and so a
// scheduler autogroup) of its own at nice -20, so that other work on a
// shared machine takes little of those two cores.
// The gateways run the customer task API with a key on a plan (key check,
// catalogue, local token bucket settled with Redis every 50 ms, usage).
//
// Each round gives every proxy in turn a saturated run (NLPSWARM_PINNED_SECONDS,
// default 5) and then a paced run (NLPSWARM_PINNED_RATE req/s, default 2000,
// well below every proxy's capacity, two seconds) through it while the same
// paced load goes straight to the upstream: the added latency is the
// proxied p50/p99 less the direct one of the same two seconds. A proxy's
// req/s is compared with nginx's of the same round; the medians over the
// rounds (NLPSWARM_PINNED_ROUNDS, default 5) are reported. CPU time per
// request comes from /proc/PID/stat for the proxy, the upstream and wrk.
// Any answer other than 2xx fails the benchmark.
//
// Each round's line says how busy each core was (CPU per request × req/s):
// a proxy core under about 90 % means the proxy was not what limited that
// run (the load core, or other work on the machine, was), and the ratio of
// CPU per request (nginx's / the gateway's) is then the better measure of
// what one core serves.
func BenchmarkPinned(b *testing.B) {
	nginxBin := findNginx()
	if nginxBin == "" {
		b.Skip("nginx not installed (apt-get install nginx-light): it is both the reference and the upstream")
	}
	proxyCPU, loadCPU := 0, 1
	if s := os.Getenv("NLPSWARM_PINNED_CPUS"); s != "" {
		if _, err := fmt.Sscanf(s, "%d,%d", &proxyCPU, &loadCPU); err != nil {
			b.Fatalf("NLPSWARM_PINNED_CPUS=%q: want PROXY,LOAD (CPU numbers)", s)
		}
	}
	rounds, seconds, rate := envInt("NLPSWARM_PINNED_ROUNDS", 5), envInt("NLPSWARM_PINNED_SECONDS", 5), envInt("NLPSWARM_PINNED_RATE", 2000)
	const conns = 64
	pinnedNice = -20
	if s := os.Getenv("NLPSWARM_PINNED_NICE"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			b.Fatalf("NLPSWARM_PINNED_NICE=%q: want a nice value", s)
		}
		pinnedNice = n
	}
	defer func() { pinnedNice = 0 }()
	if err := unix.Setpriority(unix.PRIO_PROCESS, 0, pinnedNice); err != nil {
		b.Logf("cannot run at nice %d (%v): at the default", pinnedNice, err)
		pinnedNice = 0
	}
	if pinnedNice != 0 {
		// With the kernel's autogroups (sched_autogroup_enabled), nice
		// weighs only within a session: CPU time is first shared between
		// sessions. A session of its own (which its children join), at
		// the same nice, then.
		_, _ = unix.Setsid()
		if err := os.WriteFile("/proc/self/autogroup", []byte(strconv.Itoa(pinnedNice)), 0); err != nil && !errors.Is(err, os.ErrNotExist) {
			b.Logf("autogroup nice %d: %v", pinnedNice, err)
		}
	}
	if err := pinProcess(os.Getpid(), loadCPU); err != nil {
		b.Skipf("cannot pin to CPU %d: %v", loadCPU, err)
	}
	defer debug.SetGCPercent(debug.SetGCPercent(2000)) // the paced loader's collections, off the latencies
	wrk, _ := exec.LookPath("wrk")
	if wrk == "" {
		b.Log("wrk not installed (apt-get install wrk): saturated runs use this process's loader, which costs more CPU per request")
	}

	upAddr, upPIDs := startNginxConf(b, nginxBin, loadCPU, func(dir, listen string) string {
		return nginxHead(dir, "1") + fmt.Sprintf(`  server {
    listen %s;
    keepalive_requests 1000000;
    location / {
      default_type application/json;
      return 200 '%s';
    }
  }
}
`, listen, string(benchPrediction))
	})

	type target struct {
		name, path, body string
		addr             string
		pids             func() []int
		rps, cpu         []float64 // per round
		upCPU, wrkCPU    []float64
		added50, added99 []float64 // µs, per round
		non2xx, sockErrs int64
	}
	var targets []*target
	proxyAddr, proxyPIDs := startNginxConf(b, nginxBin, proxyCPU, func(dir, listen string) string {
		return nginxHead(dir, "1") + nginxProxy(upAddr, listen)
	})
	targets = append(targets, &target{name: "nginx", path: "/predict", body: `{"texts":["hello"]}`, addr: proxyAddr, pids: proxyPIDs})

	e := newEnv(b, true)
	acc := e.account("bench", "")
	plan := e.id(`INSERT INTO plans(name, requests_per_second, burst, monthly_quota) VALUES ('bench', 1000000, 1000000, 0) RETURNING id`)
	e.exec(`UPDATE accounts SET plan_id = $1 WHERE id = $2`, plan, acc)
	key, _ := e.key(acc, "inference")
	e.model("sentiment", "text-classification", 0)
	fronts := []string{FrontendNetHTTP, FrontendFast, "nbio", "bare-fast"}
	if s := os.Getenv("NLPSWARM_PINNED_FRONTENDS"); s != "" {
		fronts = strings.Split(s, ",")
	}
	for _, f := range fronts {
		addr, pids := startGatewayProcessOn(b, e, upAddr, f, proxyCPU)
		name := "gateway-" + f
		if front, bin, ok := strings.Cut(f, "@"); ok { // another build (startGatewayProcessOn)
			name = "gateway-" + front + "@" + filepath.Base(bin)
		}
		targets = append(targets, &target{name: name, path: "/v1/sentiment/sentiment", body: `{"text":"hello"}`, addr: addr, pids: pids})
	}
	auth := "Token " + key // every target gets the same headers, nginx included
	direct := rawRequest(upAddr, "/predict", `{"texts":["hello"]}`, auth)

	fmt.Printf("pinned: proxy on CPU %d; load generator (%s) and upstream on CPU %d; %d connections; nice %d; load average at start: %s\n",
		proxyCPU, pick(wrk != "", "wrk", "in-process loader"), loadCPU, conns, pinnedNice, loadAvg())
	dur := time.Duration(seconds) * time.Second
	b.ResetTimer()
	for round := 1; round <= rounds; round++ {
		line := fmt.Sprintf("round %d (load %s):", round, loadAvg())
		for _, t := range targets {
			req := rawRequest(t.addr, t.path, t.body, auth)
			u0, s0 := procCPU(t.pids())
			uu0, us0 := procCPU(upPIDs())
			var n, bad, sockErrs int64
			var rps, wrkCPU float64
			if wrk != "" {
				n, bad, sockErrs, rps, wrkCPU = runWrk(b, wrk, loadCPU, conns, dur, t.addr, t.path, t.body, auth)
			} else {
				r := rawLoad(t.addr, req, conns, 0, 0, dur)
				if r.err != nil {
					b.Fatalf("%s: %v", t.name, r.err)
				}
				n, bad, rps = int64(r.n), r.non2xx, r.rps
			}
			u1, s1 := procCPU(t.pids())
			uu1, us1 := procCPU(upPIDs())
			t.rps = append(t.rps, rps)
			t.cpu = append(t.cpu, float64((u1-u0+s1-s0).Microseconds())/float64(n))
			t.upCPU = append(t.upCPU, float64((uu1-uu0+us1-us0).Microseconds())/float64(n))
			t.wrkCPU = append(t.wrkCPU, wrkCPU/float64(n)*1e6)
			t.non2xx += bad
			t.sockErrs += sockErrs

			// paced: through the proxy and straight to the upstream, at once
			var base rawResult
			done := make(chan struct{})
			go func() { defer close(done); base = rawLoad(upAddr, direct, conns, float64(rate), 2*rate, 0) }()
			p := rawLoad(t.addr, req, conns, float64(rate), 2*rate, 0)
			<-done
			for _, r := range []rawResult{base, p} {
				if r.err != nil {
					b.Fatalf("%s paced: %v", t.name, r.err)
				}
			}
			t.non2xx += p.non2xx + base.non2xx
			t.added50 = append(t.added50, float64((p.p50 - base.p50).Microseconds()))
			t.added99 = append(t.added99, float64((p.p99 - base.p99).Microseconds()))
			line += fmt.Sprintf(" %s %.0f req/s %.1f µs CPU (proxy core %.0f%% busy; upstream %.1f, wrk %.1f: load core %.0f%%), added p50 %+.0f p99 %+.0f µs;",
				t.name, rps, t.cpu[round-1], t.cpu[round-1]*rps/1e4, t.upCPU[round-1], t.wrkCPU[round-1],
				(t.upCPU[round-1]+t.wrkCPU[round-1])*rps/1e4, t.added50[round-1], t.added99[round-1])
		}
		fmt.Println(line)
	}
	b.StopTimer()
	fmt.Printf("load average at the end: %s\n", loadAvg())

	nginx := targets[0]
	for _, t := range targets {
		if t.non2xx > 0 {
			b.Errorf("%s: %d answers other than 2xx", t.name, t.non2xx)
		}
		if t.sockErrs > 0 { // (a machine too busy for wrk's 2 s timeout)
			fmt.Printf("%s: %d socket errors or timeouts in wrk's runs\n", t.name, t.sockErrs)
		}
		b.ReportMetric(median(t.rps), t.name+"-req/s")
		b.ReportMetric(median(t.cpu), t.name+"-cpu-µs/req")
		b.ReportMetric(median(t.added50), t.name+"-added-p50-µs")
		b.ReportMetric(median(t.added99), t.name+"-added-p99-µs")
		summary := fmt.Sprintf("%-14s median %6.0f req/s, CPU µs/req %.1f (upstream %.1f, wrk %.1f), added p50 %.0f µs p99 %.0f µs, non-2xx %d, socket errors %d",
			t.name, median(t.rps), median(t.cpu), median(t.upCPU), median(t.wrkCPU), median(t.added50), median(t.added99), t.non2xx, t.sockErrs)
		if t != nginx {
			ratios := make([]float64, len(t.rps))
			for i := range ratios {
				ratios[i] = t.rps[i] / nginx.rps[i]
			}
			b.ReportMetric(median(ratios), t.name+"-vs-nginx")
			summary += fmt.Sprintf("; vs nginx per round %.2f, median %.2f; nginx's CPU per request / its: %.2f", ratios, median(ratios), median(nginx.cpu)/median(t.cpu))
		}
		fmt.Println(summary)
	}
}

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

func pick[T any](c bool, a, b T) T {
	if c {
		return a
	}
	return b
}

func loadAvg() string {
	data, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// benchPrediction is the upstream's answer: one text-classification output.
var benchPrediction = []byte(`{"model":"m","task":"text-classification","outputs":[[{"label":"POSITIVE","score":0.9},{"label":"NEGATIVE","score":0.1}]]}`)

// pinProcess pins every thread of pid to cpu, at pinnedNice (threads
// created later inherit both from their creator).
func pinProcess(pid, cpu int) error {
	var set unix.CPUSet
	set.Set(cpu)
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return err
	}
	for _, t := range tasks {
		tid, _ := strconv.Atoi(t.Name())
		if err := unix.SchedSetaffinity(tid, &set); err != nil {
			return fmt.Errorf("thread %d: %w", tid, err)
		}
		if pinnedNice != 0 {
			if err := unix.Setpriority(unix.PRIO_PROCESS, tid, pinnedNice); err != nil {
				return fmt.Errorf("thread %d: nice %d: %w", tid, pinnedNice, err)
			}
		}
	}
	return nil
}

// pinnedNice is the nice value of everything BenchmarkPinned runs
// (NLPSWARM_PINNED_NICE, default -20): on a machine shared with other
// work, the measured processes then get nearly all of their cores (a
// weight 87 times the default's) without starving the rest, as real-time
// priorities would. 0 leaves them at the default.
var pinnedNice = 0

// pinnedCommand runs argv on cpu only, at pinnedNice (taskset and nice
// exec it: every thread inherits both).
func pinnedCommand(cpu int, argv ...string) *exec.Cmd {
	args := append([]string{"-c", strconv.Itoa(cpu)}, argv...)
	if pinnedNice != 0 {
		return exec.Command("nice", append([]string{"-n", strconv.Itoa(pinnedNice), "taskset"}, args...)...)
	}
	return exec.Command("taskset", args...)
}

func findNginx() string {
	if p, err := exec.LookPath("nginx"); err == nil {
		return p
	}
	for _, p := range []string{"/usr/sbin/nginx", "/usr/local/sbin/nginx"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

// nginxHead is an nginx configuration's start: workers worker processes,
// no logs, its files in dir; the caller closes the http block.
func nginxHead(dir, workers string) string {
	return fmt.Sprintf(`daemon off;
master_process on;
worker_processes %[2]s;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path %[1]s/body;
  proxy_temp_path %[1]s/proxy;
  fastcgi_temp_path %[1]s/fastcgi;
  uwsgi_temp_path %[1]s/uwsgi;
  scgi_temp_path %[1]s/scgi;
`, dir, workers)
}

// nginxProxy closes an nginx configuration with a plain reverse proxy on
// listen to upstream, kept alive on both sides.
func nginxProxy(upstream, listen string) string {
	return fmt.Sprintf(`  keepalive_requests 1000000;
  upstream runtime { server %s; keepalive 128; }
  server {
    listen %s;
    location / {
      proxy_pass http://runtime;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
`, upstream, listen)
}

// startNginxConf runs nginx with the configuration conf(dir, listen)
// returns, pinned to cpu (-1: anywhere); it returns its address and its
// processes.
func startNginxConf(b *testing.B, bin string, cpu int, conf func(dir, listen string) string) (string, func() []int) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	dir := b.TempDir()
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf(dir, addr)), 0o644); err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(bin, "-c", path, "-p", dir)
	if cpu >= 0 {
		cmd = pinnedCommand(cpu, bin, "-c", path, "-p", dir)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
	})
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return addr, func() []int { return append([]int{cmd.Process.Pid}, childPIDs(cmd.Process.Pid)...) }
		}
		if time.Now().After(deadline) {
			b.Fatalf("nginx did not start: %s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// runWrk drives addr with wrk on cpu for dur: requests done, answers other
// than 2xx, socket errors (wrk's timeout is 2 s), req/s and wrk's CPU seconds.
func runWrk(b *testing.B, wrk string, cpu, conns int, dur time.Duration, addr, path, body, auth string) (n, bad, sockErrs int64, rps, cpuSeconds float64) {
	script := filepath.Join(b.TempDir(), "post.lua")
	lua := fmt.Sprintf("wrk.method = \"POST\"\nwrk.body = %q\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.headers[\"Authorization\"] = %q\n", body, auth)
	if err := os.WriteFile(script, []byte(lua), 0o644); err != nil {
		b.Fatal(err)
	}
	cmd := pinnedCommand(cpu, wrk, "-t1", "-c"+strconv.Itoa(conns),
		"-d"+strconv.Itoa(int(dur.Seconds()))+"s", "-s", script, "http://"+addr+path)
	out, err := cmd.CombinedOutput()
	if err != nil {
		b.Fatalf("wrk: %v: %s", err, out)
	}
	cpuSeconds = (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds()
	s := string(out)
	if m := regexp.MustCompile(`(\d+) requests in`).FindStringSubmatch(s); m != nil {
		n, _ = strconv.ParseInt(m[1], 10, 64)
	}
	if m := regexp.MustCompile(`Requests/sec:\s+([\d.]+)`).FindStringSubmatch(s); m != nil {
		rps, _ = strconv.ParseFloat(m[1], 64)
	}
	if m := regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`).FindStringSubmatch(s); m != nil {
		bad, _ = strconv.ParseInt(m[1], 10, 64)
	}
	if m := regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`).FindStringSubmatch(s); m != nil {
		for _, v := range m[1:] {
			x, _ := strconv.ParseInt(v, 10, 64)
			sockErrs += x
		}
	}
	if n == 0 || rps == 0 {
		b.Fatalf("wrk: no result: %s", s)
	}
	return n, bad, sockErrs, rps, cpuSeconds
}

// rawRequest is one POST's bytes, as wrk sends it.
func rawRequest(addr, path, body, auth string) []byte {
	return fmt.Appendf(nil, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nAuthorization: %s\r\nContent-Length: %d\r\n\r\n%s",
		path, addr, auth, len(body), body)
}

type rawResult struct {
	n        int
	rps      float64
	p50, p99 time.Duration
	non2xx   int64
	err      error
}

// rawLoad sends req over conns keep-alive connections to addr: n requests
// at rate per second in all (request i is due i/rate seconds after the
// start), or, with rate 0, as many as go through in dur. It reads answers
// with a Content-Length only; the latency of each is from its write to
// the end of its answer.
func rawLoad(addr string, req []byte, conns int, rate float64, n int, dur time.Duration) rawResult {
	cs := make([]net.Conn, conns)
	for i := range cs {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return rawResult{err: err}
		}
		defer c.Close()
		cs[i] = c
	}
	if n == 0 {
		n = 1 << 24
	}
	lat := make([]time.Duration, n)
	var next, done, bad atomic.Int64
	var firstErr error
	var errOnce sync.Once
	start := time.Now()
	stop := start.Add(dur)
	var wg sync.WaitGroup
	for _, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			br := bufio.NewReaderSize(c, 16<<10)
			for {
				i := next.Add(1) - 1
				if i >= int64(n) || (dur > 0 && time.Now().After(stop)) {
					return
				}
				if rate > 0 {
					if d := time.Until(start.Add(time.Duration(float64(i) / rate * float64(time.Second)))); d > 0 {
						time.Sleep(d)
					}
				}
				t0 := time.Now()
				if _, err := c.Write(req); err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
				status, err := readRawAnswer(br)
				if err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
				lat[i] = time.Since(t0)
				done.Add(1)
				if status < 200 || status > 299 {
					bad.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	k := int(done.Load())
	if firstErr != nil {
		return rawResult{err: firstErr}
	}
	lat = slices.DeleteFunc(lat[:min(len(lat), int(next.Load()))], func(d time.Duration) bool { return d == 0 })
	if len(lat) == 0 {
		return rawResult{err: errors.New("no answer")}
	}
	slices.Sort(lat)
	return rawResult{n: k, rps: float64(k) / el.Seconds(), p50: lat[len(lat)/2], p99: lat[len(lat)*99/100], non2xx: bad.Load()}
}

// readRawAnswer reads one answer with a Content-Length and returns its status.
func readRawAnswer(br *bufio.Reader) (int, error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		return 0, err
	}
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return 0, fmt.Errorf("bad status line %q", line)
	}
	status, err := strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, fmt.Errorf("bad status line %q", line)
	}
	length, chunked := -1, false
	for {
		line, err = br.ReadSlice('\n')
		if err != nil {
			return 0, err
		}
		if len(line) <= 2 {
			break
		}
		name, value, _ := bytes.Cut(line, []byte(":"))
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			length, err = strconv.Atoi(string(bytes.TrimSpace(value)))
			if err != nil {
				return 0, fmt.Errorf("bad Content-Length %q", value)
			}
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			chunked = bytes.Contains(value, []byte("chunked"))
		}
	}
	switch {
	case chunked:
		for {
			line, err = br.ReadSlice('\n')
			if err != nil {
				return 0, err
			}
			size, err := strconv.ParseInt(string(bytes.TrimSpace(line)), 16, 32)
			if err != nil {
				return 0, fmt.Errorf("bad chunk size %q", line)
			}
			if _, err := br.Discard(int(size) + 2); err != nil {
				return 0, err
			}
			if size == 0 {
				return status, nil
			}
		}
	case length < 0:
		return 0, errors.New("answer without Content-Length")
	}
	_, err = br.Discard(length)
	return status, err
}
