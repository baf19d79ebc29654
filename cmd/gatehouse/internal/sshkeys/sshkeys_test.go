package sshkeys

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// TestEnsure: a new key is written 0600 with its .pub beside it; a second
// call loads the same key without rewriting it; a key others may read is
// refused with the chmod to run; WriteNewFile never overwrites.
func TestEnsure(t *testing.T) {
	p := filepath.Join(t.TempDir(), "k")
	s1, created, err := Ensure(p, "test-key")
	if err != nil || !created {
		t.Fatalf("Ensure: %v, created %v", err, created)
	}
	st, err := os.Stat(p)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("private key mode %v (%v), want 0600", st.Mode().Perm(), err)
	}
	pub, err := os.ReadFile(p + ".pub")
	if err != nil || !strings.HasSuffix(string(pub), " test-key\n") {
		t.Fatalf(".pub %q (%v)", pub, err)
	}
	s2, created, err := Ensure(p, "other comment")
	if err != nil || created || !bytes.Equal(s1.PublicKey().Marshal(), s2.PublicKey().Marshal()) {
		t.Fatalf("second Ensure: %v, created %v, same key %v", err, created, err == nil && bytes.Equal(s1.PublicKey().Marshal(), s2.PublicKey().Marshal()))
	}
	if err := os.Chmod(p, 0o640); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Ensure(p, "test-key"); err == nil || !strings.Contains(err.Error(), "chmod 600 "+p) {
		t.Errorf("group-readable key: %v", err)
	}
	if err := WriteNewFile(p, []byte("x"), 0o600); err == nil {
		t.Errorf("WriteNewFile overwrote %s", p)
	}
}

// TestSignUserCert: the certificate is a user certificate from the CA with
// the given principals, window and extensions, and ssh's own checker
// accepts it.
func TestSignUserCert(t *testing.T) {
	dir := t.TempDir()
	ca, _, err := Ensure(filepath.Join(dir, "ca"), "ca")
	if err != nil {
		t.Fatal(err)
	}
	user, _, err := Ensure(filepath.Join(dir, "user"), "user")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	c, err := SignUserCert(ca, user.PublicKey(), "alice@example.org", []string{"alice"}, now.Add(-time.Minute), now.Add(time.Hour),
		map[string]string{"permit-pty": ""})
	if err != nil {
		t.Fatal(err)
	}
	if c.CertType != ssh.UserCert || c.KeyId != "alice@example.org" || c.Serial == 0 {
		t.Errorf("certificate %+v", c)
	}
	checker := &ssh.CertChecker{IsUserAuthority: func(k ssh.PublicKey) bool { return bytes.Equal(k.Marshal(), ca.PublicKey().Marshal()) }}
	if err := checker.CheckCert("alice", c); err != nil {
		t.Errorf("CheckCert: %v", err)
	}
	if err := checker.CheckCert("root", c); err == nil {
		t.Errorf("CheckCert accepted a principal the certificate does not name")
	}
}
