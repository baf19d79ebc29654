package mirror

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"gatehouse/apt/apttest"
	"gatehouse/mirror/store"
)

// TestSyncServeApt syncs a real repository, serves it, and lets the real
// apt-get update and download from the mirror; then a no-op sync costs one
// conditional request, and a new upstream state reaches apt.
func TestSyncServeApt(t *testing.T) {
	up := newUpstream(t)
	state := t.TempDir()
	cfg := up.config()
	rep := mustSync(t, state, cfg)
	if rep.Result != ResultPublished || rep.Snapshot == "" || rep.FilesFetched == 0 {
		t.Fatalf("first sync: %+v", rep)
	}
	if len(rep.Suites) != 1 || !rep.Suites[0].Changed || len(rep.Suites[0].SignedBy) != 1 || rep.Suites[0].Date.IsZero() {
		t.Errorf("suite report: %+v", rep.Suites)
	}

	base := serveMirror(t, state)
	apt := apttest.AptClient(t, up.repo.SourcesLine(base, "stable", "main"))
	if out, err := apt.Update(); err != nil {
		t.Fatalf("apt-get update from the mirror: %v\n%s", err, out)
	}
	if out, err := apt.InstallDownloadOnly("hello"); err != nil {
		t.Fatalf("apt-get install --download-only: %v\n%s", err, out)
	}
	for _, p := range []struct{ name, ver, arch string }{{"hello", "1.0-1", "amd64"}, {"libgreet1", "1.2-1", "amd64"}, {"hello-data", "1.0-1", "all"}} {
		rel := up.repo.PoolPath(p.name, p.ver, p.arch)
		if rel == "" {
			t.Fatalf("upstream has no %s", p.name)
		}
		want, err := os.ReadFile(filepath.Join(up.repo.Dir, rel))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(apt.ArchivesDir(), filepath.Base(rel)))
		if err != nil {
			t.Fatalf("apt did not fetch %s: %v", rel, err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s fetched through the mirror differs from upstream", rel)
		}
	}

	// No-op: exactly one conditional request per suite.
	up.srv.ResetRequests()
	rep = mustSync(t, state, cfg)
	if rep.Result != ResultCurrent || rep.FilesFetched != 0 {
		t.Errorf("no-op sync: %+v", rep)
	}
	if got := up.srv.Requests(); !slices.Equal(got, []string{"dists/stable/InRelease (conditional)"}) {
		t.Errorf("no-op sync requests = %q, want one conditional InRelease", got)
	}

	// A new upstream state: only the changed pool file is fetched.
	if err := up.repo.Rebuild(testSuite("1.1-1")); err != nil {
		t.Fatal(err)
	}
	up.srv.ResetRequests()
	rep2 := mustSync(t, state, cfg)
	if rep2.Result != ResultPublished || rep2.Snapshot == rep.Snapshot {
		t.Fatalf("second sync: %+v", rep2)
	}
	for _, r := range up.srv.Requests() {
		if strings.Contains(r, "libgreet") && strings.HasSuffix(r, ".deb") {
			t.Errorf("unchanged pool file fetched again: %s", r)
		}
	}
	if out, err := apt.Update(); err != nil {
		t.Fatalf("apt-get update after the second sync: %v\n%s", err, out)
	}
	if out, err := apt.Run("install", "--download-only", "hello=1.1-1"); err != nil {
		lists, _ := os.ReadDir(apt.ListsDir())
		for _, l := range lists {
			b, _ := os.ReadFile(filepath.Join(apt.ListsDir(), l.Name()))
			t.Logf("== %s\n%s", l.Name(), b)
		}
		t.Fatalf("apt-get install hello=1.1-1: %v\n%s", err, out)
	}
	problems, err := Verify(context.Background(), state, cfg, testOptions(t))
	if err != nil || len(problems) != 0 {
		t.Errorf("verify after two syncs: %v %q", err, problems)
	}
	snaps, err := List(state, cfg)
	if err != nil || len(snaps) != 2 || !snaps[1].Current {
		t.Errorf("list: %v %+v", err, snaps)
	}
}

// TestNoopTwoSuites: a no-op sync of two suites is two conditional requests.
func TestNoopTwoSuites(t *testing.T) {
	other := otherSuite()
	other.SHA512, other.NoMD5 = true, true
	up := newUpstream(t, testSuite("1.0-1"), other)
	state := t.TempDir()
	cfg := up.config()
	cfg.Suites = []string{"stable", "testing"}
	mustSync(t, state, cfg)
	up.srv.ResetRequests()
	rep := mustSync(t, state, cfg)
	if rep.Result != ResultCurrent {
		t.Errorf("result %q", rep.Result)
	}
	want := []string{"dists/stable/InRelease (conditional)", "dists/testing/InRelease (conditional)"}
	if got := up.srv.Requests(); !slices.Equal(got, want) {
		t.Errorf("requests = %q, want %q", got, want)
	}
}

func TestLockContention(t *testing.T) {
	up := newUpstream(t)
	state := t.TempDir()
	cfg := up.config()
	st, err := store.Open(StoreRoot(state), cfg.Name)
	if err != nil {
		t.Fatal(err)
	}
	unlock, err := st.Lock(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	rep, err := Sync(context.Background(), state, cfg, testOptions(t))
	if !errors.Is(err, store.ErrLocked) || !strings.Contains(err.Error(), "already running (pid") {
		t.Fatalf("second sync: err %v", err)
	}
	if rep.Result != ResultFailed || len(up.srv.Requests()) != 0 {
		t.Errorf("report %+v, requests %q", rep, up.srv.Requests())
	}
}

func TestParseRate(t *testing.T) {
	for in, want := range map[string]int64{"20MiB": 20 << 20, "500k": 500000, "1000": 1000, "1.5Mi": 3 << 19, "2GB/s": 2e9} {
		if got, err := ParseRate(in); err != nil || got != want {
			t.Errorf("ParseRate(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "fast", "-1", "0", "1e30"} {
		if _, err := ParseRate(in); err == nil {
			t.Errorf("ParseRate(%q) accepted", in)
		}
	}
}

// TestAptDuringSyncs runs the real apt-get update in a loop while syncs
// publish new upstream states: no run may see a hash mismatch or a 404.
func TestAptDuringSyncs(t *testing.T) {
	up := newUpstream(t)
	state := t.TempDir()
	cfg := up.config()
	mustSync(t, state, cfg)
	apt := apttest.AptClient(t, up.repo.SourcesLine(serveMirror(t, state), "stable", "main"))
	if out, err := apt.Update(); err != nil {
		t.Fatalf("first apt-get update: %v\n%s", err, out)
	}
	stop := make(chan struct{})
	type result struct {
		runs int
		err  error
	}
	res := make(chan result, 1)
	go func() {
		runs := 0
		for ; runs < 200; runs++ {
			select {
			case <-stop:
				res <- result{runs, nil}
				return
			default:
			}
			if out, err := apt.Update(); err != nil {
				res <- result{runs, fmt.Errorf("apt-get update run %d: %v\n%s", runs, err, out)}
				return
			}
		}
		res <- result{runs, nil}
	}()
	published := 0
	for v := 1; v <= 6; v++ {
		if err := up.repo.Rebuild(testSuite(fmt.Sprintf("1.%d-1", v), manyPackages(v)...)); err != nil {
			t.Fatal(err)
		}
		rep := mustSync(t, state, cfg)
		if rep.Result == ResultPublished {
			published++
		}
	}
	close(stop)
	r := <-res
	if r.err != nil {
		t.Fatal(r.err)
	}
	if published != 6 || r.runs < 2 {
		t.Errorf("%d syncs published, %d apt-get update runs: the test did not overlap them", published, r.runs)
	}
	t.Logf("%d syncs published while apt-get update ran %d times", published, r.runs)
}

// TestSelectionChange: with upstream unchanged, asking for more (here the
// sources) is not "current": the new selection is fetched and published.
func TestSelectionChange(t *testing.T) {
	up := newUpstream(t)
	state := t.TempDir()
	cfg := up.config()
	cfg.Sources = false
	mustSync(t, state, cfg)
	cfg.Sources = true
	rep := mustSync(t, state, cfg)
	if rep.Result != ResultPublished {
		t.Fatalf("sync with sources added: %+v", rep)
	}
	_, cur, err := store.ResolveCurrent(StoreRoot(state), testMirror)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(cur, "dists/stable/main/source/Sources.xz")); err != nil {
		t.Errorf("sources not published: %v", err)
	}
	if problems, err := Verify(context.Background(), state, cfg, testOptions(t)); err != nil || len(problems) != 0 {
		t.Errorf("verify: %v %q", err, problems)
	}
	if rep := mustSync(t, state, cfg); rep.Result != ResultCurrent {
		t.Errorf("third sync: %q, want current", rep.Result)
	}
}

// TestReleaseGPGOnly: an upstream without InRelease is synced from Release
// and Release.gpg, which apt then reads from the mirror.
func TestReleaseGPGOnly(t *testing.T) {
	up := newUpstream(t)
	if err := os.Remove(filepath.Join(up.repo.Dir, "dists/stable/InRelease")); err != nil {
		t.Fatal(err)
	}
	state := t.TempDir()
	cfg := up.config()
	if rep := mustSync(t, state, cfg); rep.Result != ResultPublished {
		t.Fatalf("sync: %+v", rep)
	}
	apt := apttest.AptClient(t, up.repo.SourcesLine(serveMirror(t, state), "stable", "main"))
	if out, err := apt.Update(); err != nil {
		t.Fatalf("apt-get update: %v\n%s", err, out)
	}
	up.srv.ResetRequests()
	if rep := mustSync(t, state, cfg); rep.Result != ResultCurrent {
		t.Errorf("no-op sync: %+v", rep)
	}
	want := []string{"dists/stable/InRelease (conditional)", "dists/stable/Release (conditional)"}
	if got := up.srv.Requests(); !slices.Equal(got, want) {
		t.Errorf("no-op requests %q, want %q", got, want)
	}
	// A Release.gpg by someone else is refused.
	if err := up.repo.Rebuild(testSuite("1.1-1")); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(up.repo.Dir, "dists/stable/InRelease"))
	rel, _ := os.ReadFile(filepath.Join(up.repo.Dir, "dists/stable/Release"))
	sig, err := apttest.NewKey(t, "ed25519").DetachSign(rel, true, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(up.repo.Dir, "dists/stable/Release.gpg"), sig, 0o644)
	if _, err := Sync(context.Background(), state, cfg, testOptions(t)); !errors.Is(err, ErrRefused) {
		t.Errorf("Release.gpg by an unknown key: %v", err)
	}
}

// TestMissingPoolFile: a pool file the index lists but upstream lacks fails
// the sync (not a refusal: nothing lied) unless tolerate_missing is set.
func TestMissingPoolFile(t *testing.T) {
	up := newUpstream(t)
	state := t.TempDir()
	cfg := up.config()
	mustSync(t, state, cfg)
	before := publishedTree(t, state)
	if err := up.repo.Rebuild(testSuite("1.0-1", apttest.Package{Name: "gone", Version: "1", Arch: "amd64"})); err != nil {
		t.Fatal(err)
	}
	gone := up.repo.PoolPath("gone", "1", "amd64")
	up.srv.SetFault(gone, apttest.Fault{Status: 404})
	rep, err := Sync(context.Background(), state, cfg, testOptions(t))
	if err == nil || errors.Is(err, ErrRefused) || rep.Result != ResultFailed || !strings.Contains(err.Error(), "tolerate_missing") {
		t.Fatalf("sync with a missing pool file: %q, %v", rep.Result, err)
	}
	checkUnchanged(t, before, publishedTree(t, state))
	cfg.TolerateMissing = true
	rep = mustSync(t, state, cfg)
	if rep.Result != ResultPublished || !slices.Equal(rep.Missing, []string{gone}) {
		t.Errorf("tolerated: %+v", rep)
	}
}

// TestFlakyUpstream: transient failures are retried and by-hash names that
// upstream lacks fall back to the canonical ones; the result is complete.
func TestFlakyUpstream(t *testing.T) {
	up := newUpstream(t)
	up.srv.SetFault("dists/stable/InRelease", apttest.Fault{Status: 503, Times: 1})
	up.srv.SetFault("dists/stable/main/binary-amd64/by-hash", apttest.Fault{Status: 404})
	hello := up.repo.PoolPath("hello", "1.0-1", "amd64")
	up.srv.SetFault(hello, apttest.Fault{TruncateAt: 100, Times: 1})
	state := t.TempDir()
	cfg := up.config()
	opt := testOptions(t)
	opt.Fetch.Retries = 2
	rep, err := Sync(context.Background(), state, cfg, opt)
	if err != nil || rep.Result != ResultPublished {
		t.Fatalf("sync: %v %+v", err, rep)
	}
	if n := up.srv.Count(hello); n != 2 {
		t.Errorf("%s requested %d times, want 2 (one truncated, one retry)", hello, n)
	}
	if problems, err := Verify(context.Background(), state, cfg, testOptions(t)); err != nil || len(problems) != 0 {
		t.Errorf("verify: %v %q", err, problems)
	}
	apt := apttest.AptClient(t, up.repo.SourcesLine(serveMirror(t, state), "stable", "main"))
	if out, err := apt.Update(); err != nil {
		t.Fatalf("apt-get update: %v\n%s", err, out)
	}
}

// TestIndexVariants: every index Release lists for the selection is
// mirrored in every variant upstream has, with by-hash names.
func TestIndexVariants(t *testing.T) {
	up := newUpstream(t)
	state := t.TempDir()
	mustSync(t, state, up.config())
	_, cur, err := store.ResolveCurrent(StoreRoot(state), testMirror)
	if err != nil {
		t.Fatal(err)
	}
	for _, rel := range []string{"InRelease", "main/binary-amd64/Packages", "main/binary-amd64/Packages.gz", "main/binary-amd64/Packages.xz",
		"main/binary-amd64/Release", "main/i18n/Translation-en", "main/Contents-amd64.gz", "main/source/Sources.xz"} {
		p := filepath.Join(cur, "dists/stable", rel)
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s not mirrored: %v", rel, err)
			continue
		}
		if rel == "InRelease" {
			continue
		}
		byHash := filepath.Join(cur, "dists/stable", filepath.Dir(rel), "by-hash/SHA256", sha256File(t, p))
		if _, err := os.Stat(byHash); err != nil {
			t.Errorf("%s has no by-hash copy: %v", rel, err)
		}
	}
}

// TestByHashGenerations: the published snapshot holds the by-hash indexes
// of the last KeepSnapshots generations besides its own, and no older ones.
func TestByHashGenerations(t *testing.T) {
	up := newUpstream(t)
	state := t.TempDir()
	cfg := up.config()
	cfg.KeepSnapshots = 2
	var gens []string // by-hash path of Packages.xz per generation
	for v := range 5 {
		if v > 0 {
			if err := up.repo.Rebuild(testSuite(fmt.Sprintf("1.%d-1", v))); err != nil {
				t.Fatal(err)
			}
		}
		gens = append(gens, indexURLs(t, up, "main/binary-amd64/Packages.xz")[1])
		mustSync(t, state, cfg)
	}
	_, cur, err := store.ResolveCurrent(StoreRoot(state), testMirror)
	if err != nil {
		t.Fatal(err)
	}
	for i, g := range gens {
		_, err := os.Stat(filepath.Join(cur, g))
		if want := i >= len(gens)-1-cfg.KeepSnapshots; want != (err == nil) {
			t.Errorf("generation %d (%s): present %t, want %t", i, g, err == nil, want)
		}
	}
}
