//go:build !agentonly

package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"github.com/nlpswarm/nlpswarm/apiserver"
)

// The plans command: what a customer's API keys may do (requests per
// second, burst, monthly quota) and, on generation models, how many tokens
// (input + output) they may spend per minute and per month.

func init() {
	register(command{Name: "plans", Summary: "plans ls | create NAME --rps R --burst B [--quota Q] [--tokens-per-minute T] [--tokens-per-month M] | update NAME [same flags] (quota: requests a month; tokens: generation's input + output; 0 = unlimited)", Run: runPlans})
}

func quotaText(q int64) string {
	if q == 0 {
		return "unlimited"
	}
	return strconv.FormatInt(q, 10)
}

func showPlans(c *apiClient, plans []apiserver.Plan) error {
	if c.opts.json {
		return printJSON(map[string]any{"plans": plans})
	}
	rows := [][]string{}
	for _, p := range plans {
		rows = append(rows, []string{p.Name, strconv.FormatFloat(p.RequestsPerSecond, 'f', -1, 64), strconv.Itoa(p.Burst), quotaText(p.MonthlyQuota),
			quotaText(p.TokensPerMinute), quotaText(p.TokensPerMonth)})
	}
	table([]string{"PLAN", "REQUESTS/S", "BURST", "MONTHLY QUOTA", "TOKENS/MIN", "TOKENS/MONTH"}, rows)
	return nil
}

func runPlans(ctx context.Context, args []string) error {
	const use = "usage: nlpswarm plans ls | create NAME --rps R --burst B [--quota Q] [--tokens-per-minute T] [--tokens-per-month M] | update NAME [--rps R] [--burst B] [--quota Q] [--tokens-per-minute T] [--tokens-per-month M]"
	if len(args) == 0 {
		return usageErr(use)
	}
	var rps float64
	var burst int
	var quota, tpm, tpmonth int64
	var flags *flag.FlagSet
	planFlags := func(fs *flag.FlagSet) {
		flags = fs
		fs.Float64Var(&rps, "rps", 0, "requests per second (may be fractional: 0.5)")
		fs.IntVar(&burst, "burst", 0, "requests allowed at once above the rate")
		fs.Int64Var(&quota, "quota", 0, "requests a month per key (0: unlimited)")
		fs.Int64Var(&tpm, "tokens-per-minute", 0, "generation tokens (input + output) a minute per key (0: unlimited)")
		fs.Int64Var(&tpmonth, "tokens-per-month", 0, "generation tokens (input + output) a month per key (0: unlimited)")
	}
	switch args[0] {
	case "ls":
		return verb(ctx, "plans ls", args[1:], nil, func(ctx context.Context, c *apiClient, pos []string) error {
			var out struct {
				Plans []apiserver.Plan `json:"plans"`
			}
			if err := c.do(ctx, http.MethodGet, "/api/v1/plans", nil, &out); err != nil {
				return err
			}
			return showPlans(c, out.Plans)
		})
	case "create":
		return verb(ctx, "plans create", args[1:], planFlags, func(ctx context.Context, c *apiClient, pos []string) error {
			if len(pos) != 1 || rps <= 0 || burst <= 0 || quota < 0 || tpm < 0 || tpmonth < 0 {
				return usageErr("usage: nlpswarm plans create NAME --rps R --burst B [--quota Q] [--tokens-per-minute T] [--tokens-per-month M] (R > 0, B > 0, Q, T, M ≥ 0)")
			}
			var p apiserver.Plan
			body := map[string]any{"name": pos[0], "requests_per_second": rps, "burst": burst, "monthly_quota": quota,
				"tokens_per_minute": tpm, "tokens_per_month": tpmonth}
			if err := c.do(ctx, http.MethodPost, "/api/v1/plans", body, &p); err != nil {
				return err
			}
			fmt.Printf("created plan %s\n", p.Name)
			return showPlans(c, []apiserver.Plan{p})
		})
	case "update":
		return verb(ctx, "plans update", args[1:], planFlags, func(ctx context.Context, c *apiClient, pos []string) error {
			if len(pos) != 1 {
				return usageErr("usage: nlpswarm plans update NAME [--rps R] [--burst B] [--quota Q] [--tokens-per-minute T] [--tokens-per-month M]")
			}
			body := map[string]any{}
			flags.Visit(func(f *flag.Flag) {
				switch f.Name {
				case "rps":
					body["requests_per_second"] = rps
				case "burst":
					body["burst"] = burst
				case "quota":
					body["monthly_quota"] = quota
				case "tokens-per-minute":
					body["tokens_per_minute"] = tpm
				case "tokens-per-month":
					body["tokens_per_month"] = tpmonth
				}
			})
			if len(body) == 0 {
				return usageErr("plans update %s: name what changes: --rps, --burst, --quota, --tokens-per-minute or --tokens-per-month", pos[0])
			}
			var p apiserver.Plan
			if err := c.do(ctx, http.MethodPatch, "/api/v1/plans/"+url.PathEscape(pos[0]), body, &p); err != nil {
				return err
			}
			fmt.Printf("updated plan %s; the gateways apply it within seconds\n", p.Name)
			return showPlans(c, []apiserver.Plan{p})
		})
	}
	return usageErr("unknown plans sub-command %q (ls, create, update)", args[0])
}

// showAccount prints an account with its plan and its keys' live limits.
func showAccount(c *apiClient, d apiserver.AccountDetail) error {
	if c.opts.json {
		return printJSON(d)
	}
	fmt.Printf("account %d %s, plan %s\n", d.ID, d.Name, d.Plan)
	if p := d.Limits; p != nil {
		fmt.Printf("limits per key: %g requests/s, burst %d, monthly quota %s\n", p.RequestsPerSecond, p.Burst, quotaText(p.MonthlyQuota))
		if p.TokensPerMinute > 0 || p.TokensPerMonth > 0 {
			fmt.Printf("generation tokens per key: %s a minute, %s a month\n", quotaText(p.TokensPerMinute), quotaText(p.TokensPerMonth))
		}
	}
	if d.LimitsError != "" {
		fmt.Println(d.LimitsError)
	} else {
		fmt.Printf("quota use in %s-%s (UTC): %d requests, all keys\n", d.Month[:4], d.Month[4:], d.QuotaUsed)
	}
	rows := [][]string{}
	for _, k := range d.Keys {
		state := "active"
		if k.RevokedAt != nil {
			state = "revoked"
		}
		rows = append(rows, []string{strconv.FormatInt(k.ID, 10), k.Prefix, k.Name, state, strconv.FormatInt(k.QuotaUsed, 10), strconv.FormatFloat(k.Backlog, 'f', 1, 64),
			strconv.FormatInt(k.TokensUsed, 10)})
	}
	table([]string{"ID", "PREFIX", "NAME", "STATE", "THIS MONTH", "BACKLOG", "TOKENS THIS MONTH"}, rows)
	return nil
}
