package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"gatehouse/bastion/record"
)

// TestCheckCertBesideLiveBastion (issue 12, finding 5): check-cert runs
// while a bastion holds the audit log's lock (it used to exit 2 trying to
// take it), writes nothing to the log, and exits 0 for an allowed use and
// 3 for a refused one.
func TestCheckCertBesideLiveBastion(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := ensureSSHKey(filepath.Join(dir, "host_key"), "host"); err != nil {
		t.Fatal(err)
	}
	ca, _, err := ensureSSHKey(filepath.Join(dir, "user_ca"), "ca")
	if err != nil {
		t.Fatal(err)
	}
	user, _, _ := ensureSSHKey(filepath.Join(dir, "admin"), "admin")
	os.WriteFile(filepath.Join(dir, "user_ca.pub"), ssh.MarshalAuthorizedKey(ca.PublicKey()), 0o644)
	mk := func(name string, exts map[string]string) string {
		cert, err := signUserCert(ca, user.PublicKey(), name, []string{"admin"}, time.Now().Add(-time.Minute), time.Now().Add(time.Hour), exts)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, name+"-cert.pub")
		os.WriteFile(p, ssh.MarshalAuthorizedKey(cert), 0o644)
		return p
	}
	withPF := mk("pf", map[string]string{"permit-port-forwarding": ""})
	without := mk("nopf", map[string]string{})
	auditPath := filepath.Join(dir, "audit.jsonl")
	conf := filepath.Join(dir, "gatehouse.toml")
	os.WriteFile(conf, []byte(fmt.Sprintf(`[bastion]
listen = "127.0.0.1:0"
host_keys = [%q]
user_ca_keys = %q
audit_log = %q

[[bastion.rule]]
principals = ["admin"]
jump = ["192.0.2.10:22"]
`, filepath.Join(dir, "host_key"), filepath.Join(dir, "user_ca.pub"), auditPath)), 0o640)
	// The live bastion's hold on its audit log.
	live, err := record.OpenAudit(auditPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	live.Log(record.ConnStart{ConnRef: record.ConnRef{ID: "x"}})
	before, _ := os.ReadFile(auditPath)

	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{withPF}, 0, "rule 0 (principals admin): jump to 192.0.2.10:22: allowed"},
		{[]string{withPF, "--to", "192.0.2.10:22", "--jump"}, 0, "jump to 192.0.2.10:22 (192.0.2.10) allowed by rule 0"},
		{[]string{withPF, "--to", "192.0.2.11:22", "--jump"}, 3, "REFUSED: no rule allows a jump to 192.0.2.11:22"},
		// A name is resolved as the live bastion resolves it (check-cert
		// once crashed here: its Server had no resolver).
		{[]string{withPF, "--to", "localhost:22", "--jump"}, 3, "REFUSED: no rule allows a jump to localhost:22"},
		{[]string{without, "--to", "192.0.2.10:22", "--jump"}, 3, "REFUSED: certificate does not permit port forwarding"},
		{[]string{without}, 3, "REFUSED: the certificate can log in but no rule lets it reach anything"},
		{[]string{withPF, "--jump"}, 2, ""},
	} {
		code, out, errs := ghRun(t, append([]string{"--config", conf, "bastion", "check-cert"}, c.args...)...)
		if code != c.code || !strings.Contains(out, c.want) {
			t.Errorf("check-cert %v: exit %d (want %d)\n%s%s", c.args, code, c.code, out, errs)
		}
	}
	if after, _ := os.ReadFile(auditPath); string(after) != string(before) {
		t.Errorf("check-cert wrote to the audit log:\n%s", after[len(before):])
	}
}
