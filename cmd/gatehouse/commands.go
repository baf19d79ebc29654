package main

import (
	"github.com/spf13/cobra"
)

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
		newMirrorPublishCmd(g),
		newMirrorRollbackCmd(g),
		newMirrorListCmd(g),
		newImportAptSourcesCmd(g),
		newMirrorExportCmd(g),
		newMirrorImportCmd(g),
	)
	return c
}
