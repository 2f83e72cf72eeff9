//go:build !agentonly

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nlpswarm/nlpswarm/apiserver"
	"github.com/nlpswarm/nlpswarm/internal/deployment"
)

func init() {
	register(command{Name: "promote", Summary: "promote MODEL [--wait]: move all traffic to the canary's version (the stable service rolls to it start-first, then the canary is retired)", Run: runPromote})
	register(command{Name: "rollback", Summary: "rollback MODEL: take the canary out of the routing at once (its service goes after a 10 s drain)", Run: runRollback})
}

// canaryFlags are deploy's canary and shadow flags.
type canaryFlags struct {
	weight, errorRate string
	shadow, sticky    bool
	p99, window       time.Duration
}

func (f *canaryFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.weight, "canary", "", "deploy the version as a canary answering this share of the requests, e.g. 5% (beside the stable version, with its own replicas and resources)")
	fs.BoolVar(&f.shadow, "shadow", false, "deploy the version as a shadow: it gets a copy of every request, its answers are only compared")
	fs.BoolVar(&f.sticky, "sticky", false, "canary: the same API key is always answered by the same version")
	fs.StringVar(&f.errorRate, "rollback-error-rate", "", "canary: roll back automatically when the error rate over --rollback-window is above this, e.g. 5%")
	fs.DurationVar(&f.p99, "rollback-p99", 0, "canary: roll back automatically when the p99 latency over --rollback-window is above this, e.g. 500ms")
	fs.DurationVar(&f.window, "rollback-window", 0, "canary: the automatic rollback rule's window, e.g. 30s")
}

// body is the deployment request's canary object, nil without --canary or
// --shadow.
func (f *canaryFlags) body() (map[string]any, error) {
	if f.weight == "" && !f.shadow {
		if f.sticky || f.errorRate != "" || f.p99 != 0 || f.window != 0 {
			return nil, usageErr("--sticky and --rollback-* need --canary W%% or --shadow")
		}
		return nil, nil
	}
	if f.weight != "" && f.shadow {
		return nil, usageErr("--canary and --shadow exclude each other: a shadow answers no request")
	}
	c := map[string]any{"shadow": f.shadow, "sticky": f.sticky}
	if f.weight != "" {
		w, err := parsePercent(f.weight)
		if err != nil || w <= 0 || w > 100 {
			return nil, usageErr("--canary must be a share above 0%% and at most 100%%, e.g. 5%%, got %q", f.weight)
		}
		c["weight"] = w
	}
	rule := deployment.RollbackRule{MaxP99: f.p99, Window: f.window}
	if f.errorRate != "" {
		r, err := parsePercent(f.errorRate)
		if err != nil {
			return nil, usageErr("--rollback-error-rate must be a percentage, e.g. 5%%, got %q", f.errorRate)
		}
		rule.MaxErrorRate = r / 100
	}
	if err := rule.Validate(); err != nil {
		return nil, usageErr("%s", strings.TrimPrefix(err.Error(), deployment.ErrInvalid.Error()+": "))
	}
	if rule.Enabled() {
		rb := map[string]any{"max_error_rate": rule.MaxErrorRate, "window": rule.Window.String()}
		if rule.MaxP99 > 0 {
			rb["max_p99"] = rule.MaxP99.String()
		}
		c["rollback"] = rb
	}
	return c, nil
}

// parsePercent reads "5%" or "5" as 5.
func parsePercent(s string) (float64, error) {
	v, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(s), "%"), 64)
	if err != nil {
		return 0, errors.New("not a percentage")
	}
	return v, nil
}

func runPromote(ctx context.Context, args []string) error {
	var wait bool
	return verb(ctx, "promote", args, func(fs *flag.FlagSet) {
		fs.BoolVar(&wait, "wait", false, "wait until the stable service runs the new version and the canary is retired")
	}, func(ctx context.Context, c *apiClient, pos []string) error {
		if len(pos) != 1 {
			return usageErr("usage: nlpswarm promote MODEL [--wait]")
		}
		var d apiserver.Deployment
		if err := c.do(ctx, http.MethodPost, "/api/v1/models/"+pos[0]+"/promote", nil, &d); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "promote: %s to version %d; the stable service rolls to it, the canary keeps its share until then\n", d.Model, d.Version)
		if !wait {
			return showDeployments(c, []apiserver.Deployment{d})
		}
		last := ""
		for d.Canary != nil && d.Canary.State == deployment.RolloutPromoting {
			line := fmt.Sprintf("%s: stable %d/%d running, status %s %s", d.Model, d.Observed.Running, d.Replicas, d.Status, d.StatusMessage)
			if line != last {
				fmt.Fprintln(os.Stderr, "wait:", line)
				last = line
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("timed out waiting for the promote of %s: %s", d.Model, line)
			case <-time.After(time.Second):
			}
			if err := c.do(ctx, http.MethodGet, "/api/v1/models/"+pos[0]+"/deployment", nil, &d); err != nil {
				return err
			}
		}
		return showDeployments(c, []apiserver.Deployment{d})
	})
}

func runRollback(ctx context.Context, args []string) error {
	return verb(ctx, "rollback", args, nil, func(ctx context.Context, c *apiClient, pos []string) error {
		if len(pos) != 1 {
			return usageErr("usage: nlpswarm rollback MODEL")
		}
		var d apiserver.Deployment
		if err := c.do(ctx, http.MethodPost, "/api/v1/models/"+pos[0]+"/rollback", nil, &d); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "rollback: %s answers from version %d only; the canary's service goes after %s\n", d.Model, d.Version, deployment.Drain)
		return showDeployments(c, []apiserver.Deployment{d})
	})
}

// finishCanary prints the deployment after a canary deploy, or with wait
// polls until the canary's replicas run.
func finishCanary(ctx context.Context, c *apiClient, model string, d apiserver.Deployment, wait bool) error {
	last := ""
	for wait && d.Canary != nil {
		k := d.Canary
		line := fmt.Sprintf("%s canary: %d/%d running, status %s %s", model, k.Observed.Running, k.Replicas, k.Status, k.StatusMessage)
		if line != last {
			fmt.Fprintln(os.Stderr, "wait:", line)
			last = line
		}
		// (status running: every task runs the canary's version, so it is
		// routed; a canary taking over the previous one's service within
		// its drain has the same count running before)
		if k.ObservedGeneration >= k.Generation && k.Observed.Running == k.Replicas && (k.Replicas == 0 || k.Observed.Desired == k.Replicas) &&
			k.Status == deployment.StatusRunning {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("timed out waiting for %s's canary: %s", model, line)
		case <-time.After(time.Second):
		}
		if err := c.do(ctx, http.MethodGet, "/api/v1/models/"+model+"/deployment", nil, &d); err != nil {
			return err
		}
	}
	return showDeployments(c, []apiserver.Deployment{d})
}

// canaryText is the canary's split in words: "canary 10% sticky", "shadow".
func canaryText(k *apiserver.Canary) string {
	s := k.Mode
	if k.Mode == deployment.ModeCanary {
		s += " " + strconv.FormatFloat(k.Weight, 'f', -1, 64) + "%"
	}
	if k.Sticky {
		s += " sticky"
	}
	return s
}

// showCanary prints a model's canary rollout and the per-version figures
// (status MODEL).
func showCanary(d apiserver.Deployment) {
	if k := d.Canary; k != nil {
		fmt.Printf("\ncanary: version %d, %s, %s", k.Version, canaryText(k), k.State)
		if k.Reason != "" {
			fmt.Printf(": %s", k.Reason)
		}
		if k.RetiredAt != nil {
			fmt.Printf(" (%s ago)", time.Since(*k.RetiredAt).Round(time.Second))
		}
		fmt.Println()
		if r := k.Rollback; r != nil {
			rule := []string{}
			if r.MaxErrorRate > 0 {
				rule = append(rule, "error rate > "+strconv.FormatFloat(r.MaxErrorRate*100, 'f', -1, 64)+"%")
			}
			if r.MaxP99 > 0 {
				rule = append(rule, "p99 > "+time.Duration(r.MaxP99).String())
			}
			fmt.Printf("automatic rollback: %s over %s\n", strings.Join(rule, " or "), time.Duration(r.Window))
		}
	}
	if d.VersionsError != "" {
		fmt.Printf("\nper-version figures: %s\n", d.VersionsError)
		return
	}
	if len(d.Versions) == 0 {
		return
	}
	fmt.Printf("\nlast %s, per version:\n", apiserver.StatsWindow)
	rows := [][]string{}
	for _, v := range d.Versions {
		traffic := "live"
		if v.Shadow {
			traffic = "shadow"
		}
		agree := "-"
		if v.ShadowCompared > 0 {
			agree = fmt.Sprintf("%.1f%% of %d", v.Agreement*100, v.ShadowCompared)
		}
		rows = append(rows, []string{strconv.Itoa(v.Version), traffic, strconv.FormatInt(v.Requests, 10), fmt.Sprintf("%.1f", v.RPS),
			fmt.Sprintf("%.1f%%", v.ErrorRate*100), fmt.Sprintf("%.1fms", v.P50MS), fmt.Sprintf("%.1fms", v.P99MS), agree})
	}
	table([]string{"VERSION", "TRAFFIC", "REQUESTS", "REQ/S", "ERRORS", "P50", "P99", "AGREEMENT"}, rows)
}
