package certauth

import (
	"context"
	"net"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// startSSHD runs the real sshd on a loopback port with a cert-only
// configuration equivalent to ours (TrustedUserCAKeys + RevokedKeys, no
// authorized_keys) and returns its port.
func startSSHD(t *testing.T, f *fixture, caFile, krl string) int {
	t.Helper()
	hostKey := f.key("ssh_host_ed25519_key", "ed25519", 0)
	for attempt := range 3 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		cfg := f.write("sshd_config."+strconv.Itoa(attempt), strings.Join([]string{
			"ListenAddress 127.0.0.1:" + strconv.Itoa(port),
			"HostKey " + hostKey,
			"PidFile none",
			"TrustedUserCAKeys " + caFile,
			"RevokedKeys " + krl,
			"AuthorizedKeysFile none",
			"PubkeyAuthentication yes",
			"PasswordAuthentication no",
			"KbdInteractiveAuthentication no",
			"PermitRootLogin prohibit-password",
			"UsePAM no",
			"StrictModes no",
			"MaxStartups 100",
			"LogLevel VERBOSE",
		}, "\n")+"\n")
		cmd := exec.Command("/usr/sbin/sshd", "-D", "-e", "-f", cfg)
		var log strings.Builder
		cmd.Stdout, cmd.Stderr = &log, &log
		if err := cmd.Start(); err != nil {
			t.Fatalf("start sshd: %v", err)
		}
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		t.Cleanup(func() {
			cmd.Process.Kill()
			<-done
			if t.Failed() {
				t.Logf("sshd log:\n%s", log.String())
			}
		})
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
			select {
			case <-done:
				t.Logf("sshd exited early (attempt %d):\n%s", attempt, log.String())
			default:
				if c, err := net.DialTimeout("tcp", l.Addr().String(), time.Second); err == nil {
					c.Close()
					return port
				}
				time.Sleep(50 * time.Millisecond)
				continue
			}
			break
		}
	}
	t.Fatal("sshd did not start")
	return 0
}

// sshdAccepts reports whether the real ssh client, offering only cert (and
// its private key), can log in to the sshd at port as login.
func sshdAccepts(t *testing.T, port int, key, cert, login string) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ssh", "-F", "/dev/null",
		"-i", key, "-o", "CertificateFile="+cert, "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
		"-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
		"-o", "PreferredAuthentications=publickey", "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR",
		"-p", strconv.Itoa(port), login+"@127.0.0.1", "true")
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("ssh timed out: %s", out)
	}
	if err != nil && !strings.Contains(string(out), "Permission denied") {
		t.Fatalf("ssh failed for another reason than authentication: %v: %s", err, out)
	}
	return err == nil
}

// TestMatchesRealSSHD offers the same certificates to the real sshd and to
// Check. Where the designs agree (OpenSSH's own refusals) the decisions must
// be equal; the deliberate differences (we are stricter on lifetime, RSA size
// and force-command, and allow clock skew) are asserted explicitly.
func TestMatchesRealSSHD(t *testing.T) {
	f := newFixture(t)
	for _, bin := range []string{"/usr/sbin/sshd", "ssh"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s not installed (Debian packages openssh-server, openssh-client)", bin)
		}
	}
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	login := me.Username
	ca := f.key("ca", "ed25519", 0)
	rsaCA := f.key("rsa-ca", "rsa", 3072)
	otherCA := f.key("other-ca", "ed25519", 0)
	userKey := f.key("user", "ed25519", 0)
	rsa2048 := f.key("rsa2048", "rsa", 2048)
	caFile := f.write("trusted_user_ca", f.read(ca+".pub")+f.read(rsaCA+".pub"))
	spec := f.write("krl.spec", "serial: 66\nid: revoked-key-id\n")
	krl := filepath.Join(f.dir, "revoked.krl")
	f.keygen("-k", "-f", krl, "-s", ca+".pub", spec)
	port := startSSHD(t, f, caFile, krl)
	chk, err := New(Config{UserCAKeys: caFile, RevokedKeys: krl, MaxCertLifetime: 24 * time.Hour, ClockSkew: 2 * time.Minute}, time.Now, nil)
	if err != nil {
		t.Fatal(err)
	}
	p := func(extra ...string) []string {
		return append([]string{"-I", "id", "-n", login + ",other", "-V", "-5m:+1h", "-z", "1"}, extra...)
	}
	cases := []struct {
		name        string
		ca, key     string
		args        []string
		sshd, ours  bool
		whyDiverges string
	}{
		{"valid", ca, userKey, p(), true, true, ""},
		{"valid rsa-sha2-512 CA signature", rsaCA, userKey, p("-t", "rsa-sha2-512"), true, true, ""},
		{"ssh-rsa CA signature", rsaCA, userKey, p("-t", "ssh-rsa"), false, false, ""},
		{"login not a principal", ca, userKey, []string{"-I", "id", "-n", "somebody-else", "-V", "-5m:+1h"}, false, false, ""},
		{"no principals", ca, userKey, []string{"-I", "id", "-V", "-5m:+1h"}, false, false, ""},
		{"expired", ca, userKey, []string{"-I", "id", "-n", login, "-V", "-2h:-1m"}, false, false, ""},
		{"not yet valid", ca, userKey, []string{"-I", "id", "-n", login, "-V", "+1h:+2h"}, false, false, ""},
		{"untrusted CA", otherCA, userKey, p(), false, false, ""},
		{"host certificate", ca, userKey, p("-h"), false, false, ""},
		{"unknown critical option", ca, userKey, p("-O", "critical:foo@example.org=bar"), false, false, ""},
		{"source-address elsewhere", ca, userKey, p("-O", "source-address=10.0.0.0/8"), false, false, ""},
		{"source-address here", ca, userKey, p("-O", "source-address=10.0.0.0/8,127.0.0.1/32"), true, true, ""},
		{"revoked serial", ca, userKey, []string{"-I", "id", "-n", login, "-V", "-5m:+1h", "-z", "66"}, false, false, ""},
		{"revoked key id", ca, userKey, []string{"-I", "revoked-key-id", "-n", login, "-V", "-5m:+1h", "-z", "67"}, false, false, ""},
		{"serial revoked under another CA", rsaCA, userKey, []string{"-I", "x", "-n", login, "-V", "-5m:+1h", "-z", "66"}, true, true, ""},
		{"never expires", ca, userKey, []string{"-I", "id", "-n", login, "-V", "always:forever"}, true, false, "no lifetime cap in sshd"},
		{"lifetime 48h", ca, userKey, []string{"-I", "id", "-n", login, "-V", "-1m:+48h"}, true, false, "no lifetime cap in sshd"},
		{"valid in one minute", ca, userKey, []string{"-I", "id", "-n", login, "-V", "+1m:+1h"}, false, true, "we allow clock skew on ValidAfter"},
		{"force-command", ca, userKey, p("-O", "force-command=true"), true, false, "the bastion runs no commands"},
		{"RSA 2048 user key", ca, rsa2048, p(), true, false, "RequiredRSASize is 1024 in sshd 9.2; we require 3072"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			certPath := f.cert(tc.ca, tc.key, tc.args...)
			sshd := sshdAccepts(t, port, tc.key, certPath, login)
			_, err := chk.Check(login, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 50000}, loadKey(t, certPath))
			ours := err == nil
			if sshd != tc.sshd {
				t.Errorf("sshd accepted=%v, expected %v", sshd, tc.sshd)
			}
			if ours != tc.ours {
				t.Errorf("Check accepted=%v (%v), expected %v", ours, err, tc.ours)
			}
			if tc.whyDiverges == "" && sshd != ours {
				t.Errorf("sshd and Check disagree: sshd %v, Check %v", sshd, err)
			}
		})
	}
}
