package deployments

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// Prometheus finds its targets through the scheduler's HTTP service
// discovery (scheduler/sd.go) and runs as its image's non-root user with no
// Docker socket, in the stack and in every overlay (issue 17).
func TestStackPrometheusWithoutSocket(t *testing.T) {
	type svc struct {
		User    *string `yaml:"user"`
		Volumes []any   `yaml:"volumes"` // short or long syntax
	}
	for _, f := range []string{"../docker-compose.yml", "staging.yml", "production.yml", "lab.yml"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var c struct {
			Services map[string]svc `yaml:"services"`
		}
		if err := yaml.Unmarshal(b, &c); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		p := c.Services["prometheus"]
		if p.User != nil {
			t.Errorf("%s: prometheus sets user %q; it runs as its image's non-root user", f, *p.User)
		}
		for _, v := range p.Volumes {
			if strings.Contains(fmt.Sprint(v), "docker.sock") {
				t.Errorf("%s: prometheus mounts the Docker socket (%s)", f, v)
			}
		}
	}

	b, err := os.ReadFile(filepath.Join("prometheus", "prometheus.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var pc struct {
		ScrapeConfigs []map[string]any `yaml:"scrape_configs"`
	}
	if err := yaml.Unmarshal(b, &pc); err != nil {
		t.Fatal(err)
	}
	urls := []string{}
	for _, sc := range pc.ScrapeConfigs {
		for k := range sc {
			if strings.HasSuffix(k, "_sd_configs") && k != "http_sd_configs" {
				t.Errorf("job %v uses %s; only the scheduler's http_sd_configs need no socket", sc["job_name"], k)
			}
		}
		sds, _ := sc["http_sd_configs"].([]any)
		for _, sd := range sds {
			if m, ok := sd.(map[string]any); ok {
				urls = append(urls, m["url"].(string))
			}
		}
	}
	// scheduler.SDPath, on the scheduler's --listen port, which both reach on control
	if !slices.Equal(urls, []string{"http://scheduler:8082/sd"}) {
		t.Errorf("http_sd_configs urls %v, want the scheduler's /sd", urls)
	}
	stack := load(t)
	if !slices.Contains(stack.Services["scheduler"].Command, "--listen=:8082") {
		t.Errorf("the scheduler does not listen on :8082: %v", stack.Services["scheduler"].Command)
	}
	for _, name := range []string{"scheduler", "prometheus"} {
		if !slices.Contains(stack.Services[name].Networks, "control") {
			t.Errorf("%s is not on the control network", name)
		}
	}

	// the image built without a registry runs as the package's user
	df, err := os.ReadFile(filepath.Join("images", "prometheus", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	if m := regexp.MustCompile(`(?m)^USER\s+(\S+)`).FindSubmatch(df); m == nil || string(m[1]) == "root" || string(m[1]) == "0" {
		t.Errorf("images/prometheus/Dockerfile has no non-root USER")
	}
}
