package store

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// NewFile is a file the store names only once its writer has verified
// it: a pool object (Store.NewObject) or a file of the snapshot being built
// (Snapshot.NewFile). The writer (mirror/fetch.Client.Get, mirror/bundle)
// gets an empty temporary file from Create, writes and checks it, then
// hands it back with Commit, or gives up with Discard. So writers never
// learn a path of the store's tree, and this package is the only one that
// creates, links, renames or removes anything there. A NewFile holds one
// temporary file at a time: after Discard, Create may start another (a
// second source of the same file); after Commit it is spent.
//
// Temporary files are unnamed (O_TMPFILE) where the file system has them,
// else named TempPrefix+"*" beside the destination (GC removes stale
// ones).
//
// Why: a named temporary file costs two directory updates per download (the
// create, then the rename that removes the temporary name and adds the
// final one) plus an fchmod, all under the directory's lock; an unnamed one
// costs one (linkat at the end) and nothing when the download fails or the
// process is killed (the kernel frees it, so no ".tmp-*" leftover). For
// 20,000 small pool files into objects/ab/ this was most of the sync's
// system time (see README.md, "Benchmark").
//
// linkat never replaces an existing name. An existing destination is rare
// (a stored object whose size was wrong, an index fetched again into the
// same snapshot): then the file gets a ".tmp-*" name and is renamed over
// it, as before.
type NewFile struct {
	dest  string
	mkdir func(dir string) error // makes dest's directory when missing
	f     *os.File
	anon  bool
	done  bool
}

// NewObject returns the writer of object h (objects/ab/H). The writer must
// Commit only after checking the file's size and its hash h (mirror/fetch
// and mirror/bundle do): HasObject trusts the name and never re-hashes.
// Nothing is created until Create, so a download that fails before its
// first byte leaves no directory behind.
func (s *Store) NewObject(h string) (*NewFile, error) {
	if err := CheckHash(h); err != nil {
		return nil, err
	}
	return &NewFile{dest: s.objectPath(h), mkdir: s.mkdirCached}, nil
}

// NewFile returns the writer of the file rel of this snapshot, for a
// writer that verifies what it writes (an index checked against its
// Release; a bundle's file checked against its manifest).
func (sn *Snapshot) NewFile(rel string) (*NewFile, error) {
	p, err := sn.Path(rel)
	if err != nil {
		return nil, err
	}
	return &NewFile{dest: p, mkdir: func(dir string) error { return os.MkdirAll(dir, 0o755) }}, nil
}

// Name names the destination, for messages.
func (w *NewFile) Name() string { return w.dest }

// Open opens the file already at the destination, read-only and without
// following a symlink, for a writer that checks whether it is there (the
// caller closes it). fs.ErrNotExist when there is none.
func (w *NewFile) Open() (*os.File, error) {
	return os.OpenFile(w.dest, os.O_RDONLY|unix.O_NOFOLLOW, 0)
}

// Create returns the open, empty, writable temporary file (mode 0644),
// making the destination's directory when it is missing.
func (w *NewFile) Create() (*os.File, error) {
	if w.f != nil || w.done {
		return nil, fmt.Errorf("store: %s: Create called twice without Discard", w.dest)
	}
	dir := filepath.Dir(w.dest)
	for range 2 {
		f, anon, err := createTempOnce(dir)
		if errors.Is(err, fs.ErrNotExist) {
			// The directory is made here rather than up front:
			// callers that fetch thousands of files into existing
			// directories save a stat each, and a failed download
			// leaves none.
			if err = w.mkdir(dir); err != nil {
				return nil, err
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		w.f, w.anon = f, anon
		return f, nil
	}
	return nil, fmt.Errorf("store: %s: directory vanished while creating a temporary file", w.dest)
}

// Discard closes and forgets the temporary file; a no-op after Commit or
// before Create.
func (w *NewFile) Discard() {
	if w.f == nil || w.done {
		return
	}
	w.f.Close()
	if !w.anon {
		os.Remove(w.f.Name())
	}
	w.f = nil
}

// Commit gives the complete temporary file its final name, replacing what
// was there, and closes it. No fsync: Commit of the snapshot makes
// everything durable with one syncfs. On error the temporary file is gone
// too.
func (w *NewFile) Commit() error {
	if w.f == nil || w.done {
		return fmt.Errorf("store: %s: Commit without Create", w.dest)
	}
	w.done = true
	err := publishTemp(w.f, w.anon, w.dest)
	if err != nil && w.anon && noTmpfile.Load() {
		// Unnamed files cannot be named here (see linkFD): copy the
		// bytes into a named one once.
		err = copyNamed(w.f, w.dest)
	}
	w.f.Close()
	return err
}

// copyNamed copies the unnamed file f into a named temporary file beside
// dest and renames that onto dest.
func copyNamed(f *os.File, dest string) error {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("rewind: %w", err)
	}
	t, anon, err := createTempOnce(filepath.Dir(dest))
	if err != nil {
		return err
	}
	if anon {
		t.Close()
		return fmt.Errorf("link into %s: unnamed temporary files cannot be named here", dest)
	}
	if _, err := io.Copy(t, f); err != nil {
		t.Close()
		os.Remove(t.Name())
		return fmt.Errorf("copy into %s: %w", t.Name(), err)
	}
	return publishTemp(t, false, dest)
}

// noTmpfile is set once O_TMPFILE failed in a way that says the file
// system lacks it; from then on only named temporary files are used.
var noTmpfile atomic.Bool

func createTempOnce(dir string) (*os.File, bool, error) {
	if !noTmpfile.Load() {
		fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o644)
		switch {
		case err == nil:
			f := os.NewFile(uintptr(fd), filepath.Join(dir, "(unnamed temporary file)"))
			if umaskHidesRead() {
				// Published files must be readable by a server
				// running as another user, whatever the umask.
				if err := f.Chmod(0o644); err != nil {
					f.Close()
					return nil, false, err
				}
			}
			return f, true, nil
		case errors.Is(err, unix.ENOENT):
			return nil, false, fs.ErrNotExist
		case errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.EISDIR), errors.Is(err, unix.EINVAL):
			noTmpfile.Store(true) // this file system (or kernel) has no O_TMPFILE
		default:
			return nil, false, err
		}
	}
	f, err := os.CreateTemp(dir, TempPrefix+"*")
	if err != nil {
		return nil, false, err
	}
	// CreateTemp makes 0600 files; published files must be readable by a
	// server running as another user.
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, false, err
	}
	return f, false, nil
}

var umaskOnce struct {
	sync.Once
	hides bool
}

// umaskHidesRead reports whether the process umask removes read permission
// for group or others, read once from /proc/self/status (setting the umask
// to read it would race with files other goroutines create). When it
// cannot be read, it says yes: an fchmod too many costs little.
func umaskHidesRead() bool {
	umaskOnce.Do(func() {
		umaskOnce.hides = true
		b, err := os.ReadFile("/proc/self/status")
		if err != nil {
			return
		}
		for _, line := range bytes.Split(b, []byte("\n")) {
			if v, ok := bytes.CutPrefix(line, []byte("Umask:")); ok {
				m, err := strconv.ParseUint(string(bytes.TrimSpace(v)), 8, 32)
				if err == nil {
					umaskOnce.hides = m&0o044 != 0
				}
				return
			}
		}
	})
	return umaskOnce.hides
}

// publishTemp gives the complete temporary file f its final name dest.
// A named file is closed and renamed; an unnamed file is linked (replacing
// nothing; the caller closes it), and when dest exists it is renamed over
// it through a named temporary link.
func publishTemp(f *os.File, anon bool, dest string) error {
	if !anon {
		if err := f.Close(); err != nil {
			os.Remove(f.Name())
			return fmt.Errorf("close %s: %w", f.Name(), err)
		}
		if err := os.Rename(f.Name(), dest); err != nil {
			os.Remove(f.Name())
			return fmt.Errorf("rename into %s: %w", dest, err)
		}
		return nil
	}
	err := linkFD(f, dest)
	if errors.Is(err, unix.EEXIST) {
		tmp := filepath.Join(filepath.Dir(dest), TempPrefix+rand.Text())
		if err = linkFD(f, tmp); err == nil {
			if err = os.Rename(tmp, dest); err != nil {
				os.Remove(tmp)
			}
		}
	}
	if err != nil {
		return fmt.Errorf("link into %s: %w", dest, err)
	}
	return nil
}

// linkFD gives the open unnamed file f the name p: linkat with
// AT_EMPTY_PATH, which needs CAP_DAC_READ_SEARCH before Linux 6.10, else
// through /proc/self/fd.
func linkFD(f *os.File, p string) error {
	fd := int(f.Fd())
	err := unix.Linkat(fd, "", unix.AT_FDCWD, p, unix.AT_EMPTY_PATH)
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EPERM) {
		if _, serr := os.Lstat(filepath.Dir(p)); serr != nil {
			return err
		}
		err = unix.Linkat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(fd), unix.AT_FDCWD, p, unix.AT_SYMLINK_FOLLOW)
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EPERM) {
			// No /proc and an old kernel: unnamed files cannot
			// be named here; the caller fetches again, named.
			noTmpfile.Store(true)
		}
	}
	return err
}
