package repobuild

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"maps"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"gatehouse/apt/compress"
	"gatehouse/apt/deb822"
	"gatehouse/apt/pgp"
)

// Suite describes one dists/<Name> of a test repository.
type Suite struct {
	Name, Codename string   // the Suite and Codename fields; Codename "" means Name
	Components     []string // e.g. ["main", "contrib"]
	// Architectures are the binary architectures, e.g. ["amd64", "arm64"].
	// Packages of Arch "all" go into every architecture's Packages; listing
	// "all" here also writes binary-all indexes and the
	// "No-Support-for-Architecture-all: Packages" field, as Debian does.
	Architectures []string
	Packages      map[string][]Package // component → packages
	// Sources also writes Sources indexes and source packages (.dsc and
	// real but tiny tarballs) for every source of the suite's packages.
	Sources bool
	// Compressions are the index variants written and listed; nil means
	// ["", ".gz", ".xz"]. Allowed: "", ".gz", ".xz", ".zst".
	Compressions []string
	// ByHash writes "Acquire-By-Hash: yes" and a by-hash/SHA256/<digest>
	// copy of every index (and by-hash/SHA512 with SHA512). Copies from
	// earlier builds are kept, as archives keep a few generations.
	ByHash bool
	// Date is the Release Date; zero means now, moved one second past the
	// previous build's Date of this suite so that Rebuild always moves
	// forward. ValidUntil zero omits Valid-Until.
	Date, ValidUntil time.Time
	// Origin, Label, Version and Description are written when non-empty.
	Origin, Label, Version, Description string
	// NotAutomatic and ButAutomaticUpgrades write "yes" fields.
	NotAutomatic, ButAutomaticUpgrades bool
	// Translations writes i18n/Translation-en in every compression and
	// moves long descriptions there: Packages gets the first line and
	// Description-md5, as in Debian.
	Translations bool
	// Contents writes <component>/Contents-<arch>.gz.
	Contents bool
	// ExtraReleaseFiles are listed in Release (with made-up digests) but
	// not written, as real archives list optional variants they lack.
	ExtraReleaseFiles []string
	// NoMD5 omits MD5Sum from Release and MD5sum from Packages.
	NoMD5 bool
	// SHA1 and SHA512 add those lists to Release (SHA1 also to Packages).
	SHA1, SHA512 bool

	synthetic bool // pool files are random bytes (BuildSynthetic)
}

// Repo is a repository built on disk. Its methods are safe for concurrent
// use, but rebuilding while a client reads gives that client whatever an
// upstream mid-publish gives: each file is replaced atomically, indexes
// before InRelease.
type Repo struct {
	// Dir is the archive root (the directory holding dists/ and pool/).
	Dir string
	// Key signs the Release files.
	Key *pgp.SigningKey
	// KeyringPath is the binary OpenPGP public key of Key, for apt's
	// Signed-By; ArmoredKeyPath holds the same key armored. Both are
	// written in Dir (archive-keyring.gpg/.asc), outside dists/ and pool/.
	KeyringPath, ArmoredKeyPath string

	mu   sync.Mutex
	flat bool
	// flatSub is a flat repository's directory below Dir ("" = Dir).
	flatSub string
	suites  []Suite
	pool    map[string]string // "name_version_arch" → pool path of the last build
	dates   map[string]time.Time
	// stamp is the modification time of the metadata files of the
	// current build: whole seconds, strictly after the previous build's,
	// so that If-Modified-Since (one-second resolution) never mistakes a
	// quick rebuild for the old state.
	stamp time.Time
}

// stampAge is how far before the build its metadata files are dated: as
// on a real archive, published a while before a mirror reads it. A
// Last-Modified within 2 s of the response's Date makes a mirror ask
// unconditionally next time (a same-second republish could hide behind
// it), so files stamped "now" would turn every no-op sync of a test into
// a full InRelease download. Tests of that case set the mtime themselves.
const stampAge = time.Minute

// nextStamp advances r.stamp for a new build.
func (r *Repo) nextStamp() {
	now := time.Now().Add(-stampAge).Truncate(time.Second)
	if !now.After(r.stamp) {
		now = r.stamp.Add(time.Second)
	}
	r.stamp = now
}

// Build writes a signed repository with the given suites under dir (which
// need not exist) and returns it. Every .deb is real: built by dpkg-deb
// from the Package, so `dpkg-deb -I` and apt accept it.
func Build(dir string, key *pgp.SigningKey, suites ...Suite) (*Repo, error) {
	r, err := newRepo(dir, key)
	if err != nil {
		return nil, err
	}
	if err := r.Rebuild(suites...); err != nil {
		return nil, err
	}
	return r, nil
}

func newRepo(dir string, key *pgp.SigningKey) (*Repo, error) {
	if key == nil {
		return nil, fmt.Errorf("repobuild: build %s: a signing key is required (pgp.GenerateSigningKey, or apttest.NewKey in tests)", dir)
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("repobuild: build: %w", err)
	}
	r := &Repo{Dir: dir, Key: key, pool: map[string]string{}, dates: map[string]time.Time{},
		KeyringPath:    filepath.Join(dir, "archive-keyring.gpg"),
		ArmoredKeyPath: filepath.Join(dir, "archive-keyring.asc"),
	}
	for _, armor := range []bool{false, true} {
		pub, err := key.PublicKey(armor)
		if err != nil {
			return nil, fmt.Errorf("repobuild: build %s: export public key: %w", dir, err)
		}
		name := "archive-keyring.gpg"
		if armor {
			name = "archive-keyring.asc"
		}
		if err := writeFile(dir, name, pub); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// Rebuild writes a new state of the repository's suites: new packages are
// built, pool files already present are kept byte for byte (also those no
// longer referenced, as an archive keeps them for a while), and every
// index, Release and signature of the given suites is rewritten with a new
// Date. Suites not given are left as they are. Index files an earlier
// build wrote and this one does not (say, after turning Contents off) stay
// on disk, unlisted.
func (r *Repo) Rebuild(suites ...Suite) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.flat {
		return fmt.Errorf("repobuild: %s is a flat repository: use RebuildFlat", r.Dir)
	}
	if len(suites) == 0 {
		return fmt.Errorf("repobuild: build %s: no suites given", r.Dir)
	}
	suites = slices.Clone(suites) // defaults are filled in; the caller's slice stays as given
	for i := range suites {
		s := &suites[i]
		if err := checkSuite(s); err != nil {
			return err
		}
	}
	r.nextStamp()
	infos, srcs, err := r.buildPool(context.Background(), suites)
	if err != nil {
		return err
	}
	for i := range suites {
		if err := r.writeSuite(&suites[i], infos, srcs); err != nil {
			return err
		}
	}
	for _, s := range suites {
		r.remember(s)
	}
	return nil
}

func (r *Repo) remember(s Suite) {
	for i := range r.suites {
		if r.suites[i].Name == s.Name {
			r.suites[i] = s
			return
		}
	}
	r.suites = append(r.suites, s)
}

// Suites returns the suites as last built (after defaults were applied).
func (r *Repo) Suites() []Suite {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.suites)
}

// PoolPath returns the path relative to Dir of the .deb of the named
// package as last built, or "" when no build had it.
func (r *Repo) PoolPath(name, version, arch string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pool[name+"_"+version+"_"+arch]
}

// SourcesLine returns the one-line sources.list entry for the repository
// served at baseURL, with Signed-By set to KeyringPath. With no
// components it is a flat-repository line ("./").
func (r *Repo) SourcesLine(baseURL, suite string, components ...string) string {
	if len(components) == 0 {
		return fmt.Sprintf("deb [signed-by=%s] %s/ ./", r.KeyringPath, strings.TrimSuffix(baseURL, "/"))
	}
	return fmt.Sprintf("deb [signed-by=%s] %s/ %s %s", r.KeyringPath, strings.TrimSuffix(baseURL, "/"), suite, strings.Join(components, " "))
}

var validCompressions = []string{"", ".gz", ".xz", ".zst"}

func checkSuite(s *Suite) error {
	if s.Name == "" || strings.ContainsAny(s.Name, " \t\n") || path.Clean(s.Name) != s.Name || strings.HasPrefix(s.Name, "..") {
		return fmt.Errorf("repobuild: suite %q: invalid name", s.Name)
	}
	if s.Codename == "" {
		s.Codename = s.Name
	}
	if len(s.Components) == 0 || len(s.Architectures) == 0 {
		return fmt.Errorf("repobuild: suite %s: Components and Architectures must not be empty", s.Name)
	}
	if s.Compressions == nil {
		s.Compressions = []string{"", ".gz", ".xz"}
	}
	for _, c := range s.Compressions {
		if !slices.Contains(validCompressions, c) {
			return fmt.Errorf("repobuild: suite %s: compression %q not one of %q", s.Name, c, validCompressions)
		}
	}
	for comp, pkgs := range s.Packages {
		if !slices.Contains(s.Components, comp) {
			return fmt.Errorf("repobuild: suite %s: packages given for component %q, which is not in Components %q", s.Name, comp, s.Components)
		}
		for i := range pkgs {
			p := &pkgs[i]
			if err := p.check(); err != nil {
				return fmt.Errorf("repobuild: suite %s: %w", s.Name, err)
			}
			if p.Arch != "all" && !slices.Contains(s.Architectures, p.Arch) {
				return fmt.Errorf("repobuild: suite %s: package %s has architecture %s, not in Architectures %q", s.Name, p.Name, p.Arch, s.Architectures)
			}
		}
	}
	return nil
}

// poolParallelism bounds concurrent pool jobs: building a .deb mostly
// waits for dpkg-deb and the file system, so a few more jobs than CPUs
// keep the CPUs busy.
func poolParallelism() int { return 2*runtime.GOMAXPROCS(0) + 2 }

// buildPool makes every pool file of the suites, in parallel and bounded,
// and returns their digests by pool path, plus the source packages.
func (r *Repo) buildPool(ctx context.Context, suites []Suite) (map[string]fileInfo, map[string][]*sourcePkg, error) {
	jobs := map[string]*poolJob{}
	var order []string
	add := func(j *poolJob) error {
		if old, ok := jobs[j.rel]; ok {
			if old.key != j.key {
				return fmt.Errorf("repobuild: two different packages would be written to %s; give them different versions", j.rel)
			}
			return nil
		}
		jobs[j.rel] = j
		order = append(order, j.rel)
		return nil
	}
	srcs := map[string][]*sourcePkg{} // suite → sources
	for _, s := range suites {
		bySrc := map[string]*sourcePkg{}
		for _, comp := range s.Components {
			for i := range s.Packages[comp] {
				p := s.Packages[comp][i]
				rel := debPath(comp, &p)
				r.pool[p.Name+"_"+p.Version+"_"+p.Arch] = rel
				j := &poolJob{rel: rel}
				if s.synthetic {
					j.key = "synthetic"
					j.stream = p.payload
				} else {
					k, err := p.cacheKey()
					if err != nil {
						return nil, nil, fmt.Errorf("repobuild: suite %s: package %s: %w", s.Name, p.Name, err)
					}
					j.key = string(k[:])
					j.make = func(ctx context.Context) ([]byte, error) { return buildDeb(ctx, &p) }
				}
				if err := add(j); err != nil {
					return nil, nil, err
				}
				if !s.Sources {
					continue
				}
				id := comp + "/" + p.source() + "_" + p.Version
				sp := bySrc[id]
				if sp == nil {
					sp = &sourcePkg{name: p.source(), version: p.Version, comp: comp, section: p.section(), priority: p.priority()}
					bySrc[id] = sp
					srcs[s.Name] = append(srcs[s.Name], sp)
				}
				if !slices.Contains(sp.binaries, p.Name) {
					sp.binaries = append(sp.binaries, p.Name)
				}
				a := p.Arch
				if a != "all" {
					a = "any"
				}
				if !slices.Contains(sp.arches, a) {
					sp.arches = append(sp.arches, a)
				}
			}
		}
	}
	infos := make(map[string]fileInfo, len(order))
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(poolParallelism())
	for _, rel := range order {
		j := jobs[rel]
		g.Go(func() error {
			fi, err := runPoolJob(gctx, r.Dir, j)
			if err != nil {
				return err
			}
			mu.Lock()
			infos[rel] = fi
			mu.Unlock()
			return nil
		})
	}
	for _, list := range srcs {
		for _, sp := range list {
			slices.Sort(sp.binaries)
			slices.Sort(sp.arches)
			g.Go(func() error {
				m, err := r.writeSource(sp)
				if err != nil {
					return err
				}
				mu.Lock()
				maps.Copy(infos, m)
				mu.Unlock()
				return nil
			})
		}
	}
	if err := g.Wait(); err != nil {
		return nil, nil, err
	}
	return infos, srcs, nil
}

// writeSource writes (or keeps) a source package's files and returns
// their digests by path.
func (r *Repo) writeSource(sp *sourcePkg) (map[string]fileInfo, error) {
	infos := map[string]fileInfo{}
	names := sp.tarballNames()
	sp.files = names
	fis := make([]fileInfo, len(names))
	var data [][]byte
	for i, n := range names {
		rel := sp.dir() + "/" + n
		fi, ok, err := hashExisting(r.Dir, rel)
		if err != nil {
			return nil, err
		}
		if !ok {
			if data == nil {
				if _, data, err = sp.tarballs(); err != nil {
					return nil, err
				}
			}
			if err := writeNew(r.Dir, rel, data[i]); err != nil {
				return nil, err
			}
			fi = infoOf(data[i])
		}
		infos[rel] = fi
		fis[i] = fi
	}
	dsc, err := sp.dsc(names, fis)
	if err != nil {
		return nil, err
	}
	rel := sp.dir() + "/" + sp.dscName()
	fi, ok, err := hashExisting(r.Dir, rel)
	if err != nil {
		return nil, err
	}
	if !ok {
		if err := writeNew(r.Dir, rel, dsc); err != nil {
			return nil, err
		}
		fi = infoOf(dsc)
	}
	infos[rel] = fi
	return infos, nil
}

// releaseEntry is one file listed in a Release file.
type releaseEntry struct {
	path string // relative to the Release file's directory
	fileInfo
}

// indexWriter writes the index files of one Release file's tree and
// collects what the Release file lists.
type indexWriter struct {
	dir     string // absolute directory of the Release file
	s       *Suite
	mtime   time.Time
	entries []releaseEntry
}

// write writes body as rel plus every compression variant of the suite
// (only the given variants when variants is non-nil), with by-hash copies.
func (iw *indexWriter) write(rel string, body []byte, variants []string) error {
	if variants == nil {
		variants = iw.s.Compressions
	}
	for _, ext := range variants {
		data := body
		if ext != "" {
			var buf bytes.Buffer
			cw, err := compress.Create(&buf, rel+ext)
			if err != nil {
				return fmt.Errorf("repobuild: %s%s: %w", rel, ext, err)
			}
			if _, err := cw.Write(body); err != nil {
				return fmt.Errorf("repobuild: compress %s%s: %w", rel, ext, err)
			}
			if err := cw.Close(); err != nil {
				return fmt.Errorf("repobuild: compress %s%s: %w", rel, ext, err)
			}
			data = buf.Bytes()
		}
		fi := infoOf(data)
		if iw.s.ByHash {
			// The by-hash copy goes first: a client reading the new
			// Release must find it.
			// Content-addressed copies that exist are left alone.
			d := path.Dir(rel)
			names := []string{path.Join(d, "by-hash/SHA256", fi.SHA256)}
			if iw.s.SHA512 {
				names = append(names, path.Join(d, "by-hash/SHA512", fi.SHA512))
			}
			for _, n := range names {
				if _, err := os.Stat(filepath.Join(iw.dir, filepath.FromSlash(n))); err == nil {
					continue
				}
				if err := writeFileAt(iw.dir, n, data, iw.mtime); err != nil {
					return err
				}
			}
		}
		if err := writeFileAt(iw.dir, rel+ext, data, iw.mtime); err != nil {
			return err
		}
		iw.entries = append(iw.entries, releaseEntry{path: rel + ext, fileInfo: fi})
	}
	return nil
}

func paragraphsBytes(ps []*deb822.Paragraph) ([]byte, error) {
	var buf bytes.Buffer
	w := deb822.NewWriter(&buf)
	for _, p := range ps {
		if err := w.Write(p); err != nil {
			return nil, err
		}
	}
	if err := w.Flush(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func sortPackages(ps []Package) {
	slices.SortStableFunc(ps, func(a, b Package) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.Version, b.Version), cmp.Compare(a.Arch, b.Arch))
	})
}

// releaseDate picks the Date of a suite's new Release (see Suite.Date).
func (r *Repo) releaseDate(s *Suite) time.Time {
	if !s.Date.IsZero() {
		return s.Date.UTC()
	}
	d := time.Now().UTC().Truncate(time.Second)
	if prev, ok := r.dates[s.Name]; ok && !d.After(prev) {
		d = prev.Add(time.Second)
	}
	return d
}

func debianDate(t time.Time) string { return t.UTC().Format("Mon, 02 Jan 2006 15:04:05 UTC") }

func (r *Repo) writeSuite(s *Suite, infos map[string]fileInfo, srcs map[string][]*sourcePkg) error {
	base := filepath.Join(r.Dir, "dists", filepath.FromSlash(s.Name))
	iw := &indexWriter{dir: base, s: s, mtime: r.stamp}
	binArches := slices.DeleteFunc(slices.Clone(s.Architectures), func(a string) bool { return a == "all" })
	hasAll := len(binArches) != len(s.Architectures)
	indexArches := slices.Clone(binArches)
	if hasAll {
		indexArches = append(indexArches, "all")
	}
	for _, comp := range s.Components {
		pkgs := slices.Clone(s.Packages[comp])
		sortPackages(pkgs)
		for _, arch := range indexArches {
			// Stanzas are written as they are made: a synthetic suite
			// has tens of thousands.
			var buf bytes.Buffer
			w := deb822.NewWriter(&buf)
			for i := range pkgs {
				p := &pkgs[i]
				if p.Arch != arch && p.Arch != "all" {
					continue
				}
				if err := w.Write(packagesStanza(s, p, debPath(comp, p), infos[debPath(comp, p)])); err != nil {
					return fmt.Errorf("repobuild: suite %s: %s/binary-%s/Packages: package %s: %w", s.Name, comp, arch, p.Name, err)
				}
			}
			if err := w.Flush(); err != nil {
				return err
			}
			body := buf.Bytes()
			d := comp + "/binary-" + arch
			if err := iw.write(d+"/Packages", body, nil); err != nil {
				return err
			}
			if err := iw.write(d+"/Release", componentRelease(s, comp, arch), []string{""}); err != nil {
				return err
			}
		}
		if s.Translations {
			body, err := translation(pkgs)
			if err != nil {
				return fmt.Errorf("repobuild: suite %s: %s/i18n/Translation-en: %w", s.Name, comp, err)
			}
			if err := iw.write(comp+"/i18n/Translation-en", body, nil); err != nil {
				return err
			}
		}
		if s.Contents {
			for _, arch := range binArches {
				if err := iw.write(comp+"/Contents-"+arch, contents(pkgs, arch), []string{".gz"}); err != nil {
					return err
				}
			}
		}
		if s.Sources {
			var stanzas []*deb822.Paragraph
			for _, sp := range srcs[s.Name] {
				if sp.comp == comp {
					stanzas = append(stanzas, sourcesStanza(sp, infos))
				}
			}
			slices.SortStableFunc(stanzas, func(a, b *deb822.Paragraph) int {
				return cmp.Or(cmp.Compare(a.Value("Package"), b.Value("Package")), cmp.Compare(a.Value("Version"), b.Value("Version")))
			})
			body, err := paragraphsBytes(stanzas)
			if err != nil {
				return fmt.Errorf("repobuild: suite %s: %s/source/Sources: %w", s.Name, comp, err)
			}
			if err := iw.write(comp+"/source/Sources", body, nil); err != nil {
				return err
			}
			if err := iw.write(comp+"/source/Release", componentRelease(s, comp, "source"), []string{""}); err != nil {
				return err
			}
		}
	}
	for _, extra := range s.ExtraReleaseFiles {
		iw.entries = append(iw.entries, releaseEntry{path: extra, fileInfo: infoOf([]byte("absent:" + extra))})
	}
	date := r.releaseDate(s)
	rel, err := releaseFile(s, date, hasAll, indexArches, iw.entries)
	if err != nil {
		return err
	}
	if err := r.sign(r.Key, base, rel, "dists/"+s.Name, date); err != nil {
		return err
	}
	r.dates[s.Name] = date
	return nil
}

// sign writes Release, Release.gpg and InRelease into dir, InRelease last:
// it is what clients fetch first. The signatures are made at the Release's
// date when that is in the past, as a real archive signed them then (so a
// verifier with a clock set back to that time accepts them).
func (r *Repo) sign(key *pgp.SigningKey, dir string, release []byte, where string, date time.Time) error {
	now := time.Now()
	if date.Before(now) {
		now = date
	}
	detached, err := key.DetachSign(release, true, now)
	if err != nil {
		return fmt.Errorf("repobuild: sign %s/Release: %w", where, err)
	}
	clear, err := key.ClearSign(release, now)
	if err != nil {
		return fmt.Errorf("repobuild: sign %s/InRelease: %w", where, err)
	}
	if err := writeFileAt(dir, "Release", release, r.stamp); err != nil {
		return err
	}
	if err := writeFileAt(dir, "Release.gpg", detached, r.stamp); err != nil {
		return err
	}
	return writeFileAt(dir, "InRelease", clear, r.stamp)
}

func componentRelease(s *Suite, comp, arch string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "Archive: %s\n", s.Name)
	if s.Origin != "" {
		fmt.Fprintf(&b, "Origin: %s\n", s.Origin)
	}
	if s.Label != "" {
		fmt.Fprintf(&b, "Label: %s\n", s.Label)
	}
	if s.Version != "" {
		fmt.Fprintf(&b, "Version: %s\n", s.Version)
	}
	fmt.Fprintf(&b, "Component: %s\nArchitecture: %s\n", comp, arch)
	return []byte(b.String())
}

func releaseFile(s *Suite, date time.Time, hasAll bool, arches []string, entries []releaseEntry) ([]byte, error) {
	p := &deb822.Paragraph{}
	set := func(name, value string) {
		if value != "" {
			p.Set(name, value)
		}
	}
	set("Origin", s.Origin)
	set("Label", s.Label)
	set("Suite", s.Name)
	set("Version", s.Version)
	set("Codename", s.Codename)
	set("Date", debianDate(date))
	if !s.ValidUntil.IsZero() {
		set("Valid-Until", debianDate(s.ValidUntil))
	}
	if s.NotAutomatic {
		set("NotAutomatic", "yes")
	}
	if s.ButAutomaticUpgrades {
		set("ButAutomaticUpgrades", "yes")
	}
	if s.ByHash {
		set("Acquire-By-Hash", "yes")
	}
	if hasAll {
		set("No-Support-for-Architecture-all", "Packages")
	}
	set("Architectures", strings.Join(arches, " "))
	set("Components", strings.Join(s.Components, " "))
	set("Description", s.Description)
	slices.SortStableFunc(entries, func(a, b releaseEntry) int { return cmp.Compare(a.path, b.path) })
	list := func(h func(fileInfo) string) string {
		var b strings.Builder
		for _, e := range entries {
			fmt.Fprintf(&b, "\n%s %16d %s", h(e.fileInfo), e.Size, e.path)
		}
		return b.String()
	}
	if len(entries) > 0 {
		if !s.NoMD5 {
			p.Set("MD5Sum", list(func(f fileInfo) string { return f.MD5 }))
		}
		if s.SHA1 {
			p.Set("SHA1", list(func(f fileInfo) string { return f.SHA1 }))
		}
		p.Set("SHA256", list(func(f fileInfo) string { return f.SHA256 }))
		if s.SHA512 {
			p.Set("SHA512", list(func(f fileInfo) string { return f.SHA512 }))
		}
	}
	b, err := paragraphsBytes([]*deb822.Paragraph{p})
	if err != nil {
		return nil, fmt.Errorf("repobuild: suite %s: Release: %w", s.Name, err)
	}
	return b, nil
}
