package jobs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/nlpswarm/nlpswarm/internal/customerapi"
	"github.com/nlpswarm/nlpswarm/internal/jobqueue"
)

// ErrPrivateAddress: a webhook would connect to an address that is not
// public (loopback, private, link-local and so the cloud metadata service,
// CGNAT, multicast, unspecified) and private addresses are not allowed.
var ErrPrivateAddress = errors.New("webhook address is not public")

// PublicAddr says whether ip is a public unicast address, which a webhook
// may reach by default.
func PublicAddr(ip netip.Addr) bool {
	ip = ip.Unmap()
	switch {
	case !ip.IsValid(), ip.IsUnspecified(), ip.IsLoopback(), ip.IsPrivate(), ip.IsLinkLocalUnicast(),
		ip.IsLinkLocalMulticast(), ip.IsInterfaceLocalMulticast(), ip.IsMulticast():
		return false
	}
	for _, p := range notPublic {
		if p.Contains(ip) {
			return false
		}
	}
	return true
}

var notPublic = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"), // CGNAT
	netip.MustParsePrefix("192.0.0.0/24"),
	netip.MustParsePrefix("198.18.0.0/15"),
	netip.MustParsePrefix("240.0.0.0/4"),
	netip.MustParsePrefix("64:ff9b::/96"), // NAT64 of any IPv4, a private one too
	netip.MustParsePrefix("2001:db8::/32"),
}

// CheckWebhookURL refuses a webhook URL that can never be delivered: not
// http(s), no host, credentials in it, too long, or an IP literal that is
// not public while private addresses are not allowed. Host names are
// checked where it matters, at each connection (WebhookClient).
func CheckWebhookURL(raw string, allowPrivate bool) error {
	if len(raw) > jobqueue.MaxWebhookURL {
		return fmt.Errorf("webhook URL over %d bytes", jobqueue.MaxWebhookURL)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return errors.New("webhook is not a URL")
	}
	if u.Scheme != "https" && u.Scheme != "http" {
		return errors.New("webhook URL must be http or https")
	}
	if u.Host == "" || u.Hostname() == "" {
		return errors.New("webhook URL has no host")
	}
	if u.User != nil {
		return errors.New("webhook URL must not carry credentials")
	}
	if ip, err := netip.ParseAddr(strings.Trim(u.Hostname(), "[]")); err == nil && !allowPrivate && !PublicAddr(ip) {
		return fmt.Errorf("%w: %s", ErrPrivateAddress, ip)
	}
	return nil
}

// WebhookClient is the HTTP client of webhook deliveries: each connection's
// address is checked as it is dialled, after the name is resolved (a name
// that resolves to a public address when the URL is checked and to a
// private one at delivery, DNS rebinding, is refused all the same); no
// proxy, no redirect followed, a deadline on the whole delivery.
func WebhookClient(timeout time.Duration, allowPrivate bool) *http.Client {
	d := &net.Dialer{Timeout: timeout}
	if !allowPrivate {
		d.Control = func(_, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil || !PublicAddr(ap.Addr()) {
				return fmt.Errorf("%w: %s", ErrPrivateAddress, address)
			}
			return nil
		}
	}
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			Proxy:                 nil,
			DialContext:           d.DialContext,
			TLSHandshakeTimeout:   timeout,
			ResponseHeaderTimeout: timeout,
			MaxIdleConnsPerHost:   2,
			IdleConnTimeout:       30 * time.Second,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// WebhookConfig tunes a Webhooks sender.
type WebhookConfig struct {
	Timeout      time.Duration // one delivery, connection to answer
	MaxAttempts  int           // deliveries of one event before it is given up (failed)
	Poll         time.Duration // how long an idle sender waits before asking again
	AllowPrivate bool          // deliver to private and loopback addresses too (an operator's choice; tests)
}

// Webhooks delivers jobs' ends to their webhooks, signed with the
// account's secret (customerapi.SignWebhook), retried with backoff.
type Webhooks struct {
	cfg    WebhookConfig
	store  *jobqueue.Store
	client *http.Client
	log    *slog.Logger
	now    func() time.Time
}

// NewWebhooks is a sender on store.
func NewWebhooks(cfg WebhookConfig, store *jobqueue.Store, log *slog.Logger) *Webhooks {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 8
	}
	if cfg.Poll <= 0 {
		cfg.Poll = time.Second
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Webhooks{cfg: cfg, store: store, client: WebhookClient(cfg.Timeout, cfg.AllowPrivate), log: log, now: time.Now}
}

// Run delivers until ctx ends.
func (h *Webhooks) Run(ctx context.Context) {
	for ctx.Err() == nil {
		worked, err := h.Step(ctx)
		if err != nil && ctx.Err() == nil {
			h.log.Warn("webhook step failed", "err", err)
		}
		if worked && err == nil {
			continue
		}
		select {
		case <-ctx.Done():
		case <-time.After(jitter(h.cfg.Poll)):
		}
	}
}

// WebhookBackoff is the wait after a delivery's attempt-th failure: 2 s
// doubling, at most 10 minutes.
func WebhookBackoff(attempt int) time.Duration {
	return doubling(2*time.Second, 10*time.Minute, attempt)
}

// maxWebhookAnswer is what is read of a receiver's answer (then dropped).
const maxWebhookAnswer = 4 << 10

// Step delivers one due webhook; worked says whether one was due.
func (h *Webhooks) Step(ctx context.Context) (bool, error) {
	d, err := h.store.ClaimWebhook(ctx, 2*h.cfg.Timeout+5*time.Second)
	if err != nil || d == nil {
		return false, err
	}
	derr := h.deliver(ctx, d)
	if derr == nil {
		h.log.Info("webhook delivered", "job", d.Job.ID, "attempt", d.Attempt)
		return true, h.store.WebhookResult(ctx, d.Job.ID, true, "", 0)
	}
	msg := derr.Error()
	if len(msg) > 300 {
		msg = msg[:300]
	}
	var retry time.Duration
	if d.Attempt < h.cfg.MaxAttempts {
		retry = WebhookBackoff(d.Attempt)
	}
	h.log.Info("webhook delivery failed", "job", d.Job.ID, "attempt", d.Attempt, "retry_in", retry, "err", msg)
	return true, h.store.WebhookResult(ctx, d.Job.ID, false, msg, retry)
}

func (h *Webhooks) deliver(ctx context.Context, d *jobqueue.Delivery) error {
	ev := customerapi.WebhookEvent{Type: "job." + d.Job.State, Job: View(d.Job)}
	body, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, h.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.Job.WebhookURL, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("webhook request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "nlpswarm-webhook/1")
	req.Header.Set(customerapi.SignatureHeader, customerapi.SignWebhook(d.Secret, h.now(), body))
	resp, err := h.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxWebhookAnswer))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("receiver answered %d", resp.StatusCode)
	}
	return nil
}

// View is job as the customer API shows it.
func View(j *jobqueue.Job) customerapi.Job {
	v := customerapi.Job{
		ID: j.ID, Model: j.Model, Task: j.Task, State: j.State, Total: j.Total, Done: j.Done, Failed: j.Failed,
		URL: customerapi.JobPath(j.ID), ResultsURL: customerapi.JobResultsPath(j.ID), ErrorsURL: customerapi.JobErrorsPath(j.ID),
		CreatedAt: j.CreatedAt.UTC(), StartedAt: j.StartedAt, FinishedAt: j.FinishedAt,
	}
	if j.WebhookURL != "" {
		state := j.WebhookState
		if state == jobqueue.WebhookNone {
			state = "waiting" // for the job's end
		}
		v.Webhook = &customerapi.Webhook{URL: j.WebhookURL, State: state, Attempts: j.WebhookAttempts, LastError: j.WebhookError}
	}
	return v
}
