package mirror

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
