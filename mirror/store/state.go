package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// State is what a mirror remembers between syncs, stored as JSON in
// ROOT/NAME/state.json.
type State struct {
	// Version is the format version; WriteState sets it to 1.
	Version int `json:"version"`
	// Suites is keyed by suite (or codename) as configured.
	Suites map[string]SuiteState `json:"suites,omitempty"`
	// LastSync is the most recent sync attempt, successful or not.
	LastSync *SyncRecord `json:"last_sync,omitempty"`
	// LastSuccess is when a sync last ended published or already current.
	LastSuccess time.Time `json:"last_success,omitzero"`
	// Extra is carried unchanged for the caller's own fields.
	Extra json.RawMessage `json:"extra,omitempty"`
}

// SuiteState is the last accepted Release of one suite.
type SuiteState struct {
	// Date is the Release Date last accepted; a later Release with an older
	// Date is a rollback/replay and must be refused.
	Date time.Time `json:"date"`
	// ValidUntil is that Release's Valid-Until (zero if none).
	ValidUntil time.Time `json:"valid_until,omitzero"`
	// ETag and LastModified are the HTTP validators of the InRelease (or
	// Release) response, for the next conditional request.
	ETag         string `json:"etag,omitempty"`
	LastModified string `json:"last_modified,omitempty"`
	// ReleaseSHA256 is the hash of the accepted InRelease/Release bytes.
	ReleaseSHA256 string `json:"release_sha256,omitempty"`
	// Snapshot is the snapshot ID that published this Release.
	Snapshot string `json:"snapshot,omitempty"`
}

// SyncRecord summarizes one sync attempt.
type SyncRecord struct {
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	// Result is "published", "current" (nothing changed) or "failed".
	Result   string `json:"result"`
	Error    string `json:"error,omitempty"`
	Snapshot string `json:"snapshot,omitempty"`
	Files    int64  `json:"files"`
	Bytes    int64  `json:"bytes"`
}

const maxStateSize = 16 << 20

// ReadState returns the stored State, or the zero State if none was written
// yet. A damaged file is an error naming it, never silently reset: losing
// the last accepted Dates would disable rollback protection.
func (s *Store) ReadState() (State, error) {
	p := filepath.Join(s.dir, StateFile)
	f, err := os.Open(p)
	if errors.Is(err, os.ErrNotExist) {
		return State{}, nil
	}
	if err != nil {
		return State{}, fmt.Errorf("store: read state: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxStateSize+1))
	if err != nil {
		return State{}, fmt.Errorf("store: read state %s: %w", p, err)
	}
	if len(b) > maxStateSize {
		return State{}, fmt.Errorf("store: state %s is larger than %d bytes; it is not a gatehouse state file", p, maxStateSize)
	}
	var st State
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&st); err != nil {
		return State{}, fmt.Errorf("store: state %s is damaged (%w); restore it from backup, or delete it to accept the next upstream Release without rollback checks", p, err)
	}
	if st.Version > 1 {
		return State{}, fmt.Errorf("store: state %s has format version %d; this gatehouse understands 1", p, st.Version)
	}
	return st, nil
}

// WriteState replaces the stored State atomically and durably: temp file,
// fsync, rename, fsync of the directory. Requires the lock.
func (s *Store) WriteState(st State) error {
	if err := s.requireLock("write state"); err != nil {
		return err
	}
	st.Version = 1
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("store: encode state: %w", err)
	}
	return writeFileAtomic(s.dir, StateFile, append(b, '\n'))
}

func writeFileAtomic(dir, name string, data []byte) (err error) {
	f, err := os.CreateTemp(dir, TempPrefix+name+"-*")
	if err != nil {
		return fmt.Errorf("store: write %s: %w", name, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err := f.Chmod(0o644); err != nil {
		return fmt.Errorf("store: write %s: %w", name, err)
	}
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("store: write %s: %w", f.Name(), err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("store: fsync %s: %w", f.Name(), err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("store: close %s: %w", f.Name(), err)
	}
	if err := os.Rename(f.Name(), filepath.Join(dir, name)); err != nil {
		return fmt.Errorf("store: rename %s: %w", name, err)
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("store: write %s: %w", name, err)
	}
	return nil
}
