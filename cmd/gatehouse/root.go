package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"strings"
	"sync"

	"github.com/spf13/cobra"

	"gatehouse/bastion"
)

// defaultConfigPath is used when neither --config nor GATEHOUSE_CONFIG is set.
const defaultConfigPath = "/etc/gatehouse/gatehouse.toml"

// globals holds the flags shared by every command and the process handles
// the commands may use. Commands receive it instead of touching os.*.
type globals struct {
	configPath string
	json       bool
	logLevel   string

	stdout, stderr io.Writer
	log            *slog.Logger

	// sink is the log handler's writer when stderr is a terminal, so that
	// a progress display can put log lines above itself (progress.go);
	// nil otherwise.
	sink *logSink

	// refusals is the service log's budget for mirror refusals (see
	// refusals.go).
	refusalsOnce sync.Once
	refusals     *bastion.KeyedLimiter
}

// run builds the command tree, executes it and returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	g := &globals{stdout: stdout, stderr: stderr}
	root := newRootCmd(g)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err != nil {
		// cobra's own flag/argument errors are usage errors.
		var ue *usageError
		var re *refusedError
		if !errors.As(err, &ue) && !errors.As(err, &re) && isCobraUsage(err) {
			err = &usageError{err}
		}
		fmt.Fprintf(stderr, "gatehouse: %v\n", err)
		if exitCode(err) == exitUsage && isCobraUsage(err) {
			fmt.Fprintln(stderr, "Run 'gatehouse help' (or add --help to any command) for usage.")
		}
	}
	return exitCode(err)
}

// isCobraUsage recognizes cobra's argument and flag errors, which carry no type.
func isCobraUsage(err error) bool {
	s := err.Error()
	for _, p := range []string{"unknown command", "unknown flag", "unknown shorthand flag", "flag needs an argument", "invalid argument", "accepts ", "requires at least", "requires at most", "received "} {
		if strings.Contains(s, p) {
			return true
		}
	}
	return false
}

func newRootCmd(g *globals) *cobra.Command {
	root := &cobra.Command{
		Use:   "gatehouse",
		Short: "Verified APT mirror and certificate-only SSH bastion for an isolated segment",
		Long: `gatehouse is the single checked entrance to an isolated network segment.

Goods: it syncs signed Debian/Ubuntu APT repositories, verifies every byte
against the upstream's OpenPGP signature, and serves a local mirror.
People: it runs an SSH bastion that accepts only OpenSSH certificates, lets
each principal reach only the hosts its policy names, and records sessions.

Exit codes: 0 success (including "already current"), 1 failure,
2 usage or configuration error, 3 refused by verification.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			return g.setup(cmd)
		},
		// The man pages are generated from this tree; cobra's footer would
		// stamp them with the generation date.
		DisableAutoGenTag: true,
	}
	v, goVer := buildVersion()
	root.Version = v
	// --version prints exactly what `gatehouse version` prints.
	root.SetVersionTemplate("gatehouse {{.Version}} (" + goVer + ")\n")
	root.PersistentFlags().StringVar(&g.configPath, "config", "", "configuration file (default $GATEHOUSE_CONFIG or "+defaultConfigPath+")")
	root.PersistentFlags().BoolVar(&g.json, "json", false, "structured JSON output and logs instead of human text")
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "info", "log level: debug, info, warn or error")

	root.AddCommand(
		newVersionCmd(g),
		newDemoCmd(g),
		newInitCmd(g),
		newMirrorCmd(g),
		newKeysCmd(g),
		newServeCmd(g),
		newBastionCmd(g),
		newRecordingsCmd(g),
		newRunCmd(g),
		newCheckConfigCmd(g),
		newGenDocsCmd(g),
	)
	strictCommandTree(root)
	return root
}

// strictCommandTree makes an unknown subcommand a usage error (exit 2) with
// cobra's "Did you mean" suggestion at every level of the tree. Cobra itself
// does this only for the root: below it, a command that only groups
// subcommands prints its help and exits 0 for `gatehouse mirror frobnicate`,
// so a typo in a cron line would "succeed", and a runnable command with
// subcommands (bastion) says "unknown command" without a suggestion.
// It also adds cobra's help and completion commands now, instead of at
// Execute, so that they are covered too and the man pages list them.
func strictCommandTree(root *cobra.Command) {
	root.InitDefaultHelpCmd()
	root.InitDefaultCompletionCmd()
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, sub := range c.Commands() {
			walk(sub)
		}
		if c.Name() == "help" && c.HasParent() && !c.HasSubCommands() {
			strictHelpCmd(c)
			return
		}
		if !c.HasSubCommands() {
			return
		}
		if c.SuggestionsMinimumDistance <= 0 {
			c.SuggestionsMinimumDistance = 2 // cobra's default, which only its own lookup applies
		}
		if !c.Runnable() {
			// A group: with no arguments it shows its help (exit 0, as the
			// root does); `gatehouse mirror help [sync]` is help, not a typo.
			c.Args = nil
			c.RunE = func(cmd *cobra.Command, args []string) error {
				if len(args) == 0 {
					return cmd.Help()
				}
				if args[0] == "help" {
					return helpFor(cmd, args[1:])
				}
				return unknownCommand(cmd, args[0])
			}
			return
		}
		check := c.Args
		if check == nil {
			check = cobra.ArbitraryArgs
		}
		c.Args = func(cmd *cobra.Command, args []string) error {
			if err := check(cmd, args); err != nil {
				if len(args) > 0 && len(cmd.SuggestionsFor(args[0])) > 0 {
					return unknownCommand(cmd, args[0])
				}
				return err
			}
			return nil
		}
	}
	walk(root)
}

// unknownCommand is cobra's own "unknown command" error, suggestions included,
// as a usage error.
func unknownCommand(c *cobra.Command, arg string) error {
	msg := fmt.Sprintf("unknown command %q for %q", arg, c.CommandPath())
	if s := c.SuggestionsFor(arg); len(s) > 0 {
		msg += "\n\nDid you mean this?\n\t" + strings.Join(s, "\n\t") + "\n"
	}
	return &usageError{errors.New(msg)}
}

// helpFor shows the help of the command that path names below c, or fails
// like an unknown command when there is none.
func helpFor(c *cobra.Command, path []string) error {
	target, rest, err := c.Find(path)
	if err != nil {
		return &usageError{err}
	}
	if len(rest) > 0 {
		return unknownCommand(target, rest[0])
	}
	return target.Help()
}

// strictHelpCmd makes `gatehouse help frobnicate` a usage error; cobra's help
// command prints "Unknown help topic" and exits 0. Its completion of command
// names is kept.
func strictHelpCmd(h *cobra.Command) {
	h.Run = nil
	h.Args = nil
	h.RunE = func(cmd *cobra.Command, args []string) error {
		return helpFor(cmd.Root(), args)
	}
}

// setup resolves the config path and installs the logger. It is the only
// place that reads the environment.
func (g *globals) setup(cmd *cobra.Command) error {
	if g.configPath == "" {
		g.configPath = os.Getenv("GATEHOUSE_CONFIG")
	}
	if g.configPath == "" {
		g.configPath = defaultConfigPath
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(g.logLevel)); err != nil {
		return usageErrorf("--log-level %q: use debug, info, warn or error", g.logLevel)
	}
	opts := &slog.HandlerOptions{Level: level}
	logTo := g.stderr
	if isTerminal(g.stderr) {
		// A terminal is never the journal stream, so nothing is lost by
		// handing newLogHandler the sink instead of the *os.File.
		g.sink = &logSink{w: g.stderr}
		logTo = g.sink
	}
	g.log = slog.New(newLogHandler(logTo, opts, g.json, os.Getenv("JOURNAL_STREAM")))
	slog.SetDefault(g.log)
	return nil
}

func newVersionCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the gatehouse version and build information",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			v, goVer := buildVersion()
			if g.json {
				return writeJSON(g.stdout, map[string]string{"version": v, "go": goVer})
			}
			_, err := fmt.Fprintf(g.stdout, "gatehouse %s (%s)\n", v, goVer)
			return err
		},
	}
}

// version is the release version. The package build stamps it from
// debian/changelog with -ldflags "-X main.version=VERSION"; a plain
// `go build` or `go run` leaves it empty and buildVersion says what it can.
var version string

// buildVersion returns the stamped version; else the module version (set by
// `go install gatehouse@vX`); else "devel", plus the VCS revision when the
// toolchain recorded one (`go build` in a git checkout, unless
// -buildvcs=false). It never claims a release it is not.
func buildVersion() (v, goVersion string) {
	bi, ok := debug.ReadBuildInfo()
	goVersion = "unknown Go version"
	if ok {
		goVersion = bi.GoVersion
	}
	if version != "" {
		return version, goVersion
	}
	if !ok {
		return "devel", goVersion
	}
	if bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version, goVersion
	}
	var rev, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "-dirty"
			}
		}
	}
	if rev == "" {
		return "devel", goVersion
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	return "devel+" + rev + dirty, goVersion
}
