package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/crypto/ssh"

	"gatehouse/bastion/record"
)

// recordingPaths are where recordings live and the key that verifies them:
// flags first, then [bastion] recordings_dir and recording_key.pub.
type recordingPaths struct{ dir, key string }

func (rp *recordingPaths) flags(c *cobra.Command) {
	c.Flags().StringVar(&rp.dir, "dir", "", "recordings directory (default [bastion] recordings_dir)")
	c.Flags().StringVar(&rp.key, "key", "", "recording public key (default [bastion] recording_key + \".pub\")")
}

func (rp *recordingPaths) resolve(g *globals, needKey bool) (dir string, pub ssh.PublicKey, err error) {
	dir, keyPath := rp.dir, rp.key
	if dir == "" || (needKey && keyPath == "") {
		cfg, err := loadConfig(g.configPath)
		if err != nil {
			return "", nil, err
		}
		if cfg.Bastion == nil {
			return "", nil, usageErrorf("%s has no [bastion] table: pass --dir and --key", g.configPath)
		}
		if dir == "" {
			dir = cfg.Bastion.RecordingsDir
		}
		if keyPath == "" && cfg.Bastion.RecordingKey != "" {
			keyPath = cfg.Bastion.RecordingKey + ".pub"
		}
	}
	if dir == "" {
		return "", nil, usageErrorf("no recordings directory: set [bastion] recordings_dir or pass --dir")
	}
	if !needKey {
		return dir, nil, nil
	}
	if keyPath == "" {
		return "", nil, usageErrorf("no recording key: set [bastion] recording_key or pass --key FILE.pub")
	}
	pub, err = readPublicKey(keyPath)
	if err != nil {
		return "", nil, err
	}
	return dir, pub, nil
}

// readPublicKey reads the recording public key (authorized_keys format).
func readPublicKey(path string) (ssh.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, usageErrorf("recording public key: %v", err)
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey(b)
	if err != nil {
		return nil, usageErrorf("recording public key %s: %v", path, err)
	}
	return pub, nil
}

func newRecordingsCmd(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:   "recordings",
		Short: "List, replay, verify and export session recordings; verify the audit log",
	}
	c.AddCommand(newRecordingsListCmd(g), newRecordingsPlayCmd(g), newRecordingsVerifyCmd(g), newRecordingsExportCmd(g))
	return c
}

// listedRecording is one line of `recordings list`: the recording's meta
// plus how long the session lasted ("open" while it has no manifest).
type listedRecording struct {
	record.Meta
	Duration string  `json:"duration"`
	Seconds  float64 `json:"duration_seconds,omitempty"`
}

func newRecordingsListCmd(g *globals) *cobra.Command {
	var rp recordingPaths
	c := &cobra.Command{
		Use:   "list",
		Short: "List recorded sessions, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			dir, _, err := rp.resolve(g, false)
			if err != nil {
				return err
			}
			metas, err := record.List(dir)
			if err != nil {
				return err
			}
			sort.Slice(metas, func(i, j int) bool { return metas[i].Start.After(metas[j].Start) })
			rows := make([]listedRecording, len(metas))
			for i, m := range metas {
				rows[i] = listedRecording{Meta: m, Duration: "open"}
				// The manifest, written when the session ends, holds
				// its end; without one the session is still running
				// or the bastion stopped during it.
				if man, _, err := record.ReadManifest(filepath.Join(dir, m.ID)); err == nil {
					d := man.End.Sub(man.Start).Round(time.Second)
					rows[i].Duration, rows[i].Seconds = d.String(), d.Seconds()
				}
			}
			if g.json {
				return writeJSON(g.stdout, rows)
			}
			for _, r := range rows {
				m := r.Meta
				fmt.Fprintf(g.stdout, "%s  %s  %-8s %s (key %q) from %s -> %s@%s\n", m.ID, m.Start.UTC().Format(time.RFC3339), r.Duration,
					m.Principal, record.Sanitize(m.KeyID, 80), m.Source, m.TargetLogin, m.Target)
			}
			return nil
		},
	}
	rp.flags(c)
	return c
}

// castFile returns the asciicast of channel ch of recording id (the first
// channel when ch < 0).
func castFile(dir, id string, ch int) (string, error) {
	if strings.ContainsAny(id, "/\\") || id == "" || id == "." || id == ".." {
		return "", usageErrorf("invalid recording id %q", id)
	}
	if ch >= 0 {
		return filepath.Join(dir, id, fmt.Sprintf("ch%02d.cast", ch)), nil
	}
	casts, _ := filepath.Glob(filepath.Join(dir, id, "ch*.cast"))
	if len(casts) == 0 {
		return "", usageErrorf("recording %s has no terminal channel (see 'gatehouse recordings list'; sftp is logged in events.jsonl)", id)
	}
	sort.Strings(casts)
	return casts[0], nil
}

// openCast opens the asciicast of channel ch (the first when ch < 0) of
// recording id.
func (rp *recordingPaths) openCast(g *globals, id string, ch int) (*os.File, error) {
	dir, _, err := rp.resolve(g, false)
	if err != nil {
		return nil, err
	}
	p, err := castFile(dir, id, ch)
	if err != nil {
		return nil, err
	}
	return os.Open(p)
}

func newRecordingsPlayCmd(g *globals) *cobra.Command {
	var rp recordingPaths
	var speed float64
	var idle time.Duration
	var ch int
	c := &cobra.Command{
		Use:   "play ID",
		Short: "Replay a recorded session in this terminal",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := rp.openCast(g, args[0], ch)
			if err != nil {
				return err
			}
			defer f.Close()
			return record.Play(cmd.Context(), g.stdout, f, record.PlayOptions{Speed: speed, IdleLimit: idle})
		},
	}
	rp.flags(c)
	c.Flags().Float64Var(&speed, "speed", 1, "playback speed factor")
	c.Flags().DurationVar(&idle, "idle-limit", 2*time.Second, "cap on any pause (0: none)")
	c.Flags().IntVar(&ch, "channel", -1, "channel number (default: the first)")
	return c
}

func newRecordingsExportCmd(g *globals) *cobra.Command {
	var rp recordingPaths
	var format string
	var ch int
	c := &cobra.Command{
		Use:   "export ID",
		Short: "Export a recording as asciicast-v3 (asciinema 3) or plain text",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if format != "asciicast-v3" && format != "text" {
				return usageErrorf("--format %q: use asciicast-v3 or text", format)
			}
			f, err := rp.openCast(g, args[0], ch)
			if err != nil {
				return err
			}
			defer f.Close()
			return record.ExportCast(g.stdout, f, format)
		},
	}
	rp.flags(c)
	c.Flags().StringVar(&format, "format", "text", "asciicast-v3 or text")
	c.Flags().IntVar(&ch, "channel", -1, "channel number (default: the first)")
	return c
}

func newRecordingsVerifyCmd(g *globals) *cobra.Command {
	var rp recordingPaths
	var audit, remote string
	var all bool
	c := &cobra.Command{
		Use:   "verify [ID...|--all] [--audit FILE] | --remote TARGET",
		Short: "Check recordings' hash chains and signatures, and the audit log's chain",
		Long: `Verify recordings: every chunk hash and the chain over them, that no file was
added, removed or truncated, and the manifest's SSHSIG signature with the
recording key (the same check as: ssh-keygen -Y verify -n gatehouse-recording).
--all also finds recordings deleted as a whole (via the recordings index).
--audit FILE verifies the bastion's hash-chained audit log: an edited,
deleted, inserted or reordered line is reported with its line number, and
every signed checkpoint (namespace gatehouse-audit, the recording key) is
checked. With both, the two logs' checkpoints are checked against each
other (a cut tail shows) and every proxy session in the audit log against
its recording and index entry, and back. Lines after the last checkpoint
are a note (a crash leaves them), not a failure.
--remote TARGET verifies, instead, what the bastion uploaded to that
[[publish_target]] ([bastion] recordings_upload): every recording and the
recordings index there, as --all does, with no access to the appliance's
state directory (only the config's target, its credentials and --key).
A recording the uploaded index started but did not close, and that the
bucket lacks, was still in progress at the upload: a note.
Exit 3 if anything does not verify, including a missing index or, when
the recording key is known, a log without any checkpoint.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if remote != "" {
				if len(args) > 0 || audit != "" || rp.dir != "" {
					return usageErrorf("--remote verifies every uploaded recording and the index: it takes no IDs, --audit or --dir")
				}
				return verifyRemote(cmd.Context(), g, rp.key, remote)
			}
			if len(args) == 0 && !all && audit == "" {
				return usageErrorf("name recordings to verify, or --all, or --audit FILE")
			}
			if audit != "" {
				if _, err := os.Stat(audit); err != nil {
					return usageErrorf("audit log: %v", err)
				}
			}
			var problems, notes []string
			var dir string
			var pub ssh.PublicKey
			var err error
			if len(args) > 0 || all {
				if dir, pub, err = rp.resolve(g, true); err != nil {
					return err
				}
			} else if rp.key != "" {
				// --audit alone: checkpoints are checked with the
				// recording key given or configured.
				if pub, err = readPublicKey(rp.key); err != nil {
					return err
				}
			} else {
				_, pub, _ = rp.resolve(g, true)
			}
			var results []record.VerifyResult
			if all || audit != "" {
				root := ""
				if all {
					root = dir
				}
				rep, err := record.VerifyEvidence(root, audit, pub)
				if err != nil {
					return err
				}
				results = rep.Recordings
				problems, notes = rep.Problems, rep.Notes
				for _, l := range []*record.LogReport{rep.Audit, rep.Index} {
					if l != nil && len(l.Problems) == 0 && !g.json {
						fmt.Fprintf(g.stdout, "%s log: OK, %d lines, hash chain intact, %d signed checkpoint(s)\n", l.Name, l.Lines, len(l.Checkpoints))
					}
				}
			}
			for _, id := range args {
				if _, err := castFile(dir, id, 0); err != nil {
					return err
				}
				results = append(results, record.VerifyResult{ID: id, Err: record.Verify(filepath.Join(dir, id), pub)})
			}
			return reportVerify(g, results, problems, notes)
		},
	}
	rp.flags(c)
	c.Flags().StringVar(&audit, "audit", "", "also verify this hash-chained audit log file")
	c.Flags().BoolVar(&all, "all", false, "verify every recording, and find deleted ones")
	c.Flags().StringVar(&remote, "remote", "", "verify the recordings uploaded to this [[publish_target]] instead of the local ones (with --key)")
	return c
}

// reportVerify prints the outcome of recordings verify; any problem is
// exit 3.
func reportVerify(g *globals, results []record.VerifyResult, problems, notes []string) error {
	for _, r := range results {
		if r.Err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", r.ID, r.Err))
		} else if !g.json {
			fmt.Fprintf(g.stdout, "%s: OK\n", r.ID)
		}
	}
	if g.json {
		if err := writeJSON(g.stdout, map[string]any{"ok": len(problems) == 0, "problems": problems, "notes": notes}); err != nil {
			return err
		}
	} else {
		for _, n := range notes {
			fmt.Fprintln(g.stdout, "note:", n)
		}
		for _, p := range problems {
			fmt.Fprintln(g.stdout, "FAILED:", p)
		}
	}
	if len(problems) > 0 {
		return &refusedError{fmt.Errorf("%d verification problem(s)", len(problems))}
	}
	return nil
}
