package apiserver

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"github.com/moby/moby/client"

	"github.com/nlpswarm/nlpswarm/internal/browsertest"
	"github.com/nlpswarm/nlpswarm/internal/deployment"
	"github.com/nlpswarm/nlpswarm/internal/dockertest"
	"github.com/nlpswarm/nlpswarm/internal/pg/pgtest"
	"github.com/nlpswarm/nlpswarm/models"
	"github.com/nlpswarm/nlpswarm/scheduler"
)

// swarmManager returns a client of the local engine when it is a swarm
// manager, else nil (a failure under CI=true).
func swarmManager(t *testing.T) *client.Client {
	t.Helper()
	why := func() error {
		cl, err := client.New(client.FromEnv)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		info, err := cl.Info(ctx, client.InfoOptions{})
		if err != nil {
			cl.Close()
			return err
		}
		if info.Info.Swarm.LocalNodeState != "active" || !info.Info.Swarm.ControlAvailable {
			cl.Close()
			return fmt.Errorf("swarm state %q, manager %v", info.Info.Swarm.LocalNodeState, info.Info.Swarm.ControlAvailable)
		}
		t.Cleanup(func() { cl.Close() })
		return nil
	}()
	if why != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("swarm manager unavailable under CI: %v", why)
		}
		t.Logf("no swarm manager (%v): a stand-in plays the scheduler", why)
		return nil
	}
	return dockertest.Swarm(t)
}

// cdpCall sends one DevTools command as an action.
func cdpCall[P, R any](c cdp.Command[P, R], p P) chromedp.Action[chromedp.Void] {
	return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		_, err := cdp.Call(ctx, t, c, p)
		return chromedp.Void{}, err
	}
}

// browser is internal/browsertest's headless Chromium with this package's
// steps: a failing step prints the page's main part, screenshots go to
// testdata-artifacts/apiserver-web/ with prefix before each name, and quiet
// fails the test on any script error or console or CSP complaint.
type browser struct {
	*browsertest.Browser
	t      *testing.T
	ctx    context.Context
	prefix string
}

func newBrowser(t *testing.T, prefix string) *browser {
	bb := browsertest.Start(t, "apiserver-web")
	return &browser{Browser: bb, t: t, ctx: bb.Ctx, prefix: prefix}
}

// step runs actions within a minute, failing with the page's main part.
func (b *browser) step(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	sctx, cancel := context.WithTimeout(b.ctx, 60*time.Second)
	defer cancel()
	if err := chromedp.Do(sctx, actions...); err != nil {
		html, _ := chromedp.Run(b.ctx, chromedp.OuterHTML(chromedp.CSS("main")))
		b.t.Fatalf("%s: %v\npage: %s", what, err, html)
	}
}

func (b *browser) text(sel string) string {
	b.t.Helper()
	s, err := chromedp.Run(b.ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		b.t.Fatalf("text of %s: %v", sel, err)
	}
	return s
}

func (b *browser) shot(name string) {
	b.t.Helper()
	b.Shot(b.prefix + name)
}

// waitFor evaluates js until it is true; navigations on the way (a form
// answered with a redirect, a live refresh) are fine.
func (b *browser) waitFor(what, js string, timeout time.Duration) {
	b.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, err := chromedp.Run(b.ctx, chromedp.Evaluate[bool]("(() => { try { return !!("+js+"); } catch (e) { return false; } })()"))
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			html, _ := chromedp.Run(b.ctx, chromedp.OuterHTML(chromedp.CSS("main")))
			b.t.Fatalf("waiting for %s: %v\npage: %s", what, err, html)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// quiet fails the test if the browser complained.
func (b *browser) quiet() {
	if c := b.Complaints(); len(c) > 0 {
		b.t.Fatalf("the browser complained:\n%s", strings.Join(c, "\n"))
	}
}

// runScheduler runs the real reconciler in-process against the swarm until
// the test ends, then removes what it made.
func runScheduler(t *testing.T, cl *client.Client, e *env, model string) {
	image := dockertest.Image(t)
	ctx, cancel := context.WithCancel(context.Background())
	nw, err := cl.NetworkCreate(ctx, dockertest.Name("nlpswarm-webtest-net"), client.NetworkCreateOptions{Driver: "overlay", Attachable: true})
	if err != nil {
		t.Fatal(err)
	}
	svc := scheduler.ServiceName(model)
	rec := &scheduler.Reconciler{DB: e.db.Pool, Docker: cl, Log: slog.New(slog.DiscardHandler), Spec: scheduler.SpecConfig{
		Owner: dockertest.Name("webtest"), // a stack on the same swarm keeps its services
		Image: image, Network: nw.ID,
		// the replicas run the image's small HTTP server in place of the
		// runtime, which would need to reach this test's apiserver for its
		// artifact (as scheduler/reconcile_test.go does)
		Args: []string{"netcheck", "--listen=:8080"},
	}}
	leader, err := scheduler.AcquireLeadership(ctx, e.db.Pool, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- rec.Loop(ctx, leader, 2*time.Second) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Logf("scheduler loop: %v", err)
		}
		leader.Release()
		bg := context.Background()
		cl.ServiceRemove(bg, svc, client.ServiceRemoveOptions{})
		for i := 0; i < 30; i++ { // the network goes once the tasks are gone
			if _, err := cl.NetworkRemove(bg, nw.ID, client.NetworkRemoveOptions{}); err == nil {
				break
			}
			time.Sleep(time.Second)
		}
	})
}

// standInSchedulerWithoutSwarm writes what the scheduler would observe (every
// desired replica running on one node) where the machine has no swarm.
func standInSchedulerWithoutSwarm(t *testing.T, e *env) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			rows, _ := e.db.Pool.Query(ctx, `SELECT d.id, d.replicas, d.generation FROM deployments d`)
			type dep struct {
				id, gen  int64
				replicas int
			}
			var deps []dep
			for rows.Next() {
				var d dep
				rows.Scan(&d.id, &d.replicas, &d.gen)
				deps = append(deps, d)
			}
			rows.Close()
			for _, d := range deps {
				obs := deployment.Observed{Running: d.replicas, Desired: d.replicas, Tasks: []deployment.TaskState{}}
				for i := 1; i <= d.replicas; i++ {
					obs.Tasks = append(obs.Tasks, deployment.TaskState{Slot: i, Node: "stand-in-node", State: "running"})
				}
				raw, _ := json.Marshal(obs)
				e.db.Pool.Exec(ctx, `UPDATE deployments SET status = 'running', status_message = $2, observed = $3,
					observed_generation = $4, observed_at = now() WHERE id = $1`, d.id, fmt.Sprintf("%d of %d replicas running", d.replicas, d.replicas), raw, d.gen)
			}
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}()
}

// TestBrowserBackoffice drives the pages with headless Chromium: log in by
// keyboard, create a model, upload the sentiment fixture through the form
// (throttled, to see the progress bar), see it validated, deploy it, watch
// the deployment page (live refresh) show it running under the real
// scheduler and swarm, scale it, look at nodes and usage, create a key, see
// it once, revoke it. Screenshots go to testdata-artifacts/apiserver-web/.
func TestBrowserBackoffice(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test in -short mode")
	}
	browsertest.Chromium(t)
	fixtures := fixtureFiles(t, "sentiment")
	e := &env{t: t, db: pgtest.New(t, true), dir: t.TempDir(), smoke: models.SmokeTest}
	e.start()
	model := dockertest.Name("sentiment") // unique: services are named nlp-<model> swarm-wide
	swarm := swarmManager(t)
	if swarm != nil {
		runScheduler(t, swarm, e, model)
	} else {
		standInSchedulerWithoutSwarm(t, e)
	}
	archive := filepath.Join(t.TempDir(), "sentiment.tar.gz")
	if err := os.WriteFile(archive, tarGz(t, fixtures), 0o644); err != nil {
		t.Fatal(err)
	}
	b := newBrowser(t, "")
	ctx, step, text, shot, waitFor := b.ctx, b.step, b.text, b.shot, b.waitFor
	base := e.http.URL
	step("enable the log domain", cdpCall(cdplog.Enable, cdp.Empty{}), cdpCall(network.Enable, network.EnableParams{}))

	// 1. log in with the keyboard only: skip link, then the token field, Enter
	step("open the backoffice", chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.ID("token")))
	if loc, _ := chromedp.Run(ctx, chromedp.Location()); !strings.HasPrefix(loc, base+"/ui/login") {
		t.Fatalf("not sent to the login page: %s", loc)
	}
	shot("01-login")
	step("tab to the skip link", chromedp.Evaluate[chromedp.Void](
		// start from the top of the page, as a keyboard user arriving there does
		"document.body.tabIndex = -1; document.body.focus(); document.body.removeAttribute('tabindex')"), chromedp.KeyEvent(kb.Tab))
	waitFor("the skip link focused and shown", `document.activeElement.className === 'skip' && document.activeElement.getBoundingClientRect().left >= 0`, 5*time.Second)
	step("follow the skip link, tab to the token", chromedp.KeyEvent(kb.Enter), chromedp.KeyEvent(kb.Tab))
	waitFor("the token field focused", `document.activeElement.id === 'token'`, 5*time.Second)
	step("type the token and press Enter", chromedp.KeyEvent(adminTok), chromedp.KeyEvent(kb.Enter), chromedp.WaitVisible(chromedp.ID("models-h")))

	// 2. create the model
	step("create the model",
		chromedp.SendKeys(chromedp.ID("name"), model),
		chromedp.SetValue(chromedp.ID("task"), "text-classification"),
		chromedp.SendKeys(chromedp.ID("description"), "movie review sentiment, uploaded by the browser test"),
		chromedp.Click(chromedp.CSS(`form[action="/ui/models"] button[type=submit]`)),
		chromedp.WaitVisible(chromedp.ID("upload-h")))

	// 3. upload through the form, throttled so that the progress bar shows
	step("throttle uploads", cdpCall(network.EmulateNetworkConditionsByRule, network.EmulateNetworkConditionsByRuleParams{
		MatchedNetworkConditions: []*network.Conditions{{UploadThroughput: 96 << 10, DownloadThroughput: -1}}}))
	step("choose the archive and upload",
		chromedp.SetUploadFiles(chromedp.ID("archive"), []string{archive}),
		chromedp.Click(chromedp.CSS(`form[data-upload] button[type=submit]`)))
	waitFor("the progress bar with bytes and rate", `(() => { const p = document.querySelector('#upload-progress');
		const txt = document.querySelector('.upload-text').textContent;
		return p && p.value > 0 && p.value < p.max && /KiB of .* sent, .*\/s/.test(txt); })()`, 20*time.Second)
	progress := text(".upload-text")
	shot("02-upload-progress")
	t.Logf("progress bar: %q", progress)
	step("unthrottle", cdpCall(network.EmulateNetworkConditionsByRule, network.EmulateNetworkConditionsByRuleParams{
		MatchedNetworkConditions: []*network.Conditions{{UploadThroughput: -1, DownloadThroughput: -1}}}))
	waitFor("the validated version", `!!document.querySelector('#versions .smoke') && document.querySelector('.flash') !== null`, 90*time.Second)
	if v := text("#versions tbody tr th"); v != "1" {
		t.Fatalf("version cell: %q", v)
	}
	if row := text("#versions tbody tr"); !strings.Contains(row, "valid") || !strings.Contains(row, "smoke inference passed") || !strings.Contains(row, "sha256:") {
		t.Fatalf("version row: %q", row)
	}
	if f := text(".flash"); !strings.Contains(f, "Version 1 was uploaded, validated and stored") {
		t.Fatalf("flash: %q", f)
	}
	shot("03-model-validated")

	// 4. deploy it; the deployment page shows it pending, then running
	deployStart := time.Now()
	step("deploy",
		chromedp.SetValue(chromedp.ID("replicas"), "1"),
		chromedp.SetValue(chromedp.ID("memory"), "256M"),
		chromedp.Click(chromedp.CSS(`form[action$="/deploy"] button[type=submit]`)),
		chromedp.WaitVisible(chromedp.ID("dep-"+model)))
	shot("04-deployment-written")
	sel := "#dep-" + model
	waitFor("the replica running (live refresh)", fmt.Sprintf(`(() => { const d = document.querySelector(%q);
		return d && d.querySelector('.replicas').textContent.trim() === '1 / 1' && d.querySelector('h2 .badge-running') !== null
			&& d.querySelector('tbody .badge-running') !== null; })()`, sel), 4*time.Minute)
	t.Logf("deploy → page shows running: %s", time.Since(deployStart).Round(100*time.Millisecond))
	shot("05-deployment-running")
	replica := text(sel + " tbody tr")
	if swarm != nil {
		info, _ := swarm.Info(context.Background(), client.InfoOptions{})
		if !strings.Contains(replica, info.Info.Name) {
			t.Errorf("replica row %q does not name the swarm node %s", replica, info.Info.Name)
		}
	}

	// 5. scale up with the +1 button
	step("scale to 2", chromedp.Click(chromedp.CSS(fmt.Sprintf(`button[aria-label="Scale %s up to 2"]`, model))))
	waitFor("two replicas running", fmt.Sprintf(`(() => { const d = document.querySelector(%q);
		return d && d.querySelector('.replicas').textContent.trim() === '2 / 2' && d.querySelectorAll('tbody .badge-running').length === 2; })()`, sel), 3*time.Minute)
	shot("06-deployment-scaled")

	// 6. nodes: what the scheduler recorded (and, with no GPU here, a fake GPU node)
	fakeGPUNode(t, e, model)
	step("nodes page", chromedp.Navigate(base+"/ui/nodes"), chromedp.WaitVisible(chromedp.CSS(".bar")))
	if nodes := text("main"); !strings.Contains(nodes, "Fake GPU (test stand-in)") || !strings.Contains(nodes, model) ||
		!strings.Contains(nodes, "Used by others") || !strings.Contains(nodes, "1.0 GiB (pid 777)") {
		t.Fatalf("nodes page: %q", nodes)
	}
	shot("07-nodes")

	// 7. an account and a key: shown once, then never again; revoke it
	step("create an account",
		chromedp.Navigate(base+"/ui/accounts"),
		chromedp.SendKeys(chromedp.ID("name"), "acme"),
		chromedp.SetValue(chromedp.ID("plan"), "standard"),
		chromedp.Click(chromedp.CSS(`form[action="/ui/accounts"] button[type=submit]`)),
		chromedp.WaitVisible(chromedp.ID("keys-h")))
	step("create a key",
		chromedp.SendKeys(chromedp.ID("key-name"), "browser"),
		chromedp.Click(chromedp.CSS(`form[action$="/keys"] button[type=submit]`)),
		chromedp.WaitVisible(chromedp.ID("new-key")))
	key, err := chromedp.Run(ctx, chromedp.Value(chromedp.ID("new-key")))
	if err != nil || !strings.HasPrefix(key, "nlp_") {
		t.Fatalf("new key %q: %v", key, err)
	}
	shot("08-key-created")
	usageFor(t, e, model)
	step("reload the account page", chromedp.Reload(), chromedp.WaitVisible(chromedp.ID("keys-h")))
	if html, _ := chromedp.Run(ctx, chromedp.OuterHTML(chromedp.CSS("html"))); strings.Contains(html, key) {
		t.Fatal("the key is shown again after a reload")
	}
	step("revoke it",
		chromedp.Click(chromedp.CSS(`button[aria-label^="Revoke key"]`)),
		chromedp.WaitVisible(chromedp.CSS(".badge-revoked")))
	if f := text(".flash"); !strings.Contains(f, "Key revoked") {
		t.Fatalf("flash after revoke: %q", f)
	}
	if n := e.count(`SELECT count(*) FROM api_keys WHERE revoked_at IS NOT NULL`); n != 1 {
		t.Fatalf("revoked keys: %d", n)
	}
	shot("09-key-revoked")
	step("usage page", chromedp.Navigate(base+"/ui/usage"), chromedp.WaitVisible(chromedp.CSS("svg.chart-svg")))
	shot("10-usage")

	// 8. undeploy; the scheduler removes the service
	step("undeploy",
		chromedp.Navigate(base+"/ui/deployments"),
		chromedp.Click(chromedp.CSS(`form[action$="/undeploy"] button`)),
		chromedp.WaitVisible(chromedp.CSS(".flash")))
	if swarm != nil {
		deadline := time.Now().Add(time.Minute)
		for {
			_, err := swarm.ServiceInspect(context.Background(), scheduler.ServiceName(model), client.ServiceInspectOptions{})
			if err != nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("service still there a minute after undeploy")
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
	shot("11-undeployed")

	b.quiet()
	t.Logf("screenshots in %s", b.Shots)
}

// fakeGPUNode adds a node with a GPU, as a node agent would report it; the
// machine has no GPU, so it says it is a stand-in.
func fakeGPUNode(t *testing.T, e *env, model string) {
	t.Helper()
	ctx := context.Background()
	for _, q := range []string{
		`INSERT INTO nodes (id, hostname, role, availability, state, labels, nano_cpus, memory_bytes)
			VALUES ('fakegpunode1', 'fake-gpu-node', 'worker', 'active', 'ready', '{"type":"machine-learning","gpu":"true"}', 16000000000, 68719476736)`,
		// GPU 1 is used by a process the platform did not place (pid 777)
		`INSERT INTO gpus (node_id, uuid, idx, name, memory_total, memory_used, memory_free, util_gpu, processes) VALUES
			('fakegpunode1', 'GPU-fake-0', 0, 'Fake GPU (test stand-in)', 25769803776, 9663676416, 16106127360, 41, '[]'),
			('fakegpunode1', 'GPU-fake-1', 1, 'Fake GPU (test stand-in)', 25769803776, 1073741824, 24696061952, 3, '[{"pid":777,"mem_used":1073741824}]')`,
	} {
		if _, err := e.db.Pool.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.db.Pool.Exec(ctx, `INSERT INTO gpu_assignments (deployment_id, slot, node_id, gpu_uuid, memory_bytes)
		SELECT d.id, 0, 'fakegpunode1', 'GPU-fake-0', 4294967296 FROM deployments d JOIN models m ON m.id = d.model_id WHERE m.name = $1`, model); err != nil {
		t.Fatal(err)
	}
}

// usageFor writes 30 days of usage of model and of a second model for every
// key, as the gateway's flush would.
func usageFor(t *testing.T, e *env, model string) {
	t.Helper()
	if code, body := e.do("POST", "/api/v1/models", adminTok, map[string]any{"name": model + "-ner", "task": "token-classification"}); code != 201 {
		t.Fatalf("second model: %d %v", code, body)
	}
	_, err := e.db.Pool.Exec(context.Background(), `INSERT INTO usage (api_key_id, model_id, day, requests, texts, errors)
		SELECT k.id, m.id, current_date - d, CASE WHEN m.name = $1 THEN 200 + (d * 37) % 150 ELSE 40 + (d * 53) % 90 END,
			260 + (d * 41) % 170, d % 4
		FROM api_keys k, models m, generate_series(0, 29) d WHERE m.name IN ($1, $1 || '-ner') AND (d % 7 <> 3 OR m.name = $1)`, model)
	if err != nil {
		t.Fatal(err)
	}
}
