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

func newInitCmd(g *globals) *cobra.Command {
	return notBuilt(g, "init", "Write a commented config and create keys in a state directory", "issue 8")
}

func newRunCmd(g *globals) *cobra.Command {
	return notBuilt(g, "run", "Run serve, bastion and scheduled syncs in one process", "issue 8")
}

func newMirrorCmd(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:   "mirror",
		Short: "Sync, inspect and maintain verified APT mirrors",
	}
	c.AddCommand(
		notBuilt(g, "sync [NAME...]", "Fetch, verify and publish mirrors (cron/timer entry point)", "issue 4"),
		notBuilt(g, "status [NAME...]", "Show each mirror's published snapshot, freshness and last result", "issue 4"),
		notBuilt(g, "verify [NAME]", "Re-hash the published tree against its signed Release", "issue 4"),
		notBuilt(g, "gc [NAME...]", "Remove pool files no retained snapshot references", "issue 4"),
		notBuilt(g, "rollback NAME [SNAPSHOT]", "Publish an earlier snapshot again", "issue 4"),
		notBuilt(g, "list", "List mirrors and their snapshots", "issue 4"),
		newImportAptSourcesCmd(g),
		notBuilt(g, "export NAME... --to FILE|DIR", "Write a signed air-gap bundle", "issue 7"),
		notBuilt(g, "import FILE|DIR", "Verify and publish an air-gap bundle", "issue 7"),
	)
	return c
}

func newKeysCmd(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:   "keys",
		Short: "Manage the appliance's archive signing key",
	}
	c.AddCommand(
		notBuilt(g, "init-archive-key", "Create the OpenPGP archive signing key if missing", "issue 7"),
		notBuilt(g, "export-archive-key", "Print the archive public key for clients' Signed-By", "issue 7"),
	)
	return c
}
