package bastion

import (
	"bytes"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"gatehouse/bastion/internal/sshtest"
	"gatehouse/bastion/policy"
	"gatehouse/bastion/record"
)

// TestForwardRefusals: authenticated users reach only what a rule allows;
// everything else is refused with a message and an audit event.
func TestForwardRefusals(t *testing.T) {
	f := newFixture(t, nil)
	sshdPort := strconv.Itoa(f.sshd.Port)
	w := func(t *testing.T, principal, dest string, opts ...string) (sshtest.Result, string) {
		t.Helper()
		key, cert, id := f.userCert(t, f.ca, append([]string{"-n", principal, "-V", "-1m:+1h"}, opts...)...)
		r := f.sshBastion(t, key, cert, principal, "-W", dest)
		return r, id
	}
	cases := []struct {
		name, principal, dest string
		opts                  []string
		stderr, reason        string
	}{
		{name: "port-not-allowed", principal: "admin", dest: "127.0.0.1:1", stderr: "administratively prohibited", reason: "no rule allows a jump"},
		{name: "host-not-allowed", principal: "admin", dest: "192.0.2.1:" + sshdPort, stderr: "administratively prohibited", reason: "no rule allows a jump"},
		{name: "loopback-not-listed", principal: "wide", dest: "127.0.0.1:" + sshdPort, stderr: "administratively prohibited", reason: "special-address"},
		{name: "loopback-by-name", principal: "wide", dest: "localhost:" + sshdPort, stderr: "administratively prohibited", reason: "special-address"},
		{name: "bastion-own-port", principal: "wide", dest: "127.0.0.1:" + strconv.Itoa(f.port), stderr: "administratively prohibited", reason: "no rule allows a jump"},
		{name: "metadata-address", principal: "wide", dest: "169.254.169.254:80", stderr: "administratively prohibited", reason: "special-address"},
		{name: "no-port-forwarding-permit", principal: "admin", dest: "127.0.0.1:" + sshdPort, opts: []string{"-O", "clear"}, stderr: "administratively prohibited", reason: "does not permit port forwarding"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			r, id := w(t, c.principal, c.dest, c.opts...)
			if r.Exit == 0 || !strings.Contains(r.Stderr, c.stderr) {
				t.Fatalf("want refusal mentioning %q, got %s", c.stderr, r)
			}
			e := f.waitEvent(t, "forward.denied", map[string]string{"key_id": id})
			if !strings.Contains(e.str("reason"), c.reason) {
				t.Errorf("reason %q, want it to contain %q", e.str("reason"), c.reason)
			}
		})
	}
	t.Run("remote-forward", func(t *testing.T) {
		t.Parallel()
		key, cert, id := f.userCert(t, f.ca, "-n", "admin", "-V", "-1m:+1h")
		r := f.sshBastion(t, key, cert, "admin", "-N", "-o", "ExitOnForwardFailure=yes", "-R", "0:127.0.0.1:"+sshdPort)
		if r.Exit != 255 || !strings.Contains(r.Stderr, "remote port forwarding failed") {
			t.Fatalf("want -R refused, got %s", r)
		}
		e := f.waitEvent(t, "request.denied", map[string]string{"key_id": id, "request": "tcpip-forward"})
		if !strings.Contains(e.str("reason"), "-R") {
			t.Errorf("reason %q", e.str("reason"))
		}
	})
	t.Run("shell", func(t *testing.T) {
		t.Parallel()
		key, cert, id := f.userCert(t, f.ca, "-n", "admin", "-V", "-1m:+1h")
		r := f.sshBastion(t, key, cert, "admin", "id")
		if r.Exit != 255 || !strings.Contains(r.Stderr, "offers no shell") {
			t.Fatalf("want session refused, got %s", r)
		}
		f.waitEvent(t, "request.denied", map[string]string{"key_id": id, "request": "channel:session"})
	})
}

// TestSessionEnds: live jump sessions are closed when the certificate
// expires and when a KRL update revokes it, and the audit log says why;
// on shutdown, Serve closes the remaining ones.
func TestSessionEnds(t *testing.T) {
	f := newFixture(t, nil)
	t.Run("expiry", func(t *testing.T) {
		t.Parallel()
		key, cert, id := f.userCert(t, f.ca, "-n", "admin", "-V", "-1m:+4s")
		cfg := f.jumpConfig(t, key, cert, "admin")
		start := time.Now()
		p := sshtest.StartSSH(t, "-F", cfg, "target", "sleep", "40")
		r := p.Wait()
		if r.Exit == 0 || time.Since(start) > 30*time.Second {
			t.Fatalf("session outlived its certificate: %s after %v", r, time.Since(start))
		}
		e := f.waitEvent(t, "conn.end", map[string]string{"key_id": id})
		if !strings.Contains(e.str("reason"), "certificate expired") {
			t.Errorf("conn.end reason %q", e.str("reason"))
		}
		f.waitEvent(t, "forward", map[string]string{"key_id": id})
	})
	t.Run("krl-update", func(t *testing.T) {
		t.Parallel()
		key, cert, id := f.userCert(t, f.ca, "-n", "admin", "-V", "-1m:+1h", "-z", "4242")
		cfg := f.jumpConfig(t, key, cert, "admin")
		p := sshtest.StartSSH(t, "-F", cfg, "target", "sleep", "40")
		f.waitEvent(t, "forward.open", map[string]string{"key_id": id})
		select {
		case <-p.Done():
			t.Fatalf("session ended early: %s", p.Wait())
		default:
		}
		f.writeKRL(t, "serial: 666", "id: revoked-id", "hash: "+shared.revFP, "serial: 4242")
		r := p.Wait()
		if r.Exit == 0 {
			t.Fatalf("revoked session was not closed: %s", r)
		}
		e := f.waitEvent(t, "conn.end", map[string]string{"key_id": id})
		if !strings.Contains(e.str("reason"), "revoked") {
			t.Errorf("conn.end reason %q", e.str("reason"))
		}
	})
}

// TestShutdown: cancelling Serve's context closes live sessions, says so
// in the audit log, and Serve returns.
func TestShutdown(t *testing.T) {
	f := newFixture(t, nil)
	key, cert, id := f.userCert(t, f.ca, "-n", "admin", "-V", "-1m:+1h")
	cfg := f.jumpConfig(t, key, cert, "admin")
	p := sshtest.StartSSH(t, "-F", cfg, "target", "sleep", "40")
	f.waitEvent(t, "forward.open", map[string]string{"key_id": id})
	f.stop(t)
	if r := p.Wait(); r.Exit == 0 {
		t.Fatalf("session survived shutdown: %s", r)
	}
	e := f.waitEvent(t, "conn.end", map[string]string{"key_id": id})
	if e.str("reason") != "server shutting down" {
		t.Errorf("conn.end reason %q", e.str("reason"))
	}
	// The forward's own event was written before conn.end, not lost to
	// the closed audit log.
	f.waitEvent(t, "forward", map[string]string{"key_id": id})
}

// TestAuditTamper: the audit log the bastion wrote verifies, and the same
// log with one edited line, or one line deleted, does not.
func TestAuditTamper(t *testing.T) {
	f := newFixture(t, nil)
	key, cert, _ := f.userCert(t, f.ca, "-n", "admin", "-V", "-1m:+1h")
	f.sshBastion(t, key, cert, "admin", "true")
	f.sshBastion(t, key, "", "admin", "true")
	f.waitEvent(t, "preauth", map[string]string{"source": "127.0.0.1"})
	data, err := os.ReadFile(f.auditPath)
	if err != nil {
		t.Fatal(err)
	}
	n, err := record.VerifyAudit(bytes.NewReader(data))
	if err != nil || n < 5 {
		t.Fatalf("genuine audit log: %d lines, %v", n, err)
	}
	lines := bytes.SplitAfter(data, []byte("\n"))
	edited := bytes.Join(lines, nil)
	edited = bytes.Replace(edited, []byte(`"result":"accepted"`), []byte(`"result":"refused"`), 1)
	if bytes.Equal(edited, data) {
		t.Fatal("test bug: nothing edited")
	}
	if _, err := record.VerifyAudit(bytes.NewReader(edited)); err == nil {
		t.Error("audit log with an edited line verifies")
	}
	deleted := bytes.Join(append(append([][]byte{}, lines[:2]...), lines[3:]...), nil)
	if _, err := record.VerifyAudit(bytes.NewReader(deleted)); err == nil {
		t.Error("audit log with a deleted line verifies")
	}
}

// TestReload: new rules apply to new forwards while a live one keeps
// running; a reload that drops the session's CA closes it.
func TestReload(t *testing.T) {
	f := newFixture(t, nil)
	key, cert, id := f.userCert(t, f.ca, "-n", "admin", "-V", "-1m:+1h")
	cfg := f.jumpConfig(t, key, cert, "admin")
	p := sshtest.StartSSH(t, "-F", cfg, "target", "sleep", "40")
	f.waitEvent(t, "forward.open", map[string]string{"key_id": id})

	if err := f.srv.SetRules([]policy.Rule{{Principals: []string{"someone-else"}, Jump: []string{"192.0.2.1:22"}}}); err != nil {
		t.Fatal(err)
	}
	key2, cert2, _ := f.userCert(t, f.ca, "-n", "admin", "-V", "-1m:+1h")
	r := f.sshBastion(t, key2, cert2, "admin", "-W", "127.0.0.1:"+strconv.Itoa(f.sshd.Port))
	if r.Exit == 0 || !strings.Contains(r.Stderr, "administratively prohibited") {
		t.Fatalf("forward allowed after the rule was removed: %s", r)
	}
	select {
	case <-p.Done():
		t.Fatalf("live session ended on a rules reload: %s", p.Wait())
	default:
	}

	writeFile(t, f.caFile, catFiles(t, f.rsaCA.Pub))
	if err := f.srv.Reload(); err != nil {
		t.Fatal(err)
	}
	if r := p.Wait(); r.Exit == 0 {
		t.Fatalf("session of a no longer trusted CA survived: %s", r)
	}
	e := f.waitEvent(t, "conn.end", map[string]string{"key_id": id})
	if !strings.Contains(e.str("reason"), "untrusted-ca") {
		t.Errorf("conn.end reason %q", e.str("reason"))
	}
}

// TestMaxSession: max_session ends a connection whose certificate is still
// valid.
func TestMaxSession(t *testing.T) {
	f := newFixture(t, func(_ *fixture, c *Config) { c.MaxSession.Duration = 2 * time.Second })
	key, cert, id := f.userCert(t, f.ca, "-n", "admin", "-V", "-1m:+1h")
	cfg := f.jumpConfig(t, key, cert, "admin")
	if r := sshtest.StartSSH(t, "-F", cfg, "target", "sleep", "40").Wait(); r.Exit == 0 {
		t.Fatalf("session outlived max_session: %s", r)
	}
	e := f.waitEvent(t, "conn.end", map[string]string{"key_id": id})
	if e.str("reason") != "max_session reached" {
		t.Errorf("conn.end reason %q", e.str("reason"))
	}
}
