package gateway

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/nlpswarm/nlpswarm/internal/browsertest"
	"github.com/nlpswarm/nlpswarm/internal/httpserver"
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
	e := newEnv(t, false)
	e.start(Config{})
	srv := httptest.NewServer(httpserver.Handler(e.gw, httpserver.NewHealth(), nil))
	defer srv.Close()
	b := browsertest.Start(t, "gateway-reference")
	do := b.Do
	eval := func(js string) int {
		t.Helper()
		n, err := chromedp.Run(b.Ctx, chromedp.Evaluate[int](js))
		if err != nil {
			t.Fatalf("%s: %v", js, err)
		}
		return n
	}
	do("open the reference", chromedp.Navigate(srv.URL+"/docs"), chromedp.WaitVisible(chromedp.ID("errors")))
	b.Shot("reference")
	if n, want := eval(`document.querySelectorAll('#errors + p + table tr[id^="code-"]').length`), len(ErrorCodes()); n != want {
		t.Errorf("the page shows %d error codes, want %d", n, want)
	}
	if n, want := eval(`document.querySelectorAll('.route').length`), len(routes)+2; n != want { // + /healthz, /readyz
		t.Errorf("the page shows %d routes, want %d", n, want)
	}
	do("follow the task route's link", chromedp.Click(chromedp.CSS(`a[href="#tasks-v1-model-task"]`)), chromedp.WaitVisible(chromedp.ID("tasks-v1-model-task")))
	// (+ 0: a scroll a fraction of a pixel past the anchor rounds to -0, which the protocol cannot carry as a value)
	if y := eval(`Math.round(document.getElementById('tasks-v1-model-task').getBoundingClientRect().top) + 0`); y < 0 || y > 50 {
		t.Errorf("the route's section is at %dpx after following its link, want the top", y)
	}
	do("open the error codes", chromedp.Navigate(srv.URL+"/docs#errors"), chromedp.WaitVisible(chromedp.ID("code-quota_exceeded-gateway")))
	do("open the document", chromedp.Navigate(srv.URL+"/openapi.json"), chromedp.WaitReady(chromedp.CSS("body")))
	if n := eval(`JSON.parse(document.body.innerText).paths['/v1/{model}/{task}'] ? 1 : 0`); n != 1 {
		t.Error("/openapi.json does not parse in the browser as the document")
	}
	for _, c := range b.Complaints() {
		if !strings.Contains(c, "favicon.ico") { // (the gateway has none: a 404 the browser logs)
			t.Errorf("browser: %s", c)
		}
	}
	t.Logf("screenshots in %s", b.Shots)
}
