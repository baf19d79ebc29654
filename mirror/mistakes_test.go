package mirror

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gatehouse/apt/apttest"
	"gatehouse/mirror/store"
)

// TestMissingComponentRefused: a configured component or architecture the
// Release does not list ("mian") fails the sync with ErrConfig and a
// message naming the mirror, the value, what the Release lists and the
// fix, and publishes nothing; allow_missing = true publishes what exists
// with a warning.
func TestMissingComponentRefused(t *testing.T) {
	up := newUpstream(t)
	state := t.TempDir()
	cfg := up.config()
	mustSync(t, state, cfg)
	before := publishedTree(t, state)

	for _, c := range []struct {
		comps, arches []string
		want          string
	}{
		{[]string{"main", "mian"}, []string{"amd64"}, `the Release from ` + up.srv.URL + `/dists/stable/ does not list component "mian" (it lists components: main)`},
		{[]string{"main"}, []string{"amd64", "arm64"}, `does not list architecture "arm64" (it lists architectures: amd64)`},
		{[]string{"mian"}, []string{"i386"}, `does not list component "mian" (it lists components: main) nor architecture "i386" (it lists architectures: amd64)`},
	} {
		bad := cfg
		bad.Components, bad.Architectures = c.comps, c.arches
		rep, err := Sync(context.Background(), state, bad, testOptions(t))
		if !errors.Is(err, ErrConfig) || errors.Is(err, ErrRefused) || rep.Result != ResultFailed {
			t.Fatalf("%v/%v: err %v, result %s; want ErrConfig", c.comps, c.arches, err, rep.Result)
		}
		msg := err.Error()
		for _, w := range []string{"mirror up: suite stable: ", c.want, "nothing was published",
			"Fix components/architectures in this [[mirror]] table (a typo?), or set allow_missing = true to mirror only what the upstream has"} {
			if !strings.Contains(msg, w) {
				t.Errorf("error %q lacks %q", msg, w)
			}
		}
		checkUnchanged(t, before, publishedTree(t, state))
	}

	ok := cfg
	ok.Components, ok.AllowMissing = []string{"main", "mian"}, true
	rep := mustSync(t, state, ok)
	if rep.Result != ResultPublished || len(rep.Warnings) != 1 ||
		rep.Warnings[0] != `suite stable: the Release does not list component "mian" (it lists components: main); left out (allow_missing = true)` {
		t.Fatalf("allow_missing: %s %q", rep.Result, rep.Warnings)
	}
}

// TestKeyringChangedUnchangedUpstream: with a keyring that does not hold
// the upstream's key, a sync of an unchanged upstream (a 304, or the same
// bytes from an upstream that ignores conditional requests) is refused,
// naming the published Release and the fix, and publishes nothing; it used
// to say "current" while `mirror verify` said "corrupted".
func TestKeyringChangedUnchangedUpstream(t *testing.T) {
	up := newUpstream(t)
	state := t.TempDir()
	cfg := up.config()
	first := mustSync(t, state, cfg)
	before := publishedTree(t, state)

	wrong := filepath.Join(t.TempDir(), "wrong.gpg")
	pub, err := apttest.NewKey(t, "ed25519").PublicKey(false)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(wrong, pub, 0o644); err != nil {
		t.Fatal(err)
	}
	bad := cfg
	bad.Keyring = wrong
	for _, ignoreConditional := range []bool{false, true} {
		if ignoreConditional {
			// Drop the validators: the upstream answers 200 with the
			// same bytes.
			st, _ := store.Open(StoreRoot(state), testMirror)
			unlock, _ := st.Lock(context.Background())
			s, _ := st.ReadState()
			for k, ss := range s.Suites {
				ss.ETag, ss.LastModified = "", ""
				s.Suites[k] = ss
			}
			st.WriteState(s)
			unlock()
		}
		up.srv.ResetRequests()
		rep, err := Sync(context.Background(), state, bad, testOptions(t))
		if !errors.Is(err, ErrRefused) || rep.Result != ResultRefused {
			t.Fatalf("conditional=%v: err %v, result %s; want refused", !ignoreConditional, err, rep.Result)
		}
		want := "mirror up: suite stable: the published Release (snapshot " + first.Snapshot + ", dists/stable/InRelease) is not signed by a key in the configured keyring " + wrong + ": "
		fix := "The upstream has not changed, so the keyring has: if the upstream rotated its signing key, set keyring to its new Signed-By file and sync again; otherwise restore the previous keyring."
		if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), fix) {
			t.Errorf("error %q\nwant %q and %q", err, want, fix)
		}
		if got := up.srv.Requests(); len(got) != 1 {
			t.Errorf("requests %q, want the InRelease only", got)
		}
		checkUnchanged(t, before, publishedTree(t, state))
	}
	if rep := mustSync(t, state, cfg); rep.Result != ResultCurrent {
		t.Errorf("with the right keyring again: %+v", rep)
	}
}

// TestRollbackSkipsUnpublished: rollback without a snapshot goes to the
// newest older snapshot that was published, skipping one a failed sync
// left in snapshots/ without ever publishing it (its Commit renamed it but
// the switch failed). ListSnapshots says which were published and when,
// and a rollback is recorded as a publication.
func TestRollbackSkipsUnpublished(t *testing.T) {
	up := newUpstream(t)
	state := t.TempDir()
	cfg := up.config()
	cfg.KeepSnapshots = 5
	var ids []string
	var dates []time.Time
	for _, v := range []string{"1.0-1", "1.1-1", "1.2-1"} {
		if v != "1.0-1" {
			if err := up.repo.Rebuild(testSuite(v)); err != nil {
				t.Fatal(err)
			}
		}
		rep := mustSync(t, state, cfg)
		ids, dates = append(ids, rep.Snapshot), append(dates, rep.Suites[0].Date)
	}
	ls, err := ListSnapshots(state, cfg)
	if err != nil || len(ls) != 3 {
		t.Fatalf("list: %v %+v", err, ls)
	}
	for i, l := range ls {
		if l.ID != ids[i] || !l.Published || l.PublishedAt.IsZero() || l.Current != (i == 2) {
			t.Errorf("listing %d: %+v", i, l)
		}
	}
	// The middle snapshot becomes one a failed sync left behind: it was
	// never current, so no publication is recorded for it.
	st, err := store.Open(StoreRoot(state), testMirror)
	if err != nil {
		t.Fatal(err)
	}
	unlock, err := st.Lock(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	s, _ := st.ReadState()
	x := readExtra(s)
	delete(x.Published, ids[1])
	s.Extra, _ = json.Marshal(x)
	if err := st.WriteState(s); err != nil {
		t.Fatal(err)
	}
	unlock()
	ls, _ = ListSnapshots(state, cfg)
	if ls[1].Published || !ls[1].PublishedAt.IsZero() || !ls[0].Published {
		t.Fatalf("after dropping the record: %+v", ls)
	}

	if err := Rollback(state, cfg, ""); err != nil {
		t.Fatal(err)
	}
	if id, _, _ := store.ResolveCurrent(StoreRoot(state), testMirror); id != ids[0] {
		t.Fatalf("rollback went to %s, want the previous published %s (not the unpublished %s)", id, ids[0], ids[1])
	}
	ls, _ = ListSnapshots(state, cfg)
	if !ls[0].Current || !ls[0].PublishedAt.After(ls[2].PublishedAt) {
		t.Errorf("rollback not recorded as a publication: %+v", ls)
	}
	// Status shows the Date of the Release clients now get, not the
	// newest accepted one the state keeps for rollback protection.
	if ms, err := Status(state, cfg, time.Now()); err != nil || !ms.Suites[0].Date.Equal(dates[0]) || ms.Suites[0].Snapshot != ids[0] {
		t.Errorf("status after rollback: %v %+v, want Date %v of %s (the state has %v)", err, ms.Suites, dates[0], ids[0], dates[2])
	}
	err = Rollback(state, cfg, "")
	want := "mirror up: no snapshot older than the published " + ids[0] + " was ever published, so there is none to roll back to; see `gatehouse mirror list`"
	if err == nil || err.Error() != want {
		t.Errorf("rollback past the oldest: %v, want %q", err, want)
	}
	// Named explicitly, the unpublished one can still be published.
	if err := Rollback(state, cfg, ids[1]); err != nil {
		t.Fatal(err)
	}
	if ls, _ = ListSnapshots(state, cfg); !ls[1].Published || !ls[1].Current {
		t.Errorf("explicit rollback to the unpublished snapshot: %+v", ls)
	}
}

// TestListingsBeforeRecords: snapshots made before publications were
// recorded (a state without records) count as published, so rollback
// works on an upgraded appliance as before.
func TestListingsBeforeRecords(t *testing.T) {
	snaps := []store.SnapshotInfo{{ID: "20260101T000000Z"}, {ID: "20260102T000000Z"}, {ID: "20260103T000000Z", Current: true}}
	for i, l := range listings(snaps, stateExtra{}) {
		if !l.Published || !l.PublishedAt.IsZero() {
			t.Errorf("no records, listing %d: %+v", i, l)
		}
	}
	at := time.Date(2026, 1, 3, 0, 0, 1, 0, time.UTC)
	ls := listings(snaps[:2], stateExtra{Published: map[string]time.Time{"20260102T000000Z": at}})
	if !ls[0].Published || !ls[1].Published || !ls[1].PublishedAt.Equal(at) {
		t.Errorf("records start at the second: %+v", ls)
	}
}
