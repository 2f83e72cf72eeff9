//go:build !agentonly

package main

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nlpswarm/nlpswarm/apiserver"
	"github.com/nlpswarm/nlpswarm/internal/apikey"
	"github.com/nlpswarm/nlpswarm/internal/deployment"
	"github.com/nlpswarm/nlpswarm/scheduler"
)

func init() {
	register(command{Name: "deploy", Summary: "deploy MODEL [--version N] [--replicas R] [--backend ort|go] [--memory 1G] [--cpus C] [--gpus G --gpu-memory 8G] [--label k=v] [--min 0 --max 4 [--target-inflight 4] [--scale-down-delay 30s] [--idle-to-zero 5m]] [--canary 5% | --shadow [--sticky] [--rollback-error-rate 5% --rollback-p99 500ms --rollback-window 30s]] [--wait]", Run: runDeploy})
	register(command{Name: "scale", Summary: "scale MODEL REPLICAS [--wait] (autoscaled: sets the floor, min)", Run: runScale})
	register(command{Name: "status", Summary: "status [MODEL] [--plan]: desired and running replicas, per task node and state; for one model, its last scale and its replicas' cold starts; --plan: what the reconciler would do now (dry run)", Run: runStatus})
	register(command{Name: "undeploy", Summary: "undeploy MODEL: remove the model's service", Run: runUndeploy})
	register(command{Name: "nodes", Summary: "nodes: swarm nodes with their GPUs", Run: runNodes})
	register(command{Name: "accounts", Summary: "accounts ls | create NAME [--plan P] | show ID (plan, quota use, rate) | update ID --plan P", Run: runAccounts})
	register(command{Name: "keys", Summary: "keys create ACCOUNT [--name N] | ls ACCOUNT | revoke ACCOUNT KEY_ID | revoke PREFIX (ACCOUNT: id or name)", Run: runKeys})
	register(command{Name: "usage", Summary: "usage [--account A] [--model M] [--from DAY] [--to DAY]", Run: runUsage})
}

type labelFlags map[string]string

func (l labelFlags) String() string { return fmt.Sprint(map[string]string(l)) }
func (l labelFlags) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok || k == "" {
		return fmt.Errorf("label %q: want key=value", v)
	}
	l[k] = val
	return nil
}

func runDeploy(ctx context.Context, args []string) error {
	var version, replicas, gpus int
	var memory, gpuMem, backend string
	var cpus float64
	var wait bool
	labels := labelFlags{}
	var as deployment.Autoscale
	var flags *flag.FlagSet
	var cf canaryFlags
	return verb(ctx, "deploy", args, func(fs *flag.FlagSet) {
		flags = fs
		cf.register(fs)
		fs.IntVar(&version, "version", 0, "model version (0: latest)")
		fs.IntVar(&replicas, "replicas", 1, "replicas")
		fs.StringVar(&memory, "memory", "", "memory limit per replica, e.g. 1G (default: from the model size; a text-generation model reserves its memory estimate, and may not be given less)")
		fs.Float64Var(&cpus, "cpus", 0, "CPU limit per replica")
		fs.IntVar(&gpus, "gpus", 0, "GPUs per replica")
		fs.StringVar(&gpuMem, "gpu-memory", "", "GPU memory per replica, e.g. 8G (a text-generation model: each GPU's share of its memory estimate by default, not less)")
		fs.Var(labels, "label", "placement label key=value (node.labels), repeatable")
		fs.StringVar(&backend, "backend", "", "inference engine: ort (ONNX Runtime) or go (pure Go); default: the platform's (ort when the scheduler has an ORT image, else go); a text-generation model runs llama.cpp, on the CUDA image with --gpus")
		fs.BoolVar(&wait, "wait", false, "wait until the replicas run")
		fs.IntVar(&as.Max, "max", 0, "autoscale up to this many replicas (turns autoscaling on)")
		fs.IntVar(&as.Min, "min", 0, "autoscale: the floor; 0 lets the model scale to zero")
		fs.Float64Var(&as.TargetInflight, "target-inflight", deployment.DefaultTargetInflight, "autoscale: requests in flight per replica to aim at")
		fs.DurationVar(&as.ScaleDownDelay, "scale-down-delay", deployment.DefaultScaleDownDelay, "autoscale: how long lower load must last before replicas go down")
		fs.DurationVar(&as.IdleToZero, "idle-to-zero", deployment.DefaultIdleToZero, "autoscale with --min 0: no request for this long → 0 replicas")
	}, func(ctx context.Context, c *apiClient, pos []string) error {
		if len(pos) != 1 {
			return usageErr("usage: nlpswarm deploy MODEL [--version N] [--replicas R] [--backend ort|go] [--memory 1G] [--min 0 --max 4]")
		}
		if deployment.ValidateBackend(backend) != nil {
			return usageErr("--backend must be ort or go (or left out for the platform's default), got %q", backend)
		}
		set := map[string]bool{}
		flags.Visit(func(f *flag.Flag) { set[f.Name] = true })
		res := map[string]any{"cpus": cpus, "gpus": gpus}
		for k, v := range map[string]string{"memory": memory, "gpu_memory": gpuMem} {
			if v != "" {
				if _, err := apiserver.ParseBytes(v); err != nil {
					return usageErr("--%s: %v", strings.ReplaceAll(k, "_", "-"), err)
				}
				res[k] = v
			}
		}
		body := map[string]any{"version": version, "replicas": replicas, "resources": res, "placement": map[string]any{"labels": map[string]string(labels)},
			"backend": backend}
		switch {
		case as.Max > 0:
			if err := as.Validate(); err != nil {
				return usageErr("%s", strings.NewReplacer("autoscale.", "--", "_", "-").Replace(err.Error()))
			}
			body["autoscale"] = map[string]any{"min": as.Min, "max": as.Max, "target_inflight": as.TargetInflight,
				"scale_down_delay": as.ScaleDownDelay.String(), "idle_to_zero": as.IdleToZero.String()}
			if !set["replicas"] { // the server keeps the autoscaler's count on a redeploy
				delete(body, "replicas")
			}
		case set["min"] || set["target-inflight"] || set["scale-down-delay"] || set["idle-to-zero"]:
			return usageErr("--min, --target-inflight, --scale-down-delay and --idle-to-zero need --max (autoscaling)")
		}
		canary, err := cf.body()
		if err != nil {
			return err
		}
		if canary != nil {
			body["canary"] = canary
		}
		var d apiserver.Deployment
		if err := c.do(ctx, http.MethodPut, "/api/v1/models/"+pos[0]+"/deployment", body, &d); err != nil {
			return err
		}
		if k := d.Canary; canary != nil && k != nil {
			fmt.Fprintf(os.Stderr, "deploy: %s version %d as %s beside version %d, %d replica(s)%s, generation %d\n", d.Model, k.Version,
				canaryText(k), d.Version, k.Replicas, autoscaleText(k.Deployment, " autoscaled "), k.Generation)
			return finishCanary(ctx, c, pos[0], d, wait)
		}
		fmt.Fprintf(os.Stderr, "deploy: %s version %d, %d replica(s)%s, generation %d, backend %s\n", d.Model, d.Version, d.Replicas,
			autoscaleText(d, " autoscaled "), d.Generation, cmp.Or(d.Backend, "the platform's default"))
		return finish(ctx, c, pos[0], d, wait)
	})
}

func runScale(ctx context.Context, args []string) error {
	var wait bool
	return verb(ctx, "scale", args, func(fs *flag.FlagSet) {
		fs.BoolVar(&wait, "wait", false, "wait until the replicas run")
	}, func(ctx context.Context, c *apiClient, pos []string) error {
		if len(pos) != 2 {
			return usageErr("usage: nlpswarm scale MODEL REPLICAS")
		}
		n, err := strconv.Atoi(pos[1])
		if err != nil || n < 0 {
			return usageErr("replicas must be a number ≥ 0, got %q", pos[1])
		}
		var d apiserver.Deployment
		if err := c.do(ctx, http.MethodPost, "/api/v1/models/"+pos[0]+"/scale", map[string]any{"replicas": n}, &d); err != nil {
			return err
		}
		if d.Autoscale != nil {
			fmt.Fprintf(os.Stderr, "scale: %s is autoscaled: its floor (min) is now %d, %d replica(s) now, generation %d\n", d.Model, d.Autoscale.Min, d.Replicas, d.Generation)
		} else {
			fmt.Fprintf(os.Stderr, "scale: %s to %d replica(s), generation %d\n", d.Model, d.Replicas, d.Generation)
		}
		return finish(ctx, c, pos[0], d, wait)
	})
}

func runUndeploy(ctx context.Context, args []string) error {
	return verb(ctx, "undeploy", args, nil, func(ctx context.Context, c *apiClient, pos []string) error {
		if len(pos) != 1 {
			return usageErr("usage: nlpswarm undeploy MODEL")
		}
		if err := c.do(ctx, http.MethodDelete, "/api/v1/models/"+pos[0]+"/deployment", nil, nil); err != nil {
			return err
		}
		fmt.Printf("undeployed %s\n", pos[0])
		return nil
	})
}

func observed(d apiserver.Deployment) deployment.Observed { return d.Observed }

// finish prints the deployment, or with wait polls until the scheduler has
// acted on this generation and every replica runs, showing progress.
func finish(ctx context.Context, c *apiClient, model string, d apiserver.Deployment, wait bool) error {
	if !wait {
		return showDeployments(c, []apiserver.Deployment{d})
	}
	gen := d.Generation
	last := ""
	for {
		o := observed(d)
		line := fmt.Sprintf("%s: %d/%d running, status %s %s", model, o.Running, d.Replicas, d.Status, d.StatusMessage)
		if line != last {
			fmt.Fprintln(os.Stderr, "wait:", line)
			last = line
		}
		if d.ObservedGeneration >= gen && o.Running == d.Replicas && (d.Replicas == 0 || o.Desired == d.Replicas) {
			return showDeployments(c, []apiserver.Deployment{d})
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("timed out waiting for %s: %s", model, line)
		case <-time.After(time.Second):
		}
		if err := c.do(ctx, http.MethodGet, "/api/v1/models/"+model+"/deployment", nil, &d); err != nil {
			return err
		}
	}
}

func showDeployments(c *apiClient, ds []apiserver.Deployment) error {
	if c.opts.json {
		return printJSON(ds)
	}
	rows := [][]string{}
	for _, d := range ds {
		o := observed(d)
		as := autoscaleText(d, "")
		if as == "" {
			as = "-"
		}
		rows = append(rows, []string{d.Model, strconv.Itoa(d.Version), fmt.Sprintf("%d/%d", o.Running, d.Replicas), d.EngineText(), as,
			apiserver.FormatBytes(d.MemoryReservation), d.Status, d.StatusMessage})
		rows = append(rows, taskRows(o)...)
		if k := d.Canary; k != nil && k.RetiredAt == nil {
			ko := k.Observed
			kas := autoscaleText(k.Deployment, "")
			if kas == "" {
				kas = "-"
			}
			rows = append(rows, []string{"  " + canaryText(k), strconv.Itoa(k.Version), fmt.Sprintf("%d/%d", ko.Running, k.Replicas), k.EngineText(), kas,
				apiserver.FormatBytes(k.MemoryReservation), k.Status, k.StatusMessage})
			rows = append(rows, taskRows(ko)...)
		}
	}
	table([]string{"MODEL", "VERSION", "RUNNING", "BACKEND", "AUTOSCALE", "MEMORY", "STATUS", "MESSAGE"}, rows)
	if len(ds) == 1 {
		showScaleAndColdStarts(ds[0])
		showCanary(ds[0])
	}
	return nil
}

// taskRows are one deployment's replicas as table rows.
func taskRows(o deployment.Observed) [][]string {
	var rows [][]string
	for _, t := range o.Tasks {
		where := t.Node
		if len(t.GPUs) > 0 {
			where += " GPU " + strings.Join(t.GPUs, ",")
		}
		rows = append(rows, []string{"  #" + strconv.Itoa(t.Slot), "", "", "", "", where, t.State, t.Error})
	}
	return rows
}

// autoscaleText is "min..max @target" (with prefix), or "" when d is not autoscaled.
func autoscaleText(d apiserver.Deployment, prefix string) string {
	a := d.Autoscale
	if a == nil {
		return ""
	}
	return fmt.Sprintf("%s%d..%d @%g", prefix, a.Min, a.Max, a.TargetInflight)
}

// showScaleAndColdStarts prints one deployment's last replica change and its
// recent replicas' cold-start phases.
func showScaleAndColdStarts(d apiserver.Deployment) {
	if a := d.Autoscale; a != nil {
		fmt.Printf("\nautoscale: %d..%d replicas, target %g in flight per replica, scale down after %s, to zero after %s idle\n",
			a.Min, a.Max, a.TargetInflight, time.Duration(a.ScaleDownDelay), time.Duration(a.IdleToZero))
	}
	if !d.ScaledAt.IsZero() && d.ScaleReason != "" {
		fmt.Printf("last scaled %s ago to %d: %s\n", time.Since(d.ScaledAt).Round(time.Second), d.Replicas, d.ScaleReason)
	}
	if len(d.ColdStarts) == 0 {
		return
	}
	fmt.Println("\ncold starts, newest first (seconds from the previous phase):")
	rows := [][]string{}
	dash := func(f *float64) string {
		if f == nil {
			return "-"
		}
		return fmt.Sprintf("%.2fs", *f)
	}
	between := func(a, b *time.Time) string {
		if a == nil || b == nil {
			return "-"
		}
		return fmt.Sprintf("%.2fs", b.Sub(*a).Seconds())
	}
	for _, cs := range d.ColdStarts {
		fetch := dash(cs.FetchSeconds)
		if cs.ArtifactCached != nil && *cs.ArtifactCached {
			fetch += " (cached)"
		} else if cs.ArtifactBytes != nil {
			fetch += " (" + apiserver.FormatBytes(*cs.ArtifactBytes) + ")"
		}
		ready := "-"
		if cs.StartedAt != nil && cs.ReadyAt != nil && cs.FetchSeconds != nil && cs.LoadSeconds != nil && cs.WarmupSeconds != nil {
			// what the phases do not cover: process start to fetch, serving set-up
			rest := cs.ReadyAt.Sub(*cs.StartedAt).Seconds() - *cs.FetchSeconds - *cs.LoadSeconds - *cs.WarmupSeconds
			ready = fmt.Sprintf("%.2fs", max(rest, 0))
		}
		total := "-"
		if cs.RunningAt != nil {
			total = fmt.Sprintf("%.2fs", cs.RunningAt.Sub(cs.ScheduledAt).Seconds())
		}
		id := cs.TaskID[:min(12, len(cs.TaskID))]
		rows = append(rows, []string{id, strconv.Itoa(cs.Slot), cs.Node, cs.ScheduledAt.Local().Format("15:04:05"),
			between(&cs.ScheduledAt, cs.StartedAt), fetch, dash(cs.LoadSeconds), dash(cs.WarmupSeconds), ready, between(cs.ReadyAt, cs.RunningAt), total})
	}
	table([]string{"TASK", "SLOT", "NODE", "SCHEDULED", "→STARTED", "→FETCHED", "→LOADED", "→WARMED", "→READY", "→RUNNING", "TOTAL"}, rows)
}

func runStatus(ctx context.Context, args []string) error {
	var plan bool
	return verb(ctx, "status", args, func(fs *flag.FlagSet) {
		fs.BoolVar(&plan, "plan", false, "dry run: what the scheduler's reconciler would do now, without doing it")
	}, func(ctx context.Context, c *apiClient, pos []string) error {
		if len(pos) > 1 {
			return usageErr("usage: nlpswarm status [MODEL] [--plan]")
		}
		if plan {
			var p scheduler.Plan
			if err := c.do(ctx, http.MethodGet, "/api/v1/plan", nil, &p); err != nil {
				return err
			}
			model := ""
			if len(pos) == 1 {
				model = pos[0]
			}
			return showPlan(c, p, model)
		}
		var names []string
		if len(pos) == 1 {
			names = pos
		} else {
			var out struct {
				Models []modelRow `json:"models"`
			}
			if err := c.do(ctx, http.MethodGet, "/api/v1/models", nil, &out); err != nil {
				return err
			}
			for _, m := range out.Models {
				if m.Deployed {
					names = append(names, m.Name)
				}
			}
		}
		var ds []apiserver.Deployment
		for _, n := range names {
			var d apiserver.Deployment
			if err := c.do(ctx, http.MethodGet, "/api/v1/models/"+n+"/deployment", nil, &d); err != nil {
				return err
			}
			ds = append(ds, d)
		}
		return showDeployments(c, ds)
	})
}

// planRows lays a dry run out as ACTION, MODEL, BACKEND, DETAIL rows (only
// model's when model is not ""), changes first; BACKEND is the engine a
// create or update runs ("go → ort" when an update changes it).
func planRows(p scheduler.Plan, model string) [][]string {
	rows := [][]string{}
	addOn := func(action, m, backend, detail string) {
		if model == "" || m == model {
			rows = append(rows, []string{action, m, backend, detail})
		}
	}
	add := func(action, m, detail string) { addOn(action, m, "", detail) }
	for _, m := range p.GPUFrees {
		add("free-gpu", m, "give its GPU memory back")
	}
	for _, a := range p.GPUAssigns {
		for _, r := range a.Replicas {
			action := "keep-gpu"
			if r.New {
				action = "place-gpu"
			}
			mem := int64(0)
			for _, x := range a.Assignments {
				if x.Slot == r.Slot {
					mem += x.Memory
				}
			}
			add(action, a.Model, fmt.Sprintf("replica %d: node %s, GPU %s, %s", r.Slot, r.NodeID, strings.Join(r.GPUUUIDs, ","), apiserver.FormatBytes(mem)))
		}
	}
	for _, u := range p.Unplaceable {
		add("unplaceable", u.Model, u.Reason)
	}
	for _, u := range p.Short {
		add("short", u.Model, u.Reason)
	}
	for _, c := range p.Creates {
		addOn("create", c.Model, c.Backend, c.Service+": "+c.Why)
	}
	for _, c := range p.Updates {
		backend := c.Backend
		if c.FromBackend != "" && c.FromBackend != c.Backend {
			backend = c.FromBackend + " → " + c.Backend
		}
		addOn("update", c.Model, backend, c.Service+": "+c.Why)
	}
	for _, r := range p.Removes {
		add("remove", strings.TrimPrefix(r.Service, "nlp-"), r.Service+": "+r.Why)
	}
	for _, m := range p.Unchanged {
		add("keep", m, "as desired")
	}
	return rows
}

// showPlan prints a dry run.
func showPlan(c *apiClient, p scheduler.Plan, model string) error {
	if c.opts.json {
		return printJSON(p)
	}
	rows := planRows(p, model)
	changes := 0
	for _, r := range rows {
		if r[0] != "keep" {
			changes++
		}
	}
	if changes == 0 {
		fmt.Printf("nothing to do: %d service(s) as desired\n", len(rows))
	} else {
		fmt.Printf("the reconciler would make %d change(s):\n", changes)
	}
	if len(rows) > 0 {
		table([]string{"ACTION", "MODEL", "BACKEND", "DETAIL"}, rows)
	}
	return nil
}

func runNodes(ctx context.Context, args []string) error {
	return verb(ctx, "nodes", args, nil, func(ctx context.Context, c *apiClient, pos []string) error {
		var out struct {
			Nodes []apiserver.Node `json:"nodes"`
		}
		if err := c.do(ctx, http.MethodGet, "/api/v1/nodes", nil, &out); err != nil {
			return err
		}
		if c.opts.json {
			return printJSON(out)
		}
		table([]string{"HOSTNAME", "ID", "ROLE", "AVAILABILITY", "STATE", "MEMORY", "GPUS", "LABELS"}, nodeRows(out.Nodes))
		return nil
	})
}

// nodeRows is the nodes table: a row per node, then per GPU its free
// memory and what processes the platform did not place use of it, or, for
// a node without GPUs, why its agent reports none.
func nodeRows(nodes []apiserver.Node) [][]string {
	rows := [][]string{}
	for _, n := range nodes {
		var labels []string
		for k, v := range n.Labels {
			labels = append(labels, k+"="+v)
		}
		sort.Strings(labels)
		rows = append(rows, []string{n.Hostname, n.ID[:min(12, len(n.ID))], n.Role, n.Availability, n.State, apiserver.FormatBytes(n.MemoryBytes), strconv.Itoa(len(n.GPUs)), strings.Join(labels, ",")})
		for _, g := range n.GPUs {
			others := "others: none"
			if g.OtherMemory > 0 {
				others = "others: " + apiserver.FormatBytes(g.OtherMemory)
			}
			rows = append(rows, []string{"  gpu" + strconv.Itoa(g.Index), g.UUID, g.Name, "", "", apiserver.FormatBytes(g.MemoryFree) + " free", "of " + apiserver.FormatBytes(g.MemoryTotal), others})
		}
		if len(n.GPUs) == 0 && n.GPUReason != "" {
			// last: the one column tabwriter does not pad the others to
			rows = append(rows, []string{"  no GPU", "", "", "", "", "", "", n.GPUReason})
		}
	}
	return rows
}

func runAccounts(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usageErr("usage: nlpswarm accounts ls | create NAME [--plan P] | show ID | update ID --plan P")
	}
	switch args[0] {
	case "ls":
		return verb(ctx, "accounts ls", args[1:], nil, func(ctx context.Context, c *apiClient, pos []string) error {
			var out struct {
				Accounts []apiserver.Account `json:"accounts"`
			}
			if err := c.do(ctx, http.MethodGet, "/api/v1/accounts", nil, &out); err != nil {
				return err
			}
			if c.opts.json {
				return printJSON(out)
			}
			rows := [][]string{}
			for _, a := range out.Accounts {
				rows = append(rows, []string{strconv.FormatInt(a.ID, 10), a.Name, a.Plan})
			}
			table([]string{"ID", "NAME", "PLAN"}, rows)
			return nil
		})
	case "create":
		var plan string
		return verb(ctx, "accounts create", args[1:], func(fs *flag.FlagSet) {
			fs.StringVar(&plan, "plan", "free", "plan name")
		}, func(ctx context.Context, c *apiClient, pos []string) error {
			if len(pos) != 1 {
				return usageErr("usage: nlpswarm accounts create NAME [--plan P]")
			}
			var a apiserver.Account
			if err := c.do(ctx, http.MethodPost, "/api/v1/accounts", map[string]any{"name": pos[0], "plan": plan}, &a); err != nil {
				return err
			}
			if c.opts.json {
				return printJSON(a)
			}
			fmt.Printf("created account %d %s (plan %s)\n", a.ID, a.Name, a.Plan)
			return nil
		})
	case "show":
		return verb(ctx, "accounts show", args[1:], nil, func(ctx context.Context, c *apiClient, pos []string) error {
			if len(pos) != 1 {
				return usageErr("usage: nlpswarm accounts show ACCOUNT (its id or name)")
			}
			path, err := accountPath(ctx, c, pos[0])
			if err != nil {
				return err
			}
			var d apiserver.AccountDetail
			if err := c.do(ctx, http.MethodGet, path, nil, &d); err != nil {
				return err
			}
			return showAccount(c, d)
		})
	case "update":
		var plan string
		return verb(ctx, "accounts update", args[1:], func(fs *flag.FlagSet) {
			fs.StringVar(&plan, "plan", "", "the plan to move the account to")
		}, func(ctx context.Context, c *apiClient, pos []string) error {
			if len(pos) != 1 || plan == "" {
				return usageErr("usage: nlpswarm accounts update ACCOUNT --plan P (ACCOUNT: its id or name)")
			}
			var a apiserver.Account
			path, err := accountPath(ctx, c, pos[0])
			if err != nil {
				return err
			}
			if err := c.do(ctx, http.MethodPatch, path, map[string]any{"plan": plan}, &a); err != nil {
				return err
			}
			if c.opts.json {
				return printJSON(a)
			}
			fmt.Printf("account %d %s is on plan %s; the gateways apply it within seconds\n", a.ID, a.Name, a.Plan)
			return nil
		})
	}
	return usageErr("unknown accounts sub-command %q (ls, create, show, update)", args[0])
}

// accountPath is "/api/v1/accounts/ID" for ref, an account's id or its
// name (the backoffice's routes take ids; a name is looked up in the list).
func accountPath(ctx context.Context, c *apiClient, ref string) (string, error) {
	if id, err := strconv.ParseInt(ref, 10, 64); err == nil && id > 0 {
		return "/api/v1/accounts/" + ref, nil
	}
	var out struct {
		Accounts []apiserver.Account `json:"accounts"`
	}
	if err := c.do(ctx, http.MethodGet, "/api/v1/accounts", nil, &out); err != nil {
		return "", err
	}
	for _, a := range out.Accounts {
		if a.Name == ref {
			return "/api/v1/accounts/" + strconv.FormatInt(a.ID, 10), nil
		}
	}
	return "", fmt.Errorf("no account named %q (nlpswarm accounts ls lists them)", ref)
}

func runKeys(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usageErr("usage: nlpswarm keys create ACCOUNT [--name N] | ls ACCOUNT | revoke ACCOUNT KEY_ID | revoke PREFIX (ACCOUNT: its id or name)")
	}
	switch args[0] {
	case "create":
		var name string
		return verb(ctx, "keys create", args[1:], func(fs *flag.FlagSet) {
			fs.StringVar(&name, "name", "", "a name to recognise the key by")
		}, func(ctx context.Context, c *apiClient, pos []string) error {
			if len(pos) != 1 {
				return usageErr("usage: nlpswarm keys create ACCOUNT [--name N] (ACCOUNT: its id or name)")
			}
			path, err := accountPath(ctx, c, pos[0])
			if err != nil {
				return err
			}
			var k apiserver.Key
			if err := c.do(ctx, http.MethodPost, path+"/keys", map[string]any{"name": name}, &k); err != nil {
				return err
			}
			if c.opts.json {
				return printJSON(k)
			}
			fmt.Fprintf(os.Stderr, "key %d (prefix %s) for account %d; it is shown this once:\n", k.ID, k.Prefix, k.AccountID)
			fmt.Println(k.Key)
			return nil
		})
	case "ls":
		return verb(ctx, "keys ls", args[1:], nil, func(ctx context.Context, c *apiClient, pos []string) error {
			if len(pos) != 1 {
				return usageErr("usage: nlpswarm keys ls ACCOUNT (its id or name)")
			}
			var out struct {
				Keys []apiserver.Key `json:"keys"`
			}
			path, err := accountPath(ctx, c, pos[0])
			if err != nil {
				return err
			}
			if err := c.do(ctx, http.MethodGet, path+"/keys", nil, &out); err != nil {
				return err
			}
			if c.opts.json {
				return printJSON(out)
			}
			rows := [][]string{}
			for _, k := range out.Keys {
				state := "active"
				if k.RevokedAt != nil {
					state = "revoked " + k.RevokedAt.UTC().Format(time.RFC3339)
				}
				rows = append(rows, []string{strconv.FormatInt(k.ID, 10), k.Prefix, k.Name, k.CreatedAt.UTC().Format(time.RFC3339), state})
			}
			table([]string{"ID", "PREFIX", "NAME", "CREATED", "STATE"}, rows)
			return nil
		})
	case "revoke":
		return verb(ctx, "keys revoke", args[1:], nil, func(ctx context.Context, c *apiClient, pos []string) error {
			switch len(pos) {
			case 1: // the prefix, as keys ls and the customer's key show it
				prefix := pos[0]
				if p, ok := apikey.Prefix(prefix); ok { // a whole key: only its prefix is sent
					prefix = p
				}
				var k apiserver.Key
				if err := c.do(ctx, http.MethodDelete, "/api/v1/keys/"+url.PathEscape(prefix), nil, &k); err != nil {
					return err
				}
				fmt.Printf("revoked key %d (prefix %s) of account %d\n", k.ID, k.Prefix, k.AccountID)
				return nil
			case 2:
				path, err := accountPath(ctx, c, pos[0])
				if err != nil {
					return err
				}
				if err := c.do(ctx, http.MethodDelete, path+"/keys/"+url.PathEscape(pos[1]), nil, nil); err != nil {
					return err
				}
				fmt.Printf("revoked key %s\n", pos[1])
				return nil
			}
			return usageErr("usage: nlpswarm keys revoke ACCOUNT_ID KEY_ID | keys revoke PREFIX")
		})
	}
	return usageErr("unknown keys sub-command %q (create, ls, revoke)", args[0])
}

func runUsage(ctx context.Context, args []string) error {
	var account, model, from, to string
	return verb(ctx, "usage", args, func(fs *flag.FlagSet) {
		fs.StringVar(&account, "account", "", "account name or id")
		fs.StringVar(&model, "model", "", "model name")
		fs.StringVar(&from, "from", "", "first day (YYYY-MM-DD, default 30 days ago)")
		fs.StringVar(&to, "to", "", "last day (default today)")
	}, func(ctx context.Context, c *apiClient, pos []string) error {
		q := url.Values{}
		for k, v := range map[string]string{"account": account, "model": model, "from": from, "to": to} {
			if v != "" {
				q.Set(k, v)
			}
		}
		var out struct {
			Usage []apiserver.UsageRow `json:"usage"`
		}
		if err := c.do(ctx, http.MethodGet, "/api/v1/usage?"+q.Encode(), nil, &out); err != nil {
			return err
		}
		if c.opts.json {
			return printJSON(out)
		}
		rows := [][]string{}
		for _, u := range out.Usage {
			rows = append(rows, []string{u.Day, u.Account, u.Model, strconv.FormatInt(u.Requests, 10), strconv.FormatInt(u.Texts, 10), strconv.FormatInt(u.Errors, 10),
				strconv.FormatInt(u.InputTokens, 10), strconv.FormatInt(u.OutputTokens, 10)})
		}
		table([]string{"DAY", "ACCOUNT", "MODEL", "REQUESTS", "TEXTS", "ERRORS", "INPUT TOKENS", "OUTPUT TOKENS"}, rows)
		return nil
	})
}
