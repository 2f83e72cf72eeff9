package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"

	"github.com/nlpswarm/nlpswarm/internal/config"
)

// command is a role of the stack or a verb of the ops CLI.
type command struct {
	Name    string
	Summary string
	Role    bool // a long-running server role (listed first in --help)
	Run     func(ctx context.Context, args []string) error
}

var commands = map[string]command{}

// register adds a command; each role and verb calls it from its own file.
func register(c command) {
	if _, dup := commands[c.Name]; dup {
		panic("duplicate command " + c.Name)
	}
	commands[c.Name] = c
}

// exitError carries an exit code of its own (a CLI verb's "not found", say).
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// errHelpShown ends a command that printed its help: exit 0.
var errHelpShown = errors.New("help shown")

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "--help" || args[0] == "-h" || args[0] == "help" {
		usage(stdout)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	if args[0] == "--version" || args[0] == "version" {
		fmt.Fprintln(stdout, "nlpswarm", version)
		return 0
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "nlpswarm: unknown command %q (see nlpswarm --help)\n", args[0])
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	err := cmd.Run(ctx, args[1:])
	switch {
	case err == nil, errors.Is(err, errHelpShown):
		return 0
	}
	msg := strings.Join(strings.Fields(err.Error()), " ")
	fmt.Fprintf(stderr, "nlpswarm %s: %s\n", cmd.Name, msg)
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	var ce *config.Error
	if errors.As(err, &ce) {
		return 2
	}
	return 1
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "nlpswarm: NLP model serving on Docker Swarm")
	fmt.Fprintln(w, "\nUsage: nlpswarm <command> [options]   (nlpswarm <command> --help for its options)")
	var roles, verbs []command
	for _, c := range commands {
		if c.Role {
			roles = append(roles, c)
		} else {
			verbs = append(verbs, c)
		}
	}
	for _, group := range []struct {
		title string
		cmds  []command
	}{{"Roles (servers of the stack)", roles}, {"Commands", verbs}} {
		sort.Slice(group.cmds, func(i, j int) bool { return group.cmds[i].Name < group.cmds[j].Name })
		fmt.Fprintf(w, "\n%s:\n", group.title)
		tw := tabwriter.NewWriter(w, 2, 0, 3, ' ', 0)
		for _, c := range group.cmds {
			fmt.Fprintf(tw, "  %s\t%s\n", c.Name, c.Summary)
		}
		tw.Flush()
	}
}

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"
