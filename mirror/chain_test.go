package mirror

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"gatehouse/apt/apttest"
)

// TestChain: a second gatehouse (inner) mirrors the first (outer) over
// HTTP, verbatim, and real apt-get on the inner side installs from the
// inner one. For a verbatim outer mirror the inner keeps the upstream's
// signatures (its keyring is the upstream's); for a filtered outer mirror
// it keeps the outer appliance's (its keyring is the outer [signing]
// key's public part). Then the upstream changes, both sync again, and apt
// on the inner side gets the new version: the chain carries updates too.
func TestChain(t *testing.T) {
	t.Run("verbatim", func(t *testing.T) {
		up := newUpstream(t)
		outer, inner := t.TempDir(), t.TempDir()
		outerCfg := up.config()
		mustSync(t, outer, outerCfg)
		innerCfg := up.config() // the upstream's keyring: its signatures pass through
		innerCfg.URL = serveMirror(t, outer)
		mustSync(t, inner, innerCfg)
		apt := apttest.AptClient(t, up.repo.SourcesLine(serveMirror(t, inner), "stable", "main"))
		chainInstall(t, apt, "hello", "hello_1.0-1_")

		if err := up.repo.Rebuild(testSuite("1.1-1")); err != nil {
			t.Fatal(err)
		}
		mustSync(t, outer, outerCfg)
		if rep := mustSync(t, inner, innerCfg); rep.Result != ResultPublished {
			t.Fatalf("inner sync after the upstream changed: %+v", rep)
		}
		chainInstall(t, apt, "hello", "hello_1.1-1_")
		for _, state := range []string{outer, inner} {
			if problems, err := Verify(context.Background(), state, innerCfg, testOptions(t)); err != nil || len(problems) != 0 {
				t.Errorf("verify %s: %v %q", state, err, problems)
			}
		}
	})

	t.Run("filtered", func(t *testing.T) {
		now := time.Now()
		up := filteredUpstream(t, now.Add(-time.Hour), now.Add(7*24*time.Hour))
		outer, inner := t.TempDir(), t.TempDir()
		signing, pubPath, _ := archiveKey(t)
		outerCfg := filteredConfig(up)
		outerOpt := testOptions(t)
		outerOpt.Signing = signing
		if _, err := Sync(context.Background(), outer, outerCfg, outerOpt); err != nil {
			t.Fatalf("outer sync: %v", err)
		}
		// The inner mirror is verbatim: it trusts the outer appliance's
		// key, which signed the filtered suites.
		innerCfg := up.config()
		innerCfg.URL = serveMirror(t, outer)
		innerCfg.Suites = outerCfg.Suites
		innerCfg.Keyring = pubPath
		innerCfg.Sources = false
		mustSync(t, inner, innerCfg)
		apt := apttest.AptClient(t, filteredSources(serveMirror(t, inner), pubPath))
		chainInstall(t, apt, "app", "app_2.1-1_")
		if out, err := apt.InstallDownloadOnly("unrelated"); err == nil {
			t.Errorf("the inner mirror has a package the outer selection left out:\n%s", out)
		}

		// With the upstream's keyring the inner mirror refuses the outer
		// one's re-signed suites (exit 3), publishing nothing new.
		wrong := innerCfg
		wrong.Keyring = up.repo.KeyringPath
		if rep, err := Sync(context.Background(), t.TempDir(), wrong, testOptions(t)); err == nil || rep.Result != ResultRefused {
			t.Errorf("inner mirror trusting only the upstream key: %v %+v", err, rep)
		}
	})
}

// chainInstall runs apt-get update and a download of pkg on the inner
// side and checks that a .deb whose name starts with want arrived.
func chainInstall(t *testing.T, apt *apttest.Apt, pkg, want string) {
	t.Helper()
	if out, err := apt.Update(); err != nil {
		t.Fatalf("apt-get update from the inner mirror: %v\n%s", err, out)
	}
	if out, err := apt.InstallDownloadOnly(pkg); err != nil {
		t.Fatalf("apt-get install %s from the inner mirror: %v\n%s", pkg, err, out)
	}
	debs, _ := filepath.Glob(filepath.Join(apt.ArchivesDir(), "*.deb"))
	if !slices.ContainsFunc(debs, func(p string) bool { return strings.HasPrefix(filepath.Base(p), want) }) {
		t.Errorf("apt downloaded %q, want %s*", debs, want)
	}
}
