package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"gatehouse/cmd/gatehouse/internal/rectest"
)

// noRedirect is a client that reports redirects instead of following them,
// so a path the mux would "clean" shows its own status.
var noRedirect = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// status is rectest.Get: a GET that does not follow redirects.
func status(t *testing.T, url string, header ...string) (int, string, http.Header) {
	return rectest.Get(t, url, header...)
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
