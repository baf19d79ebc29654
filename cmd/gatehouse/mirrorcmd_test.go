package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"gatehouse/apt/apttest"
)

// ghRun runs the CLI in-process and returns exit code, stdout and stderr.
func ghRun(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

// TestMirrorCLI drives the documented operator workflow through the CLI and
// checks its exit codes: sync (0), sync again (0, current), status --json,
// verify (0), a corrupted pool file found by verify (3), a sync against the
// wrong keyring refused (3), and an unknown mirror name (2).
func TestMirrorCLI(t *testing.T) {
	dir := t.TempDir()
	key := apttest.NewKey(t, "ed25519")
	repo, err := apttest.Build(filepath.Join(dir, "up"), key, apttest.Suite{
		Name: "stable", Codename: "cli", Components: []string{"main"}, Architectures: []string{"amd64"},
		Packages: map[string][]apttest.Package{"main": {{Name: "a", Version: "1.0", Arch: "amd64"}, {Name: "b", Version: "2.0", Arch: "all"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := apttest.Serve(t, repo.Dir)
	state := filepath.Join(dir, "state")
	conf := filepath.Join(dir, "gh.toml")
	writeConf := func(keyring string) {
		c := fmt.Sprintf("state_dir = %q\n\n[[mirror]]\nname = \"up\"\nurl = %q\nsuites = [\"stable\"]\ncomponents = [\"main\"]\narchitectures = [\"amd64\"]\nkeyring = %q\n", state, srv.URL, keyring)
		if err := os.WriteFile(conf, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeConf(repo.KeyringPath)

	code, out, errs := ghRun(t, "--config", conf, "mirror", "sync")
	if code != 0 || !strings.Contains(out, "up: published") {
		t.Fatalf("first sync: exit %d\n%s\n%s", code, out, errs)
	}
	code, out, errs = ghRun(t, "--config", conf, "mirror", "sync", "up")
	if code != 0 || !strings.Contains(out, "up: current") {
		t.Fatalf("second sync: exit %d\n%s\n%s", code, out, errs)
	}
	code, out, _ = ghRun(t, "--config", conf, "--json", "mirror", "status")
	var st []struct {
		Mirror, Published string
		PoolFiles         int `json:"pool_files"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil || len(st) != 1 || st[0].Published == "" || st[0].PoolFiles != 2 {
		t.Fatalf("status: exit %d, %q -> %+v", code, out, st)
	}
	if code, out, errs = ghRun(t, "--config", conf, "mirror", "verify"); code != 0 {
		t.Fatalf("verify of an intact mirror: exit %d\n%s\n%s", code, out, errs)
	}

	// Corrupt one published pool file: verify must name it and exit 3.
	debs, _ := filepath.Glob(filepath.Join(state, "mirrors", "up", "pool", "main", "a", "a", "*.deb"))
	if len(debs) != 1 {
		t.Fatalf("pool layout: %v", debs)
	}
	data, _ := os.ReadFile(debs[0])
	data[len(data)/2] ^= 1
	os.WriteFile(debs[0], data, 0o644)
	code, out, _ = ghRun(t, "--config", conf, "mirror", "verify")
	if code != exitRefused || !strings.Contains(out, filepath.Base(debs[0])) {
		t.Fatalf("verify of a corrupted mirror: exit %d, output %q", code, out)
	}

	// A keyring without the upstream's key: the next changed upstream is refused.
	other := apttest.NewKey(t, "ed25519")
	pub, _ := other.PublicKey(false)
	wrong := filepath.Join(dir, "wrong.gpg")
	os.WriteFile(wrong, pub, 0o644)
	writeConf(wrong)
	if err := repo.Rebuild(repo.Suites()...); err != nil {
		t.Fatal(err)
	}
	code, _, errs = ghRun(t, "--config", conf, "mirror", "sync")
	if code != exitRefused || !strings.Contains(errs, "refused") {
		t.Fatalf("wrong keyring: exit %d, stderr %q", code, errs)
	}

	if code, _, _ = ghRun(t, "--config", conf, "mirror", "sync", "nope"); code != exitUsage {
		t.Fatalf("unknown mirror: exit %d", code)
	}
}

// TestFilteredMirrorCLI: a filtered mirror through the CLI. Without a
// [signing] key the configuration is refused (2); with the key from `keys
// init-archive-key`, sync publishes the closure (0), sync again is current,
// verify checks it against the appliance key (0), and the Release served
// verifies with the key `keys export-archive-key` prints, using real gpgv.
func TestFilteredMirrorCLI(t *testing.T) {
	dir := t.TempDir()
	repo, err := apttest.Build(filepath.Join(dir, "up"), apttest.NewKey(t, "ed25519"), apttest.Suite{
		Name: "stable", Components: []string{"main"}, Architectures: []string{"amd64"},
		Packages: map[string][]apttest.Package{"main": apttest.DependencyGraph("amd64")},
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := apttest.Serve(t, repo.Dir)
	state := filepath.Join(dir, "state")
	conf := filepath.Join(dir, "gh.toml")
	keyPath := filepath.Join(dir, "archive_signing_key")
	mirrorTable := fmt.Sprintf("[[mirror]]\nname = \"ops\"\nurl = %q\nsuites = [\"stable\"]\ncomponents = [\"main\"]\narchitectures = [\"amd64\"]\nkeyring = %q\nmode = \"filtered\"\ninclude = [\"app\"]\nwith_dependencies = true\n", srv.URL, repo.KeyringPath)
	os.WriteFile(conf, []byte(fmt.Sprintf("state_dir = %q\n%s", state, mirrorTable)), 0o600)
	if code, _, errs := ghRun(t, "--config", conf, "check-config"); code != exitUsage || !strings.Contains(errs, "[signing] key") {
		t.Fatalf("filtered without [signing]: exit %d, %s", code, errs)
	}
	os.WriteFile(conf, []byte(fmt.Sprintf("state_dir = %q\n[signing]\nkey = %q\n%s", state, keyPath, mirrorTable)), 0o600)
	if code, out, errs := ghRun(t, "--config", conf, "keys", "init-archive-key"); code != 0 {
		t.Fatalf("init-archive-key: exit %d\n%s\n%s", code, out, errs)
	}
	code, out, errs := ghRun(t, "--config", conf, "mirror", "sync", "--dry-run")
	if code != 0 || !strings.Contains(out, "ops: dry-run") || !strings.Contains(out, "would publish 6 packages") ||
		!strings.Contains(out, "    app 2.0-1 amd64\n") || !strings.Contains(out, "nothing was changed") {
		t.Fatalf("filtered dry run: exit %d\n%s\n%s", code, out, errs)
	}
	if code, out, _ := ghRun(t, "--config", conf, "mirror", "status"); code != 0 || !strings.Contains(out, "nothing published yet") {
		t.Fatalf("status after a dry run: exit %d\n%s", code, out)
	}
	if code, out, errs := ghRun(t, "--config", conf, "mirror", "sync"); code != 0 || !strings.Contains(out, "ops: published") {
		t.Fatalf("filtered sync: exit %d\n%s\n%s", code, out, errs)
	}
	if code, out, errs := ghRun(t, "--config", conf, "mirror", "sync"); code != 0 || !strings.Contains(out, "ops: current") {
		t.Fatalf("second filtered sync: exit %d\n%s\n%s", code, out, errs)
	}
	if code, out, errs := ghRun(t, "--config", conf, "mirror", "verify"); code != 0 {
		t.Fatalf("verify of the filtered mirror: exit %d\n%s\n%s", code, out, errs)
	}
	if code, out, _ := ghRun(t, "--config", conf, "mirror", "status"); code != 0 || !strings.Contains(out, "ops (filtered): ") ||
		!regexp.MustCompile(`\n  last sync: current at \S+Z, took \S+, 0 files \(0 B\) fetched\n`).MatchString(out) {
		t.Fatalf("status of the filtered mirror: exit %d\n%s", code, out)
	}
	code, pub, errs := ghRun(t, "--config", conf, "keys", "export-archive-key")
	if code != 0 {
		t.Fatalf("export-archive-key: exit %d %s", code, errs)
	}
	pubPath := filepath.Join(dir, "archive.gpg")
	os.WriteFile(pubPath, []byte(pub), 0o644)
	inrel, _ := filepath.Glob(filepath.Join(state, "mirrors", "ops", "snapshots", "*", "dists", "stable", "InRelease"))
	if len(inrel) != 1 {
		t.Fatalf("published InRelease: %v", inrel)
	}
	if out, err := exec.Command("gpgv", "--keyring", pubPath, inrel[0]).CombinedOutput(); err != nil {
		t.Fatalf("gpgv with the exported archive key: %v\n%s", err, out)
	}
}
