package mirror

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gatehouse/apt/apttest"
)

// startNginx serves dir with a real nginx (its default ETag and
// If-Modified-Since handling) on a loopback port and returns its base URL
// and access log, which records the validators of each request.
func startNginx(t *testing.T, dir string) (string, string) {
	t.Helper()
	return apttest.NginxRoot(t, dir, "$request $status inm=$http_if_none_match ims=$http_if_modified_since")
}

// TestSameSecondRepublishNginx: an upstream that publishes two InRelease
// files within one second (same Last-Modified; on nginx, whose ETag is
// mtime and size, often the same ETag too) answers the second sync's
// conditional request with 304. Because the stored Last-Modified lies
// within 2 s of the Date of the response that brought it, the sync asks
// unconditionally, sees the new bytes and publishes them; apt-get then
// installs the new package. Once the validators are older than their
// response, a no-op sync is one conditional request again, and an
// unchanged-by-bytes answer stays "current" with the upstream Date in the
// report.
func TestSameSecondRepublishNginx(t *testing.T) {
	dir := t.TempDir()
	repo, err := apttest.Build(dir, apttest.NewKey(t, "ed25519"), testSuite("1.0-1"))
	if err != nil {
		t.Fatal(err)
	}
	base, accessLog := startNginx(t, dir)
	inRel := filepath.Join(dir, "dists/stable/InRelease")
	// The InRelease was written "now", as a CI pipeline does just before
	// the sync reads it.
	mtime := time.Now().Truncate(time.Second)
	if err := os.Chtimes(inRel, mtime, mtime); err != nil {
		t.Fatal(err)
	}
	state := t.TempDir()
	cfg := Config{Name: testMirror, URL: base, Suites: []string{"stable"}, Components: []string{"main"},
		Architectures: []string{"amd64"}, Keyring: repo.KeyringPath, Concurrency: 4}
	cfg.Defaults()
	rep := mustSync(t, state, cfg)
	if rep.Result != ResultPublished {
		t.Fatalf("first sync: %+v", rep)
	}
	firstDate := rep.Suites[0].Date

	// Republish in the same second: a different, validly signed InRelease
	// with the same mtime (so the same Last-Modified).
	old, _ := os.ReadFile(inRel)
	if err := repo.Rebuild(testSuite("1.1-1")); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(inRel, mtime, mtime); err != nil {
		t.Fatal(err)
	}
	cur, _ := os.ReadFile(inRel)
	if bytes.Equal(old, cur) {
		t.Fatal("rebuild did not change InRelease")
	}
	// What the old code relied on: nginx itself answers the stored
	// validators with 304.
	logBefore, _ := os.ReadFile(accessLog)
	rep = mustSync(t, state, cfg)
	if rep.Result != ResultPublished || !rep.Suites[0].Changed {
		logAfter, _ := os.ReadFile(accessLog)
		t.Fatalf("sync after a same-second republish = %s (%+v), want published; nginx log:\n%s", rep.Result, rep.Suites, logAfter[len(logBefore):])
	}
	if !rep.Suites[0].Date.After(firstDate) {
		t.Errorf("report Date %v not after %v", rep.Suites[0].Date, firstDate)
	}
	apt := apttest.AptClient(t, repo.SourcesLine(serveMirror(t, state), "stable", "main"))
	if out, err := apt.Update(); err != nil {
		t.Fatalf("apt-get update: %v\n%s", err, out)
	}
	if out, err := apt.Run("install", "--download-only", "hello=1.1-1"); err != nil {
		t.Fatalf("apt-get install hello=1.1-1 from the mirror: %v\n%s", err, out)
	}

	// Unchanged bytes: "current", dated with the published Release's Date
	// (not the zero time).
	pubDate := rep.Suites[0].Date
	rep = mustSync(t, state, cfg)
	if rep.Result != ResultCurrent || !rep.Suites[0].Date.Equal(pubDate) || rep.Suites[0].Changed {
		t.Fatalf("no-op sync: %+v, want current dated %v", rep.Suites, pubDate)
	}
	// The last response came more than 2 s after the file's mtime only
	// once time has passed; then the no-op sync is conditional (304).
	if d := time.Until(mtime.Add(3 * time.Second)); d > 0 {
		time.Sleep(d)
	}
	mustSync(t, state, cfg) // fetched now: Date > mtime + 2 s
	logBefore, _ = os.ReadFile(accessLog)
	rep = mustSync(t, state, cfg)
	logAfter, _ := os.ReadFile(accessLog)
	lines := strings.TrimSpace(string(logAfter[len(logBefore):]))
	if rep.Result != ResultCurrent || !strings.Contains(lines, "InRelease HTTP/1.1 304") || strings.Count(lines, "\n") != 0 {
		t.Errorf("no-op sync long after the publish: %s, nginx log:\n%s\nwant one conditional InRelease answered 304", rep.Result, lines)
	}
	if !rep.Suites[0].Date.Equal(pubDate) {
		t.Errorf("304 sync reports Date %v, want %v", rep.Suites[0].Date, pubDate)
	}
}
