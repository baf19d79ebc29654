// Package sshtest drives real OpenSSH tools for bastion tests: a test CA and
// user keys made with ssh-keygen, a throwaway sshd target on a loopback
// port, and the ssh client with a private configuration. Tests only.
package sshtest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Require skips the test when a required OpenSSH binary is absent; CI
// installs them all, so there this never skips.
func Require(t testing.TB, bins ...string) {
	t.Helper()
	for _, b := range bins {
		if _, err := exec.LookPath(b); err != nil {
			t.Skipf("%s not installed (apt-get install openssh-client openssh-server)", b)
		}
	}
}

// Run runs a command, failing the test with its output if it fails.
func Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Key is a key pair on disk.
type Key struct {
	Priv, Pub string
}

// UserKey creates an unencrypted key pair of type typ ("ed25519", "ecdsa",
// "rsa" or "rsa:BITS") in dir.
func UserKey(t testing.TB, dir, typ string) Key {
	t.Helper()
	args := []string{"-q", "-N", "", "-C", "sshtest"}
	kt, bits, _ := strings.Cut(typ, ":")
	args = append(args, "-t", kt)
	if bits != "" {
		args = append(args, "-b", bits)
	}
	path := filepath.Join(dir, fmt.Sprintf("key%d_%s", seq.Add(1), kt))
	Run(t, "ssh-keygen", append(args, "-f", path)...)
	return Key{Priv: path, Pub: path + ".pub"}
}

var seq atomic.Int64

// CA is a certificate authority key made with ssh-keygen.
type CA struct {
	Key
	dir string
}

// NewCA creates a CA key of type keytype (as for UserKey) in dir.
func NewCA(t testing.TB, dir, keytype string) *CA {
	t.Helper()
	return &CA{Key: UserKey(t, dir, keytype), dir: dir}
}

// Sign certifies the public key at pubKeyPath with ssh-keygen -s, passing
// opts verbatim (e.g. "-n", "admin", "-V", "-1m:+1h", "-O",
// "clear"). A key id "-I sshtest" is added unless opts has -I. Each call
// writes a new certificate file, whose path it returns, so one key can carry
// many certificates.
func (ca *CA) Sign(t testing.TB, pubKeyPath string, opts ...string) string {
	t.Helper()
	data, err := os.ReadFile(pubKeyPath)
	if err != nil {
		t.Fatal(err)
	}
	base := filepath.Join(ca.dir, fmt.Sprintf("cert%d", seq.Add(1)))
	if err := os.WriteFile(base+".pub", data, 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"-q", "-s", ca.Priv}
	if !slices.Contains(opts, "-I") {
		args = append(args, "-I", "sshtest")
	}
	args = append(args, opts...)
	Run(t, "ssh-keygen", append(args, base+".pub")...)
	return base + "-cert.pub"
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// SSHD is a running sshd target.
type SSHD struct {
	Port    int
	Addr    string // 127.0.0.1:Port
	User    string // the account tests log in as (root when run as root)
	HostKey Key
	log     *syncWriter
}

// SSHDOptions configures StartSSHD. AuthorizedKeys are public key files
// allowed to log in; TrustedUserCAKeys, if set, is a CA public key file.
// Extra lines are appended to sshd_config.
type SSHDOptions struct {
	AuthorizedKeys    []string
	TrustedUserCAKeys string
	Extra             []string
}

// StartSSHD starts a real sshd -D -e on 127.0.0.1 with a temporary host key
// and configuration, waits until it accepts connections, and stops it when
// the test ends.
func StartSSHD(t testing.TB, opts SSHDOptions) *SSHD {
	t.Helper()
	Require(t, "sshd", "ssh-keygen")
	dir := t.TempDir()
	if os.Geteuid() == 0 {
		if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
			t.Fatal(err)
		}
	}
	hk := UserKey(t, dir, "ed25519")
	var auth []byte
	for _, k := range opts.AuthorizedKeys {
		b, err := os.ReadFile(k)
		if err != nil {
			t.Fatal(err)
		}
		auth = append(auth, b...)
	}
	authFile := filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(authFile, auth, 0o600); err != nil {
		t.Fatal(err)
	}
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	sshd, err := exec.LookPath("sshd")
	if err != nil {
		t.Fatal(err)
	}
	for attempt := 0; ; attempt++ {
		port := FreePort(t)
		lines := []string{
			"Port " + strconv.Itoa(port),
			"ListenAddress 127.0.0.1",
			"HostKey " + hk.Priv,
			"UsePAM no",
			"PidFile none",
			"StrictModes no",
			"AuthorizedKeysFile " + authFile,
			"PasswordAuthentication no",
			"KbdInteractiveAuthentication no",
			"PermitRootLogin prohibit-password",
			"MaxStartups 200",
			"LogLevel VERBOSE",
		}
		if opts.TrustedUserCAKeys != "" {
			lines = append(lines, "TrustedUserCAKeys "+opts.TrustedUserCAKeys)
		}
		lines = append(lines, opts.Extra...)
		conf := filepath.Join(dir, "sshd_config")
		if err := os.WriteFile(conf, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		stderr := &syncWriter{}
		cmd := exec.Command(sshd, "-D", "-e", "-f", conf)
		cmd.Stderr = stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		s := &SSHD{Port: port, Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), User: u.Username, HostKey: hk, log: stderr}
		if waitListening(s.Addr, exited, 10*time.Second) {
			t.Cleanup(func() {
				_ = cmd.Process.Kill()
				<-exited
			})
			return s
		}
		_ = cmd.Process.Kill()
		<-exited
		if attempt == 2 {
			t.Fatalf("sshd did not start on %s:\n%s", s.Addr, stderr.String())
		}
	}
}

func waitListening(addr string, exited <-chan struct{}, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return false
		default:
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// Log returns what sshd wrote to stderr so far (for failure messages).
func (s *SSHD) Log() string { return s.log.String() }

// syncWriter is a bytes.Buffer safe for the exec copier and readers.
type syncWriter struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *syncWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// Result is the outcome of one ssh run.
type Result struct {
	Stdout, Stderr string
	Exit           int
}

// String renders the result for failure messages.
func (r Result) String() string {
	return fmt.Sprintf("exit %d\nstdout: %s\nstderr: %s", r.Exit, r.Stdout, r.Stderr)
}

// SSH runs the real ssh client with args (the caller passes -F and the
// options it needs; see ClientOptions and WriteConfig) and a 30 s limit.
func SSH(t testing.TB, args ...string) Result {
	t.Helper()
	Require(t, "ssh")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ssh", args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Stdin = nil
	err := cmd.Run()
	r := Result{Stdout: stdout.String(), Stderr: stderr.String()}
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			r.Exit = ee.ExitCode()
		} else {
			t.Fatalf("ssh %s: %v", strings.Join(args, " "), err)
		}
		if ctx.Err() != nil {
			t.Fatalf("ssh %s: timed out\n%s", strings.Join(args, " "), r)
		}
	}
	return r
}

// ClientOptions are ssh command-line options for one hop that use only the
// given key and certificate and a private known_hosts file (accept-new),
// never the caller's ~/.ssh. cert may be empty.
func ClientOptions(knownHosts, key, cert string) []string {
	o := []string{
		"-F", "/dev/null",
		"-o", "UserKnownHostsFile=" + knownHosts,
		"-o", "StrictHostKeyChecking=accept-new",
		"-o", "BatchMode=yes",
		"-o", "IdentitiesOnly=yes",
		"-o", "ConnectTimeout=10",
		"-o", "IdentityFile=" + key,
	}
	if cert != "" {
		o = append(o, "-o", "CertificateFile="+cert)
	}
	return o
}

// Host is one Host block of an ssh_config written by WriteConfig.
type Host struct {
	Alias, HostName, User string
	Port                  int
	IdentityFiles         []string
	CertificateFiles      []string
	Extra                 []string // "Option value" lines
}

// WriteConfig writes an ssh_config for ssh -F, with private known_hosts
// and batch mode for every host. Use it for ssh -J, whose jump hop reads
// options only from the configuration file.
func WriteConfig(t testing.TB, path, knownHosts string, hosts ...Host) string {
	t.Helper()
	var b strings.Builder
	for _, h := range hosts {
		fmt.Fprintf(&b, "Host %s\n  HostName %s\n  Port %d\n", h.Alias, h.HostName, h.Port)
		if h.User != "" {
			fmt.Fprintf(&b, "  User %s\n", h.User)
		}
		for _, f := range h.IdentityFiles {
			fmt.Fprintf(&b, "  IdentityFile %s\n", f)
		}
		for _, f := range h.CertificateFiles {
			fmt.Fprintf(&b, "  CertificateFile %s\n", f)
		}
		for _, e := range h.Extra {
			fmt.Fprintf(&b, "  %s\n", e)
		}
	}
	fmt.Fprintf(&b, "Host *\n  UserKnownHostsFile %s\n  StrictHostKeyChecking accept-new\n  BatchMode yes\n  IdentitiesOnly yes\n  ConnectTimeout 10\n", knownHosts)
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// Proc is an ssh client started in the background by StartSSH.
type Proc struct {
	cmd            *exec.Cmd
	stdout, stderr syncWriter
	done           chan struct{}
	err            error
	cancel         context.CancelFunc
}

// StartSSH starts the real ssh client with args in the background (60 s
// limit); Wait collects its result. The process is killed when the test
// ends.
func StartSSH(t testing.TB, args ...string) *Proc {
	t.Helper()
	Require(t, "ssh")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	p := &Proc{done: make(chan struct{}), cancel: cancel}
	p.cmd = exec.CommandContext(ctx, "ssh", args...)
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	if err := p.cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { cancel(); <-p.done })
	return p
}

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Wait waits for the process and returns its result.
func (p *Proc) Wait() Result {
	<-p.done
	r := Result{Stdout: p.stdout.String(), Stderr: p.stderr.String()}
	if ee, ok := p.err.(*exec.ExitError); ok {
		r.Exit = ee.ExitCode()
	} else if p.err != nil {
		r.Exit = -1
	}
	return r
}
