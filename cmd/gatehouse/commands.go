package main

import (
	"github.com/spf13/cobra"
)

// notBuilt returns a command that exists in the documented tree but whose
// capability has not landed: it fails with exit code 2 and says so.
func notBuilt(g *globals, use, short, issue string) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: short + " (not built yet)",
		RunE: func(cmd *cobra.Command, args []string) error {
			return errNotBuilt(cmd.CommandPath(), issue)
		},
	}
}

func newMirrorCmd(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:   "mirror",
		Short: "Sync, inspect and maintain verified APT mirrors",
	}
	c.AddCommand(
		newMirrorSyncCmd(g),
		newMirrorStatusCmd(g),
		newMirrorVerifyCmd(g),
		newMirrorGCCmd(g),
		newMirrorRollbackCmd(g),
		newMirrorListCmd(g),
		newImportAptSourcesCmd(g),
		notBuilt(g, "export NAME... --to FILE|DIR", "Write a signed air-gap bundle", "issue 7"),
		notBuilt(g, "import FILE|DIR", "Verify and publish an air-gap bundle", "issue 7"),
	)
	return c
}
