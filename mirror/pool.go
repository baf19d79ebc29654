package mirror

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sync/errgroup"

	"gatehouse/apt"
	"gatehouse/apt/compress"
	"gatehouse/mirror/fetch"
	"gatehouse/mirror/store"
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

// totals counts the files of ps and their size.
func (ps *poolSet) totals() (int, int64) {
	var b int64
	for _, e := range ps.files {
		b += e.Size
	}
	return len(ps.files), b
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
	return eachPoolEntry(snapDir, suite, ms, 0, func(e poolEntry, where string) error {
		if ps.namesOnly {
			if _, ok := ps.files[e.Filename]; ok {
				return nil
			}
			return ps.add(poolEntry{Filename: strings.Clone(e.Filename)}, where)
		}
		if _, ok := ps.files[e.Filename]; !ok {
			e.Filename, e.SHA256, e.SHA512 = strings.Clone(e.Filename), strings.Clone(e.SHA256), strings.Clone(e.SHA512)
		}
		return ps.add(e, where)
	})
}

// eachPoolEntry calls fn with every pool file the Packages and Sources
// indexes of suite in snapDir name, streaming: the strings of e are only
// valid during the call. limit > 0 refuses an index of more stanzas
// (max_packages).
func eachPoolEntry(snapDir, suite string, ms *manifestSuite, limit int, fn func(e poolEntry, where string) error) error {
	_, err := eachPoolEntryCounted(snapDir, suite, ms, limit, fn)
	return err
}

// eachPoolEntryCounted is eachPoolEntry that also returns the number of
// stanzas (packages, or source packages) of each index it read, keyed by
// the index's path below dists/<suite> without compression suffix (see
// manifestSuite.Counts).
func eachPoolEntryCounted(snapDir, suite string, ms *manifestSuite, limit int, fn func(e poolEntry, where string) error) (map[string]int, error) {
	counts := map[string]int{}
	for _, rel := range parsedIndexes(ms) {
		p := filepath.Join(snapDir, filepath.FromSlash(publishedDir(suite)), filepath.FromSlash(rel))
		where := publishedDir(suite) + "/" + rel
		n, err := readIndex(p, suite, where, limit, fn)
		if err != nil {
			return nil, err
		}
		counts[compress.TrimSuffix(rel)] = n
	}
	return counts, nil
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

// tooManyEntries refuses the index at where for holding more than limit
// stanzas (max_packages). Verbatim and filtered syncs share it, so both
// fail alike (exit 3) before anything is fetched or published.
func tooManyEntries(where string, limit int) error {
	return refused("%s: has more than %d entries (max_packages); the upstream's signed index is refused. If the archive really is that large, raise max_packages for this mirror", where, limit)
}

func readIndex(p, suite, where string, limit int, fn func(poolEntry, string) error) (int, error) {
	rd, err := openIndex(p, where)
	if err != nil {
		return 0, err
	}
	defer rd.Close()
	stanzas := 0
	count := func() error {
		if stanzas++; limit > 0 && stanzas > limit {
			return tooManyEntries(where, limit)
		}
		return nil
	}
	add := func(filename string, size int64, s256, s512 string) error {
		if isFlat(suite) {
			filename = flatPoolKey(filename)
		}
		if _, ok := poolRel(filename); !ok {
			return fmt.Errorf("%s: file %q is not below pool/; gatehouse serves only dists/ and pool/ of an archive", where, filename)
		}
		if err := checkPoolName(filename); err != nil {
			return refuse(where, err)
		}
		return fn(poolEntry{Filename: filename, Suite: suite, Size: size, SHA256: s256, SHA512: s512}, where)
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
				return stanzas, nil
			}
			if err != nil {
				return 0, indexErr(err)
			}
			if err := count(); err != nil {
				return 0, err
			}
			for _, sf := range s.Files {
				fn, err := apt.CleanRepoPath(s.Directory + "/" + sf.Name)
				if err != nil {
					return 0, refuse(where+": source "+s.Name, err)
				}
				if err := add(fn, sf.Size, sf.SHA256, sf.SHA512); err != nil {
					return 0, err
				}
			}
		}
	}
	pr := apt.NewPackagesReader(rd, where)
	for {
		pk, err := pr.Next()
		if err == io.EOF {
			return stanzas, nil
		}
		if err != nil {
			return 0, indexErr(err)
		}
		if err := count(); err != nil {
			return 0, err
		}
		if err := add(pk.Filename, pk.Size, pk.SHA256, pk.SHA512); err != nil {
			return 0, err
		}
	}
}

// checkPoolName refuses a pool path with an element the store uses for
// its own files (store.TempPrefix): such a name could collide with a
// download in progress, and serve hides those names anyway.
func checkPoolName(filename string) error {
	for el := range strings.SplitSeq(filename, "/") {
		if strings.HasPrefix(el, store.TempPrefix) {
			return fmt.Errorf("%w: %q has an element starting with %q, the prefix of the store's temporary files", apt.ErrUnsafePath, filename, store.TempPrefix)
		}
	}
	return nil
}

// key is the store object name of e (store.ObjectKey).
func (e poolEntry) key() string { return store.ObjectKey(e.SHA256, e.SHA512) }

// poolCensus is what the first pass over a verbatim snapshot's indexes
// learns: the distinct pool paths and their total size, and which
// content each path is named with, to refuse indexes that contradict each
// other. It keeps 16 bytes per distinct path (two 64-bit hashes), not the
// entries: the second pass streams the indexes again, unless the paths
// that need work were few enough to keep (changed).
//
// It also knows which paths the published snapshot already served from
// the base layer pool/ with the same content (markPublished, before the
// first pass): those are "unchanged" and cost the second pass nothing,
// not even a stat. This is what makes an incremental sync cost in
// proportion to what changed rather than to the pool: lstat'ing every
// object and pool path of 20,000 unchanged files was most of its CPU.
type poolCensus struct {
	seed maphash.Seed
	// seen maps the hash of a Filename to the hash of its size and
	// content key (low three bits clear) with the census bits below.
	seen  map[uint64]uint64
	files int
	bytes int64
	// unchangedFiles and unchangedBytes count the paths served as they
	// are (censusBase after the first pass).
	unchangedFiles int
	unchangedBytes int64
	// changed holds the entries that need work, in index order, while
	// there are at most maxChanged of them; overflow says there were more
	// (then the second pass streams the indexes again).
	changed  []poolEntry
	overflow bool
}

// Bits of poolCensus.seen values.
const (
	censusDispatched = 1 << iota // the second pass handed the path on
	censusNew                    // the new indexes name the path
	// censusBase: before the first pass sees the path, the published
	// snapshot serves it from pool/ with this content; after, it also
	// has the same content in the new indexes (unchanged).
	censusBase
	censusBits = censusDispatched | censusNew | censusBase
)

// maxChanged bounds poolCensus.changed: an incremental sync of a few
// thousand new files skips the second parse of the indexes, and a full
// sync, which streams them again, holds no more than ~2 MiB of entries.
const maxChanged = 8192

func newPoolCensus() *poolCensus {
	return &poolCensus{seed: maphash.MakeSeed(), seen: map[uint64]uint64{}}
}

func (pc *poolCensus) content(e poolEntry) uint64 {
	var h maphash.Hash
	h.SetSeed(pc.seed)
	h.WriteString(strconv.FormatInt(e.Size, 10))
	h.WriteByte('/')
	h.WriteString(strings.ToLower(e.key()))
	return h.Sum64() &^ censusBits
}

// markPublished records that the published snapshot serves e from the
// base layer (not from its override layer). Call it for every such entry
// before the first add; a path named twice with different content is not
// marked.
func (pc *poolCensus) markPublished(e poolEntry) {
	k := maphash.String(pc.seed, e.Filename)
	v := pc.content(e) | censusBase
	if old, ok := pc.seen[k]; ok && old != v {
		v = 0 // contradictory: never unchanged
	}
	pc.seen[k] = v
}

// add counts e; the same path with other content is refused.
func (pc *poolCensus) add(e poolEntry, where string) error {
	k := maphash.String(pc.seed, e.Filename)
	v := pc.content(e)
	old, ok := pc.seen[k]
	if ok && old&censusNew != 0 {
		if old&^censusBits != v {
			return refused("%s: %s is listed twice with different size or hash; the upstream is inconsistent", where, e.Filename)
		}
		return nil
	}
	nv := v | censusNew
	if ok && old&censusBase != 0 && old&^censusBits == v {
		nv |= censusBase
		pc.unchangedFiles++
		pc.unchangedBytes += e.Size
	} else if !pc.overflow {
		if len(pc.changed) < maxChanged {
			e.Filename, e.SHA256, e.SHA512 = strings.Clone(e.Filename), strings.Clone(e.SHA256), strings.Clone(e.SHA512)
			pc.changed = append(pc.changed, e)
		} else {
			pc.changed, pc.overflow = nil, true
		}
	}
	pc.seen[k] = nv
	pc.files++
	pc.bytes += e.Size
	return nil
}

// Outcomes of poolCensus.claim.
const (
	claimDup       = iota // not the first entry of its path in the second pass
	claimWork             // needs fetching or recording in the snapshot
	claimUnchanged        // the published snapshot serves it as it is
)

// claim classifies e in the second pass.
func (pc *poolCensus) claim(e poolEntry) int {
	k := maphash.String(pc.seed, e.Filename)
	v, ok := pc.seen[k]
	if !ok || v&censusNew == 0 || v&censusDispatched != 0 {
		return claimDup
	}
	pc.seen[k] = v | censusDispatched
	if v&censusBase != 0 {
		return claimUnchanged
	}
	return claimWork
}

// poolSource yields the pool files of a snapshot, each path once.
type poolSource func(fn func(poolEntry) error) error

// setSource yields the entries of ps in path order.
func setSource(ps *poolSet) poolSource {
	return func(fn func(poolEntry) error) error {
		for _, n := range slices.Sorted(maps.Keys(ps.files)) {
			if err := fn(ps.files[n]); err != nil {
				return err
			}
		}
		return nil
	}
}

// checkPoolSize refuses a snapshot whose pool exceeds max_pool_bytes.
func (r *run) checkPoolSize(files int, bytes int64) error {
	if max := int64(r.cfg.MaxPoolBytes); max > 0 && bytes > max {
		return refused("mirror %s: the indexes name %d pool files of %d bytes, more than max_pool_bytes (%d bytes); nothing was fetched or published. If the archive really is that large, raise max_pool_bytes",
			r.cfg.Name, files, bytes, r.cfg.MaxPoolBytes)
	}
	return nil
}

// fetchPool makes every pool file of the snapshot present as a store
// object and tells the snapshot which object it serves at each path
// (store.Snapshot.UsePool). The presence check runs in the workers too: on
// a large pool the path checks and stats are a good part of an
// incremental sync. After the first fatal error no further file is
// started, and nothing is created.
func (r *run) fetchPool(ctx context.Context, sn *store.Snapshot, filesTotal int, bytesTotal int64, src poolSource) error {
	var mu sync.Mutex
	var done, fetched, reused int
	var doneBytes int64
	r.progress(Event{Phase: PhasePool, FilesTotal: filesTotal, BytesTotal: bytesTotal})
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(r.cfg.Concurrency)
	errStop := errors.New("stop")
	srcErr := src(func(e poolEntry) error {
		if gctx.Err() != nil {
			return errStop
		}
		// The entry's strings may be reused by the index reader.
		e.Filename, e.SHA256, e.SHA512 = strings.Clone(e.Filename), strings.Clone(e.SHA256), strings.Clone(e.SHA512)
		g.Go(func() error {
			if gctx.Err() != nil {
				return nil // another file failed: start nothing new
			}
			res, err := r.fetchPoolFile(gctx, sn, e)
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
			ev := Event{Phase: PhasePool, Files: done, FilesTotal: filesTotal, Bytes: doneBytes, BytesTotal: bytesTotal}
			mu.Unlock()
			if ok {
				// Only fetched files are reported; present ones go by
				// faster than anyone can read.
				r.progress(ev)
			}
			return nil
		})
		return nil
	})
	err := g.Wait()
	if srcErr != nil && !errors.Is(srcErr, errStop) {
		err = cmp.Or(err, srcErr)
	}
	if err == nil {
		err = ctx.Err()
	}
	r.reused += reused
	slices.Sort(r.missing)
	r.log.Info("pool files", "fetched", fetched, "present", reused, "missing", len(r.missing), "overrides", sn.Overrides())
	return err
}

// plan fills the Report's Plan from the pool a dry run would publish and
// returns errDryRun, which ends the build with nothing published.
func (r *run) plan(filesTotal int, bytesTotal int64, src poolSource, selected []string) error {
	p := &Plan{PoolFiles: filesTotal, PoolBytes: bytesTotal, Selected: selected}
	err := src(func(e poolEntry) error {
		if ok, err := r.st.HasObject("", e.key(), e.Size); err == nil && ok {
			return nil
		}
		if rel, _ := poolRel(e.Filename); r.st.HasPoolFile(rel, e.Size) {
			return nil // from before objects existed: adopted by the sync
		}
		p.FetchFiles++
		p.FetchBytes += e.Size
		return nil
	})
	if err != nil {
		return err
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

// fetchPoolFile fetches one pool file into the store's objects unless it is
// there already, then records it in the snapshot.
func (r *run) fetchPoolFile(ctx context.Context, sn *store.Snapshot, e poolEntry) (int, error) {
	rel, _ := poolRel(e.Filename)
	h := e.key()
	if store.CheckHash(h) != nil {
		return 0, refused("mirror %s: %s: the index gives no valid SHA-256 or SHA-512; apt refuses such files, and so does the mirror", r.cfg.Name, e.Filename)
	}
	look, err := sn.LookupPool(rel, h, e.Size)
	if err != nil {
		return 0, refuse("mirror "+r.cfg.Name+": "+e.Filename, err)
	}
	res := poolPresent
	if look.Object == nil {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		dest, err := r.st.NewObject(h)
		if err != nil {
			return 0, fmt.Errorf("mirror %s: %w", r.cfg.Name, err)
		}
		// The hash the object is named by, and only that: hashing twice
		// costs CPU the sync needs, and either one alone protects
		// against forgery.
		want := fetch.Want{Size: e.Size}
		if e.SHA256 != "" {
			want.SHA256 = e.SHA256
		} else {
			want.SHA512 = e.SHA512
		}
		src := e.Filename
		if isFlat(e.Suite) {
			src = strings.TrimPrefix(src, "pool/") // see flatPoolKey
		}
		_, err = r.client.Get(ctx, r.url(e.Suite, src), dest, want)
		switch {
		case err == nil:
			res = poolFetched
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
	if err := sn.UsePoolLookup(rel, h, look); err != nil {
		if errors.Is(err, store.ErrPoolConflict) {
			return 0, refused("mirror %s: %s is listed twice with different content; the upstream is inconsistent (%v)", r.cfg.Name, e.Filename, err)
		}
		return 0, fmt.Errorf("mirror %s: %w", r.cfg.Name, err)
	}
	return res, nil
}
