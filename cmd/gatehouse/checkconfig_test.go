package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gatehouse/apt/apttest"
)

// checkConfigRepo serves a signed repository with suite "stable",
// component "main" and architecture amd64, and returns a function writing
// a one-mirror config (line 7 components, line 9 keyring) with the given
// suite, component and keyring.
func checkConfigRepo(t *testing.T) (dir, keyring string, write func(suite, comp, keyring string) string) {
	t.Helper()
	dir = t.TempDir()
	repo, err := apttest.Build(filepath.Join(dir, "up"), apttest.NewKey(t, "ed25519"), apttest.Suite{
		Name: "stable", Codename: "cc", Components: []string{"main"}, Architectures: []string{"amd64"},
		Packages: map[string][]apttest.Package{"main": {{Name: "a", Version: "1.0", Arch: "amd64"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := apttest.Serve(t, repo.Dir)
	conf := filepath.Join(dir, "gh.toml")
	write = func(suite, comp, keyring string) string {
		c := fmt.Sprintf("state_dir = %q\n\n[[mirror]]\nname = \"up\"\nurl = %q\nsuites = [%q]\ncomponents = [%q]\narchitectures = [\"amd64\"]\nkeyring = %q\n",
			filepath.Join(dir, "state"), srv.URL, suite, comp, keyring)
		if err := os.WriteFile(conf, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
		return conf
	}
	return dir, repo.KeyringPath, write
}

// TestCheckConfigCatchesMistakes: each mistake an operator made that
// check-config used to call OK is now one line naming file:line and the
// fix, with exit 2 for configuration errors and 3 for a key that does not
// verify the upstream.
func TestCheckConfigCatchesMistakes(t *testing.T) {
	dir, keyring, write := checkConfigRepo(t)

	conf := write("stable", "main", keyring)
	code, out, errs := ghRun(t, "--config", conf, "check-config", "--online", "--as-me")
	if code != 0 || !strings.Contains(out, "OK (1 mirrors") || !strings.Contains(out, "mirror up: keyring "+keyring+": ") ||
		!strings.Contains(out, "mirror up: suite stable: Release signed by ") {
		t.Fatalf("good config: exit %d\n%s\n%s", code, out, errs)
	}

	missing := filepath.Join(dir, "missing.gpg")
	conf = write("stable", "main", missing)
	code, _, errs = ghRun(t, "--config", conf, "check-config", "--as-me")
	if want := conf + ":9: mirror up: keyring " + missing + " does not exist; fix: create it or correct the path\n"; code != exitUsage || !strings.Contains(errs, want) {
		t.Fatalf("missing keyring: exit %d, stderr %q, want %q", code, errs, want)
	}

	conf = write("nosuch", "main", keyring)
	code, _, errs = ghRun(t, "--config", conf, "check-config", "--online", "--as-me")
	if want := conf + ":6: mirror up: suite nosuch does not exist upstream (no InRelease or Release under "; code != exitUsage || !strings.Contains(errs, want) ||
		!strings.Contains(errs, "fix: correct the suite name or url\n") {
		t.Fatalf("missing suite: exit %d, stderr %q, want %q", code, errs, want)
	}

	conf = write("stable", "mian", keyring)
	code, _, errs = ghRun(t, "--config", conf, "check-config", "--online", "--as-me")
	if want := conf + `:7: mirror up: suite stable has no component "mian" upstream; fix: correct components (the Release lists what exists)` + "\n"; code != exitUsage || !strings.Contains(errs, want) {
		t.Fatalf("misspelled component: exit %d, stderr %q, want %q", code, errs, want)
	}

	other := apttest.NewKey(t, "ed25519")
	pub, _ := other.PublicKey(false)
	wrong := filepath.Join(dir, "wrong.gpg")
	if err := os.WriteFile(wrong, pub, 0o644); err != nil {
		t.Fatal(err)
	}
	conf = write("stable", "main", wrong)
	code, _, errs = ghRun(t, "--config", conf, "check-config", "--online", "--as-me")
	if want := conf + ":9: refused by verification: mirror up: suite stable: InRelease from http://"; code != exitRefused || !strings.Contains(errs, want) || !strings.Contains(errs, "/dists/stable/InRelease: signed by ") ||
		!strings.Contains(errs, "fix: set keyring to the file the upstream's Release is signed with") {
		t.Fatalf("wrong keyring: exit %d, stderr %q, want %q", code, errs, want)
	}

	// Not a keyring at all: the key check fails, exit 3.
	junk := filepath.Join(dir, "junk.gpg")
	os.WriteFile(junk, []byte("not a key\n"), 0o644)
	conf = write("stable", "main", junk)
	code, _, errs = ghRun(t, "--config", conf, "check-config", "--as-me")
	if want := conf + ":9: mirror up: keyring " + junk + " cannot be used: "; code != exitRefused || !strings.Contains(errs, want) {
		t.Fatalf("junk keyring: exit %d, stderr %q, want %q", code, errs, want)
	}
}

// TestCheckConfigPrivateKeyMode: a private key others may read is named
// with its line and the chmod that fixes it.
func TestCheckConfigPrivateKeyMode(t *testing.T) {
	dir, keyring, write := checkConfigRepo(t)
	conf := write("stable", "main", keyring)
	keyPath := filepath.Join(dir, "signing.asc")
	data, _ := os.ReadFile(conf)
	os.WriteFile(conf, append(data, fmt.Sprintf("\n[signing]\nkey = %q\n", keyPath)...), 0o644)
	if code, _, errs := ghRun(t, "--config", conf, "keys", "init-archive-key"); code != 0 {
		t.Fatalf("keys init-archive-key: %s", errs)
	}
	if code, out, errs := ghRun(t, "--config", conf, "check-config", "--as-me"); code != 0 || !strings.Contains(out, "[signing] key "+keyPath+": ") {
		t.Fatalf("intact key: exit %d\n%s\n%s", code, out, errs)
	}
	os.Chmod(keyPath, 0o644)
	code, _, errs := ghRun(t, "--config", conf, "check-config", "--as-me")
	if want := conf + ":12: private key " + keyPath + " has mode 0644: other users may read it; fix: chmod 600 " + keyPath + "\n"; code != exitUsage || !strings.Contains(errs, want) {
		t.Fatalf("readable private key: exit %d, stderr %q, want %q", code, errs, want)
	}
}

// TestParseConfigSameTypoTwice: the same unknown key in two [[mirror]]
// tables is reported at each one's own line, not twice at the first.
func TestParseConfigSameTypoTwice(t *testing.T) {
	two := goodConfig + "\n[[mirror]]\nname = \"other\"\nurl = \"http://example.org/other\"\nsuites = [\"bookworm\"]\ncomponents = [\"main\"]\nkeyring = \"/k\"\n"
	bad := strings.ReplaceAll(two, "components =", "componets =")
	_, err := parseConfig("gh.toml", []byte(bad))
	if err == nil || exitCode(err) != exitUsage {
		t.Fatalf("want usage error, got %v", err)
	}
	for _, want := range []string{`gh.toml:7: unknown key "mirror.componets"`, `gh.toml:15: unknown key "mirror.componets"`} {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("error %q lacks %q", err, want)
		}
	}
	// A validation error names the line of its own [[mirror]] table.
	_, err = parseConfig("gh.toml", []byte(strings.Replace(two, `keyring = "/k"`, `concurrency = 99`+"\nkeyring = \"/k\"", 1)))
	if err == nil || !strings.HasPrefix(err.Error(), `gh.toml:11: [[mirror]] name="other": concurrency must be between 1 and 64`) {
		t.Fatalf("validation error position: %v", err)
	}
}
