package mirror

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"gatehouse/apt/pgp"
	"gatehouse/mirror/bundle"
	"gatehouse/mirror/store"
)

// Export writes an air-gap bundle (see mirror/bundle) of the published
// snapshot of each mirror in cfgs to to, signed with key, and returns its
// manifest. The bundle holds the snapshot's dists tree and the pool files
// its Packages and Sources name, minus those the receiver already has
// according to since:
//
//   - "": none (a full bundle);
//   - the path of an earlier bundle (file, directory or volume set) signed
//     by key: for each mirror, the pool files of the snapshot that bundle
//     carried, if that snapshot is still here, else the pool files the
//     bundle itself held;
//   - a snapshot ID: the pool files of that snapshot of each mirror.
//
// volumeSize > 0 splits the bundle into volumes (see bundle.Export). Each
// mirror's lock is held while its files are read, so no sync or GC removes
// them meanwhile; a running sync makes Export fail with *store.LockedError.
func Export(ctx context.Context, stateDir string, cfgs []Config, to, since string, key *pgp.SigningKey, volumeSize int64, opt Options) (*bundle.Manifest, error) {
	if len(cfgs) == 0 {
		return nil, errors.New("export: name at least one mirror")
	}
	if key == nil {
		return nil, errors.New("export: no signing key; create one with `gatehouse keys init-archive-key`")
	}
	now := opt.clock()
	var prev *bundle.Manifest
	if since != "" && bundleExists(since) {
		m, err := openOwnBundle(since, key, now())
		if err != nil {
			return nil, fmt.Errorf("export: --since %s: %w", since, err)
		}
		prev = m
	}
	var srcs []bundle.Source
	for _, cfg := range cfgs {
		st, err := openStore(stateDir, &cfg, opt)
		if err != nil {
			return nil, fmt.Errorf("export: %w", err)
		}
		unlock, err := st.Lock(ctx)
		if err != nil {
			return nil, fmt.Errorf("export: mirror %s: %w", cfg.Name, err)
		}
		defer unlock()
		src, err := exportSource(st, cfg, since, prev, opt)
		if err != nil {
			return nil, fmt.Errorf("export: mirror %s: %w", cfg.Name, err)
		}
		srcs = append(srcs, src)
	}
	eo := bundle.ExportOptions{Key: key, VolumeSize: volumeSize, Now: now}
	if opt.Progress != nil {
		eo.Progress = func(files, filesTotal int, bytes, bytesTotal int64) {
			opt.Progress(Event{Phase: PhaseExport, Files: files, FilesTotal: filesTotal, Bytes: bytes, BytesTotal: bytesTotal})
		}
	}
	man, err := bundle.Export(ctx, to, srcs, eo)
	if err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	return man, nil
}

// bundleExists reports whether p names a bundle rather than a snapshot ID.
func bundleExists(p string) bool {
	if _, err := os.Stat(p); err == nil {
		return true
	}
	_, err := os.Stat(p + ".000")
	return err == nil
}

// openOwnBundle reads the manifest of an earlier bundle signed by key.
func openOwnBundle(p string, key *pgp.SigningKey, now time.Time) (*bundle.Manifest, error) {
	pub, err := key.PublicKey(false)
	if err != nil {
		return nil, err
	}
	kr, err := pgp.ReadKeyring(bytes.NewReader(pub), "this appliance's archive key")
	if err != nil {
		return nil, err
	}
	rd, err := bundle.Open(p)
	if err != nil {
		return nil, err
	}
	defer rd.Close()
	return rd.Verify(kr, now)
}

// snapshotPool returns the pool files snapshot id of st references,
// keyed by their path relative to the pool.
func snapshotPool(st *store.Store, id string) (map[string]poolEntry, string, error) {
	m, err := readManifest(st, id)
	if err != nil {
		return nil, "", err
	}
	dir := filepath.Join(st.Dir(), store.SnapshotsDir, id)
	ps := newPoolSet()
	for _, suite := range slices.Sorted(maps.Keys(m.Suites)) {
		if err := collectPool(dir, suite, m.Suites[suite], ps); err != nil {
			return nil, "", fmt.Errorf("snapshot %s: %w", id, err)
		}
	}
	out := make(map[string]poolEntry, len(ps.files))
	for fn, e := range ps.files {
		rel, _ := poolRel(fn)
		out[rel] = e
	}
	return out, dir, nil
}

func exportSource(st *store.Store, cfg Config, since string, prev *bundle.Manifest, opt Options) (bundle.Source, error) {
	id, err := st.Current()
	if err != nil {
		return bundle.Source{}, fmt.Errorf("%w; sync it first", err)
	}
	pool, dir, err := snapshotPool(st, id)
	if err != nil {
		return bundle.Source{}, err
	}
	m, err := readManifest(st, id)
	if err != nil {
		return bundle.Source{}, err
	}
	src := bundle.Source{Name: cfg.Name, SnapshotID: id, SnapshotDir: dir, Suites: slices.Sorted(maps.Keys(m.Suites)),
		PoolDir: filepath.Join(st.Dir(), store.PoolDir), PoolSHA256: map[string]string{}}
	for rel, e := range pool {
		src.PoolFiles = append(src.PoolFiles, rel)
		if e.SHA256 != "" {
			src.PoolSHA256[rel] = e.SHA256
		}
	}
	slices.Sort(src.PoolFiles)
	over, err := st.Overridden(id)
	if err != nil {
		return bundle.Source{}, err
	}
	for rel := range over {
		if p, err := st.PoolView(id, rel); err == nil {
			if src.Overrides == nil {
				src.Overrides = map[string]string{}
			}
			src.Overrides[rel] = p
		}
	}
	// The receiver has a path of an earlier snapshot only with the content
	// that snapshot named: the upstream may have rebuilt it since.
	same := func(rel string, e poolEntry) bool {
		cur, ok := pool[rel]
		return ok && cur.Size == e.Size && cur.key() == e.key()
	}
	switch {
	case prev != nil:
		me := prev.Mirror(cfg.Name)
		if me == nil {
			opt.logger().Warn("the --since bundle does not carry this mirror; exporting it in full", "mirror", cfg.Name)
			break
		}
		src.SinceID = me.Snapshot
		src.Since = map[string]bool{}
		if have, _, err := snapshotPool(st, me.Snapshot); err == nil {
			for rel, e := range have {
				src.Since[rel] = same(rel, e)
			}
			break
		}
		opt.logger().Warn("the --since bundle's snapshot is gone here; leaving out only the pool files that bundle held", "mirror", cfg.Name, "snapshot", me.Snapshot)
		for _, f := range prev.FilesOf(cfg.Name, store.PoolDir) {
			rel := strings.TrimPrefix(f.Path, store.PoolDir+"/")
			src.Since[rel] = strings.EqualFold(f.SHA256, src.PoolSHA256[rel]) && f.SHA256 != ""
		}
	case since != "":
		have, _, err := snapshotPool(st, since)
		if err != nil {
			return bundle.Source{}, fmt.Errorf("--since %s is neither a bundle nor a snapshot of this mirror (see `gatehouse mirror list`): %w", since, err)
		}
		src.SinceID = since
		src.Since = map[string]bool{}
		for rel, e := range have {
			src.Since[rel] = same(rel, e)
		}
	}
	return src, nil
}

// Phases of the progress events of Export and Import. Export sends one
// event per file written, with the whole bundle's totals and no Mirror;
// Import one per bundle file, before it is extracted, with its mirror's
// totals.
const (
	PhaseExport = "export"
	PhaseImport = "import"
)

// ImportReport is the outcome of Import.
type ImportReport struct {
	Bundle string `json:"bundle"`
	// SignedBy is the fingerprint of the exporting appliance's key.
	SignedBy string    `json:"signed_by,omitempty"`
	Created  time.Time `json:"created,omitzero"`
	// Written files were extracted from the bundle; Present files were
	// already in place with the right hash (a resumed import); Ignored
	// files belong to suites or pool entries this appliance does not mirror.
	Written      int   `json:"files_written"`
	WrittenBytes int64 `json:"bytes_written"`
	Present      int   `json:"files_present"`
	Ignored      int   `json:"files_ignored"`
	// Mirrors has one Report per mirror the bundle carries. Their
	// FilesFetched counts the pool files taken from the bundle, and
	// FilesReused those taken from the store (an incremental bundle).
	Mirrors []*Report `json:"mirrors"`
}

// importRun is the import of one mirror of a bundle.
type importRun struct {
	r       *run
	entry   bundle.MirrorEntry
	sn      *store.Snapshot
	checked bool
	errVer  error // the result of verify, once checked
	man     *manifest
	suites  []*suiteRun
	pool    *poolSet
	carried map[string]bool // pool paths (relative to the pool) the bundle supplied

	files, filesTotal int // progress
	bytes, bytesTotal int64
	distFiles         []string // extracted into the snapshot, relative to it
}

// Import publishes the mirrors an air-gap bundle carries, after verifying
// everything a sync verifies: the bundle manifest's signature against
// trusted, every file's size and SHA-256 (also of files already in the store
// or not needed here: a bundle damaged anywhere is refused), each suite's InRelease (or
// Release + Release.gpg) against the mirror's own cfg.Keyring with APT's
// rule (for a filtered mirror that is the outer appliance's archive key),
// Suite, Date monotonicity against this store's state (an older Release is
// a rollback), Valid-Until, every index the Release lists against its hash,
// and every pool file the indexes name for presence (from the bundle, hash
// checked against the index, or already in the store). Only then is a new
// snapshot committed, per mirror, and the state updated.
//
// Each mirror named in the bundle must be configured in cfgs (for its
// keyring and suites) and is locked for the whole import. Files of suites
// not configured here are ignored. Mirrors are committed one after another
// once all of them passed every check. A failed import publishes nothing:
// the published snapshots stay as they were; pool files already verified
// against a signed index may remain, as after a failed sync, and make a
// retried import faster. Verification failures wrap ErrRefused.
func Import(ctx context.Context, stateDir string, cfgs []Config, from string, trusted *pgp.Keyring, opt Options) (*ImportReport, error) {
	rep, err := importBundle(ctx, stateDir, cfgs, from, trusted, opt)
	if err != nil {
		return rep, fmt.Errorf("import %s: %w", from, err)
	}
	return rep, nil
}

func importBundle(ctx context.Context, stateDir string, cfgs []Config, from string, trusted *pgp.Keyring, opt Options) (*ImportReport, error) {
	rep := &ImportReport{Bundle: from}
	now := opt.clock()()
	if trusted == nil {
		return rep, errors.New("no trusted keys; set [import] trusted_keys to the exporting appliance's public key")
	}
	rd, err := bundle.Open(from)
	if err != nil {
		return rep, importErr(err)
	}
	defer rd.Close()
	bm, err := rd.Verify(trusted, now)
	if err != nil {
		return rep, importErr(err)
	}
	rep.SignedBy, rep.Created = bm.Key, bm.Created

	runs := map[string]*importRun{}
	var order []*importRun
	for _, me := range bm.Mirrors {
		im, unlock, err := startImport(ctx, stateDir, cfgs, me, now, opt)
		if err != nil {
			return rep, err
		}
		defer unlock()
		// Deferred after unlock, so it runs first: the unfinished snapshot
		// goes while the lock is still held. A no-op after Commit.
		defer im.sn.Abort()
		for _, area := range []string{"dists", store.FlatDir, store.PoolDir} {
			for _, f := range bm.FilesOf(me.Name, area) {
				im.filesTotal++
				im.bytesTotal += f.Size
			}
		}
		runs[me.Name] = im
		order = append(order, im)
	}

	err = rd.Extract(ctx, func(f bundle.File) (bundle.Dest, error) {
		name, rel, _ := bundle.SplitPath(f.Path)
		im := runs[name]
		if im == nil {
			return nil, fmt.Errorf("bundle file %s belongs to no listed mirror", f.Path)
		}
		return im.dest(ctx, rel, f)
	})
	st := rd.Stats()
	rep.Written, rep.WrittenBytes, rep.Present, rep.Ignored = st.Written, st.WrittenBytes, st.Present, st.Ignored
	if err != nil {
		return rep, importErr(err)
	}
	for _, im := range order {
		if err := im.verify(ctx); err != nil {
			return rep, err
		}
		if err := im.checkPool(); err != nil {
			return rep, err
		}
	}
	var hookErr error
	for _, im := range order {
		r, err := im.publish(ctx)
		rep.Mirrors = append(rep.Mirrors, r)
		if errors.Is(err, ErrPostPublish) {
			// Published; the other mirrors are published all the same.
			if hookErr == nil {
				hookErr = err
			}
			continue
		}
		if err != nil {
			return rep, err
		}
	}
	return rep, hookErr
}

// importErr marks the bundle package's verification failures as refusals.
func importErr(err error) error {
	if errors.Is(err, bundle.ErrInvalid) && !errors.Is(err, ErrRefused) {
		return fmt.Errorf("%w: %w", ErrRefused, err)
	}
	return err
}

func startImport(ctx context.Context, stateDir string, cfgs []Config, me bundle.MirrorEntry, now time.Time, opt Options) (*importRun, func(), error) {
	i := slices.IndexFunc(cfgs, func(c Config) bool { return c.Name == me.Name })
	if i < 0 {
		return nil, nil, fmt.Errorf("the bundle carries mirror %q, which is not configured here; add a [[mirror]] named %q with its upstream's keyring and suites", me.Name, me.Name)
	}
	cfg := cfgs[i]
	st, err := openStore(stateDir, &cfg, opt)
	if err != nil {
		return nil, nil, err
	}
	if cfg.Mode == ModeFiltered {
		// The bundle's Releases are already the exporter's; re-filtering
		// them here would need the upstream's, which the bundle lacks.
		return nil, nil, fmt.Errorf("mirror %s: an imported mirror is published as the bundle carries it: set mode = \"verbatim\" here, with keyring = the exporting appliance's archive key (even when the exporter filters)", cfg.Name)
	}
	for _, s := range cfg.Suites {
		if !slices.Contains(me.Suites, s) {
			return nil, nil, fmt.Errorf("mirror %s: the bundle has suites %q but this appliance is configured for %q; configure only suites the exporter mirrors", me.Name, me.Suites, s)
		}
	}
	kr, err := pgp.LoadKeyring(cfg.Keyring)
	if err != nil {
		return nil, nil, fmt.Errorf("mirror %s: keyring: %w", cfg.Name, err)
	}
	unlock, err := st.Lock(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("mirror %s: %w", cfg.Name, err)
	}
	state, err := st.ReadState()
	if err != nil {
		unlock()
		return nil, nil, fmt.Errorf("mirror %s: %w", cfg.Name, err)
	}
	r := &run{cfg: cfg, opt: opt, log: opt.logger().With("mirror", cfg.Name), now: now, st: st, kr: kr,
		state: state, extra: readExtra(state), rep: &Report{Mirror: cfg.Name}}
	if id, err := st.Current(); err == nil {
		r.curID = id
	}
	sn, err := st.NewSnapshot()
	if err != nil {
		unlock()
		return nil, nil, fmt.Errorf("mirror %s: %w", cfg.Name, err)
	}
	return &importRun{r: r, entry: me, sn: sn, pool: newPoolSet(), carried: map[string]bool{}}, unlock, nil
}

// suiteOf returns the configured suite whose dists directory holds rel,
// the longest one when suites nest.
func (im *importRun) suiteOf(rel string) string {
	best := ""
	for _, s := range im.r.cfg.Suites {
		if strings.HasPrefix(rel, publishedDir(s)+"/") && len(s) > len(best) {
			best = s
		}
	}
	return best
}

// dest places one bundle file: dists into the new snapshot, pool files
// into the pool once the dists (which sort first) are verified and the
// file's hash is the one the signed index gives.
func (im *importRun) dest(ctx context.Context, rel string, f bundle.File) (bundle.Dest, error) {
	r := im.r
	im.files++
	im.bytes += f.Size
	r.progress(Event{Phase: PhaseImport, Files: im.files, FilesTotal: im.filesTotal, Bytes: im.bytes, BytesTotal: im.bytesTotal})
	if strings.HasPrefix(rel, "dists/") || strings.HasPrefix(rel, store.FlatDir+"/") {
		if im.suiteOf(rel) == "" {
			return nil, nil
		}
		w, err := im.sn.NewFile(rel)
		if err != nil {
			return nil, refuse("mirror "+r.cfg.Name, err)
		}
		im.distFiles = append(im.distFiles, rel)
		return w, nil
	}
	if err := im.verify(ctx); err != nil {
		return nil, err
	}
	e, ok := im.pool.files[rel]
	if !ok {
		return nil, nil // not named by an index this appliance mirrors
	}
	if e.SHA256 == "" {
		return nil, refused("mirror %s: the index gives no SHA-256 for %s; air-gap import needs one", r.cfg.Name, rel)
	}
	if e.Size != f.Size || !strings.EqualFold(e.SHA256, f.SHA256) {
		return nil, refused("mirror %s: the bundle's %s (%d bytes, SHA-256 %s) is not the file the signed index names (%d bytes, SHA-256 %s)",
			r.cfg.Name, rel, f.Size, f.SHA256, e.Size, e.SHA256)
	}
	pr, _ := poolRel(rel)
	if err := checkPoolName(rel); err != nil {
		return nil, refuse("mirror "+r.cfg.Name, err)
	}
	if err := store.CheckRel(pr); err != nil {
		return nil, refuse("mirror "+r.cfg.Name, err)
	}
	// Into the store's objects, never onto a pool path a published
	// snapshot may serve; checkPool records it in the snapshot.
	w, err := r.st.NewObject(e.key())
	if err != nil {
		return nil, refuse("mirror "+r.cfg.Name, err)
	}
	im.carried[pr] = true
	return w, nil
}

// verify checks the extracted dists of every configured suite as a sync
// checks a fetched Release and its indexes, then collects the pool files
// the indexes name. It runs once.
func (im *importRun) verify(ctx context.Context) error {
	if !im.checked {
		im.checked = true
		im.errVer = im.verifyDists(ctx)
	}
	return im.errVer
}

func (im *importRun) verifyDists(ctx context.Context) error {
	r := im.r
	im.man = &manifest{Version: 1, Suites: map[string]*manifestSuite{}}
	for _, suite := range r.cfg.Suites {
		if err := ctx.Err(); err != nil {
			return err
		}
		sr, err := im.readRelease(suite)
		if err != nil {
			return err
		}
		prev, hadPrev := r.state.Suites[suite]
		if err := r.verifyRelease(sr, prev, hadPrev); err != nil {
			return err
		}
		var problems []string
		report := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
		ms, err := verifySuite(im.sn.Dir(), suite, r.cfg, r.kr, nil, r.now, r.log, report)
		if err != nil {
			return fmt.Errorf("mirror %s: suite %s: %w", r.cfg.Name, suite, err)
		}
		if len(problems) > 0 || ms == nil {
			slices.Sort(problems)
			return refused("mirror %s: suite %s: %s", r.cfg.Name, suite, strings.Join(problems, "; "))
		}
		ms.Release = "InRelease"
		if sr.inRelease == nil {
			ms.Release = "Release"
		}
		if err := im.dropUnsigned(suite, ms); err != nil {
			return err
		}
		if err := r.carryByHash(im.sn, suite); err != nil {
			return fmt.Errorf("mirror %s: %w", r.cfg.Name, err)
		}
		ms.Carried = r.carried[suite]
		if err := collectPool(im.sn.Dir(), suite, ms, im.pool); err != nil {
			return fmt.Errorf("mirror %s: %w", r.cfg.Name, err)
		}
		im.man.Suites[suite] = ms
		im.suites = append(im.suites, sr)
	}
	return nil
}

// readRelease loads the extracted InRelease (or Release + Release.gpg).
func (im *importRun) readRelease(suite string) (*suiteRun, error) {
	sr := &suiteRun{name: suite, dir: publishedDir(suite), local: publishedDir(suite)}
	read := func(name string) ([]byte, error) {
		p, err := im.sn.Path(sr.dir + "/" + name)
		if err != nil {
			return nil, err
		}
		fi, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		if fi.Size() > maxReleaseSize {
			return nil, refused("mirror %s: %s/%s is larger than %d bytes", im.r.cfg.Name, sr.dir, name, maxReleaseSize)
		}
		return os.ReadFile(p)
	}
	var err error
	if sr.inRelease, err = read("InRelease"); err == nil {
		return sr, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	sr.inRelease = nil
	if sr.release, err = read("Release"); err == nil {
		sr.releaseGPG, err = read("Release.gpg")
	}
	if errors.Is(err, fs.ErrNotExist) {
		return nil, refused("mirror %s: the bundle has no InRelease, nor Release with Release.gpg, for suite %s", im.r.cfg.Name, suite)
	}
	return sr, err
}

// dropUnsigned removes from the new snapshot's suite directory every file
// the verified Release does not cover: indexes of components or
// architectures this appliance does not mirror, and by-hash files not
// named by the current Release (older generations are carried from this
// appliance's own snapshots instead, as a sync does). What stays is
// exactly what a sync would have fetched.
func (im *importRun) dropUnsigned(suite string, ms *manifestSuite) error {
	keep := map[string]bool{"InRelease": true, "Release": true, "Release.gpg": true}
	for _, e := range ms.Files {
		keep[e.Path] = true
		for _, bh := range e.byHash() {
			keep[bh] = true
		}
	}
	root := filepath.Join(im.sn.Dir(), filepath.FromSlash(publishedDir(suite)))
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			if rel != "." && im.suiteOf(publishedDir(suite)+"/"+rel+"/") != suite {
				return filepath.SkipDir // a nested suite of its own
			}
			return nil
		}
		if keep[rel] {
			return nil
		}
		im.r.log.Debug("dropping a bundle file the Release does not cover for this mirror", "suite", suite, "file", rel)
		return im.sn.Remove(publishedDir(suite) + "/" + rel)
	})
}

// checkPool requires every pool file the indexes name to have come from
// the bundle or to be in the store already.
func (im *importRun) checkPool() error {
	var missing []string
	for fn, e := range im.pool.files {
		rel, _ := poolRel(fn)
		h := e.key()
		if store.CheckHash(h) != nil {
			return refused("mirror %s: the index gives no valid SHA-256 for %s; air-gap import needs one", im.r.cfg.Name, fn)
		}
		ok, err := im.r.st.HasObject(rel, h, e.Size)
		if err != nil {
			return refuse("mirror "+im.r.cfg.Name, err)
		}
		if !ok {
			missing = append(missing, fn)
			continue
		}
		if !im.carried[rel] {
			im.r.reused++
		}
		if err := im.sn.UsePool(rel, h); err != nil {
			if errors.Is(err, store.ErrPoolConflict) {
				return refused("mirror %s: %s is listed twice with different content: %v", im.r.cfg.Name, fn, err)
			}
			return fmt.Errorf("mirror %s: %w", im.r.cfg.Name, err)
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		return refused("mirror %s: %d pool files the indexes name are neither in the bundle nor here, e.g. %s; the bundle was made --since a state this appliance does not have: export again with an older --since or none",
			im.r.cfg.Name, len(missing), missing[0])
	}
	return nil
}

// publish writes the snapshot's manifest, commits it and records the
// accepted Releases.
func (im *importRun) publish(ctx context.Context) (*Report, error) {
	r := im.r
	started := r.now
	// As a sync does: the new files get one modification time later than
	// any of the published snapshot, so that a client's If-Modified-Since
	// (one-second resolution) never matches a changed file.
	r.pubTime = r.opt.clock()().UTC().Truncate(time.Second)
	if r.curID != "" {
		if p, err := r.st.SnapshotPath(r.curID, manifestFile); err == nil {
			if fi, err := os.Stat(p); err == nil && !r.pubTime.After(fi.ModTime()) {
				r.pubTime = fi.ModTime().UTC().Truncate(time.Second).Add(time.Second)
			}
		}
	}
	for _, rel := range im.distFiles {
		if err := im.sn.SetTime(rel, r.pubTime); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return r.rep, fmt.Errorf("mirror %s: %w", r.cfg.Name, err)
		}
	}
	if err := fillCounts(im.sn.Dir(), im.man); err != nil {
		return r.rep, fmt.Errorf("mirror %s: %w", r.cfg.Name, err)
	}
	mb, err := json.Marshal(im.man)
	if err != nil {
		return r.rep, fmt.Errorf("mirror %s: manifest: %w", r.cfg.Name, err)
	}
	if err := r.writeSnapshotFile(im.sn, manifestFile, mb); err != nil {
		return r.rep, fmt.Errorf("mirror %s: %w", r.cfg.Name, err)
	}
	id, err := im.sn.Commit(ctx)
	if err != nil {
		return r.rep, fmt.Errorf("mirror %s: publish: %w", r.cfg.Name, err)
	}
	r.rep.Result, r.rep.Snapshot, r.rep.Published, r.rep.FilesReused = ResultPublished, id, id, r.reused
	r.rep.FilesFetched = len(im.carried)
	r.recordPublished(id)
	for _, sr := range im.suites {
		r.acceptSuite(sr, id)
		r.rep.Suites = append(r.rep.Suites, sr.report())
	}
	rec := &store.SyncRecord{Started: started, Finished: r.opt.clock()(), Result: ResultPublished, Snapshot: id}
	r.state.LastSync, r.state.LastSuccess = rec, rec.Finished
	if err := r.st.WriteState(r.state); err != nil {
		return r.rep, fmt.Errorf("mirror %s: published snapshot %s but could not record it: %w", r.cfg.Name, id, err)
	}
	r.cleanup(ctx)
	r.log.Info("import published", "snapshot", id, "bundle_snapshot", im.entry.Snapshot, "reused", r.reused)
	if err := r.postPublish(ctx, id); err != nil {
		r.rep.Error = err.Error()
		return r.rep, err
	}
	return r.rep, nil
}
