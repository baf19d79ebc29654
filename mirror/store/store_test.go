package store

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeClock returns strictly increasing times one second apart, so every
// snapshot gets a distinct, ordered ID without sleeping.
func fakeClock() func() time.Time {
	var mu sync.Mutex
	t := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	return func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		t = t.Add(time.Second)
		return t
	}
}

func openLocked(t *testing.T, root, name string) *Store {
	t.Helper()
	s, err := Open(root, name)
	if err != nil {
		t.Fatal(err)
	}
	s.Now = fakeClock()
	unlock, err := s.Lock(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(unlock)
	return s
}

func writeFile(t testing.TB, p, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// buildGen writes a complete generation: n files plus a MANIFEST written
// last, naming the generation and the files. checkGen proves a snapshot is
// complete by that manifest.
func buildGen(t testing.TB, sn *Snapshot, gen, n int) {
	t.Helper()
	var names []string
	for i := range n {
		rel := fmt.Sprintf("dists/stable/main/f%d", i)
		p, err := sn.Path(rel)
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, p, fmt.Sprintf("gen %d file %d %s", gen, i, strings.Repeat("x", 2000)))
		names = append(names, rel)
	}
	p, err := sn.Path("dists/stable/MANIFEST")
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, p, fmt.Sprintf("%d\n%s\n", gen, strings.Join(names, "\n")))
}

func checkGen(dir string) (gen int, err error) {
	b, err := os.ReadFile(filepath.Join(dir, "dists/stable/MANIFEST"))
	if err != nil {
		return 0, err
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if _, err := fmt.Sscan(lines[0], &gen); err != nil {
		return 0, fmt.Errorf("manifest: %v", err)
	}
	for i, rel := range lines[1:] {
		got, err := os.ReadFile(filepath.Join(dir, rel))
		if err != nil {
			return gen, err
		}
		if want := fmt.Sprintf("gen %d file %d %s", gen, i, strings.Repeat("x", 2000)); string(got) != want {
			return gen, fmt.Errorf("%s: content of another generation", rel)
		}
	}
	return gen, nil
}

func TestCommitPublishes(t *testing.T) {
	root := t.TempDir()
	s := openLocked(t, root, "debian")
	if _, err := s.Current(); !errors.Is(err, ErrNoCurrent) {
		t.Fatalf("Current before publish: %v, want ErrNoCurrent", err)
	}
	sn, err := s.NewSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(sn.Dir(), ".tmp") {
		t.Errorf("snapshot dir %s is not a .tmp dir", sn.Dir())
	}
	buildGen(t, sn, 1, 3)
	id, err := sn.Commit(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if id != sn.ID() {
		t.Errorf("Commit id %s, ID() %s", id, sn.ID())
	}
	cur, err := s.Current()
	if err != nil || cur != id {
		t.Fatalf("Current = %q, %v; want %q", cur, err, id)
	}
	rid, dir, err := ResolveCurrent(root, "debian")
	if err != nil || rid != id || dir != filepath.Join(root, "debian", SnapshotsDir, id) {
		t.Fatalf("ResolveCurrent = %q %q %v", rid, dir, err)
	}
	// The symlink is relative, so the state directory can be moved.
	target, _ := os.Readlink(filepath.Join(root, "debian", CurrentLink))
	if target != SnapshotsDir+"/"+id {
		t.Errorf("current -> %q", target)
	}
	if _, err := checkGen(filepath.Join(root, "debian", CurrentLink)); err != nil {
		t.Error(err)
	}
	snaps, err := s.Snapshots()
	if err != nil || len(snaps) != 1 || !snaps[0].Current || snaps[0].ID != id {
		t.Errorf("Snapshots = %+v, %v", snaps, err)
	}
	if _, err := sn.Commit(context.Background()); err == nil {
		t.Error("second Commit succeeded")
	}
	if err := sn.Abort(); err != nil {
		t.Errorf("Abort after Commit: %v", err)
	}
	if _, err := checkGen(dir); err != nil {
		t.Errorf("Abort after Commit damaged the snapshot: %v", err)
	}
}

func TestMutationsRequireLock(t *testing.T) {
	s, err := Open(t.TempDir(), "m")
	if err != nil {
		t.Fatal(err)
	}
	_, err1 := s.NewSnapshot()
	_, err2 := s.Prune(1)
	_, err3 := s.GC(context.Background(), slices.Values([]string{}), 0)
	err4 := s.Rollback("20260102T030405Z")
	err5 := s.WriteState(State{})
	for i, err := range []error{err1, err2, err3, err4, err5} {
		if !errors.Is(err, ErrNotLocked) {
			t.Errorf("op %d without lock: %v, want ErrNotLocked", i+1, err)
		}
	}
}

func TestLockContention(t *testing.T) {
	root := t.TempDir()
	s1, _ := Open(root, "debian")
	s2, _ := Open(root, "debian")
	unlock, err := s1.Lock(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	_, err = s2.Lock(context.Background())
	var le *LockedError
	if !errors.As(err, &le) || !errors.Is(err, ErrLocked) {
		t.Fatalf("second Lock: %v, want LockedError", err)
	}
	wantPrefix := fmt.Sprintf("sync of mirror debian already running (pid %d since ", os.Getpid())
	if !strings.HasPrefix(err.Error(), wantPrefix) || le.Since.IsZero() {
		t.Errorf("message %q, want prefix %q and a time", err, wantPrefix)
	}
	if _, err := s1.Lock(context.Background()); err == nil {
		t.Error("re-Lock of the same Store succeeded")
	}
	// Another mirror is independent.
	s3, _ := Open(root, "ubuntu")
	if u, err := s3.Lock(context.Background()); err != nil {
		t.Errorf("lock of another mirror: %v", err)
	} else {
		u()
	}
	unlock()
	unlock() // idempotent
	u2, err := s2.Lock(context.Background())
	if err != nil {
		t.Fatalf("Lock after unlock: %v", err)
	}
	u2()
}

func TestAbortLeavesCurrent(t *testing.T) {
	s := openLocked(t, t.TempDir(), "m")
	sn, _ := s.NewSnapshot()
	buildGen(t, sn, 1, 2)
	id1, err := sn.Commit(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	sn2, _ := s.NewSnapshot()
	buildGen(t, sn2, 2, 2)
	if err := sn2.Abort(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(sn2.Dir()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("aborted dir still there: %v", err)
	}
	if cur, _ := s.Current(); cur != id1 {
		t.Errorf("current = %s, want %s", cur, id1)
	}
	if _, err := sn2.Commit(context.Background()); err == nil {
		t.Error("Commit after Abort succeeded")
	}
	// A cancelled context refuses to commit and leaves current alone.
	sn3, _ := s.NewSnapshot()
	buildGen(t, sn3, 3, 2)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := sn3.Commit(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Commit with cancelled ctx: %v", err)
	}
	if cur, _ := s.Current(); cur != id1 {
		t.Errorf("current = %s after cancelled commit, want %s", cur, id1)
	}
}

func TestInterruptedSnapshotCleaned(t *testing.T) {
	root := t.TempDir()
	s, _ := Open(root, "m")
	s.Now = fakeClock()
	unlock, _ := s.Lock(context.Background())
	sn, _ := s.NewSnapshot()
	buildGen(t, sn, 1, 2)
	writeFile(t, filepath.Join(s.Dir(), CurrentLink+TempPrefix+"x"), "")
	unlock() // as if the process died: no Abort
	s2 := openLocked(t, root, "m")
	s2.Now = func() time.Time { return time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC) }
	if _, err := s2.NewSnapshot(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(sn.Dir()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("interrupted snapshot left behind: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(s.Dir(), CurrentLink+TempPrefix+"x")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stray current temp link left behind: %v", err)
	}
}

func TestSnapshotIDsWithinOneSecond(t *testing.T) {
	s := openLocked(t, t.TempDir(), "m")
	fixed := time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC)
	s.Now = func() time.Time { return fixed }
	var ids []string
	for i := range 12 {
		sn, err := s.NewSnapshot()
		if err != nil {
			t.Fatal(err)
		}
		buildGen(t, sn, i, 1)
		id, err := sn.Commit(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	snaps, _ := s.Snapshots()
	var listed []string
	for _, sn := range snaps {
		listed = append(listed, sn.ID)
	}
	if !slices.Equal(ids, listed) || ids[1] != "20260506T070809Z-2" {
		t.Errorf("ids %v listed as %v", ids, listed)
	}
}

// TestSwapIsAtomic: readers resolving "current" in a loop, as the server
// does, never see a missing link or an incomplete snapshot while commits
// happen.
func TestSwapIsAtomic(t *testing.T) {
	root := t.TempDir()
	s := openLocked(t, root, "m")
	sn, _ := s.NewSnapshot()
	buildGen(t, sn, 0, 10)
	if _, err := sn.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	var stop atomic.Bool
	var reads atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 2 {
		wg.Go(func() {
			last := 0
			for !stop.Load() {
				_, dir, err := ResolveCurrent(root, "m")
				if err == nil {
					var gen int
					gen, err = checkGen(dir)
					if err == nil && gen < last {
						err = fmt.Errorf("generation went back from %d to %d", last, gen)
					}
					last = gen
				}
				if err != nil {
					errs <- err
					return
				}
				reads.Add(1)
			}
		})
	}
	for gen := 1; gen <= 40; gen++ {
		sn, err := s.NewSnapshot()
		if err != nil {
			t.Fatal(err)
		}
		buildGen(t, sn, gen, 10)
		if _, err := sn.Commit(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	stop.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if reads.Load() < 10 {
		t.Errorf("only %d reads happened", reads.Load())
	}
}

func TestRollbackAndPrune(t *testing.T) {
	s := openLocked(t, t.TempDir(), "m")
	var ids []string
	for gen := range 5 {
		sn, _ := s.NewSnapshot()
		buildGen(t, sn, gen, 1)
		id, err := sn.Commit(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if err := s.Rollback(ids[1]); err != nil {
		t.Fatal(err)
	}
	if cur, _ := s.Current(); cur != ids[1] {
		t.Fatalf("current = %s after rollback to %s", cur, ids[1])
	}
	for _, bad := range []string{"nope", "../../etc", "20991231T000000Z", ids[0] + ".tmp", ""} {
		if err := s.Rollback(bad); err == nil {
			t.Errorf("Rollback(%q) succeeded", bad)
		}
	}
	removed, err := s.Prune(2)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(removed, []string{ids[0], ids[2]}) {
		t.Errorf("Prune(2) removed %v, want %v", removed, []string{ids[0], ids[2]})
	}
	snaps, _ := s.Snapshots()
	var left []string
	for _, sn := range snaps {
		left = append(left, sn.ID)
	}
	if !slices.Equal(left, []string{ids[1], ids[3], ids[4]}) {
		t.Errorf("left %v", left)
	}
	if removed, _ := s.Prune(0); len(removed) != 2 {
		t.Errorf("Prune(0) removed %v; it must keep only current", removed)
	}
	if cur, _ := s.Current(); cur != ids[1] {
		t.Errorf("Prune removed current")
	}
	if _, err := s.Prune(-1); err == nil {
		t.Error("Prune(-1) accepted")
	}
}

func TestLinkFromPreviousSnapshot(t *testing.T) {
	s := openLocked(t, t.TempDir(), "m")
	sn, _ := s.NewSnapshot()
	buildGen(t, sn, 1, 2)
	id1, _ := sn.Commit(context.Background())
	sn2, _ := s.NewSnapshot()
	if err := sn2.Link(id1, "dists/stable/main/f1"); err != nil {
		t.Fatal(err)
	}
	a, _ := os.Stat(filepath.Join(s.Dir(), SnapshotsDir, id1, "dists/stable/main/f1"))
	b, _ := os.Stat(filepath.Join(sn2.Dir(), "dists/stable/main/f1"))
	if !os.SameFile(a, b) {
		t.Error("Link did not hard-link")
	}
	if err := sn2.Link(id1, "dists/stable/missing"); err == nil {
		t.Error("Link of a missing file succeeded")
	}
	if err := sn2.Link(id1, "../"+id1+"/dists/stable/MANIFEST"); err == nil {
		t.Error("Link with .. succeeded")
	}
}

func TestPathEscapes(t *testing.T) {
	root := t.TempDir()
	s := openLocked(t, root, "m")
	outside := t.TempDir()
	writeFile(t, filepath.Join(outside, "secret"), "secret")
	pool := filepath.Join(s.Dir(), PoolDir)
	if err := os.Symlink(outside, filepath.Join(pool, "evil")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(outside, "secret"), filepath.Join(pool, "evil.deb")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(pool, "main", "h", "hello.deb"), "x")
	bad := []string{"", "/etc/passwd", "../x", "main/../../x", "main/..", "./main/x", "main//x", "main/x/", "main\\..\\x", "main/x\x00.deb"}
	for _, rel := range append(bad, "evil/secret", "evil.deb", "main/h/hello.deb/x") {
		if p, err := s.PoolPath(rel); err == nil {
			t.Errorf("PoolPath(%q) = %s, want error", rel, p)
		}
		if s.HasPoolFile(rel, 6) {
			t.Errorf("HasPoolFile(%q) = true", rel)
		}
	}
	p, err := s.PoolPath("main/h/hello.deb")
	if err != nil || p != filepath.Join(pool, "main/h/hello.deb") {
		t.Errorf("PoolPath(good) = %q, %v", p, err)
	}
	if !s.HasPoolFile("main/h/hello.deb", 1) || s.HasPoolFile("main/h/hello.deb", 2) {
		t.Error("HasPoolFile size check wrong")
	}
	if p, err := s.PoolPath("main/n/new_1.0+b1~rc.deb"); err != nil || !strings.HasPrefix(p, pool+"/") {
		t.Errorf("PoolPath of a not-yet-existing file = %q, %v", p, err)
	}
	sn, _ := s.NewSnapshot()
	if err := os.Symlink(outside, filepath.Join(sn.Dir(), "dists")); err != nil {
		t.Fatal(err)
	}
	for _, rel := range append(bad, "dists/x") {
		if p, err := sn.Path(rel); err == nil {
			t.Errorf("Snapshot.Path(%q) = %s, want error", rel, p)
		}
	}
	if _, err := s.SnapshotPath("../..", "x"); err == nil {
		t.Error("SnapshotPath with a bad id succeeded")
	}
	for _, name := range []string{"", ".", "..", ".hidden", "a/b", "a\\b", "a b", strings.Repeat("a", 129)} {
		if _, err := Open(root, name); err == nil {
			t.Errorf("Open(root, %q) succeeded", name)
		}
	}
}

func TestCheckPoolFile(t *testing.T) {
	s := openLocked(t, t.TempDir(), "m")
	p, _ := s.PoolPath("a/b.deb")
	writeFile(t, p, "hello")
	const sum = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
	if err := s.CheckPoolFile("a/b.deb", 5, sum); err != nil {
		t.Error(err)
	}
	if err := s.CheckPoolFile("a/b.deb", 5, strings.Repeat("0", 64)); err == nil {
		t.Error("wrong hash accepted")
	}
	if err := s.CheckPoolFile("a/b.deb", 6, sum); err == nil {
		t.Error("wrong size accepted")
	}
}

func TestGC(t *testing.T) {
	s := openLocked(t, t.TempDir(), "m")
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	s.Now = func() time.Time { return now }
	pool := filepath.Join(s.Dir(), PoolDir)
	files := map[string]string{}
	for i := range 10 {
		rel := fmt.Sprintf("main/p%d/p%d_1.deb", i, i)
		files[rel] = strings.Repeat("d", 100+i)
		writeFile(t, filepath.Join(pool, rel), files[rel])
	}
	oldTemp := filepath.Join(pool, "main/p0/.tmp-123")
	newTemp := filepath.Join(pool, "main/p1/.tmp-456")
	writeFile(t, oldTemp, "partial")
	writeFile(t, newTemp, "partial")
	os.Chtimes(oldTemp, now.Add(-2*time.Hour), now.Add(-2*time.Hour))
	os.Chtimes(newTemp, now.Add(-time.Minute), now.Add(-time.Minute))
	if err := os.Symlink("/etc/passwd", filepath.Join(pool, "main/p2/link.deb")); err != nil {
		t.Fatal(err)
	}

	if files, size, err := s.PoolStats(context.Background()); err != nil || files != 10 || size != 1045 {
		t.Errorf("PoolStats = %d files, %d bytes, %v; want 10, 1045", files, size, err)
	}

	// Wipe protection: an empty reference set must not erase the pool.
	res, err := s.GC(context.Background(), slices.Values([]string(nil)), 0.3)
	if !errors.Is(err, ErrWipeProtection) {
		t.Fatalf("GC with no references: %v, want ErrWipeProtection", err)
	}
	if !strings.Contains(err.Error(), "11 of 10") && !strings.Contains(err.Error(), "of 10 pool files") {
		t.Errorf("message %q lacks counts", err)
	}
	for rel, content := range files {
		if b, err := os.ReadFile(filepath.Join(pool, rel)); err != nil || string(b) != content {
			t.Fatalf("refused GC deleted %s", rel)
		}
	}
	if res.TempRemoved != 1 {
		t.Errorf("refused GC removed %d stale temp files, want 1 (temp files go either way)", res.TempRemoved)
	}

	// Keep 8 of 10 and reference one missing file.
	var refs []string
	for rel := range maps.Keys(files) {
		refs = append(refs, rel)
	}
	slices.Sort(refs)
	refs = append(refs[:8], "main/gone/gone.deb")
	res, err = s.GC(context.Background(), slices.Values(refs), 0.3)
	if err != nil {
		t.Fatal(err)
	}
	if res.Files != 10 || res.Removed != 3 || res.Missing != 1 || res.TempRemoved != 0 {
		t.Errorf("GC result %+v, want 10 files, 3 removed (2 + symlink), 1 missing, no temp left", res)
	}
	for _, rel := range refs[:8] {
		if _, err := os.Stat(filepath.Join(pool, rel)); err != nil {
			t.Errorf("referenced %s removed", rel)
		}
	}
	for _, rel := range []string{"main/p8/p8_1.deb", "main/p9/p9_1.deb", "main/p2/link.deb", "main/p8", "main/p9"} {
		if _, err := os.Lstat(filepath.Join(pool, rel)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still exists: %v", rel, err)
		}
	}
	if _, err := os.Stat(oldTemp); !errors.Is(err, os.ErrNotExist) {
		t.Error("stale temp file kept")
	}
	if _, err := os.Stat(newTemp); err != nil {
		t.Error("fresh temp file removed: a writer may still own it")
	}
	if _, err := s.GC(context.Background(), slices.Values(refs), 1.5); err == nil {
		t.Error("fraction 1.5 accepted")
	}
}

func TestState(t *testing.T) {
	s := openLocked(t, t.TempDir(), "m")
	st, err := s.ReadState()
	if err != nil || st.Version != 0 || st.Suites != nil {
		t.Fatalf("ReadState of nothing = %+v, %v", st, err)
	}
	date := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	want := State{
		Suites:   map[string]SuiteState{"stable": {Date: date, ETag: `"x"`, Snapshot: "20260102T030405Z"}},
		LastSync: &SyncRecord{Started: date, Finished: date.Add(time.Second), Result: "published", Files: 3, Bytes: 99},
		Extra:    []byte(`{"k":1}`),
	}
	if err := s.WriteState(want); err != nil {
		t.Fatal(err)
	}
	got, err := s.ReadState()
	if err != nil {
		t.Fatal(err)
	}
	if got.Version != 1 || !got.Suites["stable"].Date.Equal(date) || got.Suites["stable"].ETag != `"x"` || got.LastSync.Result != "published" || strings.Join(strings.Fields(string(got.Extra)), "") != `{"k":1}` {
		t.Errorf("round trip: %+v", got)
	}
	es, _ := os.ReadDir(s.Dir())
	for _, e := range es {
		if strings.HasPrefix(e.Name(), TempPrefix) {
			t.Errorf("temp file %s left", e.Name())
		}
	}
	writeFile(t, filepath.Join(s.Dir(), StateFile), `{"version":1,"suites":`)
	if _, err := s.ReadState(); err == nil || !strings.Contains(err.Error(), StateFile) {
		t.Errorf("damaged state: %v", err)
	}
	writeFile(t, filepath.Join(s.Dir(), StateFile), `{"version":7}`)
	if _, err := s.ReadState(); err == nil {
		t.Error("future version accepted")
	}
}

func TestOpenDoesNotNeedWritableCurrent(t *testing.T) {
	// ResolveCurrent on a mirror that was never created says so.
	if _, _, err := ResolveCurrent(t.TempDir(), "none"); !errors.Is(err, ErrNoCurrent) {
		t.Errorf("ResolveCurrent of a missing mirror: %v", err)
	}
	root := t.TempDir()
	s, _ := Open(root, "m")
	if err := os.Symlink("/etc", filepath.Join(s.Dir(), CurrentLink)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := ResolveCurrent(root, "m"); err == nil || errors.Is(err, ErrNoCurrent) {
		t.Errorf("current -> /etc resolved: %v", err)
	}
}

// TestSnapshotIDsNeverGoBackwards: after pruning within one second, or a
// clock step backwards, a new snapshot still sorts after every existing one.
func TestSnapshotIDsNeverGoBackwards(t *testing.T) {
	s := openLocked(t, t.TempDir(), "m")
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	s.Now = func() time.Time { return now }
	var ids []string
	commit := func() {
		t.Helper()
		sn, err := s.NewSnapshot()
		if err != nil {
			t.Fatal(err)
		}
		id, err := sn.Commit(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if len(ids) > 0 && compareIDs(id, ids[len(ids)-1]) <= 0 {
			t.Fatalf("snapshot id %s does not sort after %s", id, ids[len(ids)-1])
		}
		ids = append(ids, id)
	}
	commit()
	commit()
	commit()
	if _, err := s.Prune(1); err != nil {
		t.Fatal(err)
	}
	commit() // the first two IDs are free again: must not be reused
	now = now.Add(-time.Hour)
	commit() // clock stepped back
	snaps, err := s.Snapshots()
	if err != nil {
		t.Fatal(err)
	}
	if cur := snaps[len(snaps)-1]; !cur.Current || cur.ID != ids[len(ids)-1] {
		t.Fatalf("newest snapshot %+v is not the current one %s", cur, ids[len(ids)-1])
	}
}

// TestMkdirPoolAndPoolFile: MkdirPool makes nested pool directories once,
// refuses a file or symlink in the way, and PoolFile then sees a file
// placed there; a symlink planted above a pool file is still refused.
func TestMkdirPoolAndPoolFile(t *testing.T) {
	s := openLocked(t, t.TempDir(), "m")
	p, present, err := s.PoolFile("main/h/hello/hello_1_all.deb", 5)
	if err != nil || present {
		t.Fatalf("PoolFile of a missing file: %v %t", err, present)
	}
	for range 2 {
		if err := s.MkdirPool(filepath.Dir(p)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(p, []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, present, err := s.PoolFile("main/h/hello/hello_1_all.deb", 5); err != nil || !present {
		t.Fatalf("PoolFile of a present file: %v %t", err, present)
	}
	if _, present, _ := s.PoolFile("main/h/hello/hello_1_all.deb", 6); present {
		t.Error("a file of the wrong size counts as present")
	}
	if err := s.MkdirPool(p); err == nil {
		t.Error("MkdirPool over a regular file succeeded")
	}
	pool := filepath.Join(s.Dir(), PoolDir)
	if err := os.Symlink(t.TempDir(), filepath.Join(pool, "contrib")); err != nil {
		t.Fatal(err)
	}
	if err := s.MkdirPool(filepath.Join(pool, "contrib")); err == nil {
		t.Error("MkdirPool accepted a symlink as a directory")
	}
	if _, _, err := s.PoolFile("contrib/x/x.deb", 1); err == nil {
		t.Error("PoolFile below a symlink succeeded")
	}
}
