package certauth

import (
	"fmt"
	"io"
	"os"
)

// fileStamp identifies one version of a file cheaply. ctime is included so
// that a rewrite which restores the old mtime (cp -p, rsync -t) is noticed.
type fileStamp struct {
	dev, ino     uint64
	size         int64
	mtime, ctime int64 // Unix nanoseconds; plain integers so == is exact
}

// readBounded reads a regular file of at most limit bytes and returns its
// content and the stamp of exactly the opened file.
func readBounded(path string, limit int64) ([]byte, fileStamp, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fileStamp{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fileStamp{}, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fileStamp{}, fmt.Errorf("%s is not a regular file", path)
	}
	if fi.Size() > limit {
		return nil, fileStamp{}, fmt.Errorf("%s is %d bytes, more than the %d allowed", path, fi.Size(), limit)
	}
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fileStamp{}, fmt.Errorf("reading %s: %w", path, err)
	}
	if int64(len(data)) > limit {
		return nil, fileStamp{}, fmt.Errorf("%s grew beyond %d bytes while being read", path, limit)
	}
	return data, stampOf(fi), nil
}

// load reads and parses both files into a fresh state.
func (c *Checker) load() (*state, error) {
	data, caStamp, err := readBounded(c.cfg.UserCAKeys, maxCAFileSize)
	if err != nil {
		return nil, fmt.Errorf("certauth: user CA keys: %w", err)
	}
	cas, err := parseCAKeys(data, c.cfg.UserCAKeys)
	if err != nil {
		return nil, fmt.Errorf("certauth: user CA keys: %w", err)
	}
	st := &state{cas: cas, caStamp: caStamp}
	if c.cfg.RevokedKeys == "" {
		return st, nil
	}
	data, revStamp, err := readBounded(c.cfg.RevokedKeys, MaxRevocationFileSize)
	if err != nil {
		return nil, fmt.Errorf("certauth: revoked keys: %w", err)
	}
	rev, err := ParseRevocations(data, c.cfg.RevokedKeys)
	if err != nil {
		return nil, fmt.Errorf("certauth: revoked keys: %w", err)
	}
	st.rev, st.revStamp, st.revEntries = rev, revStamp, rev.Len()
	return st, nil
}

// Reload re-reads the CA file and the revocation file. It applies both or
// neither: on any error the previous CA set and revocation list stay in force
// and the error (naming file and line) is returned for the caller to log
// loudly. Keeping the old, vetted sets is deliberate: dropping to an empty
// revocation list on a typo would re-admit revoked certificates, and refusing
// everyone would let one bad edit lock every administrator out. To lock
// everyone out on purpose, revoke the CA key in the revocation file.
func (c *Checker) Reload() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reloadLocked()
}

func (c *Checker) reloadLocked() error {
	st, err := c.load()
	if err != nil {
		c.failStamp, c.failErr = c.currentStamps(), err
		return err
	}
	c.failStamp, c.failErr = [2]fileStamp{}, nil
	c.cur.Store(st)
	c.log.Info("certauth: reloaded trust material", "user_ca_keys", c.cfg.UserCAKeys, "cas", len(st.cas),
		"revoked_keys", c.cfg.RevokedKeys, "revocation_entries", st.revEntries)
	return nil
}

// currentStamps stats both files; a missing file yields a zero stamp.
func (c *Checker) currentStamps() [2]fileStamp {
	var s [2]fileStamp
	if fi, err := os.Stat(c.cfg.UserCAKeys); err == nil {
		s[0] = stampOf(fi)
	}
	if c.cfg.RevokedKeys != "" {
		if fi, err := os.Stat(c.cfg.RevokedKeys); err == nil {
			s[1] = stampOf(fi)
		}
	}
	return s
}

// ReloadIfChanged stats both files (device, inode, size, mtime, ctime) and
// reloads when either differs from the loaded version. It is cheap enough to
// call every few seconds. It reports whether new material was loaded. When
// the files have not changed since a failed reload, it returns that failure
// again without re-parsing, so the caller keeps seeing that the running
// state is stale.
func (c *Checker) ReloadIfChanged() (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.cur.Load()
	now := c.currentStamps()
	if now == [2]fileStamp{st.caStamp, st.revStamp} {
		return false, nil
	}
	if c.failErr != nil && now == c.failStamp {
		return false, c.failErr
	}
	if err := c.reloadLocked(); err != nil {
		return false, err
	}
	return true, nil
}
