package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gatehouse/apt/apttest"
)

// TestMirrorRefusalsAreRateLimitedWarnings: a sync refused by verification
// (the upstream signs with a key the mirror's keyring does not hold) is a
// warning in the service log, not an error, and repeated refusals of one
// mirror in one process are cut to the burst while another mirror's first
// refusal still shows; `mirror verify` finding damage warns too.
func TestMirrorRefusalsAreRateLimitedWarnings(t *testing.T) {
	dir := t.TempDir()
	repo, err := apttest.Build(filepath.Join(dir, "up"), apttest.NewKey(t, "ed25519"), apttest.Suite{
		Name: "stable", Components: []string{"main"}, Architectures: []string{"amd64"},
		Packages: map[string][]apttest.Package{"main": {{Name: "a", Version: "1.0", Arch: "amd64"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	other, err := apttest.Build(filepath.Join(dir, "other"), apttest.NewKey(t, "ed25519"), apttest.Suite{
		Name: "stable", Components: []string{"main"}, Architectures: []string{"amd64"},
		Packages: map[string][]apttest.Package{"main": {{Name: "b", Version: "1.0", Arch: "amd64"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := apttest.Serve(t, repo.Dir)
	state := filepath.Join(dir, "state")
	conf := filepath.Join(dir, "gh.toml")
	mirrorTable := func(name, keyring string) string {
		return fmt.Sprintf("[[mirror]]\nname = %q\nurl = %q\nsuites = [\"stable\"]\ncomponents = [\"main\"]\narchitectures = [\"amd64\"]\nkeyring = %q\n", name, srv.URL, keyring)
	}
	// Both mirrors trust the other archive's key: every sync is refused.
	os.WriteFile(conf, []byte(fmt.Sprintf("state_dir = %q\n", state)+mirrorTable("up", other.KeyringPath)+mirrorTable("second", other.KeyringPath)), 0o600)
	code, _, errs := ghRun(t, "--config", conf, "mirror", "sync", "up", "up", "up", "up", "up", "up", "second")
	if code != exitRefused {
		t.Fatalf("refused syncs: exit %d, want %d\n%s", code, exitRefused, errs)
	}
	warn := `level=WARN msg="sync failed: refused by verification" mirror=`
	if n := strings.Count(errs, warn+"up "); n != mirrorRefusalBurst {
		t.Errorf("%d warnings for 6 refused syncs of one mirror, want the burst of %d:\n%s", n, mirrorRefusalBurst, errs)
	}
	if n := strings.Count(errs, warn+"second "); n != 1 {
		t.Errorf("the second mirror's refusal was not logged once (%d) although its own budget is untouched:\n%s", n, errs)
	}
	if strings.Contains(errs, "level=ERROR") {
		t.Errorf("a refusal was logged as an error:\n%s", errs)
	}

	// Trust the right key, publish, then damage a pool file: verify warns.
	os.WriteFile(conf, []byte(fmt.Sprintf("state_dir = %q\n", state)+mirrorTable("up", repo.KeyringPath)), 0o600)
	if code, out, errs := ghRun(t, "--config", conf, "mirror", "sync"); code != 0 {
		t.Fatalf("sync: exit %d\n%s\n%s", code, out, errs)
	}
	debs, _ := filepath.Glob(filepath.Join(state, "mirrors", "up", "pool", "main", "a", "a", "*.deb"))
	if len(debs) != 1 {
		t.Fatalf("pool layout: %v", debs)
	}
	data, _ := os.ReadFile(debs[0])
	data[len(data)/2] ^= 1
	os.WriteFile(debs[0], data, 0o644)
	code, _, errs = ghRun(t, "--config", conf, "mirror", "verify")
	if code != exitRefused || !strings.Contains(errs, `level=WARN msg="mirror verify: the published mirror does not verify" mirror=up problems=1`) {
		t.Errorf("verify of a damaged mirror: exit %d, service log:\n%s", code, errs)
	}
}
