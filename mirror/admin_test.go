package mirror

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"gatehouse/apt/apttest"
	"gatehouse/mirror/store"
)

// TestVerifyFindsDamage corrupts, deletes and adds pool files and damages
// an index, and expects Verify to name each.
func TestVerifyFindsDamage(t *testing.T) {
	up := newUpstream(t)
	state := t.TempDir()
	cfg := up.config()
	mustSync(t, state, cfg)
	ctx := context.Background()
	if problems, err := Verify(ctx, state, cfg, testOptions(t)); err != nil || len(problems) != 0 {
		t.Fatalf("verify of a fresh mirror: %v %q", err, problems)
	}
	pool := filepath.Join(StoreRoot(state), testMirror)
	corrupt := up.repo.PoolPath("hello", "1.0-1", "amd64")
	missing := up.repo.PoolPath("libgreet1", "1.2-1", "amd64")
	b, err := os.ReadFile(filepath.Join(pool, corrupt))
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 1 // same size: only the hash can tell
	if err := os.WriteFile(filepath.Join(pool, corrupt), b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(pool, missing)); err != nil {
		t.Fatal(err)
	}
	extra := "pool/main/x/xtra/xtra_1_amd64.deb"
	os.MkdirAll(filepath.Dir(filepath.Join(pool, extra)), 0o755)
	if err := os.WriteFile(filepath.Join(pool, extra), []byte("not referenced"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, cur, err := store.ResolveCurrent(StoreRoot(state), testMirror)
	if err != nil {
		t.Fatal(err)
	}
	idx := filepath.Join(cur, "dists/stable/main/binary-amd64/Packages.gz")
	if err := os.Remove(idx); err != nil { // breaks the link, leaves by-hash intact
		t.Fatal(err)
	}
	if err := os.WriteFile(idx, []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}

	problems, err := Verify(ctx, state, cfg, testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("problems:\n%s", strings.Join(problems, "\n"))
	for _, want := range []string{"corrupted: " + corrupt, "missing: " + missing, "extra: " + extra, "corrupted: dists/stable/main/binary-amd64/Packages.gz"} {
		if !slices.ContainsFunc(problems, func(p string) bool { return strings.HasPrefix(p, want) }) {
			t.Errorf("verify did not report %q", want)
		}
	}
	// The removed pool file's object is left unlinked: a note, not a problem.
	if n := len(slices.DeleteFunc(slices.Clone(problems), func(p string) bool { return !IsProblem(p) })); n != 4 {
		t.Errorf("verify reported %d problems, want 4", n)
	}
}

// TestGCRollbackStatus: old snapshots are pruned, unreferenced pool files
// collected, rollback republishes an older snapshot that apt can read, and
// status reports the suites and warns about expiry.
func TestGCRollbackStatus(t *testing.T) {
	s := testSuite("1.0-1")
	s.ValidUntil = time.Now().Add(24 * time.Hour) // under two days: warn
	up := newUpstream(t, s)
	state := t.TempDir()
	cfg := up.config()
	cfg.KeepSnapshots = 2
	cfg.MaxDeleteFraction = 1
	ctx := context.Background()
	first := mustSync(t, state, cfg)
	oldHello := up.repo.PoolPath("hello", "1.0-1", "amd64")
	for _, v := range []string{"1.1-1", "1.2-1"} {
		s := testSuite(v)
		s.ValidUntil = time.Now().Add(24 * time.Hour)
		if err := up.repo.Rebuild(s); err != nil {
			t.Fatal(err)
		}
		rep := mustSync(t, state, cfg)
		if rep.GCError != "" {
			t.Errorf("gc after sync: %s", rep.GCError)
		}
		if v == "1.2-1" && (len(rep.Pruned) != 1 || rep.Pruned[0] != first.Snapshot || rep.GCRemoved == 0) {
			t.Errorf("third sync pruned %v and removed %d files; want the first snapshot and its pool files", rep.Pruned, rep.GCRemoved)
		}
	}
	snaps, err := List(state, cfg)
	if err != nil || len(snaps) != 2 || slices.ContainsFunc(snaps, func(s store.SnapshotInfo) bool { return s.ID == first.Snapshot }) {
		t.Fatalf("after three syncs with keep 2: %v %+v", err, snaps)
	}
	if _, err := os.Stat(filepath.Join(StoreRoot(state), testMirror, oldHello)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pool file of the pruned snapshot still there: %v", err)
	}
	if removed, _, err := GC(ctx, state, cfg, testOptions(t)); err != nil || removed != 0 {
		t.Errorf("second gc: removed %d, %v", removed, err)
	}

	st, err := Status(state, cfg, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if st.Published != snaps[1].ID || len(st.Suites) != 1 || st.Suites[0].Warn == "" || st.PoolFiles == 0 ||
		st.LastSync == nil || st.LastSync.Result != ResultPublished {
		t.Errorf("status: %+v", st)
	}

	if err := Rollback(state, cfg, ""); err != nil {
		t.Fatal(err)
	}
	if id, _, err := store.ResolveCurrent(StoreRoot(state), testMirror); err != nil || id != snaps[0].ID {
		t.Fatalf("after rollback current = %s, %v; want %s", id, err, snaps[0].ID)
	}
	apt := apttest.AptClient(t, up.repo.SourcesLine(serveMirror(t, state), "stable", "main"))
	if out, err := apt.Update(); err != nil {
		t.Fatalf("apt-get update after rollback: %v\n%s", err, out)
	}
	if out, err := apt.Run("install", "--download-only", "hello=1.1-1"); err != nil {
		t.Fatalf("rolled-back version not installable: %v\n%s", err, out)
	}
	if problems, err := Verify(ctx, state, cfg, testOptions(t)); err != nil || len(problems) != 0 {
		t.Errorf("verify after rollback: %v %q", err, problems)
	}
	// The next sync brings the newest upstream state back (not "current").
	if rep := mustSync(t, state, cfg); rep.Result != ResultPublished {
		t.Errorf("sync after rollback: %+v", rep)
	}
	if err := Rollback(state, cfg, "20000101T000000Z"); err == nil {
		t.Error("rollback to a snapshot that does not exist succeeded")
	}
}

// TestGCWipeProtection: GC refuses to delete most of the pool at once.
func TestGCWipeProtection(t *testing.T) {
	up := newUpstream(t)
	state := t.TempDir()
	cfg := up.config()
	mustSync(t, state, cfg)
	pool := filepath.Join(StoreRoot(state), testMirror, "pool/main/z")
	os.MkdirAll(pool, 0o755)
	for i := range 20 {
		os.WriteFile(filepath.Join(pool, "junk"+string(rune('a'+i))), []byte("x"), 0o644)
	}
	_, _, err := GC(context.Background(), state, cfg, testOptions(t))
	if !errors.Is(err, store.ErrWipeProtection) {
		t.Fatalf("gc deleting 20 of 26 files: %v", err)
	}
	cfg.MaxDeleteFraction = 1
	if removed, _, err := GC(context.Background(), state, cfg, testOptions(t)); err != nil || removed != 20 {
		t.Fatalf("gc with max_delete_fraction 1: removed %d, %v", removed, err)
	}
}

// TestSyncGCWipeProtection: when an upstream drops most of its packages,
// the sync publishes but its cleanup deletes nothing and says why.
func TestSyncGCWipeProtection(t *testing.T) {
	up := newUpstream(t, testSuite("1.0-1", manyPackages(16)...))
	state := t.TempDir()
	cfg := up.config()
	cfg.KeepSnapshots = 1
	mustSync(t, state, cfg)
	files := len(poolFiles(t, state))
	if err := up.repo.Rebuild(testSuite("1.0-1")); err != nil {
		t.Fatal(err)
	}
	rep := mustSync(t, state, cfg)
	if rep.Result != ResultPublished || !strings.Contains(rep.GCError, "refusing") || rep.GCRemoved != 0 {
		t.Fatalf("sync after upstream dropped 16 packages: %+v", rep)
	}
	if n := len(poolFiles(t, state)); n != files {
		t.Errorf("pool went from %d to %d files", files, n)
	}
	// Nor is the old snapshot pruned: pool/ would then serve files that
	// no retained snapshot names.
	st, err := store.Open(StoreRoot(state), testMirror)
	if err != nil {
		t.Fatal(err)
	}
	if snaps, err := st.Snapshots(); err != nil || len(snaps) != 2 || len(rep.Pruned) != 0 {
		t.Errorf("wipe-protected cleanup left %d snapshots (%v), reported pruned %v; want both kept", len(snaps), err, rep.Pruned)
	}
	cfg.MaxDeleteFraction = 1
	if removed, _, err := GC(context.Background(), state, cfg, testOptions(t)); err != nil || removed != 48 { // 16 .debs, .dsc and tarball each
		t.Errorf("gc with max_delete_fraction 1: removed %d, %v", removed, err)
	}
}
