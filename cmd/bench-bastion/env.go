//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"gatehouse/bastion"
	"gatehouse/bastion/policy"
)

// env is everything one benchmark run starts: keys, a target sshd, the two
// jump hosts, a banner server for the concurrency phase, and the client
// configuration.
type env struct {
	dir     string
	keep    bool
	log     *slog.Logger
	jumpKex string
	cpuprof string

	user     string // login on the sshd instances (principal in the cert)
	userKey  string
	userCert string
	signer   gossh.Signer // the certificate signer, for the in-process load client
	known    string

	target *proc // real sshd, the destination of every jump
	gate   *proc // the bastion, in a child process
	ossh   *proc // the OpenSSH jump host
	banner *bannerServer

	gateHostKey, osshHostKey gossh.PublicKey
}

// proc is a server running as our child process.
type proc struct {
	name string
	cmd  *exec.Cmd
	port int
	done chan struct{}
	stop func() // asks it to exit (stdin close or SIGTERM)
}

// bastionChild is the configuration the child process runs.
type bastionChild struct {
	Config bastion.Config
}

type runningBastion struct {
	srv  *bastion.Server
	ln   net.Listener
	port int
}

func (b *runningBastion) serve(ctx context.Context) error { return b.srv.Serve(ctx, b.ln) }

func loadBastion(path string) (*runningBastion, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading bastion config: %w", err)
	}
	var c bastionChild
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("parsing bastion config %s: %w", path, err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	srv, err := bastion.New(c.Config, log, time.Now)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", c.Config.Listen)
	if err != nil {
		srv.Close()
		return nil, fmt.Errorf("bastion listen: %w", err)
	}
	return &runningBastion{srv: srv, ln: ln, port: ln.Addr().(*net.TCPAddr).Port}, nil
}

func newEnv(ctx context.Context, o options, log *slog.Logger) (_ *env, err error) {
	for _, b := range []string{"ssh", "sshd", "ssh-keygen"} {
		if _, err := exec.LookPath(b); err != nil {
			return nil, fmt.Errorf("%s not found: install openssh-client and openssh-server", b)
		}
	}
	dir, err := os.MkdirTemp("", "bench-bastion")
	if err != nil {
		return nil, err
	}
	e := &env{dir: dir, keep: o.keep, log: log, jumpKex: o.jumpKex, cpuprof: o.cpuprof}
	defer func() {
		if err != nil {
			e.close()
		}
	}()
	u, err := user.Current()
	if err != nil {
		return nil, err
	}
	e.user = u.Username
	if os.Geteuid() == 0 {
		// sshd's privilege separation directory.
		if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
			return nil, err
		}
	}

	ca := e.path("user_ca")
	if err := keygen(ctx, ca); err != nil {
		return nil, err
	}
	e.userKey = e.path("user")
	if err := keygen(ctx, e.userKey); err != nil {
		return nil, err
	}
	// One certificate for every hop: principal admin for the bastion's
	// rule, the local account for the sshd instances.
	if err := runTool(ctx, "ssh-keygen", "-q", "-s", ca, "-I", "bench", "-n", "admin,"+e.user, "-V", "-5m:+2h", e.userKey+".pub"); err != nil {
		return nil, err
	}
	e.userCert = e.userKey + "-cert.pub"
	if e.signer, err = loadCertSigner(e.userKey, e.userCert); err != nil {
		return nil, err
	}

	if e.banner, err = startBanner(); err != nil {
		return nil, err
	}
	if e.target, err = e.startSSHD(ctx, "target", []string{
		"TrustedUserCAKeys " + ca + ".pub",
		"AuthorizedKeysFile none",
		"MaxStartups 200",
	}); err != nil {
		return nil, err
	}
	tgt := "127.0.0.1:" + strconv.Itoa(e.target.port)
	bnr := "127.0.0.1:" + strconv.Itoa(e.banner.port)
	// The OpenSSH jump host: certificates only, forwarding only to the two
	// destinations, no shell, no agent or X11 forwarding, stock MaxStartups
	// and LoginGraceTime.
	if e.ossh, err = e.startSSHD(ctx, "openssh-jump", []string{
		"TrustedUserCAKeys " + ca + ".pub",
		"AuthorizedKeysFile none",
		"PermitTTY no",
		"ForceCommand /bin/false",
		"AllowTcpForwarding local",
		"PermitOpen " + tgt + " " + bnr,
		"AllowAgentForwarding no",
		"X11Forwarding no",
		"PermitTunnel no",
		"GatewayPorts no",
	}); err != nil {
		return nil, err
	}
	if e.gate, err = e.startGatehouse(ctx, ca+".pub", []string{tgt, bnr}); err != nil {
		return nil, err
	}
	if e.osshHostKey, err = readPub(e.path("openssh-jump_host.pub")); err != nil {
		return nil, err
	}
	if e.gateHostKey, err = readPub(e.path("gatehouse_host.pub")); err != nil {
		return nil, err
	}
	var kh bytes.Buffer
	for _, h := range []struct {
		port int
		pub  string
	}{{e.target.port, "target_host.pub"}, {e.ossh.port, "openssh-jump_host.pub"}, {e.gate.port, "gatehouse_host.pub"}} {
		b, err := os.ReadFile(e.path(h.pub))
		if err != nil {
			return nil, err
		}
		f := strings.Fields(string(b))
		fmt.Fprintf(&kh, "[127.0.0.1]:%d %s %s\n", h.port, f[0], f[1])
	}
	e.known = e.path("known_hosts")
	if err := os.WriteFile(e.known, kh.Bytes(), 0o600); err != nil {
		return nil, err
	}
	log.Info("environment ready", "dir", dir, "target", e.target.port, "gatehouse", e.gate.port, "openssh", e.ossh.port, "banner", e.banner.port)
	return e, nil
}

func (e *env) path(name string) string { return filepath.Join(e.dir, name) }

// close stops every server and removes the temporary directory.
func (e *env) close() {
	for _, p := range []*proc{e.gate, e.ossh, e.target} {
		if p != nil {
			p.terminate()
		}
	}
	if e.banner != nil {
		e.banner.close()
	}
	if !e.keep {
		os.RemoveAll(e.dir)
	}
}

// terminate stops the process and waits up to 10 s before killing it.
func (p *proc) terminate() {
	p.stop()
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// stopAndCPU stops the process and returns the user+system CPU seconds
// wait4 reported for it, which include its reaped descendants.
func (p *proc) stopAndCPU() float64 {
	p.terminate()
	st := p.cmd.ProcessState
	if st == nil {
		return 0
	}
	return (st.UserTime() + st.SystemTime()).Seconds()
}

// clientConfig writes an ssh_config with the two jump hosts (jg: gatehouse,
// jo: OpenSSH) and the target behind each (tg, to). Options sit in the file,
// not on the command line, so that they apply to the jump hop too.
func (e *env) clientConfig(name, cipher string) (string, error) {
	var b strings.Builder
	hop := func(alias string, port int, user, jump string) {
		fmt.Fprintf(&b, "Host %s\n  HostName 127.0.0.1\n  Port %d\n  User %s\n", alias, port, user)
		if jump != "" {
			fmt.Fprintf(&b, "  ProxyJump %s\n", jump)
		} else if e.jumpKex != "" {
			fmt.Fprintf(&b, "  KexAlgorithms %s\n", e.jumpKex)
		}
	}
	hop("jg", e.gate.port, "admin", "")
	hop("jo", e.ossh.port, e.user, "")
	hop("tg", e.target.port, e.user, "jg")
	hop("to", e.target.port, e.user, "jo")
	b.WriteString("Host *\n")
	for _, l := range []string{
		"IdentityFile " + e.userKey,
		"CertificateFile " + e.userCert,
		"IdentitiesOnly yes",
		"UserKnownHostsFile " + e.known,
		"GlobalKnownHostsFile /dev/null",
		"StrictHostKeyChecking yes",
		"UpdateHostKeys no",
		"BatchMode yes",
		"ConnectTimeout 10",
		"ControlMaster no",
		"ControlPath none",
		"LogLevel ERROR",
	} {
		fmt.Fprintf(&b, "  %s\n", l)
	}
	if cipher != "" {
		fmt.Fprintf(&b, "  Ciphers %s\n", cipher)
	}
	p := e.path("ssh_config_" + name)
	return p, os.WriteFile(p, []byte(b.String()), 0o600)
}

// startSSHD runs a real sshd -D -e on a free loopback port with a fresh
// ed25519 host key (NAME_host) and the given extra configuration lines.
func (e *env) startSSHD(ctx context.Context, name string, extra []string) (*proc, error) {
	hk := e.path(name + "_host")
	if err := keygen(ctx, hk); err != nil {
		return nil, err
	}
	sshd, err := exec.LookPath("sshd")
	if err != nil {
		return nil, err
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		lines := append([]string{
			"Port " + strconv.Itoa(port),
			"ListenAddress 127.0.0.1",
			"HostKey " + hk,
			"UsePAM no",
			"PidFile none",
			"StrictModes no",
			"PasswordAuthentication no",
			"KbdInteractiveAuthentication no",
			"PermitRootLogin prohibit-password",
		}, extra...)
		conf := e.path(name + "_sshd_config")
		if err := os.WriteFile(conf, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
			return nil, err
		}
		logf, err := os.Create(e.path(name + ".log"))
		if err != nil {
			return nil, err
		}
		cmd := exec.Command(sshd, "-D", "-e", "-f", conf)
		cmd.Stderr = logf
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
		p, err := startProc(name, cmd, port, func(c *exec.Cmd) { _ = c.Process.Signal(syscall.SIGTERM) })
		logf.Close()
		if err != nil {
			return nil, err
		}
		if waitListening(p, 10*time.Second) {
			return p, nil
		}
		p.terminate()
		log, _ := os.ReadFile(e.path(name + ".log"))
		lastErr = fmt.Errorf("sshd %s did not start on port %d:\n%s", name, port, log)
	}
	return nil, lastErr
}

// startGatehouse runs this program in bastion mode as a child process, with
// a certificate-only configuration and one rule allowing dests.
func (e *env) startGatehouse(ctx context.Context, caPub string, dests []string) (*proc, error) {
	hk := e.path("gatehouse_host")
	if err := keygen(ctx, hk); err != nil {
		return nil, err
	}
	cfg := bastionChild{Config: bastion.Config{
		Listen:     "127.0.0.1:0",
		HostKeys:   []string{hk},
		UserCAKeys: caPub,
		AuditLog:   e.path("audit.jsonl"),
		Rules:      []policy.Rule{{Principals: []string{"admin"}, Jump: dests}},
	}}
	data, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	cfgPath := e.path("gatehouse.json")
	if err := os.WriteFile(cfgPath, data, 0o600); err != nil {
		return nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	logf, err := os.Create(e.path("gatehouse.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	args := []string{"-serve-bastion", cfgPath}
	if e.cpuprof != "" {
		prof, err := filepath.Abs(e.cpuprof)
		if err != nil {
			return nil, err
		}
		args = append(args, "-cpuprofile", prof)
	}
	cmd := exec.Command(self, args...)
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	p, err := startProc("gatehouse", cmd, 0, func(*exec.Cmd) { stdin.Close() })
	if err != nil {
		return nil, err
	}
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(stdout).ReadString('\n')
		line <- s
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case s := <-line:
		if _, err := fmt.Sscanf(s, "listening %d", &p.port); err != nil {
			p.terminate()
			log, _ := os.ReadFile(e.path("gatehouse.log"))
			return nil, fmt.Errorf("bastion child did not start (said %q):\n%s", s, log)
		}
	case <-time.After(20 * time.Second):
		p.terminate()
		return nil, errors.New("bastion child did not report its port within 20s")
	}
	return p, nil
}

func startProc(name string, cmd *exec.Cmd, port int, stop func(*exec.Cmd)) (*proc, error) {
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, port: port, done: make(chan struct{})}
	var once sync.Once
	p.stop = func() { once.Do(func() { stop(cmd) }) }
	go func() { _ = cmd.Wait(); close(p.done) }()
	return p, nil
}

func waitListening(p *proc, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	addr := "127.0.0.1:" + strconv.Itoa(p.port)
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			return false
		default:
		}
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func keygen(ctx context.Context, path string) error {
	return runTool(ctx, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bench", "-f", path)
}

func runTool(ctx context.Context, name string, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, out)
	}
	return nil
}

func readPub(path string) (gossh.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	k, _, _, _, err := gossh.ParseAuthorizedKey(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

func loadCertSigner(keyPath, certPath string) (gossh.Signer, error) {
	b, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, err
	}
	s, err := gossh.ParsePrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", keyPath, err)
	}
	pub, err := readPub(certPath)
	if err != nil {
		return nil, err
	}
	cert, ok := pub.(*gossh.Certificate)
	if !ok {
		return nil, fmt.Errorf("%s is not a certificate", certPath)
	}
	return gossh.NewCertSigner(cert, s)
}

// bannerServer is the destination of the concurrency phase: it sends an SSH
// version line and holds the connection, so 1,000 sessions measure the jump
// host rather than 1,000 forked target sshds competing for the same cores.
type bannerServer struct {
	ln   net.Listener
	port int
	wg   sync.WaitGroup
	mu   sync.Mutex
	open map[net.Conn]struct{}
}

func startBanner() (*bannerServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	b := &bannerServer{ln: ln, port: ln.Addr().(*net.TCPAddr).Port, open: map[net.Conn]struct{}{}}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.mu.Lock()
			b.open[c] = struct{}{}
			b.mu.Unlock()
			b.wg.Add(1)
			go func() {
				defer b.wg.Done()
				_, _ = c.Write([]byte("SSH-2.0-bench-banner\r\n"))
				_, _ = io.Copy(io.Discard, c)
				c.Close()
				b.mu.Lock()
				delete(b.open, c)
				b.mu.Unlock()
			}()
		}
	}()
	return b, nil
}

func (b *bannerServer) close() {
	b.ln.Close()
	b.mu.Lock()
	for c := range b.open {
		c.Close()
	}
	b.mu.Unlock()
	b.wg.Wait()
}
