package upstream

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"gatehouse/bastion/internal/sshtest"
)

// TestHostCertSignerRealClient: the real ssh client, trusting only an
// @cert-authority line for the bastion's host CA, accepts the bastion
// presenting a certificate for the destination name, and refuses one
// made out for another name.
func TestHostCertSignerRealClient(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	hostCA := newEd25519Signer(t)
	hostKey := newEd25519Signer(t)
	known := filepath.Join(dir, "known_hosts")
	line := "@cert-authority *.example.org " + string(ssh.MarshalAuthorizedKey(hostCA.PublicKey()))
	if err := os.WriteFile(known, []byte(line), 0o644); err != nil {
		t.Fatal(err)
	}
	connect := func(names []string) sshtest.Result {
		signer, err := HostCertSigner(hostCA, hostKey, names, time.Now(), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		f := startFront(t, e, frontOptions{hostKey: signer})
		return sshtest.SSH(t, "-F", "/dev/null", "-o", "UserKnownHostsFile="+known,
			"-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
			"-o", "IdentityFile="+f.key.Priv, "-o", "HostKeyAlias="+targetName,
			"-p", strconv.Itoa(f.port), "admin@127.0.0.1", "echo through")
	}
	if r := connect([]string{targetName, "192.0.2.10"}); r.Exit != 0 || r.Stdout != "through\n" {
		t.Fatalf("real ssh refused the host certificate:\n%s", r)
	}
	if r := connect([]string{"other.example.org"}); r.Exit == 0 || !strings.Contains(r.Stderr, "Host key verification failed") {
		t.Fatalf("real ssh accepted a host certificate for another name:\n%s", r)
	}
}

func TestHostCertSignerFields(t *testing.T) {
	ca, key := newEd25519Signer(t), newEd25519Signer(t)
	now := time.Unix(1_800_000_000, 0)
	s, err := HostCertSigner(ca, key, []string{"Web1.Example.ORG", "10.0.0.1"}, now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c := s.PublicKey().(*ssh.Certificate)
	if c.CertType != ssh.HostCert || strings.Join(c.ValidPrincipals, ",") != "web1.example.org,10.0.0.1" ||
		c.ValidBefore != uint64(now.Add(time.Hour).Unix()) || c.ValidAfter != uint64(now.Add(-time.Minute).Unix()) {
		t.Fatalf("certificate %+v", c)
	}
	cc := ssh.CertChecker{IsHostAuthority: func(k ssh.PublicKey, _ string) bool {
		return string(k.Marshal()) == string(ca.PublicKey().Marshal())
	}, Clock: func() time.Time { return now }}
	if err := cc.CheckCert("web1.example.org", c); err != nil {
		t.Fatalf("x/crypto rejects the host certificate: %v", err)
	}
	for _, bad := range [][]string{nil, {""}, {"a,b"}, {"*.example.org"}, {"a b"}} {
		if _, err := HostCertSigner(ca, key, bad, now, time.Hour); err == nil {
			t.Errorf("names %q accepted", bad)
		}
	}
	if _, err := HostCertSigner(ca, key, []string{"a"}, now, 0); err == nil {
		t.Error("zero validity accepted")
	}
	if _, err := HostCertSigner(ca, s, []string{"a"}, now, time.Hour); err == nil {
		t.Error("a certificate accepted as the host key")
	}
}
