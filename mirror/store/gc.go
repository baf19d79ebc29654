package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"iter"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// ErrWipeProtection is wrapped when GC refuses because it would delete too
// large a share of the pool.
var ErrWipeProtection = errors.New("refusing to delete this much of the pool")

// GCResult reports what GC did (or, when refused, would have done).
type GCResult struct {
	Files        int   // regular pool files seen, temporary ones excluded
	Bytes        int64 // their total size
	Removed      int   // unreferenced files deleted
	RemovedBytes int64
	Missing      int // referenced paths with no pool file (a retained snapshot is broken)
	TempRemoved  int // ".tmp-*" files older than an hour deleted
}

// staleTemp is how old a ".tmp-*" file must be before GC treats it as left
// behind by a killed writer rather than being written right now.
const staleTemp = time.Hour

// GC deletes pool files that no retained snapshot references. referenced
// yields every pool path (relative to the pool, as PoolPath takes it) named
// by any snapshot that Snapshots lists — all of them, not only the current
// one, or a later Rollback would find files missing. The store does not
// parse indexes, so the caller collects these (call Prune first to shrink
// the set). Anything else in the pool — unreferenced files,
// and symlinks or other non-regular files, which the store never creates —
// is deleted, and directories left empty are removed.
//
// Wipe protection: if the deletions would exceed maxDeleteFraction of the
// pool's files (0 < f ≤ 1; 0 means 0.5), GC deletes nothing and returns an
// error wrapping ErrWipeProtection with the counts, since an empty or wrong
// reference set (a parsing bug, a broken upstream) must not erase the
// mirror. Temporary ".tmp-*" files older than an hour are removed either
// way. Requires the lock.
func (s *Store) GC(ctx context.Context, referenced iter.Seq[string], maxDeleteFraction float64) (GCResult, error) {
	var res GCResult
	if err := s.requireLock("gc"); err != nil {
		return res, err
	}
	if maxDeleteFraction == 0 {
		maxDeleteFraction = 0.5
	}
	if !(maxDeleteFraction > 0 && maxDeleteFraction <= 1) {
		return res, fmt.Errorf("store: gc of mirror %s: max delete fraction %v is not in (0, 1]", s.name, maxDeleteFraction)
	}
	refs := make(map[string]struct{})
	for rel := range referenced {
		refs[rel] = struct{}{}
	}
	pool := filepath.Join(s.dir, PoolDir)
	type victim struct {
		path string
		size int64
	}
	var victims []victim
	var dirs []string
	cutoff := s.now().Add(-staleTemp)
	seen := 0
	err := filepath.WalkDir(pool, func(p string, d fs.DirEntry, err error) error {
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
		fi, err := d.Info()
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if strings.HasPrefix(d.Name(), TempPrefix) && fi.Mode().IsRegular() {
			if fi.ModTime().Before(cutoff) {
				if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
					return err
				}
				res.TempRemoved++
			}
			return nil
		}
		rel, err := filepath.Rel(pool, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if fi.Mode().IsRegular() {
			res.Files++
			res.Bytes += fi.Size()
			if _, ok := refs[rel]; ok {
				delete(refs, rel)
				return nil
			}
		}
		victims = append(victims, victim{p, fi.Size()})
		return nil
	})
	if err != nil {
		return res, fmt.Errorf("store: gc of mirror %s: walk %s: %w", s.name, pool, err)
	}
	res.Missing = len(refs)
	var victimBytes int64
	for _, v := range victims {
		victimBytes += v.size
	}
	if len(victims) > 0 && float64(len(victims)) > maxDeleteFraction*float64(res.Files) {
		return res, fmt.Errorf("store: gc of mirror %s: %w: %d of %d pool files (%d of %d bytes) are unreferenced, more than the limit of %.0f%%; if that is expected, raise max_delete_fraction for this run",
			s.name, ErrWipeProtection, len(victims), res.Files, victimBytes, res.Bytes, maxDeleteFraction*100)
	}
	for _, v := range victims {
		if err := os.Remove(v.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return res, fmt.Errorf("store: gc of mirror %s: %w", s.name, err)
		}
		res.Removed++
		res.RemovedBytes += v.size
	}
	// Deepest first, so parents emptied by their children go too. A
	// non-empty directory fails to be removed, which is what we want.
	slices.Reverse(dirs)
	for _, d := range dirs {
		_ = os.Remove(d)
	}
	return res, nil
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
