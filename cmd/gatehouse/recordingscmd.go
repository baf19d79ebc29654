package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"gatehouse/bastion/record"
)

func newRecordingsCmd(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:   "recordings",
		Short: "List, replay, verify and export session recordings; verify the audit log",
	}
	c.AddCommand(
		notBuilt(g, "list", "List recorded sessions", "issue 6"),
		notBuilt(g, "play ID", "Replay a recorded session in the terminal", "issue 6"),
		newRecordingsVerifyCmd(g),
		notBuilt(g, "export ID", "Export a recording as asciicast v3 or text", "issue 6"),
	)
	return c
}

func newRecordingsVerifyCmd(g *globals) *cobra.Command {
	var audit string
	c := &cobra.Command{
		Use:   "verify --audit FILE",
		Short: "Check the audit log's hash chain (recordings: issue 6)",
		Long: `Verify the hash chain of the bastion's JSON-lines audit log: an edited,
deleted, inserted or reordered line is reported with its line number and the
command exits 3. (Verifying session recordings arrives with issue 6.)`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if audit == "" {
				return errNotBuilt("gatehouse recordings verify (of recordings; use --audit FILE for the audit log)", "issue 6")
			}
			f, err := os.Open(audit)
			if err != nil {
				return usageErrorf("audit log: %v", err)
			}
			defer f.Close()
			n, err := record.VerifyAudit(f)
			if g.json {
				out := map[string]any{"audit_log": audit, "lines": n, "ok": err == nil}
				if err != nil {
					out["error"] = err.Error()
				}
				if jerr := writeJSON(g.stdout, out); jerr != nil {
					return jerr
				}
			} else if err == nil {
				fmt.Fprintf(g.stdout, "%s: OK, %d lines, hash chain intact\n", audit, n)
			}
			var ae *record.AuditError
			if errors.As(err, &ae) {
				return &refusedError{fmt.Errorf("%s: %w", audit, err)}
			}
			if err != nil {
				return fmt.Errorf("%s: %w", audit, err)
			}
			return nil
		},
	}
	c.Flags().StringVar(&audit, "audit", "", "verify this hash-chained audit log file")
	return c
}
