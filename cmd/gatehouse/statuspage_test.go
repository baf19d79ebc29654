package main

import (
	"bytes"
	"context"
	"fmt"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gatehouse/apt/apttest"
)

// chromiumArgs are the flags a headless Chromium needs in a sandboxed,
// offline test: no background networking, no first-run, a fresh profile.
func chromiumArgs(profile string, extra ...string) []string {
	return append([]string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir=" + profile}, extra...)
}

// TestStatusPageInChromium loads serve's status page in real headless
// Chromium: the rendered DOM shows the synced mirror, and a screenshot is
// produced.
func TestStatusPageInChromium(t *testing.T) {
	if _, err := exec.LookPath("chromium"); err != nil {
		t.Skip("chromium not installed")
	}
	dir := t.TempDir()
	repo, err := apttest.Build(filepath.Join(dir, "up"), apttest.NewKey(t, "ed25519"), apttest.Suite{
		Name: "stable", Components: []string{"main"}, Architectures: []string{"amd64"},
		Packages: map[string][]apttest.Package{"main": {{Name: "tool", Version: "1.0", Arch: "amd64"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	up := apttest.Serve(t, repo.Dir)
	addr := freePort(t)
	conf := filepath.Join(dir, "gh.toml")
	os.WriteFile(conf, []byte(fmt.Sprintf("state_dir = %q\n[serve]\nlisten = %q\n[[mirror]]\nname = \"pagetest\"\nurl = %q\nsuites = [\"stable\"]\ncomponents = [\"main\"]\narchitectures = [\"amd64\"]\nkeyring = %q\n",
		filepath.Join(dir, "state"), addr, up.URL, repo.KeyringPath)), 0o600)
	if code, out, errs := ghRun(t, "--config", conf, "mirror", "sync"); code != 0 {
		t.Fatalf("sync: %s %s", out, errs)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int)
	go func() { done <- run(ctx, []string{"--config", conf, "serve"}, &bytes.Buffer{}, &bytes.Buffer{}) }()
	defer func() { cancel(); <-done }()
	url := "http://" + addr + "/"
	for i := 0; ; i++ {
		if _, err := httpGet(url); err == nil {
			break
		} else if i > 200 {
			t.Fatalf("serve did not start: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}

	cctx, ccancel := context.WithTimeout(ctx, 2*time.Minute)
	defer ccancel()
	dom, err := exec.CommandContext(cctx, "chromium", chromiumArgs(filepath.Join(dir, "profile1"), "--dump-dom", url)...).Output()
	if err != nil {
		t.Fatalf("chromium --dump-dom: %v", err)
	}
	for _, want := range []string{`id="m-pagetest"`, "published snapshot", "stable", "/metrics"} {
		if !strings.Contains(string(dom), want) {
			t.Errorf("rendered page lacks %q:\n%s", want, dom)
		}
	}
	if strings.Contains(string(dom), "nothing published yet") {
		t.Errorf("page says nothing is published after a sync")
	}
	shot := filepath.Join(dir, "status.png")
	if out, err := exec.CommandContext(cctx, "chromium", chromiumArgs(filepath.Join(dir, "profile2"), "--window-size=1000,800", "--screenshot="+shot, url)...).CombinedOutput(); err != nil {
		t.Fatalf("chromium --screenshot: %v\n%s", err, out)
	}
	f, err := os.Open(shot)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("screenshot is not a PNG: %v", err)
	}
	if b := img.Bounds(); b.Dx() != 1000 || b.Dy() != 800 {
		t.Fatalf("screenshot is %v", b)
	}
	if p := os.Getenv("GATEHOUSE_SCREENSHOT"); p != "" {
		data, _ := os.ReadFile(shot)
		os.WriteFile(p, data, 0o644)
	}
}
