package mirror

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"gatehouse/apt"
	"gatehouse/apt/compress"
	"gatehouse/mirror/fetch"
	"gatehouse/mirror/store"
)

// manifestFile is the name, at the root of every snapshot this package
// writes (beside dists/, so it is never served), of the record of which
// index files the snapshot holds and their hashes. It lets the next sync
// reuse unchanged indexes and carry by-hash generations without
// re-verifying old signatures, and lets GC and Verify find the indexes.
const manifestFile = "gatehouse-manifest.json"

type manifest struct {
	Version int                       `json:"version"`
	Suites  map[string]*manifestSuite `json:"suites"`
	// PoolObjects says that every pool file the indexes name is served
	// by this snapshot (from pool/ or its override layer) as a link of
	// the store object its index entry names. A verbatim sync that
	// fetched every file sets it; the next sync then takes a path it
	// serves from pool/ with unchanged content as done without a stat
	// (markPublished). Snapshots without it are checked file by file.
	PoolObjects bool `json:"pool_objects,omitempty"`
}

type manifestSuite struct {
	// Release names the signed file: "InRelease" or "Release".
	Release string `json:"release"`
	// Selection is the configuration the indexes were chosen by (see
	// selectionKey); a sync with another selection cannot take a 304 for
	// "nothing to do".
	Selection string `json:"selection"`
	// Files are the index files present, relative to dists/<suite>.
	Files []manifestEntry `json:"files"`
	// Carried are the by-hash files of earlier generations this snapshot
	// still holds (see carryByHash).
	Carried []carriedFile `json:"carried,omitempty"`
	// Counts is the number of stanzas of each Packages and Sources index
	// this snapshot serves, keyed by path without compression suffix (see
	// counts.go); nil in snapshots made before gatehouse counted.
	Counts map[string]int `json:"counts,omitempty"`

	// Filtered mirrors only: the upstream's Release and index files the
	// selection was made from (relative to upstreamDir/dists/<suite>), and
	// the fingerprint of the key that signed Files and their Valid-Until.
	Upstream   *manifestSuite `json:"upstream,omitempty"`
	SigningKey string         `json:"signing_key,omitempty"`
	ValidUntil time.Time      `json:"valid_until,omitzero"`
}

// carriedFile is a by-hash path (relative to dists/<suite>) of an earlier
// generation, Age publishes old.
type carriedFile struct {
	Path string `json:"path"`
	Age  int    `json:"age"`
}

type manifestEntry struct {
	Path   string `json:"path"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256,omitempty"`
	SHA512 string `json:"sha512,omitempty"`
}

func (e manifestEntry) strongest() (algo, hex string) {
	if e.SHA512 != "" {
		return apt.AlgoSHA512, e.SHA512
	}
	return apt.AlgoSHA256, e.SHA256
}

// byHash lists the by-hash paths (relative to dists/<suite>) of e.
func (e manifestEntry) byHash() []string {
	var out []string
	if e.SHA256 != "" {
		out = append(out, apt.ByHashPath(e.Path, apt.AlgoSHA256, e.SHA256))
	}
	if e.SHA512 != "" {
		out = append(out, apt.ByHashPath(e.Path, apt.AlgoSHA512, e.SHA512))
	}
	return out
}

func readManifest(st *store.Store, id string) (*manifest, error) {
	p, err := st.SnapshotPath(id, manifestFile)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", id, err)
	}
	var m manifest
	if err := json.Unmarshal(b, &m); err != nil || m.Version != 1 {
		return nil, fmt.Errorf("snapshot %s: %s is damaged or of an unknown version", id, manifestFile)
	}
	for name, s := range m.Suites {
		if s == nil || store.CheckRel(publishedDir(name)) != nil {
			return nil, fmt.Errorf("snapshot %s: %s names an invalid suite %q", id, manifestFile, name)
		}
		for _, f := range s.Files {
			if store.CheckRel(f.Path) != nil {
				return nil, fmt.Errorf("snapshot %s: %s names an invalid path %q", id, manifestFile, f.Path)
			}
		}
	}
	return &m, nil
}

// selectionKey identifies the part of the configuration that decides which
// indexes and pool files a suite's snapshot holds.
func selectionKey(cfg Config) string {
	k := fmt.Sprintf("components=%s;architectures=%s;sources=%t;translations=%s;installer=%t",
		strings.Join(cfg.Components, ","), strings.Join(cfg.Architectures, ","), cfg.Sources, strings.Join(cfg.Translations, ","), cfg.Installer)
	if cfg.Mode == ModeFiltered {
		k += fmt.Sprintf(";filtered;include=%q;exclude=%q;with_dependencies=%t;with_recommends=%t", cfg.Include, cfg.Exclude, cfg.WithDependencies, cfg.WithRecommends)
	}
	return k
}

// wantedIndexes is the part of rel's file list this mirror fetches.
func wantedIndexes(cfg Config, rel *apt.Release) []apt.FileEntry {
	files := rel.IndexFiles(cfg.Components, cfg.Architectures, cfg.Sources)
	if cfg.Mode == ModeFiltered {
		files = filterWanted(files)
	}
	return slices.DeleteFunc(files, func(e apt.FileEntry) bool {
		if !cfg.Installer && strings.Contains(e.Path, "/debian-installer/") {
			return true
		}
		base := compress.TrimSuffix(path.Base(e.Path))
		lang, ok := strings.CutPrefix(base, "Translation-")
		return ok && !slices.Contains(cfg.Translations, lang)
	})
}

// build fetches indexes and pool files into a new snapshot and publishes it.
func (r *run) build(ctx context.Context, suites []*suiteRun) (err error) {
	sn, err := r.st.NewSnapshot()
	if err != nil {
		return fmt.Errorf("mirror %s: %w", r.cfg.Name, err)
	}
	defer func() {
		if err != nil {
			if aerr := sn.Abort(); aerr != nil {
				r.log.Warn("removing the unfinished snapshot", "err", aerr)
			}
		}
	}()
	r.pubTime = r.now.UTC().Truncate(time.Second)
	if r.curID != "" {
		if p, err := r.st.SnapshotPath(r.curID, manifestFile); err == nil {
			if fi, err := os.Stat(p); err == nil && !r.pubTime.After(fi.ModTime()) {
				r.pubTime = fi.ModTime().UTC().Truncate(time.Second).Add(time.Second)
			}
		}
	}
	man := &manifest{Version: 1, Suites: map[string]*manifestSuite{}}
	if r.cfg.Mode == ModeFiltered {
		err = r.fillFiltered(ctx, sn, suites, man)
	} else {
		err = r.fillVerbatim(ctx, sn, suites, man)
	}
	if err != nil {
		return err
	}
	if err := fillCounts(sn.Dir(), man); err != nil {
		return fmt.Errorf("mirror %s: %w", r.cfg.Name, err)
	}
	mb, err := json.Marshal(man)
	if err != nil {
		return fmt.Errorf("mirror %s: manifest: %w", r.cfg.Name, err)
	}
	if err := r.writeSnapshotFile(sn, manifestFile, mb); err != nil {
		return fmt.Errorf("mirror %s: %w", r.cfg.Name, err)
	}
	if r.cfg.Publish == PublishManual {
		id, err := sn.Stage(ctx)
		if err != nil {
			return fmt.Errorf("mirror %s: stage: %w", r.cfg.Name, err)
		}
		r.rep.Result, r.rep.Snapshot = ResultStaged, id
		r.log.Info("snapshot staged, not published (publish = \"manual\")", "snapshot", id, "published", r.pubID)
	} else {
		id, err := sn.Commit(ctx)
		if err != nil {
			return fmt.Errorf("mirror %s: publish: %w", r.cfg.Name, err)
		}
		r.rep.Result, r.rep.Snapshot, r.rep.Published = ResultPublished, id, id
		r.recordPublished(id)
	}
	id := r.rep.Snapshot
	for _, sr := range suites {
		r.acceptSuite(sr, id)
	}
	return nil
}

// fillVerbatim fills a verbatim mirror's snapshot: the upstream's indexes
// and Release as they are (unchanged suites linked from the published
// snapshot), and every pool file they name.
func (r *run) fillVerbatim(ctx context.Context, sn *store.Snapshot, suites []*suiteRun, man *manifest) error {
	for _, sr := range suites {
		if sr.unchanged {
			if err := r.linkSuite(sn, sr); err != nil {
				return err
			}
			man.Suites[sr.name] = r.curMan.Suites[sr.name]
			continue
		}
		ms, err := r.fetchIndexes(ctx, sn, sr)
		if err != nil {
			return err
		}
		man.Suites[sr.name] = ms
		if err := r.carryByHash(sn, sr.name); err != nil {
			return err
		}
		ms.Carried = r.carried[sr.name]
	}
	// Two passes over the indexes, so that memory does not grow with
	// their size: a census (distinct paths, total size, contradictions,
	// limits) before anything is fetched, then the fetch, streaming. Every
	// suite counts, unchanged ones too: the new snapshot must say which
	// content it serves at each path (store.Snapshot.UsePool). Paths the
	// published snapshot already serves with the same content need
	// nothing (markPublished); when few others remain, the census keeps
	// them and the second pass does not parse the indexes again.
	census := newPoolCensus()
	if err := r.markPublished(census); err != nil {
		r.log.Warn("cannot read the published snapshot's indexes; checking every pool file instead", "snapshot", r.curID, "err", err)
		census = newPoolCensus()
	}
	for _, sr := range suites {
		counts, err := eachPoolEntryCounted(sn.Dir(), sr.name, man.Suites[sr.name], r.cfg.MaxPackages, census.add)
		if err != nil {
			return err
		}
		// Counted here, in the pass the census makes anyway, so that a
		// verbatim publish parses its indexes no extra time (fillCounts
		// then finds nothing left to count).
		man.Suites[sr.name].Counts = counts
	}
	if err := r.checkPoolSize(census.files, census.bytes); err != nil {
		return err
	}
	src := func(fn func(poolEntry) error) error {
		if !census.overflow {
			for _, e := range census.changed {
				if err := fn(e); err != nil {
					return err
				}
			}
			return nil
		}
		for _, sr := range suites {
			err := eachPoolEntry(sn.Dir(), sr.name, man.Suites[sr.name], 0, func(e poolEntry, _ string) error {
				if census.claim(e) != claimWork {
					return nil
				}
				return fn(e)
			})
			if err != nil {
				return err
			}
		}
		return nil
	}
	if r.opt.DryRun {
		return r.plan(census.files, census.bytes, src, nil)
	}
	r.reused += census.unchangedFiles
	if err := r.fetchPool(ctx, sn, census.files-census.unchangedFiles, census.bytes-census.unchangedBytes, src); err != nil {
		return err
	}
	// Every path the indexes name is now served, from pool/ or this
	// snapshot's overrides, with the content they name: the next sync
	// may trust that (markPublished). Not with files missing upstream,
	// which the next sync must try again.
	man.PoolObjects = len(r.missing) == 0

	r.progress(Event{Phase: PhasePublish})
	for _, sr := range suites {
		if sr.unchanged {
			continue
		}
		files := map[string][]byte{"InRelease": sr.inRelease}
		if sr.inRelease == nil {
			files = map[string][]byte{"Release": sr.release, "Release.gpg": sr.releaseGPG}
		}
		for name, b := range files {
			if err := r.writeSnapshotFile(sn, sr.local+"/"+name, b); err != nil {
				return fmt.Errorf("mirror %s: %w", r.cfg.Name, err)
			}
		}
	}
	return nil
}

func (r *run) writeSnapshotFile(sn *store.Snapshot, rel string, b []byte) error {
	return sn.WriteFile(rel, b, r.pubTime)
}

// linkSuite carries an unchanged suite's whole dists tree forward.
func (r *run) linkSuite(sn *store.Snapshot, sr *suiteRun) error {
	src, err := r.st.SnapshotPath(r.curID, sr.local)
	if err != nil {
		return err
	}
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("mirror %s: reading published suite %s: %w", r.cfg.Name, sr.name, err)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		return sn.Link(r.curID, sr.local+"/"+filepath.ToSlash(rel))
	})
}

// fetchIndexes fetches (or links from the published snapshot) every wanted
// index of a changed suite, verified against its Release, with by-hash
// copies beside them.
func (r *run) fetchIndexes(ctx context.Context, sn *store.Snapshot, sr *suiteRun) (*manifestSuite, error) {
	where := fmt.Sprintf("mirror %s: suite %s", r.cfg.Name, sr.name)
	// A component the Release does not list failed the sync in
	// fetchRelease, or was warned about there with allow_missing.
	wanted := wantedIndexes(r.cfg, sr.rel)
	var prev map[string]manifestEntry
	if r.curMan != nil && r.curMan.Suites[sr.name] != nil {
		pms := r.curMan.Suites[sr.name]
		if r.cfg.Mode == ModeFiltered {
			pms = cmp.Or(pms.Upstream, &manifestSuite{})
		}
		prev = map[string]manifestEntry{}
		for _, e := range pms.Files {
			prev[e.Path] = e
		}
	}
	for _, e := range wanted {
		if err := checkPoolName(e.Path); err != nil {
			return nil, refuse(where+": Release", err)
		}
		if algo, _ := e.StrongestHash(); algo != apt.AlgoSHA256 && algo != apt.AlgoSHA512 {
			return nil, refused("%s: Release protects %s only by %s; apt refuses such files, and so does the mirror", where, e.Path, algo)
		}
	}

	var mu sync.Mutex
	present := map[string]manifestEntry{}
	var done int
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(r.cfg.Concurrency)
	for _, e := range wanted {
		g.Go(func() error {
			me := manifestEntry{Path: e.Path, Size: e.Size, SHA256: e.SHA256, SHA512: e.SHA512}
			rel := sr.local + "/" + e.Path
			ok, err := r.fetchIndex(gctx, sn, sr, me, prev)
			if err != nil {
				return fmt.Errorf("%s: %s: %w", where, rel, err)
			}
			mu.Lock()
			defer mu.Unlock()
			done++
			if ok {
				present[e.Path] = me
			}
			r.progress(Event{Suite: sr.name, Phase: PhaseIndexes, Files: done, FilesTotal: len(wanted)})
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	// One variant of each index must exist; Release may list others that
	// the archive does not ship (Debian lists uncompressed Packages).
	groups := map[string]bool{}
	for _, e := range wanted {
		k := compress.TrimSuffix(e.Path)
		groups[k] = groups[k] || present[e.Path].Path != ""
	}
	for k, ok := range groups {
		switch {
		case ok:
		case requiredIndex(k):
			return nil, fmt.Errorf("%s: no variant of index %s exists upstream although Release lists it; the upstream is broken or mid-publish, retry later", where, k)
		default:
			r.log.Debug("Release lists an index upstream does not have", "suite", sr.name, "index", k)
		}
	}
	ms := &manifestSuite{Release: "InRelease", Selection: selectionKey(r.cfg)}
	if sr.inRelease == nil {
		ms.Release = "Release"
	}
	for _, e := range wanted {
		if me, ok := present[e.Path]; ok {
			ms.Files = append(ms.Files, me)
		}
	}
	return ms, nil
}

// fetchIndex puts one index file into the snapshot. It returns false when
// upstream does not have this variant.
func (r *run) fetchIndex(ctx context.Context, sn *store.Snapshot, sr *suiteRun, me manifestEntry, prev map[string]manifestEntry) (bool, error) {
	rel := sr.local + "/" + me.Path
	if _, err := sn.Path(rel); err != nil {
		return false, refuse(rel, err)
	}
	algo, hex := me.strongest()
	if pe, ok := prev[me.Path]; ok && pe.Size == me.Size {
		if palgo, phex := pe.strongest(); palgo == algo && phex == hex {
			if err := sn.Link(r.curID, rel); err == nil {
				r.countReused()
				return true, r.linkByHash(sn, sr.local, me)
			}
			// Fall through and fetch: the published copy is gone.
		}
	}
	want := fetch.Want{Size: me.Size, SHA256: me.SHA256, SHA512: me.SHA512}
	dest, err := sn.NewFile(rel)
	if err != nil {
		return false, err
	}
	var ferr error
	if sr.rel.AcquireByHash {
		_, ferr = r.client.Get(ctx, r.url(sr.name, joinRel(sr.dir, apt.ByHashPath(me.Path, algo, hex))), dest, want)
	}
	if !sr.rel.AcquireByHash || errors.Is(ferr, fetch.ErrNotFound) {
		_, ferr = r.client.Get(ctx, r.url(sr.name, joinRel(sr.dir, me.Path)), dest, want)
	}
	if errors.Is(ferr, fetch.ErrNotFound) {
		return false, nil
	}
	if ferr != nil {
		return false, wrapFetch(ferr)
	}
	if err := sn.SetTime(rel, r.pubTime); err != nil {
		return false, err
	}
	return true, r.linkByHash(sn, sr.local, me)
}

// linkByHash makes the by-hash names of an index point at its file.
func (r *run) linkByHash(sn *store.Snapshot, dir string, me manifestEntry) error {
	for _, bh := range me.byHash() {
		if err := sn.LinkInside(dir+"/"+me.Path, dir+"/"+bh); err != nil {
			return fmt.Errorf("by-hash: %w", err)
		}
	}
	return nil
}

// carryByHash links into the new snapshot the by-hash files of the last
// KeepSnapshots generations of suite, taken from the published snapshot
// (which holds them all), so a client that fetched an older InRelease a
// moment ago still finds the indexes it names. The manifest's Carried list
// ages them by one generation per publish; what the new snapshot carries is
// left in r.carried[suite] for the manifest. Snapshot IDs and their order
// play no part: IDs are times, and two syncs in one second after a prune
// can get them out of order.
func (r *run) carryByHash(sn *store.Snapshot, suite string) error {
	if r.carried == nil {
		r.carried = map[string][]carriedFile{}
	}
	r.carried[suite] = nil
	// With publish = "manual" the snapshot built on (curID) can be a staged
	// one while clients hold the published one's InRelease: carry both, so
	// that publishing this snapshot later strands no client mid-update,
	// however many snapshots were staged in between.
	type src struct {
		id  string
		age int
	}
	ages := map[string]src{}
	for i, from := range []string{r.curID, r.pubID} {
		if from == "" || (i == 1 && from == r.curID) {
			continue
		}
		m, err := readManifest(r.st, from)
		if err != nil || m.Suites[suite] == nil {
			continue // nothing published for this suite, or from an unknown writer
		}
		prev := m.Suites[suite]
		add := func(p string, age int) {
			if old, ok := ages[p]; !ok || age < old.age {
				ages[p] = src{from, age}
			}
		}
		for _, e := range prev.Files {
			for _, bh := range e.byHash() {
				add(bh, 1)
			}
		}
		for _, c := range prev.Carried {
			if c.Age+1 <= r.cfg.KeepSnapshots && store.CheckRel(c.Path) == nil {
				add(c.Path, c.Age+1)
			}
		}
	}
	paths := slices.Sorted(maps.Keys(ages))
	for _, bh := range paths {
		rel := publishedDir(suite) + "/" + bh
		p, err := sn.Path(rel)
		if err != nil {
			return err
		}
		if _, err := os.Lstat(p); err == nil {
			continue // also one of the new generation's own
		}
		if err := sn.Link(ages[bh].id, rel); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			return err
		}
		r.carried[suite] = append(r.carried[suite], carriedFile{Path: bh, Age: ages[bh].age})
	}
	return nil
}

func (r *run) countReused() {
	r.progMu.Lock()
	r.reused++
	r.progMu.Unlock()
}

// url returns the upstream URL of a path relative to the archive root
// that holds suite (see Config.SuiteURLs).
func (r *run) url(suite, rel string) string {
	return r.baseOf(suite) + "/" + (&url.URL{Path: rel}).EscapedPath()
}

// baseOf returns the archive root of suite, without trailing slash.
func (r *run) baseOf(suite string) string {
	if u, ok := r.cfg.SuiteURLs[suite]; ok {
		return strings.TrimRight(u, "/")
	}
	return r.base
}

// wrapFetch marks content mismatches as refusals.
func wrapFetch(err error) error {
	var me *fetch.MismatchError
	if errors.As(err, &me) {
		return fmt.Errorf("%w: %w", ErrRefused, err)
	}
	return err
}

// requiredIndex reports whether an index (path without compression suffix)
// is one apt clients fetch and fail without: Packages and Sources. Archives
// list other files they do not ship (debian-installer indexes, translations
// of some components), so their absence is not an error.
func requiredIndex(k string) bool {
	b := path.Base(k)
	return (b == "Packages" || b == "Sources") && !strings.Contains(k, "debian-installer/")
}
