package certauth

import (
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

func TestExplain(t *testing.T) {
	e := newEdFixture(t)
	// Untrusted CA, no principals, 48 hours: three faults at once.
	bad := loadKey(t, e.cert(e.otherCA, e.user, "-I", "k", "-V", "-1m:+48h"))
	steps, id := e.chk.Explain("alice", localhost, bad)
	if id != nil {
		t.Fatalf("identity for a bad certificate: %+v", id)
	}
	got := map[string]Step{}
	for _, s := range steps {
		got[s.Check] = s
	}
	for check, want := range map[string]string{"trusted CA": "untrusted-ca", "principals": "no-principals", "lifetime": "lifetime-too-long"} {
		if s := got[check]; s.OK || s.Reason != want {
			t.Errorf("step %q = %+v, want reason %s", check, s, want)
		}
	}
	if s := got["signature"]; !s.Skipped {
		t.Errorf("signature step with an untrusted CA = %+v, want skipped", s)
	}
	if s := got["validity window"]; !s.OK {
		t.Errorf("validity window = %+v", s)
	}
	// Check reports the first of them.
	if _, err := e.chk.Check("alice", localhost, bad); reasonOf(t, err) != "untrusted-ca" {
		t.Errorf("Check: %v", err)
	}

	good := loadKey(t, e.cert(e.ca, e.user, "-I", "k", "-n", "alice", "-V", "-1m:+1h"))
	steps, id = e.chk.Explain("alice", localhost, good)
	if id == nil {
		t.Fatalf("good certificate refused: %+v", steps)
	}
	for _, s := range steps {
		if !s.OK {
			t.Errorf("step %+v", s)
		}
	}
	if len(steps) != 14 {
		t.Errorf("%d steps, want 14", len(steps))
	}
	steps, id = e.chk.Explain("alice", localhost, loadKey(t, e.user+".pub"))
	if id != nil || len(steps) != 1 || steps[0].Reason != "not-a-certificate" {
		t.Errorf("plain key: %+v", steps)
	}
}

// FuzzCheck feeds arbitrary key blobs, as a client could send them, through
// Check and Explain: no panic, and both agree.
func FuzzCheck(f *testing.F) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	caSigner, _ := ssh.NewSignerFromKey(priv)
	caPub, _ := ssh.NewPublicKey(pub)
	userPub, _, _ := ed25519.GenerateKey(rand.Reader)
	userKey, _ := ssh.NewPublicKey(userPub)
	dir := f.TempDir()
	caFile := filepath.Join(dir, "ca.pub")
	if err := os.WriteFile(caFile, ssh.MarshalAuthorizedKey(caPub), 0o644); err != nil {
		f.Fatal(err)
	}
	now := time.Now()
	chk, err := New(Config{UserCAKeys: caFile, MaxCertLifetime: 24 * time.Hour, ClockSkew: time.Minute}, func() time.Time { return now }, nil)
	if err != nil {
		f.Fatal(err)
	}
	for _, c := range []*ssh.Certificate{
		{Key: userKey, CertType: ssh.UserCert, ValidPrincipals: []string{"alice"}, ValidAfter: uint64(now.Unix() - 60), ValidBefore: uint64(now.Unix() + 3600)},
		{Key: userKey, CertType: ssh.UserCert, ValidPrincipals: []string{"alice", "a,b"}, ValidBefore: ssh.CertTimeInfinity,
			Permissions: ssh.Permissions{CriticalOptions: map[string]string{"source-address": "127.0.0.1/32,::1"}, Extensions: map[string]string{"permit-pty": ""}}},
		{Key: userKey, CertType: ssh.HostCert, Serial: 5, KeyId: "x"},
	} {
		if err := c.SignCert(rand.Reader, caSigner); err != nil {
			f.Fatal(err)
		}
		f.Add(c.Marshal())
	}
	f.Add(userKey.Marshal())
	f.Fuzz(func(t *testing.T, blob []byte) {
		key, err := ssh.ParsePublicKey(blob)
		if err != nil {
			return
		}
		id, err := chk.Check("alice", localhost, key)
		_, id2 := chk.Explain("alice", localhost, key)
		if (id == nil) != (id2 == nil) || (err == nil) != (id != nil) {
			t.Fatalf("Check (%v, %v) and Explain (%v) disagree", id, err, id2)
		}
		if id != nil && (id.Login != "alice" || id.CAFingerprint != ssh.FingerprintSHA256(caPub)) {
			t.Fatalf("accepted identity %+v", id)
		}
	})
}
