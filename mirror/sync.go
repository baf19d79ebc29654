package mirror

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"gatehouse/apt/pgp"
	"gatehouse/mirror/fetch"
	"gatehouse/mirror/objstore"
	"gatehouse/mirror/store"
)

// ErrRefused is wrapped by every error that comes from verification rather
// than from the environment: a bad or missing signature, a hash or size
// mismatch, a rollback, an expired or future-dated Release, a suite
// mismatch, a malformed or escaping index entry. The command line maps it to
// exit code 3. A refused sync never changes what is published.
var ErrRefused = errors.New("refused by verification")

// Results of a sync, as in Report.Result and the stored state.
const (
	ResultPublished = "published"
	ResultCurrent   = "current"
	ResultFailed    = "failed"
	ResultRefused   = "refused"
	// ResultStaged: a mirror with publish = "manual" built and verified a
	// new snapshot (Report.Snapshot) and kept it unpublished; Report.Published
	// is what clients still get.
	ResultStaged = "staged"
	// ResultDryRun: Options.DryRun verified the upstream and planned a
	// publish (Report.Plan) but changed nothing.
	ResultDryRun = "dry-run"
)

// errDryRun stops a dry run's build after planning; Sync reports it as
// ResultDryRun.
var errDryRun = errors.New("dry run: stopped before fetching pool files")

// Phases named in progress events.
const (
	PhaseRelease = "release"
	PhaseIndexes = "indexes"
	PhasePool    = "pool"
	PhasePublish = "publish"
	PhaseGC      = "gc"
)

// Options are the process-level inputs of Sync and the other operations.
// The zero value is usable.
type Options struct {
	// Log receives progress and warnings; nil discards them.
	Log *slog.Logger
	// Now is the clock for Release checks, signatures and snapshot IDs;
	// nil means time.Now.
	Now func() time.Time
	// Progress, when set, is called (from several goroutines, serialized)
	// as files complete, for a progress line or periodic log records. It must
	// return quickly.
	Progress func(Event)
	// Fetch tunes the HTTP client. Concurrency and RateLimit, when zero, are
	// taken from the mirror's Config.
	Fetch fetch.Config
	// Signing is the [signing] table: the archive key that re-signs
	// filtered mirrors (Sync) and that Verify checks them against. Verbatim
	// mirrors do not use it.
	Signing SigningConfig
	// HookEnv is the environment of the post_publish command, to which
	// the GATEHOUSE_* variables are added; the command line passes its own
	// (os.Environ), as a package does not read process state. Nil means
	// only DefaultHookPath.
	HookEnv []string
	// PublishTargets are the configured [[publish_target]] entries by
	// name; Config.PublishTo picks from them.
	PublishTargets map[string]objstore.Target
	// DryRun makes Sync fetch and verify the upstream's Releases and
	// indexes (and, for a filtered mirror, resolve the selection), then
	// report in Report.Plan what it would fetch and publish, without
	// fetching pool files, publishing or recording anything.
	DryRun bool
}

// Event is one progress report of a running sync.
type Event struct {
	Mirror, Suite, Phase string
	// Files and Bytes are done so far in this phase; the totals are what the
	// phase will do (0 when unknown).
	Files, FilesTotal int
	Bytes, BytesTotal int64
}

// Report is the outcome of one Sync, for humans and --json alike.
type Report struct {
	Mirror string `json:"mirror"`
	// Result is ResultPublished, ResultCurrent, ResultFailed or ResultRefused.
	Result string `json:"result"`
	// Snapshot is the snapshot holding the upstream's state after the sync
	// (new or unchanged): the published one, except with publish =
	// "manual", where it can be a newer staged one.
	Snapshot string `json:"snapshot,omitempty"`
	// Published is the snapshot clients get after the sync ("" when none).
	Published    string        `json:"published,omitempty"`
	Suites       []SuiteReport `json:"suites,omitempty"`
	FilesFetched int           `json:"files_fetched"`
	BytesFetched int64         `json:"bytes_fetched"`
	// FilesReused counts pool and index files already present locally.
	FilesReused int           `json:"files_reused"`
	Duration    time.Duration `json:"duration_ns"`
	// Error is the reason of a failed or refused sync.
	Error string `json:"error,omitempty"`
	// Missing lists pool files upstream did not have, with TolerateMissing.
	Missing []string `json:"missing,omitempty"`
	// Pruned lists the snapshots removed after publishing.
	Pruned []string `json:"pruned,omitempty"`
	// GCRemoved and GCBytes say what garbage collection deleted after
	// publishing; GCError why it did not run (the sync still succeeded).
	GCRemoved int    `json:"gc_removed"`
	GCBytes   int64  `json:"gc_bytes"`
	GCError   string `json:"gc_error,omitempty"`
	// Warnings are problems that did not stop the sync.
	Warnings []string `json:"warnings,omitempty"`
	// Uploads says, per publish target of Config.PublishTo, what the
	// upload of the new snapshot did or why it failed (the snapshot stays
	// published either way).
	Uploads []UploadRecord `json:"uploads,omitempty"`
	// Plan is what a dry run would have published (ResultDryRun only).
	Plan *Plan `json:"plan,omitempty"`
	// PostPublish is the outcome of the post_publish command after this
	// sync published (nil when none ran). Its failure leaves Result
	// ResultPublished and makes Sync return a *PostPublishError.
	PostPublish *HookRecord `json:"post_publish,omitempty"`
}

// Plan is what a sync would publish, as worked out by a dry run.
type Plan struct {
	// PoolFiles and PoolBytes are the pool the new snapshot would name;
	// FetchFiles and FetchBytes the part of it not yet downloaded.
	PoolFiles  int   `json:"pool_files"`
	PoolBytes  int64 `json:"pool_bytes"`
	FetchFiles int   `json:"fetch_files"`
	FetchBytes int64 `json:"fetch_bytes"`
	// Selected lists a filtered mirror's packages, "name version arch",
	// sorted; nil for a verbatim mirror.
	Selected []string `json:"selected,omitempty"`
}

// SuiteReport describes the Release of one suite as accepted by a sync.
type SuiteReport struct {
	Suite      string    `json:"suite"`
	Date       time.Time `json:"date,omitzero"`
	ValidUntil time.Time `json:"valid_until,omitzero"`
	// Changed is false when upstream's Release was the one already published.
	Changed bool `json:"changed"`
	// SignedBy lists the fingerprints of the good signatures.
	SignedBy []string `json:"signed_by,omitempty"`
}

// maxReleaseSize bounds an InRelease/Release download. Debian's biggest is
// well under 1 MiB.
const maxReleaseSize = 32 << 20

// stateExtra is the part of store.State only this package reads.
type stateExtra struct {
	// BodySHA256 is, per suite, the SHA-256 of the signed Release text last
	// accepted: a later Release with the same Date must have the same text.
	BodySHA256 map[string]string `json:"release_body_sha256,omitempty"`
	// ResponseDate is, per suite, the HTTP Date of the response that
	// brought the stored validators (see fetch.Validators.LastModifiedNearDate).
	ResponseDate map[string]string `json:"release_response_date,omitempty"`
	// Published is, per snapshot ID, when it last became the published
	// one (see published.go).
	Published map[string]time.Time `json:"published,omitempty"`
	// PostPublish is the last run of the post_publish command (hook.go).
	PostPublish *HookRecord `json:"post_publish,omitempty"`
	// Uploads is, per publish target, the last upload (see upload.go).
	Uploads map[string]UploadRecord `json:"uploads,omitempty"`
}

func readExtra(st store.State) stateExtra {
	var x stateExtra
	if len(st.Extra) > 0 {
		// A damaged extra only loses the same-Date check, which then
		// behaves as on a first sync for that suite.
		_ = json.Unmarshal(st.Extra, &x)
	}
	if x.BodySHA256 == nil {
		x.BodySHA256 = map[string]string{}
	}
	if x.ResponseDate == nil {
		x.ResponseDate = map[string]string{}
	}
	return x
}

// run is the state of one Sync.
type run struct {
	cfg    Config
	opt    Options
	log    *slog.Logger
	now    time.Time
	st     *store.Store
	client *fetch.Client
	kr     *pgp.Keyring
	state  store.State
	extra  stateExtra
	base   string // upstream URL without trailing slash
	rep    *Report

	// curID is the snapshot this sync builds on: the published one, or
	// with publish = "manual" the newest one (staged snapshots hold the
	// Releases the state accepted last); "" if none. curMan is its
	// manifest.
	curID  string
	curMan *manifest
	// pubID is the published snapshot before this sync, "" if none.
	pubID string
	// carried is, per suite, what carryByHash linked from earlier
	// generations, for the new manifest.
	carried map[string][]carriedFile
	// pubTime is the modification time of every file this sync writes
	// into its snapshot: later than any file of the published snapshot,
	// so that an HTTP If-Modified-Since (one-second resolution) from a
	// client holding the old file never gets 304 for the new one.
	pubTime time.Time
	progMu  sync.Mutex
	reused  int
	missing []string

	// Filtered mode only: the appliance's key, the Valid-Until period,
	// and the Valid-Until the new snapshot's Releases carry.
	key           *pgp.SigningKey
	validFor      time.Duration
	resignedUntil time.Time
}

func (o Options) logger() *slog.Logger {
	if o.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return o.Log
}

func (o Options) clock() func() time.Time {
	if o.Now == nil {
		return time.Now
	}
	return o.Now
}

func (r *run) progress(e Event) {
	if r.opt.Progress == nil {
		return
	}
	e.Mirror = r.cfg.Name
	r.progMu.Lock()
	defer r.progMu.Unlock()
	r.opt.Progress(e)
}

// openStore applies the defaults to cfg, validates it and opens its store.
func openStore(stateDir string, cfg *Config, opt Options) (*store.Store, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	st, err := store.Open(StoreRoot(stateDir), cfg.Name)
	if err != nil {
		return nil, fmt.Errorf("mirror %s: %w", cfg.Name, err)
	}
	st.Now = opt.clock()
	return st, nil
}

// Sync runs one sync of the mirror cfg into its store under
// StoreRoot(stateDir)/<cfg.Name>: fetch each suite's Release conditionally,
// verify it against cfg.Keyring, fetch and verify the indexes and the missing
// pool files, and publish a new snapshot atomically (DESIGN.md, "Mirror: how
// a sync works"). When upstream answers every suite with its already
// published Release, nothing is written but the state, and the Result is
// ResultCurrent.
//
// The returned Report is never nil; on failure its Result is ResultFailed
// or ResultRefused and the error is returned as well. Verification failures
// wrap ErrRefused. A failed, refused, cancelled or killed sync leaves the
// published snapshot untouched, and the next sync reuses every pool file
// already downloaded. A second concurrent sync of the same mirror fails at
// once with a *store.LockedError naming the holder.
//
// A Release with the same Date as the last accepted one but different
// signed text is refused: a signer that publishes two Releases under one
// Date leaves clients no way to order them, which is what a replay or a
// compromised mirror in between looks like.
func Sync(ctx context.Context, stateDir string, cfg Config, opt Options) (*Report, error) {
	start := time.Now()
	rep := &Report{Mirror: cfg.Name}
	fail := func(err error) (*Report, error) {
		rep.Result = ResultFailed
		if errors.Is(err, ErrRefused) {
			rep.Result = ResultRefused
		}
		rep.Error = err.Error()
		rep.Duration = time.Since(start)
		return rep, err
	}
	st, err := openStore(stateDir, &cfg, opt)
	if err != nil {
		return fail(err)
	}
	unlock, err := st.Lock(ctx)
	if err != nil {
		return fail(fmt.Errorf("mirror %s: %w", cfg.Name, err))
	}
	defer unlock()

	r := &run{cfg: cfg, opt: opt, log: opt.logger().With("mirror", cfg.Name), now: opt.clock()(), st: st, rep: rep,
		base: strings.TrimRight(cfg.URL, "/")}
	started := r.now
	r.state, err = st.ReadState()
	if err != nil {
		return fail(fmt.Errorf("mirror %s: %w", cfg.Name, err))
	}
	r.extra = readExtra(r.state)

	sctx, stopDeadline := withSyncDeadline(ctx, cfg)
	err = r.explainDeadline(sctx, r.sync(sctx))
	stopDeadline()
	if r.client != nil {
		s := r.client.Stats()
		rep.FilesFetched, rep.BytesFetched = int(s.Files), s.Bytes
		r.client.CloseIdleConnections()
	}
	if opt.DryRun && (err == nil || errors.Is(err, errDryRun)) {
		// Nothing was published, so nothing is recorded: the state stays
		// what the last real sync left.
		if err != nil {
			rep.Result = ResultDryRun
		}
		rep.Duration = time.Since(start)
		return rep, nil
	}
	rep.FilesReused = r.reused
	rep.Missing = r.missing
	rec := &store.SyncRecord{Started: started, Finished: opt.clock()(), Snapshot: rep.Snapshot,
		Files: int64(rep.FilesFetched), Bytes: rep.BytesFetched}
	if err != nil {
		rep.Result = ResultFailed
		if errors.Is(err, ErrRefused) {
			rep.Result = ResultRefused
		}
		rec.Result, rec.Error = rep.Result, err.Error()
		r.state.LastSync = rec
		if werr := st.WriteState(r.state); werr != nil {
			r.log.Error("recording the failed sync", "err", werr)
		}
		return fail(err)
	}
	rec.Result = rep.Result
	r.state.LastSync = rec
	r.state.LastSuccess = rec.Finished
	if err := st.WriteState(r.state); err != nil {
		// The snapshot is published; only the memory of it failed. The
		// next sync then re-checks against older Dates, so say so.
		return fail(fmt.Errorf("mirror %s: published snapshot %s but could not record it: %w", cfg.Name, rep.Snapshot, err))
	}
	if rep.Result == ResultPublished || rep.Result == ResultStaged {
		r.cleanup(ctx)
	}
	var hookErr error
	if rep.Result == ResultPublished {
		hookErr = r.postPublish(ctx, rep.Snapshot)
	}
	rep.Duration = time.Since(start)
	r.log.Info("sync finished", "result", rep.Result, "snapshot", rep.Snapshot, "files", rep.FilesFetched,
		"bytes", rep.BytesFetched, "reused", rep.FilesReused, "duration", rep.Duration.Round(time.Millisecond))
	if hookErr != nil {
		// Published, and stays so; the error makes cron and the timer
		// see the hook's failure (exit 1).
		rep.Error = hookErr.Error()
	}
	return rep, hookErr
}

// sync does the work of Sync while the lock is held; r.state is updated
// only on success.
func (r *run) sync(ctx context.Context) error {
	cfg := r.cfg
	if cfg.URL == "" {
		return fmt.Errorf("mirror %s: url is not set, so there is nothing to sync from; set url to the archive root holding dists/ and pool/ (a mirror filled only by `gatehouse mirror import` needs no sync)", cfg.Name)
	}
	for _, s := range cfg.Suites {
		if err := store.CheckRel(publishedDir(s)); err != nil {
			return fmt.Errorf("mirror %s: suite %q is not a valid path below dists/ (or, ending in \"/\", a flat repository directory): %w", cfg.Name, s, err)
		}
	}
	kr, err := pgp.LoadKeyring(cfg.Keyring)
	if err != nil {
		return fmt.Errorf("mirror %s: keyring: %w (set keyring to the upstream's Signed-By file)", cfg.Name, err)
	}
	r.kr = kr
	fc := r.opt.Fetch
	if fc.Concurrency == 0 {
		fc.Concurrency = cfg.Concurrency
	}
	if fc.RateLimit == 0 && cfg.RateLimit != "" {
		if fc.RateLimit, err = ParseRate(cfg.RateLimit); err != nil {
			return fmt.Errorf("mirror %s: rate_limit: %w", cfg.Name, err)
		}
	}
	fc.RedirectHosts = append(fc.RedirectHosts, cfg.RedirectHosts...)
	if fc.LowSpeedLimit == 0 {
		fc.LowSpeedLimit = int64(cfg.LowSpeedLimit)
	}
	if fc.LowSpeedTime == 0 {
		fc.LowSpeedTime = cfg.LowSpeedTime.Duration
	}
	r.client = fetch.New(fc, r.log)
	if err := r.signingKey(); err != nil {
		return err
	}

	if id, err := r.st.Current(); err == nil {
		r.pubID = id
	} else if !errors.Is(err, store.ErrNoCurrent) {
		return fmt.Errorf("mirror %s: %w", cfg.Name, err)
	}
	r.rep.Published = r.pubID
	r.curID = r.pubID
	if cfg.Publish == PublishManual {
		newest, err := newestSnapshot(r.st)
		if err != nil {
			return fmt.Errorf("mirror %s: %w", cfg.Name, err)
		}
		if newest != "" {
			r.curID = newest
		}
	}
	if r.curID != "" {
		r.curMan, err = readManifest(r.st, r.curID)
		if err != nil {
			r.log.Warn("snapshot has no usable manifest; nothing will be reused from it", "snapshot", r.curID, "err", err)
			r.curMan = nil
		}
	}

	suites := make([]*suiteRun, len(cfg.Suites))
	changed := false
	for i, name := range cfg.Suites {
		sr, err := r.fetchRelease(ctx, name)
		if err != nil {
			return err
		}
		suites[i] = sr
		if !sr.unchanged {
			changed = true
		}
	}
	for _, sr := range suites {
		r.rep.Suites = append(r.rep.Suites, sr.report())
	}
	if !changed && !r.resignDue() {
		r.rep.Result = ResultCurrent
		r.rep.Snapshot = r.curID
		for _, sr := range suites {
			r.acceptSuite(sr, r.curID)
		}
		return nil
	}
	if cfg.Mode == ModeFiltered {
		// One closure spans every suite, so a change in one rebuilds all.
		for _, sr := range suites {
			if sr.unchanged {
				if err := r.reloadUnchanged(sr); err != nil {
					return err
				}
			}
		}
	}
	return r.build(ctx, suites)
}

// newestSnapshot returns the ID of the newest finished snapshot, "" if
// there is none.
func newestSnapshot(st *store.Store) (string, error) {
	snaps, err := st.Snapshots()
	if err != nil || len(snaps) == 0 {
		return "", err
	}
	return snaps[len(snaps)-1].ID, nil
}

// acceptSuite records sr as the last accepted Release of its suite.
func (r *run) acceptSuite(sr *suiteRun, id string) {
	if r.state.Suites == nil {
		r.state.Suites = map[string]store.SuiteState{}
	}
	ss := r.state.Suites[sr.name]
	ss.ETag, ss.LastModified = sr.validators.ETag, sr.validators.LastModified
	if sr.validators.Date != "" || sr.validators.LastModified == "" {
		// A 304 keeps the validators, and with them the Date that
		// brought them.
		r.extra.ResponseDate[sr.name] = sr.validators.Date
	}
	ss.Snapshot = id
	if sr.rel != nil {
		ss.Date, ss.ValidUntil = sr.rel.Date, sr.rel.ValidUntil
		if r.cfg.Mode == ModeFiltered {
			// Clients see the re-signed Release; its expiry is the one
			// to watch.
			ss.ValidUntil = r.resignedUntil
		}
		ss.ReleaseSHA256 = sha256Hex(sr.primary())
		r.extra.BodySHA256[sr.name] = sha256Hex(sr.body)
	}
	r.state.Suites[sr.name] = ss
	if b, err := json.Marshal(r.extra); err == nil {
		r.state.Extra = b
	}
}

// cleanup prunes old snapshots and deletes the pool files and objects
// that only they used, through the same store.Collect as `mirror gc`. Its
// failures are reported, never fatal: the new snapshot is already live.
//
// It does not walk the pool: on a large archive, reading every pool
// directory costs more than the rest of an incremental sync. It looks only
// at what the pruned snapshots named, with the same wipe protection.
// Objects that failed syncs left behind, and stale temporary files, wait
// for `gatehouse mirror gc`.
func (r *run) cleanup(ctx context.Context) {
	snaps, err := r.st.Snapshots()
	if err != nil {
		r.gcFailed(err)
		return
	}
	doomed := doomedSnapshots(snaps, r.cfg.KeepSnapshots)
	if len(doomed) == 0 {
		return
	}
	r.progress(Event{Phase: PhaseGC})
	res, err := collect(ctx, r.st, r.cfg, doomed, false)
	if err == nil {
		for _, d := range doomed {
			r.rep.Pruned = append(r.rep.Pruned, d.ID)
		}
	}
	r.rep.GCRemoved, r.rep.GCBytes = res.Removed, res.RemovedBytes
	if err != nil {
		if errors.Is(err, store.ErrWipeProtection) {
			err = fmt.Errorf("%w; check the upstream, then run `gatehouse mirror gc`", err)
		}
		r.gcFailed(err)
	}
}

func (r *run) gcFailed(err error) {
	r.rep.GCError = err.Error()
	r.log.Warn("cleaning up after the sync failed; the sync itself succeeded", "err", err)
}

func sha256Hex(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// ParseSize parses a size written like a rate_limit: "10GiB", "500M" or
// "1000000" bytes (k/M/G powers of 1000, Ki/Mi/Gi powers of 1024; a
// trailing "B" is optional).
func ParseSize(s string) (int64, error) {
	if strings.HasSuffix(strings.TrimSpace(s), "/s") {
		return 0, fmt.Errorf("invalid size %q: a size has no \"/s\"", s)
	}
	t := strings.TrimSpace(s)
	if v, ok := strings.CutSuffix(t, "Ti"); ok || strings.HasSuffix(t, "TiB") {
		if !ok {
			v = strings.TrimSuffix(t, "TiB")
		}
		n, err := ParseRate(v + "Gi")
		if err != nil || n > 1<<50/1024 {
			return 0, fmt.Errorf("invalid size %q: use bytes like \"10GiB\" or \"2TiB\"", s)
		}
		return n * 1024, nil
	}
	n, err := ParseRate(t)
	if err != nil {
		return 0, fmt.Errorf("invalid size %q: use bytes like \"10GiB\" or \"500M\"", s)
	}
	return n, nil
}

// ParseRate parses a bandwidth such as "20MiB", "500k" or "1000000" (bytes
// per second; k/M/G are powers of 1000, Ki/Mi/Gi powers of 1024, a trailing
// "B" or "/s" is optional).
func ParseRate(s string) (int64, error) {
	t := strings.TrimSpace(s)
	t = strings.TrimSuffix(t, "/s")
	t = strings.TrimSuffix(t, "B")
	mult := int64(1)
	for _, u := range []struct {
		suf string
		m   int64
	}{{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"k", 1000}, {"K", 1000}, {"M", 1000 * 1000}, {"G", 1000 * 1000 * 1000}} {
		if v, ok := strings.CutSuffix(t, u.suf); ok {
			t, mult = v, u.m
			break
		}
	}
	n, err := strconv.ParseFloat(strings.TrimSpace(t), 64)
	if err != nil || !(n*float64(mult) >= 1) || n*float64(mult) > 1<<50 {
		return 0, fmt.Errorf("invalid rate %q: use bytes per second like \"20MiB\" or \"500k\"", s)
	}
	return int64(n * float64(mult)), nil
}
