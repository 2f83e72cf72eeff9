//go:build !agentonly

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nlpswarm/nlpswarm/client"
	"github.com/nlpswarm/nlpswarm/internal/apierror"
	"github.com/nlpswarm/nlpswarm/internal/config"
	"github.com/nlpswarm/nlpswarm/internal/secret"
)

// Exit codes of the ops CLI, for scripts.
const (
	codeOK       = 0
	codeError    = 1
	codeUsage    = 2
	codeNotFound = 3
)

// cliOpts are the flags every CLI verb takes.
type cliOpts struct {
	server    string
	tokenFile string
	json      bool
	timeout   time.Duration
	retries   int
}

func (o *cliOpts) register(fs *flag.FlagSet) {
	def := os.Getenv("NLPSWARM_SERVER")
	if def == "" {
		def = "http://127.0.0.1:8081"
	}
	fs.StringVar(&o.server, "server", def, "backoffice URL (env NLPSWARM_SERVER)")
	fs.StringVar(&o.tokenFile, "tokenfile", os.Getenv("NLPSWARM_TOKEN_FILE"), "file holding the admin token (or env NLPSWARM_TOKEN)")
	fs.BoolVar(&o.json, "json", false, "print JSON instead of tables")
	fs.DurationVar(&o.timeout, "timeout", 2*time.Minute, "give up after this long")
	fs.IntVar(&o.retries, "retries", 5, "times to repeat a request the backoffice answered 503 with Retry-After (a database restart); 0: never")
}

func usageErr(format string, a ...any) error {
	return &exitError{code: codeUsage, err: &config.Error{Msg: fmt.Sprintf(format, a...)}}
}

// parseArgs parses flags wherever they stand among the positional arguments.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	fs.SetOutput(io.Discard)
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fs.SetOutput(os.Stdout)
				fmt.Fprintf(os.Stdout, "Usage: nlpswarm %s\n\nOptions:\n", fs.Name())
				fs.PrintDefaults()
				return nil, errHelpShown
			}
			return nil, usageErr("%v (see nlpswarm %s --help)", err, strings.Fields(fs.Name())[0])
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

type apiClient struct {
	opts  cliOpts
	token string
	http  *http.Client
}

func newAPIClient(o cliOpts) (*apiClient, error) {
	tok := os.Getenv("NLPSWARM_TOKEN")
	if o.tokenFile != "" {
		t, err := secret.Read("admin token", o.tokenFile)
		if err != nil {
			return nil, usageErr("%v", err)
		}
		tok = t
	}
	if tok == "" {
		return nil, usageErr("no admin token: set NLPSWARM_TOKEN or --tokenfile")
	}
	return &apiClient{opts: o, token: tok, http: &http.Client{}}, nil
}

// apiError is an error answer of the backoffice.
type apiError struct {
	status int
	body   apierror.Body
}

func (e *apiError) Error() string {
	msg := fmt.Sprintf("%s (%d %s)", e.body.Error.Message, e.status, e.body.Error.Code)
	for _, d := range e.body.Error.Details {
		msg += "; " + d
	}
	return msg
}

func asExit(err error) error {
	var ae *apiError
	if errors.As(err, &ae) {
		code := codeError
		if ae.status == http.StatusNotFound {
			code = codeNotFound
		}
		return &exitError{code: code, err: err}
	}
	return err
}

func (c *apiClient) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.opts.server, "/")+path, body)
	if err != nil {
		return usageErr("bad server URL %q", c.opts.server)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return c.send(req, out)
}

// longestRetryWait caps one wait of a retried request, whatever the
// backoffice's Retry-After says.
const longestRetryWait = 30 * time.Second

// send sends req and decodes the answer into out. A 503 with Retry-After
// (the backoffice's "the database is unreachable; nothing was changed") is
// sent again after that delay, up to --retries times, when the body can be
// made again (req.GetBody: JSON bodies, and push's archive stream).
func (c *apiClient) send(req *http.Request, out any) error {
	req.Header.Set("Authorization", "Bearer "+c.token)
	for try := 0; ; try++ {
		resp, err := c.http.Do(req)
		if err != nil {
			return fmt.Errorf("backoffice %s: %w", c.opts.server, err)
		}
		wait := client.ParseRetryAfter(resp.Header.Get("Retry-After"))
		replayable := req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
		if resp.StatusCode != http.StatusServiceUnavailable || wait <= 0 || try >= c.opts.retries || !replayable {
			defer resp.Body.Close()
			return c.answer(resp, out)
		}
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		wait = min(wait, longestRetryWait)
		fmt.Fprintf(os.Stderr, "backoffice unavailable (503); trying again in %s (%d of %d)\n", wait, try+1, c.opts.retries)
		select {
		case <-req.Context().Done():
			return fmt.Errorf("backoffice %s: %w", c.opts.server, req.Context().Err())
		case <-time.After(wait):
		}
		if req, err = retryRequest(req); err != nil {
			return err
		}
	}
}

// retryRequest is req again with a fresh body.
func retryRequest(req *http.Request) (*http.Request, error) {
	if req.GetBody == nil {
		return req, nil
	}
	body, err := req.GetBody()
	if err != nil {
		return nil, err
	}
	again := req.Clone(req.Context())
	again.Body = body
	return again, nil
}

// answer reads the backoffice's answer: out from a 2xx, an apiError else.
func (c *apiClient) answer(resp *http.Response, out any) error {
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		e := &apiError{status: resp.StatusCode}
		if json.Unmarshal(b, &e.body) != nil || e.body.Error.Code == "" {
			e.body.Error.Code, e.body.Error.Message = "http_error", strings.TrimSpace(string(b))
		}
		return asExit(e)
	}
	if out != nil && len(b) > 0 {
		if raw, ok := out.(*json.RawMessage); ok {
			*raw = b
			return nil
		}
		return json.Unmarshal(b, out)
	}
	return nil
}

// printJSON prints v indented (for --json).
func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table prints rows under a header with aligned columns.
func table(header []string, rows [][]string) {
	tw := tabwriter.NewWriter(os.Stdout, 2, 0, 3, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	tw.Flush()
}

// verb runs a CLI verb: flags, client, timeout.
func verb(parent context.Context, name string, args []string, setup func(fs *flag.FlagSet), run func(ctx context.Context, c *apiClient, pos []string) error) error {
	var o cliOpts
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	o.register(fs)
	if setup != nil {
		setup(fs)
	}
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	c, err := newAPIClient(o)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(parent, o.timeout)
	defer cancel()
	return run(ctx, c, pos)
}
