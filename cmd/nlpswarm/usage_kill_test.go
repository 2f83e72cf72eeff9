//go:build !agentonly

package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nlpswarm/nlpswarm/internal/apikey"
	"github.com/nlpswarm/nlpswarm/internal/pg/pgtest"
	"github.com/nlpswarm/nlpswarm/internal/rdb/rdbtest"
	"github.com/nlpswarm/nlpswarm/internal/runtimeapi"
	"github.com/nlpswarm/nlpswarm/models"
)

// stubSentiment stands in for a loaded model inside the real runtime
// server: every text is POSITIVE.
type stubSentiment struct{}

func (stubSentiment) Predict(_ context.Context, texts []string, _ models.Params) ([]any, error) {
	out := make([]any, len(texts))
	for i := range texts {
		out[i] = []runtimeapi.Label{{Label: "POSITIVE", Score: 0.9}, {Label: "NEGATIVE", Score: 0.1}}
	}
	return out, nil
}

// startStubRuntime is the real runtime server (models.Server and its
// batcher) in this process, serving stubSentiment.
func startStubRuntime(t *testing.T) string {
	t.Helper()
	m := models.NewMetrics(nil)
	b := models.NewBatcher(stubSentiment{}, models.DefaultBatchConfig(), m)
	ctx, cancel := context.WithCancel(context.Background())
	go b.Run(ctx)
	srv := models.NewServer("sentiment", runtimeapi.TextClassification, "sha256:test", b, models.DefaultLimits(), m, slog.New(slog.DiscardHandler))
	srv.SetReady(true)
	hs := httptest.NewServer(srv)
	t.Cleanup(func() { hs.Close(); cancel() })
	return hs.Listener.Addr().String()
}

// gatewayProc is one `nlpswarm gateway` process.
type gatewayProc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// startGatewayProc runs the gateway role on addr and waits until it answers
// /readyz.
func startGatewayProc(t *testing.T, addr string, args []string, logf *os.File) *gatewayProc {
	t.Helper()
	cmd := exec.Command(binPath, append([]string{"gateway", "--listen=" + addr}, args...)...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &gatewayProc{cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-p.done })
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			t.Fatalf("gateway exited at start: %v", cmd.ProcessState)
		default:
		}
		resp, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return p
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("gateway not ready within 20s")
	return nil
}

// issue 18 item 2: gateways killed with SIGKILL under load lose no usage
// and count none twice. Real `nlpswarm gateway` processes on one usage
// spool, against real Postgres (and Redis) and the real runtime server with
// a stub model, are killed three times under load by 8 clients; each time
// a new one starts on the same spool. Afterwards usage holds at least every
// request the clients saw answered (none lost) and at most those plus the
// ones cut mid-answer by a kill (none counted twice: a batch replayed twice
// would add hundreds).
func TestUsageSurvivesGatewaySIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("starts gateway processes")
	}
	db := pgtest.New(t, true)
	ctx := context.Background()
	var acc, modelID int64
	if err := db.Pool.QueryRow(ctx, `INSERT INTO accounts (name) VALUES ('acme') RETURNING id`).Scan(&acc); err != nil {
		t.Fatal(err)
	}
	key, prefix, hash, err := apikey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Pool.Exec(ctx, `INSERT INTO api_keys (account_id, prefix, hash, kind) VALUES ($1, $2, $3, 'inference')`, acc, prefix, hash); err != nil {
		t.Fatal(err)
	}
	if err := db.Pool.QueryRow(ctx, `INSERT INTO models (name, task) VALUES ('sentiment', 'text-classification') RETURNING id`).Scan(&modelID); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Pool.Exec(ctx, `INSERT INTO deployments (model_id, version, replicas) VALUES ($1, 1, 1)`, modelID); err != nil {
		t.Fatal(err)
	}
	rt := startStubRuntime(t)
	_, redisPrefix := rdbtest.New(t)

	dir := t.TempDir()
	logf, err := os.Create(filepath.Join(dir, "gateway.log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("gateway log:\n%s", b)
		}
	})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	args := []string{"--db.url=" + db.URL, "--redis.addr=" + rdbtest.Addr(), "--redisprefix=" + redisPrefix,
		"--discovery=static", "--static.upstreams=sentiment=" + rt, "--usagespool=" + filepath.Join(dir, "spool"),
		"--usageflush=700ms", "--draindelay=0s"}
	// the negative control, by hand: USAGE_KILL_NO_SPOOL=1 runs the same
	// without the spool, and the test fails (usage lost)
	if os.Getenv("USAGE_KILL_NO_SPOOL") != "" {
		args = slices.DeleteFunc(args, func(a string) bool { return strings.HasPrefix(a, "--usagespool=") })
	}

	// the load: 8 clients until stop
	var answered, cut atomic.Int64 // 200s read whole; requests sent but not answered
	stop := make(chan struct{})
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				req, _ := http.NewRequest("POST", "http://"+addr+"/v1/sentiment/sentiment", bytes.NewBufferString(`{"text":"good"}`))
				req.Header.Set("Authorization", "Token "+key)
				resp, err := client.Do(req)
				if err != nil {
					if !errors.Is(err, syscall.ECONNREFUSED) { // refused: never reached a gateway
						cut.Add(1)
					} else {
						time.Sleep(5 * time.Millisecond)
					}
					continue
				}
				_, rerr := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				switch {
				case rerr == nil && resp.StatusCode == 200:
					answered.Add(1)
				case rerr != nil:
					cut.Add(1)
				default:
					t.Errorf("status %d", resp.StatusCode)
				}
			}
		}()
	}

	const kills = 3
	for i := range kills {
		g := startGatewayProc(t, addr, args, logf)
		before := answered.Load()
		time.Sleep(1500 * time.Millisecond)
		if answered.Load()-before < 50 {
			t.Fatalf("gateway %d answered %d requests in 1.5s", i, answered.Load()-before)
		}
		if err := g.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-g.done
	}
	// the last gateway replays the spool, serves a while, and stops cleanly
	g := startGatewayProc(t, addr, args, logf)
	time.Sleep(time.Second)
	close(stop)
	wg.Wait()
	if err := g.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-g.done:
	case <-time.After(30 * time.Second):
		t.Fatal("gateway did not stop within 30s of SIGTERM")
	}

	var requests, batches int64
	if err := db.Pool.QueryRow(ctx, `SELECT coalesce(sum(requests), 0)::bigint, (SELECT count(*) FROM usage_batches) FROM usage
		WHERE api_key_id = (SELECT id FROM api_keys WHERE prefix = $1)`, prefix).Scan(&requests, &batches); err != nil {
		t.Fatal(err)
	}
	a, c := answered.Load(), cut.Load()
	t.Logf("%d SIGKILLs: %d requests answered, %d cut by a kill, %d in usage (%d batches)", kills, a, c, requests, batches)
	if requests < a {
		t.Errorf("usage lost %d of %d answered requests", a-requests, a)
	}
	if requests > a+c {
		t.Errorf("usage counts %d requests, more than the %d answered and %d cut: counted twice", requests, a, c)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "spool", "slot-*", "batch-*")); len(left) != 0 {
		t.Errorf("spool not emptied: %v", left)
	}
}
