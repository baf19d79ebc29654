package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

// newGenDocsCmd is the hidden `gatehouse gen-docs DIR` the package build
// (debian/rules) runs to write the man pages and shell completions from this
// very command tree, so they cannot drift from the binary they ship with.
// It is hidden because operators never need it; the generated files are
// what they read.
func newGenDocsCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:    "gen-docs DIR",
		Short:  "Write man pages (DIR/man) and bash, zsh and fish completions (DIR/completions) for packaging",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return genDocs(cmd.Root(), args[0])
		},
	}
}

// genDocs writes DIR/man/gatehouse*.1 and the completions under the names
// and directories Debian's shells look for (relative to DIR/completions):
// bash/gatehouse, zsh/_gatehouse, fish/gatehouse.fish. The man pages' date
// comes from SOURCE_DATE_EPOCH when set (cobra reads it), so two package
// builds of one commit write identical pages.
func genDocs(root *cobra.Command, dir string) error {
	man := filepath.Join(dir, "man")
	comp := filepath.Join(dir, "completions")
	for _, d := range []string{man, filepath.Join(comp, "bash"), filepath.Join(comp, "zsh"), filepath.Join(comp, "fish")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	header := &doc.GenManHeader{
		Title:   "GATEHOUSE",
		Section: "1",
		Source:  "gatehouse " + root.Version,
		Manual:  "gatehouse manual",
	}
	if err := doc.GenManTree(root, header, man); err != nil {
		return fmt.Errorf("man pages: %w", err)
	}
	for _, c := range []struct {
		path string
		gen  func(f *os.File) error
	}{
		{filepath.Join(comp, "bash", "gatehouse"), func(f *os.File) error { return root.GenBashCompletionV2(f, true) }},
		{filepath.Join(comp, "zsh", "_gatehouse"), func(f *os.File) error { return root.GenZshCompletion(f) }},
		{filepath.Join(comp, "fish", "gatehouse.fish"), func(f *os.File) error { return root.GenFishCompletion(f, true) }},
	} {
		f, err := os.Create(c.path)
		if err != nil {
			return err
		}
		err = c.gen(f)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("completion %s: %w", c.path, err)
		}
	}
	return nil
}
