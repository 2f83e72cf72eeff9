package gateway

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nlpswarm/nlpswarm/internal/httpserver"
	"github.com/nlpswarm/nlpswarm/internal/pg"
	"github.com/nlpswarm/nlpswarm/internal/rdb"
	"github.com/nlpswarm/nlpswarm/internal/rdb/rdbtest"
)

// BenchmarkProxy compares the gateway with nginx as a plain reverse proxy in
// front of the same trivial upstream, driven by the same load generator with
// 64 keep-alive connections.
//
//	go test -run '^$' -bench Proxy -benchtime 150000x ./gateway/
//
// Every proxy is started once; then, round after round (proxyRounds), each
// in turn gets its share of the b.N requests as fast as they go, and a paced
// run (pacedRate, two seconds) through it at the same time as one straight
// to the upstream. On a shared two-core machine the speed of everything
// drifts by tens of per cent within a minute, so figures come from the same
// round: a proxy's req/s against nginx's a few seconds apart, its latency
// against the direct run's of the same two seconds. The medians over the
// rounds are reported, and each round is printed.
//
// The nginx case is skipped when nginx is not installed (Debian: nginx-light).
func BenchmarkProxy(b *testing.B) {
	if b.N < 1000 { // the framework's first run with b.N=1: not worth starting everything
		return
	}
	const conns = 64
	up := trivialUpstream(b)
	upAddr := up.Listener.Addr().String()
	directURL := "http://" + upAddr + "/predict"

	type target struct {
		name, url, body, key string
		pids                 func() []int
		rps, cpu, kernel     []float64 // per round
		added50, added99     []float64 // µs, per round
	}
	targets := []*target{{name: "direct", url: directURL, body: `{"texts":["hello"]}`}}
	if _, err := exec.LookPath("nginx"); err == nil {
		addr, pids := startNginx(b, upAddr)
		targets = append(targets, &target{name: "nginx", url: "http://" + addr + "/predict", body: `{"texts":["hello"]}`, pids: pids})
	} else {
		b.Log("nginx not installed: no nginx case")
	}
	for _, c := range []struct {
		name      string
		withRedis bool
		path, req string
	}{
		{"gateway-task", false, "/v1/sentiment/sentiment", `{"text":"hello"}`},
		{"gateway-v2-passthrough", false, "/v2/models/sentiment/infer", `{"texts":["hello"]}`},
		{"gateway-task+redis-limits", true, "/v1/sentiment/sentiment", `{"text":"hello"}`},
	} {
		e := newEnv(b, c.withRedis)
		acc := e.account("bench", "")
		if c.withRedis {
			plan := e.id(`INSERT INTO plans(name, requests_per_second, burst, monthly_quota) VALUES ('bench', 1000000, 1000000, 0) RETURNING id`)
			e.exec(`UPDATE accounts SET plan_id = $1 WHERE id = $2`, plan, acc)
		}
		key, _ := e.key(acc, "inference")
		e.model("sentiment", "text-classification", 0)
		addr, pids := startGatewayProcess(b, e, upAddr)
		targets = append(targets, &target{name: c.name, url: "http://" + addr + c.path, body: c.req, key: key, pids: pids})
	}

	// The load generator and the upstream share this process: its garbage
	// collections (every ~230 ms at the default GOGC under this load)
	// stalled requests to every target alike, and longer (proxied) requests
	// overlap more of them. The proxies are measured, not this process.
	defer debug.SetGCPercent(debug.SetGCPercent(2000))
	per := b.N / proxyRounds
	b.ResetTimer()
	for round := 1; round <= proxyRounds; round++ {
		for _, t := range targets {
			var u0, s0 time.Duration
			if t.pids != nil {
				u0, s0 = procCPU(t.pids())
			}
			r := load(b, conns, 0, per, t.url, t.body, t.key)
			t.rps = append(t.rps, r.rps)
			if t.pids != nil {
				u1, s1 := procCPU(t.pids())
				t.cpu = append(t.cpu, float64((u1-u0+s1-s0).Microseconds())/float64(per))
				t.kernel = append(t.kernel, float64((s1-s0).Microseconds())/float64(per))
			}
			if t.name == "direct" {
				continue
			}
			var base loadResult
			done := make(chan struct{})
			go func() {
				defer close(done)
				base = loadOnce(conns, pacedRate, 2*pacedRate, directURL, `{"texts":["hello"]}`, "")
			}()
			p := load(b, conns, pacedRate, 2*pacedRate, t.url, t.body, t.key)
			<-done
			if base.errors > 0 {
				b.Fatalf("%d direct requests failed", base.errors)
			}
			t.added50 = append(t.added50, float64((p.p50 - base.p50).Microseconds()))
			t.added99 = append(t.added99, float64((p.p99 - base.p99).Microseconds()))
		}
		line := fmt.Sprintf("round %d:", round)
		for _, t := range targets {
			line += fmt.Sprintf(" %s %.0f req/s", t.name, t.rps[round-1])
			if len(t.cpu) > 0 {
				line += fmt.Sprintf(" (%.1f µs CPU, p99 +%.0f µs)", t.cpu[round-1], t.added99[round-1])
			}
			line += ";"
		}
		fmt.Println(line)
	}
	b.StopTimer()

	var nginx *target
	for _, t := range targets {
		if t.name == "nginx" {
			nginx = t
		}
	}
	for _, t := range targets {
		b.ReportMetric(median(t.rps), t.name+"-req/s")
		if len(t.cpu) > 0 {
			b.ReportMetric(median(t.cpu), t.name+"-cpu-µs/req")
			b.ReportMetric(median(t.kernel), t.name+"-kernel-µs/req")
			b.ReportMetric(median(t.added50), t.name+"-added-p50-µs")
			b.ReportMetric(median(t.added99), t.name+"-added-p99-µs")
		}
		if nginx != nil && t != nginx && t.name != "direct" {
			ratios := make([]float64, len(t.rps))
			for i := range ratios {
				ratios[i] = t.rps[i] / nginx.rps[i]
			}
			b.ReportMetric(median(ratios), t.name+"-vs-nginx")
			fmt.Printf("%s vs nginx, per round: %.2f (min %.2f, median %.2f, max %.2f)\n", t.name, ratios, slices.Min(ratios), median(ratios), slices.Max(ratios))
		}
	}
}

// proxyRounds is how many times each proxy is measured in BenchmarkProxy.
const proxyRounds = 5

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

// pacedRate is the request rate of the paced runs, which measure the
// latency a proxy adds when it is not saturated.
const pacedRate = 2000

// procCPU is the user and system CPU time the processes used so far.
func procCPU(pids []int) (user, sys time.Duration) {
	var ut, st int64
	for _, pid := range pids {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		s := string(data)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) > 13 {
			u, _ := strconv.ParseInt(f[11], 10, 64)
			sy, _ := strconv.ParseInt(f[12], 10, 64)
			ut, st = ut+u, st+sy
		}
	}
	const tick = 10 * time.Millisecond // USER_HZ is 100 on Linux
	return time.Duration(ut) * tick, time.Duration(st) * tick
}

func childPIDs(pid int) []int {
	data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	var out []int
	for _, f := range strings.Fields(string(data)) {
		if n, err := strconv.Atoi(f); err == nil {
			out = append(out, n)
		}
	}
	return out
}

type loadResult struct {
	rps      float64
	p50, p99 time.Duration
	errors   int64
}

// load sends n requests over conns keep-alive connections, as fast as it
// can when rate is 0, else at rate requests per second in all.
func load(b *testing.B, conns int, rate float64, n int, url, body, key string) loadResult {
	r := loadOnce(conns, rate, n, url, body, key)
	if r.errors > 0 {
		b.Fatalf("%s: %d requests failed", url, r.errors)
	}
	return r
}

// loadOnce is load without the failure check, for a second goroutine.
func loadOnce(conns int, rate float64, n int, url, body, key string) loadResult {
	tr := &http.Transport{MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns, DisableCompression: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	do := func() (time.Duration, bool) {
		req, _ := http.NewRequest("POST", url, bytes.NewBufferString(body))
		req.Header.Set("Content-Type", "application/json")
		if key != "" {
			req.Header.Set("Authorization", "Token "+key)
		}
		t0 := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			return 0, false
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return time.Since(t0), resp.StatusCode == 200
	}
	// warm up the connections
	var wg sync.WaitGroup
	for i := 0; i < conns; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); do() }()
	}
	wg.Wait()
	lat := make([]time.Duration, n)
	var next, errs atomic.Int64
	start := time.Now()
	for i := 0; i < conns; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				n := next.Add(1) - 1
				if n >= int64(len(lat)) {
					return
				}
				if rate > 0 { // request n is due at n/rate seconds
					if d := time.Until(start.Add(time.Duration(float64(n) / rate * float64(time.Second)))); d > 0 {
						time.Sleep(d)
					}
				}
				d, ok := do()
				if !ok {
					errs.Add(1)
				}
				lat[n] = d
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	slices.Sort(lat)
	return loadResult{rps: float64(len(lat)) / el.Seconds(), p50: lat[len(lat)/2], p99: lat[len(lat)*99/100], errors: errs.Load()}
}

// trivialUpstream answers /predict like a text-classification runtime, at once.
func trivialUpstream(b *testing.B) *httptest.Server {
	out := []byte(`{"model":"m","task":"text-classification","outputs":[[{"label":"POSITIVE","score":0.9},{"label":"NEGATIVE","score":0.1}]]}`)
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(out)
	}))
	b.Cleanup(s.Close)
	return s
}

// startGatewayProcess runs the gateway in a child process (this test binary
// running TestBenchGatewayProcess), as nginx runs in its own processes, so
// that neither proxy shares the load generator's Go scheduler.
func startGatewayProcess(b *testing.B, e *env, upstream string) (string, func() []int) {
	return startGatewayProcessOn(b, e, upstream, "", -1)
}

// startGatewayProcessOn is startGatewayProcess serving with the given front
// end ("": the default; "nbio": nbio_bench_test.go's prototype), pinned to
// cpu (-1: anywhere).
func startGatewayProcessOn(b *testing.B, e *env, upstream, frontend string, cpu int) (string, func() []int) {
	dir := b.TempDir()
	addrFile := filepath.Join(dir, "addr")
	// FRONTEND@BINARY: another build of this package's tests (another
	// version of the gateway, go test -c), to compare two versions in
	// the same run
	bin := os.Args[0]
	if f, other, ok := strings.Cut(frontend, "@"); ok {
		frontend, bin = f, other
	}
	cmd := exec.Command(bin, "-test.run=^TestBenchGatewayProcess$")
	if cpu >= 0 {
		cmd = pinnedCommand(cpu, bin, "-test.run=^TestBenchGatewayProcess$")
	}
	cmd.Env = append(os.Environ(), "NLPSWARM_BENCH_GATEWAY="+addrFile, "NLPSWARM_BENCH_DB="+e.db.URL,
		"NLPSWARM_BENCH_UPSTREAM=sentiment="+upstream, "NLPSWARM_BENCH_REDIS="+boolEnv(e.rdb != nil), "NLPSWARM_BENCH_PREFIX="+e.prefix,
		"NLPSWARM_BENCH_FRONTEND="+frontend, "NLPSWARM_TEST_FRONTEND="+FrontendNetHTTP)
	// One P, as the stack runs the gateway: its service is limited to one
	// CPU (docker-compose.yml), and Go sets GOMAXPROCS from that limit.
	// nginx keeps a worker per core. NLPSWARM_BENCH_GATEWAY_PROCS=2 gives
	// the gateway both cores too.
	procs := "1"
	if n := os.Getenv("NLPSWARM_BENCH_GATEWAY_PROCS"); n != "" {
		procs = n
	}
	cmd.Env = append(cmd.Env, "GOMAXPROCS="+procs)
	if n := os.Getenv("NLPSWARM_BENCH_GATEWAY_GOGC"); n != "" {
		cmd.Env = append(cmd.Env, "GOGC="+n)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	stdin, _ := cmd.StdinPipe()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		stdin.Close() // the child stops when its stdin closes
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if a, err := os.ReadFile(addrFile); err == nil && len(a) > 0 {
			return string(a), func() []int { return []int{cmd.Process.Pid} }
		}
		if time.Now().After(deadline) {
			b.Fatalf("gateway process did not start: %s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func boolEnv(v bool) string {
	if v {
		return "1"
	}
	return ""
}

func startNginx(b *testing.B, upstream string) (string, func() []int) {
	bin := findNginx()
	if bin == "" {
		b.Skip("nginx not installed (apt-get install nginx-light)")
	}
	return startNginxConf(b, bin, -1, func(dir, listen string) string {
		return nginxHead(dir, "auto") + nginxProxy(upstream, listen)
	})
}

// TestBenchGatewayProcess is the child process of BenchmarkProxy; it does
// nothing in a normal test run.
func TestBenchGatewayProcess(t *testing.T) {
	addrFile := os.Getenv("NLPSWARM_BENCH_GATEWAY")
	if addrFile == "" {
		t.Skip("helper process of BenchmarkProxy")
	}
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400) // as the gateway role does by default (--gcpercent)
	}
	if p := os.Getenv("NLPSWARM_BENCH_CPUPROFILE"); p != "" { // profile the proxy's process (a bare one's too), one file per process
		f, err := os.Create(fmt.Sprintf("%s.%d", p, os.Getpid()))
		if err == nil {
			_ = pprof.StartCPUProfile(f)
			defer f.Close()
			defer pprof.StopCPUProfile()
		}
	}
	if f := os.Getenv("NLPSWARM_BENCH_FRONTEND"); strings.HasPrefix(f, "bare-") { // bare_bench_test.go
		_, up, _ := strings.Cut(os.Getenv("NLPSWARM_BENCH_UPSTREAM"), "=")
		serveBare(t, f, up, addrFile)
		return
	}
	ctx := context.Background()
	pool, err := pg.Connect(ctx, pg.Config{URL: os.Getenv("NLPSWARM_BENCH_DB"), MaxConns: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	disc, err := ParseStatic(os.Getenv("NLPSWARM_BENCH_UPSTREAM"))
	if err != nil {
		t.Fatal(err)
	}
	deps := Deps{DB: pool, Discovery: disc}
	if os.Getenv("NLPSWARM_BENCH_REDIS") != "" {
		rc, err := rdb.Connect(ctx, rdb.Config{Addr: rdbtest.Addr(), DialTimeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		deps.Redis = rc
	}
	g, err := New(ctx, Config{UsageFlush: time.Hour, RedisPrefix: os.Getenv("NLPSWARM_BENCH_PREFIX")}, deps)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close(ctx)
	// served as the gateway role serves it: the ops endpoints' mux in front,
	// the role's read/write/idle timeouts
	sopts := httpserver.Defaults("127.0.0.1:0")
	sopts.DrainDelay, sopts.ShutdownTimeout = 0, time.Second
	var engine httpserver.EngineFunc // as cmd/nlpswarm chooses it (--frontend)
	switch f := os.Getenv("NLPSWARM_BENCH_FRONTEND"); f {
	case "nbio":
		engine = nbioEngine
	case "":
	default:
		if f, err = frontendName(f); err != nil {
			t.Fatal(err)
		}
		if f == FrontendFast {
			engine = FastEngine(Config{}, nil)
		}
	}
	srv, err := httpserver.ListenEngine(sopts, engine, httpserver.Handler(g, httpserver.NewHealth(), nil), httpserver.NewHealth(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(ctx)
	served := make(chan struct{})
	go func() { defer close(served); _ = srv.Serve(sctx) }()
	if err := os.WriteFile(addrFile+".tmp", []byte(srv.Addr()), 0o600); err != nil {
		t.Fatal(err)
	}
	os.Rename(addrFile+".tmp", addrFile)
	_, _ = io.Copy(io.Discard, os.Stdin) // until the parent closes it
	stop()
	<-served
}
