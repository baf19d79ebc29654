package bastion

import (
	"errors"
	"fmt"
	"net"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"gatehouse/bastion/internal/sshtest"
)

// TestJumpAccepted: a valid certificate reaches an allowed real sshd
// through the bastion with ssh -J and with ssh -W, and the audit log has
// the login, the forward with the resolved IP, rule and byte counts, and
// the connection end.
func TestJumpAccepted(t *testing.T) {
	f := newFixture(t, nil)
	key, cert, id := f.userCert(t, f.ca, "-n", "admin", "-V", "-1m:+1h")
	cfg := f.jumpConfig(t, key, cert, "admin")

	t.Run("J", func(t *testing.T) {
		r := sshtest.SSH(t, "-F", cfg, "target", "echo", "hello-through-jump")
		if r.Exit != 0 || strings.TrimSpace(r.Stdout) != "hello-through-jump" {
			t.Fatalf("ssh -J failed: %s\nsshd log:\n%s", r, f.sshd.Log())
		}
	})
	t.Run("W", func(t *testing.T) {
		r := sshtest.SSH(t, "-F", cfg, "-o", "ProxyCommand=ssh -F "+cfg+" -W %h:%p bastion", "target-direct", "echo", "hello-through-W")
		if r.Exit != 0 || strings.TrimSpace(r.Stdout) != "hello-through-W" {
			t.Fatalf("ssh -W failed: %s", r)
		}
	})

	t.Run("source-address-match", func(t *testing.T) {
		// A certificate restricted to the client's address works: its
		// critical option reaches the checks instead of being dropped or
		// refused as unknown.
		k, c, sid := f.userCert(t, f.ca, "-n", "admin", "-V", "-1m:+1h", "-O", "source-address=127.0.0.0/8,10.9.9.9/32")
		cfg := f.jumpConfig(t, k, c, "admin")
		if r := sshtest.SSH(t, "-F", cfg, "target", "true"); r.Exit != 0 {
			t.Fatalf("source-address certificate from a listed address refused: %s", r)
		}
		f.waitEvent(t, "forward", map[string]string{"key_id": sid})
	})

	acc := f.waitEvent(t, "auth", map[string]string{"key_id": id, "result": "accepted"})
	if acc.str("login") != "admin" || !strings.HasPrefix(acc.str("ca_fp"), "SHA256:") || acc.str("source") == "" {
		t.Errorf("auth event lacks identity: %v", acc)
	}
	fw := f.waitEvent(t, "forward", map[string]string{"key_id": id, "resolved_ip": "127.0.0.1", "rule": "0"})
	if in, _ := fw["bytes_in"].(float64); in <= 0 {
		t.Errorf("forward bytes_in = %v", fw["bytes_in"])
	}
	if out, _ := fw["bytes_out"].(float64); out <= 0 {
		t.Errorf("forward bytes_out = %v", fw["bytes_out"])
	}
	if fw.str("destination") != "127.0.0.1:"+strconv.Itoa(f.sshd.Port) {
		t.Errorf("forward destination = %q", fw.str("destination"))
	}
	end := f.waitEvent(t, "conn.end", map[string]string{"key_id": id})
	if end.str("reason") != "closed by client" {
		t.Errorf("conn.end reason = %q", end.str("reason"))
	}
	if rep, ok := f.srv.CheckCert(cert, "", ""); !ok || !strings.Contains(strings.Join(rep, "\n"), "rule 0 (principals admin): jump to") {
		t.Errorf("CheckCert on a good certificate: ok=%v\n%s", ok, strings.Join(rep, "\n"))
	}
}

// TestRefusals: each bad credential is refused with OpenSSH's usual
// "Permission denied (publickey)" and the audit log names the reason.
func TestRefusals(t *testing.T) {
	f := newFixture(t, nil)
	cases := []struct {
		name   string
		ca     *sshtest.CA
		opts   []string
		key    *sshtest.Key
		login  string
		reason string
	}{
		{name: "expired", opts: []string{"-n", "admin", "-V", "-2h:-1h"}, reason: "expired"},
		{name: "not-yet-valid", opts: []string{"-n", "admin", "-V", "+1h:+2h"}, reason: "not-yet-valid"},
		{name: "lifetime-over-max", opts: []string{"-n", "admin", "-V", "-1m:+30h"}, reason: "lifetime-too-long"},
		{name: "infinite", opts: []string{"-n", "admin", "-V", "always:forever"}, reason: "infinite-lifetime"},
		{name: "wrong-principal", opts: []string{"-n", "alice", "-V", "-1m:+1h"}, reason: "login-not-in-principals"},
		{name: "empty-principals", opts: []string{"-V", "-1m:+1h"}, reason: "no-principals"},
		{name: "wildcard-principal", opts: []string{"-n", "adm*", "-V", "-1m:+1h"}, login: "adm*", reason: "bad-principal"},
		{name: "untrusted-ca", ca: f.otherCA, opts: []string{"-n", "admin", "-V", "-1m:+1h"}, reason: "untrusted-ca"},
		{name: "ssh-rsa-sha1-ca-signature", ca: f.rsaCA, opts: []string{"-t", "ssh-rsa", "-n", "admin", "-V", "-1m:+1h"}, reason: "weak-ca-signature"},
		{name: "revoked-serial", opts: []string{"-z", "666", "-n", "admin", "-V", "-1m:+1h"}, reason: "revoked"},
		{name: "revoked-key-id", opts: []string{"-I", "revoked-id", "-n", "admin", "-V", "-1m:+1h"}, reason: "revoked"},
		{name: "revoked-hash", key: &f.revKey, opts: []string{"-n", "admin", "-V", "-1m:+1h"}, reason: "revoked"},
		{name: "source-address", opts: []string{"-n", "admin", "-V", "-1m:+1h", "-O", "source-address=10.9.9.9/32"}, reason: "source-address"},
		{name: "unknown-critical-option", opts: []string{"-n", "admin", "-V", "-1m:+1h", "-O", "critical:frobnicate@example.org=yes"}, reason: "unknown-critical-option"},
		{name: "force-command", opts: []string{"-n", "admin", "-V", "-1m:+1h", "-O", "force-command=/bin/true"}, reason: "force-command"},
		{name: "rsa-2048-user-key", key: &f.rsaUser, opts: []string{"-n", "admin", "-V", "-1m:+1h"}, reason: "weak-key"},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			ca := c.ca
			if ca == nil {
				ca = f.ca
			}
			var key sshtest.Key
			var cert, id string
			if c.key != nil {
				key = *c.key
				cert, id = f.sign(t, ca, key, c.opts...)
			} else {
				key, cert, id = f.userCert(t, ca, c.opts...)
			}
			login := c.login
			if login == "" {
				login = "admin"
			}
			// A source address per case: the refusals of one source are
			// aggregated, and the cases run in parallel.
			r := f.sshBastionFrom(t, fmt.Sprintf("127.0.1.%d", 10+i), key, cert, login, "true")
			if r.Exit != 255 || !strings.Contains(r.Stderr, "Permission denied (publickey)") {
				t.Fatalf("want permission denied, got %s", r)
			}
			e := f.waitEvent(t, "auth", map[string]string{"key_id": id, "result": "refused"})
			if e.str("reason") != c.reason {
				t.Errorf("reason %q (%s), want %q", e.str("reason"), e.str("detail"), c.reason)
			}
			if e.str("login") != login {
				t.Errorf("login %q, want %q", e.str("login"), login)
			}
			if _, ok := f.srv.CheckCert(cert, login, ""); ok {
				t.Errorf("CheckCert accepts a certificate the server refused")
			}
		})
	}
	t.Run("plain-key", func(t *testing.T) {
		t.Parallel()
		key := sshtest.UserKey(t, f.dir, "ed25519")
		r := f.sshBastion(t, key, "", "admin", "true")
		if r.Exit != 255 || !strings.Contains(r.Stderr, "Permission denied (publickey)") {
			t.Fatalf("want permission denied, got %s", r)
		}
		fp := strings.Fields(sshtest.Run(t, "ssh-keygen", "-l", "-E", "sha256", "-f", key.Pub))[1]
		e := f.waitEvent(t, "auth", map[string]string{"key_fp": fp, "result": "refused"})
		if e.str("reason") != "not-a-certificate" {
			t.Errorf("reason %q", e.str("reason"))
		}
	})
	t.Run("methods", func(t *testing.T) {
		t.Parallel()
		// Offer none, password and keyboard-interactive only: the server's
		// failure message must list publickey alone.
		key, cert, _ := f.userCert(t, f.ca, "-n", "admin", "-V", "-1m:+1h")
		r := f.sshBastion(t, key, cert, "admin", "-o", "PreferredAuthentications=none,password,keyboard-interactive",
			"-o", "NumberOfPasswordPrompts=1", "true")
		if r.Exit != 255 || !strings.Contains(r.Stderr, "Permission denied (publickey).") {
			t.Fatalf("want only publickey advertised, got %s", r)
		}
		// With x/crypto the none probe comes first: if NoClientAuth were on,
		// it would succeed and the handshake would complete.
		var allowed []string
		cc := &gossh.ClientConfig{
			User:            "admin",
			HostKeyCallback: gossh.InsecureIgnoreHostKey(),
			Auth: []gossh.AuthMethod{
				gossh.Password("secret"),
				gossh.KeyboardInteractive(func(string, string, []string, []bool) ([]string, error) { return nil, nil }),
			},
			BannerCallback: func(string) error { return nil },
		}
		cc.AuthCallback = func(actx *gossh.ClientAuthContext) (gossh.AuthMethod, error) {
			allowed = actx.AllowedMethods
			return nil, errors.New("stop")
		}
		if _, err := dialSSH(f.port, cc); err == nil {
			t.Fatal("handshake without any credentials succeeded: none auth is accepted")
		}
		if !slices.Equal(allowed, []string{"publickey"}) {
			t.Errorf("server offers %v, want [publickey]", allowed)
		}
		cc.AuthCallback = nil
		if _, err := dialSSH(f.port, cc); err == nil {
			t.Fatal("password/keyboard-interactive login succeeded")
		}
	})
	t.Run("two-identities-as-root", func(t *testing.T) {
		t.Parallel()
		// The real client, as root, offering a stranger's plain key and
		// then alice's certificate: both refused, and the audit log shows
		// the certificate was checked against login root.
		plain := sshtest.UserKey(t, f.dir, "ed25519")
		alice, cert, id := f.userCert(t, f.ca, "-n", "alice", "-V", "-1m:+1h")
		args := sshtest.ClientOptions(f.known, plain.Priv, "")
		args = append(args, "-o", "IdentityFile="+alice.Priv, "-o", "CertificateFile="+cert,
			"-p", strconv.Itoa(f.port), "root@127.0.0.1", "true")
		r := sshtest.SSH(t, args...)
		if r.Exit != 255 || !strings.Contains(r.Stderr, "Permission denied") {
			t.Fatalf("want refusal, got %s", r)
		}
		e := f.waitEvent(t, "auth", map[string]string{"key_id": id, "result": "refused"})
		if e.str("login") != "root" || e.str("reason") != "login-not-in-principals" {
			t.Errorf("got %v", e)
		}
	})
	t.Run("algorithms", func(t *testing.T) {
		t.Parallel()
		key, cert, _ := f.userCert(t, f.ca, "-n", "admin", "-V", "-1m:+1h")
		for _, o := range [][]string{
			{"-o", "Ciphers=aes128-cbc,aes256-cbc,3des-cbc"},
			{"-o", "KexAlgorithms=diffie-hellman-group14-sha1,diffie-hellman-group1-sha1,diffie-hellman-group-exchange-sha1"},
			{"-o", "Ciphers=aes128-ctr", "-o", "MACs=hmac-sha1,hmac-sha1-96,hmac-md5"},
			{"-o", "HostKeyAlgorithms=ssh-rsa,ssh-dss"},
		} {
			r := f.sshBastion(t, key, cert, "admin", append(o, "true")...)
			if r.Exit != 255 || !strings.Contains(r.Stderr, "no matching") {
				t.Errorf("%v: want no matching algorithm, got %s", o, r)
			}
		}
	})
}

// TestCrossAccount reproduces the gliderlabs stale-ctx.User() attack on the
// real server stack: one connection fails as alice, then switches the user
// name to root and offers alice's valid certificate. A server that checks
// the certificate against the first user name lets root in.
func TestCrossAccount(t *testing.T) {
	f := newFixture(t, nil)
	stranger := sshtest.UserKey(t, f.dir, "ed25519")
	alice, aliceCert, aliceID := f.userCert(t, f.ca, "-n", "alice", "-V", "-1m:+1h")
	strangerSigner := loadSigner(t, stranger.Priv, "")
	aliceSigner := loadSigner(t, alice.Priv, aliceCert)

	attempt := func(first, second string) error {
		step := 0
		cc := &gossh.ClientConfig{User: first, HostKeyCallback: gossh.InsecureIgnoreHostKey()}
		cc.AuthCallback = func(actx *gossh.ClientAuthContext) (gossh.AuthMethod, error) {
			step++
			switch step {
			case 1:
				return gossh.PublicKeys(strangerSigner), nil
			case 2:
				if err := switchClientUser(actx.Metadata, second); err != nil {
					t.Fatalf("cannot switch the user name mid-connection (x/crypto internals changed?): %v", err)
				}
				return gossh.PublicKeys(aliceSigner), nil
			}
			return nil, errors.New("no more methods")
		}
		c, err := dialSSH(f.port, cc)
		if err == nil {
			c.Close()
		}
		return err
	}

	// Control: the user switch really happens. First root (refused), then
	// alice with alice's certificate: accepted as alice. A server keeping
	// the first name would have refused this.
	if err := attempt("root", "alice"); err != nil {
		t.Fatalf("control (fail as root, then alice with her certificate) refused: %v", err)
	}
	acc := f.waitEvent(t, "auth", map[string]string{"key_id": aliceID, "result": "accepted"})
	if acc.str("login") != "alice" {
		t.Fatalf("control: accepted login %q, want alice", acc.str("login"))
	}

	// The attack.
	if err := attempt("alice", "root"); err == nil {
		t.Fatal("cross-account login: root logged in with alice's certificate")
	}
	e := f.waitEvent(t, "auth", map[string]string{"key_id": aliceID, "result": "refused", "login": "root"})
	if e.str("reason") != "login-not-in-principals" {
		t.Errorf("reason %q", e.str("reason"))
	}
}

// switchClientUser changes the user name x/crypto's client sends in its
// next authentication request. No stock client changes the user name
// between attempts, but the protocol allows it (RFC 4252 5) and attackers
// are not stock clients. The client reads ClientConfig.User on every
// attempt from the copy that its handshake transport points at.
func switchClientUser(md gossh.ConnMetadata, user string) error {
	v := reflect.ValueOf(md)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return errors.New("metadata is not a pointer to a struct")
	}
	tr := v.Elem().FieldByName("transport")
	if !tr.IsValid() || tr.Kind() != reflect.Interface || tr.IsNil() {
		return errors.New("no transport field")
	}
	ht := tr.Elem()
	if ht.Kind() != reflect.Pointer || ht.Elem().Kind() != reflect.Struct {
		return errors.New("transport is not a pointer to a struct")
	}
	cf := ht.Elem().FieldByName("config")
	if !cf.IsValid() || cf.Kind() != reflect.Pointer || cf.Type().Elem() != reflect.TypeFor[gossh.Config]() {
		return errors.New("no *Config field in the transport")
	}
	// Config is the first field of ClientConfig, and the transport holds
	// &fullConf.Config of the client's ClientConfig copy.
	cc := (*gossh.ClientConfig)(cf.UnsafePointer())
	cc.User = user
	return nil
}

func loadSigner(t *testing.T, priv, cert string) gossh.Signer {
	t.Helper()
	data, err := os.ReadFile(priv)
	if err != nil {
		t.Fatal(err)
	}
	s, err := gossh.ParsePrivateKey(data)
	if err != nil {
		t.Fatal(err)
	}
	if cert == "" {
		return s
	}
	cd, err := os.ReadFile(cert)
	if err != nil {
		t.Fatal(err)
	}
	pub, _, _, _, err := gossh.ParseAuthorizedKey(cd)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := gossh.NewCertSigner(pub.(*gossh.Certificate), s)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

func dialSSH(port int, cc *gossh.ClientConfig) (*gossh.Client, error) {
	cc.Timeout = 10 * time.Second
	return gossh.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), cc)
}
