package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

func sum(b string) string {
	h := sha256.Sum256([]byte(b))
	return hex.EncodeToString(h[:])
}

// putObject stores content as an object the way a verified writer does.
func putObject(t testing.TB, s *Store, content string) string {
	t.Helper()
	h := sum(content)
	writeObject(t, s, h, content)
	return h
}

// writeObject stores content as object h through NewObject, as a verified
// writer does.
func writeObject(t testing.TB, s *Store, h, content string) {
	t.Helper()
	w, err := s.NewObject(h)
	if err != nil {
		t.Fatal(err)
	}
	f, err := w.Create()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(content); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
}

func readView(t *testing.T, s *Store, id, rel string) string {
	t.Helper()
	p, err := s.PoolView(id, rel)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestOverrideLayer: a path whose content changes gets an override in the
// new snapshot; the old snapshot's view and pool/ keep the old bytes; GC
// after pruning the old snapshot removes the old bytes and the object.
func TestOverrideLayer(t *testing.T) {
	s := openLocked(t, t.TempDir(), "m")
	ctx := context.Background()
	commit := func(files map[string]string) string {
		t.Helper()
		sn, err := s.NewSnapshot()
		if err != nil {
			t.Fatal(err)
		}
		for rel, content := range files {
			h := sum(content)
			if ok, err := s.HasObject(rel, h, int64(len(content))); err != nil || !ok {
				putObject(t, s, content)
			}
			if err := sn.UsePool(rel, h); err != nil {
				t.Fatal(err)
			}
			if err := sn.UsePool(rel, h); err != nil { // named twice: fine
				t.Fatal(err)
			}
		}
		id, err := sn.Commit(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	a := commit(map[string]string{"main/a.deb": "old", "main/b.deb": "b"})
	if o, _ := s.Overridden(a); len(o) != 0 {
		t.Errorf("first snapshot has overrides %v", o)
	}
	// A failed build changes nothing served.
	sn, _ := s.NewSnapshot()
	putObject(t, s, "failed")
	if err := sn.UsePool("main/new.deb", sum("failed")); err != nil {
		t.Fatal(err)
	}
	sn.Abort()
	if _, err := os.Lstat(filepath.Join(s.Dir(), PoolDir, "main/new.deb")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("an aborted snapshot's path is in pool/: %v", err)
	}
	b := commit(map[string]string{"main/a.deb": "NEW", "main/b.deb": "b"})
	if got := readView(t, s, a, "main/a.deb"); got != "old" {
		t.Errorf("old snapshot serves %q", got)
	}
	if got := readView(t, s, b, "main/a.deb"); got != "NEW" {
		t.Errorf("new snapshot serves %q", got)
	}
	if o, _ := s.Overridden(b); len(o) != 1 {
		t.Errorf("new snapshot overrides %v, want main/a.deb", o)
	}
	// Contradicting indexes in one snapshot are refused.
	sn, _ = s.NewSnapshot()
	putObject(t, s, "x1")
	putObject(t, s, "x2")
	sn.UsePool("main/x.deb", sum("x1"))
	sn.UsePool("main/x.deb", sum("x2"))
	if _, err := sn.Commit(ctx); !errors.Is(err, ErrPoolConflict) {
		t.Errorf("commit of a path named with two contents: %v", err)
	}
	sn.Abort()

	// Prune a: pool/main/a.deb ("old") is no longer used from pool/.
	res, err := s.Collect(ctx, Collection{
		MaxDeleteFraction: 1,
		Prune:             []string{a},
		Referenced: func(yield func(string)) error {
			yield("main/b.deb") // b serves a.deb from its override
			return nil
		},
		Candidates: func(yield func(PoolRef)) error {
			yield(PoolRef{"main/a.deb", sum("old")})
			yield(PoolRef{"main/b.deb", sum("b")})
			return nil
		},
	})
	if err != nil || res.Removed != 1 || res.ObjectsRemoved != 1 {
		t.Fatalf("collect after pruning: %+v, %v", res, err)
	}
	if got := readView(t, s, b, "main/a.deb"); got != "NEW" {
		t.Errorf("after gc the new snapshot serves %q", got)
	}
	// A full gc removes what failed builds left.
	res, err = s.GC(ctx, func(yield func(string) bool) { yield("main/b.deb") }, 1)
	if err != nil || res.ObjectsRemoved != 3 { // "failed", "x1", "x2"
		t.Errorf("full gc: %+v, %v", res, err)
	}
	if n, _, _ := s.Leftovers(); n != 0 {
		t.Errorf("%d leftovers after gc", n)
	}
}

// TestMigrationAdoptsPoolFiles: a pool file from before objects existed is
// hashed once and linked in as the object.
func TestMigrationAdoptsPoolFiles(t *testing.T) {
	s := openLocked(t, t.TempDir(), "m")
	writeFile(t, filepath.Join(s.Dir(), PoolDir, "main/a.deb"), "legacy")
	if ok, err := s.HasObject("main/a.deb", sum("other"), 6); err != nil || ok {
		t.Errorf("a legacy file with another hash was adopted: %v", err)
	}
	if ok, err := s.HasObject("main/a.deb", sum("legacy"), 6); err != nil || !ok {
		t.Fatalf("legacy file not adopted: %v", err)
	}
	fi, _ := os.Lstat(filepath.Join(s.Dir(), PoolDir, "main/a.deb"))
	if !IsObjectFile(fi) {
		t.Error("the adopted pool file is not linked to its object")
	}
	sn, _ := s.NewSnapshot()
	if err := sn.UsePool("main/a.deb", sum("legacy")); err != nil || sn.Overrides() != 0 {
		t.Errorf("UsePool of the adopted file: %v, %d overrides", err, sn.Overrides())
	}
	sn.Abort()
}

// TestCollectScale: gc of many pool entries costs less CPU than storing and
// publishing them did (CPU and a ratio, since on the shared test machines
// wall time is mostly waiting for the disk): it walks pool/ and objects/ once, with one lstat per
// file and a hashed reference set, no index and no re-hash. The size is
// GATEHOUSE_GC_ENTRIES (default 20000).
func TestCollectScale(t *testing.T) {
	if testing.Short() {
		t.Skip("creates many files")
	}
	n := 20000
	if v, err := strconv.Atoi(os.Getenv("GATEHOUSE_GC_ENTRIES")); err == nil && v > 0 {
		n = v
	}
	s := openLocked(t, t.TempDir(), "m")
	rel := func(i int) string { return fmt.Sprintf("main/p%03d/p%d.deb", i%1000, i) }
	start, cpu0 := time.Now(), cpuTime()
	sn, err := s.NewSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		c := strconv.Itoa(i)
		h := sum(c)
		writeObject(t, s, h, c)
		if err := sn.UsePool(rel(i), h); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := sn.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	made := cpuTime() - cpu0
	t.Logf("%d entries stored and published in %v (CPU %v)", n, time.Since(start), made)
	start, cpu0 = time.Now(), cpuTime()
	res, err := s.GC(context.Background(), func(yield func(string) bool) {
		for i := range n {
			if i%10 != 0 && !yield(rel(i)) {
				return
			}
		}
	}, 0.5)
	d := cpuTime() - cpu0
	t.Logf("gc of %d entries: %v (CPU %v) (%+v)", n, time.Since(start), d, res)
	if err != nil || res.Removed != n/10 || res.ObjectsRemoved != n/10 {
		t.Fatalf("gc: %+v, %v", res, err)
	}
	if d > made {
		t.Errorf("gc of %d entries took %v CPU, more than storing and publishing them (%v)", n, d, made)
	}
}

// cpuTime is the CPU time (user and system) this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
