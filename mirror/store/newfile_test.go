package store

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// TestNewFileReplacesAndCleansUp: linkat (the unnamed temporary file's
// commit) never replaces a name, but Commit must, as rename does: a stored
// object of the wrong size is fetched again onto its own name. Both
// temporary-file kinds are checked; neither leaves a TempPrefix file, the
// result is 0644 whatever the umask, and Discard leaves nothing behind.
func TestNewFileReplacesAndCleansUp(t *testing.T) {
	for _, named := range []bool{false, true} {
		t.Run(fmt.Sprintf("named=%v", named), func(t *testing.T) {
			old := noTmpfile.Load()
			noTmpfile.Store(named)
			t.Cleanup(func() { noTmpfile.Store(old) })
			s := openLocked(t, t.TempDir(), "m")
			content := "verified bytes"
			h := sum(content)
			p := s.objectPath(h)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte("stale"), 0o600); err != nil {
				t.Fatal(err)
			}
			writeObject(t, s, h, content)
			if got, err := os.ReadFile(p); err != nil || string(got) != content {
				t.Fatalf("object not replaced by the committed bytes: %q, %v", got, err)
			}
			if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o644 {
				t.Errorf("object mode %v, want 0644 so a server under another user can read it", fi.Mode())
			}
			if names := dirNames(t, filepath.Dir(p)); len(names) != 1 {
				t.Errorf("directory holds %v, want only the object", names)
			}

			// Discard: nothing named, nothing left.
			h2 := sum("discarded")
			w, err := s.NewObject(h2)
			if err != nil {
				t.Fatal(err)
			}
			f, err := w.Create()
			if err != nil {
				t.Fatal(err)
			}
			f.WriteString("discarded")
			w.Discard()
			if names := dirNames(t, filepath.Dir(s.objectPath(h2))); len(names) != 0 {
				t.Errorf("Discard left %v", names)
			}
			// A second source after Discard may Create again; after
			// Commit the writer is spent.
			if f, err = w.Create(); err != nil {
				t.Fatalf("Create after Discard: %v", err)
			}
			f.WriteString("discarded")
			if err := w.Commit(); err != nil {
				t.Fatal(err)
			}
			if _, err := w.Create(); err == nil {
				t.Error("Create after Commit succeeded")
			}
		})
	}
}

// TestNewObjectMakesNoDirectoryUntilCreate: a download that fails before
// its first byte (a 404) leaves no objects/ab directory.
func TestNewObjectMakesNoDirectoryUntilCreate(t *testing.T) {
	s := openLocked(t, t.TempDir(), "m")
	w, err := s.NewObject(sum("never"))
	if err != nil {
		t.Fatal(err)
	}
	w.Discard()
	if _, err := os.Lstat(filepath.Join(s.Dir(), ObjectsDir)); !os.IsNotExist(err) {
		t.Errorf("objects/ exists after a writer that never created: %v", err)
	}
	if _, err := s.NewObject("../../etc/passwd"); err == nil {
		t.Error("NewObject accepted a name that is not a hash")
	}
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	return out
}
