package mirror

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"gatehouse/apt/apttest"
	"gatehouse/mirror/store"
)

// logBuffer collects a sync's log lines for leak checks and also shows them
// in the test log.
type logBuffer struct {
	t  *testing.T
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b.Write(p)
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// hostileOptions are testOptions with every log line (debug included)
// kept in logs.
func hostileOptions(t *testing.T, logs *logBuffer) Options {
	o := testOptions(t)
	o.Log = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return o
}

// noMarker fails when Marker (bytes of an unverified response) appears in
// err, the logs or the mirror's state file.
func noMarker(t *testing.T, state string, err error, logs *logBuffer) {
	t.Helper()
	if err != nil && strings.Contains(err.Error(), apttest.Marker) {
		t.Errorf("the error quotes a response body: %v", err)
	}
	if strings.Contains(logs.String(), apttest.Marker) {
		t.Errorf("the log quotes a response body")
	}
	b, rerr := os.ReadFile(filepath.Join(StoreRoot(state), testMirror, store.StateFile))
	if rerr != nil {
		t.Fatalf("no state file after the sync: %v", rerr)
	}
	if bytes.Contains(b, []byte(apttest.Marker)) {
		t.Errorf("%s quotes a response body:\n%s", store.StateFile, b)
	}
	if !bytes.Contains(b, []byte(`"failed"`)) && !bytes.Contains(b, []byte(`"refused"`)) {
		t.Errorf("%s does not record the failure:\n%s", store.StateFile, b)
	}
}

// TestSyncRefusesRedirectElsewhere: an upstream that redirects its
// InRelease, or a pool file, to another loopback address or to another
// port gets its sync refused before any request reaches the target; the
// error names both URLs, and neither it, the log nor state.json holds a
// byte of what the target serves. Nothing is published.
func TestSyncRefusesRedirectElsewhere(t *testing.T) {
	for _, c := range []struct{ name, addr, path string }{
		{"InRelease to 127.0.0.2", "127.0.0.2:0", "dists/stable/InRelease"},
		{"InRelease to another port", "127.0.0.1:0", "dists/stable/InRelease"},
		{"pool file to 127.0.0.2", "127.0.0.2:0", "pool/"},
	} {
		t.Run(c.name, func(t *testing.T) {
			u := newUpstream(t)
			target := apttest.ServeMarker(t, c.addr)
			h := apttest.ServeHostile(t, u.srv.URL)
			h.Redirect(c.path, target.URL)
			state := t.TempDir()
			cfg := u.config()
			cfg.URL = h.URL
			logs := &logBuffer{t: t}
			rep, err := Sync(context.Background(), state, cfg, hostileOptions(t, logs))
			if err == nil {
				t.Fatal("sync through a redirect to another host succeeded")
			}
			if !strings.Contains(err.Error(), h.URL+"/"+c.path) || !strings.Contains(err.Error(), target.URL+"/") ||
				!strings.Contains(err.Error(), "redirect_hosts") {
				t.Errorf("error does not name both URLs and redirect_hosts: %v", err)
			}
			if errors.Is(err, ErrRefused) || rep.Result != ResultFailed {
				t.Errorf("result %s, refused=%v: a redirect is a failure of the network path (exit 1), not of the content", rep.Result, errors.Is(err, ErrRefused))
			}
			if target.Hits() != 0 {
				t.Errorf("the redirect target got %d requests", target.Hits())
			}
			noMarker(t, state, err, logs)
			st, _ := store.Open(StoreRoot(state), testMirror)
			if id, cerr := st.Current(); !errors.Is(cerr, store.ErrNoCurrent) {
				t.Errorf("published %q after a refused redirect", id)
			}
		})
	}
}

// TestSyncFollowsAllowedRedirects: a redirect to the same scheme, host and
// port, and one to a host listed in redirect_hosts, are followed, and the
// mirror publishes what apt then installs.
func TestSyncFollowsAllowedRedirects(t *testing.T) {
	u := newUpstream(t)
	h := apttest.ServeHostile(t, u.srv.URL)
	h.Redirect("dists/stable/InRelease", h.URL+"/"+apttest.SameHostPrefix)
	h.Redirect("dists/stable/main", h.URL+"/"+apttest.SameHostPrefix)
	// The pool comes from "a CDN": another host (port), listed.
	h.Redirect("pool/", u.srv.URL)
	state := t.TempDir()
	cfg := u.config()
	cfg.URL = h.URL
	cfg.RedirectHosts = []string{strings.TrimPrefix(u.srv.URL, "http://")}
	logs := &logBuffer{t: t}
	rep, err := Sync(context.Background(), state, cfg, hostileOptions(t, logs))
	if err != nil || rep.Result != ResultPublished {
		t.Fatalf("sync through allowed redirects: %v", err)
	}
	if u.srv.Count(u.repo.PoolPath("hello", "1.0-1", "amd64")) != 1 {
		t.Errorf("pool file not fetched from the listed host: %v", u.srv.Requests())
	}
	apt := apttest.AptClient(t, u.repo.SourcesLine(serveMirror(t, state), "stable", "main"))
	if out, err := apt.Update(); err != nil {
		t.Fatalf("apt-get update: %v\n%s", err, out)
	}
	if out, err := apt.InstallDownloadOnly("hello"); err != nil {
		t.Fatalf("apt-get install: %v\n%s", err, out)
	}

	// Without the entry, the same upstream is refused.
	cfg.RedirectHosts = nil
	if err := u.repo.Rebuild(testSuite("1.1-1")); err != nil {
		t.Fatal(err)
	}
	if _, err := Sync(context.Background(), state, cfg, hostileOptions(t, logs)); err == nil || !strings.Contains(err.Error(), "redirect_hosts") {
		t.Fatalf("unlisted host: %v", err)
	}
}

// TestSyncTrickledInRelease: an InRelease sent at one byte per second never
// stalls, but with low_speed_time = "5s" each attempt is cut after 5s, and
// the sync, retries included (the default 4), fails within 60s and frees
// its lock: the next sync takes it and publishes.
func TestSyncTrickledInRelease(t *testing.T) {
	u := newUpstream(t)
	h := apttest.ServeHostile(t, u.srv.URL)
	h.Trickle("dists/stable/InRelease", 1, time.Second)
	state := t.TempDir()
	cfg := u.config()
	cfg.URL = h.URL
	cfg.LowSpeedTime.Duration = 5 * time.Second
	logs := &logBuffer{t: t}
	opt := hostileOptions(t, logs)
	opt.Fetch.Retries, opt.Fetch.RetryWait = 0, 0 // the defaults
	start := time.Now()
	_, err := Sync(context.Background(), state, cfg, opt)
	d := time.Since(start)
	if err == nil || !strings.Contains(err.Error(), "low_speed_limit") || !strings.Contains(err.Error(), "InRelease") {
		t.Fatalf("sync of a trickled InRelease: %v", err)
	}
	if d > 60*time.Second {
		t.Errorf("the sync took %v", d)
	}
	t.Logf("failed after %v: %v", d.Round(time.Millisecond), err)
	h.Clear()
	if rep, err := Sync(context.Background(), state, cfg, opt); err != nil || rep.Result != ResultPublished {
		t.Fatalf("the next sync: %v", err)
	}
}

// TestSyncMaxDuration: a sync that runs longer than max_sync_duration fails
// (not refused: exit 1), names the slow file, publishes nothing and
// frees its lock.
func TestSyncMaxDuration(t *testing.T) {
	big := apttest.Package{Name: "big", Version: "1.0", Arch: "amd64", Size: 200 << 10}
	u := newUpstream(t)
	h := apttest.ServeHostile(t, u.srv.URL)
	state := t.TempDir()
	cfg := u.config()
	cfg.URL = h.URL
	mustSync(t, state, cfg)
	before := publishedTree(t, state)

	if err := u.repo.Rebuild(testSuite("1.0-1", big)); err != nil {
		t.Fatal(err)
	}
	// 20 KiB/s: well above low_speed_limit, far too slow for 2s.
	h.Trickle("pool/main/b/big/", 2<<10, 100*time.Millisecond)
	cfg.MaxSyncDuration.Duration = 2 * time.Second
	logs := &logBuffer{t: t}
	start := time.Now()
	rep, err := Sync(context.Background(), state, cfg, hostileOptions(t, logs))
	if err == nil {
		t.Fatal("a sync longer than max_sync_duration succeeded")
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("the sync took %v with max_sync_duration 2s", d)
	}
	if !strings.Contains(err.Error(), "max_sync_duration (2s)") || !strings.Contains(err.Error(), "/pool/main/b/big/big_1.0_amd64.deb") ||
		!strings.Contains(err.Error(), "nothing was published") {
		t.Errorf("error does not say what ran out and which file was slow: %v", err)
	}
	if errors.Is(err, ErrRefused) || rep.Result != ResultFailed || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("result %s, refused=%v: want a plain failure", rep.Result, errors.Is(err, ErrRefused))
	}
	t.Logf("error: %v", err)
	checkUnchanged(t, before, publishedTree(t, state))
	h.Clear()
	cfg.MaxSyncDuration.Duration = time.Hour
	if rep, err := Sync(context.Background(), state, cfg, testOptions(t)); err != nil || rep.Result != ResultPublished {
		t.Fatalf("the next sync: %v", err)
	}
}

// TestSyncBodyNotSignedNotQuoted: an InRelease that is not a signed message
// (an internal page with Marker on its first line) is refused with an error
// that names the URL, size and hash, and holds no byte of the page; nor do
// the log and state.json.
func TestSyncBodyNotSignedNotQuoted(t *testing.T) {
	u := newUpstream(t)
	h := apttest.ServeHostile(t, u.srv.URL)
	h.Body("dists/stable/InRelease", apttest.BodyWithMarker())
	state := t.TempDir()
	cfg := u.config()
	cfg.URL = h.URL
	logs := &logBuffer{t: t}
	rep, err := Sync(context.Background(), state, cfg, hostileOptions(t, logs))
	if !errors.Is(err, ErrRefused) || rep.Result != ResultRefused {
		t.Fatalf("want a refusal, got %v", err)
	}
	if !strings.Contains(err.Error(), h.URL+"/dists/stable/InRelease") || !strings.Contains(err.Error(), "SHA-256") {
		t.Errorf("error does not name the URL and the hash: %v", err)
	}
	noMarker(t, state, err, logs)
}
