package mirror

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"gatehouse/apt/apttest"
	"gatehouse/apt/pgp"
	"gatehouse/mirror/bundle"
	"gatehouse/mirror/store"
)

func agKeyring(t *testing.T, k *pgp.SigningKey) *pgp.Keyring {
	t.Helper()
	pub, err := k.PublicKey(false)
	if err != nil {
		t.Fatal(err)
	}
	kr, err := pgp.ReadKeyring(bytes.NewReader(pub), "exporter key")
	if err != nil {
		t.Fatal(err)
	}
	return kr
}

// agUpstreamPool lists the files below an archive's pool/.
func agUpstreamPool(t *testing.T, dir string) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	root := filepath.Join(dir, "pool")
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		out["pool/"+filepath.ToSlash(rel)] = true
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// agTree hashes what a failed import must not change: the published
// tree (see publishedTree) plus the mirror's state.json and its list of
// snapshots.
func agTree(t *testing.T, state string) map[string]string {
	t.Helper()
	tree := publishedTree(t, state)
	dir := filepath.Join(StoreRoot(state), testMirror)
	tree["state.json"] = sha256File(t, filepath.Join(dir, store.StateFile))
	es, err := os.ReadDir(filepath.Join(dir, store.SnapshotsDir))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		tree["snapshot "+e.Name()] = "exists"
	}
	return tree
}

func agAptInstalls(t *testing.T, up *upstream, state string, pkgs ...string) {
	t.Helper()
	apt := apttest.AptClient(t, up.repo.SourcesLine(serveMirror(t, state), "stable", "main"))
	if out, err := apt.Update(); err != nil {
		t.Fatalf("apt-get update from the imported mirror: %v\n%s", err, out)
	}
	if out, err := apt.Run(append([]string{"install", "--download-only"}, pkgs...)...); err != nil {
		t.Fatalf("apt-get install --download-only %s: %v\n%s", pkgs, err, out)
	}
}

// agPair is the usual start of an air-gap test: outer state A synced from
// a new upstream, and inner state B that imported A's first full bundle
// (out/b1.tar, signed by key, verified with trusted).
func agPair(t *testing.T) (up *upstream, cfg Config, stateA, stateB string, key *pgp.SigningKey, trusted *pgp.Keyring, out string) {
	t.Helper()
	up = newUpstream(t)
	stateA, stateB = t.TempDir(), t.TempDir()
	cfg = up.config()
	mustSync(t, stateA, cfg)
	key = apttest.NewKey(t, "ed25519")
	trusted = agKeyring(t, key)
	out = t.TempDir()
	b1 := filepath.Join(out, "b1.tar")
	if _, err := Export(context.Background(), stateA, []Config{cfg}, b1, "", key, 0, testOptions(t)); err != nil {
		t.Fatal(err)
	}
	agImport(t, stateB, cfg, b1, trusted)
	return up, cfg, stateA, stateB, key, trusted, out
}

func agImport(t *testing.T, state string, cfg Config, from string, trusted *pgp.Keyring) *ImportReport {
	t.Helper()
	rep, err := Import(context.Background(), state, []Config{cfg}, from, trusted, testOptions(t))
	if err != nil {
		t.Fatalf("import %s: %v", from, err)
	}
	if len(rep.Mirrors) != 1 || rep.Mirrors[0].Result != ResultPublished {
		t.Fatalf("import report %+v", rep)
	}
	problems, err := Verify(context.Background(), state, cfg, testOptions(t))
	if err != nil || len(problems) != 0 {
		t.Fatalf("verify after import: %v %q", err, problems)
	}
	return rep
}

func agPoolPaths(m *bundle.Manifest) []string {
	var out []string
	for _, f := range m.FilesOf(testMirror, store.PoolDir) {
		out = append(out, f.Path)
	}
	return out
}

// TestAirgap: sync A from a real upstream, export, import into B (which
// never talks to upstream), serve B, and let the real apt-get install from
// it; then an incremental bundle carries only the changed pool files; then
// every kind of damaged, untrusted or replayed bundle is refused with B's
// published tree unchanged, while the undamaged bundle is accepted.
func TestAirgap(t *testing.T) {
	ctx := context.Background()
	up := newUpstream(t)
	stateA, stateB := t.TempDir(), t.TempDir()
	cfg := up.config()
	mustSync(t, stateA, cfg)
	key := apttest.NewKey(t, "ed25519")
	trusted := agKeyring(t, key)
	out := t.TempDir()
	opt := testOptions(t)

	// Full bundle, single-file form.
	b1 := filepath.Join(out, "b1.tar")
	var last Event
	eopt := opt
	eopt.Progress = func(e Event) { last = e }
	man1, err := Export(ctx, stateA, []Config{cfg}, b1, "", key, 0, eopt)
	if err != nil {
		t.Fatal(err)
	}
	if last.Phase != PhaseExport || last.Files != len(man1.Files) || last.Files != last.FilesTotal || last.Bytes != last.BytesTotal || last.Bytes == 0 {
		t.Errorf("last export progress event %+v, bundle has %d files", last, len(man1.Files))
	}
	if len(agPoolPaths(man1)) != len(agUpstreamPool(t, up.repo.Dir)) {
		t.Errorf("full bundle carries %d pool files, upstream has %d", len(agPoolPaths(man1)), len(agUpstreamPool(t, up.repo.Dir)))
	}
	rep := agImport(t, stateB, cfg, b1, trusted)
	if rep.Written != len(man1.Files) || rep.SignedBy != key.Fingerprint() {
		t.Errorf("import report %+v", rep)
	}
	agAptInstalls(t, up, stateB, "hello")

	// Incremental: one changed source package upstream.
	poolBefore := agUpstreamPool(t, up.repo.Dir)
	if err := up.repo.Rebuild(testSuite("1.1-1")); err != nil {
		t.Fatal(err)
	}
	var changed []string
	for p := range agUpstreamPool(t, up.repo.Dir) {
		if !poolBefore[p] {
			changed = append(changed, p)
		}
	}
	slices.Sort(changed)
	mustSync(t, stateA, cfg)
	b2 := filepath.Join(out, "b2") + "/"
	man2, err := Export(ctx, stateA, []Config{cfg}, b2, b1, key, 0, opt)
	if err != nil {
		t.Fatal(err)
	}
	if got := agPoolPaths(man2); !slices.Equal(got, changed) || len(changed) == 0 {
		t.Errorf("incremental bundle pool files = %q, want the changed ones %q", got, changed)
	}
	if man2.Mirrors[0].Since != man1.Mirrors[0].Snapshot {
		t.Errorf("since = %q, want %q", man2.Mirrors[0].Since, man1.Mirrors[0].Snapshot)
	}
	rep = agImport(t, stateB, cfg, b2, trusted)
	if rep.Mirrors[0].FilesReused == 0 {
		t.Errorf("incremental import reused no pool file: %+v", rep.Mirrors[0])
	}
	agAptInstalls(t, up, stateB, "hello=1.1-1")
	// The same incremental bundle into a mirror that lacks its base.
	_, err = Import(ctx, t.TempDir(), []Config{cfg}, b2, trusted, opt)
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "neither in the bundle nor here") {
		t.Errorf("incremental bundle without its base: %v", err)
	}

	// A third upstream state, exported in both forms, for the refusals.
	if err := up.repo.Rebuild(testSuite("1.2-1")); err != nil {
		t.Fatal(err)
	}
	mustSync(t, stateA, cfg)
	b3 := filepath.Join(out, "b3.tar")
	b3dir := filepath.Join(out, "b3dir") + "/"
	for _, p := range []string{b3, b3dir} {
		if _, err := Export(ctx, stateA, []Config{cfg}, p, b2, key, 0, opt); err != nil {
			t.Fatal(err)
		}
	}
	deb := "up/" + up.repo.PoolPath("hello", "1.2-1", "amd64")
	other := apttest.NewKey(t, "ed25519")
	cases := []struct {
		name string
		// make returns the bundle to import.
		make func(t *testing.T) string
		// strict: not even a verified pool file may appear.
		strict bool
		msg    string
	}{
		{"file: one byte flipped", func(t *testing.T) string {
			p := agCopy(t, b3)
			agFlip(t, p, agTarOffset(t, p, deb)+100)
			return p
		}, false, "SHA-256"},
		{"dir: one byte flipped", func(t *testing.T) string {
			p := agCopy(t, b3dir)
			agFlip(t, filepath.Join(p, deb), 100)
			return p
		}, false, "SHA-256"},
		{"dir: file dropped", func(t *testing.T) string {
			p := agCopy(t, b3dir)
			if err := os.Remove(filepath.Join(p, deb)); err != nil {
				t.Fatal(err)
			}
			return p
		}, true, "missing"},
		{"untrusted key", func(t *testing.T) string {
			p := filepath.Join(t.TempDir(), "b.tar")
			if _, err := Export(ctx, stateA, []Config{cfg}, p, "", other, 0, opt); err != nil {
				t.Fatal(err)
			}
			return p
		}, true, "not signed by a trusted key"},
		{"older Release Date (replay of an earlier bundle)", func(t *testing.T) string { return b1 }, true, "older than last accepted"},
		{"trusted exporter, pool file not the upstream's", func(t *testing.T) string {
			return agForged(t, stateA, key, func(snap, pool string) {
				agFlip(t, filepath.Join(pool, strings.TrimPrefix(deb, "up/pool/")), 100)
			})
		}, false, "not the file the signed index names"},
		{"trusted exporter, InRelease altered", func(t *testing.T) string {
			return agForged(t, stateA, key, func(snap, pool string) {
				p := filepath.Join(snap, "dists/stable/InRelease")
				b, err := os.ReadFile(p)
				if err != nil {
					t.Fatal(err)
				}
				agPut(t, p, bytes.Replace(b, []byte("Suite: stable"), []byte("Suite: stablE"), 1))
			})
		}, true, "InRelease"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := c.make(t)
			before := agTree(t, stateB)
			_, err := Import(ctx, stateB, []Config{cfg}, p, trusted, opt)
			if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("import: %v; want ErrRefused mentioning %q", err, c.msg)
			}
			t.Logf("refused as expected: %v", err)
			after := agTree(t, stateB)
			if c.strict {
				if !maps.Equal(before, after) {
					checkUnchanged(t, before, after)
					t.Errorf("tree changed: %d entries before, %d after", len(before), len(after))
				}
			} else {
				checkUnchanged(t, before, after)
			}
		})
	}
	// The undamaged bundle of the same state is accepted.
	agImport(t, stateB, cfg, b3, trusted)
	agAptInstalls(t, up, stateB, "hello=1.2-1")
}

// TestAirgapVolumes: a bundle split into volumes imports; with a volume
// missing the import fails, naming it.
func TestAirgapVolumes(t *testing.T) {
	ctx := context.Background()
	up := newUpstream(t)
	stateA := t.TempDir()
	cfg := up.config()
	mustSync(t, stateA, cfg)
	key := apttest.NewKey(t, "ed25519")
	base := filepath.Join(t.TempDir(), "vol")
	if _, err := Export(ctx, stateA, []Config{cfg}, base, "", key, 16<<10, testOptions(t)); err != nil {
		t.Fatal(err)
	}
	vols, _ := filepath.Glob(base + ".*")
	if len(vols) < 3 {
		t.Fatalf("volumes %q, want several", vols)
	}
	stateC := t.TempDir()
	first := agImport(t, stateC, cfg, base+".000", agKeyring(t, key))
	// Importing the same bundle again (an interrupted import retried)
	// rewrites the dists of a new snapshot and finds every pool file in
	// place with the right hash.
	again := agImport(t, stateC, cfg, base+".000", agKeyring(t, key))
	if again.Present == 0 || again.Written+again.Present != first.Written {
		t.Errorf("re-import: %+v, first import wrote %d files", again, first.Written)
	}
	// --since a snapshot ID: nothing changed upstream, so no pool file.
	snaps, err := List(stateA, cfg)
	if err != nil {
		t.Fatal(err)
	}
	inc := filepath.Join(t.TempDir(), "inc.tar")
	man, err := Export(ctx, stateA, []Config{cfg}, inc, snaps[len(snaps)-1].ID, key, 0, testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	if p := agPoolPaths(man); len(p) != 0 || len(man.Files) == 0 {
		t.Errorf("bundle since the current snapshot carries pool files %q (of %d files)", p, len(man.Files))
	}
	agImport(t, stateC, cfg, inc, agKeyring(t, key))
	if _, err := Export(ctx, stateA, []Config{cfg}, filepath.Join(t.TempDir(), "x"), "20000101T000000Z", key, 0, testOptions(t)); err == nil {
		t.Error("export --since an unknown snapshot succeeded")
	}

	if err := os.Remove(vols[1]); err != nil {
		t.Fatal(err)
	}
	_, err = Import(ctx, t.TempDir(), []Config{cfg}, base+".000", agKeyring(t, key), testOptions(t))
	if err == nil || !strings.Contains(err.Error(), vols[1]+" is missing") {
		t.Errorf("import with a missing volume: %v", err)
	}
}

// agForged exports the published snapshot of stateA through a copy
// that change alters, signed by key, bypassing mirror.Export's own checks:
// what a compromised exporting appliance could produce.
func agForged(t *testing.T, stateA string, key *pgp.SigningKey, change func(snap, pool string)) string {
	t.Helper()
	st, err := store.Open(StoreRoot(stateA), testMirror)
	if err != nil {
		t.Fatal(err)
	}
	id, err := st.Current()
	if err != nil {
		t.Fatal(err)
	}
	pool, _, err := snapshotPool(st, id)
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	cp := exec.Command("cp", "-a", st.Dir()+"/.", tmp)
	if out, err := cp.CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	snap := filepath.Join(tmp, store.SnapshotsDir, id)
	change(snap, filepath.Join(tmp, store.PoolDir))
	src := bundle.Source{Name: testMirror, SnapshotID: id, SnapshotDir: snap, Suites: []string{"stable"}, PoolDir: filepath.Join(tmp, store.PoolDir)}
	for rel := range pool {
		src.PoolFiles = append(src.PoolFiles, rel)
	}
	slices.Sort(src.PoolFiles)
	p := filepath.Join(t.TempDir(), "forged.tar")
	if _, err := bundle.Export(context.Background(), p, []bundle.Source{src}, bundle.ExportOptions{Key: key}); err != nil {
		t.Fatal(err)
	}
	return p
}

func agCopy(t *testing.T, p string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "copy")
	if out, err := exec.Command("cp", "-a", strings.TrimSuffix(p, "/"), dst).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	return dst
}

func agPut(t *testing.T, p string, b []byte) {
	t.Helper()
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// agTarOffset returns where the data of entry name starts in tar file p.
func agTarOffset(t *testing.T, p, name string) int64 {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			t.Fatalf("%s has no entry %s", p, name)
		}
		if err != nil {
			t.Fatal(err)
		}
		if hdr.Name == name {
			off, _ := f.Seek(0, io.SeekCurrent)
			return off
		}
	}
}

func agFlip(t *testing.T, p string, off int64) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[off] ^= 0x01
	agPut(t, p, b)
}

// TestAirgapResume: an import cancelled halfway publishes nothing; the
// retry skips the pool files already in place (hash-checked) and succeeds.
// Two mirrors travel in one bundle, each verified against its own state.
func TestAirgapResume(t *testing.T) {
	ctx := context.Background()
	up := newUpstream(t)
	stateA, stateB := t.TempDir(), t.TempDir()
	cfg := up.config()
	cfg2 := cfg
	cfg2.Name = "up-2"
	cfgs := []Config{cfg, cfg2}
	mustSync(t, stateA, cfg)
	mustSync(t, stateA, cfg2)
	key := apttest.NewKey(t, "ed25519")
	p := filepath.Join(t.TempDir(), "b.tar")
	man, err := Export(ctx, stateA, cfgs, p, "", key, 0, testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(man.Mirrors) != 2 {
		t.Fatalf("mirrors %+v", man.Mirrors)
	}

	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	opt := testOptions(t)
	pool := 0
	opt.Progress = func(e Event) {
		if e.Mirror == testMirror && e.Phase == PhaseImport && e.Files > e.FilesTotal/2 {
			if pool++; pool == 3 {
				cancel()
			}
		}
	}
	_, err = Import(cctx, stateB, cfgs, p, agKeyring(t, key), opt)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled import: %v", err)
	}
	for _, name := range []string{testMirror, "up-2"} {
		if _, _, err := store.ResolveCurrent(StoreRoot(stateB), name); !errors.Is(err, store.ErrNoCurrent) {
			t.Errorf("mirror %s: a cancelled import published: %v", name, err)
		}
	}
	rep, err := Import(ctx, stateB, cfgs, p, agKeyring(t, key), testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	if rep.Present == 0 || rep.Written+rep.Present != len(man.Files) || len(rep.Mirrors) != 2 {
		t.Errorf("resumed import: %+v (bundle has %d files)", rep, len(man.Files))
	}
	for _, c := range cfgs {
		problems, err := Verify(ctx, stateB, c, testOptions(t))
		if err != nil || len(problems) != 0 {
			t.Errorf("verify %s: %v %q", c.Name, err, problems)
		}
	}
	agAptInstalls(t, up, stateB, "hello")
}

const agKillChildEnv = "GATEHOUSE_AIRGAP_KILL_CHILD"

// TestAirgapKillChild is the child process of TestAirgapKill: it runs one
// Import described by the environment, printing each progress event and
// pausing after it so that the parent's SIGKILL lands there. It does
// nothing in a normal run.
func TestAirgapKillChild(t *testing.T) {
	spec := os.Getenv(agKillChildEnv)
	if spec == "" {
		t.Skip("helper process for TestAirgapKill")
	}
	var c struct {
		State, Bundle, Keyring string
		Cfg                    Config
	}
	if err := json.Unmarshal([]byte(spec), &c); err != nil {
		t.Fatal(err)
	}
	kr, err := pgp.LoadKeyring(c.Keyring)
	if err != nil {
		t.Fatal(err)
	}
	opt := testOptions(t)
	opt.Progress = func(e Event) {
		fmt.Printf("event %s %d %d\n", e.Phase, e.Files, e.FilesTotal)
		time.Sleep(20 * time.Millisecond)
	}
	_, err = Import(context.Background(), c.State, []Config{c.Cfg}, c.Bundle, kr, opt)
	fmt.Printf("done %v\n", err)
}

// TestAirgapKill SIGKILLs an import halfway through the pool files and
// just before its last file. The published mirror stays as it was and
// serves apt; the retried import skips the files already in place and
// publishes.
func TestAirgapKill(t *testing.T) {
	if os.Getenv(agKillChildEnv) != "" {
		t.Skip("inside the child")
	}
	up := newUpstream(t)
	stateA := t.TempDir()
	cfg := up.config()
	mustSync(t, stateA, cfg)
	key := apttest.NewKey(t, "ed25519")
	out := t.TempDir()
	b1 := filepath.Join(out, "b1.tar")
	if _, err := Export(context.Background(), stateA, []Config{cfg}, b1, "", key, 0, testOptions(t)); err != nil {
		t.Fatal(err)
	}
	if err := up.repo.Rebuild(testSuite("1.1-1", manyPackages(12)...)); err != nil {
		t.Fatal(err)
	}
	mustSync(t, stateA, cfg)
	b2 := filepath.Join(out, "b2.tar")
	man2, err := Export(context.Background(), stateA, []Config{cfg}, b2, b1, key, 0, testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := key.PublicKey(false)
	if err != nil {
		t.Fatal(err)
	}
	keyring := filepath.Join(out, "exporter.gpg")
	agPut(t, keyring, pub)
	for _, kp := range []struct {
		name string
		at   int // kill after the event for this file number
	}{{"mid-pool", len(man2.Files) - len(agPoolPaths(man2))/2}, {"last file", len(man2.Files)}} {
		t.Run(kp.name, func(t *testing.T) {
			stateB := t.TempDir()
			agImport(t, stateB, cfg, b1, agKeyring(t, key))
			before := agTree(t, stateB)
			spec, _ := json.Marshal(map[string]any{"State": stateB, "Bundle": b2, "Keyring": keyring, "Cfg": cfg})
			cmd := exec.Command(os.Args[0], "-test.run=^TestAirgapKillChild$", "-test.v")
			cmd.Env = append(os.Environ(), agKillChildEnv+"="+string(spec))
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			cmd.Stderr = cmd.Stdout
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			killed := false
			var seen []string
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				seen = append(seen, sc.Text())
				var n, total int
				if _, err := fmt.Sscanf(sc.Text(), "event import %d %d", &n, &total); err == nil && n == kp.at && !killed {
					cmd.Process.Kill() // SIGKILL
					killed = true
				}
			}
			cmd.Wait()
			if !killed {
				t.Fatalf("child never reached file %d:\n%s", kp.at, strings.Join(seen, "\n"))
			}
			after := agTree(t, stateB)
			delete(after, "state.json") // compared below, without the unfinished snapshot
			for k := range after {
				if strings.HasPrefix(k, "snapshot ") && strings.HasSuffix(k, ".tmp") {
					delete(after, k) // removed by the next NewSnapshot
				}
			}
			if after["current"] != before["current"] || sha256File(t, filepath.Join(StoreRoot(stateB), testMirror, store.StateFile)) != before["state.json"] {
				t.Fatalf("the killed import changed what is published")
			}
			delete(before, "state.json")
			checkUnchanged(t, before, after)
			agAptInstalls(t, up, stateB, "hello=1.0-1")

			rep := agImport(t, stateB, cfg, b2, agKeyring(t, key))
			if rep.Present == 0 {
				t.Errorf("the retried import found nothing in place: %+v", rep)
			}
			t.Logf("retried import: %d files written, %d already in place", rep.Written, rep.Present)
			agAptInstalls(t, up, stateB, "hello=1.1-1", "bulk11")
		})
	}
}

// TestAirgapSubset: the receiving appliance mirrors fewer components and
// no sources. The indexes it does not mirror are dropped from its snapshot,
// the pool files only they name are left in the bundle, and what it
// publishes is exactly what a sync of that configuration holds.
func TestAirgapSubset(t *testing.T) {
	ctx := context.Background()
	s := testSuite("1.0-1")
	s.Components = []string{"main", "contrib"}
	s.Contents = true
	s.Packages["contrib"] = []apttest.Package{{Name: "extra", Version: "2.0-1", Arch: "amd64"}}
	up := newUpstream(t, s)
	stateA, stateB, stateS := t.TempDir(), t.TempDir(), t.TempDir()
	cfgA := up.config()
	cfgA.Components = []string{"main", "contrib"}
	mustSync(t, stateA, cfgA)
	key := apttest.NewKey(t, "ed25519")
	p := filepath.Join(t.TempDir(), "b.tar")
	if _, err := Export(ctx, stateA, []Config{cfgA}, p, "", key, 0, testOptions(t)); err != nil {
		t.Fatal(err)
	}
	cfgB := up.config()
	cfgB.Sources = false
	rep := agImport(t, stateB, cfgB, p, agKeyring(t, key))
	if rep.Ignored == 0 {
		t.Errorf("nothing ignored: %+v", rep)
	}
	agAptInstalls(t, up, stateB, "hello")

	// A direct sync with cfgB publishes the same dists files and pool.
	mustSync(t, stateS, cfgB)
	listing := func(state string) []string {
		var out []string
		tree := publishedTree(t, state)
		for k := range tree {
			if k != "current" && !strings.Contains(k, "/by-hash/") && filepath.Base(k) != manifestFile {
				if parts := strings.SplitN(k, "/", 3); parts[0] == store.SnapshotsDir {
					k = parts[2] // without the snapshot ID
				}
				out = append(out, k)
			}
		}
		slices.Sort(out)
		return out
	}
	got, want := listing(stateB), listing(stateS)
	if !slices.Contains(want, "dists/stable/main/binary-amd64/Packages.gz") || slices.ContainsFunc(want, func(p string) bool { return strings.Contains(p, "contrib") || strings.HasSuffix(p, ".dsc") }) {
		t.Fatalf("the sync of the subset holds %q", want)
	}
	if !slices.Equal(got, want) {
		t.Errorf("imported files differ from a sync's:\n got %q\nwant %q", got, want)
	}
}

// TestAirgapDamageInPresentEntry: a full bundle whose one flipped byte
// sits in a pool file the importing side already holds is refused
// (ErrRefused, exit 3) with B's published tree unchanged, although B needs
// none of that entry's bytes; the undamaged bundle is then accepted.
func TestAirgapDamageInPresentEntry(t *testing.T) {
	ctx := context.Background()
	up, cfg, stateA, stateB, key, trusted, out := agPair(t)

	// A newer upstream state that keeps every file and adds a package:
	// its full bundle carries the files B has, and one it lacks.
	if err := up.repo.Rebuild(testSuite("1.0-1", apttest.Package{Name: "newcomer", Version: "1.0-1", Arch: "amd64"})); err != nil {
		t.Fatal(err)
	}
	mustSync(t, stateA, cfg)
	b2 := filepath.Join(out, "b2.tar")
	if _, err := Export(ctx, stateA, []Config{cfg}, b2, "", key, 0, testOptions(t)); err != nil {
		t.Fatal(err)
	}
	deb := testMirror + "/" + up.repo.PoolPath("hello", "1.0-1", "amd64")
	if _, err := os.Stat(filepath.Join(StoreRoot(stateB), deb)); err != nil {
		t.Fatalf("B does not hold %s: %v", deb, err)
	}
	damaged := agCopy(t, b2)
	agFlip(t, damaged, agTarOffset(t, damaged, deb)+100)
	before := agTree(t, stateB)
	_, err := Import(ctx, stateB, []Config{cfg}, damaged, trusted, testOptions(t))
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), deb) || !strings.Contains(err.Error(), "SHA-256") {
		t.Fatalf("import: %v; want ErrRefused naming %s and its SHA-256", err, deb)
	}
	checkUnchanged(t, before, agTree(t, stateB))
	problems, err := Verify(ctx, stateB, cfg, testOptions(t))
	if err != nil || len(problems) != 0 {
		t.Fatalf("verify after the refused import: %v %q", err, problems)
	}
	rep := agImport(t, stateB, cfg, b2, trusted)
	if rep.Present == 0 {
		t.Errorf("the undamaged import found no file present: %+v", rep)
	}
	agAptInstalls(t, up, stateB, "newcomer")
}
