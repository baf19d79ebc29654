// Package store owns the on-disk layout of mirrors under one state directory:
// content-addressed pool objects, the shared pool, immutable snapshots with
// their override layers, the atomically swapped "current" pointer, the
// per-mirror lock, mirror state, and garbage collection. It is the only
// package that creates, links, renames or removes anything there. Others
// get typed writers from it and never a path to write to: NewFile (a pool
// object or a snapshot file, which mirror/fetch and mirror/bundle fill and
// the store names once verified), SubDir (a snapshot directory
// mirror/filter lays out indexes in), Snapshot.WriteFile, LinkInside and
// Link. mirror's TestOnlyStoreChangesTheTree keeps it so.
//
// Layout, for a state directory ROOT and a mirror NAME:
//
//	ROOT/NAME/.lock                 flock held by a running sync; holds "pid N since T"
//	ROOT/NAME/state.json            State: last accepted Release per suite, last sync
//	ROOT/NAME/objects/ab/<hash>     pool file contents, named by the SHA-256 the signed
//	                                index gives (SHA-512 when it gives only that); put
//	                                there only after size and hash were verified; never
//	                                served
//	ROOT/NAME/pool/<path>           base layer: a hard link of an object, made only by
//	                                Commit for a path the committed snapshot names and
//	                                pool/ lacks; never replaced while a retained
//	                                snapshot serves it
//	ROOT/NAME/snapshots/ID/dists/.. one published generation of the dists tree
//	ROOT/NAME/snapshots/ID/pool/<path>  override layer: a hard link of an object, only
//	                                for paths whose content differs from pool/<path>
//	                                (the upstream rebuilt a file under the same name)
//	ROOT/NAME/snapshots/ID.tmp/     a generation being built, or being deleted (never
//	                                served); its .pool-journal lists the paths Commit
//	                                will link into pool/
//	ROOT/NAME/current -> snapshots/ID   relative symlink: the published generation
//	ROOT/NAME/hidden                pool/ paths no published or retained snapshot
//	                                names, while a Commit or a GC is under way or
//	                                after one was killed; never served (HiddenFile)
//
// A snapshot's pool view is its override of a path, else pool/<path>
// (PoolView). Serving maps URL /NAME/dists/... into the snapshot "current"
// resolves to (resolve once per request, see ResolveCurrent) and
// /NAME/pool/... into that snapshot's pool view. A stock web server can do
// the same from plain files (README.md has the nginx configuration).
//
// Why this shape:
//   - Published bytes never change. A sync downloads into objects/, so a
//     failed or killed sync changes nothing served, and the next one
//     resumes: "present" is one lstat of objects/<hash> (the name is the
//     hash, and only verified files get it), with no re-hashing.
//   - pool/<path> "has hash H" iff it is the same inode as objects/H: no
//     index of hashes to keep consistent, no xattrs (tmpfs lacks user
//     xattrs before Linux 6.6).
//   - Publishing costs in proportion to what changed: new paths get one
//     link in pool/, changed ones one override link; unchanged paths cost
//     two lstats and no write. There is no per-snapshot farm of links.
//   - An object's link count says whether anything still uses it, so GC
//     needs no reference index for objects (Collect).
//   - A state directory from before objects existed keeps working: a pool
//     file with no object is hashed once and linked in as its object
//     (HasObject).
//
// Writers put objects in place by rename without fsync; Commit makes
// everything durable with one syncfs(2) of the state file system before the
// atomic rename of the "current" symlink, then fsyncs the mirror directory.
// So after a crash or kill at any point "current" names a complete snapshot
// whose pool view exists. A kill during Commit, after it linked new paths
// into pool/ and before the swap, leaves those paths unreferenced (verified
// bytes no index names): the hidden list written before the links keeps
// serve from offering them, and the next NewSnapshot or Collect removes
// them (recoverHidden).
// This relies on ROOT/NAME being one file system (hard links): do not mount
// the pool or objects separately.
//
// Methods that change the tree (NewSnapshot, Commit, Rollback, Prune, GC,
// Collect, WriteState) require the Store to hold the lock (Lock); reading
// methods do not.
package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Names inside ROOT/NAME. They are part of the on-disk format.
const (
	PoolDir      = "pool"
	SnapshotsDir = "snapshots"
	CurrentLink  = "current"
	StateFile    = "state.json"
	LockFile     = ".lock"
	// TempPrefix starts the name of every named temporary file NewFile
	// leaves beside its destination. GC removes those older than an hour.
	TempPrefix = ".tmp-"
	// FlatDir is the directory of a snapshot that holds a flat
	// repository's Release and indexes at their upstream paths (a snapshot
	// of a dists/ archive has dists/ instead). serve routes a mirror whose
	// current snapshot has it as a flat one.
	FlatDir = "flat"
)

const tmpSuffix = ".tmp"

// ErrNoCurrent is wrapped when a mirror has not been published yet.
var ErrNoCurrent = errors.New("no published snapshot")

// ErrNotLocked is wrapped when a method that changes the tree is called
// without holding the lock.
var ErrNotLocked = errors.New("store is not locked; call Lock first")

// ErrLocked is wrapped by *LockedError.
var ErrLocked = errors.New("mirror is locked by another sync")

// LockedError says who holds a mirror's lock.
type LockedError struct {
	Mirror string
	PID    int       // 0 when the lock file did not say
	Since  time.Time // zero when the lock file did not say
}

// Error reads "sync of mirror NAME already running (pid N since T)".
func (e *LockedError) Error() string {
	who := "another process"
	if e.PID > 0 {
		who = "pid " + strconv.Itoa(e.PID)
	}
	if !e.Since.IsZero() {
		who += " since " + e.Since.UTC().Format(time.RFC3339)
	}
	return fmt.Sprintf("sync of mirror %s already running (%s); wait for it to finish", e.Mirror, who)
}

// Unwrap makes errors.Is(err, ErrLocked) true.
func (e *LockedError) Unwrap() error { return ErrLocked }

// Store is one mirror's directory. It is safe for concurrent use by the
// goroutines of one sync; separate processes are kept apart by Lock.
type Store struct {
	// Now is the clock for snapshot IDs, lock records and temp-file ages.
	// Nil means time.Now.
	Now func() time.Time

	name string
	dir  string // ROOT/NAME

	mu   sync.Mutex
	lock *os.File // non-nil while this Store holds the lock

	// realDirs caches pool directories (absolute paths) that PoolPath
	// found, or MkdirPool made, to be directories and not symlinks. Only
	// this program creates entries in the pool, and never symlinks, so a
	// directory stays one; the cache spares a sync of 20,000 files some
	// 60,000 stat calls.
	realDirs sync.Map
	// dirMu serializes MkdirPool: parallel mkdirs in one parent (pool/main/s/
	// holds thousands of package directories) contend on its lock in the
	// kernel, which costs more CPU than the downloads.
	dirMu sync.Mutex
	// dirMus serialize mkdirCached per parent directory (hashed), for the
	// same reason, without serializing linkBase's workers.
	dirMus [16]sync.Mutex
}

// Open returns the Store for mirror name under root, creating ROOT/NAME,
// its pool and snapshots directories (0755) if needed. name must be a
// single path element of letters, digits, '.', '_' or '-', not starting
// with '.'.
func Open(root, name string) (*Store, error) {
	if err := ValidName(name); err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("store: state directory %q: %w", root, err)
	}
	s := &Store{name: name, dir: filepath.Join(abs, name)}
	for _, d := range []string{s.dir, filepath.Join(s.dir, PoolDir), filepath.Join(s.dir, SnapshotsDir)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("store: create %s: %w", d, err)
		}
	}
	return s, nil
}

// ValidName reports whether name can be a mirror name (a URL path element
// and a directory name).
func ValidName(name string) error {
	if name == "" || len(name) > 128 || name[0] == '.' {
		return fmt.Errorf("store: invalid mirror name %q: must be 1-128 characters, not starting with '.'", name)
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("store: invalid mirror name %q: only letters, digits, '.', '_' and '-' are allowed", name)
		}
	}
	return nil
}

// Name is the mirror name.
func (s *Store) Name() string { return s.name }

// Dir is ROOT/NAME, absolute.
func (s *Store) Dir() string { return s.dir }

func (s *Store) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// Lock takes the mirror's exclusive lock without waiting, records this
// process's pid and the start time in the lock file, and returns the
// function that releases it. If another process (or another Store) holds it,
// the error is a *LockedError naming that holder. The lock dies with the
// process, so a killed sync never leaves a stale lock.
func (s *Store) Lock(ctx context.Context) (unlock func(), err error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lock != nil {
		return nil, fmt.Errorf("store: mirror %s: lock already held by this Store", s.name)
	}
	p := filepath.Join(s.dir, LockFile)
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("store: open lock file %s: %w", p, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		defer f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, parseLockInfo(s.name, f)
		}
		return nil, fmt.Errorf("store: lock %s: %w", p, err)
	}
	info := fmt.Sprintf("pid %d since %s\n", os.Getpid(), s.now().UTC().Format(time.RFC3339))
	if err := f.Truncate(0); err == nil {
		_, err = f.WriteAt([]byte(info), 0)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("store: write lock file %s: %w", p, err)
		}
	}
	s.lock = f
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			_ = f.Truncate(0)
			f.Close() // releases the flock
			s.lock = nil
		})
	}, nil
}

func parseLockInfo(name string, f *os.File) error {
	le := &LockedError{Mirror: name}
	b := make([]byte, 256)
	n, _ := f.ReadAt(b, 0)
	fields := strings.Fields(string(b[:n]))
	if len(fields) >= 2 && fields[0] == "pid" {
		le.PID, _ = strconv.Atoi(fields[1])
	}
	if len(fields) >= 4 && fields[2] == "since" {
		le.Since, _ = time.Parse(time.RFC3339, fields[3])
	}
	return le
}

func (s *Store) requireLock(op string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lock == nil {
		return fmt.Errorf("store: %s of mirror %s: %w", op, s.name, ErrNotLocked)
	}
	return nil
}

// CheckRel validates a slash-separated relative path from untrusted input
// (a Packages Filename, a Release entry): not empty, not absolute, no ".",
// ".." or empty elements, no backslash or NUL. It never rewrites the path,
// so a non-canonical name is refused rather than reinterpreted.
func CheckRel(rel string) error {
	if rel == "" {
		return errors.New("empty path")
	}
	if strings.ContainsAny(rel, "\x00\\") {
		return fmt.Errorf("path %q contains a NUL or backslash", rel)
	}
	if rel[0] == '/' {
		return fmt.Errorf("path %q is absolute", rel)
	}
	for el := range strings.SplitSeq(rel, "/") {
		if el == "" || el == "." || el == ".." {
			return fmt.Errorf("path %q has an empty, '.' or '..' element", rel)
		}
	}
	return nil
}

// noSymlinks fails if any existing element of rel below base is a symlink
// (or an intermediate element is not a directory). The store itself never
// creates symlinks in the pool or in dists, so any one found is foreign.
// realDirs, when not nil, remembers the directories found real (see
// Store.realDirs).
func noSymlinks(base, rel string, realDirs *sync.Map) error {
	_, err := lstatNoSymlinks(base, rel, realDirs)
	return err
}

// lstatNoSymlinks is noSymlinks that also returns the final element's
// FileInfo, nil when it (or a directory above it) does not exist.
func lstatNoSymlinks(base, rel string, realDirs *sync.Map) (fs.FileInfo, error) {
	p := base
	els := strings.Split(rel, "/")
	for i, el := range els {
		p = filepath.Join(p, el)
		last := i == len(els)-1
		if !last && realDirs != nil {
			if _, ok := realDirs.Load(p); ok {
				continue
			}
		}
		fi, err := os.Lstat(p)
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		if fi.Mode()&os.ModeSymlink != 0 {
			return nil, fmt.Errorf("path %q: %s is a symlink", rel, p)
		}
		if last {
			return fi, nil
		}
		if !fi.IsDir() {
			return nil, fmt.Errorf("path %q: %s is not a directory", rel, p)
		}
		if realDirs != nil {
			realDirs.Store(p, struct{}{})
		}
	}
	return nil, nil
}

// PoolPath returns the absolute path for rel inside the pool, where rel is
// relative to the pool directory (a Filename with its leading "pool/"
// removed). rel is validated with CheckRel, and no existing element may be
// a symlink, so the result is inside the pool.
func (s *Store) PoolPath(rel string) (string, error) {
	if err := CheckRel(rel); err != nil {
		return "", fmt.Errorf("store: pool file of mirror %s: %w", s.name, err)
	}
	base := filepath.Join(s.dir, PoolDir)
	if err := noSymlinks(base, rel, &s.realDirs); err != nil {
		return "", fmt.Errorf("store: pool file of mirror %s: %w", s.name, err)
	}
	return filepath.Join(base, filepath.FromSlash(rel)), nil
}

// MkdirPool makes dir, a directory of a path PoolPath or PoolFile
// returned, and its parents, unless this Store already knows it exists.
func (s *Store) MkdirPool(dir string) error {
	if _, ok := s.realDirs.Load(dir); ok {
		return nil
	}
	s.dirMu.Lock()
	defer s.dirMu.Unlock()
	// One mkdir is the common case (the parent exists); MkdirAll stats
	// its way up first.
	err := os.Mkdir(dir, 0o755)
	if errors.Is(err, fs.ErrNotExist) {
		err = os.MkdirAll(dir, 0o755)
	} else if errors.Is(err, fs.ErrExist) {
		if fi, lerr := os.Lstat(dir); lerr == nil && fi.IsDir() {
			err = nil
		}
	}
	if err != nil {
		return fmt.Errorf("store: pool directory of mirror %s: %w", s.name, err)
	}
	s.realDirs.Store(dir, struct{}{})
	return nil
}

// HasPoolFile reports whether rel is a regular file in the pool with the
// given size. Pool content is immutable and was verified before it was
// renamed into place, so size is the cheap check for "already fetched";
// CheckPoolFile re-hashes.
func (s *Store) HasPoolFile(rel string, size int64) bool {
	_, ok, err := s.PoolFile(rel, size)
	return err == nil && ok
}

// PoolFile is PoolPath and HasPoolFile in one pass over the path, for the
// sync's hot loop.
func (s *Store) PoolFile(rel string, size int64) (path string, present bool, err error) {
	if err := CheckRel(rel); err != nil {
		return "", false, fmt.Errorf("store: pool file of mirror %s: %w", s.name, err)
	}
	base := filepath.Join(s.dir, PoolDir)
	fi, err := lstatNoSymlinks(base, rel, &s.realDirs)
	if err != nil {
		return "", false, fmt.Errorf("store: pool file of mirror %s: %w", s.name, err)
	}
	present = fi != nil && fi.Mode().IsRegular() && fi.Size() == size
	return filepath.Join(base, filepath.FromSlash(rel)), present, nil
}

// CheckPoolFile re-reads rel and returns an error unless it is a regular
// file of the given size whose SHA-256 is sha256hex.
func (s *Store) CheckPoolFile(rel string, size int64, sha256hex string) error {
	p, err := s.PoolPath(rel)
	if err != nil {
		return err
	}
	return checkFile(p, size, sha256hex)
}

func checkFile(p string, size int64, sha256hex string) error {
	f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	if !fi.Mode().IsRegular() || fi.Size() != size {
		return fmt.Errorf("store: %s: size %d, expected %d", p, fi.Size(), size)
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return fmt.Errorf("store: read %s: %w", p, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); !strings.EqualFold(got, sha256hex) {
		return fmt.Errorf("store: %s: sha256 %s, expected %s", p, got, sha256hex)
	}
	return nil
}

// ResolveCurrent reads ROOT/NAME/current once and returns the snapshot ID
// and its absolute directory, without opening a Store (it creates nothing).
// A server calls it once per request and then reads only inside dir, so a
// swap during the request cannot mix two snapshots. The error wraps
// ErrNoCurrent when nothing is published.
func ResolveCurrent(root, name string) (id, dir string, err error) {
	if err := ValidName(name); err != nil {
		return "", "", err
	}
	mdir := filepath.Join(root, name)
	target, err := os.Readlink(filepath.Join(mdir, CurrentLink))
	if errors.Is(err, os.ErrNotExist) {
		return "", "", fmt.Errorf("store: mirror %s: %w", name, ErrNoCurrent)
	}
	if err != nil {
		return "", "", fmt.Errorf("store: mirror %s: read %s link: %w", name, CurrentLink, err)
	}
	id, ok := strings.CutPrefix(target, SnapshotsDir+"/")
	if !ok || validID(id) != nil {
		return "", "", fmt.Errorf("store: mirror %s: %s points to %q, not %s/<id>; repair with rollback", name, CurrentLink, target, SnapshotsDir)
	}
	return id, filepath.Join(mdir, SnapshotsDir, id), nil
}

// ResolveSnapshot returns the absolute directory of the finished snapshot
// id of mirror name under root, without opening a Store, for serving a
// retained snapshot by its ID (/NAME/snapshots/ID/). The error wraps
// fs.ErrNotExist when id is not a finished snapshot: an invalid ID, one
// being built or deleted (".tmp"), or one pruned.
func ResolveSnapshot(root, name, id string) (string, error) {
	if err := ValidName(name); err != nil {
		return "", err
	}
	if err := validID(id); err != nil {
		return "", fmt.Errorf("%w: %w", fs.ErrNotExist, err)
	}
	dir := filepath.Join(root, name, SnapshotsDir, id)
	fi, err := os.Lstat(dir)
	if err != nil {
		return "", fmt.Errorf("store: mirror %s: snapshot %s: %w", name, id, err)
	}
	if !fi.IsDir() {
		return "", fmt.Errorf("store: mirror %s: snapshot %s: %w", name, id, fs.ErrNotExist)
	}
	return dir, nil
}

// Current returns the ID of the published snapshot; the error wraps
// ErrNoCurrent when there is none.
func (s *Store) Current() (string, error) {
	id, _, err := ResolveCurrent(filepath.Dir(s.dir), s.name)
	return id, err
}

// SnapshotPath returns the absolute path of rel inside snapshot id, for
// reading an earlier generation (to reuse unchanged index files).
func (s *Store) SnapshotPath(id, rel string) (string, error) {
	if err := validID(id); err != nil {
		return "", err
	}
	if err := CheckRel(rel); err != nil {
		return "", fmt.Errorf("store: snapshot %s: %w", id, err)
	}
	base := filepath.Join(s.dir, SnapshotsDir, id)
	if err := noSymlinks(base, rel, nil); err != nil {
		return "", fmt.Errorf("store: snapshot %s: %w", id, err)
	}
	return filepath.Join(base, filepath.FromSlash(rel)), nil
}

// SnapshotInfo describes one finished snapshot.
type SnapshotInfo struct {
	ID      string
	Dir     string    // absolute
	Created time.Time // directory modification time
	Current bool      // "current" points here
}

// Snapshots lists finished snapshots, oldest first (by ID, which is the
// creation time). Snapshots being built (".tmp") are not listed.
func (s *Store) Snapshots() ([]SnapshotInfo, error) {
	sdir := filepath.Join(s.dir, SnapshotsDir)
	es, err := os.ReadDir(sdir)
	if err != nil {
		return nil, fmt.Errorf("store: list %s: %w", sdir, err)
	}
	cur, err := s.Current()
	if err != nil && !errors.Is(err, ErrNoCurrent) {
		return nil, err
	}
	var out []SnapshotInfo
	for _, e := range es {
		if !e.IsDir() || validID(e.Name()) != nil {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue // removed while listing
		}
		out = append(out, SnapshotInfo{ID: e.Name(), Dir: filepath.Join(sdir, e.Name()), Created: fi.ModTime(), Current: e.Name() == cur})
	}
	slices.SortFunc(out, func(a, b SnapshotInfo) int { return compareIDs(a.ID, b.ID) })
	return out, nil
}

// Rollback makes the existing snapshot id the published one, atomically.
// It is Publish under the name the older callers use.
func (s *Store) Rollback(id string) error { return s.Publish(id) }

// Publish makes the existing finished snapshot id (a staged one, or an
// older one) the published one with the same atomic swap as Commit.
func (s *Store) Publish(id string) error {
	if err := s.requireLock("publish"); err != nil {
		return err
	}
	if err := validID(id); err != nil {
		return err
	}
	if err := s.recoverHidden(); err != nil {
		return err
	}
	fi, err := os.Lstat(filepath.Join(s.dir, SnapshotsDir, id))
	if err != nil || !fi.IsDir() {
		return fmt.Errorf("store: publish mirror %s: no snapshot %q (see mirror list)", s.name, id)
	}
	return s.publish(id)
}

// Prune deletes finished snapshots beyond the newest keep, never the
// published one, and returns the IDs it removed. It deletes no pool file,
// so the files only those snapshots named stay in pool/, served, until a
// GC: mirror prunes through Collection.Prune instead, which hides and
// deletes them in the same step.
func (s *Store) Prune(keep int) ([]string, error) {
	if err := s.requireLock("prune"); err != nil {
		return nil, err
	}
	if keep < 0 {
		return nil, fmt.Errorf("store: prune mirror %s: keep must be ≥ 0, got %d", s.name, keep)
	}
	snaps, err := s.Snapshots()
	if err != nil {
		return nil, err
	}
	var removed []string
	for i, sn := range snaps {
		if sn.Current || i >= len(snaps)-keep {
			continue
		}
		if err := s.removeSnapshot(sn.ID); err != nil {
			return removed, err
		}
		removed = append(removed, sn.ID)
	}
	return removed, nil
}

// removeSnapshot deletes a finished snapshot: first renamed to ID.tmp
// (atomically: it stops being a snapshot), then removed. A kill in between
// leaves an unfinished snapshot, which the next NewSnapshot removes, never
// a listed snapshot with half its files (and no manifest).
func (s *Store) removeSnapshot(id string) error {
	if err := validID(id); err != nil {
		return err
	}
	sdir := filepath.Join(s.dir, SnapshotsDir)
	gone := filepath.Join(sdir, id+tmpSuffix)
	if err := os.RemoveAll(gone); err != nil {
		return fmt.Errorf("store: prune snapshot %s: %w", id, err)
	}
	if err := os.Rename(filepath.Join(sdir, id), gone); err != nil {
		return fmt.Errorf("store: prune snapshot %s: %w", id, err)
	}
	if err := os.RemoveAll(gone); err != nil {
		return fmt.Errorf("store: prune snapshot %s: %w", id, err)
	}
	return nil
}

// publish points "current" at snapshots/id: a new symlink under a temporary
// name is renamed over the old one (rename(2) is atomic, so readers see the
// old or the new target, never none), then the directory is fsynced so the
// swap survives a crash.
func (s *Store) publish(id string) error {
	tmp := filepath.Join(s.dir, CurrentLink+TempPrefix+rand.Text())
	if err := os.Symlink(SnapshotsDir+"/"+id, tmp); err != nil {
		return fmt.Errorf("store: publish %s: %w", id, err)
	}
	if err := os.Rename(tmp, filepath.Join(s.dir, CurrentLink)); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("store: publish %s: %w", id, err)
	}
	if err := syncDir(s.dir); err != nil {
		return fmt.Errorf("store: publish %s: %w", id, err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}

// syncFS flushes every dirty page of the file system holding dir.
func syncFS(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := unix.Syncfs(int(d.Fd())); err != nil {
		return fmt.Errorf("syncfs %s: %w", dir, err)
	}
	return nil
}

// IDs are UTC timestamps "20060102T150405Z", with "-N" appended when two
// snapshots start within one second.
const idLayout = "20060102T150405Z"

func validID(id string) error {
	base, seq, hasSeq := strings.Cut(id, "-")
	if _, err := time.Parse(idLayout, base); err != nil || len(base) != len(idLayout) {
		return fmt.Errorf("store: invalid snapshot id %q", id)
	}
	if hasSeq {
		if n, err := strconv.Atoi(seq); err != nil || n < 2 || strconv.Itoa(n) != seq {
			return fmt.Errorf("store: invalid snapshot id %q", id)
		}
	}
	return nil
}

func compareIDs(a, b string) int {
	ab, as, _ := strings.Cut(a, "-")
	bb, bs, _ := strings.Cut(b, "-")
	if c := strings.Compare(ab, bb); c != 0 {
		return c
	}
	an, _ := strconv.Atoi(as)
	bn, _ := strconv.Atoi(bs)
	return an - bn
}
