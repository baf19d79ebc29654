package store

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// HiddenFile (ROOT/NAME/hidden) lists pool/ paths that exist but that no
// published or retained snapshot names, during the two operations that
// make such paths: a Commit between linking its new paths into pool/ and
// the swap of "current" ("commit ID" first line), and a Collect between
// pruning snapshots and deleting the pool files only they named ("gc").
// Serving refuses them (Hidden) while the file exists, so a sync killed
// in the middle of its Commit, or a GC killed in the middle, never makes
// those files downloadable; the next NewSnapshot or Collect finishes the
// job (recoverHidden, also run by Rollback, so that no rollback lands on a
// snapshot a killed GC was pruning) and removes the file. A commit whose snapshot is
// "current" hides nothing: it was published before the file went.
//
// Then lines "HASH REL" (a commit's journal) or "- REL" (a GC's victims)
// and "prune ID" (a GC's pruned snapshots).
//
// Why a file rather than a check of every request against the snapshots'
// indexes: serving then costs one lstat per pool request (no file, the
// usual case) whatever the size of the pool, and the file is as large as
// what one sync or GC changes.
const HiddenFile = "hidden"

const (
	hiddenCommit = "commit "
	hiddenGC     = "gc"
	hiddenPrune  = "prune "
)

// writeHidden writes the hidden list durably (file and directory fsynced)
// before the operation it covers touches pool/: after a crash the list
// must be there whenever its links are.
func (s *Store) writeHidden(head string, lines func(w *bufio.Writer) error) error {
	tmp := filepath.Join(s.dir, HiddenFile+TempPrefix)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|unix.O_NOFOLLOW, 0o644)
	if err != nil {
		return fmt.Errorf("store: %s: %w", HiddenFile, err)
	}
	w := bufio.NewWriterSize(f, 64<<10)
	w.WriteString(head)
	w.WriteByte('\n')
	err = lines(w)
	if err == nil {
		err = w.Flush()
	}
	if err == nil {
		err = f.Sync()
	}
	err = errors.Join(err, f.Close())
	if err == nil {
		err = os.Rename(tmp, filepath.Join(s.dir, HiddenFile))
	}
	if err == nil {
		err = syncDir(s.dir)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("store: %s: %w", HiddenFile, err)
	}
	return nil
}

// clearHidden removes the hidden list once what it covered is done. No
// fsync: a list that comes back after a crash is recovered harmlessly.
func (s *Store) clearHidden() error {
	if err := os.Remove(filepath.Join(s.dir, HiddenFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("store: %s: %w", HiddenFile, err)
	}
	return nil
}

// hiddenList is a parsed hidden file.
type hiddenList struct {
	commit string // snapshot ID of a commit; "" for a GC
	paths  map[string]string
	prune  []string
}

func readHidden(p string) (*hiddenList, error) {
	f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return parseHidden(f)
}

func parseHidden(r io.Reader) (*hiddenList, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	if !sc.Scan() {
		return nil, fmt.Errorf("%s is empty", HiddenFile)
	}
	l := &hiddenList{paths: map[string]string{}}
	switch head := sc.Text(); {
	case strings.HasPrefix(head, hiddenCommit) && validID(strings.TrimPrefix(head, hiddenCommit)) == nil:
		l.commit = strings.TrimPrefix(head, hiddenCommit)
	case head == hiddenGC:
	default:
		return nil, fmt.Errorf("%s: bad first line", HiddenFile)
	}
	for sc.Scan() {
		a, b, ok := strings.Cut(sc.Text(), " ")
		switch {
		case ok && a == strings.TrimSpace(hiddenPrune) && validID(b) == nil:
			l.prune = append(l.prune, b)
		case ok && CheckRel(b) == nil && (a == "-" || CheckHash(a) == nil):
			l.paths[b] = a
		default:
			return nil, fmt.Errorf("%s: damaged line", HiddenFile)
		}
	}
	return l, sc.Err()
}

// recoverHidden finishes what a killed Commit or Collect left hidden:
// an unpublished commit's new pool paths (and the finished but never
// published snapshot, if the kill came after its rename) are removed; a
// GC's pruned snapshots and victims are removed. Requires the lock.
func (s *Store) recoverHidden() error {
	l, err := readHidden(filepath.Join(s.dir, HiddenFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("store: mirror %s: %w; remove it and run `gatehouse mirror gc`", s.name, err)
	}
	cur, _ := s.Current()
	if l.commit != "" && l.commit == cur {
		return s.clearHidden() // published: everything it hid is named
	}
	if l.commit != "" {
		if _, err := os.Lstat(filepath.Join(s.dir, SnapshotsDir, l.commit)); err == nil {
			if err := s.removeSnapshot(l.commit); err != nil {
				return err
			}
		}
	}
	if slices.Contains(l.prune, cur) {
		// Published again since (cannot happen through Rollback, which
		// recovers first): its files are named; a full GC sorts out
		// the rest.
		return s.clearHidden()
	}
	for _, id := range l.prune {
		if _, err := os.Lstat(filepath.Join(s.dir, SnapshotsDir, id)); err == nil {
			if err := s.removeSnapshot(id); err != nil {
				return err
			}
		}
	}
	pool := filepath.Join(s.dir, PoolDir)
	for rel, h := range l.paths {
		p := filepath.Join(pool, filepath.FromSlash(rel))
		if h != "-" {
			// A commit's path: remove it only if it is still the
			// link the commit made.
			ofi, oerr := os.Lstat(s.objectPath(h))
			pfi, perr := os.Lstat(p)
			if oerr != nil || perr != nil || !os.SameFile(ofi, pfi) {
				continue
			}
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("store: mirror %s: recovering %s: %w", s.name, HiddenFile, err)
		}
	}
	return s.clearHidden()
}

// Hidden reports whether the pool path rel (relative to pool/) of mirror
// name under root must not be served: it is listed in the mirror's hidden
// file (see HiddenFile) and the snapshot current, whose ID the caller
// resolved, does not name it. Without a hidden file (the usual case) it
// costs one lstat. The parsed file is cached by identity and time in c,
// which callers keep for as long as they serve (one per handler).
func Hidden(c *HiddenCache, root, name, current, rel string) bool {
	p := filepath.Join(root, name, HiddenFile)
	fi, err := os.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return false
	}
	if err != nil || !fi.Mode().IsRegular() {
		return true // cannot tell: refuse, a retry later finds out
	}
	l := c.get(p, fi)
	if l == nil {
		return true
	}
	if l.commit != "" && l.commit == current {
		return false
	}
	_, ok := l.paths[rel]
	return ok
}

// HiddenCache keeps parsed hidden files for Hidden. The zero value is
// ready; it is safe for concurrent use.
type HiddenCache struct {
	mu sync.Mutex
	m  map[string]hiddenEntry
}

type hiddenEntry struct {
	fi fs.FileInfo
	l  *hiddenList
}

func (c *HiddenCache) get(p string, fi fs.FileInfo) *hiddenList {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[p]; ok && os.SameFile(e.fi, fi) && e.fi.ModTime().Equal(fi.ModTime()) && e.fi.Size() == fi.Size() {
		return e.l
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return nil
	}
	l, err := parseHidden(bytes.NewReader(b))
	if err != nil {
		return nil
	}
	if c.m == nil {
		c.m = map[string]hiddenEntry{}
	}
	c.m[p] = hiddenEntry{fi, l}
	return l
}

// testHookFn, set only by tests (export_test.go), stops Commit or Collect
// at a named stage, leaving the tree as a kill there would.
var testHookFn func(stage string) error

func testHook(stage string) error {
	if testHookFn == nil {
		return nil
	}
	return testHookFn(stage)
}
