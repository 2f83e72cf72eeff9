package deployments

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

type composeFile struct {
	Version  string                    `yaml:"version"`
	Services map[string]composeService `yaml:"services"`
	Networks map[string]struct {
		External   bool              `yaml:"external"`
		Name       string            `yaml:"name"`
		Driver     string            `yaml:"driver"`
		DriverOpts map[string]string `yaml:"driver_opts"`
		Attachable bool              `yaml:"attachable"`
	} `yaml:"networks"`
	Secrets map[string]struct {
		External bool   `yaml:"external"`
		Name     string `yaml:"name"`
	} `yaml:"secrets"`
}

type composeService struct {
	Image       string            `yaml:"image"`
	Command     []string          `yaml:"command"`
	Secrets     []string          `yaml:"secrets"`
	Networks    []string          `yaml:"networks"`
	Environment map[string]string `yaml:"environment"`
	Ports       []struct {
		Target    int    `yaml:"target"`
		Published int    `yaml:"published"`
		Mode      string `yaml:"mode"`
	} `yaml:"ports"`
	Healthcheck *struct {
		Test []string `yaml:"test"`
	} `yaml:"healthcheck"`
	Deploy struct {
		Labels       map[string]string `yaml:"labels"`
		Mode         string            `yaml:"mode"`
		EndpointMode string            `yaml:"endpoint_mode"`
		Placement    struct {
			Constraints []string `yaml:"constraints"`
		} `yaml:"placement"`
		Resources struct {
			Limits struct {
				CPUs   string `yaml:"cpus"`
				Memory string `yaml:"memory"`
			} `yaml:"limits"`
			Reservations struct {
				Memory string `yaml:"memory"`
			} `yaml:"reservations"`
		} `yaml:"resources"`
		Replicas      *int `yaml:"replicas"`
		RestartPolicy *struct {
			Condition string `yaml:"condition"`
		} `yaml:"restart_policy"`
	} `yaml:"deploy"`
}

func load(t *testing.T) composeFile {
	t.Helper()
	return loadFile(t, filepath.Join("..", "docker-compose.yml"))
}

// loadFile reads a compose file (an overlay too) with its defaults applied.
func loadFile(t *testing.T, path string) composeFile {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// the engine's interpolation, defaults only: ${VAR:-default} -> default
	b = regexp.MustCompile(`\$\{[A-Z_]+:-([^}]*)\}`).ReplaceAll(b, []byte("$1"))
	var c composeFile
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return c
}

func TestStackServices(t *testing.T) {
	c := load(t)
	if c.Version != "3.8" {
		t.Errorf("compose version %q, want 3.8", c.Version)
	}
	want := map[string]struct {
		constraint string
		secrets    []string
		hostPort   int
		global     bool
	}{
		"postgres":   {constraint: "node.labels.type == database", secrets: []string{"db_password", "db_password_apiserver", "db_password_scheduler", "db_password_gateway", "db_password_agent"}},
		"redis":      {constraint: "node.labels.type == database", secrets: []string{"redis_password", "redis_password_gateway", "redis_password_scheduler", "redis_password_apiserver"}},
		"migrate":    {constraint: "node.labels.type == database", secrets: []string{"db_password"}},
		"apiserver":  {constraint: "node.labels.type == database", secrets: []string{"db_password_apiserver", "admin_token", "internal_token", "redis_password_apiserver", "scheduler_read_token"}},
		"scheduler":  {constraint: "node.role == manager", secrets: []string{"db_password_scheduler", "redis_password_scheduler", "internal_token", "replica_call_secret", "scheduler_read_token"}},
		"gateway":    {secrets: []string{"db_password_gateway", "redis_password_gateway", "gateway_key_secret", "replica_call_secret"}, hostPort: 8080},
		"agent":      {constraint: "node.labels.type == machine-learning", secrets: []string{"db_password_agent"}, global: true},
		"prometheus": {constraint: "node.role == manager", secrets: []string{"scheduler_read_token"}},
	}
	for name, w := range want {
		s, ok := c.Services[name]
		if !ok {
			t.Errorf("service %s missing", name)
			continue
		}
		if s.Deploy.EndpointMode != "dnsrr" {
			t.Errorf("%s: endpoint_mode %q, want dnsrr (no IP_VS)", name, s.Deploy.EndpointMode)
		}
		if w.constraint != "" && !contains(s.Deploy.Placement.Constraints, w.constraint) {
			t.Errorf("%s: constraints %v lack %q", name, s.Deploy.Placement.Constraints, w.constraint)
		}
		if s.Deploy.Resources.Limits.Memory == "" || s.Deploy.Resources.Limits.CPUs == "" || s.Deploy.Resources.Reservations.Memory == "" {
			t.Errorf("%s: resources incomplete: %+v", name, s.Deploy.Resources)
		}
		if s.Deploy.RestartPolicy == nil || s.Deploy.RestartPolicy.Condition == "" {
			t.Errorf("%s: no restart policy", name)
		}
		for _, sec := range w.secrets {
			if !contains(s.Secrets, sec) {
				t.Errorf("%s: secrets %v lack %s", name, s.Secrets, sec)
			}
			if _, ok := c.Secrets[sec]; !ok {
				t.Errorf("secret %s not declared", sec)
			}
		}
		if w.global != (s.Deploy.Mode == "global") {
			t.Errorf("%s: mode %q", name, s.Deploy.Mode)
		}
		for _, p := range s.Ports {
			if p.Mode != "host" {
				t.Errorf("%s: port %d published in mode %q, want host (no routing mesh)", name, p.Target, p.Mode)
			}
		}
		// a published port (customers, model owners) must not show metrics:
		// they name every model and its traffic
		if port := s.Deploy.Labels["nlpswarm.metrics.port"]; len(s.Ports) > 0 && port != "" && (strings.HasPrefix(s.Image, "${NLPSWARM_IMAGE") || s.Image == "nlpswarm:dev") {
			for _, p := range s.Ports {
				if strconv.Itoa(p.Target) == port {
					t.Errorf("%s: metrics on the published port %d", name, p.Target)
				}
			}
			if !contains(s.Command, "--opslisten=:"+port) {
				t.Errorf("%s: command %v does not serve metrics on the labelled port %q", name, s.Command, port)
			}
		}
		if w.hostPort != 0 && (len(s.Ports) != 1 || s.Ports[0].Published != w.hostPort) {
			t.Errorf("%s: ports %+v, want %d in host mode", name, s.Ports, w.hostPort)
		}
		if strings.HasPrefix(s.Image, "${NLPSWARM_IMAGE") || s.Image == "nlpswarm:dev" {
			// migrate is a one-shot: it serves nothing to check
			if s.Healthcheck == nil && name != "agent" && name != "scheduler" && name != "migrate" {
				t.Errorf("%s: no healthcheck", name)
			}
			if s.Healthcheck != nil && (s.Healthcheck.Test[0] != "CMD" || s.Healthcheck.Test[1] != "/usr/local/bin/nlpswarm") {
				t.Errorf("%s: healthcheck %v is not exec-form nlpswarm healthcheck (scratch has no shell)", name, s.Healthcheck.Test)
			}
		}
		// Swarm expands {{.Node.ID}} and friends in env, hostname and
		// mounts, never in the command: there it stays literal
		for _, a := range s.Command {
			if strings.Contains(a, "{{") {
				t.Errorf("%s: template in a command argument, which Swarm passes unexpanded: %s (use the NLPSWARM_* variable)", name, a)
			}
		}
		// secrets never ride in the command line or the environment
		for _, a := range s.Command {
			if strings.Contains(a, "password=") || strings.Contains(a, "token=") {
				t.Errorf("%s: secret in command: %s", name, a)
			}
		}
		for k := range s.Environment {
			if strings.Contains(strings.ToUpper(k), "PASSWORD") && !strings.HasSuffix(k, "_FILE") {
				t.Errorf("%s: secret in env %s", name, k)
			}
		}
	}
	for name, s := range c.Secrets {
		if !s.External || !strings.HasPrefix(s.Name, "nlpswarm_") {
			t.Errorf("secret %s: want external nlpswarm_* (created by make up), got %+v", name, s)
		}
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// The agent runs the cgo image (NVML), not the static one, on every
// machine-learning node, and asks the NVIDIA container runtime for the
// devices and the management library (utility) only.
func TestAgentService(t *testing.T) {
	a := load(t).Services["agent"]
	if a.Image != "nlpswarm-agent:dev" {
		t.Errorf("agent image %q, want the cgo nlpswarm-agent image (the static image cannot load NVML)", a.Image)
	}
	if a.Deploy.Mode != "global" || !contains(a.Deploy.Placement.Constraints, "node.labels.type == machine-learning") {
		t.Errorf("agent: mode %q, constraints %v: want global on the machine-learning nodes", a.Deploy.Mode, a.Deploy.Placement.Constraints)
	}
	if a.Environment["NVIDIA_VISIBLE_DEVICES"] != "all" || a.Environment["NVIDIA_DRIVER_CAPABILITIES"] != "utility" {
		t.Errorf("agent env %v: want NVIDIA_VISIBLE_DEVICES=all, NVIDIA_DRIVER_CAPABILITIES=utility", a.Environment)
	}
}

// The engine's own parser accepts the file and its overlays.
func TestStackConfigAccepted(t *testing.T) {
	for _, overlay := range overlays {
		stackConfig(t, overlay)
	}
}

// overlays are the stack's overlays, "" for docker-compose.yml alone.
var overlays = []string{"", "production.yml", "staging.yml", "lab.yml"}

// stackConfig is the merged stack `docker stack config` writes for
// docker-compose.yml and overlay; it skips without a CLI that has it.
func stackConfig(t *testing.T, overlay string) []byte {
	t.Helper()
	if _, err := exec.LookPath("docker"); err != nil {
		t.Skip("no docker CLI")
	}
	args := []string{"stack", "config", "-c", "../docker-compose.yml"}
	if overlay != "" {
		args = append(args, "-c", overlay)
	}
	var stderr bytes.Buffer
	cmd := exec.Command("docker", args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		if strings.Contains(stderr.String(), "unknown command") || strings.Contains(stderr.String(), "is not a docker command") {
			t.Skip("docker stack config not supported by this CLI")
		}
		t.Fatalf("docker %v: %v\n%s", args, err, stderr.String())
	}
	return out
}

// The dashboard is valid JSON and each panel queries a metric the platform
// exports (requests, latency, errors, replicas, GPU memory).
func TestDashboard(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("grafana", "nlpswarm-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	all := ""
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			all += tg.Expr + "\n"
		}
	}
	for _, m := range []string{"nlpswarm_gateway_requests_total", "nlpswarm_gateway_request_duration_seconds_bucket",
		"nlpswarm_gateway_upstream_errors_total", "nlpswarm_gateway_replicas", "nlpswarm_agent_gpu_memory_free_bytes"} {
		if !strings.Contains(all, m) {
			t.Errorf("dashboard does not chart %s", m)
		}
	}
}

// A service publishing a host-mode port must not update start-first: the
// new task cannot bind the port beside the old one on a node, and with one
// eligible node (the lab's apiserver) the update waits forever (make
// chaos's StackUpgrade, issue 18). Checked on the merged stack of every
// overlay, as `docker stack config` writes it.
func TestHostPortsUpdateStopFirst(t *testing.T) {
	for _, overlay := range overlays {
		out := stackConfig(t, overlay)
		var c struct {
			Services map[string]struct {
				Ports []struct {
					Mode string `yaml:"mode"`
				} `yaml:"ports"`
				Deploy struct {
					UpdateConfig struct {
						Order string `yaml:"order"`
					} `yaml:"update_config"`
				} `yaml:"deploy"`
			} `yaml:"services"`
		}
		if err := yaml.Unmarshal(out, &c); err != nil {
			t.Fatalf("stack config with %q: %v", overlay, err)
		}
		for name, svc := range c.Services {
			for _, p := range svc.Ports {
				if p.Mode == "host" && svc.Deploy.UpdateConfig.Order == "start-first" {
					t.Errorf("%s (overlay %q): host-mode port with a start-first update", name, overlay)
				}
			}
		}
	}
}
