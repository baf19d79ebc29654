package mirror

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"golang.org/x/sync/errgroup"

	"gatehouse/apt"
	"gatehouse/apt/compress"
	"gatehouse/mirror/fetch"
)

// maxIndexText bounds the decompressed size of one Packages or Sources
// file. Debian's biggest (main, amd64) is about 50 MiB; the bound only
// stops a decompression bomb, since the compressed bytes are already
// verified against the signed Release.
const maxIndexText = 4 << 30

// poolEntry is one file a Packages or Sources index names.
type poolEntry struct {
	Filename string // relative to the archive root, "pool/..."
	Suite    string // a suite that lists it: its archive root serves it
	Size     int64
	SHA256   string
	SHA512   string
}

// poolSet collects the pool files of a snapshot, keyed by Filename.
type poolSet struct {
	files map[string]poolEntry
	// namesOnly keeps only the Filename (GC needs no more), which saves
	// most of the memory on large archives.
	namesOnly bool
}

func newPoolSet() *poolSet { return &poolSet{files: map[string]poolEntry{}} }

func (ps *poolSet) add(e poolEntry, where string) error {
	if ps.namesOnly {
		if _, ok := ps.files[e.Filename]; !ok {
			ps.files[e.Filename] = poolEntry{Filename: e.Filename}
		}
		return nil
	}
	if old, ok := ps.files[e.Filename]; ok {
		if old.Size != e.Size || (old.SHA256 != "" && e.SHA256 != "" && old.SHA256 != e.SHA256) ||
			(old.SHA512 != "" && e.SHA512 != "" && old.SHA512 != e.SHA512) {
			return refused("%s: %s is listed twice with different size or hash; the upstream is inconsistent", where, e.Filename)
		}
		return nil
	}
	ps.files[e.Filename] = e
	return nil
}

// poolRel returns the path of filename relative to the pool directory.
func poolRel(filename string) (string, bool) {
	return strings.CutPrefix(filename, "pool/")
}

// parsedIndexes picks, for each Packages and Sources index of a suite, the
// one variant cheapest to decode.
func parsedIndexes(ms *manifestSuite) []string {
	best := map[string]string{}
	rank := func(p string) int { return slices.Index(compress.ReadSuffixes, compress.Suffix(p)) }
	for _, f := range ms.Files {
		k := compress.TrimSuffix(f.Path)
		if b := path.Base(k); b != "Packages" && b != "Sources" {
			continue
		}
		if rank(f.Path) < 0 {
			continue
		}
		if cur, ok := best[k]; !ok || rank(f.Path) < rank(cur) {
			best[k] = f.Path
		}
	}
	out := make([]string, 0, len(best))
	for _, p := range best {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

// collectPool adds to ps every pool file named by the Packages and Sources
// indexes of suite in the snapshot directory snapDir. Errors in the entries
// are refusals: the indexes are verified upstream data, so a malformed or
// escaping entry is the upstream's (or an attacker's) doing.
func collectPool(snapDir, suite string, ms *manifestSuite, ps *poolSet) error {
	for _, rel := range parsedIndexes(ms) {
		p := filepath.Join(snapDir, filepath.FromSlash(publishedDir(suite)), filepath.FromSlash(rel))
		where := publishedDir(suite) + "/" + rel
		if err := readIndex(p, suite, where, ps); err != nil {
			return err
		}
	}
	return nil
}

// openIndex opens an index file of a snapshot (where names it in errors),
// decompressed and bounded by maxIndexText. Closing it closes the file.
func openIndex(p, where string) (io.ReadCloser, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("reading index: %w", err)
	}
	rd, err := compress.OpenLimit(f, p, maxIndexText)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	return indexReader{rd, f}, nil
}

type indexReader struct {
	io.ReadCloser
	f *os.File
}

func (r indexReader) Close() error { return errors.Join(r.ReadCloser.Close(), r.f.Close()) }

func readIndex(p, suite, where string, ps *poolSet) error {
	rd, err := openIndex(p, where)
	if err != nil {
		return err
	}
	defer rd.Close()
	add := func(filename string, size int64, s256, s512 string) error {
		if isFlat(suite) {
			filename = flatPoolKey(filename)
		}
		if _, ok := poolRel(filename); !ok {
			return fmt.Errorf("%s: file %q is not below pool/; gatehouse serves only dists/ and pool/ of an archive", where, filename)
		}
		if ps.namesOnly {
			if _, ok := ps.files[filename]; ok {
				return nil
			}
			return ps.add(poolEntry{Filename: strings.Clone(filename)}, where)
		}
		return ps.add(poolEntry{Filename: strings.Clone(filename), Suite: suite, Size: size, SHA256: strings.Clone(s256), SHA512: strings.Clone(s512)}, where)
	}
	indexErr := func(err error) error {
		if errors.Is(err, apt.ErrIndex) {
			return refuse(where, err)
		}
		return fmt.Errorf("%s: %w", where, err)
	}
	if path.Base(compress.TrimSuffix(where)) == "Sources" {
		sr := apt.NewSourcesReader(rd, where)
		for {
			s, err := sr.Next()
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return indexErr(err)
			}
			for _, sf := range s.Files {
				fn, err := apt.CleanRepoPath(s.Directory + "/" + sf.Name)
				if err != nil {
					return refuse(where+": source "+s.Name, err)
				}
				if err := add(fn, sf.Size, sf.SHA256, sf.SHA512); err != nil {
					return err
				}
			}
		}
	}
	pr := apt.NewPackagesReader(rd, where)
	for {
		pk, err := pr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return indexErr(err)
		}
		if err := add(pk.Filename, pk.Size, pk.SHA256, pk.SHA512); err != nil {
			return err
		}
	}
}

// fetchPool downloads every pool file not already present with its size.
// The presence check runs in the workers too: on a large pool the path
// checks and stats are a good part of an incremental sync.
func (r *run) fetchPool(ctx context.Context, ps *poolSet) error {
	names := make([]string, 0, len(ps.files))
	var bytesTotal int64
	for n, e := range ps.files {
		names = append(names, n)
		bytesTotal += e.Size
	}
	slices.Sort(names)
	var mu sync.Mutex
	var done, fetched, reused int
	var doneBytes int64
	r.progress(Event{Phase: PhasePool, FilesTotal: len(names), BytesTotal: bytesTotal})
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(r.cfg.Concurrency)
	for _, n := range names {
		e := ps.files[n]
		g.Go(func() error {
			res, err := r.fetchPoolFile(gctx, e)
			if err != nil {
				return err
			}
			ok := res == poolFetched
			mu.Lock()
			done++
			doneBytes += e.Size
			switch res {
			case poolFetched:
				fetched++
			case poolPresent:
				reused++
			}
			ev := Event{Phase: PhasePool, Files: done, FilesTotal: len(names), Bytes: doneBytes, BytesTotal: bytesTotal}
			mu.Unlock()
			if ok {
				// Only fetched files are reported; present ones go by
				// faster than anyone can read.
				r.progress(ev)
			}
			return nil
		})
	}
	err := g.Wait()
	r.reused += reused
	slices.Sort(r.missing)
	r.log.Info("pool files", "fetched", fetched, "present", reused, "missing", len(r.missing))
	return err
}

// plan fills the Report's Plan from the pool a dry run would publish and
// returns errDryRun, which ends the build with nothing published.
func (r *run) plan(ps *poolSet, selected []string) error {
	p := &Plan{PoolFiles: len(ps.files), Selected: selected}
	for _, e := range ps.files {
		p.PoolBytes += e.Size
		rel, _ := poolRel(e.Filename)
		if r.st.HasPoolFile(rel, e.Size) {
			continue
		}
		p.FetchFiles++
		p.FetchBytes += e.Size
	}
	r.rep.Plan = p
	return errDryRun
}

// Outcomes of fetchPoolFile.
const (
	poolPresent = iota
	poolFetched
	poolMissing
)

// fetchPoolFile fetches one pool file unless it is present with its size.
func (r *run) fetchPoolFile(ctx context.Context, e poolEntry) (int, error) {
	rel, _ := poolRel(e.Filename)
	dest, present, err := r.st.PoolFile(rel, e.Size)
	if err != nil {
		return 0, refuse("mirror "+r.cfg.Name+": "+e.Filename, err)
	}
	if present {
		return poolPresent, nil
	}
	if err := r.st.MkdirPool(filepath.Dir(dest)); err != nil {
		return 0, fmt.Errorf("mirror %s: %w", r.cfg.Name, err)
	}
	want := fetch.Want{Size: e.Size}
	// The strongest hash only: hashing twice costs CPU the sync needs,
	// and either one alone protects against forgery.
	if e.SHA512 != "" {
		want.SHA512 = e.SHA512
	} else {
		want.SHA256 = e.SHA256
	}
	src := e.Filename
	if isFlat(e.Suite) {
		src = strings.TrimPrefix(src, "pool/") // see flatPoolKey
	}
	_, err = r.client.Get(ctx, r.url(e.Suite, src), dest, want)
	switch {
	case err == nil:
		return poolFetched, nil
	case errors.Is(err, fetch.ErrNotFound) && r.cfg.TolerateMissing:
		r.progMu.Lock()
		r.missing = append(r.missing, e.Filename)
		r.progMu.Unlock()
		r.log.Warn("pool file missing upstream; tolerated by configuration", "file", e.Filename)
		return poolMissing, nil
	case errors.Is(err, fetch.ErrNotFound):
		return 0, fmt.Errorf("mirror %s: %w (an index lists a file upstream does not have; retry later, or set tolerate_missing = true)", r.cfg.Name, err)
	default:
		return 0, fmt.Errorf("mirror %s: %w", r.cfg.Name, wrapFetch(err))
	}
}
