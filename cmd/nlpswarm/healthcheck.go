package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/nlpswarm/nlpswarm/internal/config"
)

func init() {
	register(command{Name: "healthcheck", Summary: "exit 0 when URL answers 2xx (for exec-form Docker healthchecks)", Run: runHealthcheck})
}

func runHealthcheck(ctx context.Context, args []string) error {
	if len(args) != 1 || args[0] == "--help" {
		return &config.Error{Msg: "usage: nlpswarm healthcheck URL"}
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, args[0], nil)
	if err != nil {
		return &config.Error{Msg: fmt.Sprintf("bad URL %q", args[0])}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s answered %s", args[0], resp.Status)
	}
	return nil
}
