package store

import (
	"bufio"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"hash/fnv"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// ObjectsDir holds the content-addressed pool objects of a mirror (see the
// package doc). It is part of the on-disk format.
const ObjectsDir = "objects"

// journalFile, inside a snapshot being built, lists the pool paths its
// Commit links into the base layer ("HASH REL" lines). It lives on disk, not
// in memory, so a sync's memory does not grow with the number of new pool
// paths; Commit removes it before the snapshot is renamed into place.
const journalFile = ".pool-journal"

// ErrPoolConflict is wrapped when one snapshot names a pool path with two
// different contents: the signed indexes contradict each other.
var ErrPoolConflict = errors.New("pool path named with two different contents")

// CheckHash validates an object name: a lowercase hex SHA-256 (64 digits)
// or SHA-512 (128 digits).
func CheckHash(h string) error {
	if len(h) != 2*sha256.Size && len(h) != 2*sha512.Size {
		return fmt.Errorf("store: object name %q is not a SHA-256 or SHA-512 hex digest", h)
	}
	for i := 0; i < len(h); i++ {
		if c := h[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return fmt.Errorf("store: object name %q is not lowercase hex", h)
		}
	}
	return nil
}

// ObjectKey is the name under which a pool file with these index hashes is
// stored: the SHA-256 when the index gives one, else the SHA-512,
// lowercased. "" when it gives neither.
func ObjectKey(sha256hex, sha512hex string) string {
	if sha256hex != "" {
		return strings.ToLower(sha256hex)
	}
	return strings.ToLower(sha512hex)
}

func (s *Store) objectPath(h string) string {
	return filepath.Join(s.dir, ObjectsDir, h[:2], h)
}

// objectDest returns the path of object h, creating its directory.
func (s *Store) objectDest(h string) (string, error) {
	if err := CheckHash(h); err != nil {
		return "", err
	}
	p := s.objectPath(h)
	if err := s.mkdirCached(filepath.Dir(p)); err != nil {
		return "", fmt.Errorf("store: objects of mirror %s: %w", s.name, err)
	}
	return p, nil
}

// HasObject reports whether object h is stored with the given size: one
// lstat, no hashing (the name is the hash, and only verified files are
// renamed onto it).
//
// Migration from the layout before objects existed: when the object is
// absent but pool/rel is a regular file of that size that is no object's
// link yet, it is hashed once and, if it is h, linked in as the object.
func (s *Store) HasObject(rel, h string, size int64) (bool, error) {
	fi, err := s.StatObject(rel, h, size)
	return fi != nil, err
}

// StatObject is HasObject returning the object's FileInfo (nil when it is
// not stored).
func (s *Store) StatObject(rel, h string, size int64) (fs.FileInfo, error) {
	l, err := s.LookupPool(rel, h, size)
	return l.Object, err
}

// PoolLookup is what LookupPool found for one pool path: the object, and
// when that was absent, the base-layer file, so that UsePoolLookup does
// not stat either again. A sync of 20,000 new files spends a good part of
// its system time in such lookups.
type PoolLookup struct {
	// Object is the stored object, nil when it is not stored (yet).
	Object    fs.FileInfo
	pool      fs.FileInfo // pool/rel (nil: absent), valid when poolKnown
	poolKnown bool
}

// LookupPool is Store.LookupPool for the sync building this snapshot. The
// first sync into an empty store looks nothing up: no object and no pool
// path can exist but those this sync stores, and those it finds again
// only when two paths have the same content (then the second download is
// put in place over the first, see mirror/fetch.Get). That spares a first
// sync two failing lstats per file.
func (sn *Snapshot) LookupPool(rel, h string, size int64) (PoolLookup, error) {
	if !sn.empty {
		return sn.s.LookupPool(rel, h, size)
	}
	if err := CheckHash(h); err != nil {
		return PoolLookup{}, err
	}
	if err := CheckRel(rel); err != nil {
		return PoolLookup{}, fmt.Errorf("store: pool file of mirror %s: %w", sn.s.name, err)
	}
	return PoolLookup{poolKnown: true}, nil
}

// LookupPool is HasObject for a sync: it returns what it found, for
// UsePoolLookup after the caller stored the object if it was missing.
// The base layer cannot change in between: only Commit adds to it, and
// only GC (under the same lock) removes from it.
func (s *Store) LookupPool(rel, h string, size int64) (PoolLookup, error) {
	if err := CheckHash(h); err != nil {
		return PoolLookup{}, err
	}
	if fi, err := os.Lstat(s.objectPath(h)); err == nil {
		if fi.Mode().IsRegular() && fi.Size() == size {
			return PoolLookup{Object: fi}, nil
		}
		return PoolLookup{}, nil
	}
	if rel == "" {
		return PoolLookup{}, nil
	}
	if err := CheckRel(rel); err != nil {
		return PoolLookup{}, fmt.Errorf("store: pool file of mirror %s: %w", s.name, err)
	}
	base := filepath.Join(s.dir, PoolDir)
	fi, err := lstatNoSymlinks(base, rel, &s.realDirs)
	if err != nil {
		return PoolLookup{}, fmt.Errorf("store: pool file of mirror %s: %w", s.name, err)
	}
	absent := PoolLookup{pool: fi, poolKnown: true}
	if fi == nil || !fi.Mode().IsRegular() || fi.Size() != size || nlink(fi) != 1 {
		return absent, nil
	}
	p := filepath.Join(base, filepath.FromSlash(rel))
	got, err := hashPath(p, len(h))
	if err != nil || got != h {
		return absent, nil
	}
	dst, err := s.objectDest(h)
	if err != nil {
		return PoolLookup{}, err
	}
	if err := os.Link(p, dst); err != nil && !errors.Is(err, fs.ErrExist) {
		return PoolLookup{}, fmt.Errorf("store: adopt %s as an object: %w", p, err)
	}
	ofi, err := os.Lstat(dst)
	return PoolLookup{Object: ofi}, err
}

// hashPath hashes p with SHA-256 (hexLen 64) or SHA-512 (128).
func hashPath(p string, hexLen int) (string, error) {
	f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return "", err
	}
	defer f.Close()
	var h hash.Hash = sha256.New()
	if hexLen == 2*sha512.Size {
		h = sha512.New()
	}
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func fnvString(p string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(p))
	return h.Sum32()
}

func nlink(fi fs.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Nlink)
	}
	return 0
}

// mkdirCached makes dir and its parents unless this Store already knows it
// exists (see MkdirPool).
func (s *Store) mkdirCached(dir string) error {
	if _, ok := s.realDirs.Load(dir); ok {
		return nil
	}
	// Per parent directory rather than one lock: linkBase's workers
	// each own different parents.
	mu := &s.dirMus[fnvString(filepath.Dir(dir))%uint32(len(s.dirMus))]
	mu.Lock()
	defer mu.Unlock()
	err := os.Mkdir(dir, 0o755)
	if errors.Is(err, fs.ErrNotExist) {
		err = os.MkdirAll(dir, 0o755)
	} else if errors.Is(err, fs.ErrExist) {
		if fi, lerr := os.Lstat(dir); lerr == nil && fi.IsDir() {
			err = nil
		}
	}
	if err != nil {
		return err
	}
	s.realDirs.Store(dir, struct{}{})
	return nil
}

// UsePool records that this snapshot serves object h (already stored, see
// HasObject and NewObject) at pool path rel (relative to the pool
// directory). What it costs is two lstats, plus:
//   - pool/rel absent: a journal line; Commit links the object there.
//   - pool/rel is object h (same inode): nothing, the base layer serves it.
//   - pool/rel holds other content (upstream rebuilt the file under the
//     same name, and a retained snapshot still serves the old bytes): a
//     hard link of the object into this snapshot's own pool/ directory,
//     the override layer, which serve and nginx consult first.
//
// A second UsePool of rel with the same object is harmless; with another
// object the error wraps ErrPoolConflict.
func (sn *Snapshot) UsePool(rel, h string) error { return sn.UsePoolStat(rel, h, nil) }

// UsePoolStat is UsePool with the object's FileInfo from StatObject
// (nil: UsePool lstats the object itself).
func (sn *Snapshot) UsePoolStat(rel, h string, ofi fs.FileInfo) error {
	return sn.UsePoolLookup(rel, h, PoolLookup{Object: ofi})
}

// UsePoolLookup is UsePool with what LookupPool found before the caller
// stored a missing object: a new path in a new pool then costs no stat
// at all here, only its journal line.
func (sn *Snapshot) UsePoolLookup(rel, h string, l PoolLookup) error {
	s := sn.s
	if err := CheckHash(h); err != nil {
		return err
	}
	if err := CheckRel(rel); err != nil {
		return fmt.Errorf("store: pool file of mirror %s: %w", s.name, err)
	}
	if l.poolKnown && l.pool == nil {
		return sn.journal(h, rel)
	}
	obj := s.objectPath(h)
	ofi := l.Object
	if ofi == nil {
		var err error
		if ofi, err = os.Lstat(obj); err != nil {
			return fmt.Errorf("store: pool file %s of mirror %s: object %s: %w", rel, s.name, h, err)
		}
	}
	pfi := l.pool
	if !l.poolKnown {
		var err error
		if pfi, err = lstatNoSymlinks(filepath.Join(s.dir, PoolDir), rel, &s.realDirs); err != nil {
			return fmt.Errorf("store: pool file of mirror %s: %w", s.name, err)
		}
	}
	switch {
	case pfi == nil:
		return sn.journal(h, rel)
	case os.SameFile(pfi, ofi):
		return nil
	case !pfi.Mode().IsRegular():
		return fmt.Errorf("store: pool file of mirror %s: %s is not a regular file; run `gatehouse mirror gc`", s.name, rel)
	}
	dst := filepath.Join(sn.tmp, PoolDir, filepath.FromSlash(rel))
	if err := noSymlinks(sn.tmp, PoolDir+"/"+rel, nil); err != nil {
		return fmt.Errorf("store: snapshot %s: %w", sn.id, err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return fmt.Errorf("store: snapshot %s: %w", sn.id, err)
	}
	err := os.Link(obj, dst)
	if errors.Is(err, fs.ErrExist) {
		if dfi, lerr := os.Lstat(dst); lerr == nil && os.SameFile(dfi, ofi) {
			return nil
		}
		return fmt.Errorf("store: snapshot %s: %s: %w", sn.id, rel, ErrPoolConflict)
	}
	if err != nil {
		return fmt.Errorf("store: snapshot %s: override %s: %w", sn.id, rel, err)
	}
	sn.mu.Lock()
	sn.overrides++
	sn.mu.Unlock()
	return nil
}

// Overrides is the number of override links UsePool made in this snapshot.
func (sn *Snapshot) Overrides() int {
	sn.mu.Lock()
	defer sn.mu.Unlock()
	return sn.overrides
}

func (sn *Snapshot) journal(h, rel string) error {
	sn.mu.Lock()
	defer sn.mu.Unlock()
	if sn.done {
		return fmt.Errorf("store: snapshot %s already committed or aborted", sn.id)
	}
	if sn.jw == nil {
		f, err := os.OpenFile(filepath.Join(sn.tmp, journalFile), os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
		if err != nil {
			return fmt.Errorf("store: snapshot %s: %w", sn.id, err)
		}
		sn.jf, sn.jw = f, bufio.NewWriterSize(f, 64<<10)
	}
	sn.jw.WriteString(h)
	sn.jw.WriteByte(' ')
	sn.jw.WriteString(rel)
	if err := sn.jw.WriteByte('\n'); err != nil {
		return fmt.Errorf("store: snapshot %s: journal: %w", sn.id, err)
	}
	return nil
}

// closeJournal flushes and closes the journal; the caller holds sn.mu.
func (sn *Snapshot) closeJournal() error {
	if sn.jw == nil {
		return nil
	}
	err := sn.jw.Flush()
	err = errors.Join(err, sn.jf.Close())
	sn.jw, sn.jf = nil, nil
	return err
}

// linkBase links into pool/ every path of the journal; the caller holds
// sn.mu. A path that already exists as the same object is fine (the indexes
// named it twice); as another file it means the indexes contradict each
// other (ErrPoolConflict). Only paths this snapshot names get here, and
// only just before it is published, so pool/ never holds a file a failed
// sync brought in.
func (sn *Snapshot) linkBase() error {
	if err := sn.closeJournal(); err != nil {
		return fmt.Errorf("store: snapshot %s: journal: %w", sn.id, err)
	}
	jp := filepath.Join(sn.tmp, journalFile)
	f, err := os.Open(jp)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("store: snapshot %s: %w", sn.id, err)
	}
	defer f.Close()
	s := sn.s
	// Until "current" names this snapshot, serving must not offer the
	// paths about to appear in pool/ (HiddenFile); Commit removes the
	// list after the swap.
	err = s.writeHidden(hiddenCommit+sn.id, func(w *bufio.Writer) error {
		_, err := io.Copy(w, f)
		return err
	})
	if err != nil {
		return fmt.Errorf("store: snapshot %s: %w", sn.id, err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("store: snapshot %s: %w", sn.id, err)
	}
	pool := filepath.Join(s.dir, PoolDir)
	// Workers, each owning the paths under some of pool/'s second-level
	// directories (pool/main/s/...): the mkdirs and links of one parent
	// directory stay in one goroutine, since parallel ones contend on its
	// lock in the kernel (see Store.dirMu), while the commit, which runs
	// alone at the end of a sync, still uses every core.
	n := min(runtime.GOMAXPROCS(0), 4)
	jobs := make([]chan [2]string, n)
	var (
		wg       sync.WaitGroup
		errMu    sync.Mutex
		firstErr error
		failed   atomic.Bool
	)
	fail := func(err error) {
		errMu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		errMu.Unlock()
		failed.Store(true)
	}
	for i := range jobs {
		jobs[i] = make(chan [2]string, 256)
		wg.Add(1)
		go func(jobs <-chan [2]string) {
			defer wg.Done()
			for j := range jobs {
				if failed.Load() {
					continue // drain
				}
				if err := s.linkBaseOne(pool, j[0], j[1]); err != nil {
					fail(fmt.Errorf("store: snapshot %s: %w", sn.id, err))
				}
			}
		}(jobs[i])
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() && !failed.Load() {
		h, rel, ok := strings.Cut(sc.Text(), " ")
		if !ok || CheckHash(h) != nil || CheckRel(rel) != nil {
			fail(fmt.Errorf("store: snapshot %s: damaged journal line %q", sn.id, sc.Text()))
			break
		}
		jobs[fnvString(path.Dir(path.Dir(rel)))%uint32(n)] <- [2]string{h, rel}
	}
	for _, c := range jobs {
		close(c)
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("store: snapshot %s: journal: %w", sn.id, err)
	}
	f.Close()
	return os.Remove(jp)
}

// linkBaseOne links object h at pool/rel (see linkBase). A new path in a
// fresh pool costs one link (plus a mkdir for a new directory): EEXIST,
// not a stat beforehand, says when the path is there already.
func (s *Store) linkBaseOne(pool, h, rel string) error {
	dst := filepath.Join(pool, filepath.FromSlash(rel))
	if err := s.mkdirCached(filepath.Dir(dst)); err != nil {
		return err
	}
	err := os.Link(s.objectPath(h), dst)
	if errors.Is(err, fs.ErrExist) {
		ofi, oerr := os.Lstat(s.objectPath(h))
		dfi, derr := os.Lstat(dst)
		if oerr == nil && derr == nil && os.SameFile(ofi, dfi) {
			return nil
		}
		return fmt.Errorf("%s: %w", rel, ErrPoolConflict)
	}
	if err != nil {
		return fmt.Errorf("link %s: %w", rel, err)
	}
	return nil
}

// PoolView returns the file a snapshot serves at pool path rel: its
// override if it has one, else the base layer's. The file need not exist.
func (s *Store) PoolView(id, rel string) (string, error) {
	if err := validID(id); err != nil {
		return "", err
	}
	if err := CheckRel(rel); err != nil {
		return "", fmt.Errorf("store: pool file of mirror %s: %w", s.name, err)
	}
	snap := filepath.Join(s.dir, SnapshotsDir, id)
	fi, err := lstatNoSymlinks(snap, PoolDir+"/"+rel, nil)
	if err != nil {
		return "", fmt.Errorf("store: snapshot %s: %w", id, err)
	}
	if fi != nil {
		return filepath.Join(snap, PoolDir, filepath.FromSlash(rel)), nil
	}
	return s.PoolPath(rel)
}

// Overridden lists the pool paths (relative to the pool directory) that
// snapshot id serves from its own override layer rather than from pool/.
// It reads only that snapshot's pool/ directory, which holds just the
// paths whose content changed under the same name.
func (s *Store) Overridden(id string) (map[string]struct{}, error) {
	if err := validID(id); err != nil {
		return nil, err
	}
	root := filepath.Join(s.dir, SnapshotsDir, id, PoolDir)
	out := map[string]struct{}{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) && p == root {
			return filepath.SkipAll
		}
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			rel, err := filepath.Rel(root, p)
			if err != nil {
				return err
			}
			out[filepath.ToSlash(rel)] = struct{}{}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: overrides of snapshot %s: %w", id, err)
	}
	return out, nil
}

// IsObjectFile reports whether fi (of a pool or override file) is a link of
// a stored object: the store makes every such file a hard link of one, so
// it has at least two links. A pool file from before objects existed has
// one, until a sync adopts it (HasObject).
func IsObjectFile(fi fs.FileInfo) bool { return nlink(fi) >= 2 }

// Leftovers counts stored objects no pool path or override links (what an
// interrupted sync downloaded) and their size: `mirror gc` removes them.
func (s *Store) Leftovers() (files int, bytes int64, err error) {
	root := filepath.Join(s.dir, ObjectsDir)
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) && p == root {
			return filepath.SkipAll
		}
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return nil
		}
		if nlink(fi) == 1 {
			files++
			bytes += fi.Size()
		}
		return nil
	})
	if err != nil {
		return 0, 0, fmt.Errorf("store: objects of mirror %s: %w", s.name, err)
	}
	return files, bytes, nil
}
