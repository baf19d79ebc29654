package bastion

import (
	"bufio"
	"encoding/binary"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

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

// BenchmarkProxyVsJump is the recording benchmark: a PTY session
// printing `seq 1 8000000` (about 71 MB as the client receives it)
// through the recorded proxy (ssh -J, way A), through a plain jump on the
// same bastion and through an OpenSSH sshd used as jump host, in turn in
// the same run. It reports the wall-time ratios, recording bytes on disk
// per output byte and the bastion process's CPU seconds per session, and
// fails if the recording's output byte count differs from what the
// client received.
//
//	go test -run '^$' -bench ProxyVsJump -benchtime 3x ./bastion/
func BenchmarkProxyVsJump(b *testing.B) {
	const seqN = "8000000"
	e := newProxyEnv(b)
	pb := newProxyBastion(b, e, nil)
	key, cert, id := pb.admin(b)
	proxyCfg := pb.proxyConfig(b, key, cert)
	// The plain jump: the same key, a "jumper" certificate for the
	// bastion and one from the upstream CA for the target itself.
	jcert, _ := pb.sign(b, pb.ca, key, "-n", "jumper", "-V", "-1m:+1h")
	tcert := e.upCA.Sign(b, key.Pub, "-n", e.sshd.User, "-V", "-1m:+1h")
	jumpCfg := sshtest.WriteConfig(b, filepath.Join(pb.dir, "bench_jump"), pb.known+"-bench",
		sshtest.Host{Alias: "bastion", HostName: "127.0.0.1", Port: pb.port, User: "jumper", IdentityFiles: []string{key.Priv}, CertificateFiles: []string{jcert}},
		sshtest.Host{Alias: "web1", HostName: "127.0.0.1", Port: e.sshd.Port, User: e.sshd.User, IdentityFiles: []string{key.Priv}, CertificateFiles: []string{tcert}, Extra: []string{"ProxyJump bastion"}},
	)
	// An OpenSSH jump host without recording, as the reference.
	ojump := sshtest.StartSSHD(b, sshtest.SSHDOptions{AuthorizedKeys: []string{key.Pub}})
	opensshCfg := sshtest.WriteConfig(b, filepath.Join(pb.dir, "bench_openssh"), pb.known+"-bench-o",
		sshtest.Host{Alias: "ojump", HostName: "127.0.0.1", Port: ojump.Port, User: ojump.User, IdentityFiles: []string{key.Priv}},
		sshtest.Host{Alias: "web1", HostName: "127.0.0.1", Port: e.sshd.Port, User: e.sshd.User, IdentityFiles: []string{key.Priv}, CertificateFiles: []string{tcert}, Extra: []string{"ProxyJump ojump"}},
	)
	run := func(cfg string) (time.Duration, int64, time.Duration) {
		cpu0 := processCPU(b)
		start := time.Now()
		cmd := exec.Command("ssh", "-F", cfg, "-tt", "web1", "seq 1 "+seqN)
		out, err := cmd.StdoutPipe()
		if err != nil {
			b.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		n, _ := io.Copy(io.Discard, out)
		if err := cmd.Wait(); err != nil {
			b.Fatalf("ssh: %v", err)
		}
		return time.Since(start), n, processCPU(b) - cpu0
	}
	var wallP, wallJ, wallO, cpuP, cpuJ time.Duration
	var outBytes, diskBytes int64
	sessions := 0
	for b.Loop() {
		w, n, c := run(proxyCfg)
		wallP, cpuP = wallP+w, cpuP+c
		sessions++
		// The recording of this session: the newest proxy.end of id.
		var dir string
		deadline := time.Now().Add(30 * time.Second)
		for dir == "" {
			seen := 0
			for _, ev := range pb.events(b) {
				if ev.str("event") == "proxy.end" && ev.str("key_id") == id {
					seen++
					if seen == sessions {
						dir = filepath.Join(pb.recDir, ev.str("recording"))
					}
				}
			}
			if dir == "" && time.Now().After(deadline) {
				b.Fatal("no proxy.end for the benchmark session")
			}
			time.Sleep(20 * time.Millisecond)
		}
		if got := ttyrecLen(b, filepath.Join(dir, "ch00.ttyrec")); got != n {
			b.Fatalf("recording holds %d output bytes, the client received %d", got, n)
		}
		outBytes += n
		diskBytes += dirSize(b, dir)

		w, n2, c := run(jumpCfg)
		wallJ, cpuJ = wallJ+w, cpuJ+c
		if n2 != n {
			b.Logf("jump output %d bytes, proxy %d", n2, n)
		}
		w, _, _ = run(opensshCfg)
		wallO += w
	}
	k := float64(sessions)
	b.ReportMetric(wallP.Seconds()/k, "proxy-s/op")
	b.ReportMetric(wallJ.Seconds()/k, "jump-s/op")
	b.ReportMetric(wallO.Seconds()/k, "openssh-jump-s/op")
	b.ReportMetric(wallP.Seconds()/wallJ.Seconds(), "wall-ratio-vs-jump")
	b.ReportMetric(wallP.Seconds()/wallO.Seconds(), "wall-ratio-vs-openssh")
	b.ReportMetric(float64(outBytes)/k/1e6, "MB-out/op")
	b.ReportMetric(float64(diskBytes)/float64(outBytes), "disk-bytes/output-byte")
	b.ReportMetric(cpuP.Seconds()/k, "proxy-cpu-s/op")
	b.ReportMetric(cpuJ.Seconds()/k, "jump-cpu-s/op")
}

// processCPU is the user+system CPU time this process (the bastion runs
// in it) has used.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// ttyrecLen sums the payload lengths of a ttyrec file.
func ttyrecLen(b *testing.B, path string) int64 {
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 1<<20)
	var total int64
	var hdr [12]byte
	for {
		if _, err := io.ReadFull(r, hdr[:]); err == io.EOF {
			return total
		} else if err != nil {
			b.Fatalf("%s: %v", path, err)
		}
		n := int64(binary.LittleEndian.Uint32(hdr[8:]))
		if _, err := io.CopyN(io.Discard, r, n); err != nil {
			b.Fatalf("%s: truncated record: %v", path, err)
		}
		total += n
	}
}

func dirSize(b *testing.B, dir string) int64 {
	ents, err := os.ReadDir(dir)
	if err != nil {
		b.Fatal(err)
	}
	var n int64
	for _, e := range ents {
		if fi, err := e.Info(); err == nil {
			n += fi.Size()
		}
	}
	return n
}
