package repobuild

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"gatehouse/apt/deb822"
	"gatehouse/apt/pgp"
)

// BuildFlat writes a signed flat repository into dir: the .debs, Packages
// (plain, .gz, .xz), Release, Release.gpg and InRelease all at the root,
// with Filename relative to the root. apt uses it with a "deb URL/ ./"
// line (Repo.SourcesLine with no components).
func BuildFlat(dir string, key *pgp.SigningKey, pkgs []Package) (*Repo, error) {
	return BuildFlatIn(dir, "", key, pkgs)
}

// BuildFlatIn is BuildFlat for a flat repository in the subdirectory sub
// of the archive root dir ("deb URL/ sub/"): Release, indexes and .debs go
// into dir/sub, and Filename is relative to dir (as apt resolves it:
// against the URL, not URL/sub/).
func BuildFlatIn(dir, sub string, key *pgp.SigningKey, pkgs []Package) (*Repo, error) {
	if sub != "" && (path.Clean(sub) != sub || strings.HasPrefix(sub, ".") || strings.HasPrefix(sub, "/")) {
		return nil, fmt.Errorf("repobuild: flat subdirectory %q is not a clean relative path", sub)
	}
	r, err := newRepo(dir, key)
	if err != nil {
		return nil, err
	}
	r.flat, r.flatSub = true, sub
	if err := r.RebuildFlat(pkgs); err != nil {
		return nil, err
	}
	return r, nil
}

// RebuildFlat writes a new state of a flat repository, keeping .debs that
// exist already.
func (r *Repo) RebuildFlat(pkgs []Package) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.flat {
		return fmt.Errorf("repobuild: %s is not a flat repository: use Rebuild", r.Dir)
	}
	s := &Suite{Name: "flat", Components: []string{"flat"}, Architectures: []string{"all"}, Compressions: []string{"", ".gz", ".xz"}}
	pkgs = slices.Clone(pkgs)
	sortPackages(pkgs)
	jobs := map[string]bool{}
	for i := range pkgs {
		p := &pkgs[i]
		if err := p.check(); err != nil {
			return fmt.Errorf("repobuild: flat repository: %w", err)
		}
		rel := r.flatRel(p)
		if jobs[rel] {
			return fmt.Errorf("repobuild: flat repository: package %s listed twice", rel)
		}
		jobs[rel] = true
		r.pool[p.Name+"_"+p.Version+"_"+p.Arch] = rel
		if !slices.Contains(s.Architectures, p.Arch) {
			s.Architectures = append(s.Architectures, p.Arch)
		}
	}
	r.nextStamp()
	infos := map[string]fileInfo{}
	var mu sync.Mutex
	g, ctx := errgroup.WithContext(context.Background())
	g.SetLimit(poolParallelism())
	for i := range pkgs {
		p := &pkgs[i]
		j := &poolJob{rel: r.flatRel(p), make: func(ctx context.Context) ([]byte, error) { return buildDeb(ctx, p) }}
		g.Go(func() error {
			fi, err := runPoolJob(ctx, r.Dir, j)
			if err == nil {
				mu.Lock()
				infos[j.rel] = fi
				mu.Unlock()
			}
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	iw := &indexWriter{dir: filepath.Join(r.Dir, r.flatSub), s: s, mtime: r.stamp}
	stanzas := make([]*deb822.Paragraph, 0, len(pkgs))
	for i := range pkgs {
		stanzas = append(stanzas, packagesStanza(s, &pkgs[i], r.flatRel(&pkgs[i]), infos[r.flatRel(&pkgs[i])]))
	}
	body, err := paragraphsBytes(stanzas)
	if err != nil {
		return fmt.Errorf("repobuild: flat repository: Packages: %w", err)
	}
	if err := iw.write("Packages", body, nil); err != nil {
		return err
	}
	date := r.releaseDate(&Suite{Name: ".flat"})
	rel, err := releaseFile(&Suite{Origin: "gatehouse apttest", Label: "flat"}, date, false, s.Architectures, iw.entries)
	if err != nil {
		return err
	}
	if err := r.sign(r.Key, filepath.Join(r.Dir, r.flatSub), rel, ".", date); err != nil {
		return err
	}
	r.dates[".flat"] = date
	return nil
}

// flatRel is the Filename of p in a flat repository.
func (r *Repo) flatRel(p *Package) string { return path.Join(r.flatSub, flatPath(p)) }

func flatPath(p *Package) string {
	return fmt.Sprintf("%s_%s_%s.deb", p.Name, noEpoch(p.Version), p.Arch)
}

// BuildSynthetic writes a signed repository of n packages for sync
// benchmarks: suite "synthetic", component main, architecture amd64,
// by-hash, Packages in plain, .gz and .xz. Each pool file is sizeMin to
// sizeMax random bytes, NOT a .deb — apt-get install would reject them —
// but every index lists their true sizes and digests, so a verifying
// mirror accepts them. Package i is named synth<i, 6 digits>, version
// "1.0-1"; sizes are deterministic in i.
func BuildSynthetic(dir string, key *pgp.SigningKey, n, sizeMin, sizeMax int) (*Repo, error) {
	if n < 0 || sizeMin <= 0 || sizeMax < sizeMin {
		return nil, fmt.Errorf("repobuild: synthetic repository: want n >= 0 and 0 < sizeMin <= sizeMax, got %d, %d, %d", n, sizeMin, sizeMax)
	}
	rng := rand.New(rand.NewPCG(uint64(n), 42))
	pkgs := make([]Package, n)
	for i := range pkgs {
		pkgs[i] = Package{
			Name: fmt.Sprintf("synth%06d", i), Version: "1.0-1", Arch: "amd64",
			Size:        sizeMin + rng.IntN(sizeMax-sizeMin+1),
			Description: "synthetic package\nFor gatehouse sync benchmarks only.",
		}
	}
	s := Suite{
		Name: "synthetic", Components: []string{"main"}, Architectures: []string{"amd64"},
		Packages: map[string][]Package{"main": pkgs}, ByHash: true,
		Origin: "gatehouse apttest", Label: "synthetic", synthetic: true,
	}
	r, err := newRepo(dir, key)
	if err != nil {
		return nil, err
	}
	if err := r.Rebuild(s); err != nil {
		return nil, err
	}
	return r, nil
}

// UpdateSynthetic publishes a new state of a BuildSynthetic repository in
// which the first `changed` packages have a new version (and so a new pool
// file); the others are unchanged. Repeated calls keep moving forward.
func (r *Repo) UpdateSynthetic(changed int) error {
	r.mu.Lock()
	if len(r.suites) != 1 || !r.suites[0].synthetic {
		r.mu.Unlock()
		return fmt.Errorf("repobuild: %s was not made by BuildSynthetic", r.Dir)
	}
	s := r.suites[0]
	pkgs := slices.Clone(s.Packages["main"])
	r.mu.Unlock()
	if changed > len(pkgs) {
		changed = len(pkgs)
	}
	for i := range pkgs[:changed] {
		v := pkgs[i].Version
		gen := 0
		if base, g, ok := strings.Cut(v, "+u"); ok {
			fmt.Sscanf(g, "%d", &gen)
			v = base
		}
		pkgs[i].Version = fmt.Sprintf("%s+u%d", v, gen+1)
	}
	s.Packages = map[string][]Package{"main": pkgs}
	s.Date = time.Time{}
	return r.Rebuild(s)
}
