package demo

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// TestDemoTargetTrustsOnlyItsCA checks the demo target's certificate check
// (it stands in for a target's TrustedUserCAKeys): a certificate from its CA
// for the requested login inside its validity window logs in, and every
// other credential is refused; the certificate's permit-pty decides pty-req.
func TestDemoTargetTrustsOnlyItsCA(t *testing.T) {
	key := func(string) ssh.Signer {
		t.Helper()
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		s, err := ssh.NewSignerFromKey(priv)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	ca, other, user, hostKey := key("ca"), key("other_ca"), key("user"), key("host")
	target, err := NewTarget(hostKey, ca.PublicKey(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { target.Serve(ctx); close(done) }()
	defer func() { stop(); <-done }()

	now := time.Now()
	pty := map[string]string{"permit-pty": ""}
	cert := func(signer ssh.Signer, principals []string, from, to time.Time, exts map[string]string) ssh.Signer {
		t.Helper()
		c := &ssh.Certificate{Key: user.PublicKey(), CertType: ssh.UserCert, KeyId: "test", ValidPrincipals: principals,
			ValidAfter: uint64(from.Unix()), ValidBefore: uint64(to.Unix()), Permissions: ssh.Permissions{Extensions: exts}}
		if err := c.SignCert(rand.Reader, signer); err != nil {
			t.Fatal(err)
		}
		cs, err := ssh.NewCertSigner(c, user)
		if err != nil {
			t.Fatal(err)
		}
		return cs
	}
	hostCert := &ssh.Certificate{Key: user.PublicKey(), CertType: ssh.HostCert, ValidPrincipals: []string{"demo"},
		ValidAfter: uint64(now.Add(-time.Minute).Unix()), ValidBefore: uint64(now.Add(time.Hour).Unix())}
	if err := hostCert.SignCert(rand.Reader, ca); err != nil {
		t.Fatal(err)
	}
	hostCertSigner, err := ssh.NewCertSigner(hostCert, user)
	if err != nil {
		t.Fatal(err)
	}
	dial := func(login string, s ssh.Signer) (*ssh.Client, error) {
		return ssh.Dial("tcp", target.Addr(), &ssh.ClientConfig{User: login, Auth: []ssh.AuthMethod{ssh.PublicKeys(s)},
			HostKeyCallback: ssh.FixedHostKey(hostKey.PublicKey()), Timeout: 10 * time.Second})
	}
	for _, c := range []struct {
		name   string
		login  string
		signer ssh.Signer
	}{
		{"plain key", "demo", user},
		{"another CA", "demo", cert(other, []string{"demo"}, now.Add(-time.Minute), now.Add(time.Hour), pty)},
		{"other principal", "demo", cert(ca, []string{"root"}, now.Add(-time.Minute), now.Add(time.Hour), pty)},
		{"expired", "demo", cert(ca, []string{"demo"}, now.Add(-2*time.Hour), now.Add(-time.Hour), pty)},
		{"not yet valid", "demo", cert(ca, []string{"demo"}, now.Add(time.Hour), now.Add(2*time.Hour), pty)},
		{"host certificate", "demo", hostCertSigner},
	} {
		if cl, err := dial(c.login, c.signer); err == nil {
			cl.Close()
			t.Errorf("%s: logged in", c.name)
		}
	}

	for _, c := range []struct {
		exts    map[string]string
		wantPTY bool
	}{{pty, true}, {nil, false}} {
		cl, err := dial("demo", cert(ca, []string{"demo"}, now.Add(-time.Minute), now.Add(time.Hour), c.exts))
		if err != nil {
			t.Fatalf("valid certificate refused: %v", err)
		}
		s, err := cl.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		if err := s.RequestPty("xterm", 24, 80, ssh.TerminalModes{}); (err == nil) != c.wantPTY {
			t.Errorf("permit-pty %v: pty-req error %v", c.wantPTY, err)
		}
		out, err := s.Output("echo it works")
		if err != nil || string(out) != "it works\n" {
			t.Errorf("echo: %q, %v", out, err)
		}
		cl.Close()
	}
}
