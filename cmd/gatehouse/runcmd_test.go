package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"golang.org/x/crypto/ssh"

	"gatehouse/apt/apttest"
	"gatehouse/bastion/record"
	"gatehouse/cmd/gatehouse/demo"
)

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestInitThenRun is the appliance path: init a state dir, sync a mirror,
// then `gatehouse run` serves it to the real apt-get and lets the real ssh
// through its bastion; SIGTERM-equivalent cancellation stops everything.
func TestInitThenRun(t *testing.T) {
	for _, tool := range []string{"apt-get", "ssh", "dpkg-deb"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "gatehouse.toml")
	state := filepath.Join(dir, "state")
	if code, _, errs := ghRun(t, "--config", conf, "init", "--state-dir", state); code != 0 {
		t.Fatalf("init: %s", errs)
	}
	// Upstream, user CA, admin cert, a sample target.
	repo, err := apttest.Build(filepath.Join(dir, "up"), apttest.NewKey(t, "ed25519"), apttest.Suite{
		Name: "stable", Components: []string{"main"}, Architectures: []string{"amd64"},
		Packages: map[string][]apttest.Package{"main": {{Name: "tool", Version: "1.0", Arch: "amd64"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	up := apttest.Serve(t, repo.Dir)
	ca, _, _ := ensureSSHKey(filepath.Join(dir, "user_ca"), "ca")
	admin, _, _ := ensureSSHKey(filepath.Join(dir, "admin"), "admin")
	cert, err := signUserCert(ca, admin.PublicKey(), "admin-key", []string{"admin"}, time.Now().Add(-time.Minute), time.Now().Add(time.Hour),
		map[string]string{"permit-port-forwarding": ""})
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "admin-cert.pub"), ssh.MarshalAuthorizedKey(cert), 0o644)
	tkey, _, _ := ensureSSHKey(filepath.Join(dir, "target_key"), "target")
	target, err := demo.NewTarget(tkey, ca.PublicKey(), nil)
	if err != nil {
		t.Fatal(err)
	}
	tctx, tstop := context.WithCancel(context.Background())
	tdone := make(chan struct{})
	go func() { target.Serve(tctx); close(tdone) }()
	defer func() { tstop(); <-tdone }()

	serveAddr, bastionAddr := freePort(t), freePort(t)
	text, _ := os.ReadFile(conf)
	cfgText := strings.Replace(string(text), `listen = "127.0.0.1:8080"`, fmt.Sprintf("listen = %q", serveAddr), 1)
	cfgText = strings.Replace(cfgText, `listen = "0.0.0.0:2222"`, fmt.Sprintf("listen = %q", bastionAddr), 1)
	cfgText = strings.Replace(cfgText, `user_ca_keys = "/etc/gatehouse/user_ca.pub"`, fmt.Sprintf("user_ca_keys = %q", filepath.Join(dir, "user_ca.pub")), 1)
	cfgText += fmt.Sprintf("\n[[bastion.rule]]\nprincipals = [\"admin\"]\njump = [%q]\n", target.Addr())
	cfgText += fmt.Sprintf("\n[[mirror]]\nname = \"up\"\nurl = %q\nsuites = [\"stable\"]\ncomponents = [\"main\"]\narchitectures = [\"amd64\"]\nkeyring = %q\n", up.URL, repo.KeyringPath)
	os.WriteFile(conf, []byte(cfgText), 0o640)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int)
	var runErr bytes.Buffer
	go func() { done <- run(ctx, []string{"--config", conf, "run"}, &bytes.Buffer{}, &runErr) }()
	// Wait for the HTTP listener; nothing is published yet.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := scrape(serveAddr); err == nil {
			break
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("run did not serve: %s", runErr.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if v := metricValue(t, serveAddr, "gatehouse_mirror_published", `mirror="up"`); v != 0 {
		t.Fatalf("published before any sync: %v", v)
	}
	// A sync by another process (as from the timer) shows in run's metrics.
	if code, out, errs := ghRun(t, "--config", conf, "mirror", "sync"); code != 0 {
		t.Fatalf("sync: %s %s", out, errs)
	}
	time.Sleep(2100 * time.Millisecond) // the mirror collector's cache
	if v := metricValue(t, serveAddr, "gatehouse_mirror_published", `mirror="up"`); v != 1 {
		t.Fatalf("published after sync: %v", v)
	}
	if v := metricValue(t, serveAddr, "gatehouse_mirror_last_success_timestamp_seconds", `mirror="up"`); v < float64(time.Now().Add(-time.Minute).Unix()) {
		t.Fatalf("last success not recent: %v", v)
	}
	page, err := httpGet("http://" + serveAddr + "/")
	if err != nil || !strings.Contains(page, `id="m-up"`) || !strings.Contains(page, "published snapshot") {
		t.Fatalf("status page: %v\n%s", err, page)
	}
	apt := apttest.AptClient(t, fmt.Sprintf("deb [signed-by=%s] http://%s/up stable main", repo.KeyringPath, serveAddr))
	if out, err := apt.Update(); err != nil {
		t.Fatalf("apt-get update through run: %v\n%s", err, out)
	}
	if out, err := apt.InstallDownloadOnly("tool"); err != nil {
		t.Fatalf("apt-get install through run: %v\n%s", err, out)
	}
	sshConf, err := demo.WriteSSHConfig(dir, bastionAddr, target.Addr(), mustPub(t, filepath.Join(state, "ssh_host_ed25519_key.pub")), tkey.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("ssh", "-F", sshConf, "demo-target", "whoami").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "hello admin") {
		t.Fatalf("ssh -J through run: %v\n%s\n%s", err, out, runErr.String())
	}
	if v := metricValue(t, serveAddr, "gatehouse_bastion_auth_attempts_total", `result="accepted"`); v < 1 {
		t.Fatalf("accepted auth not counted: %v", v)
	}
	if v := metricValue(t, serveAddr, "gatehouse_bastion_forwards_total", `result="opened"`); v < 1 {
		t.Fatalf("forward not counted: %v", v)
	}
	if v := metricValue(t, serveAddr, "gatehouse_http_requests_total", `code="200"`); v < 3 {
		t.Fatalf("http requests not counted: %v", v)
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("run exited %d after shutdown: %s", code, runErr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("run did not stop within 30 s of shutdown")
	}
}

func mustPub(t *testing.T, path string) ssh.PublicKey {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	k, _, _, _, err := ssh.ParseAuthorizedKey(b)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func httpGet(url string) (string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != 200 {
		err = fmt.Errorf("%s: %s", url, resp.Status)
	}
	return string(b), err
}

// scrape fetches /metrics and parses it with Prometheus's own text parser.
func scrape(addr string) (map[string]*dto.MetricFamily, error) {
	text, err := httpGet("http://" + addr + "/metrics")
	if err != nil {
		return nil, err
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	return p.TextToMetricFamilies(strings.NewReader(text))
}

// metricValue returns the value of the series of family name whose labels
// contain every label="value" in want; 0 when absent.
func metricValue(t *testing.T, addr, name string, want ...string) float64 {
	t.Helper()
	fams, err := scrape(addr)
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	f := fams[name]
	if f == nil {
		return 0
	}
	sum := 0.0
	for _, m := range f.GetMetric() {
		var labels []string
		for _, l := range m.GetLabel() {
			labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
		}
		all := strings.Join(labels, ",")
		ok := true
		for _, w := range want {
			ok = ok && strings.Contains(all, w)
		}
		if !ok {
			continue
		}
		switch {
		case m.Gauge != nil:
			sum += m.Gauge.GetValue()
		case m.Counter != nil:
			sum += m.Counter.GetValue()
		}
	}
	return sum
}

// lockedBuffer is an io.Writer whose contents can be read while a command
// still writes to it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// liveSSH is a real ssh client with a pty shell held open on a pipe.
type liveSSH struct {
	cmd            *exec.Cmd
	stdin          io.WriteCloser
	stdout, stderr lockedBuffer
	done           chan error
}

// startShell runs `ssh -F conf -tt host` and waits until the target's shell
// greets it, so the session is live end to end.
func startShell(t *testing.T, conf, host string) *liveSSH {
	t.Helper()
	l := &liveSSH{cmd: exec.Command("ssh", "-F", conf, "-tt", host), done: make(chan error, 1)}
	var err error
	if l.stdin, err = l.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	l.cmd.Stdout, l.cmd.Stderr = &l.stdout, &l.stderr
	if err := l.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { l.done <- l.cmd.Wait() }()
	t.Cleanup(func() {
		l.cmd.Process.Kill()
		<-l.done
	})
	deadline := time.After(30 * time.Second)
	for !strings.Contains(l.stdout.String(), "gatehouse demo target: logged in as") {
		select {
		case err := <-l.done:
			l.done <- err
			t.Fatalf("ssh %s ended before its shell started: %v\nstdout: %s\nstderr: %s", host, err, l.stdout.String(), l.stderr.String())
		case <-deadline:
			t.Fatalf("ssh %s: no shell within 30 s\nstdout: %s\nstderr: %s", host, l.stdout.String(), l.stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	return l
}

// TestRunSIGTERMTellsSessions is issue 8's graceful stop for `gatehouse
// run`: with a recorded (proxy) session and a jump session open from the
// real ssh, cancelling run's context (main maps SIGTERM and SIGINT to that
// cancellation with signal.NotifyContext) tells the recorded session's admin
// why on stderr and ends it promptly, seals its recording so that it
// verifies (record.Verify and stock ssh-keygen -Y verify), and ends the
// jump session, which cannot be told anything: its SSH runs end to end
// between client and target, so the bastion can only close its channel.
func TestRunSIGTERMTellsSessions(t *testing.T) {
	for _, tool := range []string{"ssh", "ssh-keygen"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	if err := os.Mkdir(state, 0o700); err != nil {
		t.Fatal(err)
	}
	key := func(name string) ssh.Signer {
		t.Helper()
		s, _, err := ensureSSHKey(filepath.Join(dir, name), name)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	userCA, upCA, hostCA, admin := key("user_ca"), key("upstream_ca"), key("host_ca"), key("admin")
	hostKey, jumpKey, recKey := key("ssh_host_ed25519_key"), key("jump_target_key"), key("recorded_target_key")
	recording := key("recording_key")
	cert, err := signUserCert(userCA, admin.PublicKey(), "admin-sigterm", []string{"admin"}, time.Now().Add(-time.Minute), time.Now().Add(time.Hour),
		map[string]string{"permit-port-forwarding": "", "permit-pty": ""})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "admin-cert.pub"), ssh.MarshalAuthorizedKey(cert), 0o644); err != nil {
		t.Fatal(err)
	}

	// A jump target trusting the user CA; a recorded target trusting only
	// the upstream CA.
	jump, err := demo.NewTarget(jumpKey, userCA.PublicKey(), nil)
	if err != nil {
		t.Fatal(err)
	}
	recorded, err := demo.NewTarget(recKey, upCA.PublicKey(), nil)
	if err != nil {
		t.Fatal(err)
	}
	tctx, tstop := context.WithCancel(context.Background())
	var targets sync.WaitGroup
	targets.Go(func() { jump.Serve(tctx) })
	targets.Go(func() { recorded.Serve(tctx) })
	defer func() { tstop(); targets.Wait() }()
	rh, rp, _ := net.SplitHostPort(recorded.Addr())
	upKnown := filepath.Join(dir, "upstream_known_hosts")
	if err := os.WriteFile(upKnown, fmt.Appendf(nil, "[%s]:%s %s", rh, rp, ssh.MarshalAuthorizedKey(recKey.PublicKey())), 0o644); err != nil {
		t.Fatal(err)
	}

	serveAddr, bastionAddr := freePort(t), freePort(t)
	recDir := filepath.Join(state, "recordings")
	audit := filepath.Join(state, "audit.jsonl")
	conf := filepath.Join(dir, "gatehouse.toml")
	cfgText := fmt.Sprintf(`state_dir = %q
[serve]
listen = %q
[bastion]
listen = %q
host_keys = [%q]
user_ca_keys = %q
audit_log = %q
upstream_ca_key = %q
upstream_known_hosts = %q
host_ca_key = %q
recordings_dir = %q
recording_key = %q
min_free_space = "1MiB"
[[bastion.rule]]
principals = ["admin"]
jump = [%q]
[[bastion.rule]]
principals = ["admin"]
proxy = [%q]
logins = [%q]
`, state, serveAddr, bastionAddr, filepath.Join(dir, "ssh_host_ed25519_key"), filepath.Join(dir, "user_ca.pub"), audit,
		filepath.Join(dir, "upstream_ca"), upKnown, filepath.Join(dir, "host_ca"), recDir, filepath.Join(dir, "recording_key"),
		jump.Addr(), recorded.Addr(), demo.RecordedLogin)
	if err := os.WriteFile(conf, []byte(cfgText), 0o600); err != nil {
		t.Fatal(err)
	}
	sshConf, err := demo.SSHConfig{Dir: dir, BastionAddr: bastionAddr, TargetAddr: jump.Addr(),
		BastionKey: hostKey.PublicKey(), TargetKey: jumpKey.PublicKey(),
		RecordedAddr: recorded.Addr(), HostCA: hostCA.PublicKey()}.Write()
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan int, 1)
	var runErr lockedBuffer
	go func() { done <- run(ctx, []string{"--config", conf, "run"}, &bytes.Buffer{}, &runErr) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.Dial("tcp", bastionAddr)
		if err == nil {
			c.Close()
			break
		}
		select {
		case code := <-done:
			t.Fatalf("run exited %d before listening: %s", code, runErr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("run's bastion did not listen within 30 s: %s", runErr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}

	rec := startShell(t, sshConf, "demo-recorded")
	jmp := startShell(t, sshConf, "demo-target")

	stopped := time.Now()
	cancel() // what SIGTERM does: main's signal.NotifyContext cancels run's context
	const prompt = 10 * time.Second
	for _, c := range []struct {
		name string
		l    *liveSSH
	}{{"recorded", rec}, {"jump", jmp}} {
		select {
		case err := <-c.l.done:
			if err == nil {
				t.Errorf("%s session: ssh exited 0 although the server closed it", c.name)
			}
			t.Logf("%s session ended after %v: %v; stderr: %q", c.name, time.Since(stopped).Round(time.Millisecond), err, c.l.stderr.String())
			c.l.done <- err // for the cleanup
		case <-time.After(prompt):
			t.Fatalf("%s session still open %v after shutdown\nstderr: %s\nrun: %s", c.name, prompt, c.l.stderr.String(), runErr.String())
		}
	}
	if !strings.Contains(rec.stderr.String(), "gatehouse: session closed: server shutting down") {
		t.Errorf("the recorded session's admin was not told why:\nstderr: %q", rec.stderr.String())
	}
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("run exited %d after shutdown: %s", code, runErr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("run did not stop within 30 s of shutdown: %s", runErr.String())
	}

	// The recording was sealed by the shutdown, not left for Seal.
	metas, err := record.List(recDir)
	if err != nil || len(metas) != 1 {
		t.Fatalf("want one recording, got %d: %v", len(metas), err)
	}
	rdir := filepath.Join(recDir, metas[0].ID)
	if err := record.Verify(rdir, recording.PublicKey()); err != nil {
		t.Fatalf("recording after shutdown: %v", err)
	}
	m, _, err := record.ReadManifest(rdir)
	if err != nil {
		t.Fatal(err)
	}
	if m.Failed || m.Closed != "server shutting down" {
		t.Errorf("manifest: closed %q, failed %v (%s); want closed by the shutdown", m.Closed, m.Failed, m.Failure)
	}
	allowed := filepath.Join(dir, "allowed_signers")
	if err := os.WriteFile(allowed, []byte(record.AllowedSigners(recording.PublicKey())), 0o644); err != nil {
		t.Fatal(err)
	}
	mf, err := os.Open(filepath.Join(rdir, record.ManifestName))
	if err != nil {
		t.Fatal(err)
	}
	defer mf.Close()
	kg := exec.Command("ssh-keygen", "-Y", "verify", "-f", allowed, "-I", "gatehouse", "-n", record.RecordingNamespace,
		"-s", filepath.Join(rdir, record.SignatureName))
	kg.Stdin = mf
	if out, err := kg.CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen -Y verify: %v\n%s", err, out)
	}

	// The audit log is intact and says how each session ended.
	af, err := os.Open(audit)
	if err != nil {
		t.Fatal(err)
	}
	defer af.Close()
	if _, err := record.VerifyAudit(af); err != nil {
		t.Fatalf("audit log: %v", err)
	}
	auditText, _ := os.ReadFile(audit)
	for _, want := range []string{`"event":"proxy.end"`, `"reason":"server shutting down"`, `"event":"forward.open"`} {
		if !strings.Contains(string(auditText), want) {
			t.Errorf("audit log lacks %s:\n%s", want, auditText)
		}
	}
}
