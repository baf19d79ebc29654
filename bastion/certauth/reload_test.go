package certauth

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// replace writes content to path atomically, as operators should.
func replace(t *testing.T, path string, content []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, content, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func TestReloadIfChangedKRL(t *testing.T) {
	f := newFixture(t)
	ca := f.key("ca", "ed25519", 0)
	otherCA := f.key("ca2", "ed25519", 0)
	user := f.key("user", "ed25519", 0)
	caFile := f.write("user_ca.pub", f.read(ca+".pub"))
	krl := filepath.Join(f.dir, "revoked.krl")
	spec := f.write("spec", "serial: 1000\n")
	f.keygen("-k", "-f", krl, "-s", ca+".pub", spec)

	clk := newClock(time.Now())
	chk, err := New(Config{UserCAKeys: caFile, RevokedKeys: krl, MaxCertLifetime: 24 * time.Hour, ClockSkew: time.Minute}, clk.now, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	live := loadCert(t, f.cert(ca, user, "-I", "alice-laptop", "-n", "alice", "-V", "-1m:+1h", "-z", "7"))
	revoked := loadCert(t, f.cert(ca, user, "-I", "old", "-n", "alice", "-V", "-1m:+1h", "-z", "1000"))
	if _, err := chk.Check("alice", localhost, revoked); reasonOf(t, err) != "revoked" {
		t.Fatalf("serial 1000: %v", err)
	}
	id, err := chk.Check("alice", localhost, live)
	if err != nil {
		t.Fatal(err)
	}
	if changed, err := chk.ReloadIfChanged(); changed || err != nil {
		t.Fatalf("unchanged files: changed=%v err=%v", changed, err)
	}

	// The KRL is regenerated to revoke the live session's key ID.
	replace(t, spec, []byte("serial: 1000\nid: alice-laptop\n"))
	f.keygen("-k", "-f", krl+".new", "-s", ca+".pub", spec)
	if err := os.Rename(krl+".new", krl); err != nil {
		t.Fatal(err)
	}
	if err := chk.StillValid(id); err != nil {
		t.Fatalf("before reload: %v", err)
	}
	if changed, err := chk.ReloadIfChanged(); !changed || err != nil {
		t.Fatalf("after KRL change: changed=%v err=%v", changed, err)
	}
	if reasonOf(t, chk.StillValid(id)) != "revoked" {
		t.Fatal("live session not revoked after reload")
	}
	if _, err := chk.Check("alice", localhost, live); reasonOf(t, err) != "revoked" {
		t.Fatalf("new login with revoked key ID: %v", err)
	}

	// A corrupt KRL is refused; the previous list stays in force, and the
	// same error is reported until the file changes again.
	good := f.readBytes(krl)
	replace(t, krl, good[:len(good)-3])
	changed, err := chk.ReloadIfChanged()
	if changed || err == nil || !strings.Contains(err.Error(), "revoked.krl") {
		t.Fatalf("corrupt KRL: changed=%v err=%v", changed, err)
	}
	if _, err2 := chk.ReloadIfChanged(); err2 == nil || err2.Error() != err.Error() {
		t.Fatalf("second poll of an unchanged corrupt KRL: %v", err2)
	}
	if _, err := chk.Check("alice", localhost, live); reasonOf(t, err) != "revoked" {
		t.Fatalf("old revocations dropped after failed reload: %v", err)
	}
	if err := chk.Reload(); err == nil {
		t.Fatal("explicit Reload of a corrupt KRL succeeded")
	}

	// A plain-text list replaces the KRL: now only serial 1000 is revoked.
	replace(t, krl, []byte("# text form\nserial: 1000\n"))
	if changed, err := chk.ReloadIfChanged(); !changed || err != nil {
		t.Fatalf("text list: changed=%v err=%v", changed, err)
	}
	if err := chk.StillValid(id); err != nil {
		t.Fatalf("un-revoked session: %v", err)
	}
	if _, err := chk.Check("alice", localhost, revoked); reasonOf(t, err) != "revoked" {
		t.Fatalf("serial 1000 via text list: %v", err)
	}

	// An in-place rewrite that keeps the size is still noticed (ctime/mtime).
	if err := os.WriteFile(krl, []byte("# text form\nserial: 0007\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if changed, err := chk.ReloadIfChanged(); !changed || err != nil {
		t.Fatalf("in-place rewrite: changed=%v err=%v", changed, err)
	}
	if reasonOf(t, chk.StillValid(id)) != "revoked" {
		t.Fatal("serial 7 (octal 0007) not revoked")
	}

	// The CA file changes to another CA: live sessions lose trust.
	replace(t, caFile, []byte(f.read(otherCA+".pub")))
	if changed, err := chk.ReloadIfChanged(); !changed || err != nil {
		t.Fatalf("CA change: changed=%v err=%v", changed, err)
	}
	replace(t, krl, []byte(""))
	if _, err := chk.ReloadIfChanged(); err != nil {
		t.Fatal(err)
	}
	if reasonOf(t, chk.StillValid(id)) != "untrusted-ca" {
		t.Fatal("session survived removal of its CA")
	}

	// Removing the revocation file is an error, not an empty list.
	if err := os.Remove(krl); err != nil {
		t.Fatal(err)
	}
	if _, err := chk.ReloadIfChanged(); err == nil {
		t.Fatal("missing revocation file accepted")
	}
}

func TestRevokedCAKeyRefusesEveryCert(t *testing.T) {
	f := newFixture(t)
	ca := f.key("ca", "ed25519", 0)
	user := f.key("user", "ed25519", 0)
	caFile := f.write("user_ca.pub", f.read(ca+".pub"))
	rev := f.write("revoked.txt", "# the CA was compromised\n"+f.read(ca+".pub"))
	chk, err := New(Config{UserCAKeys: caFile, RevokedKeys: rev, MaxCertLifetime: time.Hour * 2}, time.Now, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := loadCert(t, f.cert(ca, user, "-I", "k", "-n", "alice", "-V", "-1m:+1h", "-z", "1"))
	_, err = chk.Check("alice", localhost, c)
	if reasonOf(t, err) != "revoked" || !strings.Contains(err.Error(), "CA key") {
		t.Fatalf("cert from a revoked CA: %v", err)
	}
}

func TestReloadKeepsCAsOnError(t *testing.T) {
	f := newFixture(t)
	ca := f.key("ca", "ed25519", 0)
	user := f.key("user", "ed25519", 0)
	caFile := f.write("user_ca.pub", f.read(ca+".pub"))
	chk, err := New(Config{UserCAKeys: caFile, MaxCertLifetime: 2 * time.Hour}, time.Now, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	cert := loadCert(t, f.cert(ca, user, "-I", "k", "-n", "alice", "-V", "-1m:+1h"))
	replace(t, caFile, []byte(f.read(ca+".pub")+"ssh-ed25519 AAAA-broken\n"))
	_, err = chk.ReloadIfChanged()
	if err == nil || !strings.Contains(err.Error(), "user_ca.pub:2") {
		t.Fatalf("broken CA file: %v", err)
	}
	if _, err := chk.Check("alice", localhost, cert); err != nil {
		t.Fatalf("old CA set dropped after a failed reload: %v", err)
	}
	replace(t, caFile, []byte(f.read(ca+".pub")))
	if err := chk.Reload(); err != nil {
		t.Fatal(err)
	}
	if changed, err := chk.ReloadIfChanged(); changed || err != nil {
		t.Fatalf("after explicit Reload: changed=%v err=%v", changed, err)
	}
}
