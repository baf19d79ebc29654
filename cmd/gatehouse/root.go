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

	"github.com/spf13/cobra"
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
	}
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
	)
	return root
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
	g.log = slog.New(newLogHandler(g.stderr, opts, g.json, os.Getenv("JOURNAL_STREAM")))
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

// buildVersion reports the module version or VCS revision embedded by the Go
// toolchain, so release builds need no ldflags.
func buildVersion() (version, goVersion string) {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown", "unknown"
	}
	version = bi.Main.Version
	var rev, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "+dirty"
			}
		}
	}
	if (version == "" || version == "(devel)") && rev != "" {
		if len(rev) > 12 {
			rev = rev[:12]
		}
		version = "devel-" + rev + dirty
	}
	if version == "" {
		version = "(devel)"
	}
	return version, bi.GoVersion
}
