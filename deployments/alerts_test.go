package deployments

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/nlpswarm/nlpswarm/internal/promcheck"
)

// The stack's alert rules: well formed, one per thing an operator must hear
// about, each naming only metrics the code exports, and wired into
// Prometheus (rule_files) and the stack (a config mounted where rule_files
// points).
func TestAlertRules(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("prometheus", "alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Expr        string            `yaml:"expr"`
				For         string            `yaml:"for"`
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&doc); err != nil {
		t.Fatalf("alerts.yml: %v", err)
	}
	exported, err := promcheck.Exported("..")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, g := range doc.Groups {
		for _, r := range g.Rules {
			names = append(names, r.Alert)
			if r.Alert == "" || r.Expr == "" || r.Labels["severity"] == "" || r.Annotations["summary"] == "" {
				t.Errorf("rule %q: needs alert, expr, a severity label and a summary", r.Alert)
			}
			if _, err := time.ParseDuration(r.For); err != nil {
				t.Errorf("rule %s: for %q: %v", r.Alert, r.For, err)
			}
			if u := promcheck.Unknown(r.Expr, exported); len(u) > 0 {
				t.Errorf("rule %s names metrics nothing exports: %v", r.Alert, u)
			}
			if strings.Count(r.Expr, "(") != strings.Count(r.Expr, ")") {
				t.Errorf("rule %s: unbalanced parentheses", r.Alert)
			}
		}
	}
	for _, want := range []string{"NlpswarmReplicaDown", "NlpswarmErrorRateHigh", "NlpswarmModelP99High", "NlpswarmQuotaNearlyUsed", "NlpswarmGPUMemoryFull"} {
		if !slices.Contains(names, want) {
			t.Errorf("no rule %s", want)
		}
	}
	prom, err := os.ReadFile(filepath.Join("prometheus", "prometheus.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var pc struct {
		RuleFiles []string `yaml:"rule_files"`
	}
	if err := yaml.Unmarshal(prom, &pc); err != nil || !slices.Contains(pc.RuleFiles, "/etc/prometheus/alerts.yml") {
		t.Errorf("prometheus.yml does not load /etc/prometheus/alerts.yml: %v %v", pc.RuleFiles, err)
	}
	var stack struct {
		Services map[string]struct {
			Configs []struct{ Source, Target string } `yaml:"configs"`
		} `yaml:"services"`
		Configs map[string]struct{ File string } `yaml:"configs"`
	}
	sb, _ := os.ReadFile(filepath.Join("..", "docker-compose.yml"))
	if err := yaml.Unmarshal(sb, &stack); err != nil {
		t.Fatal(err)
	}
	mounted := false
	for _, c := range stack.Services["prometheus"].Configs {
		if c.Target == "/etc/prometheus/alerts.yml" && stack.Configs[c.Source].File == "./deployments/prometheus/alerts.yml" {
			mounted = true
		}
	}
	if !mounted {
		t.Error("the stack does not mount deployments/prometheus/alerts.yml at /etc/prometheus/alerts.yml")
	}
	// Prometheus's own check, where its tool is installed
	if tool, err := exec.LookPath("promtool"); err == nil {
		if out, err := exec.Command(tool, "check", "rules", filepath.Join("prometheus", "alerts.yml")).CombinedOutput(); err != nil {
			t.Errorf("promtool check rules: %v\n%s", err, out)
		}
	}
}
