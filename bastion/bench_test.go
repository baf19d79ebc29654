package bastion

import (
	"io"
	"os/exec"
	"path/filepath"
	"testing"

	"gatehouse/bastion/internal/sshtest"
)

// BenchmarkJumpSetup measures a complete `ssh -J bastion target true` with
// the real client and a real sshd target: process start, two handshakes,
// certificate checks, policy, dial and relay.
//
//	go test -run '^$' -bench JumpSetup -benchtime 50x ./bastion/
func BenchmarkJumpSetup(b *testing.B) {
	f := newFixture(b, nil)
	key, cert, _ := f.userCert(b, f.ca, "-n", "admin", "-V", "-1m:+1h")
	cfg := f.jumpConfig(b, key, cert, "admin")
	if r := sshtest.SSH(b, "-F", cfg, "target", "true"); r.Exit != 0 {
		b.Fatal(r)
	}
	for b.Loop() {
		if r := sshtest.SSH(b, "-F", cfg, "target", "true"); r.Exit != 0 {
			b.Fatal(r)
		}
	}
}

// BenchmarkJumpThroughput streams 256 MiB from the target through the jump
// with the given cipher on both hops (the client decrypts twice, so this
// is an end-to-end figure, not the bastion's alone).
//
//	go test -run '^$' -bench JumpThroughput -benchtime 3x ./bastion/
func BenchmarkJumpThroughput(b *testing.B) {
	f := newFixture(b, nil)
	key, cert, _ := f.userCert(b, f.ca, "-n", "admin", "-V", "-1m:+1h")
	for _, cipher := range []string{"aes128-gcm@openssh.com", "chacha20-poly1305@openssh.com"} {
		b.Run(cipher, func(b *testing.B) {
			// Both hops: command-line options would reach only the target.
			ciph := []string{"Ciphers " + cipher}
			cfg := sshtest.WriteConfig(b, filepath.Join(f.dir, "bench_"+cipher), f.known,
				sshtest.Host{Alias: "bastion", HostName: "127.0.0.1", Port: f.port, User: "admin", IdentityFiles: []string{key.Priv}, CertificateFiles: []string{cert}, Extra: ciph},
				sshtest.Host{Alias: "target", HostName: "127.0.0.1", Port: f.sshd.Port, User: f.sshd.User, IdentityFiles: []string{f.targetKey.Priv}, Extra: append(ciph, "ProxyJump bastion")},
			)
			const size = 256 << 20
			b.SetBytes(size)
			for b.Loop() {
				cmd := exec.Command("ssh", "-F", cfg, "target", "head -c 268435456 /dev/zero")
				out, err := cmd.StdoutPipe()
				if err != nil {
					b.Fatal(err)
				}
				if err := cmd.Start(); err != nil {
					b.Fatal(err)
				}
				n, _ := io.Copy(io.Discard, out)
				if err := cmd.Wait(); err != nil || n != size {
					b.Fatalf("copied %d bytes: %v", n, err)
				}
			}
		})
	}
}
