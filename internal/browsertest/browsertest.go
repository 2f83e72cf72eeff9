// Package browsertest drives Debian's headless Chromium for the tests of
// the web pages: it starts the browser, records every script exception and
// console error or warning (a CSP refusal among them) as a complaint, and
// writes full-page screenshots to testdata-artifacts/<dir>/ (git-ignored).
//
// Test support only: no role imports it. It knows nothing about any page.
package browsertest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/nlpswarm/nlpswarm/internal/dockertest"
	"github.com/nlpswarm/nlpswarm/internal/pg/pgtest"
)

// Chromium finds Debian's chromium (NLPSWARM_CHROMIUM overrides). Without
// it the test skips, except under CI=true, where it fails.
func Chromium(t testing.TB) string {
	t.Helper()
	for _, p := range []string{os.Getenv("NLPSWARM_CHROMIUM"), "/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"} {
		if p == "" {
			continue
		}
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	pgtest.Unavailable(t, "headless chromium", fmt.Errorf("no /usr/bin/chromium (apt-get install chromium)"))
	return ""
}

// Browser is one headless Chromium with one tab, closed at the test's end.
type Browser struct {
	Ctx   context.Context // the tab, for chromedp.Run and chromedp.Do
	Shots string          // where Shot writes

	t          testing.TB
	mu         sync.Mutex
	complaints []string
}

// Start starts the browser (1280×900) with its log domain on; screenshots
// go to testdata-artifacts/shots.
func Start(t testing.TB, shots string) *Browser {
	t.Helper()
	b := &Browser{t: t, Shots: filepath.Join(dockertest.RepoRoot(t), "testdata-artifacts", shots)}
	if err := os.MkdirAll(b.Shots, 0o755); err != nil {
		t.Fatal(err)
	}
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(Chromium(t)), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.WindowSize(1280, 900))...)
	ctx, cancelCtx := chromedp.NewContext(alloc)
	t.Cleanup(func() {
		cancelCtx()
		cancelAlloc()
	})
	b.Ctx = ctx
	if err := chromedp.Listen(ctx, func(ev any) {
		b.mu.Lock()
		defer b.mu.Unlock()
		switch ev := ev.(type) {
		case *runtime.EventExceptionThrown:
			b.complaints = append(b.complaints, "exception: "+ev.ExceptionDetails.Text)
		case *cdplog.EventEntryAdded:
			if ev.Entry.Level == cdplog.EntryLevelError || ev.Entry.Level == cdplog.EntryLevelWarning {
				b.complaints = append(b.complaints, fmt.Sprintf("console %s: %s (%s)", ev.Entry.Level, ev.Entry.Text, ev.Entry.URL))
			}
		}
	}); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	b.Do("enable the log domain", func(ctx context.Context, tg *chromedp.Target) (chromedp.Void, error) {
		_, err := cdp.Call(ctx, tg, cdplog.Enable, cdp.Empty{})
		return chromedp.Void{}, err
	})
	return b
}

// Do runs actions within a minute; a failure ends the test.
func (b *Browser) Do(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.Ctx, time.Minute)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
}

// Shot writes a full-page PNG screenshot as Shots/name.png.
func (b *Browser) Shot(name string) {
	b.t.Helper()
	png, err := chromedp.Run(b.Ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.WriteFile(filepath.Join(b.Shots, name+".png"), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

// Complaints is what the browser complained of so far.
func (b *Browser) Complaints() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.complaints...)
}
