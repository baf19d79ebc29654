package bastion

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gatehouse/bastion/internal/sshtest"
	"gatehouse/bastion/policy"
)

// fixture is one bastion (in process, on a loopback port) with a trusted
// ed25519 CA and a trusted RSA CA, an untrusted CA, a KRL, and a real sshd
// target that accepts targetKey.
type fixture struct {
	dir       string
	ca        *sshtest.CA
	rsaCA     *sshtest.CA
	otherCA   *sshtest.CA
	revKey    sshtest.Key // revoked by hash in the initial KRL
	rsaUser   sshtest.Key // RSA 2048: too weak
	krl       string
	caFile    string
	auditPath string
	srv       *Server
	port      int
	sshd      *sshtest.SSHD
	targetKey sshtest.Key
	known     string
	cfg       Config
	stopFn    func()
	logs      *syncBuf // the service log (also in the test log)
}

// stop shuts the bastion down (Serve returns, the audit log is closed).
func (f *fixture) stop(t testing.TB) { f.stopFn() }

var idSeq atomic.Int64

// shared holds keys made once per test binary: RSA key generation takes
// seconds on a busy machine.
type sharedState struct {
	once               sync.Once
	ok                 bool
	dir                string
	ca, rsaCA, otherCA *sshtest.CA
	revKey, targetKey  sshtest.Key
	rsaUser            sshtest.Key
	revFP              string
}

var shared sharedState

func sharedKeys(t testing.TB) *sharedState {
	t.Helper()
	shared.once.Do(func() {
		dir, err := os.MkdirTemp("", "bastion-test-keys")
		if err != nil {
			t.Fatal(err)
		}
		shared.dir = dir
		shared.ca = sshtest.NewCA(t, dir, "ed25519")
		shared.rsaCA = sshtest.NewCA(t, dir, "rsa:3072")
		shared.otherCA = sshtest.NewCA(t, dir, "ed25519")
		shared.revKey = sshtest.UserKey(t, dir, "ed25519")
		shared.targetKey = sshtest.UserKey(t, dir, "ed25519")
		shared.rsaUser = sshtest.UserKey(t, dir, "rsa:2048")
		shared.revFP = strings.Fields(sshtest.Run(t, "ssh-keygen", "-l", "-E", "sha256", "-f", shared.revKey.Pub))[1]
		shared.ok = true
	})
	if !shared.ok {
		t.Fatal("shared test keys could not be made (see the first failing test)")
	}
	return &shared
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.dir != "" {
		os.RemoveAll(shared.dir)
	}
	os.Exit(code)
}

// newFixture starts the bastion; mut may adjust the configuration.
func newFixture(t testing.TB, mut func(f *fixture, c *Config)) *fixture {
	t.Helper()
	sshtest.Require(t, "ssh", "sshd", "ssh-keygen")
	dir := t.TempDir()
	f := &fixture{dir: dir, known: filepath.Join(dir, "known_hosts")}
	sh := sharedKeys(t)
	f.ca, f.rsaCA, f.otherCA, f.revKey, f.targetKey, f.rsaUser = sh.ca, sh.rsaCA, sh.otherCA, sh.revKey, sh.targetKey, sh.rsaUser
	caFile := filepath.Join(dir, "user_ca.pub")
	f.caFile = caFile
	writeFile(t, caFile, catFiles(t, f.ca.Pub, f.rsaCA.Pub))
	fp := sh.revFP
	f.krl = filepath.Join(dir, "revoked.krl")
	f.writeKRL(t, "serial: 666", "id: revoked-id", "hash: "+fp)

	f.sshd = sshtest.StartSSHD(t, sshtest.SSHDOptions{AuthorizedKeys: []string{f.targetKey.Pub}})

	hostKey := sshtest.UserKey(t, dir, "ed25519")
	f.auditPath = filepath.Join(dir, "audit", "audit.jsonl")
	target := "127.0.0.1:" + strconv.Itoa(f.sshd.Port)
	f.cfg = Config{
		Listen:          "127.0.0.1:0",
		HostKeys:        []string{hostKey.Priv},
		UserCAKeys:      caFile,
		RevokedKeys:     f.krl,
		AuditLog:        f.auditPath,
		PenaltyFailures: -1,
		// Short, so that refused attempts (aggregated per source and
		// window in "preauth" lines) reach the audit log quickly.
		PenaltyWindow: Duration{100 * time.Millisecond},
		Rules: []policy.Rule{
			{Principals: []string{"admin"}, Jump: []string{target}},
			{Principals: []string{"wide"}, Jump: []string{"0.0.0.0/0:*", "localhost:*"}},
		},
	}
	if mut != nil {
		mut(f, &f.cfg)
	}
	f.start(t)
	return f
}

// start runs a bastion with f.cfg on a loopback port until the test ends
// (or f.stop).
func (f *fixture) start(t testing.TB) {
	t.Helper()
	f.logs = &syncBuf{}
	srv, err := New(f.cfg, slog.New(slog.NewTextHandler(io.MultiWriter(testWriter{t}, f.logs), nil)), time.Now)
	if err != nil {
		t.Fatal(err)
	}
	f.srv = srv
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.port = ln.Addr().(*net.TCPAddr).Port
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	f.stopFn = sync.OnceFunc(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		if err := srv.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	t.Cleanup(f.stopFn)
}

// writeKRL (re)writes the KRL from ssh-keygen -k spec lines, atomically.
func (f *fixture) writeKRL(t testing.TB, spec ...string) {
	t.Helper()
	specFile := filepath.Join(f.dir, fmt.Sprintf("krl-spec-%d", idSeq.Add(1)))
	writeFile(t, specFile, []byte(strings.Join(spec, "\n")+"\n"))
	tmp := f.krl + ".tmp"
	os.Remove(tmp)
	sshtest.Run(t, "ssh-keygen", "-q", "-k", "-f", tmp, "-s", f.ca.Pub, specFile)
	if err := os.Rename(tmp, f.krl); err != nil {
		t.Fatal(err)
	}
}

// userCert makes a fresh ed25519 user key and a certificate for it signed
// by ca with the given ssh-keygen options and a unique key id (unless opts
// has -I), returning key, certificate file and key id.
func (f *fixture) userCert(t testing.TB, ca *sshtest.CA, opts ...string) (sshtest.Key, string, string) {
	t.Helper()
	key := sshtest.UserKey(t, f.dir, "ed25519")
	cert, id := f.sign(t, ca, key, opts...)
	return key, cert, id
}

// sign certifies key with ca; it returns the certificate file and key id.
func (f *fixture) sign(t testing.TB, ca *sshtest.CA, key sshtest.Key, opts ...string) (string, string) {
	t.Helper()
	for i, o := range opts {
		if o == "-I" && i+1 < len(opts) {
			return ca.Sign(t, key.Pub, opts...), opts[i+1]
		}
	}
	id := fmt.Sprintf("%s-%d", strings.ReplaceAll(t.Name(), "/", "."), idSeq.Add(1))
	return ca.Sign(t, key.Pub, append([]string{"-I", id}, opts...)...), id
}

// sshBastion runs ssh against the bastion itself with key and cert.
func (f *fixture) sshBastion(t testing.TB, key sshtest.Key, cert, login string, args ...string) sshtest.Result {
	t.Helper()
	a := sshtest.ClientOptions(f.known, key.Priv, cert)
	a = append(a, "-p", strconv.Itoa(f.port), login+"@127.0.0.1")
	return sshtest.SSH(t, append(a, args...)...)
}

// sshBastionFrom is sshBastion from source address src (any 127.0.0.0/8
// address works on Linux): a source of its own, so that its refusals get
// their own "preauth" line instead of sharing one with other tests.
func (f *fixture) sshBastionFrom(t testing.TB, src string, key sshtest.Key, cert, login string, args ...string) sshtest.Result {
	t.Helper()
	a := sshtest.ClientOptions(f.known, key.Priv, cert)
	a = append(a, "-o", "BindAddress="+src, "-p", strconv.Itoa(f.port), login+"@127.0.0.1")
	return sshtest.SSH(t, append(a, args...)...)
}

// jumpConfig writes an ssh_config in which "target" is the sshd reached
// through "bastion" with key/cert as login.
func (f *fixture) jumpConfig(t testing.TB, key sshtest.Key, cert, login string) string {
	t.Helper()
	path := filepath.Join(f.dir, fmt.Sprintf("ssh_config_%d", idSeq.Add(1)))
	var certs []string
	if cert != "" {
		certs = []string{cert}
	}
	return sshtest.WriteConfig(t, path, f.known,
		sshtest.Host{Alias: "bastion", HostName: "127.0.0.1", Port: f.port, User: login, IdentityFiles: []string{key.Priv}, CertificateFiles: certs},
		sshtest.Host{Alias: "target", HostName: "127.0.0.1", Port: f.sshd.Port, User: f.sshd.User, IdentityFiles: []string{f.targetKey.Priv}, Extra: []string{"ProxyJump bastion"}},
		sshtest.Host{Alias: "target-direct", HostName: "127.0.0.1", Port: f.sshd.Port, User: f.sshd.User, IdentityFiles: []string{f.targetKey.Priv}},
	)
}

type event map[string]any

func (e event) str(k string) string {
	v, ok := e[k]
	if !ok {
		return ""
	}
	if s, ok := v.(string); ok {
		return s
	}
	return fmt.Sprint(v)
}

// events parses the audit log written so far (a partial last line is
// skipped).
func (f *fixture) events(t testing.TB) []event {
	t.Helper()
	data, err := os.ReadFile(f.auditPath)
	if err != nil {
		t.Fatal(err)
	}
	var out []event
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var e event
		if json.Unmarshal(sc.Bytes(), &e) == nil {
			out = append(out, e)
		}
	}
	return out
}

// withSamples adds, after each "preauth" line, one synthetic event per
// sample it holds: "auth" with result "refused" for a refused attempt
// (as the line a connection that authenticates gets), "preauth.sample"
// for other outcomes; each carries the line's source.
func withSamples(evs []event) []event {
	var out []event
	for _, e := range evs {
		out = append(out, e)
		if e.str("event") != "preauth" {
			continue
		}
		smp, _ := e["samples"].([]any)
		for _, x := range smp {
			m, _ := x.(map[string]any)
			se := event{"source": e["source"]}
			for k, v := range m {
				se[k] = v
			}
			if se.str("outcome") == outcomeAuthFailed {
				se["event"], se["result"] = "auth", "refused"
			} else {
				se["event"] = "preauth.sample"
			}
			out = append(out, se)
		}
	}
	return out
}

// waitEvent polls the audit log for an event matching all of want
// (field → exact value) and returns it; the samples of "preauth" lines
// count as events (see withSamples).
func (f *fixture) waitEvent(t testing.TB, name string, want map[string]string) event {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		for _, e := range withSamples(f.events(t)) {
			if e.str("event") != name {
				continue
			}
			ok := true
			for k, v := range want {
				if e.str(k) != v {
					ok = false
					break
				}
			}
			if ok {
				return e
			}
		}
		if time.Now().After(deadline) {
			var b strings.Builder
			for _, e := range f.events(t) {
				j, _ := json.Marshal(e)
				b.Write(j)
				b.WriteByte('\n')
			}
			t.Fatalf("no %q event with %v in the audit log:\n%s", name, want, b.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func catFiles(t testing.TB, paths ...string) []byte {
	t.Helper()
	var out []byte
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b...)
	}
	return out
}
