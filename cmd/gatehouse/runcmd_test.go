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
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"golang.org/x/crypto/ssh"

	"gatehouse/apt/apttest"
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
	target, err := newDemoTarget(tkey, ca.PublicKey(), nil)
	if err != nil {
		t.Fatal(err)
	}
	tctx, tstop := context.WithCancel(context.Background())
	tdone := make(chan struct{})
	go func() { target.serve(tctx); close(tdone) }()
	defer func() { tstop(); <-tdone }()

	serveAddr, bastionAddr := freePort(t), freePort(t)
	text, _ := os.ReadFile(conf)
	cfgText := strings.Replace(string(text), `listen = "127.0.0.1:8080"`, fmt.Sprintf("listen = %q", serveAddr), 1)
	cfgText = strings.Replace(cfgText, `listen = "0.0.0.0:2222"`, fmt.Sprintf("listen = %q", bastionAddr), 1)
	cfgText = strings.Replace(cfgText, `user_ca_keys = "/etc/gatehouse/user_ca.pub"`, fmt.Sprintf("user_ca_keys = %q", filepath.Join(dir, "user_ca.pub")), 1)
	cfgText += fmt.Sprintf("\n[[bastion.rule]]\nprincipals = [\"admin\"]\njump = [%q]\n", target.addr())
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
	sshConf, err := writeDemoSSHConfig(dir, bastionAddr, target.addr(), mustPub(t, filepath.Join(state, "ssh_host_ed25519_key.pub")), tkey.PublicKey())
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
