package mirror

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"gatehouse/apt/apttest"
	"gatehouse/apt/repobuild"
	"gatehouse/mirror/store"
)

// problemsOnly drops Verify's notes.
func problemsOnly(lines []string) []string {
	return slices.DeleteFunc(slices.Clone(lines), func(l string) bool { return !IsProblem(l) })
}

func mustVerify(t *testing.T, state string, cfg Config) {
	t.Helper()
	lines, err := Verify(context.Background(), state, cfg, testOptions(t))
	if err != nil || len(problemsOnly(lines)) != 0 {
		t.Fatalf("verify: %v %q", err, lines)
	}
}

// helloSuite is testSuite with hello replaced by h.
func helloSuite(h apttest.Package, extra ...apttest.Package) apttest.Suite {
	s := testSuite("1.0-1", extra...)
	pk := s.Packages["main"]
	for i := range pk {
		if pk[i].Name == "hello" {
			pk[i] = h
		}
	}
	return s
}

func helloPkg() apttest.Package { return testPackages("1.0-1")[0] }

// aptHello downloads hello with a fresh apt client from base and returns
// the bytes it got.
func aptHello(t *testing.T, up *upstream, base string) []byte {
	t.Helper()
	apt := apttest.AptClient(t, up.repo.SourcesLine(base, "stable", "main"))
	if out, err := apt.Update(); err != nil {
		t.Fatalf("apt-get update: %v\n%s", err, out)
	}
	if out, err := apt.InstallDownloadOnly("hello"); err != nil {
		t.Fatalf("apt-get install --download-only hello: %v\n%s", err, out)
	}
	b, err := os.ReadFile(filepath.Join(apt.ArchivesDir(), filepath.Base(up.repo.PoolPath("hello", "1.0-1", "amd64"))))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func upstreamHello(t *testing.T, up *upstream) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(up.repo.Dir, up.repo.PoolPath("hello", "1.0-1", "amd64")))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRebuiltFileFailedSync: the upstream rebuilds hello under the same
// Filename with another size, and the next sync fails after it fetched the
// new hello. The published snapshot still gives apt the old file, verify
// is clean, and nothing of the new file is served.
func TestRebuiltFileFailedSync(t *testing.T) {
	up := newUpstream(t)
	state := t.TempDir()
	cfg := up.config()
	cfg.Concurrency = 1 // index order: hello before zzz-broken
	mustSync(t, state, cfg)
	old := upstreamHello(t, up)
	before := publishedTree(t, state)

	h := helloPkg()
	h.Size = 5000
	broken := apttest.Package{Name: "zzz-broken", Version: "1", Arch: "amd64"}
	if err := up.repo.RebuildChanged([]string{"hello_1.0-1_amd64"}, helloSuite(h, broken)); err != nil {
		t.Fatal(err)
	}
	changed := upstreamHello(t, up)
	if len(changed) == len(old) {
		t.Fatal("the rebuilt hello has the old size")
	}
	up.srv.SetFault(up.repo.PoolPath("zzz-broken", "1", "amd64"), apttest.Fault{Status: 404})
	rep, err := Sync(context.Background(), state, cfg, testOptions(t))
	if err == nil || rep.Result != ResultFailed {
		t.Fatalf("sync with a missing pool file: %+v, %v", rep, err)
	}
	if n := up.srv.Count(up.repo.PoolPath("hello", "1.0-1", "amd64")); n == 0 {
		t.Fatal("the failed sync did not fetch the rebuilt hello first; the test proves nothing")
	}
	checkUnchanged(t, before, publishedTree(t, state))
	lines, err := Verify(context.Background(), state, cfg, testOptions(t))
	if err != nil || len(problemsOnly(lines)) != 0 {
		t.Fatalf("verify after the failed sync: %v %q", err, lines)
	}
	if !slices.ContainsFunc(lines, func(l string) bool { return strings.HasPrefix(l, "note: ") && strings.Contains(l, "mirror gc") }) {
		t.Errorf("verify does not mention the unreferenced download: %q", lines)
	}
	if got := aptHello(t, up, serveMirror(t, state)); !bytes.Equal(got, old) {
		t.Fatal("apt got other bytes than the published hello")
	}

	// The next sync succeeds and resumes: the rebuilt hello is not
	// fetched again.
	up.srv.ClearFaults()
	up.srv.ResetRequests()
	if err := up.repo.Rebuild(helloSuite(h)); err != nil {
		t.Fatal(err)
	}
	mustSync(t, state, cfg)
	if n := up.srv.Count(up.repo.PoolPath("hello", "1.0-1", "amd64")); n != 0 {
		t.Errorf("the rebuilt hello was fetched again (%d requests)", n)
	}
	if got := aptHello(t, up, serveMirror(t, state)); !bytes.Equal(got, changed) {
		t.Fatal("apt did not get the rebuilt hello from the new snapshot")
	}
	mustVerify(t, state, cfg)
	if rm, _, err := GC(context.Background(), state, cfg, testOptions(t)); err != nil {
		t.Fatalf("gc: removed %d, %v", rm, err)
	}
	if lines, _ := Verify(context.Background(), state, cfg, testOptions(t)); len(lines) != 0 {
		t.Errorf("verify after gc: %q", lines)
	}
}

// TestRebuiltFileSameSize: the upstream changes hello's bytes but not its
// size. The new snapshot serves the new bytes (an override), older
// snapshots keep the old ones, rollback gives a fresh apt client the old
// file, and GC after pruning leaves a sound mirror.
func TestRebuiltFileSameSize(t *testing.T) {
	up := newUpstream(t)
	state := t.TempDir()
	cfg := up.config()
	cfg.MaxDeleteFraction = 1
	first := mustSync(t, state, cfg)
	old := upstreamHello(t, up)
	v, err := repobuild.SameSizeVariant(context.Background(), helloPkg())
	if err != nil {
		t.Fatal(err)
	}
	if err := up.repo.RebuildChanged([]string{"hello_1.0-1_amd64"}, helloSuite(v)); err != nil {
		t.Fatal(err)
	}
	changed := upstreamHello(t, up)
	if len(changed) != len(old) || bytes.Equal(changed, old) {
		t.Fatal("the variant is not same-size, other-bytes")
	}
	second := mustSync(t, state, cfg)
	if second.Result != ResultPublished {
		t.Fatalf("second sync: %+v", second)
	}
	mdir := filepath.Join(StoreRoot(state), testMirror)
	rel := strings.TrimPrefix(up.repo.PoolPath("hello", "1.0-1", "amd64"), "pool/")
	if b, err := os.ReadFile(filepath.Join(mdir, store.SnapshotsDir, second.Snapshot, store.PoolDir, rel)); err != nil || !bytes.Equal(b, changed) {
		t.Errorf("the new snapshot has no override with the new bytes: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(mdir, store.PoolDir, rel)); !bytes.Equal(b, old) {
		t.Error("the shared pool file changed under the first snapshot")
	}
	base := serveMirror(t, state)
	if got := aptHello(t, up, base); !bytes.Equal(got, changed) {
		t.Fatal("apt did not get the new bytes from the new snapshot")
	}
	mustVerify(t, state, cfg)

	if err := Rollback(state, cfg, first.Snapshot); err != nil {
		t.Fatal(err)
	}
	if got := aptHello(t, up, base); !bytes.Equal(got, old) {
		t.Fatal("after rollback a fresh apt client did not get the old bytes")
	}
	mustVerify(t, state, cfg)
	if err := Rollback(state, cfg, second.Snapshot); err != nil {
		t.Fatal(err)
	}

	// Prune the first snapshot: the old bytes go, the new ones move to
	// the shared pool on a later publish, and apt keeps getting them.
	cfg.KeepSnapshots = 1
	s := helloSuite(v, apttest.Package{Name: "extra", Version: "1", Arch: "amd64"})
	for range 2 {
		if err := up.repo.Rebuild(s); err != nil {
			t.Fatal(err)
		}
		if rep := mustSync(t, state, cfg); rep.GCError != "" {
			t.Fatalf("gc after sync: %s", rep.GCError)
		}
		s.Packages["main"] = append(s.Packages["main"], apttest.Package{Name: fmt.Sprintf("extra%d", len(s.Packages["main"])), Version: "1", Arch: "amd64"})
	}
	if b, _ := os.ReadFile(filepath.Join(mdir, store.PoolDir, rel)); !bytes.Equal(b, changed) {
		t.Error("after the old snapshots were pruned, pool/ does not hold the new bytes")
	}
	if got := aptHello(t, up, base); !bytes.Equal(got, changed) {
		t.Fatal("apt did not get the new bytes after pruning")
	}
	if lines, err := Verify(context.Background(), state, cfg, testOptions(t)); err != nil || len(lines) != 0 {
		t.Fatalf("verify after pruning: %v %q", err, lines)
	}
}

// readmeNginx returns the nginx server block README.md documents.
func readmeNginx(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "# gatehouse mirror: nginx\n")
	block, _, ok2 := strings.Cut(rest, "# end\n")
	if !ok || !ok2 {
		t.Fatal("README.md has no nginx block between \"# gatehouse mirror: nginx\" and \"# end\"")
	}
	return block
}

// startNginxStore runs a real nginx with README's configuration, listen and
// root replaced, and returns its base URL for the test mirror.
func startNginxStore(t *testing.T, root string) string {
	t.Helper()
	addr, _ := apttest.Nginx(t, func(addr string) string {
		server := readmeNginx(t)
		server = strings.Replace(server, "listen 8080;", "listen "+addr+";", 1)
		return strings.Replace(server, "root /var/lib/gatehouse/mirrors;", "root "+root+";", 1)
	}, "")
	return "http://" + addr + "/" + testMirror
}

// TestNginxServesStore runs real apt against a stock nginx configured as
// README.md says: it gets the published snapshot, a changed file's new
// bytes from the override layer, the old ones after a rollback, and
// nothing an unpublished sync downloaded.
func TestNginxServesStore(t *testing.T) {
	up := newUpstream(t)
	state := t.TempDir()
	cfg := up.config()
	first := mustSync(t, state, cfg)
	old := upstreamHello(t, up)
	base := startNginxStore(t, StoreRoot(state))
	if got := aptHello(t, up, base); !bytes.Equal(got, old) {
		t.Fatal("apt through nginx did not get hello")
	}
	v, err := repobuild.SameSizeVariant(context.Background(), helloPkg())
	if err != nil {
		t.Fatal(err)
	}
	if err := up.repo.RebuildChanged([]string{"hello_1.0-1_amd64"}, helloSuite(v)); err != nil {
		t.Fatal(err)
	}
	changed := upstreamHello(t, up)
	mustSync(t, state, cfg)
	if got := aptHello(t, up, base); !bytes.Equal(got, changed) {
		t.Fatal("apt through nginx did not get the new bytes of the new snapshot")
	}
	if err := Rollback(state, cfg, first.Snapshot); err != nil {
		t.Fatal(err)
	}
	if got := aptHello(t, up, base); !bytes.Equal(got, old) {
		t.Fatal("apt through nginx did not get the old bytes after rollback")
	}
	// Store internals are not served.
	for _, p := range []string{"/objects/", "/.lock", "/state.json", "/snapshots/" + first.Snapshot + "/gatehouse-manifest.json", "/current/gatehouse-manifest.json"} {
		resp, err := httpGet(base + p)
		if err != nil {
			t.Fatal(err)
		}
		if resp != 404 {
			t.Errorf("nginx answers %s with %d, want 404", p, resp)
		}
	}
}

func httpGet(u string) (int, error) {
	resp, err := http.Get(u)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// TestAirgapRebuiltFile: the upstream rebuilds hello under the same
// Filename (same size, other bytes); the incremental bundle must carry the
// new bytes (the receiver has that path with the old content), the import
// publishes them as an override, and apt on the inner side gets them.
func TestAirgapRebuiltFile(t *testing.T) {
	ctx := context.Background()
	up, cfg, stateA, stateB, key, trusted, out := agPair(t)
	old := upstreamHello(t, up)

	v, err := repobuild.SameSizeVariant(ctx, helloPkg())
	if err != nil {
		t.Fatal(err)
	}
	if err := up.repo.RebuildChanged([]string{"hello_1.0-1_amd64"}, helloSuite(v)); err != nil {
		t.Fatal(err)
	}
	changed := upstreamHello(t, up)
	mustSync(t, stateA, cfg)
	b2 := filepath.Join(out, "b2.tar")
	man2, err := Export(ctx, stateA, []Config{cfg}, b2, filepath.Join(out, "b1.tar"), key, 0, testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	hello := up.repo.PoolPath("hello", "1.0-1", "amd64")
	if got := agPoolPaths(man2); !slices.Contains(got, hello) {
		t.Fatalf("incremental bundle pool files %q lack the rebuilt %s", got, hello)
	}
	agImport(t, stateB, cfg, b2, trusted)
	if got := aptHello(t, up, serveMirror(t, stateB)); !bytes.Equal(got, changed) || bytes.Equal(got, old) {
		t.Fatal("apt on the inner side did not get the rebuilt hello")
	}
}
