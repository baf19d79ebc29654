package demo

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
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"

	"gatehouse/apt/pgp"
	"gatehouse/apt/repobuild"
	"gatehouse/bastion"
	"gatehouse/bastion/policy"
	"gatehouse/bastion/record"
	"gatehouse/cmd/gatehouse/internal/sshkeys"
	"gatehouse/cmd/gatehouse/metrics"
	"gatehouse/cmd/gatehouse/statuspage"
	"gatehouse/mirror"
	"gatehouse/mirror/serve"
)

// Options are the flags of `gatehouse demo` and what the process gives
// it.
type Options struct {
	// Dir holds the demo's state; "" makes a temporary directory that is
	// removed on return unless Keep.
	Dir string
	// Keep keeps a temporary Dir on return.
	Keep bool
	// Check runs the real apt-get and ssh against the demo once started.
	Check bool
	// ExitAfterCheck returns after the checks (an error if one failed)
	// instead of running until ctx is done.
	ExitAfterCheck bool
	// Arch is the Debian architecture of this machine ("amd64"), so the
	// real apt-get here accepts the sample archive.
	Arch string
	// Stdout receives the story and the commands to try.
	Stdout io.Writer
}

// Run runs the demo: builds and signs the sample upstream, syncs, verifies
// and serves it, starts the certificate-only bastion in front of a jump
// target and a recorded target, runs the checks (o.Check) and prints the
// commands to try, then runs until ctx is done (or returns after the
// checks with o.ExitAfterCheck). Everything binds to 127.0.0.1.
func Run(ctx context.Context, o Options) error {
	now := time.Now()
	dir := o.Dir
	if dir == "" {
		d, err := os.MkdirTemp("", "gatehouse-demo-")
		if err != nil {
			return err
		}
		dir = d
	} else if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if !o.Keep && o.Dir == "" {
		defer os.RemoveAll(dir)
	}
	out := o.Stdout
	say := func(format string, args ...any) { fmt.Fprintf(out, format+"\n", args...) }
	say("gatehouse demo in %s (everything on 127.0.0.1)\n", dir)

	// The components log every request and decision; keep them in a file so
	// the terminal shows the story, not the access log.
	logPath := filepath.Join(dir, "log")
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
	arch := o.Arch
	repo, err := BuildUpstream(filepath.Join(dir, "upstream"), upKey, arch)
	if err != nil {
		return fmt.Errorf("building the sample upstream: %w", err)
	}
	upURL, stopUp, err := ServeLoopback(ctx, http.FileServer(http.Dir(repo.Dir)))
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
	mirrorURL, stopServe, err := ServeLoopback(ctx, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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
	ca, _, err := sshkeys.Ensure(filepath.Join(bdir, "user_ca"), "gatehouse-demo-user-ca")
	if err != nil {
		return err
	}
	hostKey, _, err := sshkeys.Ensure(filepath.Join(bdir, "ssh_host_ed25519_key"), "gatehouse-demo-bastion")
	if err != nil {
		return err
	}
	targetKey, _, err := sshkeys.Ensure(filepath.Join(bdir, "target_host_key"), "gatehouse-demo-target")
	if err != nil {
		return err
	}
	admin, _, err := sshkeys.Ensure(filepath.Join(bdir, "admin"), "admin@demo")
	if err != nil {
		return err
	}
	cert, err := sshkeys.SignUserCert(ca, admin.PublicKey(), "admin@demo", []string{"admin"}, now.Add(-time.Minute), now.Add(8*time.Hour),
		map[string]string{"permit-port-forwarding": "", "permit-pty": ""})
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(bdir, "admin-cert.pub"), ssh.MarshalAuthorizedKey(cert), 0o644); err != nil {
		return err
	}
	target, err := NewTarget(targetKey, ca.PublicKey(), log)
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
	rp, err := newRecording(bdir, log)
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
			{Principals: []string{"admin"}, Proxy: []string{rp.target.Addr()}, Logins: []string{RecordedLogin}},
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
	// The same site serve and run show (see cmd/gatehouse's newStatusSite),
	// with sessions visible to loopback clients.
	page, err := statuspage.New(statuspage.Options{Status: statuspage.Config{SessionsFrom: []string{"127.0.0.0/8", "::1/128"}},
		Live: true, Log: log, RecordingsDir: bcfg.RecordingsDir, RecordingKey: bcfg.RecordingKey},
		metrics.New(stateDir, []mirror.Config{mcfg}, log), mirrors)
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

	sshConf, err := SSHConfig{Dir: bdir, BastionAddr: bln.Addr().String(), TargetAddr: target.Addr(),
		BastionKey: hostKey.PublicKey(), TargetKey: targetKey.PublicKey(),
		RecordedAddr: rp.target.Addr(), HostCA: rp.hostCA}.Write()
	if err != nil {
		return err
	}
	say("4. bastion on %s (user certificates from a throwaway CA only), sample target %s", bln.Addr(), target.Addr())
	say("5. recording proxy to a second target %s, which trusts only the bastion's upstream CA; recordings in %s", rp.target.Addr(), rp.dir)
	say("6. status page (mirror freshness, live and recorded sessions, replay in the browser): %s/", mirrorURL)

	failed := false
	if o.Check {
		say("\nChecking with the real tools:")
		failed = !Check(ctx, out, "apt-get update through the mirror", "apt-get", "-c", aptConf, "update", "--error-on=any") || failed
		failed = !Check(ctx, out, "apt-get install --download-only gatehouse-hello", "apt-get", "-c", aptConf, "install", "-y", "--download-only", "gatehouse-hello") || failed
		failed = !Check(ctx, out, "ssh -J through the bastion to the target", "ssh", "-F", sshConf, "demo-target", "uname") || failed
		if Check(ctx, out, "ssh -J through the bastion's recording proxy, as login "+RecordedLogin, "ssh", "-F", sshConf, "demo-recorded", "echo hello from a recorded session") {
			failed = !rp.check(ctx, out) || failed
			failed = !CheckStatusPage(out, mirrorURL, rp.exampleID()) || failed
		} else {
			failed = true
		}
		failed = !Refusals(ctx, out, log, repo.Dir, stateDir, mcfg, bdir, bln.Addr().String()) || failed
		failed = !Check(ctx, out, "apt-get update still works: the refused sync left the published mirror as it was", "apt-get", "-c", aptConf, "update", "--error-on=any") || failed
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
		RecordedLogin, rp.dir, rp.exampleID(), rp.keyPath+".pub", rp.allowedSigners, record.RecordingNamespace,
		filepath.Join(rp.dir, rp.exampleID(), record.SignatureName), filepath.Join(rp.dir, rp.exampleID(), record.ManifestName), mirrorURL)

	// The directory goes when the demo does (deferred above) unless the
	// operator chose it or --keep: say which, so nobody runs the commands
	// above against a directory that no longer exists.
	removed := !o.Keep && o.Dir == ""
	if o.ExitAfterCheck {
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
