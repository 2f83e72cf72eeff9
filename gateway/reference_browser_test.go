package gateway

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/nlpswarm/nlpswarm/internal/dockertest"
	"github.com/nlpswarm/nlpswarm/internal/httpserver"
	"github.com/nlpswarm/nlpswarm/internal/pg/pgtest"
)

// The reference page in headless Chromium (Debian's; NLPSWARM_CHROMIUM
// overrides; without one the test skips, except under CI=true): it loads
// under its Content-Security-Policy without a complaint, lists every route
// and error code, and its links to the document work. Screenshots go to
// testdata-artifacts/gateway-reference/.
func TestBrowserReference(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test in -short mode")
	}
	chromium := os.Getenv("NLPSWARM_CHROMIUM")
	if chromium == "" {
		chromium = "/usr/bin/chromium"
	}
	if _, err := os.Stat(chromium); err != nil {
		pgtest.Unavailable(t, "headless chromium", err)
	}
	e := newEnv(t, false)
	e.start(Config{})
	srv := httptest.NewServer(httpserver.Handler(e.gw, httpserver.NewHealth(), nil))
	defer srv.Close()
	shots := filepath.Join(dockertest.RepoRoot(t), "testdata-artifacts", "gateway-reference")
	if err := os.MkdirAll(shots, 0o755); err != nil {
		t.Fatal(err)
	}

	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.WindowSize(1280, 900))...)
	defer cancelAlloc()
	ctx, cancelCtx := chromedp.NewContext(alloc)
	defer cancelCtx()
	var mu sync.Mutex
	var complaints []string
	if err := chromedp.Listen(ctx, func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch ev := ev.(type) {
		case *runtime.EventExceptionThrown:
			complaints = append(complaints, "exception: "+ev.ExceptionDetails.Text)
		case *cdplog.EventEntryAdded:
			if ev.Entry.Level == cdplog.EntryLevelError || ev.Entry.Level == cdplog.EntryLevelWarning {
				complaints = append(complaints, fmt.Sprintf("console %s: %s (%s)", ev.Entry.Level, ev.Entry.Text, ev.Entry.URL))
			}
		}
	}); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	do := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		if err := chromedp.Do(sctx, actions...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	eval := func(js string) int {
		t.Helper()
		n, err := chromedp.Run(ctx, chromedp.Evaluate[int](js))
		if err != nil {
			t.Fatalf("%s: %v", js, err)
		}
		return n
	}
	shot := func(name string) {
		t.Helper()
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		if err := os.WriteFile(filepath.Join(shots, name+".png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	do("enable the log domain", func(ctx context.Context, tg *chromedp.Target) (chromedp.Void, error) {
		_, err := cdp.Call(ctx, tg, cdplog.Enable, cdp.Empty{})
		return chromedp.Void{}, err
	})
	do("open the reference", chromedp.Navigate(srv.URL+"/docs"), chromedp.WaitVisible(chromedp.ID("errors")))
	shot("01-reference")
	if n, want := eval(`document.querySelectorAll('#errors + p + table tr[id^="code-"]').length`), len(ErrorCodes()); n != want {
		t.Errorf("the page shows %d error codes, want %d", n, want)
	}
	if n, want := eval(`document.querySelectorAll('.route').length`), len(routes)+2; n != want { // + /healthz, /readyz
		t.Errorf("the page shows %d routes, want %d", n, want)
	}
	do("follow the task route's link", chromedp.Click(chromedp.CSS(`a[href="#tasks-v1-model-task"]`)), chromedp.WaitVisible(chromedp.ID("tasks-v1-model-task")))
	if y := eval(`Math.round(document.getElementById('tasks-v1-model-task').getBoundingClientRect().top)`); y < 0 || y > 50 {
		t.Errorf("the route's section is at %dpx after following its link, want the top", y)
	}
	do("open the error codes", chromedp.Navigate(srv.URL+"/docs#errors"), chromedp.WaitVisible(chromedp.ID("code-quota_exceeded-gateway")))
	shot("02-error-codes")
	do("open the document", chromedp.Navigate(srv.URL+"/openapi.json"), chromedp.WaitReady(chromedp.CSS("body")))
	if n := eval(`JSON.parse(document.body.innerText).paths['/v1/{model}/{task}'] ? 1 : 0`); n != 1 {
		t.Error("/openapi.json does not parse in the browser as the document")
	}
	mu.Lock()
	defer mu.Unlock()
	for _, c := range complaints {
		if !strings.Contains(c, "favicon.ico") { // (the gateway has none: a 404 the browser logs)
			t.Errorf("browser: %s", c)
		}
	}
	t.Logf("screenshots in %s", shots)
}
