package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"gatehouse/cmd/gatehouse/metrics"
)

// TestStagedPublishCLI: with publish = "manual" `mirror sync` stages
// (exit 0, says where canaries test it and how to publish), `mirror
// status` says the snapshot waits, `mirror publish` publishes it, an
// older snapshot is refused with exit 2 naming rollback, and a failing
// post_publish makes publish and sync exit 1 with "published ID;
// post_publish failed" while the snapshot stays published.
func TestStagedPublishCLI(t *testing.T) {
	f := newOpsyncFixture(t)
	addr := freePort(t)
	serveConf := "\n[serve]\nlisten = \"" + addr + "\"\n"
	f.write(t, f.repo.KeyringPath, `["main"]`, "publish = \"manual\"\n"+serveConf)
	code, out, errs := ghRun(t, "--config", f.conf, "mirror", "sync")
	m := regexp.MustCompile(`^up: staged, snapshot (\S+) \(not published; nothing is published yet\)`).FindStringSubmatch(out)
	if code != 0 || m == nil || !strings.Contains(out, "  canary: /up/snapshots/"+m[1]+"/; publish: gatehouse mirror publish up "+m[1]+"\n") {
		t.Fatalf("manual sync: exit %d\n%s\n%s", code, out, errs)
	}
	s1 := m[1]
	// The real `serve`: the staged snapshot at its URL, nothing yet at
	// the mirror's, and the status page says what waits.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int)
	go func() { done <- run(ctx, []string{"--config", f.conf, "serve"}, &bytes.Buffer{}, &bytes.Buffer{}) }()
	defer func() { cancel(); <-done }()
	for i := 0; ; i++ {
		if _, err := httpGet("http://" + addr + "/"); err == nil {
			break
		} else if i > 200 {
			t.Fatalf("serve did not start: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := httpGet("http://" + addr + "/up/snapshots/" + s1 + "/dists/stable/InRelease"); err != nil {
		t.Errorf("staged snapshot not served: %v", err)
	}
	if _, err := httpGet("http://" + addr + "/up/dists/stable/InRelease"); err == nil {
		t.Errorf("a staged snapshot is served as the published one")
	}
	if page, err := httpGet("http://" + addr + "/"); err != nil || !strings.Contains(page, "waiting for publish") || !strings.Contains(page, "/up/snapshots/"+s1+"/") {
		t.Errorf("status page does not say %s waits: %v\n%s", s1, err, page)
	}
	code, out, _ = ghRun(t, "--config", f.conf, "mirror", "status")
	if code != 0 || !strings.Contains(out, "warning: snapshot "+s1) || !strings.Contains(out, "waits for publishing: test it at /up/snapshots/"+s1+"/, then run `gatehouse mirror publish up`") {
		t.Fatalf("status: exit %d\n%s", code, out)
	}
	if code, out, errs = ghRun(t, "--config", f.conf, "mirror", "publish", "up"); code != 0 || out != "up: now publishing snapshot "+s1+"\n" {
		t.Fatalf("publish: exit %d\n%s\n%s", code, out, errs)
	}
	if err := f.repo.Rebuild(f.repo.Suites()...); err != nil {
		t.Fatal(err)
	}
	code, out, errs = ghRun(t, "--config", f.conf, "mirror", "sync")
	m = regexp.MustCompile(`^up: staged, snapshot (\S+) \(not published; clients get ` + s1 + `\)`).FindStringSubmatch(out)
	if code != 0 || m == nil {
		t.Fatalf("second manual sync: exit %d\n%s\n%s", code, out, errs)
	}
	s2 := m[1]
	if code, out, errs = ghRun(t, "--config", f.conf, "mirror", "publish", "up", s2); code != 0 {
		t.Fatalf("publish %s: exit %d\n%s\n%s", s2, code, out, errs)
	}
	code, _, errs = ghRun(t, "--config", f.conf, "mirror", "publish", "up", s1)
	if code != exitUsage || !strings.Contains(errs, "snapshot "+s1+" is older than the published "+s2) || !strings.Contains(errs, "`gatehouse mirror rollback up "+s1+"`") {
		t.Fatalf("publish of an older snapshot: exit %d\n%s", code, errs)
	}

	hook := filepath.Join(f.dir, "hook.sh")
	if err := os.WriteFile(hook, []byte("#!/bin/sh\necho 'token=SECRET' >&2\nexit 5\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	f.write(t, f.repo.KeyringPath, `["main"]`, "post_publish = [\""+hook+"\"]\npost_publish_timeout = \"30s\"\n"+serveConf)
	if err := f.repo.Rebuild(f.repo.Suites()...); err != nil {
		t.Fatal(err)
	}
	code, out, errs = ghRun(t, "--config", f.conf, "mirror", "sync")
	m = regexp.MustCompile(`^up: published, snapshot (\S+),`).FindStringSubmatch(out)
	if code != exitFailure || m == nil || !strings.Contains(errs, "mirror up: published "+m[1]+"; post_publish failed: exit status 5") {
		t.Fatalf("sync with a failing hook: exit %d\n%s\n%s", code, out, errs)
	}
	code, out, errs = ghRun(t, "--config", f.conf, "mirror", "publish", "up")
	if code != exitFailure || out != "up: now publishing snapshot "+m[1]+"\n" || !strings.Contains(errs, "post_publish failed: exit status 5") {
		t.Fatalf("publish with a failing hook: exit %d\n%s\n%s", code, out, errs)
	}
	code, out, _ = ghRun(t, "--config", f.conf, "mirror", "status")
	if code != 0 || !strings.Contains(out, "warning: post_publish failed for snapshot "+m[1]) || strings.Contains(out, "SECRET") {
		t.Fatalf("status after failed hooks: exit %d\n%s", code, out)
	}
	code, out, errs = ghRun(t, "--config", f.conf, "mirror", "rollback", "up")
	if code != exitFailure || out != "up: now publishing snapshot "+s2+"\n" || !strings.Contains(errs, "mirror up: published "+s2+"; post_publish failed") {
		t.Fatalf("rollback with a failing hook: exit %d\n%s\n%s", code, out, errs)
	}
	// The page's statuses are cached for up to two seconds.
	page, err := httpGet("http://" + addr + "/")
	for i := 0; i < 50 && err == nil && !strings.Contains(page, "exit status 5"); i++ {
		time.Sleep(100 * time.Millisecond)
		page, err = httpGet("http://" + addr + "/")
	}
	if err != nil || !strings.Contains(page, "post_publish") || !strings.Contains(page, "exit status 5") || strings.Contains(page, "SECRET") {
		t.Errorf("status page does not show the failed hook (or shows its output): %v\n%s", err, page)
	}
	// Metrics read the state: a timer-run sync's hook failures show.
	cfg, err := loadConfig(f.conf)
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	metrics.New(cfg.StateDir, cfg.Mirror, slog.New(slog.DiscardHandler)).Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	if !strings.Contains(string(body), `gatehouse_mirror_post_publish_failures{mirror="up"} 3`) {
		t.Errorf("metrics lack the hook failures:\n%s", body)
	}
}

// TestCheckConfigPostPublish: check-config names a post_publish command
// that does not exist, is not executable, or that others may change, with
// the file and line of post_publish and the fix.
func TestCheckConfigPostPublish(t *testing.T) {
	dir, keyring, write := checkConfigRepo(t)
	conf := write("stable", "main", keyring)
	hook := filepath.Join(dir, "hook.sh")
	withHook := func() {
		b, _ := os.ReadFile(conf)
		os.WriteFile(conf, append(b, []byte("post_publish = [\""+hook+"\", \"/srv/replica\"]\n")...), 0o644)
	}
	withHook()
	code, _, errs := ghRun(t, "--config", conf, "check-config", "--as-me")
	if want := conf + ":10: mirror up: post_publish command " + hook + " does not exist; fix: create it or correct the path\n"; code != exitUsage || !strings.Contains(errs, want) {
		t.Fatalf("missing hook: exit %d, stderr %q, want %q", code, errs, want)
	}
	os.WriteFile(hook, []byte("#!/bin/sh\n"), 0o644)
	code, _, errs = ghRun(t, "--config", conf, "check-config", "--as-me")
	if want := "mirror up: post_publish command " + hook + " (mode 0644) is not executable by user "; code != exitUsage || !strings.Contains(errs, want) {
		t.Fatalf("hook not executable: exit %d, stderr %q, want %q", code, errs, want)
	}
	os.Chmod(hook, 0o757)
	code, _, errs = ghRun(t, "--config", conf, "check-config", "--as-me")
	if want := "mirror up: post_publish command " + hook + " has mode 0757: other users may change it; fix: chmod go-w " + hook; code != exitUsage || !strings.Contains(errs, want) {
		t.Fatalf("hook writable by others: exit %d, stderr %q, want %q", code, errs, want)
	}
	os.Chmod(hook, 0o755)
	if code, out, errs := ghRun(t, "--config", conf, "check-config", "--as-me"); code != 0 {
		t.Fatalf("good hook: exit %d\n%s\n%s", code, out, errs)
	}
}
