package mirror

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gatehouse/apt/apttest"
	"gatehouse/mirror/store"
)

// pushReplicas returns the absolute path of the shipped replica push
// script, skipping the test when rsync is not installed.
func pushReplicas(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("rsync"); err != nil {
		t.Skip("rsync not installed")
	}
	p, err := filepath.Abs("../contrib/push-replicas")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// sameTree fails unless every file clients of the mirror's published
// snapshot get (dists, and the pool view of the pool files) is in the
// replica root with the same bytes, and the replica holds no dists file
// the snapshot lacks.
func sameTree(t *testing.T, state, replica string) {
	t.Helper()
	id, snap, err := store.ResolveCurrent(StoreRoot(state), testMirror)
	if err != nil {
		t.Fatal(err)
	}
	pool := filepath.Join(StoreRoot(state), testMirror, store.PoolDir)
	n := 0
	err = filepath.WalkDir(filepath.Join(snap, "dists"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(snap, p)
		want, _ := os.ReadFile(p)
		got, err := os.ReadFile(filepath.Join(replica, rel))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("replica %s differs from snapshot %s: %v", rel, id, err)
		}
		n++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	err = filepath.WalkDir(filepath.Join(replica, "dists"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(replica, p)
		if _, err := os.Stat(filepath.Join(snap, rel)); err != nil {
			t.Errorf("replica keeps %s, which snapshot %s does not have", rel, id)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	err = filepath.WalkDir(pool, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasPrefix(d.Name(), ".") {
			return err
		}
		rel, _ := filepath.Rel(pool, p)
		want, _ := os.ReadFile(p)
		if b, err := os.ReadFile(filepath.Join(snap, store.PoolDir, rel)); err == nil {
			want = b
		}
		got, err := os.ReadFile(filepath.Join(replica, store.PoolDir, rel))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("replica pool/%s differs from the pool view of %s: %v", rel, id, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Fatal("snapshot has no dists files")
	}
}

// TestReplicaPushWhileAptLoops: the shipped two-stage push
// (contrib/push-replicas, real rsync) as post_publish copies every
// publish of a by-hash upstream to a directory a stock nginx serves, while
// a real apt client updates and downloads from that nginx in a loop
// through several publishes, one of them a file rebuilt under its name.
// apt must see no hash mismatch and no 404 (nginx's access log agrees),
// and after each push the replica is the published tree.
func TestReplicaPushWhileAptLoops(t *testing.T) {
	script := pushReplicas(t)
	if testing.Short() {
		t.Skip("runs apt in a loop")
	}
	// big is new in every round and takes the push seconds to copy: a
	// push that sent indexes before pool files would leave apt a window
	// of 404s, one that sent InRelease before by-hash files a window of
	// 404s on indexes.
	big := func(round int) apttest.Package {
		return apttest.Package{Name: "big", Version: fmt.Sprintf("1.%d", round), Arch: "amd64", Size: 200_000}
	}
	up := newUpstream(t, testSuite("1.0-1", append(manyPackages(16), big(0))...))
	state := t.TempDir()
	replica := filepath.Join(t.TempDir(), "debian")
	// Slow pushes down, so apt runs overlap them.
	opt := testOptions(t)
	opt.HookEnv = append(os.Environ(), "PUSH_REPLICAS_RSYNC_OPTS=--bwlimit=100")
	cfg := up.config()
	cfg.PostPublish = []string{script, replica}
	rep := mustSyncOpt(t, state, cfg, opt)
	if rep.PostPublish == nil || !rep.PostPublish.OK {
		t.Fatalf("first push: %+v", rep.PostPublish)
	}
	sameTree(t, state, replica)
	base, accessLog := apttest.NginxRoot(t, filepath.Dir(replica), "$status $request_uri")
	apt := apttest.AptClient(t, up.repo.SourcesLine(base+"/debian", "stable", "main"))
	if out, err := apt.Update(); err != nil {
		t.Fatalf("apt-get update from the replica: %v\n%s", err, out)
	}
	loop := startAptLoop(apt, "hello", "bulk05", "big")
	published := 0
	for round := range 7 {
		pk := manyPackages(16)
		pk[3].Size = 2000 + 37*round // bulk03: same Filename, new bytes
		s := testSuite(fmt.Sprintf("1.%d-1", round+1), append(pk, big(round+1))...)
		var err error
		if round%2 == 0 {
			err = up.repo.RebuildChanged([]string{"bulk03_1.0_amd64"}, s)
		} else {
			err = up.repo.Rebuild(s)
		}
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		rep := mustSyncOpt(t, state, cfg, opt)
		if rep.Result != ResultPublished || rep.PostPublish == nil || !rep.PostPublish.OK {
			t.Fatalf("round %d: %+v %+v", round, rep, rep.PostPublish)
		}
		published++
		t.Logf("round %d: published and pushed %s in %s (push %s)", round, rep.Snapshot, time.Since(start).Round(time.Millisecond),
			rep.PostPublish.Finished.Sub(rep.PostPublish.Started).Round(time.Millisecond))
		sameTree(t, state, replica)
	}
	r := loop.stop()
	t.Logf("%d publishes, %d apt runs, %d failed", published, r.runs, len(r.errs))
	if r.mismatches != 0 || r.notFound != 0 || len(r.errs) != 0 {
		t.Errorf("apt saw %d hash mismatches, %d 404s, %d failures:\n%s", r.mismatches, r.notFound, len(r.errs), strings.Join(r.errs, "\n"))
	}
	if r.runs < 4 {
		t.Errorf("apt ran only %d times: the test did not overlap pushes", r.runs)
	}
	b, err := os.ReadFile(accessLog)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(l, "200 ") && !strings.HasPrefix(l, "304 ") && l != "" {
			t.Errorf("nginx answered the replica's client: %s", l)
		}
	}
	// A fresh client installs from the replica.
	fresh := apttest.AptClient(t, up.repo.SourcesLine(base+"/debian", "stable", "main"))
	if out, err := fresh.Update(); err != nil {
		t.Fatalf("fresh apt-get update: %v\n%s", err, out)
	}
	if out, err := fresh.InstallDownloadOnly("hello", "bulk03"); err != nil {
		t.Fatalf("fresh install from the replica: %v\n%s", err, out)
	}
}

// TestReplicaPushFlat: a flat repository's published tree (its indexes
// and pool files side by side at the root) pushed by the same script is
// one that real apt installs from through nginx, rollback included (the
// replica follows the published snapshot back).
func TestReplicaPushFlat(t *testing.T) {
	script := pushReplicas(t)
	dir := t.TempDir()
	repo, err := apttest.BuildFlat(dir, apttest.NewKey(t, "ed25519"), testPackages("1.0-1"))
	if err != nil {
		t.Fatal(err)
	}
	srv := apttest.Serve(t, dir)
	state := t.TempDir()
	replica := filepath.Join(t.TempDir(), "flat")
	cfg := Config{Name: testMirror, URL: srv.URL, Suites: []string{"./"}, Keyring: repo.KeyringPath, PostPublish: []string{script, replica}}
	cfg.Defaults()
	rep := mustSync(t, state, cfg)
	if rep.PostPublish == nil || !rep.PostPublish.OK {
		t.Fatalf("push: %+v", rep.PostPublish)
	}
	base, _ := apttest.NginxRoot(t, filepath.Dir(replica), "")
	apt := apttest.AptClient(t, repo.SourcesLine(base+"/flat", "./", ""))
	if out, err := apt.Update(); err != nil {
		t.Fatalf("apt-get update from the flat replica: %v\n%s", err, out)
	}
	if out, err := apt.InstallDownloadOnly("hello"); err != nil {
		t.Fatalf("install from the flat replica: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(replica, "gatehouse-manifest.json")); err == nil {
		t.Error("the store's manifest was pushed")
	}
}
