package mirror

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"runtime"
	"slices"
	"strings"
	"time"

	"gatehouse/apt"
	"gatehouse/apt/compress"
	"gatehouse/apt/pgp"
	"gatehouse/mirror/filter"
	"gatehouse/mirror/store"
)

// Mirror modes (Config.Mode).
const (
	ModeVerbatim = "verbatim"
	ModeFiltered = "filtered"
)

// upstreamDir is the directory of a filtered mirror's snapshot, beside
// dists/, that keeps the upstream's verified Release and indexes the
// filtered ones were made from. serve exposes only dists/ and pool/, so
// clients never see them; the next sync reuses them (and their Release
// answers a conditional request), and they are the record of what the
// selection was taken from.
const upstreamDir = "upstream"

// DefaultValidFor is the Valid-Until period of re-signed Releases when
// [signing] valid_for is not set.
const DefaultValidFor = 30 * 24 * time.Hour

// maxProblemsShown bounds the unsatisfied relations one error lists.
const maxProblemsShown = 20

// localDir is where suite's upstream Release and indexes go in a snapshot.
func (r *run) localDir(suite string) string {
	if r.cfg.Mode == ModeFiltered {
		return upstreamDir + "/dists/" + suite
	}
	return publishedDir(suite)
}

// signingKey loads the appliance's archive key for a filtered mirror.
func (r *run) signingKey() error {
	if r.cfg.Mode != ModeFiltered {
		return nil
	}
	if r.opt.Signing.Key == "" {
		return fmt.Errorf("mirror %s: mode = \"filtered\" re-signs the suites with this appliance's archive key, and [signing] key is not set; create the key with `gatehouse keys init-archive-key` and name it in [signing]", r.cfg.Name)
	}
	k, err := pgp.LoadSigningKey(r.opt.Signing.Key)
	if err != nil {
		return fmt.Errorf("mirror %s: [signing] key: %w", r.cfg.Name, err)
	}
	if r.cfg.Keyring != "" {
		// Signing with a key the upstream keyring also trusts would let
		// the mirror's own output pass for the upstream's.
		if up, err := pgp.LoadKeyring(r.cfg.Keyring); err == nil && slices.Contains(up.Fingerprints(), k.Fingerprint()) {
			return fmt.Errorf("mirror %s: the [signing] key %s is in the upstream keyring %s; use a key of this appliance's own", r.cfg.Name, k.Fingerprint(), r.cfg.Keyring)
		}
	}
	r.key = k
	r.validFor = r.opt.Signing.ValidFor.Duration
	if r.validFor == 0 {
		r.validFor = DefaultValidFor
	}
	return nil
}

// resignDue reports whether a filtered mirror whose upstream is unchanged
// must still be rebuilt: its own Valid-Until is less than half the period
// away (so clients never meet an expired Release while the upstream is
// quiet), or it was signed with another key.
func (r *run) resignDue() bool {
	if r.cfg.Mode != ModeFiltered || r.curMan == nil {
		return false
	}
	for _, s := range r.cfg.Suites {
		ms := r.curMan.Suites[s]
		if ms == nil || ms.SigningKey != r.key.Fingerprint() || ms.ValidUntil.Sub(r.now) < r.validFor/2 {
			return true
		}
	}
	return false
}

// reloadUnchanged re-reads and re-verifies the upstream Release of a suite
// that upstream reported unchanged, from the published snapshot's copy,
// so a rebuild of a filtered mirror can use it. An upstream Release that
// has expired in the meantime is refused: re-signing would extend what the
// upstream no longer vouches for.
func (r *run) reloadUnchanged(sr *suiteRun) error {
	ms := r.curMan.Suites[sr.name]
	if ms == nil || ms.Upstream == nil {
		return fmt.Errorf("mirror %s: suite %s: the published snapshot keeps no upstream Release; run the sync again", r.cfg.Name, sr.name)
	}
	read := func(name string) ([]byte, error) {
		p, err := r.st.SnapshotPath(r.curID, sr.local+"/"+name)
		if err != nil {
			return nil, err
		}
		return os.ReadFile(p)
	}
	var err error
	if ms.Upstream.Release == "InRelease" {
		sr.inRelease, err = read("InRelease")
	} else if sr.release, err = read("Release"); err == nil {
		sr.releaseGPG, err = read("Release.gpg")
	}
	if err != nil {
		return fmt.Errorf("mirror %s: suite %s: reading the kept upstream Release: %w", r.cfg.Name, sr.name, err)
	}
	prev, hadPrev := r.state.Suites[sr.name]
	if err := r.verifyRelease(sr, prev, hadPrev); err != nil {
		return err
	}
	sr.unchanged = false
	return nil
}

// filterWanted keeps of the upstream's index files those a filtered
// mirror is made from: Packages, Sources (wantedIndexes offers them only
// with sources = true) and the configured Translations.
func filterWanted(files []apt.FileEntry) []apt.FileEntry {
	return slices.DeleteFunc(files, func(e apt.FileEntry) bool {
		dir, base := path.Split(compress.TrimSuffix(e.Path))
		switch {
		case strings.Contains(e.Path, "/debian-installer/") || strings.Contains(e.Path, "/by-hash/"):
			return true
		case base == "Packages":
			return !strings.Contains(dir, "/binary-")
		case base == "Sources":
			return !strings.HasSuffix(dir, "/source/")
		case strings.HasPrefix(base, "Translation-"):
			return !strings.HasSuffix(dir, "/i18n/")
		}
		return true
	})
}

// componentOf returns the configured component whose directory holds the
// index rel (relative to the suite), the longest when components nest.
func componentOf(rel string, comps []string) string {
	best := ""
	for _, c := range comps {
		if strings.HasPrefix(rel, c+"/") && len(c) > len(best) {
			best = c
		}
	}
	return best
}

// fillFiltered builds a filtered mirror's snapshot: every suite's upstream
// indexes, verified against the upstream Release, go below upstreamDir;
// one dependency closure over all suites selects the packages; their
// pool files (and, with sources = true, their sources' files) are fetched
// and verified; and each suite gets regenerated Packages, Translation and
// Sources files and a Release signed with the appliance's key.
func (r *run) fillFiltered(ctx context.Context, sn *store.Snapshot, suites []*suiteRun, man *manifest) error {
	fs := make([]*filteredSuite, 0, len(suites))
	u := filter.NewUniverse()
	for _, sr := range suites {
		ms, err := r.fetchIndexes(ctx, sn, sr)
		if err != nil {
			return err
		}
		if err := r.addUniverse(sn, sr, ms, u); err != nil {
			return err
		}
		f, err := r.newFilteredSuite(sn, sr, ms)
		if err != nil {
			return fmt.Errorf("mirror %s: suite %s: %w", r.cfg.Name, sr.name, err)
		}
		fs = append(fs, f)
	}
	res, err := filter.Resolve(u, filter.Spec{Include: r.cfg.Include, Exclude: r.cfg.Exclude,
		WithDependencies: r.cfg.WithDependencies, WithRecommends: r.cfg.WithRecommends, Architectures: r.cfg.Architectures})
	if err != nil {
		return fmt.Errorf("mirror %s: include/exclude: %w", r.cfg.Name, err)
	}
	if n := len(res.Unsatisfied); n > 0 {
		lines := make([]string, 0, min(n, maxProblemsShown))
		for _, p := range res.Unsatisfied[:min(n, maxProblemsShown)] {
			lines = append(lines, "  "+p.String())
		}
		if n > maxProblemsShown {
			lines = append(lines, fmt.Sprintf("  ... and %d more", n-maxProblemsShown))
		}
		return fmt.Errorf("mirror %s: the selection cannot be installed, so nothing was published: %d unmet dependencies:\n%s\n(add the suite or component that has them, include a provider, or exclude the package that needs them)",
			r.cfg.Name, n, strings.Join(lines, "\n"))
	}
	for _, p := range res.Unmatched {
		r.warn(fmt.Sprintf("include pattern %q matches no package", p))
	}
	r.log.Info("selection resolved", "packages", len(res.Selected), "of", u.Len())
	// The universe is most of the sync's memory; the rest of the build
	// (chiefly the xz writers) needs none of it. Collecting it now,
	// rather than when the heap next doubles, nearly halves the peak RSS
	// (bookworm + bookworm-updates main amd64: 257 -> 146 MiB).
	res.Detach()
	runtime.GC()

	files, err := res.PoolFiles()
	if err != nil {
		return refuse("mirror "+r.cfg.Name, err)
	}
	suiteOf := map[string]string{}
	for _, e := range res.Selected {
		if _, ok := suiteOf[e.Filename]; !ok {
			suiteOf[e.Filename] = e.Locations()[0].Suite
		}
	}
	pool := newPoolSet()
	if err := r.filteredSources(ctx, fs, res, pool); err != nil {
		return err
	}
	for _, f := range files {
		if _, ok := poolRel(f.Path); !ok {
			return refused("mirror %s: %s is not below pool/; gatehouse serves only dists/ and pool/ of an archive", r.cfg.Name, f.Path)
		}
		if err := pool.add(poolEntry{Filename: f.Path, Suite: suiteOf[f.Path], Size: f.Size, SHA256: f.SHA256, SHA512: f.SHA512}, "mirror "+r.cfg.Name); err != nil {
			return err
		}
	}
	nfiles, nbytes := pool.totals()
	if err := r.checkPoolSize(nfiles, nbytes); err != nil {
		return err
	}
	if r.opt.DryRun {
		sel := make([]string, len(res.Selected))
		for i, e := range res.Selected {
			sel[i] = e.String()
		}
		return r.plan(nfiles, nbytes, setSource(pool), sel)
	}
	if err := r.fetchPool(ctx, sn, nfiles, nbytes, setSource(pool)); err != nil {
		return err
	}

	r.progress(Event{Phase: PhasePublish})
	for _, f := range fs {
		sr := f.suiteRun
		ms, err := r.writeFiltered(f, res)
		if err != nil {
			return fmt.Errorf("mirror %s: suite %s: %w", r.cfg.Name, sr.name, err)
		}
		man.Suites[sr.name] = ms
		if err := r.carryByHash(sn, sr.name); err != nil {
			return err
		}
		ms.Carried = r.carried[sr.name]
		// The upstream Release too, for the next sync's comparison.
		kept := map[string][]byte{"InRelease": sr.inRelease}
		if sr.inRelease == nil {
			kept = map[string][]byte{"Release": sr.release, "Release.gpg": sr.releaseGPG}
		}
		for name, b := range kept {
			if err := r.writeSnapshotFile(sn, sr.local+"/"+name, b); err != nil {
				return fmt.Errorf("mirror %s: %w", r.cfg.Name, err)
			}
		}
	}
	return nil
}

// addUniverse adds the packages of one suite's verified upstream Packages
// files (the cheapest variant of each) to u.
func (r *run) addUniverse(sn *store.Snapshot, sr *suiteRun, ms *manifestSuite, u *filter.Universe) error {
	for _, rel := range parsedIndexes(ms) {
		comp := componentOf(rel, r.cfg.Components)
		if path.Base(compress.TrimSuffix(rel)) != "Packages" || comp == "" {
			continue
		}
		where := sr.dir + "/" + rel
		p, err := sn.Path(sr.local + "/" + rel)
		if err != nil {
			return err
		}
		err = readVerified(p, where, func(rd io.Reader) error {
			pr := apt.NewPackagesReader(rd, where)
			skipped, stanzas := 0, 0
			for {
				pk, err := pr.Next()
				if err == io.EOF {
					break
				}
				if stanzas++; r.cfg.MaxPackages > 0 && stanzas > r.cfg.MaxPackages {
					return tooManyEntries(where, r.cfg.MaxPackages)
				}
				if err != nil {
					if errors.Is(err, apt.ErrIndex) {
						return refuse(where, err)
					}
					return err
				}
				if err := u.Add(sr.name, comp, pk); err != nil {
					// A stanza the selection cannot use (an unparsable
					// Version, a clashing duplicate) is left out: it can
					// only make the mirror smaller, never unverified.
					if skipped++; skipped <= 3 {
						r.warn(fmt.Sprintf("%s: left out: %v", where, err))
					}
				}
				// The universe is the one set a filtered sync keeps in
				// memory (about 1 KB a package), so it has the same cap
				// as one index: max_packages distinct packages over all
				// suites and components.
				if r.cfg.MaxPackages > 0 && u.Len() > r.cfg.MaxPackages {
					return refused("%s: the upstream's suites list more than %d distinct packages (max_packages), which a filtered mirror holds in memory to resolve its selection; the upstream's signed indexes are refused. If the archive really is that large, raise max_packages for this mirror", where, r.cfg.MaxPackages)
				}
			}
			if skipped > 3 {
				r.warn(fmt.Sprintf("%s: %d stanzas left out in all", where, skipped))
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("mirror %s: %w", r.cfg.Name, err)
		}
	}
	return nil
}

// readVerified opens an index file of the snapshot, decompressed and
// bounded, for fn.
func readVerified(p, where string, fn func(io.Reader) error) error {
	rd, err := openIndex(p, where)
	if err != nil {
		return err
	}
	defer rd.Close()
	return fn(rd)
}

// writeFiltered writes one suite's filtered Packages and Translations and
// its re-signed Release (listing those and f.files) into the snapshot and
// returns its manifest entry.
func (r *run) writeFiltered(f *filteredSuite, res *filter.Result) (*manifestSuite, error) {
	sr, upms, dir, ix := f.suiteRun, f.up, f.dir, f.ix
	comps, arches := ix.Components, ix.Architectures
	files, err := filter.WriteIndexes(dir, res, ix)
	if err != nil {
		return nil, err
	}
	files = append(files, f.files...)
	for _, comp := range comps {
		for _, lang := range r.cfg.Translations {
			name := "Translation-" + lang
			src := cheapestVariant(upms, comp+"/i18n/"+name)
			if src == "" {
				continue
			}
			p, err := f.sn.Path(sr.local + "/" + src)
			if err != nil {
				return nil, err
			}
			err = readVerified(p, sr.dir+"/"+src, func(rd io.Reader) error {
				out, err := filter.WriteTranslation(dir, res, ix, comp, name, rd)
				files = append(files, out...)
				return err
			})
			if err != nil {
				return nil, err
			}
		}
	}
	info := filter.ReleaseInfo{Upstream: sr.rel, Architectures: arches, Components: comps, Files: files,
		Now: r.now, ValidFor: r.validFor}
	if err := filter.WriteRelease(dir, info, r.key); err != nil {
		return nil, err
	}
	if err := f.sn.TouchTree(sr.dir, r.pubTime); err != nil {
		return nil, err
	}
	ms := &manifestSuite{Release: "InRelease", Selection: selectionKey(r.cfg), Upstream: upms,
		SigningKey: r.key.Fingerprint(), ValidUntil: r.now.Add(r.validFor).UTC().Truncate(time.Second)}
	for _, f := range files {
		ms.Files = append(ms.Files, manifestEntry{Path: f.Path, Size: f.Size, SHA256: f.SHA256, SHA512: f.SHA512})
	}
	slices.SortFunc(ms.Files, func(a, b manifestEntry) int { return strings.Compare(a.Path, b.Path) })
	r.resignedUntil = ms.ValidUntil
	return ms, nil
}

// filteredSuite is one suite of a filtered sync: the upstream's verified
// indexes and where and in which shape its own go.
type filteredSuite struct {
	*suiteRun
	up    *manifestSuite  // the upstream's index files, below sr.local
	sn    *store.Snapshot // the snapshot being built
	dir   *store.SubDir   // its dists/<suite>
	ix    filter.Indexes
	files []apt.FileEntry // written so far besides Packages and Translations (Sources)
}

// newFilteredSuite names the suite's directory in the snapshot and
// decides which indexes the filtered suite has: the configured components
// the upstream has, the configured architectures (and "all" only where apt
// would have read the upstream's; otherwise the "all" packages are in
// every binary-ARCH, as upstream had them), in the compressions the
// upstream offered.
func (r *run) newFilteredSuite(sn *store.Snapshot, sr *suiteRun, upms *manifestSuite) (*filteredSuite, error) {
	dir := sn.Sub(sr.dir)
	comps := slices.DeleteFunc(slices.Clone(r.cfg.Components), func(c string) bool {
		return len(sr.rel.Components) > 0 && !sr.rel.HasComponent(c)
	})
	if len(comps) == 0 {
		return nil, fmt.Errorf("upstream has none of the components %q", r.cfg.Components)
	}
	arches := slices.Clone(r.cfg.Architectures)
	if sr.rel.WantsArchAll() && len(sr.rel.Architectures) > 0 {
		arches = append(arches, "all")
	}
	var compressions []string
	for _, f := range upms.Files {
		if s := compress.Suffix(f.Path); s != "" && !slices.Contains(compressions, s) {
			compressions = append(compressions, s)
		}
	}
	return &filteredSuite{suiteRun: sr, up: upms, sn: sn, dir: dir,
		ix: filter.Indexes{Suite: sr.name, Components: comps, Architectures: arches, Compressions: compressions}}, nil
}

// filteredSources writes, with sources = true, each suite's Sources with
// the source packages the selected binaries were built from, adds their
// files to pool, and adds the Sources files to each suite's files for its
// Release.
// A source listed by several suites is carried by the first (in the
// configured order) only, as apt-get source takes one. A source the
// upstream's Sources lack is a warning, not an error: the binaries install
// without it.
func (r *run) filteredSources(ctx context.Context, fs []*filteredSuite, res *filter.Result, pool *poolSet) error {
	if !r.cfg.Sources {
		return nil
	}
	type src struct{ name, version string }
	wanted := map[src]bool{}
	for _, e := range res.Selected {
		n, v := e.Source()
		wanted[src{n, v}] = false
	}
	for _, fsu := range fs {
		sr := fsu.suiteRun
		if err := ctx.Err(); err != nil {
			return err
		}
		for _, comp := range fsu.ix.Components {
			rel := cheapestVariant(fsu.up, comp+"/source/Sources")
			if rel == "" {
				continue
			}
			p, err := fsu.sn.Path(sr.local + "/" + rel)
			if err != nil {
				return err
			}
			var addErr error
			stanzas := 0
			err = readVerified(p, sr.dir+"/"+rel, func(rd io.Reader) error {
				out, err := filter.WriteSources(fsu.dir, fsu.ix, comp, rd, func(n, v string) bool {
					if stanzas++; r.cfg.MaxPackages > 0 && stanzas > r.cfg.MaxPackages {
						addErr = cmp.Or(addErr, tooManyEntries(sr.dir+"/"+rel, r.cfg.MaxPackages))
						return false
					}
					done, ok := wanted[src{n, v}]
					return ok && !done
				}, func(s *apt.Source) {
					wanted[src{s.Name, s.Version}] = true
					for _, f := range s.Files {
						fn := s.Directory + "/" + f.Name
						if _, ok := poolRel(fn); !ok {
							addErr = cmp.Or(addErr, refused("mirror %s: source %s: %s is not below pool/", r.cfg.Name, s.Name, fn))
							continue
						}
						addErr = cmp.Or(addErr, pool.add(poolEntry{Filename: fn, Suite: sr.name, Size: f.Size, SHA256: f.SHA256, SHA512: f.SHA512}, "mirror "+r.cfg.Name))
					}
				})
				fsu.files = append(fsu.files, out...)
				return err
			})
			if err == nil {
				err = addErr
			}
			if err != nil {
				return fmt.Errorf("mirror %s: suite %s: %w", r.cfg.Name, sr.name, err)
			}
		}
	}
	var missing []string
	for s, ok := range wanted {
		if !ok {
			missing = append(missing, s.name+" "+s.version)
		}
	}
	slices.Sort(missing)
	for _, m := range missing {
		r.warn("source package " + m + " of a selected binary is in no suite's Sources")
	}
	return nil
}

// cheapestVariant returns the path of the variant of index k (a path
// without compression suffix) that ms holds and that is cheapest to
// decode, or "".
func cheapestVariant(ms *manifestSuite, k string) string {
	best, rank := "", len(compress.ReadSuffixes)
	for _, f := range ms.Files {
		if compress.TrimSuffix(f.Path) != k {
			continue
		}
		if i := slices.Index(compress.ReadSuffixes, compress.Suffix(f.Path)); i >= 0 && i < rank {
			best, rank = f.Path, i
		}
	}
	return best
}

func (r *run) warn(msg string) {
	r.rep.Warnings = append(r.rep.Warnings, msg)
	r.log.Warn(msg)
}
