package mirror

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"gatehouse/mirror/store"
)

// The post_publish hook: one command (argv, no shell) run after every
// publish of a mirror (a sync's, `mirror publish`, `mirror rollback`, an
// import), for pushing the new snapshot to static replicas
// (contrib/push-replicas) or telling a CDN to revalidate. What it gets in its environment:
//
//	GATEHOUSE_MIRROR        the mirror's name
//	GATEHOUSE_SNAPSHOT      the snapshot ID just published
//	GATEHOUSE_SNAPSHOT_DIR  ROOT/NAME/snapshots/ID: its dists/ (or, for a
//	                        flat repository, flat/), and pool/, the override
//	                        layer (only paths whose bytes differ from the
//	                        base layer); gatehouse-manifest.json is internal
//	GATEHOUSE_POOL_DIR      ROOT/NAME/pool: the base layer, shared by every
//	                        retained snapshot
//
// The tree clients are served is dists/ from the snapshot and pool/P from
// GATEHOUSE_SNAPSHOT_DIR/pool/P if that exists, else GATEHOUSE_POOL_DIR/P
// (mirror/store). Nothing is materialized for the hook: a copy of the
// merged tree per publish would cost a link per pool file. Both
// directories are stable while the hook runs: it runs with the mirror's
// lock held, so no sync or gc prunes them meanwhile (and a sync started
// then fails with "already running").
//
// A failure (non-zero exit, a signal, the post_publish_timeout, a command
// that does not start) never un-publishes: it is logged, recorded in the
// state (HookRecord, which `mirror status`, metrics and the status page
// show) and returned as a *PostPublishError, which the command line turns
// into exit 1 after saying what was published. The state keeps no output
// of the command: state.json is world-readable and the status page is
// served, and a push script's output can carry credentials (a URL with a
// password, a token in an error). Its last lines go to the service log
// only, with control characters escaped.

// HookRecord is the outcome of the last post_publish run of a mirror, kept
// in its state.
type HookRecord struct {
	Snapshot string    `json:"snapshot"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	// OK is true when the command exited 0 within the timeout.
	OK bool `json:"ok"`
	// ExitStatus is the command's exit status; -1 when it did not exit on
	// its own (killed, timed out, did not start).
	ExitStatus int `json:"exit_status"`
	// Error says why it failed, without any of its output: "exit status
	// 23", "killed after the timeout of 10m0s", "signal: killed", or why it
	// did not start.
	Error string `json:"error,omitempty"`
	// Failures counts consecutive failed runs (0 after a success).
	Failures int `json:"failures,omitempty"`
}

// PostPublishError is returned (after the publish succeeded) when the
// post_publish command failed. The snapshot is published and stays so.
type PostPublishError struct {
	Mirror, Snapshot string
	Record           HookRecord
}

// Error reads "mirror NAME: published SNAP; post_publish failed: REASON".
func (e *PostPublishError) Error() string {
	return fmt.Sprintf("mirror %s: published %s; post_publish failed: %s (its output is in the log; the snapshot stays published, fix the hook and run `gatehouse mirror publish %s %s` to run it again)",
		e.Mirror, e.Snapshot, e.Record.Error, e.Mirror, e.Snapshot)
}

// ErrPostPublish is wrapped by *PostPublishError.
var ErrPostPublish = errors.New("post_publish failed")

// Unwrap makes errors.Is(err, ErrPostPublish) true.
func (e *PostPublishError) Unwrap() error { return ErrPostPublish }

// DefaultHookPath is the environment of a post_publish command when
// Options.HookEnv is nil.
const DefaultHookPath = "PATH=/usr/local/bin:/usr/bin:/bin"

// hookTailBytes bounds the output kept in memory and logged on failure.
const hookTailBytes = 2048

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append(t.b[:0], t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

// sanitize makes command output safe for one log field: invalid UTF-8 and
// control characters (but newlines) escaped, so that output cannot forge
// log lines or terminal sequences.
func sanitize(b []byte) string {
	s := strings.ToValidUTF8(string(b), "\uFFFD")
	var out strings.Builder
	for _, r := range s {
		switch {
		case r == '\n' || r == '\t':
			out.WriteRune(r)
		case r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0):
			fmt.Fprintf(&out, "\\x%02x", r)
		default:
			out.WriteRune(r)
		}
	}
	return strings.TrimSpace(out.String())
}

// runPostPublish runs cfg.PostPublish for snapshot id of st, if set, and
// returns its record (nil when no hook is configured). The command gets
// env (Options.HookEnv) plus the GATEHOUSE_* variables, stdin
// from /dev/null, and its own process group, which is killed as a whole
// (SIGKILL) at the timeout or when ctx ends, so an rsync it started dies
// with it.
func runPostPublish(ctx context.Context, st *store.Store, cfg Config, id string, env []string, now func() time.Time, log *slog.Logger) *HookRecord {
	if len(cfg.PostPublish) == 0 {
		return nil
	}
	rec := &HookRecord{Snapshot: id, Started: now().UTC(), ExitStatus: -1}
	hctx, cancel := context.WithTimeout(ctx, cfg.PostPublishTimeout.Duration)
	defer cancel()
	cmd := exec.Command(cfg.PostPublish[0], cfg.PostPublish[1:]...)
	if env == nil {
		env = []string{DefaultHookPath}
	}
	cmd.Env = append(slices.Clip(env),
		"GATEHOUSE_MIRROR="+cfg.Name,
		"GATEHOUSE_SNAPSHOT="+id,
		"GATEHOUSE_SNAPSHOT_DIR="+filepath.Join(st.Dir(), store.SnapshotsDir, id),
		"GATEHOUSE_POOL_DIR="+filepath.Join(st.Dir(), store.PoolDir),
	)
	cmd.Dir = st.Dir()
	out := &tailBuffer{max: hookTailBytes}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// A descendant that left the group (setsid) and keeps the output pipe
	// open would otherwise hold Wait forever after the group is killed.
	cmd.WaitDelay = 5 * time.Second
	log = log.With("mirror", cfg.Name, "snapshot", id, "command", cfg.PostPublish[0])
	err := cmd.Start()
	if err == nil {
		done := make(chan struct{})
		go func() {
			select {
			case <-hctx.Done():
				// The whole group: a script's children (rsync, ssh) too.
				_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			case <-done:
			}
		}()
		err = cmd.Wait()
		close(done)
		// Children that outlived the script would keep running
		// unbounded; the group goes when its leader is done.
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	rec.Finished = now().UTC()
	var ee *exec.ExitError
	switch {
	case err == nil:
		rec.OK, rec.ExitStatus = true, 0
	case hctx.Err() == context.DeadlineExceeded:
		rec.Error = fmt.Sprintf("killed after the post_publish_timeout of %s", cfg.PostPublishTimeout.Duration)
	case ctx.Err() != nil:
		rec.Error = "killed: gatehouse was stopped while it ran"
	case errors.As(err, &ee):
		rec.ExitStatus = ee.ExitCode()
		rec.Error = ee.Error()
	default:
		rec.Error = "did not start: " + err.Error()
	}
	if rec.OK {
		log.Info("post_publish done", "duration", rec.Finished.Sub(rec.Started).Round(time.Millisecond))
	} else {
		log.Error("post_publish failed; the snapshot stays published", "err", rec.Error,
			"output_tail", sanitize(out.b), "duration", rec.Finished.Sub(rec.Started).Round(time.Millisecond))
	}
	return rec
}

// noteHook records rec in x, counting consecutive failures.
func noteHook(x *stateExtra, rec *HookRecord) {
	if rec == nil {
		return
	}
	if !rec.OK {
		rec.Failures = 1
		if x.PostPublish != nil && !x.PostPublish.OK {
			rec.Failures = x.PostPublish.Failures + 1
		}
	}
	x.PostPublish = rec
}

// hookResult does what follows every publish that holds st's lock:
// the uploads to the mirror's publish_to targets, then the post_publish
// command (so a replica push never runs ahead of the bucket). It records
// both outcomes in the state (read afresh: the publish wrote it) and
// returns a *PostPublishError when the hook failed; a failed upload is
// only recorded and returned among the warnings.
func hookResult(ctx context.Context, st *store.Store, cfg Config, id string, opt Options) (*HookRecord, []UploadRecord, []string, error) {
	uploads, warnings := uploadSnapshot(ctx, st, cfg, id, opt)
	rec := runPostPublish(ctx, st, cfg, id, opt.HookEnv, opt.clock(), opt.logger())
	if len(uploads) > 0 || rec != nil {
		state, err := st.ReadState()
		if err == nil {
			x := readExtra(state)
			for _, u := range uploads {
				if x.Uploads == nil {
					x.Uploads = map[string]UploadRecord{}
				}
				x.Uploads[u.Target] = u
			}
			noteHook(&x, rec)
			if b, merr := json.Marshal(x); merr == nil {
				state.Extra = b
			}
			err = st.WriteState(state)
		}
		if err != nil {
			opt.logger().Error("recording the upload and post_publish results", "mirror", cfg.Name, "err", err)
		}
	}
	if rec != nil && !rec.OK {
		return rec, uploads, warnings, &PostPublishError{Mirror: cfg.Name, Snapshot: id, Record: *rec}
	}
	return rec, uploads, warnings, nil
}

// postPublish runs the hook after a sync published id (the state is
// written, the lock still held) and puts its record in the report.
func (r *run) postPublish(ctx context.Context, id string) error {
	rec, uploads, warnings, err := hookResult(ctx, r.st, r.cfg, id, r.opt)
	r.rep.PostPublish = rec
	r.rep.Uploads = append(r.rep.Uploads, uploads...)
	r.rep.Warnings = append(r.rep.Warnings, warnings...)
	// The state on disk now holds what hookResult recorded; keep r's copy
	// in step for anything written after.
	if state, serr := r.st.ReadState(); serr == nil {
		r.state, r.extra = state, readExtra(state)
	}
	return err
}
