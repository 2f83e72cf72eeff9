package deployments

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The stack's attack surfaces (issue 17). Each test fails on the stack as
// it was before: every admin surface published on all interfaces, one
// attachable unencrypted overlay for everything, an open Redis, one
// Postgres superuser for every service.

// flag returns the value of --name=value in a command ("" if absent).
func flag(cmd []string, name string) string {
	for _, a := range cmd {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v
		}
	}
	return ""
}

// Finding 3: only the customer gateway is published; the backoffice,
// Prometheus and the artifact endpoint are not (make up's loopback
// forwarder reaches the first two, the runtimes the last on the overlay).
func TestOnlyTheGatewayIsPublished(t *testing.T) {
	c := load(t)
	for name, s := range c.Services {
		if name != "gateway" && len(s.Ports) > 0 {
			t.Errorf("%s publishes %+v: Swarm host-mode ports bind every interface of the node", name, s.Ports)
		}
	}
	api := c.Services["apiserver"]
	ops := flag(api.Command, "opslisten")
	if ops == "" || ops == flag(api.Command, "listen") {
		t.Fatalf("apiserver: --opslisten %q must be an address of its own (the artifact endpoint lives there)", ops)
	}
	base := flag(c.Services["scheduler"].Command, "artifactbaseurl")
	if !strings.HasSuffix(base, ops) {
		t.Errorf("scheduler: runtimes download from %q, not the apiserver's ops address %q", base, ops)
	}
	// make up's forwarder listens on loopback by default
	b, err := os.ReadFile("up.sh")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`BACKOFFICE_ADDR=${BACKOFFICE_ADDR:-127.0.0.1}`, `-p "$BACKOFFICE_ADDR:8081:8081"`, `-p "$PROMETHEUS_ADDR:9090:9090"`, "--network nlpswarm-admin"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("up.sh lacks %s", want)
		}
	}
}

// Finding 6: two overlays that nothing but the stack can join, runtimes
// apart from Postgres and Redis; the forwarder's network holds only what it
// forwards to; the production overlay encrypts all three (the test
// machines' kernels cannot: docker-compose.yml).
func TestNetworksSegmented(t *testing.T) {
	c := load(t)
	prod := loadFile(t, "production.yml")
	byName := map[string]string{} // compose key → Docker name
	for key, n := range c.Networks {
		byName[key] = n.Name
		if n.External {
			t.Errorf("network %s is external: the stack must make it", key)
		}
		if n.Driver != "overlay" {
			t.Errorf("network %s: driver %q", key, n.Driver)
		}
		if n.Attachable && key != "admin" {
			t.Errorf("network %s is attachable: any docker run container could join it", key)
		}
		p, ok := prod.Networks[key]
		if _, enc := p.DriverOpts["encrypted"]; !ok || !enc || p.Name != n.Name || p.Attachable != n.Attachable || p.Driver != "overlay" {
			t.Errorf("production.yml: network %s is not the same network encrypted: %+v", key, p)
		}
	}
	want := map[string][]string{
		"postgres":   {"control"},
		"redis":      {"control"},
		"apiserver":  {"admin", "control", "runtimes"},
		"scheduler":  {"control"},
		"gateway":    {"control", "runtimes"},
		"agent":      {"control"},
		"prometheus": {"admin", "control", "runtimes"},
	}
	for name, nets := range want {
		got := slices.Sorted(slices.Values(c.Services[name].Networks))
		if !slices.Equal(got, nets) {
			t.Errorf("%s joins %v, want %v", name, got, nets)
		}
	}
	if got := flag(c.Services["scheduler"].Command, "network"); got == "" || got != byName["runtimes"] {
		t.Errorf("scheduler attaches model services to %q, want the runtimes network %q", got, byName["runtimes"])
	}
}

// Finding 4 (the stack's side): Redis's default user is off; the gateway,
// the scheduler and the apiserver (account pages) log in as their own ACL users (roles.acl, tested in
// TestGatewayRedisRole and TestSchedulerRedisRole); none holds the ops
// user's password; there is a memory cap with a policy.
func TestRedisRequiresAPassword(t *testing.T) {
	c := load(t)
	r := c.Services["redis"]
	if !contains(r.Secrets, "redis_password") || r.Environment["REDIS_PASSWORD_FILE"] != "/run/secrets/redis_password" {
		t.Errorf("redis: no password (secrets %v, env %v)", r.Secrets, r.Environment)
	}
	if r.Environment["REDIS_MAXMEMORY"] == "" || r.Environment["REDIS_MAXMEMORY_POLICY"] == "" {
		t.Errorf("redis: no maxmemory and policy: %v", r.Environment)
	}
	for _, name := range []string{"gateway", "scheduler", "apiserver"} {
		s := c.Services[name]
		if flag(s.Command, "redis.username") != name || flag(s.Command, "redis.passwordfile") != "/run/secrets/redis_password_"+name ||
			!contains(s.Secrets, "redis_password_"+name) || !contains(r.Secrets, "redis_password_"+name) {
			t.Errorf("%s does not log into Redis as its own user: %v", name, s.Command)
		}
	}
	for name, s := range c.Services {
		if name != "redis" && contains(s.Secrets, "redis_password") {
			t.Errorf("%s holds the Redis ops user's password", name)
		}
	}
	entry, err := os.ReadFile(filepath.Join("images", "redis", "entrypoint.sh"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"REDIS_PASSWORD_FILE:?", "aclfile", "-@dangerous", "maxmemory $REDIS_MAXMEMORY", "protected-mode yes", "user default off", "roles.acl"} {
		if !strings.Contains(string(entry), want) {
			t.Errorf("redis entrypoint lacks %q", want)
		}
	}
}

// Finding 7: each service logs into Postgres as its own role, and only the
// database and the one-shot migrate service hold the schema owner's
// password; the apiserver no longer migrates at start.
func TestPostgresRolePerService(t *testing.T) {
	c := load(t)
	for name, s := range c.Services {
		if contains(s.Secrets, "db_password") && name != "postgres" && name != "migrate" {
			t.Errorf("%s holds the schema owner's password: only postgres and migrate may", name)
		}
		if flag(s.Command, "migratedb.passwordfile") != "" || flag(s.Command, "migratedb.url") != "" {
			t.Errorf("%s migrates as the owner: only the migrate service does", name)
		}
		u := flag(s.Command, "db.url")
		if u == "" || name == "migrate" {
			continue
		}
		wantUser := "postgres://nlpswarm_" + name + "@"
		if !strings.HasPrefix(u, wantUser) {
			t.Errorf("%s: --db.url %q, want the role nlpswarm_%s", name, u, name)
		}
		if pf := flag(s.Command, "db.passwordfile"); pf != "/run/secrets/db_password_"+name || !contains(s.Secrets, "db_password_"+name) {
			t.Errorf("%s: --db.passwordfile %q, secrets %v", name, pf, s.Secrets)
		}
		if !contains(c.Services["postgres"].Secrets, "db_password_"+name) {
			t.Errorf("postgres does not get db_password_%s: the role would have no password", name)
		}
	}
	// the apiserver's binary migrates at start by default (make run-style
	// local use); in the stack it must not, it has no owner's password
	if api := c.Services["apiserver"]; flag(api.Command, "migrate") != "false" {
		t.Errorf("apiserver: --migrate=%q, want false (the migrate service applies the schema)", flag(api.Command, "migrate"))
	}
	for _, name := range []string{"apiserver", "scheduler", "gateway"} {
		if w := flag(c.Services[name].Command, "schemawait"); w == "0" || w == "0s" {
			t.Errorf("%s: --schemawait=%s: it would start on any schema", name, w)
		}
	}
	m, ok := c.Services["migrate"]
	switch {
	case !ok:
		t.Error("no migrate service")
	case len(m.Command) < 2 || m.Command[0] != "migrate" || m.Command[1] != "up":
		t.Errorf("migrate: command %v, want migrate up ...", m.Command)
	case !strings.HasPrefix(flag(m.Command, "db.url"), "postgres://nlpswarm@") || flag(m.Command, "db.passwordfile") != "/run/secrets/db_password":
		t.Errorf("migrate: --db.url %q --db.passwordfile %q, want the schema owner nlpswarm", flag(m.Command, "db.url"), flag(m.Command, "db.passwordfile"))
	case m.Deploy.RestartPolicy == nil || m.Deploy.RestartPolicy.Condition != "on-failure":
		t.Errorf("migrate: restart policy %+v, want on-failure (a one-shot: done once it exits 0)", m.Deploy.RestartPolicy)
	case m.Deploy.Replicas == nil || *m.Deploy.Replicas != 1 || m.Deploy.Mode == "global":
		t.Errorf("migrate: mode %q replicas %v, want one replica", m.Deploy.Mode, m.Deploy.Replicas)
	case len(m.Deploy.Labels) > 0 || len(m.Ports) > 0:
		t.Errorf("migrate: labels %v ports %v: a one-shot has nothing to scrape or publish", m.Deploy.Labels, m.Ports)
	}
	entry, err := os.ReadFile(filepath.Join("images", "postgres", "entrypoint.sh"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"/run/secrets/db_password_*", "NOSUPERUSER", `\getenv pw`} {
		if !strings.Contains(string(entry), want) {
			t.Errorf("postgres entrypoint lacks %q", want)
		}
	}
}
