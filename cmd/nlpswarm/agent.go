package main

import (
	"context"
	"encoding/json"
	"os"
	"time"

	"github.com/nlpswarm/nlpswarm/internal/config"
	"github.com/nlpswarm/nlpswarm/internal/httpserver"
	"github.com/nlpswarm/nlpswarm/internal/pg"
	"github.com/nlpswarm/nlpswarm/scheduler/agent"
)

type agentConfig struct {
	httpserver.Options
	LogLevel string    `description:"log level: debug, info, warn, error"`
	DB       pg.Config `description:"Postgres"`
	Node     struct {
		ID string `description:"Swarm node ID of this node (the stack passes {{.Node.ID}} in NLPSWARM_NODE_ID: Swarm expands templates in env, not in arguments)"`
	} `description:"this node"`
	Interval time.Duration `description:"how often the GPUs are read and reported"`
	FakeGPUs string        `description:"JSON file of fake GPUs to report instead of NVML's, for machines without GPUs (tests, the swarm lab); where the file does not exist, NVML is read"`
	Print    bool          `description:"read the GPUs once, print them as JSON (with the reason when there are none) and exit: no database, no node ID; how to check what the agent sees on a node"`
}

func init() {
	register(command{Name: "agent", Summary: "node agent: report this node's GPUs (NVML) into the inventory", Role: true, Run: runAgent})
}

func runAgent(ctx context.Context, args []string) error {
	cfg := &agentConfig{Options: httpserver.Defaults(":8083"), LogLevel: "info", DB: pg.DefaultConfig(), Interval: 5 * time.Second}
	cfg.DrainDelay = 0
	if err := loadConfig("agent", cfg, args); err != nil {
		return err
	}
	var src agent.Source = &agent.NVML{}
	if cfg.FakeGPUs != "" {
		src = &agent.FakeGPUsFile{Path: cfg.FakeGPUs, Fallback: src}
	}
	if cfg.Print {
		inv, err := agent.Read(src)
		if err != nil {
			return err
		}
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(inv)
	}
	if cfg.Node.ID == "" {
		return &config.Error{Msg: "--node.id is required"}
	}
	log, err := newLogger("agent", cfg.LogLevel)
	if err != nil {
		return err
	}
	pool, err := pg.Connect(ctx, cfg.DB)
	if err != nil {
		return err
	}
	defer pool.Close()
	if inv, err := agent.Read(src); err == nil && inv.Reason != "" {
		log.Info("no GPUs reported", "reason", inv.Reason)
	} else if err == nil && inv.ProcessNote != "" {
		log.Warn("GPU processes of other pid namespaces are not visible", "pid_namespace", inv.PIDNamespace, "note", inv.ProcessNote)
	}
	reg := httpserver.NewRegistry()
	rep := &agent.Reporter{DB: pool, NodeID: cfg.Node.ID, Source: src, Log: log, Metrics: agent.NewMetrics(reg)}
	go rep.Run(ctx, cfg.Interval)
	return serve(ctx, log, cfg.Options, nil, httpserver.NewHealth(postgresCheck(pool)), reg)
}
