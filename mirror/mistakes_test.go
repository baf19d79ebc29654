package mirror

import (
	"context"
	"errors"
	"strings"
	"testing"
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
