package store

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// syncOnce stores files (path -> content) the way a sync does: look up,
// store the object when it is missing, then UsePoolLookup; and commits.
func syncOnce(t *testing.T, s *Store, files [][2]string) (string, int) {
	t.Helper()
	sn, err := s.NewSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	stored := 0
	for _, f := range files {
		rel, h := f[0], sum(f[1])
		l, err := sn.LookupPool(rel, h, int64(len(f[1])))
		if err != nil {
			t.Fatal(err)
		}
		if l.Object == nil {
			putObject(t, s, f[1])
			stored++
		}
		if err := sn.UsePoolLookup(rel, h, l); err != nil {
			t.Fatalf("UsePoolLookup %s: %v", rel, err)
		}
	}
	id, err := sn.Commit(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return id, stored
}

// TestLookupPoolEmptyStore: the first sync into an empty store looks
// nothing up, and is right to: two paths with the same content (stored
// twice, the second over the first) both serve it; a later sync finds
// every object and stores nothing again; a path whose content changed gets
// an override, and the first snapshot keeps its bytes.
func TestLookupPoolEmptyStore(t *testing.T) {
	s := openLocked(t, t.TempDir(), "m")
	first := [][2]string{{"main/a/a.deb", "same"}, {"main/b/b.deb", "same"}, {"main/c/c.deb", "c1"}}
	id1, stored := syncOnce(t, s, first)
	if stored != 3 {
		t.Errorf("first sync stored %d objects, want 3 (no lookups in an empty store)", stored)
	}
	for _, f := range first {
		if got := readView(t, s, id1, f[0]); got != f[1] {
			t.Errorf("%s serves %q, want %q", f[0], got, f[1])
		}
		fi, err := os.Lstat(filepath.Join(s.Dir(), PoolDir, f[0]))
		if err != nil || !IsObjectFile(fi) {
			t.Errorf("%s is not a link of its object: %v", f[0], err)
		}
	}
	second := [][2]string{{"main/a/a.deb", "same"}, {"main/b/b.deb", "same"}, {"main/c/c.deb", "c2"}}
	id2, stored := syncOnce(t, s, second)
	if stored != 1 {
		t.Errorf("second sync stored %d objects, want 1 (only the changed one)", stored)
	}
	if got := readView(t, s, id2, "main/c/c.deb"); got != "c2" {
		t.Errorf("the new snapshot serves %q, want c2", got)
	}
	if got := readView(t, s, id1, "main/c/c.deb"); got != "c1" {
		t.Errorf("the first snapshot serves %q, want c1", got)
	}
}

// TestLookupPoolLeftovers: objects an interrupted sync left make the
// store not empty: the next sync finds and reuses them.
func TestLookupPoolLeftovers(t *testing.T) {
	s := openLocked(t, t.TempDir(), "m")
	putObject(t, s, "left")
	_, stored := syncOnce(t, s, [][2]string{{"main/l/l.deb", "left"}, {"main/n/n.deb", "new"}})
	if stored != 1 {
		t.Errorf("stored %d objects, want 1: the leftover object was not reused", stored)
	}
}
