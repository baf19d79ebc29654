package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestExampleConfigIsTheTemplate keeps configs/gatehouse.toml identical to
// what 'gatehouse init' writes for the default paths, and valid.
func TestExampleConfigIsTheTemplate(t *testing.T) {
	want, err := renderConfig(defaultConfigPath, defaultStateDir)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("../../configs/gatehouse.toml")
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Fatalf("configs/gatehouse.toml differs from the init template; regenerate it with:\n  go run ./cmd/gatehouse --config /etc/gatehouse/gatehouse.toml init ... or copy renderConfig's output")
	}
	if _, err := parseConfig("configs/gatehouse.toml", got); err != nil {
		t.Fatalf("example config does not parse: %v", err)
	}
}

func TestInitIsIdempotentAndPrivate(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "etc", "gatehouse.toml")
	state := filepath.Join(dir, "state")
	code, out, errs := ghRun(t, "--config", conf, "init", "--state-dir", state)
	if code != 0 {
		t.Fatalf("init: exit %d: %s", code, errs)
	}
	keys := []string{"ssh_host_ed25519_key", "upstream_ca", "host_ca", "recording_key", "archive_signing_key"}
	before := map[string][]byte{}
	for _, k := range keys {
		p := filepath.Join(state, k)
		st, err := os.Stat(p)
		if err != nil {
			t.Fatalf("%s not created: %v", k, err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %04o, want 0600", k, st.Mode().Perm())
		}
		before[k], _ = os.ReadFile(p)
	}
	if st, _ := os.Stat(state); st.Mode().Perm() != 0o700 {
		t.Errorf("state dir mode %04o, want 0700", st.Mode().Perm())
	}
	for _, want := range []string{"TrustedUserCAKeys", "@cert-authority * ssh-ed25519 ", "signed-by=", "namespaces=\"gatehouse-recording,gatehouse-audit\""} {
		if !strings.Contains(out, want) {
			t.Errorf("init output lacks %q", want)
		}
	}
	// Until the operator copies the user CA beside the config,
	// check-config says where it goes.
	code, _, errs = ghRun(t, "--config", conf, "check-config")
	confText, _ := os.ReadFile(conf)
	caLine := 1 + strings.Count(string(confText[:strings.Index(string(confText), "\nuser_ca_keys = ")+1]), "\n")
	if want := fmt.Sprintf("%s:%d: [bastion] user_ca_keys %s does not exist", conf, caLine, filepath.Join(dir, "etc", "user_ca.pub")); code != exitUsage || !strings.Contains(errs, want) {
		t.Fatalf("missing user CA: exit %d, %s, want %q", code, errs, want)
	}
	writeUserCA(t, filepath.Join(dir, "etc"))
	if code, _, errs := ghRun(t, "--config", conf, "check-config"); code != 0 {
		t.Fatalf("the config init wrote does not check: %s", errs)
	}
	// A second run keeps every key.
	if code, out, errs := ghRun(t, "--config", conf, "init", "--state-dir", state); code != 0 || strings.Contains(out, "(created)") {
		t.Fatalf("second init: exit %d, %s %s", code, out, errs)
	}
	for _, k := range keys {
		if after, _ := os.ReadFile(filepath.Join(state, k)); string(after) != string(before[k]) {
			t.Errorf("%s was overwritten", k)
		}
	}
	// A group-readable private key is refused, naming the fix.
	os.Chmod(filepath.Join(state, "upstream_ca"), 0o640)
	code, _, errs = ghRun(t, "--config", conf, "init", "--state-dir", state)
	if code == 0 || !strings.Contains(errs, "chmod 600") {
		t.Fatalf("group-readable key accepted: exit %d, %s", code, errs)
	}
}

func TestArchiveKeyCommands(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "gh.toml")
	os.WriteFile(conf, []byte("state_dir = \""+dir+"\"\n[signing]\nkey = \""+filepath.Join(dir, "ak")+"\"\n"), 0o644)
	if code, out, errs := ghRun(t, "--config", conf, "keys", "init-archive-key", "--type", "rsa4096"); code != 0 || !strings.Contains(out, "created") {
		t.Fatalf("init-archive-key: %d %s %s", code, out, errs)
	}
	code, out, _ := ghRun(t, "--config", conf, "keys", "export-archive-key", "--armor")
	if code != 0 || !strings.HasPrefix(out, "-----BEGIN PGP PUBLIC KEY BLOCK-----") {
		t.Fatalf("export --armor: %d %q", code, out)
	}
	code, out, _ = ghRun(t, "--config", conf, "keys", "export-archive-key")
	if code != 0 || len(out) == 0 || out[0]&0x80 == 0 {
		t.Fatalf("binary export does not look like an OpenPGP packet: %d %q", code, out[:min(len(out), 20)])
	}
	if code, _, _ := ghRun(t, "--config", conf, "keys", "init-archive-key", "--type", "dsa"); code != exitUsage {
		t.Fatalf("bad --type: exit %d", code)
	}
}

// TestStartupChecks: each unsafe installation is refused with a message
// naming the file and the fix.
func TestStartupChecks(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "etc", "gatehouse.toml")
	state := filepath.Join(dir, "state")
	if code, _, errs := ghRun(t, "--config", conf, "init", "--state-dir", state); code != 0 {
		t.Fatal(errs)
	}
	writeUserCA(t, filepath.Join(dir, "etc"))
	ok := func() {
		t.Helper()
		if code, _, errs := ghRun(t, "--config", conf, "check-config"); code != 0 {
			t.Fatalf("safe install refused: %s", errs)
		}
	}
	refused := func(want string) {
		t.Helper()
		code, _, errs := ghRun(t, "--config", conf, "check-config")
		if code != exitUsage || !strings.Contains(errs, want) {
			t.Fatalf("want refusal containing %q, got exit %d: %s", want, code, errs)
		}
	}
	ok()
	os.Chmod(conf, 0o666)
	refused("chmod go-w " + conf)
	os.Chmod(conf, 0o640)
	key := filepath.Join(state, "ssh_host_ed25519_key")
	os.Chmod(key, 0o644)
	refused("chmod 600 " + key)
	os.Chmod(key, 0o600)
	os.Chmod(state, 0o777)
	refused("chmod go-w " + state)
	os.Chmod(state, 0o700)
	if os.Geteuid() == 0 {
		os.Chown(state, 12345, 12345)
		refused("owned by uid 12345")
		os.Chown(state, 0, 0)
	}
	ok()
}

// writeUserCA puts a user CA public key where init's config expects it.
func writeUserCA(t *testing.T, confDir string) {
	t.Helper()
	if _, _, err := ensureSSHKey(filepath.Join(confDir, "user_ca"), "test-user-ca"); err != nil {
		t.Fatal(err)
	}
}

// TestInitConfigNamesEveryKey: every key file init creates is named in the
// config it writes, under the key that uses it (commented where optional:
// uncommenting gives exactly the created path), and record_input is
// explained there.
func TestInitConfigNamesEveryKey(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "etc", "gatehouse.toml")
	state := filepath.Join(dir, "state")
	code, out, errs := ghRun(t, "--config", conf, "init", "--state-dir", state)
	if code != 0 {
		t.Fatalf("init: exit %d: %s", code, errs)
	}
	var createdPaths []string
	for _, line := range strings.Split(out, "\n") {
		if strings.HasSuffix(line, " (created)") && !strings.Contains(line, conf) {
			f := strings.Fields(strings.TrimSuffix(line, " (created)"))
			createdPaths = append(createdPaths, f[len(f)-1])
		}
	}
	if len(createdPaths) != 5 {
		t.Fatalf("init reported %d created keys, want 5:\n%s", len(createdPaths), out)
	}
	data, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	if !strings.Contains(text, "# record_input = false") || !strings.Contains(text, "every keystroke") {
		t.Errorf("config does not explain record_input")
	}
	// Uncomment the optional recorded-session keys and decode.
	var lines []string
	for _, l := range strings.Split(text, "\n") {
		for _, k := range []string{"upstream_ca_key", "host_ca_key", "recording_key", "recordings_dir"} {
			if strings.HasPrefix(l, "# "+k+" = ") {
				l = strings.TrimPrefix(l, "# ")
			}
		}
		lines = append(lines, l)
	}
	c, err := parseConfig(conf, []byte(strings.Join(lines, "\n")))
	if err != nil {
		t.Fatalf("uncommented config does not parse: %v", err)
	}
	named := map[string]bool{c.Signing.Key: true, c.Bastion.UpstreamCAKey: true, c.Bastion.HostCAKey: true, c.Bastion.RecordingKey: true}
	for _, k := range c.Bastion.HostKeys {
		named[k] = true
	}
	for _, p := range createdPaths {
		if !named[p] {
			t.Errorf("init created %s but its config does not name it under any key", p)
		}
	}
	if c.Bastion.RecordingsDir != filepath.Join(state, "recordings") {
		t.Errorf("recordings_dir %q, want the directory init created", c.Bastion.RecordingsDir)
	}
}
