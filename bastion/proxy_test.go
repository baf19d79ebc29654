package bastion

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"gatehouse/bastion/internal/sshtest"
	"gatehouse/bastion/policy"
	"gatehouse/bastion/record"
)

// proxyEnv is shared by the recording proxy tests: a real sshd target
// that trusts only the upstream CA, the upstream and host CAs, and the
// recording key.
type proxyEnv struct {
	dir        string
	sshd       *sshtest.SSHD
	upCA       *sshtest.CA
	hostCA     *sshtest.CA
	recKey     string
	recPub     gossh.PublicKey
	upKnown    string
	clientKnow string // client known_hosts: @cert-authority for the host CA
}

func newProxyEnv(t testing.TB) *proxyEnv {
	t.Helper()
	sshtest.Require(t, "ssh", "sshd", "ssh-keygen")
	dir := t.TempDir()
	e := &proxyEnv{dir: dir}
	e.upCA = sshtest.NewCA(t, dir, "ed25519")
	e.hostCA = sshtest.NewCA(t, dir, "ed25519")
	e.recKey = filepath.Join(dir, "recording_key")
	if err := record.GenerateSigningKey(e.recKey); err != nil {
		t.Fatal(err)
	}
	pubData, err := os.ReadFile(e.recKey + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	if e.recPub, _, _, _, err = gossh.ParseAuthorizedKey(pubData); err != nil {
		t.Fatal(err)
	}
	e.sshd = sshtest.StartSSHD(t, sshtest.SSHDOptions{TrustedUserCAKeys: e.upCA.Pub, Extra: []string{"Subsystem sftp internal-sftp", "AcceptEnv LANG LC_* TERM GH_*"}})
	e.upKnown = filepath.Join(dir, "upstream_known_hosts")
	writeFile(t, e.upKnown, []byte(fmt.Sprintf("[127.0.0.1]:%d %s", e.sshd.Port, catFiles(t, e.sshd.HostKey.Pub))))
	e.clientKnow = filepath.Join(dir, "client_known_hosts")
	writeFile(t, e.clientKnow, []byte("@cert-authority * "+string(catFiles(t, e.hostCA.Pub))))
	return e
}

// target is the sshd as a proxy destination entry.
func (e *proxyEnv) target() string { return "127.0.0.1:" + strconv.Itoa(e.sshd.Port) }

// proxyBastion is one bastion with the recording proxy configured.
type proxyBastion struct {
	*fixture
	env    *proxyEnv
	recDir string
}

// newProxyBastion starts a bastion whose "admin" principal may reach the
// sshd through the recording proxy as the sshd's user, and whose "jumper"
// principal may jump there.
func newProxyBastion(t testing.TB, e *proxyEnv, mut func(c *Config)) *proxyBastion {
	t.Helper()
	dir := t.TempDir()
	sh := sharedKeys(t)
	f := &fixture{dir: dir, known: e.clientKnow, ca: sh.ca, sshd: e.sshd}
	f.caFile = filepath.Join(dir, "user_ca.pub")
	writeFile(t, f.caFile, catFiles(t, f.ca.Pub))
	hostKey := sshtest.UserKey(t, dir, "ed25519")
	f.auditPath = filepath.Join(dir, "audit.jsonl")
	b := &proxyBastion{fixture: f, env: e, recDir: filepath.Join(dir, "recordings")}
	f.cfg = Config{
		Listen:             "127.0.0.1:0",
		HostKeys:           []string{hostKey.Priv},
		UserCAKeys:         f.caFile,
		AuditLog:           f.auditPath,
		PenaltyFailures:    -1,
		PenaltyWindow:      Duration{100 * time.Millisecond},
		UpstreamCAKey:      e.upCA.Priv,
		UpstreamKnownHosts: e.upKnown,
		HostCAKey:          e.hostCA.Priv,
		RecordingsDir:      b.recDir,
		RecordingKey:       e.recKey,
		RecordInput:        true,
		MinFreeSpace:       1,
		Rules: []policy.Rule{
			{Principals: []string{"admin"}, Proxy: []string{e.target()}, Logins: []string{e.sshd.User}},
			{Principals: []string{"jumper"}, Jump: []string{e.target()}},
		},
	}
	if mut != nil {
		mut(&f.cfg)
	}
	b.recDir = f.cfg.RecordingsDir
	f.start(t)
	return b
}

// admin makes a user key with an "admin" certificate (unique key id).
func (b *proxyBastion) admin(t testing.TB, opts ...string) (sshtest.Key, string, string) {
	t.Helper()
	return b.userCert(t, b.ca, append([]string{"-n", "admin", "-V", "-1m:+1h"}, opts...)...)
}

// proxyConfig (way A) writes an ssh_config in which "web1" is the sshd
// reached with ssh -J through the bastion, using the admin's key and
// certificate on both hops.
func (b *proxyBastion) proxyConfig(t testing.TB, key sshtest.Key, cert string) string {
	t.Helper()
	path := filepath.Join(b.dir, fmt.Sprintf("ssh_config_%d", idSeq.Add(1)))
	known := filepath.Join(b.dir, fmt.Sprintf("known_%d", idSeq.Add(1)))
	writeFile(t, known, catFiles(t, b.env.clientKnow))
	return sshtest.WriteConfig(t, path, known,
		sshtest.Host{Alias: "bastion", HostName: "127.0.0.1", Port: b.port, User: "admin", IdentityFiles: []string{key.Priv}, CertificateFiles: []string{cert}},
		sshtest.Host{Alias: "web1", HostName: "127.0.0.1", Port: b.env.sshd.Port, User: b.env.sshd.User, IdentityFiles: []string{key.Priv}, CertificateFiles: []string{cert}, Extra: []string{"ProxyJump bastion", "StrictHostKeyChecking yes"}},
	)
}

// scpUpload copies data with the real scp (extra options such as "-O"
// first) through the recording proxy to name on the target, checks that
// it arrived byte for byte, and returns the session's recording directory.
func (b *proxyBastion) scpUpload(t *testing.T, data []byte, name string, opts ...string) string {
	t.Helper()
	sshtest.Require(t, "scp")
	src := filepath.Join(b.dir, name+".src")
	writeFile(t, src, data)
	dst := filepath.Join(b.dir, name)
	key, cert, id := b.admin(t)
	args := append(append([]string{}, opts...), "-F", b.proxyConfig(t, key, cert), "-q", src, "web1:"+dst)
	if out, err := runCmd(t, "scp", args...); err != nil {
		t.Fatalf("scp %v: %v\n%s\naudit: %v", opts, err, out, b.events(t))
	}
	if got, err := os.ReadFile(dst); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("file copied with scp %v differs (%d of %d bytes, %v)", opts, len(got), len(data), err)
	}
	dir, _ := b.recordingOf(t, id)
	return dir
}

// recordingOf waits for the proxy.end of the session with key id id and
// returns its recording directory.
func (b *proxyBastion) recordingOf(t testing.TB, id string) (string, event) {
	t.Helper()
	e := b.waitEvent(t, "proxy.end", map[string]string{"key_id": id})
	return filepath.Join(b.recDir, e.str("recording")), e
}

// ttyrecPayload concatenates the payloads of a ttyrec file.
func ttyrecPayload(t testing.TB, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []byte
	for len(data) > 0 {
		if len(data) < 12 {
			t.Fatalf("%s: truncated ttyrec header", path)
		}
		n := binary.LittleEndian.Uint32(data[8:12])
		if uint64(len(data)-12) < uint64(n) {
			t.Fatalf("%s: truncated ttyrec record", path)
		}
		out = append(out, data[12:12+n]...)
		data = data[12+n:]
	}
	return out
}

// verifyWithSSHKeygen checks the manifest signature with stock OpenSSH.
func (b *proxyBastion) verifyWithSSHKeygen(t testing.TB, dir string) {
	t.Helper()
	allowed := filepath.Join(b.dir, fmt.Sprintf("allowed_%d", idSeq.Add(1)))
	writeFile(t, allowed, []byte(record.AllowedSigners(b.env.recPub)+"\n"))
	cmd := exec.Command("ssh-keygen", "-Y", "verify", "-f", allowed, "-I", "gatehouse", "-n", record.RecordingNamespace, "-s", filepath.Join(dir, record.SignatureName))
	m, err := os.Open(filepath.Join(dir, record.ManifestName))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	cmd.Stdin = m
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen -Y verify: %v\n%s", err, out)
	}
	if err := record.Verify(dir, b.env.recPub); err != nil {
		t.Fatalf("record.Verify: %v", err)
	}
}

// runCmd runs a command with a time limit and stdin from /dev/null.
func runCmd(t testing.TB, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(out), err
}

// TestProxy: the recording proxy with real OpenSSH peers, both ways in.
func TestProxy(t *testing.T) {
	e := newProxyEnv(t)
	b := newProxyBastion(t, e, nil)

	t.Run("jump-shell", func(t *testing.T) {
		t.Parallel()
		sshtest.Require(t, "asciinema", "script")
		key, cert, id := b.admin(t)
		cfg := b.proxyConfig(t, key, cert)
		cmd := exec.Command("ssh", "-F", cfg, "-tt", "web1")
		cmd.Stdin = strings.NewReader("echo proxied-$((6*7))\nexit 3\n")
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.ExitCode() != 3 {
			t.Fatalf("want exit 3, got %v\nstdout: %s\nstderr: %s\nsshd: %s", err, stdout.String(), stderr.String(), e.sshd.Log())
		}
		if !strings.Contains(stdout.String(), "proxied-42") {
			t.Fatalf("output missing: %q", stdout.String())
		}
		dir, end := b.recordingOf(t, id)
		if end.str("reason") != "closed by client" {
			t.Errorf("proxy.end reason %q", end.str("reason"))
		}
		start := b.waitEvent(t, "proxy.start", map[string]string{"key_id": id})
		if start.str("target_login") != e.sshd.User || start.str("upstream_serial") == "" || start.str("way") != "jump" {
			t.Errorf("proxy.start fields: %v", start)
		}
		if got := ttyrecPayload(t, filepath.Join(dir, "ch00.ttyrec")); !bytes.Equal(got, stdout.Bytes()) {
			t.Errorf("ttyrec (%d bytes) differs from what the client received (%d bytes)", len(got), stdout.Len())
		}
		cast := filepath.Join(dir, "ch00.cast")
		castData, err := os.ReadFile(cast)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(castData), `"m", "exit-status 3"`) {
			t.Errorf("cast has no exit-status marker:\n%s", castData)
		}
		if !regexp.MustCompile(`(?m)^\[[0-9.]+, "i", "[^\n]*exit 3`).Match(castData) {
			t.Errorf("record_input is on but the cast has no input events:\n%s", castData)
		}
		if out, err := runCmd(t, "asciinema", "play", "-i", "0.1", "-s", "100", cast); err != nil {
			t.Fatalf("asciinema play: %v\n%s", err, out)
		}
		out, err := runCmd(t, "script", "-qec", "asciinema cat "+cast, "/dev/null")
		if err != nil || !strings.Contains(out, "proxied-42") {
			t.Fatalf("asciinema cat: %v\n%s", err, out)
		}
		b.verifyWithSSHKeygen(t, dir)
	})

	t.Run("check-cert", func(t *testing.T) {
		t.Parallel()
		_, cert, _ := b.admin(t)
		login := e.sshd.User + "@" + e.target()
		rep, ok := b.srv.CheckCert(cert, login, "")
		if !ok || !strings.Contains(strings.Join(rep, "\n"), `as principal "admin"`) {
			t.Errorf("check-cert %s: ok=%t\n%s", login, ok, strings.Join(rep, "\n"))
		}
		for _, bad := range []string{"nobody@" + e.target(), e.sshd.User + "@127.0.0.1:1", "a@b@c"} {
			if rep, ok := b.srv.CheckCert(cert, bad, ""); ok || !strings.Contains(strings.Join(rep, "\n"), "proxy-denied") {
				t.Errorf("check-cert %s: ok=%t\n%s", bad, ok, strings.Join(rep, "\n"))
			}
		}
	})

	t.Run("login-exec", func(t *testing.T) {
		t.Parallel()
		key, cert, id := b.admin(t)
		login := fmt.Sprintf("%s@%s", e.sshd.User, e.target())
		r := sshtest.SSH(t, append(sshtest.ClientOptions(b.known+"-B", key.Priv, cert), "-p", strconv.Itoa(b.port), login+"@127.0.0.1", "echo way-b; exit 4")...)
		if r.Exit != 4 || r.Stdout != "way-b\n" {
			t.Fatalf("want way-b and exit 4, got %s\nsshd: %s", r, e.sshd.Log())
		}
		dir, _ := b.recordingOf(t, id)
		b.waitEvent(t, "auth", map[string]string{"key_id": id, "result": "accepted", "target_login": e.sshd.User})
		if got := ttyrecPayload(t, filepath.Join(dir, "ch00.ttyrec")); string(got) != "way-b\n" {
			t.Errorf("ttyrec %q", got)
		}
		b.verifyWithSSHKeygen(t, dir)
	})

	t.Run("login-resize", func(t *testing.T) {
		t.Parallel()
		key, cert, id := b.admin(t)
		signer := loadSigner(t, key.Priv, cert)
		cc := &gossh.ClientConfig{
			User:            e.sshd.User + "@" + e.target(),
			Auth:            []gossh.AuthMethod{gossh.PublicKeys(signer)},
			HostKeyCallback: gossh.InsecureIgnoreHostKey(),
			Timeout:         10 * time.Second,
		}
		c, err := dialSSH(b.port, cc)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		s, err := c.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		if err := s.RequestPty("xterm", 24, 80, gossh.TerminalModes{}); err != nil {
			t.Fatal(err)
		}
		in, _ := s.StdinPipe()
		var out syncBuf
		s.Stdout = &out
		if err := s.Shell(); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(in, "stty size; echo first-$((1+1))\n")
		waitFor(t, &out, "first-2")
		if err := s.WindowChange(30, 100); err != nil {
			t.Fatal(err)
		}
		// x/crypto hands a channel's requests and its data to different
		// goroutines, so the proxy cannot keep their wire order: keystrokes
		// typed right after a resize may reach the target before it. Ask
		// again until the new size shows (or waitFor gives up).
		for i := 0; !strings.Contains(out.String(), "30 100"); i++ {
			mark := fmt.Sprintf("size-%d", i)
			fmt.Fprintf(in, "stty size; echo %s-$((0))\n", mark)
			waitFor(t, &out, mark+"-0")
			if i == 50 {
				t.Fatalf("the target never saw the new size:\n%s", out.String())
			}
		}
		fmt.Fprintf(in, "exit 3\n")
		err = s.Wait()
		if ee, ok := err.(*gossh.ExitError); !ok || ee.ExitStatus() != 3 {
			t.Fatalf("want exit 3, got %v\n%s", err, out.String())
		}
		if !strings.Contains(out.String(), "24 80") || !strings.Contains(out.String(), "30 100") {
			t.Fatalf("sizes not seen by the target:\n%s", out.String())
		}
		c.Close()
		dir, _ := b.recordingOf(t, id)
		cast, err := os.ReadFile(filepath.Join(dir, "ch00.cast"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(cast, []byte(`"r", "100x30"`)) {
			t.Errorf("no resize event in the cast:\n%s", cast)
		}
		if got := ttyrecPayload(t, filepath.Join(dir, "ch00.ttyrec")); string(got) != out.String() {
			t.Errorf("ttyrec differs from the client's output:\n%q\n%q", got, out.String())
		}
		b.verifyWithSSHKeygen(t, dir)
	})

	t.Run("binary-exec", func(t *testing.T) {
		t.Parallel()
		all := make([]byte, 0, 512)
		for i := range 512 {
			all = append(all, byte(i))
		}
		src := filepath.Join(b.dir, "bytes.bin")
		writeFile(t, src, all)
		key, cert, id := b.admin(t)
		cfg := b.proxyConfig(t, key, cert)
		cmd := exec.Command("ssh", "-F", cfg, "web1", "cat", src)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("ssh: %v\n%s", err, stderr.String())
		}
		if !bytes.Equal(stdout.Bytes(), all) {
			t.Fatalf("binary output changed: got %d bytes", stdout.Len())
		}
		dir, _ := b.recordingOf(t, id)
		if got := ttyrecPayload(t, filepath.Join(dir, "ch00.ttyrec")); !bytes.Equal(got, all) {
			t.Fatalf("ttyrec is not byte-exact: %d bytes", len(got))
		}
		b.verifyWithSSHKeygen(t, dir)
	})

	t.Run("scp-sftp", func(t *testing.T) {
		t.Parallel()
		dir := b.scpUpload(t, bytes.Repeat([]byte("gatehouse scp test\x00\xff"), 50000), "uploaded.bin")
		ev, err := os.ReadFile(filepath.Join(dir, record.EventsFile))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(ev), `"sftp"`) || !strings.Contains(string(ev), "uploaded.bin") {
			t.Errorf("events.jsonl lists no sftp file operation on uploaded.bin:\n%s", ev)
		}
		if _, err := os.Stat(filepath.Join(dir, "ch00.ttyrec")); err == nil {
			t.Errorf("sftp was byte-recorded")
		}
		b.verifyWithSSHKeygen(t, dir)
	})

	t.Run("scp-legacy", func(t *testing.T) {
		t.Parallel()
		// -O: the old protocol, an exec of "scp -t" on the target.
		dir := b.scpUpload(t, bytes.Repeat([]byte("legacy scp \x00\x01\xfe\xff"), 20000), "legacy-dst.bin", "-O")
		ev, err := os.ReadFile(filepath.Join(dir, record.EventsFile))
		if err != nil || !strings.Contains(string(ev), "scp -t") {
			t.Errorf("events.jsonl does not show the scp command: %v\n%s", err, ev)
		}
		b.verifyWithSSHKeygen(t, dir)
	})

	t.Run("no-permits", func(t *testing.T) {
		t.Parallel()
		// -O clear: no permit-pty and no permit-port-forwarding. The
		// recorded proxy needs no forwarding permit (nothing is forwarded;
		// the bastion terminates SSH), but the pty is refused.
		key, cert, id := b.admin(t, "-O", "clear")
		cfg := b.proxyConfig(t, key, cert)
		if r := sshtest.SSH(t, "-F", cfg, "web1", "echo no-forwarding-permit-needed"); r.Exit != 0 || r.Stdout != "no-forwarding-permit-needed\n" {
			t.Fatalf("proxied exec with a -O clear certificate: %s", r)
		}
		b.recordingOf(t, id)
		key, cert, id = b.admin(t, "-O", "clear")
		cfg = b.proxyConfig(t, key, cert)
		// ssh -tt gives up when the pty is refused.
		if r := sshtest.SSH(t, "-F", cfg, "-tt", "web1", "tty"); r.Exit == 0 || !strings.Contains(r.Stderr, "PTY allocation request failed") {
			t.Fatalf("pty granted without permit-pty: %s", r)
		}
		dir, _ := b.recordingOf(t, id)
		ev, err := os.ReadFile(filepath.Join(dir, record.EventsFile))
		if err != nil || !strings.Contains(string(ev), "does not permit a pty") {
			t.Errorf("pty refusal not in events.jsonl: %v\n%s", err, ev)
		}
	})

	t.Run("direct-to-target-refused", func(t *testing.T) {
		t.Parallel()
		key, cert, _ := b.userCert(t, b.ca, "-n", "admin,"+e.sshd.User, "-V", "-1m:+1h")
		r := sshtest.SSH(t, append(sshtest.ClientOptions(b.known+"-D", key.Priv, cert), "-p", strconv.Itoa(e.sshd.Port), e.sshd.User+"@127.0.0.1", "true")...)
		if r.Exit != 255 || !strings.Contains(r.Stderr, "Permission denied") {
			t.Fatalf("the target accepted the user certificate: %s", r)
		}
	})

	t.Run("wrong-login-refused", func(t *testing.T) {
		t.Parallel()
		key, cert, id := b.admin(t)
		cfg := b.proxyConfig(t, key, cert)
		r := sshtest.SSH(t, "-F", cfg, "-l", "nobody", "web1", "true")
		if r.Exit != 255 {
			t.Fatalf("login outside the rule's logins accepted: %s", r)
		}
		ev := b.waitEvent(t, "forward.denied", map[string]string{"key_id": id})
		if !strings.Contains(ev.str("reason"), "login-not-allowed") && !strings.Contains(ev.str("reason"), "not in the logins") {
			t.Errorf("reason %q", ev.str("reason"))
		}
		key2, cert2, id2 := b.admin(t)
		r = sshtest.SSH(t, append(sshtest.ClientOptions(b.known+"-W", key2.Priv, cert2), "-p", strconv.Itoa(b.port), "nobody@"+e.target()+"@127.0.0.1", "true")...)
		if r.Exit != 255 {
			t.Fatalf("login@host with a login outside the rule accepted: %s", r)
		}
		ev = b.waitEvent(t, "auth", map[string]string{"key_id": id2, "result": "refused"})
		if ev.str("reason") != "proxy-denied" {
			t.Errorf("auth reason %q", ev.str("reason"))
		}
	})

	t.Run("inner-forwarding-refused", func(t *testing.T) {
		t.Parallel()
		key, cert, id := b.admin(t)
		cfg := b.proxyConfig(t, key, cert)
		r := sshtest.SSH(t, "-F", cfg, "-o", "ExitOnForwardFailure=yes", "-R", "0:127.0.0.1:9", "web1", "true")
		if r.Exit != 255 || !strings.Contains(r.Stderr, "remote port forwarding failed") {
			t.Fatalf("want -R refused on the proxied connection, got %s", r)
		}
		b.waitEvent(t, "request.denied", map[string]string{"key_id": id, "request": "tcpip-forward"})
		key, cert, id = b.admin(t)
		// -L opens a direct-tcpip channel only when used: open one with
		// x/crypto on the inner connection instead.
		signer := loadSigner(t, key.Priv, cert)
		cl, err := innerClient(b.outerClient(t, signer), b.hostCAChecker(t), e.target(), e.sshd.User, signer)
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		if fc, err := cl.Dial("tcp", "127.0.0.1:9"); err == nil {
			fc.Close()
			t.Fatal("direct-tcpip on the proxied connection was accepted")
		}
		b.waitEvent(t, "request.denied", map[string]string{"key_id": id, "request": "channel:direct-tcpip"})
	})

	t.Run("inner-login-needs-outer-key", func(t *testing.T) {
		t.Parallel()
		key, cert, id := b.admin(t)
		other, otherCert, _ := b.admin(t)
		c := b.outerClient(t, loadSigner(t, key.Priv, cert))
		inner := func(s gossh.Signer) error {
			cl, err := innerClient(c, b.hostCAChecker(t), e.target(), e.sshd.User, s)
			if err != nil {
				return err
			}
			defer cl.Close()
			out, err := func() ([]byte, error) {
				s, err := cl.NewSession()
				if err != nil {
					return nil, err
				}
				defer s.Close()
				return s.Output("echo inner-ok")
			}()
			if err == nil && string(out) != "inner-ok\n" {
				err = fmt.Errorf("output %q", out)
			}
			return err
		}
		if err := inner(loadSigner(t, other.Priv, otherCert)); err == nil || !strings.Contains(err.Error(), "unable to authenticate") {
			t.Fatalf("inner login with another admin's key: %v", err)
		}
		if err := inner(loadSigner(t, key.Priv, cert)); err != nil {
			t.Fatalf("inner login with the outer key: %v", err)
		}
		ev := b.waitEvent(t, "forward.denied", map[string]string{"key_id": id})
		if !strings.Contains(ev.str("reason"), "key of the certificate") {
			t.Errorf("reason %q", ev.str("reason"))
		}
		b.waitEvent(t, "proxy.start", map[string]string{"key_id": id})
	})
}

// outerClient logs in to the bastion as "admin" with x/crypto.
func (b *proxyBastion) outerClient(t testing.TB, s gossh.Signer) *gossh.Client {
	t.Helper()
	c, err := dialSSH(b.port, &gossh.ClientConfig{
		User:            "admin",
		Auth:            []gossh.AuthMethod{gossh.PublicKeys(s)},
		HostKeyCallback: gossh.InsecureIgnoreHostKey(),
		Timeout:         10 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// hostCAChecker accepts host certificates from the bastion's host CA.
func (b *proxyBastion) hostCAChecker(t testing.TB) *gossh.CertChecker {
	t.Helper()
	ca, _, _, _, err := gossh.ParseAuthorizedKey(catFiles(t, b.env.hostCA.Pub))
	if err != nil {
		t.Fatal(err)
	}
	return &gossh.CertChecker{IsHostAuthority: func(k gossh.PublicKey, _ string) bool {
		return bytes.Equal(k.Marshal(), ca.Marshal())
	}}
}

// innerClient does what ssh -J does on its second hop: SSH over a
// direct-tcpip channel of outer, as login with s.
// The target's host certificate must be from the host CA, for the name
// dialled.
func innerClient(outer *gossh.Client, hostCA *gossh.CertChecker, target, login string, s gossh.Signer) (*gossh.Client, error) {
	nc, err := outer.Dial("tcp", target)
	if err != nil {
		return nil, err
	}
	ic, chans, reqs, err := gossh.NewClientConn(nc, target, &gossh.ClientConfig{
		User:              login,
		Auth:              []gossh.AuthMethod{gossh.PublicKeys(s)},
		HostKeyCallback:   hostCA.CheckHostKey,
		HostKeyAlgorithms: []string{gossh.CertAlgoED25519v01},
		Timeout:           10 * time.Second,
	})
	if err != nil {
		nc.Close()
		return nil, err
	}
	return gossh.NewClient(ic, chans, reqs), nil
}

// syncBuf is a bytes.Buffer safe for an SSH session's copier and a reader.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func waitFor(t testing.TB, b *syncBuf, want string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(b.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in output:\n%s", want, b.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestProxySettingsApplyOnReload: accept_env, max_command_bytes and
// sftp_extensions are read when a recorded session channel opens, so a
// reload (SIGHUP calls Apply) applies them to the next session without a
// restart, with the real OpenSSH client sending the variable (SetEnv).
func TestProxySettingsApplyOnReload(t *testing.T) {
	e := newProxyEnv(t)
	b := newProxyBastion(t, e, nil)
	key, cert, _ := b.admin(t)
	cfg := b.proxyConfig(t, key, cert)
	run := func(cmd string) sshtest.Result {
		return sshtest.SSH(t, "-F", cfg, "-o", "SetEnv=GH_HUP=after-reload", "web1", cmd)
	}
	const show = `echo "G=${GH_HUP:-unset}"`
	if r := run(show); r.Exit != 0 || !strings.Contains(r.Stdout, "G=unset") {
		t.Fatalf("before the reload GH_HUP is not in accept_env, yet: %s", r)
	}
	long := "echo ran #" + strings.Repeat("x", 2000)
	if r := run(long); r.Exit != 0 || !strings.Contains(r.Stdout, "ran") {
		t.Fatalf("a 2 KB command under the default max_command_bytes: %s", r)
	}

	nc := b.cfg
	nc.AcceptEnv = []string{"LANG", "LC_*", "TERM", "GH_HUP"}
	nc.MaxCommandBytes = 1024
	nc.SFTPExtensions = []string{"allowed@example.org"}
	applied, restart, err := b.srv.Apply(nc)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"accept_env", "max_command_bytes", "sftp_extensions"} {
		if !slices.Contains(applied, k) || slices.Contains(restart, k) {
			t.Errorf("%s not applied live: applied %q, needs restart %q", k, applied, restart)
		}
	}
	if r := run(show); r.Exit != 0 || !strings.Contains(r.Stdout, "G=after-reload") {
		t.Errorf("after the reload a new session does not forward GH_HUP: %s", r)
	}
	if r := run(long); r.Exit == 0 || strings.Contains(r.Stdout, "ran") || !strings.Contains(r.Stderr, "max_command_bytes") {
		t.Errorf("after lowering max_command_bytes to 1024 a 2 KB command: %s", r)
	}
}
