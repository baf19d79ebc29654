package store

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"io/fs"
	"iter"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// ErrWipeProtection is wrapped when GC refuses because it would delete too
// large a share of the pool.
var ErrWipeProtection = errors.New("refusing to delete this much of the pool")

// GCResult reports what GC did (or, when refused, would have done).
type GCResult struct {
	Files int // regular pool files seen, temporary ones excluded
	// Bytes is the total size of the unreferenced ones among them: a
	// full gc counts referenced files from their directory entries
	// without a stat.
	Bytes        int64
	Removed      int // unreferenced files deleted
	RemovedBytes int64
	Missing      int // referenced paths with no pool file (a retained snapshot is broken)
	TempRemoved  int // ".tmp-*" files older than an hour deleted
	// ObjectsRemoved and ObjectBytes count deleted objects that nothing
	// linked any more: what pruned snapshots alone used, and what
	// interrupted syncs downloaded.
	ObjectsRemoved int
	ObjectBytes    int64
}

// staleTemp is how old a ".tmp-*" file must be before GC treats it as left
// behind by a killed writer rather than being written right now.
const staleTemp = time.Hour

// PoolRef names one pool path a snapshot served and the object it was
// (see ObjectKey): a candidate for Collect.
type PoolRef struct {
	Rel, Hash string
}

// Collection is the input of Collect.
type Collection struct {
	// Referenced yields every pool path (relative to the pool, as
	// PoolPath takes it) that a retained snapshot serves from the base
	// layer pool/: the paths its indexes name, less those it overrides
	// (Overridden). All retained snapshots, not only the current one, or a
	// later Rollback would find files missing. The store does not parse
	// indexes, so the caller collects these (call Prune first).
	// An error from it stops Collect before it deletes anything.
	Referenced func(yield func(rel string)) error
	// Candidates, when set, limits the collection to these paths and
	// objects (what the Prune snapshots name): the sync's cleanup, which
	// must cost in proportion to what was pruned, not to the pool. When
	// nil, Collect walks pool/ and objects/ and removes everything
	// unreferenced.
	Candidates func(yield func(PoolRef)) error
	// Prune lists finished snapshots to delete (never the published one),
	// after Candidates are read from them and before files are removed.
	Prune []string
	// MaxDeleteFraction is the wipe protection, 0 < f ≤ 1; 0 means 0.5.
	MaxDeleteFraction float64
}

// GC is Collect of everything: it deletes pool files that no retained
// snapshot references and the objects nothing links any more.
func (s *Store) GC(ctx context.Context, referenced iter.Seq[string], maxDeleteFraction float64) (GCResult, error) {
	return s.Collect(ctx, Collection{MaxDeleteFraction: maxDeleteFraction, Referenced: func(yield func(string)) error {
		for rel := range referenced {
			yield(rel)
		}
		return nil
	}})
}

// refSet is a set of pool paths kept as 64-bit hashes: a million paths fit
// in tens of MB instead of hundreds. A collision can only make a garbage
// path look referenced, so it is kept a while longer; never the reverse.
type refSet struct {
	seed maphash.Seed
	m    map[uint64]struct{}
}

func newRefSet() *refSet { return &refSet{seed: maphash.MakeSeed(), m: map[uint64]struct{}{}} }

func (r *refSet) key(rel string) uint64 { return maphash.String(r.seed, rel) }
func (r *refSet) add(rel string)        { r.m[r.key(rel)] = struct{}{} }
func (r *refSet) has(rel string) bool   { _, ok := r.m[r.key(rel)]; return ok }
func (r *refSet) take(rel string) (ok bool) {
	k := r.key(rel)
	if _, ok = r.m[k]; ok {
		delete(r.m, k)
	}
	return ok
}

// Collect is the one garbage collection of the store, for `mirror gc` (no
// Candidates: walk everything) and for the cleanup after a sync (the
// pruned snapshots' paths as Candidates). It deletes pool/ files that no
// retained snapshot serves — and symlinks or other non-regular files, which
// the store never creates — then every object no pool path or override
// links any more (an object is a hard link target: its link count tells,
// without an index). Directories left empty are removed.
//
// Wipe protection: if the pool deletions would exceed MaxDeleteFraction of
// the pool's files, Collect deletes nothing from pool/ and returns an error
// wrapping ErrWipeProtection with the counts, since an empty or wrong
// reference set (a parsing bug, a broken upstream) must not erase the
// mirror. Objects nothing links and temporary ".tmp-*" files older than an
// hour are removed either way: no snapshot can serve them. Requires the
// lock.
func (s *Store) Collect(ctx context.Context, c Collection) (GCResult, error) {
	var res GCResult
	if err := s.requireLock("gc"); err != nil {
		return res, err
	}
	if err := s.recoverHidden(); err != nil {
		return res, err
	}
	frac := c.MaxDeleteFraction
	if frac == 0 {
		frac = 0.5
	}
	if !(frac > 0 && frac <= 1) {
		return res, fmt.Errorf("store: gc of mirror %s: max delete fraction %v is not in (0, 1]", s.name, frac)
	}
	refs := newRefSet()
	if c.Referenced != nil {
		if err := c.Referenced(refs.add); err != nil {
			return res, fmt.Errorf("store: gc of mirror %s: nothing deleted: %w", s.name, err)
		}
	}
	pool := filepath.Join(s.dir, PoolDir)
	var victims []victim
	var dirs []string
	var objs []string // candidate objects to check once pool/ is done
	var err error
	// What the snapshots to prune override: their objects may lose their
	// last link with them.
	overridden := map[string]struct{}{}
	cur, _ := s.Current()
	for _, id := range c.Prune {
		if id == cur {
			return res, fmt.Errorf("store: gc of mirror %s: will not prune the published snapshot %s", s.name, id)
		}
		o, err := s.Overridden(id)
		if err != nil {
			return res, err
		}
		maps.Copy(overridden, o)
	}
	if c.Candidates == nil {
		victims, dirs, err = s.walkPool(ctx, pool, refs, &res)
		if err != nil {
			return res, err
		}
		res.Missing = len(refs.m)
	} else {
		objs = []string{}
		err := c.Candidates(func(ref PoolRef) {
			_, over := overridden[ref.Rel]
			if over && CheckHash(ref.Hash) == nil {
				objs = append(objs, ref.Hash)
			}
			if refs.has(ref.Rel) {
				return
			}
			p, err := s.PoolPath(ref.Rel)
			if err != nil {
				return // never created by the store; a full gc deals with oddities
			}
			fi, err := os.Lstat(p)
			if err != nil || !fi.Mode().IsRegular() {
				return
			}
			if CheckHash(ref.Hash) == nil {
				objs = append(objs, ref.Hash)
			}
			victims = append(victims, victim{p, fi.Size()})
		})
		if err != nil {
			return res, fmt.Errorf("store: gc of mirror %s: nothing deleted: %w", s.name, err)
		}
		slices.SortFunc(victims, func(a, b victim) int { return strings.Compare(a.path, b.path) })
		victims = slices.CompactFunc(victims, func(a, b victim) bool { return a.path == b.path })
		res.Files = len(refs.m) + len(victims)
	}
	var victimBytes int64
	for _, v := range victims {
		victimBytes += v.size
	}
	if len(victims) > 0 && float64(len(victims)) > frac*float64(res.Files) {
		// Nothing is pruned either: a snapshot pruned without its
		// files would leave pool/ serving what no snapshot names.
		if c.Candidates == nil {
			_ = s.collectObjects(ctx, nil, &res)
		}
		return res, fmt.Errorf("store: gc of mirror %s: %w: %d of %d pool files (%d bytes) are unreferenced, more than the limit of %.0f%% (max_delete_fraction); check the upstream, and if that is expected, raise max_delete_fraction for this run",
			s.name, ErrWipeProtection, len(victims), res.Files, victimBytes, frac*100)
	}
	// From the first prune until the last victim is gone, pool/ holds
	// files no retained snapshot names: hide them from serving, durably,
	// so that a kill in between does not expose them (recoverHidden
	// finishes the job).
	if len(c.Prune) > 0 || len(victims) > 0 {
		err := s.writeHidden(hiddenGC, func(w *bufio.Writer) error {
			for _, id := range c.Prune {
				w.WriteString(hiddenPrune + id + "\n")
			}
			for _, v := range victims {
				rel, err := filepath.Rel(pool, v.path)
				if err != nil {
					return err
				}
				w.WriteString("- " + filepath.ToSlash(rel) + "\n")
			}
			return nil
		})
		if err != nil {
			return res, fmt.Errorf("store: gc of mirror %s: nothing deleted: %w", s.name, err)
		}
	}
	if err := testHook("gc hidden"); err != nil {
		return res, err
	}
	for _, id := range c.Prune {
		if err := s.removeSnapshot(id); err != nil {
			return res, err
		}
	}
	if err := testHook("gc pruned"); err != nil {
		return res, err
	}
	for i, v := range victims {
		if i%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return res, err
			}
		}
		if err := os.Remove(v.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return res, fmt.Errorf("store: gc of mirror %s: %w", s.name, err)
		}
		res.Removed++
		res.RemovedBytes += v.size
		if c.Candidates != nil {
			// Remove directories left empty, up to the pool root.
			for d := filepath.Dir(v.path); d != pool && strings.HasPrefix(d, pool+string(filepath.Separator)); d = filepath.Dir(d) {
				if os.Remove(d) != nil {
					break
				}
				s.realDirs.Delete(d)
			}
		}
	}
	// Deepest first, so parents emptied by their children go too. A
	// non-empty directory fails to be removed, which is what we want.
	slices.Reverse(dirs)
	for _, d := range dirs {
		if os.Remove(d) == nil {
			s.realDirs.Delete(d)
		}
	}
	if err := s.clearHidden(); err != nil {
		return res, err
	}
	if c.Candidates != nil && objs == nil {
		return res, nil
	}
	if err := s.collectObjects(ctx, objs, &res); err != nil {
		return res, err
	}
	return res, nil
}

type victim struct {
	path string
	size int64
}

// walkPool lists the pool files refs does not hold (removing stale
// temporary files on the way), taking the found ones out of refs.
func (s *Store) walkPool(ctx context.Context, pool string, refs *refSet, res *GCResult) (victims []victim, dirs []string, err error) {
	cutoff := s.now().Add(-staleTemp)
	seen := 0
	err = filepath.WalkDir(pool, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if seen++; seen%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		if d.IsDir() {
			if p != pool {
				dirs = append(dirs, p)
			}
			return nil
		}
		// A referenced regular file is only counted: the directory
		// entry says what it is, and a million lstats were half of
		// the time of a gc of a million files.
		rel := filepath.ToSlash(p[len(pool)+1:])
		isTemp := strings.HasPrefix(d.Name(), TempPrefix)
		if d.Type().IsRegular() && !isTemp {
			res.Files++
			if refs.take(rel) {
				return nil
			}
		}
		fi, err := d.Info()
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if isTemp && fi.Mode().IsRegular() {
			if fi.ModTime().Before(cutoff) {
				if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
					return err
				}
				res.TempRemoved++
			}
			return nil
		}
		if fi.Mode().IsRegular() {
			res.Bytes += fi.Size()
		}
		victims = append(victims, victim{p, fi.Size()})
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("store: gc of mirror %s: walk %s: %w", s.name, pool, err)
	}
	return victims, dirs, nil
}

// collectObjects removes objects that nothing links any more: the named
// ones, or with hashes nil, every one under objects/ (and stale temporary
// files there).
func (s *Store) collectObjects(ctx context.Context, hashes []string, res *GCResult) error {
	remove := func(p string, fi fs.FileInfo) error {
		if !fi.Mode().IsRegular() || nlink(fi) != 1 {
			return nil
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("store: gc of mirror %s: %w", s.name, err)
		}
		res.ObjectsRemoved++
		res.ObjectBytes += fi.Size()
		return nil
	}
	if hashes != nil {
		slices.Sort(hashes)
		for i, h := range slices.Compact(hashes) {
			if i%4096 == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			p := s.objectPath(h)
			if fi, err := os.Lstat(p); err == nil {
				if err := remove(p, fi); err != nil {
					return err
				}
			}
		}
		return nil
	}
	return s.walkObjects(ctx, res)
}

// walkObjects is collectObjects of everything under objects/: the
// 256 directories objects/ab/ are read by parallel workers, each entry
// stat'ed relative to its directory (one path element for the kernel to
// resolve, not nine), since a full gc of a million objects is a million
// stats.
func (s *Store) walkObjects(ctx context.Context, res *GCResult) error {
	root := filepath.Join(s.dir, ObjectsDir)
	cutoff := s.now().Add(-staleTemp)
	es, err := os.ReadDir(root)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("store: gc of mirror %s: %w", s.name, err)
	}
	var (
		mu   sync.Mutex
		errs []error
		jobs = make(chan string)
		wg   sync.WaitGroup
	)
	for range min(runtime.GOMAXPROCS(0), 4) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for dir := range jobs {
				var r GCResult
				err := s.collectObjectDir(ctx, dir, cutoff, &r)
				mu.Lock()
				res.ObjectsRemoved += r.ObjectsRemoved
				res.ObjectBytes += r.ObjectBytes
				res.TempRemoved += r.TempRemoved
				if err != nil {
					errs = append(errs, err)
				}
				mu.Unlock()
			}
		}()
	}
	for _, e := range es {
		p := filepath.Join(root, e.Name())
		if e.IsDir() {
			jobs <- p
			continue
		}
		// Not an objects/ab/ directory: a temporary file, or not
		// something the store made.
		fi, err := e.Info()
		if err != nil {
			continue
		}
		if strings.HasPrefix(e.Name(), TempPrefix) {
			if fi.ModTime().Before(cutoff) && os.Remove(p) == nil {
				res.TempRemoved++
			}
			continue
		}
		if os.RemoveAll(p) == nil {
			res.ObjectsRemoved++
		}
	}
	close(jobs)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("store: gc of mirror %s: %w", s.name, err)
	}
	return nil
}

// collectObjectDir removes from one objects/ab/ directory the objects
// nothing links any more, stale temporary files, and what the store
// never makes there.
func (s *Store) collectObjectDir(ctx context.Context, dir string, cutoff time.Time, res *GCResult) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	es, err := f.ReadDir(-1)
	if err != nil {
		return err
	}
	fd := int(f.Fd())
	for i, e := range es {
		if i%4096 == 4095 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		name := e.Name()
		if e.IsDir() {
			if err := os.RemoveAll(filepath.Join(dir, name)); err != nil {
				return err
			}
			res.ObjectsRemoved++
			continue
		}
		var st unix.Stat_t
		if err := unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			if errors.Is(err, unix.ENOENT) {
				continue
			}
			return fmt.Errorf("stat %s: %w", filepath.Join(dir, name), err)
		}
		regular := st.Mode&unix.S_IFMT == unix.S_IFREG
		switch {
		case strings.HasPrefix(name, TempPrefix):
			if time.Unix(st.Mtim.Unix()).Before(cutoff) {
				if err := unix.Unlinkat(fd, name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
					return fmt.Errorf("remove %s: %w", filepath.Join(dir, name), err)
				}
				res.TempRemoved++
			}
		case !regular || CheckHash(name) != nil:
			// Not something the store made: no pool path can link it.
			if err := unix.Unlinkat(fd, name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
				return fmt.Errorf("remove %s: %w", filepath.Join(dir, name), err)
			}
			res.ObjectsRemoved++
		case st.Nlink == 1:
			if err := unix.Unlinkat(fd, name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
				return fmt.Errorf("remove %s: %w", filepath.Join(dir, name), err)
			}
			res.ObjectsRemoved++
			res.ObjectBytes += st.Size
		}
	}
	return nil
}

// PoolStats counts the regular files in the pool and their total size
// (temporary ".tmp-*" files excluded), for status reports.
func (s *Store) PoolStats(ctx context.Context) (files int, bytes int64, err error) {
	pool := filepath.Join(s.dir, PoolDir)
	err = filepath.WalkDir(pool, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if files%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		if !d.Type().IsRegular() || strings.HasPrefix(d.Name(), TempPrefix) {
			return nil
		}
		fi, err := d.Info()
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		files++
		bytes += fi.Size()
		return nil
	})
	if err != nil {
		return 0, 0, fmt.Errorf("store: pool of mirror %s: %w", s.name, err)
	}
	return files, bytes, nil
}
