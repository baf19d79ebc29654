package store

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Snapshot is a generation of the dists tree being built. Write files at the
// paths Path returns, then Commit to publish it or Abort to drop it. Nothing
// under a Snapshot is visible to clients before Commit. Build one Snapshot
// at a time per mirror: NewSnapshot removes unfinished ones.
type Snapshot struct {
	s   *Store
	id  string
	tmp string // ROOT/NAME/snapshots/ID.tmp

	// empty: objects/ and pool/ held nothing when the snapshot was
	// started, so no object and no pool path exists but those this
	// snapshot's own writers add (see LookupPool).
	empty bool

	mu        sync.Mutex
	done      bool
	overrides int
	jf        *os.File      // the journal of new base-layer paths, see UsePool
	jw        *bufio.Writer // buffers jf
}

// NewSnapshot creates an empty snapshot directory snapshots/ID.tmp, where ID
// is the current UTC time (see Snapshots for ordering). It first removes
// what interrupted runs left behind: earlier ".tmp" snapshots and stray
// temporary "current" links. Requires the lock.
func (s *Store) NewSnapshot() (*Snapshot, error) {
	if err := s.requireLock("new snapshot"); err != nil {
		return nil, err
	}
	if err := s.cleanInterrupted(); err != nil {
		return nil, err
	}
	if err := s.recoverHidden(); err != nil {
		return nil, err
	}
	sdir := filepath.Join(s.dir, SnapshotsDir)
	base := s.now().UTC().Format(idLayout)
	// A new ID must sort after every existing one (finished, or being
	// built), never reuse a pruned ID within the same second, and survive a
	// clock step backwards: Prune and Rollback("") rely on the order.
	latest := ""
	entries, err := os.ReadDir(sdir)
	if err != nil {
		return nil, fmt.Errorf("store: new snapshot of mirror %s: %w", s.name, err)
	}
	for _, e := range entries {
		id := strings.TrimSuffix(e.Name(), tmpSuffix)
		if validID(id) == nil && (latest == "" || compareIDs(id, latest) > 0) {
			latest = id
		}
	}
	first := 1
	if latest != "" {
		lb, ls, _ := strings.Cut(latest, "-")
		if lb >= base {
			base = lb
			first, _ = strconv.Atoi(ls)
			first = max(first, 1) + 1
		}
	}
	for seq := first; seq < first+1000; seq++ {
		id := base
		if seq > 1 {
			id += "-" + strconv.Itoa(seq)
		}
		if _, err := os.Lstat(filepath.Join(sdir, id)); err == nil {
			continue
		}
		tmp := filepath.Join(sdir, id+tmpSuffix)
		if err := os.Mkdir(tmp, 0o755); err != nil {
			if errors.Is(err, os.ErrExist) {
				continue
			}
			return nil, fmt.Errorf("store: new snapshot of mirror %s: %w", s.name, err)
		}
		empty := dirEmpty(filepath.Join(s.dir, ObjectsDir)) && dirEmpty(filepath.Join(s.dir, PoolDir))
		return &Snapshot{s: s, id: id, tmp: tmp, empty: empty}, nil
	}
	return nil, fmt.Errorf("store: new snapshot of mirror %s: too many snapshots named %s-*", s.name, base)
}

// dirEmpty reports whether dir is missing or has no entries.
func dirEmpty(dir string) bool {
	f, err := os.Open(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return true
	}
	if err != nil {
		return false
	}
	defer f.Close()
	names, err := f.Readdirnames(1)
	return len(names) == 0 && errors.Is(err, io.EOF)
}

func (s *Store) cleanInterrupted() error {
	sdir := filepath.Join(s.dir, SnapshotsDir)
	es, err := os.ReadDir(sdir)
	if err != nil {
		return fmt.Errorf("store: list %s: %w", sdir, err)
	}
	for _, e := range es {
		if id, ok := strings.CutSuffix(e.Name(), tmpSuffix); ok && validID(id) == nil {
			if err := os.RemoveAll(filepath.Join(sdir, e.Name())); err != nil {
				return fmt.Errorf("store: remove interrupted snapshot: %w", err)
			}
		}
	}
	es, err = os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("store: list %s: %w", s.dir, err)
	}
	for _, e := range es {
		if strings.HasPrefix(e.Name(), CurrentLink+TempPrefix) {
			os.Remove(filepath.Join(s.dir, e.Name()))
		}
	}
	return nil
}

// ID is the name the snapshot gets on Commit.
func (sn *Snapshot) ID() string { return sn.id }

// Dir is the absolute directory being built (it ends in ".tmp" until Commit).
func (sn *Snapshot) Dir() string { return sn.tmp }

// Path returns where to write rel (slash-separated, relative to the archive
// root, e.g. "dists/stable/InRelease") in this snapshot. rel is validated
// with CheckRel and must not pass through a symlink. Parent directories are
// not created (NewFile's Create, WriteFile and the other writers do).
func (sn *Snapshot) Path(rel string) (string, error) {
	if err := CheckRel(rel); err != nil {
		return "", fmt.Errorf("store: snapshot %s: %w", sn.id, err)
	}
	if err := noSymlinks(sn.tmp, rel, nil); err != nil {
		return "", fmt.Errorf("store: snapshot %s: %w", sn.id, err)
	}
	return filepath.Join(sn.tmp, filepath.FromSlash(rel)), nil
}

// Link hard-links rel from the finished snapshot fromID into this one (same
// relative path), creating parent directories. This carries unchanged index
// files and earlier by-hash generations forward without copying; both
// snapshots then share one immutable inode, which is safe because nothing
// rewrites a file in place.
func (sn *Snapshot) Link(fromID, rel string) error {
	src, err := sn.s.SnapshotPath(fromID, rel)
	if err != nil {
		return err
	}
	dst, err := sn.Path(rel)
	if err != nil {
		return err
	}
	fi, err := os.Lstat(src)
	if err != nil {
		return fmt.Errorf("store: link from snapshot %s: %w", fromID, err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("store: link from snapshot %s: %s is not a regular file", fromID, src)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return fmt.Errorf("store: snapshot %s: %w", sn.id, err)
	}
	if err := os.Link(src, dst); err != nil {
		return fmt.Errorf("store: snapshot %s: link %s: %w", sn.id, rel, err)
	}
	return nil
}

// Commit publishes the snapshot: link the new pool paths it names into the
// base layer (see UsePool), rename ID.tmp to ID, syncfs(2) the state
// file system (making this snapshot and every pool file written since the
// last sync durable at once), then atomically repoint "current" and fsync
// the mirror directory. If Commit fails or the process dies before the
// symlink rename, "current" still names the previous snapshot. Requires the
// lock. The Snapshot cannot be used afterwards.
func (sn *Snapshot) Commit(ctx context.Context) (string, error) {
	return sn.commit(ctx, true)
}

// Stage is Commit without the last step: the snapshot becomes a finished,
// durable one (listed by Snapshots, its pool view complete, servable by
// ID) while "current" keeps naming the published one. Store.Publish makes
// it live later. This is staged publishing: canary hosts test a snapshot
// before the fleet gets it.
func (sn *Snapshot) Stage(ctx context.Context) (string, error) {
	return sn.commit(ctx, false)
}

func (sn *Snapshot) commit(ctx context.Context, publish bool) (string, error) {
	sn.mu.Lock()
	defer sn.mu.Unlock()
	if sn.done {
		return "", fmt.Errorf("store: snapshot %s already committed or aborted", sn.id)
	}
	if err := sn.s.requireLock("commit"); err != nil {
		return "", err
	}
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("store: commit snapshot %s: %w", sn.id, err)
	}
	if err := sn.linkBase(); err != nil {
		return "", fmt.Errorf("store: commit snapshot %s: %w", sn.id, err)
	}
	if err := testHook("commit linked"); err != nil {
		return "", err
	}
	final := filepath.Join(sn.s.dir, SnapshotsDir, sn.id)
	if err := os.Rename(sn.tmp, final); err != nil {
		return "", fmt.Errorf("store: commit snapshot %s: %w", sn.id, err)
	}
	sn.done = true
	if err := testHook("commit renamed"); err != nil {
		return "", err
	}
	if err := syncFS(sn.s.dir); err != nil {
		return "", fmt.Errorf("store: commit snapshot %s: %w", sn.id, err)
	}
	if !publish {
		// Staged: a finished, retained snapshot names its files, so the
		// list that hid them while the commit could still be undone goes.
		// Left in place, the next recovery would take the staged snapshot
		// for an interrupted commit and remove it.
		if err := sn.s.clearHidden(); err != nil {
			return "", fmt.Errorf("store: commit snapshot %s: %w", sn.id, err)
		}
		return sn.id, nil
	}
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("store: commit snapshot %s: not published: %w", sn.id, err)
	}
	if err := sn.s.publish(sn.id); err != nil {
		return "", err
	}
	// A failure to remove the list is harmless: serving hides nothing of
	// the current snapshot's, and the next sync removes it.
	_ = sn.s.clearHidden()
	return sn.id, nil
}

// Abort removes the unfinished snapshot. It is a no-op after Commit or an
// earlier Abort, so it is safe to defer.
func (sn *Snapshot) Abort() error {
	sn.mu.Lock()
	defer sn.mu.Unlock()
	if sn.done {
		return nil
	}
	sn.done = true
	_ = sn.closeJournal()
	if err := os.RemoveAll(sn.tmp); err != nil {
		return fmt.Errorf("store: abort snapshot %s: %w", sn.id, err)
	}
	return nil
}

// WriteFile writes b as the file rel of this snapshot (creating its
// directories), with modification time mtime unless that is zero. No
// fsync: Commit makes the whole snapshot durable with one syncfs.
func (sn *Snapshot) WriteFile(rel string, b []byte, mtime time.Time) error {
	p, err := sn.dest(rel)
	if err != nil {
		return err
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		return fmt.Errorf("store: snapshot %s: %w", sn.id, err)
	}
	if mtime.IsZero() {
		return nil
	}
	return sn.SetTime(rel, mtime)
}

// dest returns the path of the file rel of this snapshot, creating its
// directory.
func (sn *Snapshot) dest(rel string) (string, error) {
	p, err := sn.Path(rel)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return "", fmt.Errorf("store: snapshot %s: %w", sn.id, err)
	}
	return p, nil
}

// SetTime sets the modification time of the file rel of this snapshot
// (what HTTP Last-Modified reports).
func (sn *Snapshot) SetTime(rel string, t time.Time) error {
	p, err := sn.Path(rel)
	if err != nil {
		return err
	}
	if err := os.Chtimes(p, t, t); err != nil {
		return fmt.Errorf("store: snapshot %s: %w", sn.id, err)
	}
	return nil
}

// LinkInside makes rel another name of the file target, both in this
// snapshot (a by-hash name of an index), creating directories; an existing
// rel is kept.
func (sn *Snapshot) LinkInside(target, rel string) error {
	src, err := sn.Path(target)
	if err != nil {
		return err
	}
	dst, err := sn.dest(rel)
	if err != nil {
		return err
	}
	if err := os.Link(src, dst); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("store: snapshot %s: link %s: %w", sn.id, rel, err)
	}
	return nil
}

// Remove deletes the file rel of this snapshot; a missing one is fine.
func (sn *Snapshot) Remove(rel string) error {
	p, err := sn.Path(rel)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("store: snapshot %s: %w", sn.id, err)
	}
	return nil
}

// SubDir is a directory of a snapshot being built, for a writer that lays
// out a tree of files there (mirror/filter's index writers, as
// filter.Dir): it names files relative to the directory and never learns
// a path of the store's tree.
type SubDir struct {
	sn  *Snapshot
	rel string
}

// Sub returns the directory rel of this snapshot; Create makes it as
// needed.
func (sn *Snapshot) Sub(rel string) *SubDir { return &SubDir{sn: sn, rel: rel} }

// Create creates the new file rel (slash-separated, relative to the
// directory) and its directories, mode 0644; an existing file is an error.
// No fsync: Commit makes the whole snapshot durable.
func (d *SubDir) Create(rel string) (io.WriteCloser, error) {
	p, err := d.sn.dest(path.Join(d.rel, rel))
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, fmt.Errorf("store: snapshot %s: %w", d.sn.id, err)
	}
	return f, nil
}

// Link makes rel another name of the file target, both relative to the
// directory (a by-hash name); an existing rel is kept.
func (d *SubDir) Link(target, rel string) error {
	return d.sn.LinkInside(path.Join(d.rel, target), path.Join(d.rel, rel))
}

// TouchTree sets the modification time of every regular file below the
// directory rel of this snapshot.
func (sn *Snapshot) TouchTree(rel string, t time.Time) error {
	dir, err := sn.Path(rel)
	if err != nil {
		return err
	}
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		return os.Chtimes(p, t, t)
	})
}
