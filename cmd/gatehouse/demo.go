package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/crypto/ssh"

	"gatehouse/apt/pgp"
	"gatehouse/apt/repobuild"
	"gatehouse/bastion"
	"gatehouse/bastion/policy"
	"gatehouse/bastion/record"
	"gatehouse/cmd/gatehouse/demo"
	"gatehouse/mirror"
	"gatehouse/mirror/serve"
)

func newDemoCmd(g *globals) *cobra.Command {
	var dir string
	var keep, check bool
	var exitAfterCheck bool
	c := &cobra.Command{
		Use:   "demo",
		Short: "Run both halves on a built-in sample: no config, no network",
		Long: `Build a signed sample upstream archive in a temporary directory, sync and
verify it into a mirror, serve it on 127.0.0.1, start the certificate-only
bastion with a throwaway CA in front of a sample SSH target (jump) and a
second one it reaches as a recording proxy, check both with
the real apt-get and ssh when they are installed, and print the commands to
try them yourself. Everything binds to 127.0.0.1; nothing leaves the machine.
Runs until interrupted (Ctrl-C), then removes the directory unless --keep.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runDemo(cmd.Context(), g, demoOptions{dir: dir, keep: keep, check: check, exitAfterCheck: exitAfterCheck})
		},
	}
	c.Flags().StringVar(&dir, "dir", "", "directory for the demo's state (default: a new temporary directory)")
	c.Flags().BoolVar(&keep, "keep", false, "keep the demo directory on exit")
	c.Flags().BoolVar(&check, "check", true, "run the real apt-get and ssh against the demo once started")
	c.Flags().BoolVar(&exitAfterCheck, "exit", false, "exit after the checks instead of running until interrupted (exit 1 if a check failed)")
	return c
}

type demoOptions struct {
	dir            string
	keep, check    bool
	exitAfterCheck bool
}

func runDemo(ctx context.Context, g *globals, o demoOptions) error {
	now := time.Now()
	dir := o.dir
	if dir == "" {
		d, err := os.MkdirTemp("", "gatehouse-demo-")
		if err != nil {
			return err
		}
		dir = d
	} else if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if !o.keep && o.dir == "" {
		defer os.RemoveAll(dir)
	}
	out := g.stdout
	say := func(format string, args ...any) { fmt.Fprintf(out, format+"\n", args...) }
	say("gatehouse demo in %s (everything on 127.0.0.1)\n", dir)

	// The components log every request and decision; keep them in a file so
	// the terminal shows the story, not the access log.
	logPath := filepath.Join(dir, "demo.log")
	logFile, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logFile.Close()
	log := slog.New(slog.NewTextHandler(logFile, &slog.HandlerOptions{Level: slog.LevelDebug}))

	// Goods: a signed upstream, synced, verified and served.
	if _, err := exec.LookPath("dpkg-deb"); err != nil {
		return fmt.Errorf("the demo builds real .deb files with dpkg-deb, which is not installed: apt-get install dpkg")
	}
	upKey, err := pgp.GenerateSigningKey("gatehouse demo upstream", "upstream@example.org", "ed25519", now)
	if err != nil {
		return err
	}
	arch := debianArch(runtime.GOARCH)
	repo, err := demo.BuildUpstream(filepath.Join(dir, "upstream"), upKey, arch)
	if err != nil {
		return fmt.Errorf("building the sample upstream: %w", err)
	}
	upURL, stopUp, err := demo.ServeLoopback(ctx, http.FileServer(http.Dir(repo.Dir)))
	if err != nil {
		return err
	}
	defer stopUp()
	say("1. sample upstream (signed with a fresh Ed25519 key):  %s", upURL)

	stateDir := filepath.Join(dir, "state")
	mcfg := mirror.Config{Name: "demo", URL: upURL, Suites: []string{"stable"}, Components: []string{"main"},
		Architectures: []string{arch}, Keyring: repo.KeyringPath}
	mcfg.Defaults()
	rep, err := mirror.Sync(ctx, stateDir, mcfg, mirror.Options{Log: log, Now: time.Now})
	if err != nil {
		return fmt.Errorf("demo sync: %w", err)
	}
	say("2. synced and verified: %s, snapshot %s, %d files fetched (%d bytes)", rep.Result, rep.Snapshot, rep.FilesFetched, rep.BytesFetched)

	// The HTTP side starts as the plain mirror; once the bastion is
	// configured it becomes the whole status site (page, replay, metrics).
	mirrors := serve.NewHandler(mirror.StoreRoot(stateDir), []string{"demo"}, log)
	var site atomic.Pointer[http.Handler]
	site.Store(&mirrors)
	mirrorURL, stopServe, err := demo.ServeLoopback(ctx, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		(*site.Load()).ServeHTTP(w, r)
	}))
	if err != nil {
		return err
	}
	defer stopServe()
	sourcesLine := fmt.Sprintf("deb [signed-by=%s] %s/demo stable main", repo.KeyringPath, mirrorURL)
	aptConf, err := repobuild.WriteAptConfig(filepath.Join(dir, "apt"), arch, sourcesLine)
	if err != nil {
		return err
	}
	say("3. mirror served at %s/demo/", mirrorURL)

	// People: a throwaway user CA, the bastion, a sample target.
	bdir := filepath.Join(dir, "bastion")
	if err := os.MkdirAll(bdir, 0o700); err != nil {
		return err
	}
	ca, _, err := ensureSSHKey(filepath.Join(bdir, "user_ca"), "gatehouse-demo-user-ca")
	if err != nil {
		return err
	}
	hostKey, _, err := ensureSSHKey(filepath.Join(bdir, "ssh_host_ed25519_key"), "gatehouse-demo-bastion")
	if err != nil {
		return err
	}
	targetKey, _, err := ensureSSHKey(filepath.Join(bdir, "target_host_key"), "gatehouse-demo-target")
	if err != nil {
		return err
	}
	admin, _, err := ensureSSHKey(filepath.Join(bdir, "admin"), "admin@demo")
	if err != nil {
		return err
	}
	cert, err := signUserCert(ca, admin.PublicKey(), "admin@demo", []string{"admin"}, now.Add(-time.Minute), now.Add(8*time.Hour),
		map[string]string{"permit-port-forwarding": "", "permit-pty": ""})
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(bdir, "admin-cert.pub"), ssh.MarshalAuthorizedKey(cert), 0o644); err != nil {
		return err
	}
	target, err := demo.NewTarget(targetKey, ca.PublicKey(), log)
	if err != nil {
		return err
	}
	tctx, stopTarget := context.WithCancel(ctx)
	targetDone := make(chan struct{})
	go func() { target.Serve(tctx); close(targetDone) }()
	defer func() { stopTarget(); <-targetDone }()

	// The recording proxy: a second sample target that trusts only the
	// bastion's upstream CA, so the only way in is a session the bastion
	// records.
	rp, err := newDemoRecording(bdir, log)
	if err != nil {
		return err
	}
	rtctx, stopRecTarget := context.WithCancel(ctx)
	recTargetDone := make(chan struct{})
	go func() { rp.target.Serve(rtctx); close(recTargetDone) }()
	defer func() { stopRecTarget(); <-recTargetDone }()

	bln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	bcfg := bastion.Config{
		Listen:     bln.Addr().String(),
		HostKeys:   []string{filepath.Join(bdir, "ssh_host_ed25519_key")},
		UserCAKeys: filepath.Join(bdir, "user_ca.pub"),
		AuditLog:   filepath.Join(bdir, "audit.jsonl"),
		Rules: []policy.Rule{
			{Principals: []string{"admin"}, Jump: []string{target.Addr()}},
			{Principals: []string{"admin"}, Proxy: []string{rp.target.Addr()}, Logins: []string{demoRecordedLogin}},
		},
	}
	rp.configure(&bcfg)
	bcfg.Defaults()
	if err := bcfg.Validate(); err != nil {
		return err
	}
	srv, err := bastion.New(bcfg, log, time.Now)
	if err != nil {
		return err
	}
	defer srv.Close()
	page, _, err := newStatusSite(&fileConfig{StateDir: stateDir, Mirror: []mirror.Config{mcfg}, Bastion: &bcfg,
		Status: statusConfig{SessionsFrom: []string{"127.0.0.0/8", "::1/128"}}}, mirrors, true, log)
	if err != nil {
		return err
	}
	var pageHandler http.Handler = page
	site.Store(&pageHandler)
	srv.SetObserver(func(ev record.Event) {
		rp.observe(ev)
		page.ObserveBastion(ev)
	})
	bctx, stopBastion := context.WithCancel(ctx)
	bdone := make(chan error, 1)
	go func() { bdone <- srv.Serve(bctx, bln) }()
	defer func() { stopBastion(); <-bdone }()

	sshConf, err := demo.SSHConfig{Dir: bdir, BastionAddr: bln.Addr().String(), TargetAddr: target.Addr(),
		BastionKey: hostKey.PublicKey(), TargetKey: targetKey.PublicKey(),
		RecordedAddr: rp.target.Addr(), HostCA: rp.hostCA}.Write()
	if err != nil {
		return err
	}
	say("4. bastion on %s (user certificates from a throwaway CA only), sample target %s", bln.Addr(), target.Addr())
	say("5. recording proxy to a second target %s, which trusts only the bastion's upstream CA; recordings in %s", rp.target.Addr(), rp.dir)
	say("6. status page (mirror freshness, live and recorded sessions, replay in the browser): %s/", mirrorURL)

	failed := false
	if o.check {
		say("\nChecking with the real tools:")
		failed = !demo.Check(ctx, out, "apt-get update through the mirror", "apt-get", "-c", aptConf, "update", "--error-on=any") || failed
		failed = !demo.Check(ctx, out, "apt-get install --download-only gatehouse-hello", "apt-get", "-c", aptConf, "install", "-y", "--download-only", "gatehouse-hello") || failed
		failed = !demo.Check(ctx, out, "ssh -J through the bastion to the target", "ssh", "-F", sshConf, "demo-target", "uname") || failed
		if demo.Check(ctx, out, "ssh -J through the bastion's recording proxy, as login "+demoRecordedLogin, "ssh", "-F", sshConf, "demo-recorded", "echo hello from a recorded session") {
			failed = !rp.check(ctx, out) || failed
			failed = !demo.CheckStatusPage(out, mirrorURL, rp.exampleID()) || failed
		} else {
			failed = true
		}
		failed = !demo.Refusals(ctx, out, log, repo.Dir, stateDir, mcfg, bdir, bln.Addr().String()) || failed
		failed = !demo.Check(ctx, out, "apt-get update still works: the refused sync left the published mirror as it was", "apt-get", "-c", aptConf, "update", "--error-on=any") || failed
	}

	say(`
Try it yourself (in another terminal):

  # goods: apt on an "isolated host", pointed at the mirror (private apt config, nothing on this machine changes)
  APT_CONFIG=%[1]s apt-get update
  APT_CONFIG=%[1]s apt-get install --download-only gatehouse-hello
  # the sources line an isolated host would use:
  %[2]s

  # people: ssh through the bastion with a certificate (ProxyJump); the config names key, cert and known hosts
  ssh -F %[3]s demo-target
  # (that config says: ProxyJump admin@%[4]s with certificate %[5]s, key %[6]s, to %[7]s)

  # people, recorded: the same ssh -J, but the bastion terminates SSH, records the
  # session, and logs in to the target as %[10]q with a certificate it mints for it
  ssh -F %[3]s demo-recorded 'echo hello'
  ssh -F %[3]s demo-recorded          # a pty and a tiny echo shell
  # recordings land in %[11]s, one directory per connection:
  # meta.json, chNN.cast (asciicast v2), chNN.ttyrec, manifest.json + manifest.json.sig
  go run ./cmd/gatehouse recordings list --dir %[11]s
  go run ./cmd/gatehouse recordings play --dir %[11]s %[12]s
  go run ./cmd/gatehouse recordings verify --dir %[11]s --key %[13]s --all
  ssh-keygen -Y verify -f %[14]s -I gatehouse -n %[15]s -s %[16]s < %[17]s

  # in a browser: mirror freshness, live and recent sessions, replay of each recording
  %[18]s/

  # the bastion's hash-chained audit log, and its verification
  cat %[8]s
  go run ./cmd/gatehouse recordings verify --audit %[8]s --key %[13]s

  # what the mirror, the server and the bastion logged
  less %[9]s
`, aptConf, sourcesLine, sshConf, bln.Addr(), filepath.Join(bdir, "admin-cert.pub"), filepath.Join(bdir, "admin"), target.Addr(), bcfg.AuditLog, logPath,
		demoRecordedLogin, rp.dir, rp.exampleID(), rp.keyPath+".pub", rp.allowedSigners, record.RecordingNamespace,
		filepath.Join(rp.dir, rp.exampleID(), record.SignatureName), filepath.Join(rp.dir, rp.exampleID(), record.ManifestName), mirrorURL)

	// The directory goes when the demo does (deferred above) unless the
	// operator chose it or --keep: say which, so nobody runs the commands
	// above against a directory that no longer exists.
	removed := !o.keep && o.dir == ""
	if o.exitAfterCheck {
		if removed {
			say("--exit: the demo has stopped and removed %s, so the commands above no longer work;\nrun 'gatehouse demo' without --exit to try them, or add --keep to keep the files.", dir)
		} else {
			say("--exit: the demo has stopped; %s is kept. The recordings and audit-log commands above still work;\napt, ssh and the browser need 'gatehouse demo' running. Remove it with: rm -rf %s", dir, dir)
		}
		if failed {
			return errors.New("demo: a check failed (see above)")
		}
		return nil
	}
	say("Running until interrupted (Ctrl-C).")
	<-ctx.Done()
	if removed {
		say("\nstopping the demo and removing %s (--keep keeps it)", dir)
	} else {
		say("\nstopping the demo; %s is kept", dir)
	}
	return nil
}

// demoRecordedLogin is the account on the recorded sample target.
const demoRecordedLogin = demo.RecordedLogin

// demoMinFreeSpace replaces the 1 GiB default of min_free_space: the demo
// records a few kilobytes and must run in a small temporary directory.
const demoMinFreeSpace = bastion.ByteSize(16 << 20)

// demoRecording is the demo's recording proxy: its keys and files in the
// bastion directory, the recorded target, and the recordings the bastion
// has closed.
type demoRecording struct {
	dir             string // recordings_dir
	keyPath         string // recording_key; keyPath+".pub" verifies manifests
	pub             ssh.PublicKey
	allowedSigners  string // for ssh-keygen -Y verify
	upCA, hostCAKey string
	knownHosts      string // upstream_known_hosts: pins the recorded target
	hostCA          ssh.PublicKey
	target          *demo.Target
	ended           chan string // recording IDs, as proxy.end reports them

	mu       sync.Mutex
	verified string // the last recording check verified
}

// newDemoRecording creates (or reuses, with --dir) the upstream CA, the
// host CA and the recording key in bdir (0600), and starts listening with
// the recorded target, which trusts the upstream CA alone.
func newDemoRecording(bdir string, log *slog.Logger) (*demoRecording, error) {
	rp := &demoRecording{
		dir:            filepath.Join(bdir, "recordings"),
		keyPath:        filepath.Join(bdir, "recording_key"),
		allowedSigners: filepath.Join(bdir, "allowed_signers"),
		upCA:           filepath.Join(bdir, "upstream_ca"),
		hostCAKey:      filepath.Join(bdir, "host_ca"),
		knownHosts:     filepath.Join(bdir, "upstream_known_hosts"),
		ended:          make(chan string, 16),
	}
	upCA, _, err := ensureSSHKey(rp.upCA, "gatehouse-demo-upstream-ca")
	if err != nil {
		return nil, fmt.Errorf("demo upstream CA: %w", err)
	}
	hostCA, _, err := ensureSSHKey(rp.hostCAKey, "gatehouse-demo-host-ca")
	if err != nil {
		return nil, fmt.Errorf("demo host CA: %w", err)
	}
	rp.hostCA = hostCA.PublicKey()
	recKey, _, err := ensureSSHKey(rp.keyPath, "gatehouse-recording")
	if err != nil {
		return nil, fmt.Errorf("demo recording key: %w", err)
	}
	rp.pub = recKey.PublicKey()
	tkey, _, err := ensureSSHKey(filepath.Join(bdir, "recorded_target_host_key"), "gatehouse-demo-recorded-target")
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(rp.dir, 0o700); err != nil {
		return nil, err
	}
	if err := os.WriteFile(rp.allowedSigners, []byte(record.AllowedSigners(rp.pub)), 0o644); err != nil {
		return nil, err
	}
	if rp.target, err = demo.NewTarget(tkey, upCA.PublicKey(), log); err != nil {
		return nil, err
	}
	h, p, _ := net.SplitHostPort(rp.target.Addr())
	known := fmt.Sprintf("[%s]:%s %s", h, p, ssh.MarshalAuthorizedKey(tkey.PublicKey()))
	if err := os.WriteFile(rp.knownHosts, []byte(known), 0o644); err != nil {
		rp.target.Close()
		return nil, err
	}
	return rp, nil
}

// configure sets the bastion's recording proxy settings.
func (rp *demoRecording) configure(c *bastion.Config) {
	c.UpstreamCAKey = rp.upCA
	c.UpstreamKnownHosts = rp.knownHosts
	c.HostCAKey = rp.hostCAKey
	c.RecordingsDir = rp.dir
	c.RecordingKey = rp.keyPath
	c.RecordInput = true
	c.MinFreeSpace = demoMinFreeSpace
}

// observe is the bastion's audit observer: it passes on the recording of
// every proxy.end, written after the recording is sealed.
func (rp *demoRecording) observe(ev record.Event) {
	end, ok := ev.(record.ProxyEnd)
	if !ok {
		return
	}
	if id := end.Recording; id != "" {
		select {
		case rp.ended <- id:
		default: // nobody is waiting: only --check reads these
		}
	}
}

// check waits for the recording of the session just made and verifies its
// hash chain and manifest signature with the recording key.
func (rp *demoRecording) check(ctx context.Context, w io.Writer) bool {
	var id string
	select {
	case id = <-rp.ended:
	case <-time.After(10 * time.Second):
		fmt.Fprintf(w, "  ✗  recording: the bastion did not close a recording within 10 s (see %s)\n", rp.dir)
		return false
	case <-ctx.Done():
		return false
	}
	dir := filepath.Join(rp.dir, id)
	if err := record.Verify(dir, rp.pub); err != nil {
		fmt.Fprintf(w, "  ✗  recording: %s does not verify:\n%s\n", dir, demo.Indent(err.Error()))
		return false
	}
	rp.mu.Lock()
	rp.verified = id
	rp.mu.Unlock()
	fmt.Fprintf(w, "  ✓  recording: %s (signature ok)\n", dir)
	return true
}

// exampleID names a recording for the printed commands: the one check
// verified, or a placeholder.
func (rp *demoRecording) exampleID() string {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	if rp.verified == "" {
		return "ID"
	}
	return rp.verified
}
