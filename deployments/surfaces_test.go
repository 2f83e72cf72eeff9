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
// database and the apiserver's migrations hold the superuser's password.
func TestPostgresRolePerService(t *testing.T) {
	c := load(t)
	for name, s := range c.Services {
		u := flag(s.Command, "db.url")
		if u == "" {
			if contains(s.Secrets, "db_password") && name != "postgres" {
				t.Errorf("%s holds the superuser's password", name)
			}
			continue
		}
		wantUser := "postgres://nlpswarm_" + name + "@"
		if !strings.HasPrefix(u, wantUser) {
			t.Errorf("%s: --db.url %q, want the role nlpswarm_%s", name, u, name)
		}
		if pf := flag(s.Command, "db.passwordfile"); pf != "/run/secrets/db_password_"+name || !contains(s.Secrets, "db_password_"+name) {
			t.Errorf("%s: --db.passwordfile %q, secrets %v", name, pf, s.Secrets)
		}
		if contains(s.Secrets, "db_password") && flag(s.Command, "migratedb.passwordfile") != "/run/secrets/db_password" {
			t.Errorf("%s holds the superuser's password without migrating", name)
		}
		if !contains(c.Services["postgres"].Secrets, "db_password_"+name) {
			t.Errorf("postgres does not get db_password_%s: the role would have no password", name)
		}
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
