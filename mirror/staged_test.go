package mirror

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"gatehouse/apt/repobuild"
	"gatehouse/mirror/store"
)

func snapshotIDs(t *testing.T, state string, cfg Config) []string {
	t.Helper()
	ls, err := ListSnapshots(state, cfg)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, l := range ls {
		ids = append(ids, l.ID)
	}
	return ids
}

func currentID(t *testing.T, state string) string {
	t.Helper()
	id, _, err := store.ResolveCurrent(StoreRoot(state), testMirror)
	if errors.Is(err, store.ErrNoCurrent) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// TestStagedPublishing walks the staged workflow with real apt through
// gatehouse serve and through README's nginx: a manual mirror's sync
// stages without publishing; canary apt installs from
// /NAME/snapshots/ID/, including the new bytes of a file the upstream
// rebuilt under the same name (the snapshot's override layer) while the
// fleet keeps the old ones; `mirror publish` swaps it in; an older
// snapshot is refused (rollback's job) and rollback goes back to the
// previous published one.
func TestStagedPublishing(t *testing.T) {
	up := newUpstream(t)
	state := t.TempDir()
	cfg := up.config()
	cfg.Publish = PublishManual
	serveBase := serveMirror(t, state)
	nginxBase := startNginxStore(t, StoreRoot(state))

	rep := mustSync(t, state, cfg)
	if rep.Result != ResultStaged || rep.Published != "" || currentID(t, state) != "" {
		t.Fatalf("first manual sync: %+v, current %q; want staged, nothing published", rep, currentID(t, state))
	}
	s1 := rep.Snapshot
	ms, err := Status(state, cfg, time.Now())
	if err != nil || ms.Waiting != s1 || !slices.ContainsFunc(ms.Warnings, func(w string) bool {
		return strings.Contains(w, "snapshot "+s1) && strings.Contains(w, "gatehouse mirror publish up")
	}) {
		t.Fatalf("status does not say %s waits: %v %+v", s1, err, ms)
	}
	old := upstreamHello(t, up)
	for _, base := range []string{serveBase, nginxBase} {
		if got := aptHello(t, up, base+"/snapshots/"+s1); !bytes.Equal(got, old) {
			t.Fatalf("canary apt via %s did not get hello from the staged snapshot", base)
		}
	}

	id, err := Publish(context.Background(), state, cfg, "", testOptions(t))
	if err != nil || id != s1 || currentID(t, state) != s1 {
		t.Fatalf("publish: %q %v, current %q", id, err, currentID(t, state))
	}
	if ms, _ := Status(state, cfg, time.Now()); ms.Waiting != "" {
		t.Errorf("after publish, status still says %s waits", ms.Waiting)
	}

	// The upstream rebuilds hello under the same name: the next snapshot
	// serves it from its override layer.
	v, err := repobuild.SameSizeVariant(context.Background(), helloPkg())
	if err != nil {
		t.Fatal(err)
	}
	if err := up.repo.RebuildChanged([]string{"hello_1.0-1_amd64"}, helloSuite(v)); err != nil {
		t.Fatal(err)
	}
	changed := upstreamHello(t, up)
	rep = mustSync(t, state, cfg)
	s2 := rep.Snapshot
	if rep.Result != ResultStaged || s2 == s1 || rep.Published != s1 || currentID(t, state) != s1 {
		t.Fatalf("second manual sync: %+v, current %q", rep, currentID(t, state))
	}
	for _, base := range []string{serveBase, nginxBase} {
		if got := aptHello(t, up, base); !bytes.Equal(got, old) {
			t.Fatalf("the fleet (%s) got the staged bytes before publish", base)
		}
		if got := aptHello(t, up, base+"/snapshots/"+s2); !bytes.Equal(got, changed) {
			t.Fatalf("canary apt via %s did not get the rebuilt hello of the staged snapshot", base)
		}
		if got := aptHello(t, up, base+"/snapshots/"+s1); !bytes.Equal(got, old) {
			t.Fatalf("apt via %s on the published snapshot's URL did not get its own hello", base)
		}
	}
	// Nothing changed upstream: "current", building on the staged one.
	rep = mustSync(t, state, cfg)
	if rep.Result != ResultCurrent || rep.Snapshot != s2 || rep.Published != s1 || len(snapshotIDs(t, state, cfg)) != 2 {
		t.Fatalf("no-op manual sync: %+v, snapshots %v", rep, snapshotIDs(t, state, cfg))
	}
	if ms, _ := Status(state, cfg, time.Now()); ms.Waiting != s2 {
		t.Errorf("status: waiting %q, want %s", ms.Waiting, s2)
	}

	if id, err := Publish(context.Background(), state, cfg, s2, testOptions(t)); err != nil || id != s2 {
		t.Fatalf("publish %s: %q %v", s2, id, err)
	}
	for _, base := range []string{serveBase, nginxBase} {
		if got := aptHello(t, up, base); !bytes.Equal(got, changed) {
			t.Fatalf("after publish, the fleet (%s) did not get the rebuilt hello", base)
		}
	}
	mustVerify(t, state, cfg)

	_, err = Publish(context.Background(), state, cfg, s1, testOptions(t))
	want := "mirror up: snapshot " + s1 + " is older than the published " + s2 + ": snapshot is older than the published one; to go back, run `gatehouse mirror rollback up " + s1 + "`"
	if !errors.Is(err, ErrOlderThanPublished) || err.Error() != want || currentID(t, state) != s2 {
		t.Fatalf("publish of an older snapshot: %v\nwant %s", err, want)
	}
	if _, err := Publish(context.Background(), state, cfg, "20200101T000000Z", testOptions(t)); err == nil || !strings.Contains(err.Error(), "no snapshot") {
		t.Errorf("publish of a missing snapshot: %v", err)
	}
	if err := Rollback(state, cfg, ""); err != nil || currentID(t, state) != s1 {
		t.Fatalf("rollback: %v, current %s, want the previous published %s", err, currentID(t, state), s1)
	}
	ls, _ := ListSnapshots(state, cfg)
	if len(ls) != 2 || ls[0].PublishedAt.IsZero() || ls[1].PublishedAt.IsZero() || !ls[0].PublishedAt.After(ls[1].PublishedAt) {
		t.Errorf("list after rollback: %+v", ls)
	}
	// Store internals stay hidden under the snapshot URLs too.
	for _, base := range []string{serveBase, nginxBase} {
		for _, p := range []string{"/snapshots/" + s1 + "/gatehouse-manifest.json", "/snapshots/" + s1 + ".tmp/dists/stable/InRelease", "/snapshots/..%2fstate.json", "/snapshots/20200101T000000Z/dists/stable/InRelease"} {
			if code, err := httpGet(base + p); err != nil || code == 200 {
				t.Errorf("%s%s: %d %v, want an error status", base, p, code, err)
			}
		}
	}
}

// TestStagedPrune: staged snapshots count against keep_snapshots, but the
// published one is never pruned however many were staged after it, and
// its by-hash generation stays in every staged one (a client holding its
// InRelease when one is published finds its indexes).
func TestStagedPrune(t *testing.T) {
	up := newUpstream(t)
	state := t.TempDir()
	cfg := up.config()
	cfg.Publish = PublishManual
	cfg.KeepSnapshots = 2
	s1 := mustSync(t, state, cfg).Snapshot
	if _, err := Publish(context.Background(), state, cfg, s1, testOptions(t)); err != nil {
		t.Fatal(err)
	}
	pubInRelease := filepath.Join(StoreRoot(state), testMirror, store.SnapshotsDir, s1, "dists/stable/InRelease")
	m1, err := readManifest(mustOpen(t, state), s1)
	if err != nil {
		t.Fatal(err)
	}
	var staged []string
	for i := range 4 {
		if err := up.repo.Rebuild(testSuite("1." + string(rune('1'+i)) + "-1")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(1100 * time.Millisecond) // a newer Date
		rep := mustSync(t, state, cfg)
		if rep.Result != ResultStaged {
			t.Fatalf("round %d: %+v", i, rep)
		}
		staged = append(staged, rep.Snapshot)
	}
	ids := snapshotIDs(t, state, cfg)
	if want := []string{s1, staged[2], staged[3]}; !slices.Equal(ids, want) {
		t.Fatalf("snapshots %v, want the published %s and the newest two %v", ids, s1, want[1:])
	}
	if _, err := os.Stat(pubInRelease); err != nil {
		t.Fatal(err)
	}
	newest := filepath.Join(StoreRoot(state), testMirror, store.SnapshotsDir, staged[3], "dists/stable")
	for _, e := range m1.Suites["stable"].Files {
		for _, bh := range e.byHash() {
			if _, err := os.Stat(filepath.Join(newest, bh)); err != nil {
				t.Errorf("staged snapshot %s lacks the published generation's %s: %v", staged[3], bh, err)
			}
		}
	}
	if id, err := Publish(context.Background(), state, cfg, "", testOptions(t)); err != nil || id != staged[3] {
		t.Fatalf("publish newest: %q %v", id, err)
	}
	mustVerify(t, state, cfg)
}

func mustOpen(t *testing.T, state string) *store.Store {
	t.Helper()
	st, err := store.Open(StoreRoot(state), testMirror)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestPublishChecksKeyring: a staged snapshot whose Release no longer
// verifies with the configured keyring (the operator deployed another
// one) is refused at publish (exit 3), and nothing changes.
func TestPublishChecksKeyring(t *testing.T) {
	up := newUpstream(t)
	state := t.TempDir()
	cfg := up.config()
	cfg.Publish = PublishManual
	s1 := mustSync(t, state, cfg).Snapshot
	other := newUpstream(t)
	cfg.Keyring = other.repo.KeyringPath
	_, err := Publish(context.Background(), state, cfg, s1, testOptions(t))
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "does not verify with the configured keyring") || currentID(t, state) != "" {
		t.Fatalf("publish with another keyring: %v, current %q", err, currentID(t, state))
	}
}

// TestStagedThenAuto: a mirror switched back to publish = "auto" while a
// snapshot is staged publishes the upstream's state at its next sync,
// though the upstream answers 304: the staged Release is not left
// unpublished behind "current".
func TestStagedThenAuto(t *testing.T) {
	up := newUpstream(t)
	state := t.TempDir()
	cfg := up.config()
	s1 := mustSync(t, state, cfg).Snapshot
	if err := up.repo.Rebuild(testSuite("1.1-1")); err != nil {
		t.Fatal(err)
	}
	cfg.Publish = PublishManual
	s2 := mustSync(t, state, cfg)
	if s2.Result != ResultStaged || currentID(t, state) != s1 {
		t.Fatalf("manual sync: %+v", s2)
	}
	cfg.Publish = PublishAuto
	rep := mustSync(t, state, cfg)
	if rep.Result != ResultPublished || currentID(t, state) != rep.Snapshot || rep.Snapshot == s1 {
		t.Fatalf("auto sync after a staged one: %+v, current %s", rep, currentID(t, state))
	}
	_, dir, _ := store.ResolveCurrent(StoreRoot(state), testMirror)
	if sha256File(t, filepath.Join(dir, "dists/stable/InRelease")) != sha256File(t, filepath.Join(up.repo.Dir, "dists/stable/InRelease")) {
		t.Fatal("the published InRelease is not the upstream's")
	}
	if rep := mustSync(t, state, cfg); rep.Result != ResultCurrent {
		t.Fatalf("next sync: %+v", rep)
	}
}
