package repobuild

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"gatehouse/apt/pgp"
)

// Path returns the absolute file name of rel, a path relative to Dir
// ("dists/stable/InRelease").
func (r *Repo) Path(rel string) string { return filepath.Join(r.Dir, filepath.FromSlash(rel)) }

// Resign signs dists/<suite>/Release as it is on disk with key and
// replaces InRelease and Release.gpg: for tests that edit Release by hand
// and then want it signed again, or signed by a key clients do not trust.
// With suite "" it re-signs a flat repository's root Release.
func (r *Repo) Resign(suite string, key *pgp.SigningKey) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	dir, where := filepath.Join(r.Dir, r.flatSub), "."
	if suite != "" {
		dir, where = filepath.Join(r.Dir, "dists", filepath.FromSlash(suite)), "dists/"+suite
	}
	rel, err := os.ReadFile(filepath.Join(dir, "Release"))
	if err != nil {
		return fmt.Errorf("repobuild: resign: %w", err)
	}
	r.nextStamp()
	return r.sign(key, dir, rel, where, time.Now())
}

// FlipByte inverts the byte at offset off of the file rel (relative to
// Dir) on disk, for tamper tests; the file keeps its modification time so
// that only its content betrays the change. A later Rebuild keeps a
// flipped pool file and lists it as it then is, as an upstream that signs
// whatever is in its pool would.
func (r *Repo) FlipByte(rel string, off int64) error {
	p := r.Path(rel)
	st, err := os.Stat(p)
	if err != nil {
		return fmt.Errorf("repobuild: flip byte: %w", err)
	}
	if off < 0 || off >= st.Size() {
		return fmt.Errorf("repobuild: flip byte %d of %s: file has %d bytes", off, rel, st.Size())
	}
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("repobuild: flip byte: %w", err)
	}
	b := make([]byte, 1)
	_, err = f.ReadAt(b, off)
	if err == nil {
		b[0] ^= 0xff
		_, err = f.WriteAt(b, off)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chtimes(p, st.ModTime(), st.ModTime())
	}
	if err != nil {
		return fmt.Errorf("repobuild: flip byte %d of %s: %w", off, rel, err)
	}
	return nil
}
