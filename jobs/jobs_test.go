package jobs

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"
)

func TestDecide(t *testing.T) {
	retryable := &CallError{Code: "no_replica", Retryable: true}
	refused := &CallError{Code: "model_rejected_input"}
	for _, c := range []struct {
		name         string
		err          error
		attempt, max int
		want         Action
	}{
		{"answered", nil, 1, 3, Answered},
		{"retryable, attempts left", retryable, 1, 3, RetryBatch},
		{"retryable, last attempt", retryable, 3, 3, OneByOne},
		{"refused input", refused, 1, 3, OneByOne},
		{"plain error is retryable", errors.New("conn reset"), 2, 3, RetryBatch},
		{"plain error, spent", errors.New("conn reset"), 3, 3, OneByOne},
	} {
		if got := Decide(c.err, c.attempt, c.max); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

func TestBackoff(t *testing.T) {
	for _, c := range []struct {
		n    int
		want time.Duration
	}{{1, time.Second}, {2, 2 * time.Second}, {3, 4 * time.Second}, {7, time.Minute}, {100, time.Minute}} {
		if got := Backoff(c.n); got != c.want {
			t.Errorf("Backoff(%d) = %s, want %s", c.n, got, c.want)
		}
	}
	for _, c := range []struct {
		n    int
		want time.Duration
	}{{1, 2 * time.Second}, {2, 4 * time.Second}, {9, 8*time.Minute + 32*time.Second}, {10, 10 * time.Minute}} {
		if got := WebhookBackoff(c.n); got != c.want {
			t.Errorf("WebhookBackoff(%d) = %s, want %s", c.n, got, c.want)
		}
	}
	for i := 0; i < 100; i++ {
		if j := jitter(time.Second); j < 800*time.Millisecond || j > 1200*time.Millisecond {
			t.Fatalf("jitter %s", j)
		}
	}
}

func TestPublicAddr(t *testing.T) {
	for s, want := range map[string]bool{
		"8.8.8.8": true, "2606:4700::1111": true, "93.184.216.34": true,
		"127.0.0.1": false, "::1": false, "10.1.2.3": false, "172.16.0.1": false, "192.168.1.1": false,
		"169.254.169.254": false, "fe80::1": false, "fc00::1": false, "0.0.0.0": false, "::": false,
		"100.64.0.1": false, "224.0.0.1": false, "::ffff:127.0.0.1": false, "::ffff:10.0.0.1": false,
		"64:ff9b::a00:1": false, "255.255.255.255": false,
	} {
		if got := PublicAddr(netip.MustParseAddr(s)); got != want {
			t.Errorf("PublicAddr(%s) = %v, want %v", s, got, want)
		}
	}
}

func TestCheckWebhookURL(t *testing.T) {
	for _, c := range []struct {
		url          string
		allowPrivate bool
		ok           bool
	}{
		{"https://hooks.example.com/nlp", false, true},
		{"http://hooks.example.com:8080/x?y=1", false, true},
		{"ftp://example.com/", false, false},
		{"https://user:pw@example.com/", false, false},
		{"https:///path", false, false},
		{"http://127.0.0.1:8000/", false, false},
		{"http://127.0.0.1:8000/", true, true},
		{"http://[::1]/", false, false},
		{"http://169.254.169.254/latest/meta-data/", false, false},
		{"http://10.0.0.7/", false, false},
		{"http://localhost/", false, true}, // a name: checked when dialled
		{"https://example.com/" + string(make([]byte, 3000)), false, false},
	} {
		err := CheckWebhookURL(c.url, c.allowPrivate)
		if (err == nil) != c.ok {
			t.Errorf("CheckWebhookURL(%.60q, %v) = %v", c.url, c.allowPrivate, err)
		}
	}
}

// A name that resolves to loopback (as a DNS rebinding would) is refused
// at dial time; with the operator's flag it is delivered. Redirects are
// not followed.
func TestWebhookClientDialCheck(t *testing.T) {
	hits := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits++
		if r.URL.Path == "/redirect" {
			http.Redirect(w, r, "/elsewhere", http.StatusFound)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	_, port, _ := netipSplit(srv.Listener.Addr().String())
	url := "http://localhost:" + port + "/"
	ctx := context.Background()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, nil)
	if _, err := WebhookClient(time.Second, false).Do(req); !errors.Is(err, ErrPrivateAddress) {
		t.Fatalf("loopback through a name: %v", err)
	}
	if hits != 0 {
		t.Fatal("the refused delivery reached the server")
	}
	req, _ = http.NewRequestWithContext(ctx, http.MethodPost, url+"redirect", nil)
	resp, err := WebhookClient(time.Second, true).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || hits != 1 {
		t.Fatalf("redirect: %d after %d hits", resp.StatusCode, hits)
	}
}

func netipSplit(addr string) (netip.Addr, string, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return netip.Addr{}, "", err
	}
	return ap.Addr(), ap.String()[len(ap.Addr().String())+1:], nil
}
