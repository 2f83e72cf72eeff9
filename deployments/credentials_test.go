package deployments

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// Issue 17: the two bearer credentials of the control plane and the
// runtimes are wired end to end, each from one Docker secret, held by its
// two sides only. The replica call secret: the scheduler derives each
// model service's call credential from it, the gateway the same credential
// for every upstream request. The scheduler read token: /plan and /sd
// require it, the apiserver's relay and Prometheus's service discovery send
// it.
func TestStackCredentialWiring(t *testing.T) {
	c := load(t)
	holders := func(secret string) []string {
		var out []string
		for name, s := range c.Services {
			if slices.Contains(s.Secrets, secret) {
				out = append(out, name)
			}
		}
		slices.Sort(out)
		return out
	}
	for _, w := range []struct {
		secret  string
		holders []string
		flags   map[string]string // service -> its flag naming the secret's file
	}{
		{"replica_call_secret", []string{"gateway", "scheduler"}, map[string]string{"gateway": "callsecretfile", "scheduler": "callsecretfile"}},
		{"scheduler_read_token", []string{"apiserver", "prometheus", "scheduler"}, map[string]string{"scheduler": "readtokenfile", "apiserver": "scheduler.tokenfile"}},
	} {
		if got := holders(w.secret); !slices.Equal(got, w.holders) {
			t.Errorf("secret %s is held by %v, want %v only", w.secret, got, w.holders)
		}
		if s, ok := c.Secrets[w.secret]; !ok || s.Name != "nlpswarm_"+w.secret {
			t.Errorf("secret %s: declared %+v, want external nlpswarm_%s (make up creates it)", w.secret, s, w.secret)
		}
		for svc, f := range w.flags {
			if got := flag(c.Services[svc].Command, f); got != "/run/secrets/"+w.secret {
				t.Errorf("%s --%s=%q, want /run/secrets/%s", svc, f, got, w.secret)
			}
		}
	}
	// make up creates both
	up, err := os.ReadFile("up.sh")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"replica_call_secret", "scheduler_read_token"} {
		if !strings.Contains(string(up), " "+s) {
			t.Errorf("up.sh does not create the secret %s", s)
		}
	}
	// Prometheus sends the read token with its service discovery requests
	b, err := os.ReadFile(filepath.Join("prometheus", "prometheus.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var pc struct {
		ScrapeConfigs []struct {
			HTTPSD []struct {
				URL           string `yaml:"url"`
				Authorization struct {
					Type            string `yaml:"type"`
					CredentialsFile string `yaml:"credentials_file"`
				} `yaml:"authorization"`
			} `yaml:"http_sd_configs"`
		} `yaml:"scrape_configs"`
	}
	if err := yaml.Unmarshal(b, &pc); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, sc := range pc.ScrapeConfigs {
		for _, sd := range sc.HTTPSD {
			n++
			if a := sd.Authorization; a.CredentialsFile != "/run/secrets/scheduler_read_token" || (a.Type != "" && a.Type != "Bearer") {
				t.Errorf("http_sd_configs %s: authorization %+v, want Bearer from /run/secrets/scheduler_read_token", sd.URL, a)
			}
		}
	}
	if n == 0 {
		t.Fatal("no http_sd_configs in prometheus.yml")
	}
}
