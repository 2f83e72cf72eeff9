//go:build !agentonly

package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nlpswarm/nlpswarm/client"
	"github.com/nlpswarm/nlpswarm/internal/secret"
)

// predict calls the customer API (the gateway) through the Go client, as a
// customer would: a smoke test of a deployed model from the CLI.
func init() {
	register(command{Name: "predict", Summary: "run a task on a deployed model through the gateway, as a customer (MODEL TASK TEXT...)", Run: runPredict})
}

func runPredict(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("predict MODEL sentiment|classification|entities|embeddings TEXT...", flag.ContinueOnError)
	def := os.Getenv("NLPSWARM_GATEWAY")
	if def == "" {
		def = "http://127.0.0.1:8080"
	}
	gw := fs.String("gateway", def, "gateway URL (env NLPSWARM_GATEWAY)")
	keyFile := fs.String("keyfile", os.Getenv("NLPSWARM_KEY_FILE"), "file holding an inference API key (or env NLPSWARM_KEY)")
	params := fs.String("params", "", `parameters for the model, a JSON object (e.g. {"top_k":1})`)
	asJSON := fs.Bool("json", false, "print the answer as the API gives it")
	timeout := fs.Duration("timeout", 30*time.Second, "give up after this long (retries of 429 and 503 included)")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) < 3 {
		return usageErr("usage: nlpswarm predict MODEL TASK TEXT... (see nlpswarm predict --help)")
	}
	key := os.Getenv("NLPSWARM_KEY")
	if *keyFile != "" {
		if key, err = secret.Read("API key", *keyFile); err != nil {
			return usageErr("%v", err)
		}
	}
	if key == "" {
		return usageErr("no API key: set NLPSWARM_KEY or --keyfile")
	}
	var p any
	if *params != "" {
		var obj map[string]any
		if err := json.Unmarshal([]byte(*params), &obj); err != nil {
			return usageErr("--params: want a JSON object: %v", err)
		}
		p = obj
	}
	c, err := client.New(*gw, key)
	if err != nil {
		return usageErr("%v", err)
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	model, texts := pos[0], pos[2:]
	var answers []any
	switch task := pos[1]; task {
	case client.Sentiment.Name(), client.Classification.Name():
		t := client.Sentiment
		if task == client.Classification.Name() {
			t = client.Classification
		}
		answers, err = batch(ctx, c, model, t, texts, p)
	case client.Entities.Name():
		answers, err = batch(ctx, c, model, client.Entities, texts, p)
	case client.Embeddings.Name():
		answers, err = batch(ctx, c, model, client.Embeddings, texts, p)
	default:
		return usageErr("unknown task %q: want sentiment, classification, entities or embeddings", task)
	}
	if err != nil {
		var ae *client.Error
		if errors.As(err, &ae) && ae.Status == http.StatusNotFound {
			return &exitError{code: codeNotFound, err: err}
		}
		return err
	}
	if *asJSON {
		return printJSON(answers)
	}
	var rows [][]string
	for i, a := range answers {
		switch a := a.(type) {
		case client.LabelsAnswer:
			for _, l := range a.ScoredLabels {
				rows = append(rows, []string{texts[i], l.Label, strconv.FormatFloat(l.Score, 'f', 4, 64)})
			}
		case client.EntitiesAnswer:
			for _, e := range a.Entities {
				rows = append(rows, []string{texts[i], fmt.Sprintf("%s %s [%d:%d]", e.Type, e.Text, e.Start, e.End), strconv.FormatFloat(e.Score, 'f', 4, 64)})
			}
		case client.EmbeddingsAnswer:
			for _, v := range a.Embeddings {
				rows = append(rows, []string{texts[i], fmt.Sprintf("vector of %d: %s ...", len(v), strings.Trim(fmt.Sprint(v[:min(len(v), 4)]), "[]")), ""})
			}
		}
	}
	table([]string{"TEXT", "ANSWER", "SCORE"}, rows)
	return nil
}

// batch runs task on every text in one request.
func batch[A any](ctx context.Context, c *client.Client, model string, task client.Task[A], texts []string, params any) ([]any, error) {
	as, err := client.RunBatch(ctx, c, model, task, texts, params)
	out := make([]any, len(as))
	for i, a := range as {
		out[i] = a
	}
	return out, err
}
