package fetch

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Temporary files: an unnamed one (O_TMPFILE) where the file system has
// them, else a named ".tmp-*" one (os.CreateTemp).
//
// Why: a named temporary file costs two directory updates per download (the
// create, then the rename that removes the temporary name and adds the
// final one) plus an fchmod, all under the directory's lock; an unnamed one
// costs one (linkat at the end) and nothing when the download fails or the
// process is killed (the kernel frees it, so no ".tmp-*" leftover). For
// 20,000 small pool files into objects/ab/ this was most of the sync's
// system time (see README.md, "Benchmark").
//
// linkat never replaces an existing name. An existing dest is rare (a
// stored object whose size was wrong, an index fetched again into the same
// snapshot): then the file gets a ".tmp-*" name and is renamed over dest,
// as before.

// noTmpfile is set once O_TMPFILE failed in a way that says the file
// system lacks it; from then on only named temporary files are used.
var noTmpfile atomic.Bool

// createTemp returns an open, empty, writable file in dir, mode 0644, and
// whether it is unnamed. It makes dir (0755) when it is missing.
func createTemp(dir string) (*os.File, bool, error) {
	for range 2 {
		f, anon, err := createTempOnce(dir)
		if errors.Is(err, fs.ErrNotExist) {
			// The directory is made here rather than up front:
			// callers that fetch thousands of files into existing
			// directories save a stat each.
			if err = os.MkdirAll(dir, 0o755); err != nil {
				return nil, false, err
			}
			continue
		}
		return f, anon, err
	}
	return createTempOnce(dir)
}

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
	f, err := os.CreateTemp(dir, tempPattern)
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

// publishTemp gives the complete temporary file f its final name dest and
// closes it. An unnamed file is linked (replacing nothing); when dest
// exists it is renamed over it through a named temporary link.
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
	defer f.Close()
	err := linkFD(f, dest)
	if errors.Is(err, unix.EEXIST) {
		tmp := filepath.Join(filepath.Dir(dest), ".tmp-"+rand.Text())
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
