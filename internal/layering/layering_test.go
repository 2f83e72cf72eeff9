package layering

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/nlpswarm/nlpswarm/"

var roles = []string{"apiserver", "scheduler", "gateway", "models", "modelmgr", "generation"}

// under reports whether pkg (relative to the module) is root or inside it.
func under(pkg, root string) bool { return pkg == root || strings.HasPrefix(pkg, root+"/") }

// deps lists each package of the module with its transitive dependencies
// inside the module (non-test imports, as the binary links them).
func deps(t *testing.T) map[string][]string {
	t.Helper()
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}}{{range .Deps}} {{.}}{{end}}`, module+"...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	m := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		pkg := strings.TrimPrefix(f[0], module)
		m[pkg] = []string{}
		for _, d := range f[1:] {
			if strings.HasPrefix(d, module) {
				m[pkg] = append(m[pkg], strings.TrimPrefix(d, module))
			}
		}
	}
	return m
}

func TestLayering(t *testing.T) {
	all := deps(t)
	if len(all["apiserver"]) == 0 || len(all["scheduler"]) == 0 {
		t.Fatalf("go list found no dependencies of apiserver or scheduler: %v", all)
	}
	forbid := func(from func(string) bool, to func(string) bool, why string) {
		for pkg, ds := range all {
			if !from(pkg) {
				continue
			}
			for _, d := range ds {
				if to(d) {
					t.Errorf("%s depends on %s: %s", pkg, d, why)
				}
			}
		}
	}
	isRole := func(p string) bool {
		for _, r := range roles {
			if under(p, r) {
				return true
			}
		}
		return false
	}
	is := func(root string) func(string) bool { return func(p string) bool { return p == root } }
	within := func(root string) func(string) bool { return func(p string) bool { return under(p, root) } }

	forbid(within("internal"), isRole, "contracts and plumbing never import a role")
	forbid(is("apiserver"), within("scheduler"), "the backoffice reads observed state and autoscale bounds from internal/deployment")
	forbid(within("scheduler"), within("models"), "the runtime's contracts live in internal/")
	forbid(within("scheduler"), is("modelmgr"), "the replica memory floor is the record's (deployment.MinMemory)")
	forbid(within("gateway"), is("scheduler"), "the gateway reads the record, not the reconciler")
	forbid(is("internal/pg"), is("internal/deployment"), "plumbing sits below the record")
	forbid(within("client"), func(p string) bool {
		return p != "internal/customerapi" && p != "internal/runtimeapi" && p != "internal/apierror"
	}, "a customer's program that imports the client pulls in the API's contract and nothing else")
}
