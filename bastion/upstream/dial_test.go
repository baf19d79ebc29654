package upstream

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"gatehouse/bastion/internal/sshtest"
)

func TestDialExec(t *testing.T) {
	e := newEnv(t)
	c, mc := e.dial(t)
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	out, err := s.Output("echo hi")
	if err != nil || string(out) != "hi\n" {
		t.Fatalf("echo hi: %q, %v", out, err)
	}
	if mc.Principal != e.sshd.User || mc.AuthorizedBy != "known_hosts" {
		t.Errorf("minted %+v", mc)
	}
	if want := ssh.FingerprintSHA256(parsePub(t, e.sshd.HostKey.Pub)); mc.HostKey != want {
		t.Errorf("host key %s, want %s", mc.HostKey, want)
	}
	// The target's own log names the admin through the key id and serial.
	deadline := time.Now().Add(5 * time.Second)
	want := fmt.Sprintf("(serial %d)", mc.Serial)
	for !strings.Contains(e.sshd.Log(), want) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	log := e.sshd.Log()
	if !strings.Contains(log, want) || !strings.Contains(log, "ID gatehouse session=s-test-1 principal=alice") {
		t.Errorf("sshd log lacks the minted certificate's id and serial %d:\n%s", mc.Serial, log)
	}
}

// TestDialRSACA: an RSA upstream CA signs with SHA-2, which OpenSSH
// accepts (it refuses SHA-1 ssh-rsa CA signatures).
func TestDialRSACA(t *testing.T) {
	dir := t.TempDir()
	rsaCA := sshtest.NewCA(t, dir, "rsa:3072")
	e2 := &env{sshd: sshtest.StartSSHD(t, sshtest.SSHDOptions{TrustedUserCAKeys: rsaCA.Pub}), known: filepath.Join(dir, "kh"), ca: rsaCA}
	e2.writeKnownHosts(t, fmt.Sprintf("[%s]:%d %s", targetName, e2.sshd.Port, readFile(t, e2.sshd.HostKey.Pub)))
	e2.dialer = e2.newDialer(t, Config{})
	c, mc := e2.dial(t)
	if f := mc.Certificate.Signature.Format; f != ssh.KeyAlgoRSASHA512 && f != ssh.KeyAlgoRSASHA256 {
		t.Errorf("certificate signed with %s", mc.Certificate.Signature.Format)
	}
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	if out, err := s.Output("echo rsa"); err != nil || string(out) != "rsa\n" {
		t.Fatalf("echo: %q %v", out, err)
	}
}

func parsePub(t *testing.T, path string) ssh.PublicKey {
	t.Helper()
	k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(readFile(t, path)))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestDialHostKeyChecks(t *testing.T) {
	e := newEnv(t)
	other := sshtest.UserKey(t, t.TempDir(), "ed25519")
	cases := []struct {
		name, line, want string
	}{
		{"mismatch", fmt.Sprintf("[%s]:%d %s", targetName, e.sshd.Port, readFile(t, other.Pub)), "HOST KEY MISMATCH"},
		{"unknown host", fmt.Sprintf("[other.example.org]:%d %s", e.sshd.Port, readFile(t, e.sshd.HostKey.Pub)), "is not in"},
		{"wrong port", fmt.Sprintf("%s %s", targetName, readFile(t, e.sshd.HostKey.Pub)), "is not in"},
		{"revoked", fmt.Sprintf("@revoked * %s", readFile(t, e.sshd.HostKey.Pub)), "@revoked"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e.writeKnownHosts(t, tc.line)
			c, _, err := e.dialer.Dial(context.Background(), e.target(), testWho)
			if err == nil {
				c.Close()
				t.Fatal("dial succeeded with a wrong known_hosts")
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), targetName) {
				t.Fatalf("error %q lacks %q or the host name", err, tc.want)
			}
		})
	}
}

// TestDialHostCertificate: a target presenting a host certificate is
// accepted through an @cert-authority line; one from a CA we do not trust
// falls back to its plain keys in known_hosts, as OpenSSH does.
func TestDialHostCertificate(t *testing.T) {
	dir := t.TempDir()
	hostCA := sshtest.NewCA(t, dir, "ed25519")
	hk := sshtest.UserKey(t, dir, "ecdsa")
	cert := hostCA.Sign(t, hk.Pub, "-h", "-n", targetName, "-V", "-5m:+1h", "-I", "target-host")
	e := newEnv(t, "HostKey "+hk.Priv, "HostCertificate "+cert)

	// x/crypto's known_hosts matching has no port wildcard: a CA line
	// for a target on a port other than 22 names the port.
	e.writeKnownHosts(t, fmt.Sprintf("@cert-authority [*.example.org]:%d %s", e.sshd.Port, readFile(t, hostCA.Pub)))
	_, mc := e.dial(t)
	if mc.AuthorizedBy != "host-ca" || !strings.HasPrefix(mc.HostKeyType, "ecdsa-sha2-nistp256-cert") || mc.HostCertID != "target-host" {
		t.Fatalf("minted %+v: want accepted by the host CA", mc)
	}

	// CA trusted for other names only, no plain key: refused.
	e.writeKnownHosts(t, fmt.Sprintf("@cert-authority [*.other.example.org]:%d %s", e.sshd.Port, readFile(t, hostCA.Pub)))
	if c, _, err := e.dialer.Dial(context.Background(), e.target(), testWho); err == nil {
		c.Close()
		t.Fatal("host certificate accepted for a name its CA is not trusted for")
	} else if !strings.Contains(err.Error(), "is not in") {
		t.Fatalf("error %q", err)
	}

	// Only the plain Ed25519 key known: the ECDSA certificate must not
	// be preferred over it.
	e.writeKnownHosts(t, fmt.Sprintf("[%s]:%d %s", targetName, e.sshd.Port, readFile(t, e.sshd.HostKey.Pub)))
	_, mc = e.dial(t)
	if mc.AuthorizedBy != "known_hosts" || mc.HostKeyType != ssh.KeyAlgoED25519 {
		t.Fatalf("minted %+v: want the known plain ed25519 key", mc)
	}
}

// TestMintedCertificate inspects the minted certificate with the real
// ssh-keygen -L.
func TestMintedCertificate(t *testing.T) {
	e := newEnv(t)
	now := time.Now()
	d := e.newDialer(t, Config{CertValidity: 2 * time.Minute, Now: func() time.Time { return now }})
	c, mc, err := d.Dial(context.Background(), e.target(), Who{
		Principal: "alice", KeyID: "evil id\nforged=1", SessionID: "s2", Serial: 7, Source: "192.0.2.1:22"})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	path := filepath.Join(t.TempDir(), "minted-cert.pub")
	if err := os.WriteFile(path, ssh.MarshalAuthorizedKey(mc.Certificate), 0o644); err != nil {
		t.Fatal(err)
	}
	out := sshtest.Run(t, "ssh-keygen", "-L", "-f", path)
	for _, want := range []string{
		"Type: ssh-ed25519-cert-v01@openssh.com user certificate",
		"Serial: " + strconv.FormatUint(mc.Serial, 10),
		"Principals: \n                " + e.sshd.User + "\n",
		"Critical Options: (none)",
		"Extensions: \n                permit-pty\n",
		`Key ID: "gatehouse session=s2 principal=alice keyid=evil\x20id\u000aforged=1 serial=7 from=192.0.2.1:22"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("ssh-keygen -L lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "agent") || strings.Contains(out, "port-forwarding") || strings.Contains(out, "user-rc") {
		t.Errorf("minted certificate permits more than a pty:\n%s", out)
	}
	m := regexp.MustCompile(`Valid: from (\S+) to (\S+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no validity in:\n%s", out)
	}
	from, err1 := time.ParseInLocation("2006-01-02T15:04:05", m[1], time.Local)
	to, err2 := time.ParseInLocation("2006-01-02T15:04:05", m[2], time.Local)
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	if to.Sub(now) > 2*time.Minute || to.Sub(now) < 2*time.Minute-time.Second || now.Sub(from) > time.Minute+time.Second {
		t.Errorf("validity %s..%s around now %s: want now-1m..now+2m", from, to, now)
	}
	if len(strings.Fields(mc.KeyID)) != 6 {
		t.Errorf("key id %q splits into more than its 6 fields", mc.KeyID)
	}
}

// TestAdminCertificateRefusedByTarget: targets trust only the upstream
// CA, so an admin's own user certificate cannot skip the bastion.
func TestAdminCertificateRefusedByTarget(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	userCA := sshtest.NewCA(t, dir, "ed25519")
	admin := sshtest.UserKey(t, dir, "ed25519")
	known := filepath.Join(dir, "kh")
	run := func(cert string) sshtest.Result {
		args := append(sshtest.ClientOptions(known, admin.Priv, cert), "-p", strconv.Itoa(e.sshd.Port),
			e.sshd.User+"@127.0.0.1", "echo in")
		return sshtest.SSH(t, args...)
	}
	r := run(userCA.Sign(t, admin.Pub, "-n", e.sshd.User, "-V", "-1m:+10m"))
	if r.Exit == 0 || !strings.Contains(r.Stderr, "Permission denied") {
		t.Fatalf("target accepted the admin's user certificate:\n%s", r)
	}
	// Control: the same key certified by the upstream CA gets in.
	r = run(e.ca.Sign(t, admin.Pub, "-n", e.sshd.User, "-V", "-1m:+10m"))
	if r.Exit != 0 || r.Stdout != "in\n" {
		t.Fatalf("upstream-CA certificate refused:\n%s\n%s", r, e.sshd.Log())
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	dir := t.TempDir()
	ca := newEd25519Signer(t)
	bad := filepath.Join(dir, "bad")
	os.WriteFile(bad, []byte("not a known_hosts line at all\n"), 0o644)
	cases := map[string]Config{
		"no CA":           {KnownHosts: bad},
		"no known_hosts":  {CAKey: ca},
		"missing file":    {CAKey: ca, KnownHosts: filepath.Join(dir, "absent")},
		"malformed lines": {CAKey: ca, KnownHosts: bad},
		"directory":       {CAKey: ca, KnownHosts: dir},
	}
	for name, cfg := range cases {
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: New accepted %+v", name, cfg)
		}
	}
}

func TestDialRefusesBadNames(t *testing.T) {
	dir := t.TempDir()
	kh := filepath.Join(dir, "kh")
	os.WriteFile(kh, nil, 0o644)
	d, err := New(Config{CAKey: newEd25519Signer(t), KnownHosts: kh})
	if err != nil {
		t.Fatal(err)
	}
	for _, tg := range []Target{
		{Host: "a.example.org", Port: 22, Login: "root"},                               // no IP
		{Host: "a.example.org", IP: e127(), Port: 22, Login: "root,admin"},             // two principals
		{Host: "*.example.org", IP: e127(), Port: 22, Login: "root"},                   // wildcard host
		{Host: "a.example.org", IP: e127(), Port: 22, Login: ""},                       // no login
		{Host: "a.example.org\n", IP: e127(), Port: 22, Login: "root"},                 // control char
		{Host: "a.example.org", IP: e127(), Port: 0, Login: "root"},                    // no port
		{Host: "a.example.org", IP: e127(), Port: 22, Login: strings.Repeat("x", 300)}, // too long
		{Host: "a.example.org", IP: e127(), Port: 22, Login: "ro ot"},                  // space
	} {
		if c, _, err := d.Dial(context.Background(), tg, testWho); err == nil {
			c.Close()
			t.Errorf("Dial accepted %+v", tg)
		}
	}
}

func e127() netip.Addr { return netip.MustParseAddr("127.0.0.1") }

// TestDialTimeout: a target that accepts TCP but never speaks SSH does
// not hold Dial beyond DialTimeout, and a cancelled context ends it too.
func TestDialTimeout(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close() // hold it open, silent
		}
	}()
	dir := t.TempDir()
	kh := filepath.Join(dir, "kh")
	os.WriteFile(kh, nil, 0o644)
	d, err := New(Config{CAKey: newEd25519Signer(t), KnownHosts: kh, DialTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	tg := Target{Host: "silent.example.org", IP: e127(), Port: uint16(ln.Addr().(*net.TCPAddr).Port), Login: "root"}
	start := time.Now()
	if c, _, err := d.Dial(context.Background(), tg, testWho); err == nil {
		c.Close()
		t.Fatal("dial to a silent server succeeded")
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("dial took %v despite a 300ms DialTimeout", el)
	}
	d, _ = New(Config{CAKey: newEd25519Signer(t), KnownHosts: kh, DialTimeout: time.Minute})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start = time.Now()
	if c, _, err := d.Dial(ctx, tg, testWho); err == nil {
		c.Close()
		t.Fatal("dial to a silent server succeeded")
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("dial took %v despite a cancelled context", el)
	}
}
