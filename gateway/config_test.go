package gateway

import (
	"strings"
	"testing"
	"time"
)

func TestConfigSettle(t *testing.T) {
	for _, c := range []struct {
		name    string
		edit    func(*Config)
		wantErr string // "" when accepted
		check   func(settings) bool
	}{
		{"defaults", func(*Config) {}, "", func(s settings) bool {
			_, ok := s.policy.(LeastOutstanding)
			return ok && s.KeyCacheTTL == 2*time.Second && s.DeadReplicaAfter == 5*time.Second && len(s.modelTimeouts) == 0 && s.GatewayID != ""
		}},
		{"zero takes the default", func(c *Config) { c.Timeout, c.HoldMax, c.WakeResend = 0, -1, 0 }, "", func(s settings) bool {
			return s.Timeout == 30*time.Second && s.HoldMax == 100 && s.WakeResend == 5*time.Second
		}},
		{"key cache at most 2s", func(c *Config) { c.KeyCacheTTL = 3 * time.Second }, "--keycachettl", nil},
		{"model timeouts", func(c *Config) { c.ModelTimeouts = " slow=2m, fast=200ms ," }, "", func(s settings) bool {
			return s.modelTimeouts["slow"] == 2*time.Minute && s.modelTimeouts["fast"] == 200*time.Millisecond && len(s.modelTimeouts) == 2
		}},
		{"model timeout without a duration", func(c *Config) { c.ModelTimeouts = "slow" }, "--modeltimeouts", nil},
		{"model timeout negative", func(c *Config) { c.ModelTimeouts = "slow=-1s" }, "--modeltimeouts", nil},
		{"model timeout without a name", func(c *Config) { c.ModelTimeouts = "=1s" }, "--modeltimeouts", nil},
		{"round robin", func(c *Config) { c.Balancer = "round-robin" }, "", func(s settings) bool {
			_, ok := s.policy.(*RoundRobin)
			return ok
		}},
		{"upstream default", func(c *Config) { c.Upstream = "" }, "", func(s settings) bool { return s.Upstream == "fast" }},
		{"upstream nethttp", func(c *Config) { c.Upstream = "nethttp" }, "", func(s settings) bool { return s.Upstream == "nethttp" }},
		{"unknown upstream", func(c *Config) { c.Upstream = "curl" }, "--upstream", nil},
		{"unknown balancer", func(c *Config) { c.Balancer = "random" }, "--balancer", nil},
	} {
		cfg := DefaultConfig()
		c.edit(&cfg)
		s, err := cfg.settle()
		switch {
		case c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)):
			t.Errorf("%s: error %v, want one naming %s", c.name, err, c.wantErr)
		case c.wantErr == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.check != nil && !c.check(s):
			t.Errorf("%s: settled as %+v", c.name, s)
		}
	}
}

func TestConfigDiscovery(t *testing.T) {
	for _, c := range []struct {
		kind, static string
		ok           bool
	}{
		{"dns", "", true}, {"", "", true}, {"static", "a=127.0.0.1:1|127.0.0.1:2", true},
		{"static", "", false}, {"static", "a=nohost", false}, {"consul", "", false},
	} {
		cfg := DefaultConfig()
		cfg.Discovery, cfg.Static.Upstreams = c.kind, c.static
		if err := cfg.Check(); (err == nil) != c.ok {
			t.Errorf("discovery %q static %q: %v", c.kind, c.static, err)
		}
	}
}
