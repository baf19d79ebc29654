package certauth

import (
	"crypto/ed25519"
	"crypto/rand"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// edFixture is an ed25519 CA, a second (untrusted) CA and an ed25519 user
// key, with a Checker trusting only the first CA.
type edFixture struct {
	*fixture
	ca, otherCA, user string
	chk               *Checker
	clk               *clock
}

func newEdFixture(t *testing.T) *edFixture {
	t.Helper()
	f := newFixture(t)
	e := &edFixture{fixture: f}
	e.ca = f.key("ca", "ed25519", 0)
	e.otherCA = f.key("other-ca", "ed25519", 0)
	e.user = f.key("user", "ed25519", 0)
	caFile := f.write("user_ca.pub", "# trusted user CAs\n\ncert-authority "+f.read(e.ca+".pub"))
	e.clk = newClock(time.Now())
	chk, err := New(Config{UserCAKeys: caFile, MaxCertLifetime: 24 * time.Hour, ClockSkew: 2 * time.Minute}, e.clk.now, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	e.chk = chk
	return e
}

func TestCheckEveryRefusal(t *testing.T) {
	e := newEdFixture(t)
	f := e.fixture
	rsa2048 := f.key("rsa2048", "rsa", 2048)
	dsaKey := f.key("dsa", "dsa", 0)
	base := []string{"-I", "keyid", "-n", "alice,bob", "-V", "-1m:+1h", "-z", "42"}
	with := func(extra ...string) []string { return append(slices.Clone(base), extra...) }

	cases := []struct {
		name   string
		cert   func() string
		login  string
		remote net.Addr
		want   string
	}{
		{"valid", func() string { return f.cert(e.ca, e.user, base...) }, "alice", localhost, ""},
		{"second principal", func() string { return f.cert(e.ca, e.user, base...) }, "bob", localhost, ""},
		{"plain key", func() string { return e.user + ".pub" }, "alice", localhost, "not-a-certificate"},
		{"host certificate", func() string { return f.cert(e.ca, e.user, with("-h")...) }, "alice", localhost, "host-certificate"},
		{"untrusted CA", func() string { return f.cert(e.otherCA, e.user, base...) }, "alice", localhost, "untrusted-ca"},
		{"login not a principal", func() string { return f.cert(e.ca, e.user, base...) }, "root", localhost, "login-not-in-principals"},
		{"no principals", func() string { return f.cert(e.ca, e.user, "-I", "keyid", "-V", "-1m:+1h") }, "alice", localhost, "no-principals"},
		{"principal with space", func() string { return f.cert(e.ca, e.user, "-I", "k", "-n", "al ice", "-V", "-1m:+1h") }, "al ice", localhost, "bad-principal"},
		{"wildcard principal", func() string { return f.cert(e.ca, e.user, "-I", "k", "-n", "*", "-V", "-1m:+1h") }, "*", localhost, "bad-principal"},
		{"control char principal", func() string { return f.cert(e.ca, e.user, "-I", "k", "-n", "a\x1b[1m", "-V", "-1m:+1h") }, "a\x1b[1m", localhost, "bad-principal"},
		{"never expires", func() string { return f.cert(e.ca, e.user, "-I", "k", "-n", "alice", "-V", "always:forever") }, "alice", localhost, "infinite-lifetime"},
		{"lifetime 48h over 24h max", func() string { return f.cert(e.ca, e.user, "-I", "k", "-n", "alice", "-V", "-1m:+48h") }, "alice", localhost, "lifetime-too-long"},
		{"not yet valid", func() string { return f.cert(e.ca, e.user, "-I", "k", "-n", "alice", "-V", "+1h:+2h") }, "alice", localhost, "not-yet-valid"},
		{"within skew", func() string { return f.cert(e.ca, e.user, "-I", "k", "-n", "alice", "-V", "+1m:+1h") }, "alice", localhost, ""},
		{"expired", func() string { return f.cert(e.ca, e.user, "-I", "k", "-n", "alice", "-V", "-2h:-30s") }, "alice", localhost, "expired"},
		{"unknown critical option", func() string { return f.cert(e.ca, e.user, with("-O", "critical:foo=bar")...) }, "alice", localhost, "unknown-critical-option"},
		{"verify-required", func() string { return f.cert(e.ca, e.user, with("-O", "verify-required")...) }, "alice", localhost, "unknown-critical-option"},
		{"force-command", func() string { return f.cert(e.ca, e.user, with("-O", "force-command=ls")...) }, "alice", localhost, "force-command"},
		{"source-address mismatch", func() string { return f.cert(e.ca, e.user, with("-O", "source-address=10.0.0.0/8")...) }, "alice", localhost, "source-address"},
		{"source-address match", func() string { return f.cert(e.ca, e.user, with("-O", "source-address=192.0.2.1,10.0.0.0/8")...) }, "alice", tenNet, ""},
		{"source-address unknown remote", func() string { return f.cert(e.ca, e.user, with("-O", "source-address=10.0.0.0/8")...) }, "alice", nil, "source-address"},
		{"RSA 2048 user key", func() string { return f.cert(e.ca, rsa2048, base...) }, "alice", localhost, "weak-key"},
		{"DSA user key", func() string { return f.cert(e.ca, dsaKey, base...) }, "alice", localhost, "weak-key"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			key := loadKey(t, tc.cert())
			id, err := e.chk.Check(tc.login, tc.remote, key)
			if got := reasonOf(t, err); got != tc.want {
				t.Fatalf("Check: reason %q, want %q (err %v)", got, tc.want, err)
			}
			if tc.want == "" && (id == nil || id.Login != tc.login) {
				t.Fatalf("accepted without a proper identity: %+v", id)
			}
			if tc.want != "" && id != nil {
				t.Fatalf("refused but returned identity %+v", id)
			}
		})
	}
}

func TestIdentityFields(t *testing.T) {
	e := newEdFixture(t)
	path := e.cert(e.ca, e.user, "-I", "alice@example.org", "-n", "alice,bob", "-V", "-1m:+1h", "-z", "4242")
	key := loadKey(t, path)
	id, err := e.chk.Check("bob", tenNet, key)
	if err != nil {
		t.Fatal(err)
	}
	cert := key.(*ssh.Certificate)
	if id.Login != "bob" || !slices.Equal(id.Principals, []string{"alice", "bob"}) || id.KeyID != "alice@example.org" || id.Serial != 4242 {
		t.Errorf("identity %+v", id)
	}
	// ssh-keygen -l prints the fingerprints OpenSSH would log.
	caFP := strings.Fields(e.keygen("-l", "-f", e.ca+".pub"))[1]
	userFP := strings.Fields(e.keygen("-l", "-f", e.user+".pub"))[1]
	if id.CAFingerprint != caFP || id.KeyFingerprint != userFP {
		t.Errorf("fingerprints %s %s, want %s %s", id.CAFingerprint, id.KeyFingerprint, caFP, userFP)
	}
	if got := id.ValidBefore.Sub(id.ValidAfter); got != 61*time.Minute {
		t.Errorf("lifetime %v, want 61m", got)
	}
	if !id.PermitPTY || !id.PermitPortForwarding || !id.PermitAgentForwarding || !id.PermitX11Forwarding || !id.PermitUserRC {
		t.Errorf("default extensions not all permitted: %+v", id)
	}
	if id.Cert != cert || len(id.SourceAddress) != 0 || id.ForceCommand != "" {
		t.Errorf("identity %+v", id)
	}

	// -O clear -O permit-pty: only the PTY is permitted.
	key = loadKey(t, e.cert(e.ca, e.user, "-I", "k", "-n", "alice", "-V", "-1m:+1h", "-O", "clear", "-O", "permit-pty",
		"-O", "source-address=10.0.0.0/8,2001:db8::/32,192.0.2.7"))
	id, err = e.chk.Check("alice", tenNet, key)
	if err != nil {
		t.Fatal(err)
	}
	if !id.PermitPTY || id.PermitPortForwarding || id.PermitAgentForwarding || id.PermitX11Forwarding || id.PermitUserRC {
		t.Errorf("after -O clear -O permit-pty: %+v", id)
	}
	want := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8::/32"), netip.MustParsePrefix("192.0.2.7/32")}
	if !slices.Equal(id.SourceAddress, want) {
		t.Errorf("SourceAddress %v, want %v", id.SourceAddress, want)
	}
	v6 := &net.TCPAddr{IP: net.ParseIP("2001:db8::5"), Port: 1}
	if _, err := e.chk.Check("alice", v6, key); err != nil {
		t.Errorf("IPv6 client inside source-address refused: %v", err)
	}
	mapped := &net.TCPAddr{IP: net.ParseIP("::ffff:10.9.9.9"), Port: 1}
	if _, err := e.chk.Check("alice", mapped, key); err != nil {
		t.Errorf("IPv4-mapped client inside source-address refused: %v", err)
	}
}

func TestRSACA(t *testing.T) {
	f := newFixture(t)
	ca := f.key("rsa-ca", "rsa", 4096)
	user := f.key("user", "ed25519", 0)
	rsaUser := f.key("rsa3072", "rsa", 3072)
	caFile := f.write("ca.pub", f.read(ca+".pub"))
	chk, err := New(Config{UserCAKeys: caFile, MaxCertLifetime: time.Hour * 24}, time.Now, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		sigAlg, key, want string
	}{
		{"rsa-sha2-256", user, ""},
		{"rsa-sha2-512", user, ""},
		{"rsa-sha2-512", rsaUser, ""},
		{"ssh-rsa", user, "weak-ca-signature"},
	} {
		t.Run(tc.sigAlg, func(t *testing.T) {
			path := f.cert(ca, tc.key, "-t", tc.sigAlg, "-I", "k", "-n", "alice", "-V", "-1m:+1h")
			cert := loadCert(t, path)
			if cert.Signature.Format != tc.sigAlg {
				t.Fatalf("ssh-keygen made a %s signature, want %s", cert.Signature.Format, tc.sigAlg)
			}
			_, err := chk.Check("alice", localhost, cert)
			if got := reasonOf(t, err); got != tc.want {
				t.Fatalf("reason %q, want %q (%v)", got, tc.want, err)
			}
		})
	}

	// A weak CA cannot even be configured.
	weak := f.key("rsa2048-ca", "rsa", 2048)
	caFile = f.write("weak.pub", "# line 1\n"+f.read(weak+".pub"))
	_, err = New(Config{UserCAKeys: caFile, MaxCertLifetime: time.Hour}, time.Now, nil)
	if err == nil || !strings.Contains(err.Error(), "weak.pub:2") || !strings.Contains(err.Error(), "2048") {
		t.Fatalf("RSA-2048 CA: err %v, want one naming weak.pub:2 and 2048 bits", err)
	}
	dsaCA := f.key("dsa-ca", "dsa", 0)
	caFile = f.write("dsa.pub", f.read(dsaCA+".pub"))
	if _, err = New(Config{UserCAKeys: caFile, MaxCertLifetime: time.Hour}, time.Now, nil); err == nil || !strings.Contains(err.Error(), "ssh-dss") {
		t.Fatalf("DSA CA: err %v", err)
	}
}

func TestBadSignature(t *testing.T) {
	e := newEdFixture(t)
	cert := loadCert(t, e.cert(e.ca, e.user, "-I", "alice", "-n", "alice", "-V", "-1m:+1h"))
	if _, err := e.chk.Check("alice", localhost, cert); err != nil {
		t.Fatal(err)
	}
	forged := *cert
	forged.ValidPrincipals = []string{"root"}
	if _, err := e.chk.Check("root", localhost, &forged); reasonOf(t, err) != "bad-signature" {
		t.Fatalf("forged principals: %v", err)
	}
	forged = *cert
	forged.Serial = 1
	if _, err := e.chk.Check("alice", localhost, &forged); reasonOf(t, err) != "bad-signature" {
		t.Fatalf("forged serial: %v", err)
	}
	// A signature from another key carried under the trusted CA's name.
	_, otherPriv, _ := ed25519.GenerateKey(rand.Reader)
	signer, _ := ssh.NewSignerFromKey(otherPriv)
	forged = *cert
	if err := forged.SignCert(rand.Reader, signer); err != nil {
		t.Fatal(err)
	}
	forged.SignatureKey = cert.SignatureKey
	if _, err := e.chk.Check("alice", localhost, &forged); reasonOf(t, err) != "bad-signature" {
		t.Fatalf("signature by another key: %v", err)
	}
	forged = *cert
	forged.Signature = nil
	if _, err := e.chk.Check("alice", localhost, &forged); reasonOf(t, err) != "bad-signature" {
		t.Fatalf("unsigned: %v", err)
	}
}

func TestStillValid(t *testing.T) {
	e := newEdFixture(t)
	cert := loadCert(t, e.cert(e.ca, e.user, "-I", "k", "-n", "alice", "-V", "-1m:+1h"))
	id, err := e.chk.Check("alice", localhost, cert)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.chk.StillValid(id); err != nil {
		t.Fatalf("fresh session: %v", err)
	}
	e.clk.set(id.ValidBefore.Add(-time.Second))
	if err := e.chk.StillValid(id); err != nil {
		t.Fatalf("one second before expiry: %v", err)
	}
	e.clk.set(id.ValidBefore)
	if reasonOf(t, e.chk.StillValid(id)) != "expired" {
		t.Fatal("session at ValidBefore not expired")
	}
	if reasonOf(t, e.chk.StillValid(nil)) == "" {
		t.Fatal("nil identity valid")
	}
}

func TestCAFile(t *testing.T) {
	f := newFixture(t)
	ca1 := f.read(f.key("ca1", "ed25519", 0) + ".pub")
	ca2 := f.read(f.key("ca2", "ecdsa", 384) + ".pub")
	user := f.key("user", "ed25519", 0)
	good := f.write("good.pub", "# comment\n\n  cert-authority "+ca1+"cert-authority "+strings.TrimSpace(ca2)+" second CA with comment\n")
	chk, err := New(Config{UserCAKeys: good, MaxCertLifetime: 2 * time.Hour}, time.Now, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, ca := range []string{"ca1", "ca2"} {
		c := loadCert(t, f.cert(f.dir+"/"+ca, user, "-I", "k", "-n", "alice", "-V", "-1m:+1h"))
		if _, err := chk.Check("alice", localhost, c); err != nil {
			t.Errorf("%s: %v", ca, err)
		}
	}
	for _, tc := range []struct{ content, want string }{
		{"", "no CA keys"},
		{"# only a comment\n", "no CA keys"},
		{ca1 + "garbage line\n", "bad.pub:2"},
		{`from="10.0.0.0/8" ` + ca1, `"from=\"10.0.0.0/8\""`},
		{"cert-authority,principals=\"x\" " + ca1, "bad.pub:1"},
		{f.read(f.cert(f.dir+"/ca1", user, "-I", "k", "-n", "a")), "certificate cannot be a CA"},
	} {
		bad := f.write("bad.pub", tc.content)
		_, err := New(Config{UserCAKeys: bad, MaxCertLifetime: time.Hour}, time.Now, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("CA file %q: err %v, want it to contain %q", tc.content, err, tc.want)
		}
	}
	if _, err := New(Config{UserCAKeys: f.dir + "/missing.pub", MaxCertLifetime: time.Hour}, time.Now, nil); err == nil || !strings.Contains(err.Error(), "missing.pub") {
		t.Errorf("missing CA file: %v", err)
	}
	for _, cfg := range []Config{
		{MaxCertLifetime: time.Hour},
		{UserCAKeys: good},
		{UserCAKeys: good, MaxCertLifetime: time.Hour, ClockSkew: -time.Second},
		{UserCAKeys: good, MaxCertLifetime: time.Hour, RevokedKeys: f.dir + "/missing.krl"},
	} {
		if _, err := New(cfg, time.Now, nil); err == nil {
			t.Errorf("config %+v accepted", cfg)
		}
	}
}

func TestPrincipalSyntax(t *testing.T) {
	for _, p := range []string{"", "a,b", "a b", "a\tb", "a*", "a?", "a\x00", "a\x7f", "a\u0085", "a\u00a0b", "a\u2003b", "\xff", strings.Repeat("a", 257)} {
		if principalSyntax(p) == nil {
			t.Errorf("principal %q accepted", p)
		}
	}
	for _, p := range []string{"alice", "ops-admin", "user@example.org", "Émile", strings.Repeat("a", 256)} {
		if err := principalSyntax(p); err != nil {
			t.Errorf("principal %q refused: %v", p, err)
		}
	}
}

func TestParseSourceAddress(t *testing.T) {
	for _, v := range []string{"", ",", "10.0.0.0/8,", "10.1.2.3/8", "host.example.org", "10.0.0.0/33", "fe80::1%eth0", " 10.0.0.1"} {
		if _, err := parseSourceAddress(v); err == nil {
			t.Errorf("source-address %q accepted", v)
		}
	}
}

func FuzzParseCAKeys(f *testing.F) {
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	k, _ := ssh.NewPublicKey(pub)
	line := string(ssh.MarshalAuthorizedKey(k))
	f.Add([]byte(line))
	f.Add([]byte("# c\ncert-authority " + line + "\n\n"))
	f.Add([]byte(`from="x" ` + line))
	f.Fuzz(func(t *testing.T, data []byte) {
		cas, err := parseCAKeys(data, "fuzz")
		if err == nil && len(cas) == 0 {
			t.Fatal("empty CA set accepted")
		}
		for _, ca := range cas {
			if keyStrength(ca.key) != nil {
				t.Fatalf("weak CA %s accepted", ca.key.Type())
			}
		}
	})
}
