package main

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"gatehouse/apt/pgp"
	"gatehouse/mirror"
)

func newMirrorExportCmd(g *globals) *cobra.Command {
	var to, since, volume string
	c := &cobra.Command{
		Use:   "export NAME... --to FILE|DIR [--since BUNDLE|SNAPSHOT] [--volume-size SIZE]",
		Short: "Write a signed air-gap bundle of mirrors' published snapshots",
		Long: `Write a bundle holding each named mirror's published snapshot (dists) and its
pool files, with a manifest of every file's size and SHA-256 signed by this
appliance's archive key ([signing] key). --since a previous bundle (or a
snapshot id) makes it incremental: pool files that bundle carried are left
out. --volume-size splits it into FILE.000, FILE.001, ... for removable media.
The receiving appliance verifies it with 'gatehouse mirror import'.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if to == "" {
				return usageErrorf("--to FILE|DIR is required")
			}
			cfg, ms, err := mirrorsFor(g, args, true)
			if err != nil {
				return err
			}
			var vol int64
			if volume != "" {
				if vol, err = mirror.ParseRate(volume); err != nil {
					return usageErrorf("--volume-size %q: use a size like \"4GiB\" or \"700MB\"", volume)
				}
			}
			keyPath := cfg.Signing.Key
			if keyPath == "" {
				return usageErrorf("[signing] key is not set: bundles are signed with the archive key ('gatehouse keys init-archive-key')")
			}
			key, err := pgp.LoadSigningKey(keyPath)
			if err != nil {
				return usageErrorf("%v", err)
			}
			prog := newProgress(g, "export")
			man, err := mirror.Export(cmd.Context(), cfg.StateDir, ms, to, since, key, vol, mirror.Options{Log: g.log, Now: time.Now, Progress: prog.event})
			prog.done()
			if err != nil {
				return err
			}
			if g.json {
				return writeJSON(g.stdout, man)
			}
			var n int
			var bytes int64
			for _, f := range man.Files {
				n++
				bytes += f.Size
			}
			fmt.Fprintf(g.stdout, "wrote %s: %d files, %s, signed by %s\n", to, n, humanBytes(bytes), key.Fingerprint())
			return nil
		},
	}
	c.Flags().StringVar(&to, "to", "", "bundle file, or directory, to write")
	c.Flags().StringVar(&since, "since", "", "previous bundle or snapshot id: export only what is new since")
	c.Flags().StringVar(&volume, "volume-size", "", "split into volumes of this size, e.g. 4GiB")
	return c
}

func newMirrorImportCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "import FILE|DIR",
		Short: "Verify an air-gap bundle and publish its mirrors atomically",
		Long: `Verify a bundle made by 'gatehouse mirror export' on another appliance: the
manifest's signature against [import] trusted_keys, every file's size and
SHA-256, each suite's InRelease against the mirror's own keyring with APT's
rule, Date not older than what is published, and every pool file against the
signed indexes. Only then is each mirror published atomically; nothing is
published from a bundle that fails any check (exit 3). An interrupted import
resumes: files already in place with the right hash are not written again.
The mirrors must be configured here with the same names.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := loadServiceConfig(g)
			if err != nil {
				return err
			}
			if len(cfg.Import.TrustedKeys) == 0 {
				return usageErrorf("[import] trusted_keys is empty: name the exporting appliance's archive public key ('gatehouse keys export-archive-key' there)")
			}
			trusted, err := pgp.LoadKeyrings(cfg.Import.TrustedKeys...)
			if err != nil {
				return usageErrorf("[import] trusted_keys: %v", err)
			}
			ms, err := selectMirrors(cfg, nil)
			if err != nil {
				return err
			}
			prog := newProgress(g, "import")
			rep, err := mirror.Import(cmd.Context(), cfg.StateDir, ms, args[0], trusted, mirror.Options{Log: g.log, Now: time.Now, Progress: prog.event, HookEnv: os.Environ()})
			prog.done()
			if rep != nil {
				if g.json {
					if jerr := writeJSON(g.stdout, rep); jerr != nil {
						return jerr
					}
				} else {
					fmt.Fprintf(g.stdout, "%s: signed by %s, %d files written, %d already present, %d ignored\n",
						args[0], rep.SignedBy, rep.Written, rep.Present, rep.Ignored)
					for _, r := range rep.Mirrors {
						printSyncReport(g.stdout, r)
					}
				}
			}
			return err
		},
	}
}
