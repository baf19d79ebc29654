package mirror

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"gatehouse/mirror/store"
)

// eachSnapshotEntry calls fn with every pool file snapshot sn names (the
// path relative to the pool directory, and its object key), and whether
// the snapshot serves it from its own override layer. A snapshot without a
// readable manifest is an error: guessing would let GC delete files a live
// snapshot needs.
func eachSnapshotEntry(st *store.Store, sn store.SnapshotInfo, fn func(rel, key string, overridden bool)) error {
	m, err := readManifest(st, sn.ID)
	if err != nil {
		return fmt.Errorf("collecting referenced pool files: %w (remove the snapshot with `gatehouse mirror rollback` and a new sync, or repair it)", err)
	}
	over, err := st.Overridden(sn.ID)
	if err != nil {
		return err
	}
	for _, name := range slices.Sorted(maps.Keys(m.Suites)) {
		err := eachPublishedEntry(sn.Dir, name, m.Suites[name], func(e poolEntry, _ string) error {
			rel, _ := poolRel(e.Filename)
			_, o := over[rel]
			fn(rel, e.key(), o)
			return nil
		})
		if err != nil {
			return fmt.Errorf("collecting referenced pool files of snapshot %s: %w", sn.ID, err)
		}
	}
	return nil
}

// baseRefs yields the pool paths the snapshots serve from the base layer
// pool/ (what store.Collection.Referenced wants), streaming the indexes.
func baseRefs(st *store.Store, snaps []store.SnapshotInfo) func(yield func(string)) error {
	return func(yield func(string)) error {
		for _, sn := range snaps {
			err := eachSnapshotEntry(st, sn, func(rel, _ string, overridden bool) {
				if !overridden {
					yield(rel)
				}
			})
			if err != nil {
				return err
			}
		}
		return nil
	}
}

// collect is the one garbage collection (store.Collect): it prunes the
// doomed snapshots, then with walk (`mirror gc`) walks everything, else
// (the sync's cleanup) looks only at the pool files they named.
func collect(ctx context.Context, st *store.Store, cfg Config, doomed []store.SnapshotInfo, walk bool) (store.GCResult, error) {
	snaps, err := st.Snapshots()
	if err != nil {
		return store.GCResult{}, err
	}
	c := store.Collection{MaxDeleteFraction: cfg.MaxDeleteFraction}
	var kept []store.SnapshotInfo
	for _, sn := range snaps {
		if !slices.ContainsFunc(doomed, func(d store.SnapshotInfo) bool { return d.ID == sn.ID }) {
			kept = append(kept, sn)
		}
	}
	c.Referenced = baseRefs(st, kept)
	for _, d := range doomed {
		c.Prune = append(c.Prune, d.ID)
	}
	if !walk {
		c.Candidates = func(yield func(store.PoolRef)) error {
			for _, sn := range doomed {
				err := eachSnapshotEntry(st, sn, func(rel, key string, _ bool) {
					yield(store.PoolRef{Rel: rel, Hash: key})
				})
				if err != nil {
					return err
				}
			}
			return nil
		}
	}
	return st.Collect(ctx, c)
}

// doomedSnapshots returns the snapshots beyond keep (oldest first), never
// the published one.
func doomedSnapshots(snaps []store.SnapshotInfo, keep int) []store.SnapshotInfo {
	var doomed []store.SnapshotInfo
	for i, s := range snaps {
		if i < len(snaps)-keep && !s.Current {
			doomed = append(doomed, s)
		}
	}
	return doomed
}

// GC prunes snapshots beyond cfg.KeepSnapshots (never the published one) and
// deletes the pool files no remaining snapshot references. It refuses, with
// an error wrapping store.ErrWipeProtection, to delete more than
// cfg.MaxDeleteFraction of the pool. It takes the mirror's lock, so it fails
// while a sync runs.
func GC(ctx context.Context, stateDir string, cfg Config, opt Options) (removed int, bytes int64, err error) {
	st, err := openStore(stateDir, &cfg, opt)
	if err != nil {
		return 0, 0, err
	}
	unlock, err := st.Lock(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("mirror %s: %w", cfg.Name, err)
	}
	defer unlock()
	snaps, err := st.Snapshots()
	if err != nil {
		return 0, 0, fmt.Errorf("mirror %s: %w", cfg.Name, err)
	}
	// Pruned by the same Collect that deletes their files, so that no
	// moment (and no kill) leaves pool/ serving what no snapshot names.
	doomed := doomedSnapshots(snaps, cfg.KeepSnapshots)
	res, err := collect(ctx, st, cfg, doomed, true)
	if err != nil {
		return res.Removed, res.RemovedBytes, fmt.Errorf("mirror %s: gc: %w", cfg.Name, err)
	}
	if len(doomed) > 0 {
		opt.logger().Info("pruned snapshots", "mirror", cfg.Name, "snapshots", len(doomed))
	}
	return res.Removed, res.RemovedBytes, nil
}

// Rollback publishes an earlier snapshot: the one named, or with snapshot
// "" the newest one older than the published snapshot that was itself
// published before (never one a failed sync left unpublished, see
// published.go). The switch is recorded in the state. The accepted Release
// Dates are kept (rollback protection is about upstream), but the stored
// HTTP validators are dropped so the next sync fetches upstream's Release
// in full instead of taking a 304 as "nothing to do".
func Rollback(stateDir string, cfg Config, snapshot string) error {
	return RollbackWith(context.Background(), stateDir, cfg, snapshot, Options{})
}

// RollbackWith is Rollback with a context, a logger and a clock, and runs
// the mirror's post_publish command afterwards (a failure is a
// *PostPublishError; the rollback stands).
func RollbackWith(ctx context.Context, stateDir string, cfg Config, snapshot string, opt Options) error {
	st, err := openStore(stateDir, &cfg, opt)
	if err != nil {
		return err
	}
	unlock, err := st.Lock(ctx)
	if err != nil {
		return fmt.Errorf("mirror %s: %w", cfg.Name, err)
	}
	defer unlock()
	state, err := st.ReadState()
	if err != nil {
		return fmt.Errorf("mirror %s: %w", cfg.Name, err)
	}
	x := readExtra(state)
	snaps, err := st.Snapshots()
	if err != nil {
		return fmt.Errorf("mirror %s: %w", cfg.Name, err)
	}
	if snapshot == "" {
		cur, err := st.Current()
		if err != nil {
			return fmt.Errorf("mirror %s: %w", cfg.Name, err)
		}
		ls := listings(snaps, x)
		i := slices.IndexFunc(ls, func(l SnapshotListing) bool { return l.ID == cur })
		var skipped []string
		for i--; i >= 0; i-- {
			if ls[i].Published {
				snapshot = ls[i].ID
				break
			}
			skipped = append(skipped, ls[i].ID)
		}
		if snapshot == "" {
			msg := fmt.Sprintf("mirror %s: no snapshot older than the published %s was ever published, so there is none to roll back to", cfg.Name, cur)
			if len(skipped) > 0 {
				msg += fmt.Sprintf(" (%s never published; name one explicitly to publish it anyway)", strings.Join(skipped, ", "))
			}
			return errors.New(msg + "; see `gatehouse mirror list`")
		}
	}
	if _, err := readManifest(st, snapshot); err != nil {
		return fmt.Errorf("mirror %s: cannot roll back: %w", cfg.Name, err)
	}
	if err := st.Rollback(snapshot); err != nil {
		return fmt.Errorf("mirror %s: %w", cfg.Name, err)
	}
	for k, ss := range state.Suites {
		ss.ETag, ss.LastModified = "", ""
		state.Suites[k] = ss
	}
	notePublished(&x, snaps, snapshot, st.Now())
	if b, err := json.Marshal(x); err == nil {
		state.Extra = b
	}
	if err := st.WriteState(state); err != nil {
		return fmt.Errorf("mirror %s: rolled back to %s, but recording it failed: %w", cfg.Name, snapshot, err)
	}
	_, _, _, err = hookResult(ctx, st, cfg, snapshot, opt)
	return err
}

// ErrOlderThanPublished is wrapped when `mirror publish` names a snapshot
// older than the published one: going back is a rollback, which has its
// own command (and clears the stored HTTP validators). The command line
// maps it to exit 2.
var ErrOlderThanPublished = errors.New("snapshot is older than the published one")

// Publish makes a finished snapshot of the mirror the published one: the
// one named, or with snapshot "" the newest (what a mirror with publish =
// "manual" staged last). It checks what a sync checks before it
// publishes, as of now: the snapshot is complete (its manifest is there),
// and each suite's upstream Release in it is signed by a key of the
// configured keyring (which may have changed since it was staged) and,
// for a verbatim mirror, its Valid-Until has not passed (clients would
// refuse it); a failed check wraps ErrRefused. A snapshot older than the
// published one is refused with ErrOlderThanPublished (use rollback).
// Then it makes the same atomic swap as a sync, records the publication
// and runs the post_publish command (a failure is a *PostPublishError;
// the snapshot stays published). Publishing the snapshot already
// published changes nothing but runs post_publish again. It returns the
// ID published.
func Publish(ctx context.Context, stateDir string, cfg Config, snapshot string, opt Options) (string, error) {
	st, err := openStore(stateDir, &cfg, opt)
	if err != nil {
		return "", err
	}
	unlock, err := st.Lock(ctx)
	if err != nil {
		return "", fmt.Errorf("mirror %s: %w", cfg.Name, err)
	}
	defer unlock()
	snaps, err := st.Snapshots()
	if err != nil {
		return "", fmt.Errorf("mirror %s: %w", cfg.Name, err)
	}
	if len(snaps) == 0 {
		return "", fmt.Errorf("mirror %s: no snapshot to publish; run `gatehouse mirror sync %s` first", cfg.Name, cfg.Name)
	}
	if snapshot == "" {
		snapshot = snaps[len(snaps)-1].ID
	}
	i := slices.IndexFunc(snaps, func(s store.SnapshotInfo) bool { return s.ID == snapshot })
	if i < 0 {
		return "", fmt.Errorf("mirror %s: no snapshot %q; see `gatehouse mirror list %s`", cfg.Name, snapshot, cfg.Name)
	}
	cur := slices.IndexFunc(snaps, func(s store.SnapshotInfo) bool { return s.Current })
	if cur >= 0 && i < cur {
		return "", fmt.Errorf("mirror %s: snapshot %s is older than the published %s: %w; to go back, run `gatehouse mirror rollback %s %s`",
			cfg.Name, snapshot, snaps[cur].ID, ErrOlderThanPublished, cfg.Name, snapshot)
	}
	if _, err := readManifest(st, snapshot); err != nil {
		return "", fmt.Errorf("mirror %s: snapshot %s is incomplete, not published: %w", cfg.Name, snapshot, err)
	}
	now := opt.clock()()
	for _, suite := range cfg.Suites {
		_, vu, ok := publishedReleaseDate(st, cfg, snapshot, suite, now)
		if !ok {
			return "", refused("mirror %s: suite %s: the Release in snapshot %s does not verify with the configured keyring %s (or is missing); not published. If the upstream rotated its key, set keyring to its new Signed-By file and sync again",
				cfg.Name, suite, snapshot, cfg.Keyring)
		}
		if cfg.Mode != ModeFiltered && !vu.IsZero() && !now.Before(vu) {
			return "", refused("mirror %s: suite %s: the Release in snapshot %s expired at %s (Valid-Until); clients would refuse it, so it is not published. Sync to get a fresh one",
				cfg.Name, suite, snapshot, vu.UTC().Format(time.RFC3339))
		}
	}
	if cur < 0 || snaps[cur].ID != snapshot {
		if err := st.Publish(snapshot); err != nil {
			return "", fmt.Errorf("mirror %s: %w", cfg.Name, err)
		}
		state, err := st.ReadState()
		if err != nil {
			return snapshot, fmt.Errorf("mirror %s: published %s, but reading the state to record it failed: %w", cfg.Name, snapshot, err)
		}
		x := readExtra(state)
		notePublished(&x, snaps, snapshot, st.Now())
		if b, err := json.Marshal(x); err == nil {
			state.Extra = b
		}
		if err := st.WriteState(state); err != nil {
			return snapshot, fmt.Errorf("mirror %s: published %s, but recording it failed: %w", cfg.Name, snapshot, err)
		}
		opt.logger().Info("snapshot published", "mirror", cfg.Name, "snapshot", snapshot)
	}
	_, _, _, err = hookResult(ctx, st, cfg, snapshot, opt)
	return snapshot, err
}

// List returns the mirror's finished snapshots, oldest first.
func List(stateDir string, cfg Config) ([]store.SnapshotInfo, error) {
	st, err := openStore(stateDir, &cfg, Options{})
	if err != nil {
		return nil, err
	}
	snaps, err := st.Snapshots()
	if err != nil {
		return nil, fmt.Errorf("mirror %s: %w", cfg.Name, err)
	}
	return snaps, nil
}

// MirrorStatus is what `gatehouse mirror status` shows for one mirror.
type MirrorStatus struct {
	Mirror string `json:"mirror"`
	// Mode is the configured mode: ModeVerbatim or ModeFiltered (whose
	// suites' Valid-Until is the re-signed one clients see).
	Mode string `json:"mode"`
	// Published is the snapshot clients see, "" when none.
	Published   string               `json:"published,omitempty"`
	Suites      []SuiteStatus        `json:"suites"`
	LastSync    *store.SyncRecord    `json:"last_sync,omitempty"`
	LastSuccess time.Time            `json:"last_success,omitzero"`
	PoolFiles   int                  `json:"pool_files"`
	PoolBytes   int64                `json:"pool_bytes"`
	Snapshots   []store.SnapshotInfo `json:"snapshots"`
	// Publish is the configured publish mode (PublishAuto or PublishManual).
	Publish string `json:"publish"`
	// Waiting is, with publish = "manual", the newest snapshot when it is
	// newer than the published one and was never published: staged, and
	// waiting for `gatehouse mirror publish`. WaitingSince is when it was
	// made.
	Waiting      string    `json:"waiting,omitempty"`
	WaitingSince time.Time `json:"waiting_since,omitzero"`
	// PostPublish is the last run of the post_publish command (nil when
	// none ran).
	PostPublish *HookRecord `json:"post_publish,omitempty"`
	// Uploads is the last upload to each publish_to target, by target
	// name (see upload.go).
	Uploads map[string]UploadRecord `json:"uploads,omitempty"`
	// Warnings summarize what needs the operator's attention.
	Warnings []string `json:"warnings,omitempty"`
}

// SuiteStatus is the last accepted Release of one suite.
type SuiteStatus struct {
	Suite      string    `json:"suite"`
	Date       time.Time `json:"date,omitzero"`
	ValidUntil time.Time `json:"valid_until,omitzero"`
	Snapshot   string    `json:"snapshot,omitempty"`
	// Warn is non-empty when Valid-Until has passed or is less than two
	// days away: clients refuse an expired Release.
	Warn string `json:"warn,omitempty"`
	// Packages counts the packages of each index of the published
	// snapshot's suite, as recorded when that snapshot was made; nil when
	// nothing is published or the snapshot predates the counts.
	Packages []IndexCount `json:"packages,omitempty"`
}

// ExpiryWarning is how close Valid-Until may come before Status warns.
const ExpiryWarning = 48 * time.Hour

// Status reports the published snapshot, each suite's accepted Release,
// the last sync and the pool's size, as of now. It does not take the lock
// and works while a sync runs.
func Status(stateDir string, cfg Config, now time.Time) (*MirrorStatus, error) {
	st, err := openStore(stateDir, &cfg, Options{})
	if err != nil {
		return nil, err
	}
	ms := &MirrorStatus{Mirror: cfg.Name, Mode: cfg.Mode, Publish: cfg.Publish}
	if id, err := st.Current(); err == nil {
		ms.Published = id
	} else if !errors.Is(err, store.ErrNoCurrent) {
		return nil, fmt.Errorf("mirror %s: %w", cfg.Name, err)
	} else {
		if cfg.Publish == PublishManual {
			ms.Warnings = append(ms.Warnings, "nothing published yet (publish = \"manual\"): run `gatehouse mirror sync "+cfg.Name+"`, test the snapshot, then `gatehouse mirror publish "+cfg.Name+"`")
		} else {
			ms.Warnings = append(ms.Warnings, "nothing published yet: run `gatehouse mirror sync "+cfg.Name+"`")
		}
	}
	state, err := st.ReadState()
	if err != nil {
		return nil, fmt.Errorf("mirror %s: %w", cfg.Name, err)
	}
	ms.LastSync, ms.LastSuccess = state.LastSync, state.LastSuccess
	if ms.LastSync != nil && !SyncOK(ms.LastSync.Result) {
		ms.Warnings = append(ms.Warnings, fmt.Sprintf("last sync %s at %s: %s", ms.LastSync.Result, ms.LastSync.Finished.UTC().Format(time.RFC3339), ms.LastSync.Error))
	}
	var counts map[string][]IndexCount
	if ms.Published != "" {
		counts = publishedCounts(st, ms.Published)
	}
	for _, name := range cfg.Suites {
		ss, ok := state.Suites[name]
		s := SuiteStatus{Suite: name, Packages: counts[name]}
		if ok {
			s.Date, s.ValidUntil, s.Snapshot = ss.Date, ss.ValidUntil, ss.Snapshot
		}
		if ms.Published != "" && s.Snapshot != ms.Published {
			// After a rollback the state keeps the newest accepted Date
			// (rollback protection), but clients get the published one.
			if d, vu, ok := publishedReleaseDate(st, cfg, ms.Published, name, now); ok {
				s.Date, s.Snapshot = d, ms.Published
				if cfg.Mode != ModeFiltered {
					s.ValidUntil = vu
				}
			}
		}
		if !s.ValidUntil.IsZero() {
			switch left := s.ValidUntil.Sub(now); {
			case left <= 0:
				s.Warn = fmt.Sprintf("Valid-Until %s has passed: clients refuse this suite until a sync succeeds", s.ValidUntil.UTC().Format(time.RFC3339))
			case left < ExpiryWarning:
				s.Warn = fmt.Sprintf("Valid-Until %s is %s away: sync soon or clients will refuse this suite", s.ValidUntil.UTC().Format(time.RFC3339), left.Round(time.Minute))
			}
			if s.Warn != "" {
				ms.Warnings = append(ms.Warnings, "suite "+name+": "+s.Warn)
			}
		}
		ms.Suites = append(ms.Suites, s)
	}
	ms.PoolFiles, ms.PoolBytes, err = st.PoolStats(context.Background())
	if err != nil {
		return nil, fmt.Errorf("mirror %s: %w", cfg.Name, err)
	}
	if ms.Snapshots, err = st.Snapshots(); err != nil {
		return nil, fmt.Errorf("mirror %s: %w", cfg.Name, err)
	}
	x := readExtra(state)
	if n := len(ms.Snapshots); cfg.Publish == PublishManual && n > 0 {
		newest := ms.Snapshots[n-1]
		if _, was := x.Published[newest.ID]; !newest.Current && !was {
			ms.Waiting, ms.WaitingSince = newest.ID, newest.Created
			ms.Warnings = append(ms.Warnings, fmt.Sprintf("snapshot %s (made %s) waits for publishing: test it at /%s/snapshots/%s/, then run `gatehouse mirror publish %s`",
				newest.ID, newest.Created.UTC().Format(time.RFC3339), cfg.Name, newest.ID, cfg.Name))
		}
	}
	if h := x.PostPublish; h != nil {
		ms.PostPublish = h
		if !h.OK {
			ms.Warnings = append(ms.Warnings, fmt.Sprintf("post_publish failed for snapshot %s at %s (%d in a row): %s; see the log",
				h.Snapshot, h.Finished.UTC().Format(time.RFC3339), h.Failures, h.Error))
		}
	}
	ms.Uploads = x.Uploads
	for _, name := range slices.Sorted(maps.Keys(x.Uploads)) {
		if u := x.Uploads[name]; u.Error != "" {
			ms.Warnings = append(ms.Warnings, fmt.Sprintf("upload of snapshot %s to publish target %s failed at %s: %s; the next publish retries",
				u.Snapshot, name, u.At.UTC().Format(time.RFC3339), u.Error))
		}
	}
	return ms, nil
}

// SyncOK reports whether a sync result (Report.Result, SyncRecord.Result)
// is a success: published, already current, or staged.
func SyncOK(result string) bool {
	return result == ResultPublished || result == ResultCurrent || result == ResultStaged
}
