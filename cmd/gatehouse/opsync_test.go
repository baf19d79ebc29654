package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"gatehouse/apt/apttest"
)

// opsyncFixture is a one-suite upstream served on loopback and a config
// for a mirror "up" of it, rewritten by write.
type opsyncFixture struct {
	dir, state, conf string
	repo             *apttest.Repo
	srv              *apttest.Server
}

func newOpsyncFixture(t *testing.T) *opsyncFixture {
	t.Helper()
	dir := t.TempDir()
	repo, err := apttest.Build(filepath.Join(dir, "up"), apttest.NewKey(t, "ed25519"), apttest.Suite{
		Name: "stable", Codename: "cli", Components: []string{"main"}, Architectures: []string{"amd64"},
		Packages: map[string][]apttest.Package{"main": {{Name: "a", Version: "1.0", Arch: "amd64"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return &opsyncFixture{dir: dir, state: filepath.Join(dir, "state"), conf: filepath.Join(dir, "gh.toml"),
		repo: repo, srv: apttest.Serve(t, repo.Dir)}
}

// write writes the config with extra lines in the [[mirror]] table.
func (f *opsyncFixture) write(t *testing.T, keyring, components, extra string) {
	t.Helper()
	c := fmt.Sprintf("state_dir = %q\n\n[[mirror]]\nname = \"up\"\nurl = %q\nsuites = [\"stable\"]\ncomponents = %s\narchitectures = [\"amd64\"]\nkeyring = %q\n%s",
		f.state, f.srv.URL, components, keyring, extra)
	if err := os.WriteFile(f.conf, []byte(c), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestSyncMissingComponentCLI: `mirror sync` with a misspelled component
// exits 2 with the message naming mirror, value, what the Release lists
// and the fix, and publishes nothing; allow_missing = true syncs with a
// warning. A no-op sync prints the published Release's Date, not the zero
// time.
func TestSyncMissingComponentCLI(t *testing.T) {
	f := newOpsyncFixture(t)
	f.write(t, f.repo.KeyringPath, `["mian"]`, "")
	code, out, errs := ghRun(t, "--config", f.conf, "mirror", "sync")
	want := `mirror up: suite stable: the Release from ` + f.srv.URL + `/dists/stable/ does not list component "mian" (it lists components: main); nothing was published. Fix components/architectures in this [[mirror]] table (a typo?), or set allow_missing = true to mirror only what the upstream has`
	if code != exitUsage || !strings.Contains(errs, want) {
		t.Fatalf("sync with components = [\"mian\"]: exit %d\nstdout %s\nstderr %s\nwant exit 2 and %q", code, out, errs, want)
	}
	if code, out, _ := ghRun(t, "--config", f.conf, "mirror", "status"); code != 0 || !strings.Contains(out, "nothing published yet") {
		t.Fatalf("status after the refused sync: exit %d\n%s", code, out)
	}

	f.write(t, f.repo.KeyringPath, `["main", "mian"]`, "allow_missing = true\n")
	code, out, errs = ghRun(t, "--config", f.conf, "mirror", "sync")
	if code != 0 || !strings.Contains(out, "up: published") || !strings.Contains(out+errs, `does not list component "mian"`) {
		t.Fatalf("sync with allow_missing: exit %d\n%s\n%s", code, out, errs)
	}
	code, out, errs = ghRun(t, "--config", f.conf, "mirror", "sync")
	if code != 0 || !strings.Contains(out, "up: current") || strings.Contains(out, "0001-01-01") || !strings.Contains(out, "  stable: dated 20") {
		t.Fatalf("no-op sync: exit %d\n%s\n%s", code, out, errs)
	}
}

// TestSyncWrongKeyringUnchangedCLI: after the keyring is replaced by one
// without the upstream's key, a sync of the unchanged upstream exits 3 and
// says the published Release is not signed by a key in the configured
// keyring and what to do (it used to exit 0 "current"), like `mirror
// verify`.
func TestSyncWrongKeyringUnchangedCLI(t *testing.T) {
	f := newOpsyncFixture(t)
	f.write(t, f.repo.KeyringPath, `["main"]`, "")
	if code, out, errs := ghRun(t, "--config", f.conf, "mirror", "sync"); code != 0 {
		t.Fatalf("first sync: exit %d\n%s\n%s", code, out, errs)
	}
	pub, err := apttest.NewKey(t, "ed25519").PublicKey(false)
	if err != nil {
		t.Fatal(err)
	}
	wrong := filepath.Join(f.dir, "wrong.gpg")
	os.WriteFile(wrong, pub, 0o644)
	f.write(t, wrong, `["main"]`, "")
	code, out, errs := ghRun(t, "--config", f.conf, "mirror", "sync")
	if code != exitRefused || !strings.Contains(errs, "mirror up: suite stable: the published Release (snapshot ") ||
		!strings.Contains(errs, ") is not signed by a key in the configured keyring "+wrong+": ") ||
		!strings.Contains(errs, "if the upstream rotated its signing key, set keyring to its new Signed-By file and sync again; otherwise restore the previous keyring") {
		t.Fatalf("sync of an unchanged upstream with the wrong keyring: exit %d\nstdout %s\nstderr %s", code, out, errs)
	}
	if code, out, _ := ghRun(t, "--config", f.conf, "mirror", "verify"); code != exitRefused {
		t.Errorf("verify with the wrong keyring: exit %d\n%s", code, out)
	}
}

// TestListRollbackPublishedCLI: `mirror list` says when each snapshot was
// published; `mirror rollback NAME` goes to the previous published one and
// past the oldest says why there is none (exit 1).
func TestListRollbackPublishedCLI(t *testing.T) {
	f := newOpsyncFixture(t)
	f.write(t, f.repo.KeyringPath, `["main"]`, "")
	for i := range 2 {
		if i > 0 {
			if err := f.repo.Rebuild(f.repo.Suites()...); err != nil {
				t.Fatal(err)
			}
		}
		if code, out, errs := ghRun(t, "--config", f.conf, "mirror", "sync"); code != 0 || !strings.Contains(out, "up: published") {
			t.Fatalf("sync %d: exit %d\n%s\n%s", i, code, out, errs)
		}
	}
	code, out, _ := ghRun(t, "--config", f.conf, "mirror", "list")
	line := regexp.MustCompile(`(?m)^  ([ *]) (\S+)  \S+Z  published (\S+Z)$`)
	m := line.FindAllStringSubmatch(out, -1)
	if code != 0 || len(m) != 2 || m[0][1] != " " || m[1][1] != "*" {
		t.Fatalf("list: exit %d\n%s", code, out)
	}
	code, out, errs := ghRun(t, "--config", f.conf, "mirror", "rollback", "up")
	if code != 0 || out != "up: now publishing snapshot "+m[0][2]+"\n" {
		t.Fatalf("rollback: exit %d\n%s\n%s", code, out, errs)
	}
	code, _, errs = ghRun(t, "--config", f.conf, "mirror", "rollback", "up")
	want := "mirror up: no snapshot older than the published " + m[0][2] + " was ever published, so there is none to roll back to; see `gatehouse mirror list`"
	if code != exitFailure || !strings.Contains(errs, want) {
		t.Fatalf("rollback past the oldest: exit %d\n%s\nwant %q", code, errs, want)
	}
	if code, out, _ = ghRun(t, "--config", f.conf, "mirror", "list"); code != 0 || !regexp.MustCompile(`(?m)^  \* `+m[0][2]+`  \S+Z  published \S+Z$`).MatchString(out) {
		t.Fatalf("list after rollback: exit %d\n%s", code, out)
	}
}
