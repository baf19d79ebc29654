package bastion

import (
	"strings"
	"testing"
)

// TestCheckCertMatchesLive (issue 12, finding 5): for each case check-cert
// and the live bastion, driven by the real ssh, reach the same verdict:
// a jump without permit-port-forwarding, an interactive recorded session
// without permit-pty (the client is told why on stderr), and a login with
// a bidi override that the server refuses as unprintable.
func TestCheckCertMatchesLive(t *testing.T) {
	const bidi = "adm\u202ein"
	e := newProxyEnv(t)
	b := newProxyBastion(t, e, nil)
	target := e.target()
	verdict := func(cert string, u CertUse) (bool, string) {
		rep, ok := b.srv.CheckCertUse(cert, u)
		return ok, strings.Join(rep, "\n")
	}

	t.Run("jump without permit-port-forwarding", func(t *testing.T) {
		key, cert, _ := b.userCert(t, b.ca, "-n", "jumper", "-V", "-1m:+1h", "-O", "clear")
		r := b.sshBastion(t, key, cert, "jumper", "-W", target)
		if !strings.Contains(r.Stderr, "certificate does not permit port forwarding") {
			t.Fatalf("live: want the forward refused, got %s", r)
		}
		ok, rep := verdict(cert, CertUse{Login: "jumper", To: target, Mode: "jump"})
		if ok || !strings.Contains(rep, "REFUSED: certificate does not permit port forwarding") {
			t.Errorf("check-cert: ok=%t\n%s", ok, rep)
		}
		// Without --to, the rule's jump is listed as refused and nothing
		// else is usable.
		ok, rep = verdict(cert, CertUse{Login: "jumper"})
		if ok || !strings.Contains(rep, "jump to "+target+": REFUSED: certificate lacks permit-port-forwarding") {
			t.Errorf("check-cert list: ok=%t\n%s", ok, rep)
		}
	})
	t.Run("jump with permit-port-forwarding", func(t *testing.T) {
		key, cert, _ := b.userCert(t, b.ca, "-n", "jumper", "-V", "-1m:+1h", "-O", "clear", "-O", "permit-port-forwarding")
		r := b.sshBastion(t, key, cert, "jumper", "-W", target)
		if !strings.Contains(r.Stdout, "SSH-2.0-") {
			t.Fatalf("live: want the target's banner through the jump, got %s", r)
		}
		if ok, rep := verdict(cert, CertUse{Login: "jumper", To: target, Mode: "jump"}); !ok || !strings.Contains(rep, "allowed by rule 1") {
			t.Errorf("check-cert: ok=%t\n%s", ok, rep)
		}
	})
	t.Run("recorded pty without permit-pty", func(t *testing.T) {
		key, cert, _ := b.userCert(t, b.ca, "-n", "admin", "-V", "-1m:+1h", "-O", "clear")
		cfg := b.proxyConfig(t, key, cert)
		out, err := runCmd(t, "ssh", "-F", cfg, "-tt", "web1", "echo hi")
		if !strings.Contains(out, "gatehouse: certificate does not permit a pty (sign it with -O permit-pty)") {
			t.Fatalf("live: the client is not told why the pty was refused (%v):\n%s", err, out)
		}
		ok, rep := verdict(cert, CertUse{Login: e.sshd.User, To: target, Mode: "proxy", PTY: true})
		if ok || !strings.Contains(rep, "REFUSED: pty: certificate does not permit a pty") {
			t.Errorf("check-cert --pty: ok=%t\n%s", ok, rep)
		}
		// Without a pty the session works, live and in check-cert.
		if out, err := runCmd(t, "ssh", "-F", cfg, "web1", "echo no-pty-ok"); err != nil || !strings.Contains(out, "no-pty-ok") {
			t.Fatalf("live without a pty: %v\n%s", err, out)
		}
		if ok, rep := verdict(cert, CertUse{Login: e.sshd.User, To: target, Mode: "proxy"}); !ok || !strings.Contains(rep, "note: certificate does not permit a pty") {
			t.Errorf("check-cert without --pty: ok=%t\n%s", ok, rep)
		}
	})
	t.Run("unprintable login", func(t *testing.T) {
		// Rules cannot name such a principal, but a certificate may
		// carry it beside one they do name.
		key, cert, _ := b.userCert(t, b.ca, "-n", "jumper,"+bidi, "-V", "-1m:+1h")
		r := b.sshBastion(t, key, cert, bidi, "-W", target)
		if r.Exit != 255 || !strings.Contains(r.Stderr, "Permission denied (publickey)") {
			t.Fatalf("live: want the login refused, got %s", r)
		}
		ok, rep := verdict(cert, CertUse{Login: bidi, To: target, Mode: "jump"})
		if ok || !strings.Contains(rep, "REFUSED: unprintable-login") {
			t.Errorf("check-cert: ok=%t\n%s", ok, rep)
		}
	})
}
