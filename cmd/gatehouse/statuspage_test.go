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
	"gatehouse/cmd/gatehouse/internal/rectest"
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

const replayMarker = rectest.ReplayMarker

// testRecordings is rectest.Recordings (a good and an edited recording).
func testRecordings(t *testing.T, dir string) (recDir, key, good, bad string) {
	return rectest.Recordings(t, dir)
}

// startServe runs `gatehouse serve` with conf until the test ends and
// returns its base URL once it answers.
func startServe(t *testing.T, conf string) string {
	t.Helper()
	cfg, err := loadConfig(conf)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int)
	var errb bytes.Buffer
	go func() { done <- run(ctx, []string{"--config", conf, "serve"}, &bytes.Buffer{}, &errb) }()
	t.Cleanup(func() { cancel(); <-done })
	base := "http://" + cfg.Serve.Listen
	for i := 0; ; i++ {
		if _, err := httpGet(base + "/"); err == nil {
			return base
		} else if i > 200 {
			cancel()
			<-done
			t.Fatalf("serve did not start: %v\n%s", err, errb.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// sessionsConfig writes a config that serves no mirror, names the
// recordings and key in [bastion] (serve does not start the bastion) and
// lets sessionsFrom see sessions.
func sessionsConfig(t *testing.T, dir, recDir, key, sessionsFrom string) string {
	t.Helper()
	conf := filepath.Join(dir, "gh.toml")
	text := fmt.Sprintf(`state_dir = %q
[serve]
listen = %q
[status]
sessions_from = %s
[bastion]
listen = "127.0.0.1:0"
host_keys = [%q]
user_ca_keys = %q
audit_log = %q
recordings_dir = %q
recording_key = %q
`, filepath.Join(dir, "state"), freePort(t), sessionsFrom, filepath.Join(dir, "host_key"), filepath.Join(dir, "user_ca.pub"),
		filepath.Join(dir, "audit.jsonl"), recDir, key)
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return conf
}

// TestStatusPageReplaysRecordingInChromium is "a recording plays": serve,
// with 127.0.0.0/8 allowed to see sessions, lists two real signed
// recordings on / (one verifying, one edited and flagged), and the replay
// page, loaded in real headless Chromium, runs the vendored asciinema-player
// under the page's CSP until the recorded output is in the DOM.
func TestStatusPageReplaysRecordingInChromium(t *testing.T) {
	if _, err := exec.LookPath("chromium"); err != nil {
		t.Skip("chromium not installed")
	}
	dir := t.TempDir()
	recDir, key, good, bad := testRecordings(t, dir)
	base := startServe(t, sessionsConfig(t, dir, recDir, key, `["127.0.0.0/8"]`))

	page, err := httpGet(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	replay := "/recordings/" + good + "/ch00"
	for _, want := range []string{`id="sessions"`, `id="rec-` + good + `"`, `href="` + replay + `"`, "signature ok",
		"alice", "alice@example.org", "root@db1.example.org:22", "192.0.2.7:50122", "2026-11-23 10:15:00 UTC",
		`id="rec-` + bad + `"`, `<span class="bad">VERIFICATION FAILED: `, "The bastion does not run in this process"} {
		if !strings.Contains(page, want) {
			t.Errorf("status page lacks %q", want)
		}
	}
	if strings.Index(page, `id="rec-`+good) > strings.Index(page, `id="rec-`+bad) {
		t.Errorf("recordings are not listed newest first")
	}
	html, err := httpGet(base + replay)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(html, replayMarker) {
		t.Fatalf("the replay page itself contains the recorded output; the Chromium check would prove nothing")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	b := startCDP(t, ctx)
	// Collect CSP violations from before the page's first script.
	const cspProbe = `window.__csp = []; document.addEventListener("securitypolicyviolation", e => window.__csp.push(e.violatedDirective + " " + e.blockedURI));`
	sess, err := b.open(base+replay, cspProbe)
	if err != nil {
		t.Fatal(err)
	}
	var text string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if text, err = b.eval(sess, `(document.querySelector("#player .ap-player .ap-term-text") || {}).innerText || ""`); err != nil {
			t.Fatal(err)
		}
		if hasLine(text, replayMarker) {
			break
		}
	}
	// The echoed command and its output, each on its own terminal line.
	if !hasLine(text, "root@db1:~# echo "+replayMarker) || !hasLine(text, replayMarker) {
		dom, _ := b.eval(sess, "document.documentElement.outerHTML")
		t.Fatalf("the player did not play the recorded line %q within 30 s; terminal text %q\n%s", replayMarker, text, dom)
	}
	if v, err := b.eval(sess, "JSON.stringify(window.__csp)"); err != nil || v != "[]" {
		t.Errorf("CSP violations on the replay page: %s %v", v, err)
	}
	shot, err := b.screenshot(sess)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(shot))
	if err != nil {
		t.Fatalf("screenshot is not a PNG: %v", err)
	}
	if bd := img.Bounds(); bd.Dx() < 100 || bd.Dy() < 100 {
		t.Errorf("screenshot is %v", bd)
	}
	if p := os.Getenv("GATEHOUSE_REPLAY_SCREENSHOT"); p != "" {
		os.WriteFile(p, shot, 0o644)
	}

	// The status page as Chromium renders it: the row and its replay link.
	sess, err = b.open(base+"/", cspProbe)
	if err != nil {
		t.Fatal(err)
	}
	var got string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline) && got != "true"; time.Sleep(100 * time.Millisecond) {
		got, err = b.eval(sess, fmt.Sprintf(`document.readyState === "complete" && !!document.querySelector('#rec-%s a[href="%s"]') && document.getElementById("rec-%s").innerText.includes("signature ok")`, good, replay, good))
		if err != nil {
			t.Fatal(err)
		}
	}
	if got != "true" {
		dom, _ := b.eval(sess, "document.documentElement.outerHTML")
		t.Errorf("status page in Chromium lacks the recording's row with its replay link:\n%s", dom)
	}
	if v, err := b.eval(sess, "JSON.stringify(window.__csp)"); err != nil || v != "[]" {
		t.Errorf("CSP violations on the status page: %s %v", v, err)
	}
	if p := os.Getenv("GATEHOUSE_SESSIONS_SCREENSHOT"); p != "" {
		if shot, err := b.screenshot(sess); err == nil {
			os.WriteFile(p, shot, 0o644)
		}
	}
}

// hasLine reports whether a terminal's text has a line that is exactly
// want, apart from the padding spaces the player renders.
func hasLine(text, want string) bool {
	for _, l := range strings.Split(text, "\n") {
		if strings.TrimSpace(l) == want {
			return true
		}
	}
	return false
}
