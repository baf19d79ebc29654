package main

import (
	"runtime"

	"github.com/spf13/cobra"

	"gatehouse/cmd/gatehouse/demo"
)

// newDemoCmd is the thin cobra wrapper of demo.Run, which holds the demo.
func newDemoCmd(g *globals) *cobra.Command {
	var dir string
	var keep, check bool
	var exitAfterCheck bool
	c := &cobra.Command{
		Use:   "demo",
		Short: "Run both halves on a built-in sample: no config, no network",
		Long: `Build a signed sample upstream archive in a temporary directory, sync and
verify it into a mirror, serve it on 127.0.0.1, start the certificate-only
bastion with a throwaway CA in front of a sample SSH target (jump) and a
second one it reaches as a recording proxy, check both with
the real apt-get and ssh when they are installed, and print the commands to
try them yourself. Everything binds to 127.0.0.1; nothing leaves the machine.
Runs until interrupted (Ctrl-C), then removes the directory unless --keep.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return demo.Run(cmd.Context(), demo.Options{Dir: dir, Keep: keep, Check: check, ExitAfterCheck: exitAfterCheck,
				Arch: debianArch(runtime.GOARCH), Stdout: g.stdout})
		},
	}
	c.Flags().StringVar(&dir, "dir", "", "directory for the demo's state (default: a new temporary directory)")
	c.Flags().BoolVar(&keep, "keep", false, "keep the demo directory on exit")
	c.Flags().BoolVar(&check, "check", true, "run the real apt-get and ssh against the demo once started")
	c.Flags().BoolVar(&exitAfterCheck, "exit", false, "exit after the checks instead of running until interrupted (exit 1 if a check failed)")
	return c
}
