package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gatehouse/apt/apttest"
)

// TestTimerSyncShowsInServe: `gatehouse serve` is running when a sync
// runs in a process of its own (as the systemd timer's unit does); serve's
// /metrics then carries that sync's duration and fetched bytes and the
// published package counts, its status page shows the counts, and
// `mirror status` prints them per suite.
func TestTimerSyncShowsInServe(t *testing.T) {
	bin := buildGatehouse(t)
	dir := t.TempDir()
	repo, err := apttest.Build(filepath.Join(dir, "up"), apttest.NewKey(t, "ed25519"), apttest.Suite{
		Name: "stable", Components: []string{"main"}, Architectures: []string{"amd64"},
		Packages: map[string][]apttest.Package{"main": {{Name: "tool", Version: "1.0", Arch: "amd64"}, {Name: "tool-doc", Source: "tool", Version: "1.0", Arch: "all"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	up := apttest.Serve(t, repo.Dir)
	conf := filepath.Join(dir, "gh.toml")
	os.WriteFile(conf, []byte(fmt.Sprintf("state_dir = %q\n[serve]\nlisten = %q\n[[mirror]]\nname = \"timed\"\nurl = %q\nsuites = [\"stable\"]\ncomponents = [\"main\"]\narchitectures = [\"amd64\"]\nkeyring = %q\n",
		filepath.Join(dir, "state"), freePort(t), up.URL, repo.KeyringPath)), 0o600)
	base := startServe(t, conf)

	out, err := exec.Command(bin, "--config", conf, "mirror", "sync").CombinedOutput()
	if err != nil {
		t.Fatalf("sync in its own process: %v\n%s", err, out)
	}
	want := []string{
		`gatehouse_mirror_last_sync_fetched_files{mirror="timed"} `,
		`gatehouse_mirror_last_sync_duration_seconds{mirror="timed"} `,
		`gatehouse_mirror_packages{architecture="amd64",component="main",mirror="timed",suite="stable"} 2`,
	}
	var text string
	for i := 0; ; i++ { // serve caches mirror states for two seconds
		text, err = httpGet(base + "/metrics")
		if err == nil && strings.Contains(text, want[0]) && !strings.Contains(text, want[0]+"0\n") {
			break
		}
		if i > 100 {
			t.Fatalf("serve's /metrics never showed the sync: %v\n%s", err, text)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, w := range want {
		if !strings.Contains(text, w) {
			t.Errorf("/metrics lacks %q", w)
		}
	}
	if !strings.Contains(text, `gatehouse_mirror_last_sync_fetched_bytes{mirror="timed"} `) ||
		strings.Contains(text, `gatehouse_mirror_last_sync_fetched_bytes{mirror="timed"} 0`+"\n") {
		t.Errorf("/metrics lacks the bytes the sync fetched")
	}
	page, err := httpGet(base + "/")
	if err != nil || !strings.Contains(page, "main/amd64 2") {
		t.Errorf("status page lacks the package counts: %v\n%s", err, page)
	}
	code, sout, serr := ghRun(t, "--config", conf, "mirror", "status")
	if code != 0 || !strings.Contains(sout, "    packages: 2 (main/amd64 2)\n") {
		t.Errorf("mirror status: exit %d\n%s\n%s", code, sout, serr)
	}
}
