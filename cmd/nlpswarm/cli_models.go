//go:build !agentonly

package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/nlpswarm/nlpswarm/apiserver"
)

func init() {
	register(command{Name: "models", Summary: "models: ls | create NAME --task T | push NAME DIR | versions NAME | rm NAME [--force]", Run: runModels})
}

type modelRow struct {
	Name        string    `json:"name"`
	Task        string    `json:"task"`
	Visibility  string    `json:"visibility"`
	Versions    int       `json:"versions"`
	Deployed    bool      `json:"deployed"`
	Description string    `json:"description"`
	CreatedAt   time.Time `json:"created_at"`
}

type versionRow struct {
	Version   int       `json:"version"`
	Digest    string    `json:"digest"`
	Size      int64     `json:"size_bytes"`
	Status    string    `json:"status"`
	CreatedAt time.Time `json:"created_at"`
}

func runModels(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] == "--help" || args[0] == "-h" {
		fmt.Println("Usage: nlpswarm models ls | create NAME --task TASK [--description D] [--visibility public|private --owner ACCOUNT_ID] | push NAME DIR | versions NAME | rm NAME [--force]")
		if len(args) == 0 {
			return usageErr("models needs a sub-command")
		}
		return errHelpShown
	}
	sub, rest := args[0], args[1:]
	switch sub {
	case "ls":
		return verb(ctx, "models ls", rest, func(fs *flag.FlagSet) {}, func(ctx context.Context, c *apiClient, pos []string) error {
			var out struct {
				Models []modelRow `json:"models"`
			}
			if err := c.do(ctx, http.MethodGet, "/api/v1/models", nil, &out); err != nil {
				return err
			}
			if c.opts.json {
				return printJSON(out)
			}
			rows := [][]string{}
			for _, m := range out.Models {
				dep := "no"
				if m.Deployed {
					dep = "yes"
				}
				rows = append(rows, []string{m.Name, m.Task, m.Visibility, strconv.Itoa(m.Versions), dep})
			}
			table([]string{"NAME", "TASK", "VISIBILITY", "VERSIONS", "DEPLOYED"}, rows)
			return nil
		})
	case "create":
		var task, desc, vis string
		var owner int64
		return verb(ctx, "models create", rest, func(fs *flag.FlagSet) {
			fs.StringVar(&task, "task", "", "text-classification | token-classification | feature-extraction | text-generation (a GGUF model; not deployable yet)")
			fs.StringVar(&desc, "description", "", "free text")
			fs.StringVar(&vis, "visibility", "public", "public or private")
			fs.Int64Var(&owner, "owner", 0, "owning account id (private models)")
		}, func(ctx context.Context, c *apiClient, pos []string) error {
			if len(pos) != 1 || task == "" {
				return usageErr("usage: nlpswarm models create NAME --task TASK")
			}
			body := map[string]any{"name": pos[0], "task": task, "description": desc, "visibility": vis}
			if owner > 0 {
				body["owner_account_id"] = owner
			}
			var m modelRow
			if err := c.do(ctx, http.MethodPost, "/api/v1/models", body, &m); err != nil {
				return err
			}
			if c.opts.json {
				return printJSON(m)
			}
			fmt.Printf("created model %s (%s)\n", m.Name, m.Task)
			return nil
		})
	case "push":
		return verb(ctx, "models push", rest, nil, func(ctx context.Context, c *apiClient, pos []string) error {
			if len(pos) != 2 {
				return usageErr("usage: nlpswarm models push NAME DIR")
			}
			return pushModel(ctx, c, pos[0], pos[1])
		})
	case "versions":
		return verb(ctx, "models versions", rest, nil, func(ctx context.Context, c *apiClient, pos []string) error {
			if len(pos) != 1 {
				return usageErr("usage: nlpswarm models versions NAME")
			}
			var out struct {
				Versions []versionRow `json:"versions"`
			}
			if err := c.do(ctx, http.MethodGet, "/api/v1/models/"+pos[0]+"/versions", nil, &out); err != nil {
				return err
			}
			if c.opts.json {
				return printJSON(out)
			}
			rows := [][]string{}
			for _, v := range out.Versions {
				rows = append(rows, []string{strconv.Itoa(v.Version), v.Digest[:min(len(v.Digest), 19)], apiserver.FormatBytes(v.Size), v.Status, v.CreatedAt.UTC().Format(time.RFC3339)})
			}
			table([]string{"VERSION", "DIGEST", "SIZE", "STATUS", "UPLOADED"}, rows)
			return nil
		})
	case "rm":
		var force bool
		return verb(ctx, "models rm", rest, func(fs *flag.FlagSet) {
			fs.BoolVar(&force, "force", false, "undeploy first if deployed")
		}, func(ctx context.Context, c *apiClient, pos []string) error {
			if len(pos) != 1 {
				return usageErr("usage: nlpswarm models rm NAME [--force]")
			}
			path := "/api/v1/models/" + pos[0]
			if force {
				path += "?force=true"
			}
			if err := c.do(ctx, http.MethodDelete, path, nil, nil); err != nil {
				return err
			}
			fmt.Printf("removed model %s\n", pos[0])
			return nil
		})
	}
	return usageErr("unknown models sub-command %q (ls, create, push, versions, rm)", sub)
}
