package apiserver

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/nlpswarm/nlpswarm/internal/browsertest"
	"github.com/nlpswarm/nlpswarm/internal/limitkeys"
	"github.com/nlpswarm/nlpswarm/internal/rdb/rdbtest"
)

// TestBrowserPlansAndMonitoring: in Chromium, create and edit a plan, move
// an account to it, watch its quota use change without reloading (the live
// refresh), revoke a key by its prefix, then read a model's and the
// cluster's monitoring pages drawn from a fake Prometheus (this machine
// runs no Prometheus outside the stack; the fake says so in its name), and
// the page saying so once Prometheus is gone. Screenshots go to
// testdata-artifacts/apiserver-web/ops-*.png.
func TestBrowserPlansAndMonitoring(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test in -short mode")
	}
	browsertest.Chromium(t)
	e := newEnv(t)
	rc, prefix := rdbtest.New(t)
	prom, _ := fakePrometheus(t)
	e.cfg.Redis, e.cfg.RedisPrefix, e.cfg.PrometheusURL = rc, prefix, prom.URL
	e.start()
	account, _ := webFixture(e)
	var kid int64
	var kprefix string
	e.db.Pool.QueryRow(context.Background(), `SELECT id, prefix FROM api_keys`).Scan(&kid, &kprefix)
	b := newBrowser(t, "ops-")
	ctx, step, text, shot, waitFor := b.ctx, b.step, b.text, b.shot, b.waitFor
	base := e.http.URL
	step("enable the log domain", cdpCall(cdplog.Enable, cdp.Empty{}))
	step("log in", chromedp.Navigate(base+"/ui/accounts"), chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SendKeys(chromedp.ID("token"), adminTok), chromedp.KeyEvent(kb.Enter), chromedp.WaitVisible(chromedp.ID("plans-h")))

	// plans: create one, then edit its rate in the table
	step("create a plan",
		chromedp.SendKeys(chromedp.ID("plan-name"), "pro"),
		chromedp.SendKeys(chromedp.ID("plan-rps"), "20"),
		chromedp.SendKeys(chromedp.ID("plan-burst"), "40"),
		chromedp.SetValue(chromedp.ID("plan-quota"), "100000"),
		chromedp.Click(chromedp.CSS(`form[action="/ui/plans"] button[type=submit]`)),
		chromedp.WaitVisible(chromedp.CSS(`form[action="/ui/plans/pro"]`)))
	step("edit its rate",
		chromedp.SetValue(chromedp.CSS(`input[form="plan-pro"][name="requests_per_second"]`), "2.5"),
		chromedp.Click(chromedp.CSS(`button[aria-label="Save plan pro"]`)))
	waitFor("the plan updated", `document.querySelector('.flash') && document.querySelector('.flash').textContent.includes('Plan updated')`, 10*time.Second)
	if v, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector('input[form="plan-pro"][name="requests_per_second"]').value`)); err != nil || v != "2.5" {
		t.Fatalf("pro's rate after the edit: %q %v", v, err)
	}
	shot("01-plans")

	// the account: move it to pro, see its limits, and its quota use change live
	step("open the account", chromedp.Navigate(fmt.Sprintf("%s/ui/accounts/%d", base, account)), chromedp.WaitVisible(chromedp.ID("limits-h")))
	step("move it to pro", chromedp.SetValue(chromedp.ID("account-plan"), "pro"),
		chromedp.Click(chromedp.CSS(`form[action$="/plan"] button[type=submit]`)))
	waitFor("the plan changed", `document.querySelector('.flash') && document.querySelector('.flash').textContent.includes('Plan changed')`, 10*time.Second)
	if f := text(".facts"); !strings.Contains(f, "pro: 2.5 req/s, burst 40, 100000 requests a month") {
		t.Fatalf("account facts: %q", f)
	}
	rc.IncrBy(context.Background(), limitkeys.QuotaKey(prefix, kid, limitkeys.Month(time.Now())), 42000) // what the gateways count
	waitFor("the live refresh showing the gateways' count", `document.querySelector('#quota-use').textContent.includes('42000 requests')`, 3*accountRefresh*time.Second)
	if row := text("#limits tbody tr"); !strings.Contains(row, "42.0 %") {
		t.Fatalf("limits row: %q", row)
	}
	shot("02-account-limits")

	// revoke the key by its prefix from the accounts page
	step("revoke by prefix", chromedp.Navigate(base+"/ui/accounts"), chromedp.WaitVisible(chromedp.ID("revoke-prefix")),
		chromedp.SendKeys(chromedp.ID("revoke-prefix"), kprefix),
		chromedp.Click(chromedp.CSS(`form[action="/ui/keys/revoke"] button[type=submit]`)))
	waitFor("the account page with the key revoked", `document.querySelector('.badge-revoked') !== null`, 10*time.Second)
	shot("03-revoked-by-prefix")

	// monitoring: the model's page, then the cluster's
	step("the model's monitoring page", chromedp.Navigate(base+"/ui/models/sentiment/monitor"), chromedp.WaitVisible(chromedp.ID("chart-latency")))
	waitFor("lines drawn in every chart", `document.querySelectorAll('.charts figure').length === 6 && document.querySelectorAll('.charts figure polyline').length >= 6`, 10*time.Second)
	if a := text("#alerts"); !strings.Contains(a, "NlpswarmModelP99High") || strings.Contains(a, "NlpswarmReplicaDown") {
		t.Fatalf("model alerts: %q", a)
	}
	shot("04-model-monitoring")
	step("the cluster page", chromedp.Navigate(base+"/ui/cluster"), chromedp.WaitVisible(chromedp.ID("chart-gpumem")))
	if l := text("#chart-requests .legend"); !strings.Contains(l, "ml-1") || !strings.Contains(l, "ml-2") {
		t.Fatalf("cluster legend: %q", l)
	}
	shot("05-cluster")
	prom.Close()
	step("the cluster page without Prometheus", chromedp.Reload(), chromedp.WaitVisible(chromedp.ID("prometheus-problem")))
	shot("06-cluster-prometheus-down")

	b.quiet()
}
