package statuspage

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gatehouse/bastion/record"
	"gatehouse/cmd/gatehouse/internal/rectest"
	"gatehouse/cmd/gatehouse/metrics"
)

// The tests here drive the site's handler over real loopback HTTP; those
// of cmd/gatehouse drive it through `gatehouse serve` and `run`, in real
// Chromium and through the bastion.

// status is rectest.Get: a GET that does not follow redirects.
func status(t *testing.T, url string, header ...string) (int, string, http.Header) {
	return rectest.Get(t, url, header...)
}

// hasLine reports whether text has a line equal to want.
func hasLine(text, want string) bool {
	for _, l := range strings.Split(text, "\n") {
		if l == want {
			return true
		}
	}
	return false
}

// startSite serves a site with o (and no mirrors) on loopback until the
// test ends and returns its base URL.
func startSite(t *testing.T, o Options) string {
	t.Helper()
	o.Log = slog.New(slog.DiscardHandler)
	site, err := New(o, metrics.New(filepath.Join(t.TempDir(), "state"), nil, o.Log), http.NotFoundHandler())
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(site)
	t.Cleanup(srv.Close)
	return srv.URL
}

const replayMarker = rectest.ReplayMarker

// testRecordings is rectest.Recordings (a good and an edited recording).
func testRecordings(t *testing.T, dir string) (recDir, key, good, bad string) {
	return rectest.Recordings(t, dir)
}

// TestStatusRecordingURLs: for an allowed client, the cast and the player
// are served with the right types and caching, and every attempt to reach
// something else (dot-dot, encoded slashes, other files of the recording,
// unknown ids and channels, a symlink out of the recordings dir) is 404.
func TestStatusRecordingURLs(t *testing.T) {
	dir := t.TempDir()
	recDir, key, good, _ := testRecordings(t, dir)
	// A symlinked "recording" pointing outside the recordings dir.
	outside := filepath.Join(dir, "outside")
	os.MkdirAll(outside, 0o700)
	os.WriteFile(filepath.Join(outside, "ch00.cast"), []byte("SECRET-OUTSIDE\n"), 0o600)
	os.Symlink(outside, filepath.Join(recDir, "escape"))
	os.Symlink(filepath.Join(outside, "ch00.cast"), filepath.Join(recDir, good, "ch01.cast"))
	base := startSite(t, Options{Status: Config{SessionsFrom: []string{"127.0.0.0/8"}}, RecordingsDir: recDir, RecordingKey: key})

	code, cast, h := status(t, base+"/recordings/"+good+"/ch00.cast")
	if code != 200 || !strings.Contains(cast, replayMarker) || h.Get("Content-Type") != "application/x-asciicast" ||
		h.Get("Cache-Control") != "no-store" || h.Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("cast: %d %v\n%s", code, h, cast)
	}
	code, page, h := status(t, base+"/recordings/"+good+"/ch00")
	if code != 200 || !strings.Contains(h.Get("Content-Security-Policy"), "default-src 'none'; script-src 'self' 'wasm-unsafe-eval';") {
		t.Errorf("replay page: %d %v", code, h)
	}
	if strings.Contains(page, "<script>") || strings.Contains(page, "http://") || strings.Contains(page, "https://") {
		t.Errorf("replay page has an inline script or an external URL:\n%s", page)
	}
	for _, asset := range []struct{ name, ctype string }{
		{"asciinema-player.min.js", "text/javascript; charset=utf-8"},
		{"asciinema-player.css", "text/css; charset=utf-8"},
		{"replay.js", "text/javascript; charset=utf-8"},
	} {
		u := staticURL(asset.name)
		if !strings.Contains(page, `"`+u+`"`) {
			t.Errorf("replay page does not load %s", u)
		}
		code, body, h := status(t, base+u)
		if code != 200 || h.Get("Content-Type") != asset.ctype || h.Get("Cache-Control") != "public, max-age=31536000, immutable" ||
			len(body) != len(staticFiles[asset.name].data) {
			t.Errorf("%s: %d %v (%d bytes)", u, code, h, len(body))
		}
	}
	for _, p := range []string{
		"/_static/", "/_static/nope.js", "/_static/x/replay.js",
		"/recordings/../" + good + "/ch00.cast",
		"/recordings/" + good + "/../" + good + "/ch00.cast",
		"/recordings/" + good + "/./ch00.cast",
		"/recordings/..%2F" + filepath.Base(recDir) + "%2F" + good + "/ch00.cast",
		"/recordings/" + good + "%2Fch00.cast/ch00.cast",
		"/recordings/%2e%2e/ch00.cast",
		"/recordings/" + good + "/..%2Fch00.cast",
		"/recordings/" + good + "/ch00.ttyrec",
		"/recordings/" + good + "/meta.json",
		"/recordings/" + good + "/manifest.json",
		"/recordings/" + good + "/ch99",
		"/recordings/" + good + "/ch99.cast",
		"/recordings/" + good + "/ch00.cast/",
		"/recordings/" + good + "/ch01.cast", // symlink out of the root
		"/recordings/escape/ch00.cast",       // symlinked directory
		"/recordings/escape/ch00",
		"/recordings/no-such-recording/ch00",
		"/recordings/.hidden/ch00.cast",
		"/recordings/" + good,
		"/recordings/" + good + "/",
	} {
		code, body, _ := status(t, base+p)
		if code != 404 {
			t.Errorf("%s: %d, want 404", p, code)
		}
		if strings.Contains(body, "SECRET-OUTSIDE") || strings.Contains(body, replayMarker) {
			t.Errorf("%s: served recording data", p)
		}
	}
}

// TestStatusActiveSessions feeds the bastion's real observer (as run wires
// it) proxy.start, proxy.end and conn.end events with the field names of
// bastion/proxy.go, and checks the page's active-session table over a real
// loopback connection.
func TestStatusActiveSessions(t *testing.T) {
	dir := t.TempDir()
	recDir, key, good, _ := testRecordings(t, dir)
	m, err := New(Options{Status: Config{SessionsFrom: []string{"127.0.0.1/32"}}, RecordingsDir: recDir, RecordingKey: key, Live: true,
		Log: slog.New(slog.DiscardHandler)}, metrics.New(filepath.Join(dir, "state"), nil, slog.New(slog.DiscardHandler)), http.NotFoundHandler())
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(m)
	defer srv.Close()
	start := func(conn, rec string) {
		m.ObserveBastion(record.ProxyStart{ProxySession: record.ProxySession{
			ConnRef:  record.ConnRef{ID: conn, Source: "198.51.100.4:40000"},
			Identity: record.Identity{Login: "bob", KeyID: "bob@example.org", Serial: 7},
			Target:   "web1.example.org:22", TargetLogin: "deploy", Recording: rec,
		}})
	}
	m.ObserveBastion(record.ConnStart{ConnRef: record.ConnRef{ID: "c1"}})
	m.ObserveBastion(record.ConnStart{ConnRef: record.ConnRef{ID: "c2"}})
	if _, text, _ := status(t, srv.URL+"/metrics"); !hasLine(text, "gatehouse_bastion_connections 2") {
		t.Errorf("connections gauge is not 2 after two conn.start:\n%s", text)
	}
	start("c1", "live-one")
	start("c1", "live-two")
	start("c2", good) // its recording exists (sealed) but the session is reported live
	_, page, _ := status(t, srv.URL+"/")
	for _, want := range []string{`id="active-sessions"`, `id="live-live-one"`, `id="live-live-two"`, "deploy@web1.example.org:22",
		"bob@example.org", `href="/recordings/` + good + `/ch00"`} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if strings.Contains(page, "does not run in this process") {
		t.Errorf("run's page claims it does not run the bastion")
	}
	m.ObserveBastion(record.ProxyEnd{ProxySession: record.ProxySession{ConnRef: record.ConnRef{ID: "c1"}, Recording: "live-one"}})
	m.ObserveBastion(record.ConnEnd{ConnRef: record.ConnRef{ID: "c2"}})
	_, page, _ = status(t, srv.URL+"/")
	if strings.Contains(page, "live-live-one") || strings.Contains(page, `id="live-`+good) || !strings.Contains(page, "live-live-two") {
		t.Errorf("ended sessions still shown, or a running one dropped:\n%s", page)
	}
	m.ObserveBastion(record.ConnEnd{ConnRef: record.ConnRef{ID: "c1"}})
	_, page, _ = status(t, srv.URL+"/")
	if !strings.Contains(page, "No active sessions.") {
		t.Errorf("sessions remain after their connections ended")
	}
	// The metrics still see the events (the site passes them on).
	if _, text, _ := status(t, srv.URL+"/metrics"); !hasLine(text, "gatehouse_bastion_connections 0") {
		t.Errorf("connections gauge not back to 0 after two conn.start and two conn.end:\n%s", text)
	}
}

// FuzzRecordingPath: whatever path a client sends, the handler answers
// 200 only for the one replay page and cast that exist, and never serves
// a byte from outside the recordings dir.
func FuzzRecordingPath(f *testing.F) {
	for _, s := range []string{"/recordings/r1/ch00", "/recordings/r1/ch00.cast", "/recordings/../outside/ch00.cast",
		"/recordings/link/ch00.cast", "/recordings/r1/..%2F..%2Foutside%2Fch00.cast", "/_static/replay.js", "/recordings//r1/ch00",
		"/recordings/r1/ch00.cast?x=/../", "/recordings/r1/ch0000000000.cast"} {
		f.Add(s)
	}
	dir := f.TempDir()
	recDir := filepath.Join(dir, "rec")
	os.MkdirAll(filepath.Join(recDir, "r1"), 0o700)
	os.WriteFile(filepath.Join(recDir, "r1", "ch00.cast"), []byte(`{"version":2,"width":80,"height":24}`+"\n"), 0o600)
	os.MkdirAll(filepath.Join(dir, "outside"), 0o700)
	os.WriteFile(filepath.Join(dir, "outside", "ch00.cast"), []byte("SECRET-OUTSIDE\n"), 0o600)
	os.Symlink(filepath.Join(dir, "outside"), filepath.Join(recDir, "link"))
	h, err := New(Options{Status: Config{SessionsFrom: []string{"127.0.0.0/8"}}, RecordingsDir: recDir, Log: slog.New(slog.DiscardHandler)},
		metrics.New(filepath.Join(dir, "state"), nil, slog.New(slog.DiscardHandler)), http.NotFoundHandler())
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, target string) {
		if !strings.HasPrefix(target, "/") || strings.ContainsAny(target, " \t\r\n#") {
			return
		}
		if _, err := url.ParseRequestURI(target); err != nil {
			return // net/http answers 400 before any handler runs
		}
		req := httptest.NewRequest("GET", "http://gatehouse.example.org"+target, nil)
		req.RemoteAddr = "127.0.0.1:4242"
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if strings.Contains(w.Body.String(), "SECRET-OUTSIDE") {
			t.Fatalf("%q served a file outside the recordings dir", target)
		}
		if w.Code == 200 && strings.HasPrefix(req.URL.Path, "/recordings") &&
			req.URL.Path != "/recordings/r1/ch00" && req.URL.Path != "/recordings/r1/ch00.cast" {
			t.Fatalf("%q (path %q) answered 200", target, req.URL.Path)
		}
	})
}
