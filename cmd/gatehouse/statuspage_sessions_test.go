package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"golang.org/x/crypto/ssh"

	"gatehouse/bastion"
)

// sessionsBastion is the part of [bastion] the status page reads.
func sessionsBastion(recDir, key string) *bastion.Config {
	return &bastion.Config{RecordingsDir: recDir, RecordingKey: key}
}

func connectionsGauge(t *testing.T, m *metrics) float64 {
	t.Helper()
	var d dto.Metric
	if err := m.connections.Write(&d); err != nil {
		t.Fatal(err)
	}
	return d.GetGauge().GetValue()
}

// noRedirect is a client that reports redirects instead of following them,
// so a path the mux would "clean" shows its own status.
var noRedirect = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

func status(t *testing.T, url string, header ...string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// TestStatusSessionsHiddenUnlessAllowed: with sessions_from empty, or
// naming networks that exclude the client (127.0.0.1), serve's page says
// nothing about sessions and every recording URL is 404, also when the
// client claims an allowed address in X-Forwarded-For.
func TestStatusSessionsHiddenUnlessAllowed(t *testing.T) {
	for name, from := range map[string]string{"empty": `[]`, "other networks": `["10.9.8.0/24", "::1/128"]`} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			recDir, key, good, _ := testRecordings(t, dir)
			base := startServe(t, sessionsConfig(t, dir, recDir, key, from))
			code, page, _ := status(t, base+"/", "X-Forwarded-For", "10.9.8.7", "X-Real-IP", "10.9.8.7")
			if code != 200 {
				t.Fatalf("/: %d", code)
			}
			for _, leak := range []string{"sessions", good, "recording", "alice", "replay"} {
				if strings.Contains(strings.ToLower(page), leak) {
					t.Errorf("page shows %q to a client outside sessions_from", leak)
				}
			}
			for _, p := range []string{"/recordings/" + good + "/ch00", "/recordings/" + good + "/ch00.cast", "/recordings/", "/recordings",
				"/recordings/nope/ch00"} {
				if code, _, _ := status(t, base+p, "X-Forwarded-For", "10.9.8.7"); code != 404 {
					t.Errorf("%s: %d, want 404", p, code)
				}
			}
		})
	}
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
	base := startServe(t, sessionsConfig(t, dir, recDir, key, `["127.0.0.0/8"]`))

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
	cfg := &fileConfig{StateDir: filepath.Join(dir, "state"), Status: statusConfig{SessionsFrom: []string{"127.0.0.1/32"}}}
	cfg.Bastion = sessionsBastion(recDir, key)
	h, m, err := newStatusSite(cfg, http.NotFoundHandler(), true, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	start := func(conn, rec string) {
		m.observeBastion("proxy.start", map[string]any{"conn": conn, "recording": rec, "login": "bob", "key_id": "bob@example.org",
			"source": "198.51.100.4:40000", "target": "web1.example.org:22", "target_login": "deploy", "serial": uint64(7)})
	}
	m.observeBastion("conn.start", map[string]any{"conn": "c1"})
	m.observeBastion("conn.start", map[string]any{"conn": "c2"})
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
	m.observeBastion("proxy.end", map[string]any{"conn": "c1", "recording": "live-one"})
	m.observeBastion("conn.end", map[string]any{"conn": "c2"})
	_, page, _ = status(t, srv.URL+"/")
	if strings.Contains(page, "live-live-one") || strings.Contains(page, `id="live-`+good) || !strings.Contains(page, "live-live-two") {
		t.Errorf("ended sessions still shown, or a running one dropped:\n%s", page)
	}
	m.observeBastion("conn.end", map[string]any{"conn": "c1"})
	_, page, _ = status(t, srv.URL+"/")
	if !strings.Contains(page, "No active sessions.") {
		t.Errorf("sessions remain after their connections ended")
	}
	// The metrics still see the events.
	if got := connectionsGauge(t, m); got != 0 {
		t.Errorf("connections gauge %v after two conn.start and two conn.end", got)
	}
}

// TestStatusConfigSessionsFrom: sessions_from entries must be CIDRs; the
// error names file, line and the fix; newStatusSite refuses them too.
func TestStatusConfigSessionsFrom(t *testing.T) {
	for entry, want := range map[string]string{
		`"10.0.0.1"`:     "needs a prefix length",
		`"10.0.0.0/33"`:  "is not a CIDR",
		`"example.org"`:  "is not a CIDR",
		`"127.0.0.0/8x"`: "is not a CIDR",
	} {
		_, err := parseConfig("gh.toml", []byte(goodConfig+"\n[status]\nsessions_from = [\"::1/128\", "+entry+"]\n"))
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "gh.toml:12: [status]") {
			t.Errorf("%s: %v", entry, err)
		}
	}
	if _, err := parseConfig("gh.toml", []byte(goodConfig+"\n[status]\nsession_from = []\n")); err == nil || !strings.Contains(err.Error(), `unknown key "status.session_from"`) {
		t.Errorf("misspelled key: %v", err)
	}
	c, err := parseConfig("gh.toml", []byte(goodConfig+"\n[status]\nsessions_from = [\"10.1.2.3/24\", \"::1/128\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if p, _ := c.Status.prefixes(); len(p) != 2 || p[0].String() != "10.1.2.0/24" {
		t.Errorf("prefixes %v", p)
	}
	if _, err := parseConfig("gh.toml", []byte(strings.Replace(goodConfig, `name = "debian"`, `name = "recordings"`, 1))); err == nil ||
		!strings.Contains(err.Error(), "reserved") {
		t.Errorf("a mirror named recordings: %v", err)
	}
	if _, _, err := newStatusSite(&fileConfig{Status: statusConfig{SessionsFrom: []string{"nope"}}}, http.NotFoundHandler(), false, slog.Default()); err == nil {
		t.Errorf("newStatusSite accepted a bad CIDR")
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
	cfg := &fileConfig{StateDir: filepath.Join(dir, "state"), Status: statusConfig{SessionsFrom: []string{"127.0.0.0/8"}}}
	cfg.Bastion = sessionsBastion(recDir, "")
	h, _, err := newStatusSite(cfg, http.NotFoundHandler(), false, slog.New(slog.DiscardHandler))
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

// TestStatusSessionsThroughBastionTunnel is the recommended setup, end to
// end with the real ssh: `gatehouse run` allows only 127.0.0.1 to see
// sessions; a client connecting from 127.0.0.3 sees none, while the same
// page reached through `ssh -N -L` over run's own bastion (a jump rule
// naming the HTTP address) shows the recordings, run's active-session
// table, and serves the cast.
func TestStatusSessionsThroughBastionTunnel(t *testing.T) {
	if _, err := exec.LookPath("ssh"); err != nil {
		t.Skip("ssh not installed")
	}
	dir := t.TempDir()
	recDir, key, good, _ := testRecordings(t, dir)
	hostKey, _, err := ensureSSHKey(filepath.Join(dir, "host_key"), "bastion")
	if err != nil {
		t.Fatal(err)
	}
	ca, _, _ := ensureSSHKey(filepath.Join(dir, "user_ca"), "ca")
	admin, _, _ := ensureSSHKey(filepath.Join(dir, "admin"), "admin")
	cert, err := signUserCert(ca, admin.PublicKey(), "admin-key", []string{"admin"}, time.Now().Add(-time.Minute), time.Now().Add(time.Hour),
		map[string]string{"permit-port-forwarding": ""})
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "admin-cert.pub"), ssh.MarshalAuthorizedKey(cert), 0o644)
	serveAddr, bastionAddr, tunnelAddr := freePort(t), freePort(t), freePort(t)
	conf := filepath.Join(dir, "gh.toml")
	os.WriteFile(conf, []byte(fmt.Sprintf(`state_dir = %q
[serve]
listen = %q
[status]
sessions_from = ["127.0.0.1/32"]
[bastion]
listen = %q
host_keys = [%q]
user_ca_keys = %q
audit_log = %q
recordings_dir = %q
recording_key = %q
[[bastion.rule]]
principals = ["admin"]
jump = [%q]
`, filepath.Join(dir, "state"), serveAddr, bastionAddr, filepath.Join(dir, "host_key"), filepath.Join(dir, "user_ca.pub"),
		filepath.Join(dir, "audit.jsonl"), recDir, key, serveAddr)), 0o600)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int)
	var runErr bytes.Buffer
	go func() { done <- run(ctx, []string{"--config", conf, "run"}, &bytes.Buffer{}, &runErr) }()
	defer func() { cancel(); <-done }()

	// A client on another loopback address: outside sessions_from.
	other := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 3)}}).DialContext},
		CheckRedirect: noRedirect.CheckRedirect}
	get := func(c *http.Client, url string) (int, string) {
		resp, err := c.Get(url)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for i := 0; ; i++ {
		if code, _ := get(other, "http://"+serveAddr+"/"); code == 200 {
			break
		} else if i > 300 {
			t.Fatalf("run did not serve: %s", runErr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, page := get(other, "http://"+serveAddr+"/"); strings.Contains(page, good) || strings.Contains(page, `id="sessions"`) {
		t.Errorf("a client from 127.0.0.3 sees sessions")
	}
	if code, _ := get(other, "http://"+serveAddr+"/recordings/"+good+"/ch00.cast"); code != 404 {
		t.Errorf("a client from 127.0.0.3 gets the cast: %d", code)
	}

	host, port, _ := net.SplitHostPort(bastionAddr)
	khosts := filepath.Join(dir, "known_hosts")
	os.WriteFile(khosts, []byte(fmt.Sprintf("[%s]:%s %s", host, port, ssh.MarshalAuthorizedKey(hostKey.PublicKey()))), 0o600)
	tctx, tcancel := context.WithCancel(context.Background())
	tunnel := exec.CommandContext(tctx, "ssh", "-F", "none", "-N", "-L", tunnelAddr+":"+serveAddr, "-p", port,
		"-i", filepath.Join(dir, "admin"), "-o", "CertificateFile="+filepath.Join(dir, "admin-cert.pub"), "-o", "IdentitiesOnly=yes",
		"-o", "UserKnownHostsFile="+khosts, "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes",
		"admin@"+host)
	var sshErr bytes.Buffer
	tunnel.Stderr = &sshErr
	if err := tunnel.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { tcancel(); tunnel.Wait() }()
	var page string
	for i := 0; ; i++ {
		var code int
		if code, page = get(http.DefaultClient, "http://"+tunnelAddr+"/"); code == 200 {
			break
		} else if i > 300 {
			t.Fatalf("no page through the tunnel: %s\nssh: %s\nrun: %s", page, sshErr.String(), runErr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, want := range []string{`id="rec-` + good + `"`, "signature ok", "No active sessions.", `href="/recordings/` + good + `/ch00"`} {
		if !strings.Contains(page, want) {
			t.Errorf("page through the tunnel lacks %q", want)
		}
	}
	if code, cast := get(http.DefaultClient, "http://"+tunnelAddr+"/recordings/"+good+"/ch00.cast"); code != 200 || !strings.Contains(cast, replayMarker) {
		t.Errorf("cast through the tunnel: %d", code)
	}
}
