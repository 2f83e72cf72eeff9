package config

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/traefik/paerser/env"
	"github.com/traefik/paerser/file"
	"github.com/traefik/paerser/flag"
	"github.com/traefik/paerser/parser"
)

// EnvPrefix is the prefix of every environment variable nlpswarm reads.
const EnvPrefix = "NLPSWARM_"

// FileFlag is the flag (and env variable NLPSWARM_CONFIGFILE) naming a config file.
const FileFlag = "configfile"

// ErrHelp is returned by Load when the arguments ask for help; the caller
// prints Help and exits 0.
var ErrHelp = errors.New("help requested")

// Error is a configuration problem: the caller prints it on one line and
// exits non-zero without a stack trace.
type Error struct{ Msg string }

func (e *Error) Error() string { return e.Msg }

func errorf(format string, a ...any) error { return &Error{Msg: fmt.Sprintf(format, a...)} }

// Load fills cfg, a pointer to a struct already holding its defaults, from a
// config file, the environment and args (flags), in that order. environ is
// usually os.Environ(). Positional arguments are refused.
func Load(cfg any, args, environ []string) error {
	for _, a := range args {
		if a == "--help" || a == "-h" || a == "-help" {
			return ErrHelp
		}
	}
	path, rest, err := splitFileFlag(args)
	if err != nil {
		return err
	}
	if path == "" {
		for _, kv := range environ {
			if v, ok := strings.CutPrefix(kv, EnvPrefix+"CONFIGFILE="); ok {
				path = v
			}
		}
	}
	if len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
		return errorf("unexpected argument %q (options are --name=value; see --help)", rest[0])
	}
	if path != "" {
		if _, err := os.Stat(path); err != nil {
			return errorf("config file: %v", err)
		}
		ext := strings.ToLower(filepath.Ext(path))
		if ext != ".yaml" && ext != ".yml" && ext != ".toml" {
			return errorf("config file %s: want a .yaml, .yml or .toml file", path)
		}
		if err := file.Decode(path, cfg); err != nil {
			return errorf("config file %s: %v", path, oneLine(err))
		}
	}
	// The environment is shared by every role (and the CLI, and tests), so
	// only variables naming one of this role's options are taken.
	known, err := flagNames(cfg)
	if err != nil {
		return err
	}
	var vars []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		rest, ok := strings.CutPrefix(name, EnvPrefix)
		if !ok || rest == "CONFIGFILE" {
			continue
		}
		if _, ok := known[strings.ToLower(strings.ReplaceAll(rest, "_", "."))]; ok {
			vars = append(vars, kv)
		}
	}
	if len(vars) > 0 {
		if err := env.Decode(vars, EnvPrefix, cfg); err != nil {
			return errorf("environment: %v", oneLine(err))
		}
	}
	if len(rest) > 0 {
		if err := checkKnownFlags(rest, cfg); err != nil {
			return err
		}
		if err := flag.Decode(rest, cfg); err != nil {
			return errorf("flags: %v", oneLine(err))
		}
	}
	return nil
}

// splitFileFlag takes --configfile out of args.
func splitFileFlag(args []string) (path string, rest []string, err error) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if strings.HasPrefix(a, "-") && strings.EqualFold(name, FileFlag) {
			if hasVal {
				path = val
				continue
			}
			if i+1 >= len(args) {
				return "", nil, errorf("--%s needs a file path", FileFlag)
			}
			path = args[i+1]
			i++
			continue
		}
		rest = append(rest, a)
	}
	return path, rest, nil
}

// checkKnownFlags refuses a flag that names no field, with the flag's name,
// since paerser's own message for that case is obscure.
func checkKnownFlags(args []string, cfg any) error {
	known, err := flagNames(cfg)
	if err != nil {
		return err
	}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		lname := strings.ToLower(name)
		if _, ok := known[lname]; ok {
			continue
		}
		// maps (e.g. --static.upstreams.model=...) are known by their prefix
		ok := false
		for k := range known {
			if strings.HasPrefix(lname, k+".") {
				ok = true
				break
			}
		}
		if !ok {
			return errorf("unknown flag --%s (see --help)", name)
		}
	}
	return nil
}

func flagNames(cfg any) (map[string]struct{}, error) {
	flats, err := flag.Encode(cfg)
	if err != nil {
		return nil, errorf("config: %v", err)
	}
	names := make(map[string]struct{}, len(flats))
	for _, f := range flats {
		names[strings.ToLower(strings.ReplaceAll(f.Name, "[0]", ""))] = struct{}{}
	}
	return names, nil
}

// Help writes usage for one role: every option with its default, its env
// variable and its description (the `description` struct tag).
func Help(w io.Writer, role, summary string, cfg any) error {
	flats, err := flag.Encode(cfg)
	if err != nil {
		return err
	}
	sort.Slice(flats, func(i, j int) bool { return flats[i].Name < flats[j].Name })
	fmt.Fprintf(w, "nlpswarm %s: %s\n\nUsage: nlpswarm %s [--option=value ...]\n\n", role, summary, role)
	fmt.Fprintf(w, "Options are read from --%s FILE (YAML or TOML), then NLPSWARM_* env, then flags; flags win.\n\n", FileFlag)
	tw := tabwriter.NewWriter(w, 2, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "  --%s\t(default: none)\t%s\n", FileFlag, "configuration file (.yaml, .yml, .toml)")
	for i, f := range flats {
		// a group heading (--db) is noise next to its fields (--db.url)
		if i+1 < len(flats) && strings.HasPrefix(flats[i+1].Name, f.Name+".") {
			continue
		}
		envName := EnvPrefix + strings.ToUpper(strings.ReplaceAll(f.Name, ".", "_"))
		fmt.Fprintf(tw, "  --%s\t(default: %q)\t%s [%s]\n", strings.ToLower(f.Name), f.Default, f.Description, envName)
	}
	return tw.Flush()
}

func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}

var _ = parser.DefaultRootName
