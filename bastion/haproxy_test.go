package bastion

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"gatehouse/bastion/internal/sshtest"
)

// haproxyConfig is the HAProxy configuration README.md documents for two
// bastions ("Bastions behind a load balancer"), with the test's ports.
// Keep the two identical.
const haproxyConfig = `global
    maxconn 4096
    stats socket {{DIR}}/haproxy.sock mode 600 level admin

defaults
    mode tcp
    timeout connect 5s
    # SSH sessions sit idle for long: HAProxy closes a connection idle
    # for longer than these.
    timeout client 8h
    timeout server 8h
    timeout check 2s

frontend ssh
    bind {{LISTEN}}
    default_backend bastions

backend bastions
    balance roundrobin
    # send-proxy-v2: each connection starts with a PROXY v2 header that
    # carries the client's address. "check" is a plain TCP connect,
    # which the bastion neither logs nor penalises.
    server bastion1 {{BASTION1}} send-proxy-v2 check inter 1s
    server bastion2 {{BASTION2}} send-proxy-v2 check inter 1s
`

// haproxyUnlisted adds, for the test only, a path to bastion1 from a
// source address that is not in proxy_protocol_from.
const haproxyUnlisted = `
frontend unlisted
    bind {{UNLISTED}}
    default_backend unlisted

backend unlisted
    server bastion1 {{BASTION1}} send-proxy-v2 source 127.0.0.9
`

// haproxy is a real HAProxy in the foreground (haproxy -db), stopped
// when the test ends.
type haproxy struct {
	port, unlistedPort int
	sock               string
	log                *syncBuf
}

func startHAProxy(t *testing.T, b1, b2 int) *haproxy {
	t.Helper()
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		if _, e := os.Stat("/usr/sbin/haproxy"); e != nil {
			t.Skip("haproxy not installed (apt-get install haproxy; test.sh does)")
		}
		bin = "/usr/sbin/haproxy"
	}
	dir := t.TempDir()
	h := &haproxy{port: sshtest.FreePort(t), unlistedPort: sshtest.FreePort(t), sock: filepath.Join(dir, "haproxy.sock"), log: &syncBuf{}}
	cfg := strings.NewReplacer(
		"{{DIR}}", dir,
		"{{LISTEN}}", "127.0.0.1:"+strconv.Itoa(h.port),
		"{{UNLISTED}}", "127.0.0.1:"+strconv.Itoa(h.unlistedPort),
		"{{BASTION1}}", "127.0.0.1:"+strconv.Itoa(b1),
		"{{BASTION2}}", "127.0.0.1:"+strconv.Itoa(b2),
	).Replace(haproxyConfig + haproxyUnlisted)
	path := filepath.Join(dir, "haproxy.cfg")
	writeFile(t, path, []byte(cfg))
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "-f", path, "-db")
	cmd.Stdout, cmd.Stderr = h.log, h.log
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	// Ready when both bastions are UP (the first checks passed, so the
	// balancer really uses both).
	deadline := time.Now().Add(20 * time.Second)
	for {
		st := h.status()
		if st["bastion1"] == "UP" && st["bastion2"] == "UP" {
			return h
		}
		select {
		case <-done:
			t.Fatalf("haproxy exited:\n%s", h.log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("haproxy backends not UP: %v\n%s", st, h.log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// status asks HAProxy's stats socket for the state of each bastions
// server.
func (h *haproxy) status() map[string]string {
	out := map[string]string{}
	c, err := net.DialTimeout("unix", h.sock, time.Second)
	if err != nil {
		return out
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	fmt.Fprint(c, "show stat\n")
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		f := strings.Split(sc.Text(), ",")
		if len(f) > 17 && f[0] == "bastions" {
			out[f[1]] = f[17]
		}
	}
	return out
}

// TestHAProxyTwoBastions: a real HAProxy with send-proxy-v2 in front of
// two bastions that share host key, CA and KRL. The client's address
// (127.0.0.5, not HAProxy's 127.0.0.1) is what the certificate's
// source-address, the audit log and penalties see; a header from an
// address not in proxy_protocol_from is refused; a KRL deployed to both
// closes the revoked sessions on both; HAProxy's health checks leave no
// trace and never penalise it.
func TestHAProxyTwoBastions(t *testing.T) {
	dir := t.TempDir()
	hostKey := sshtest.UserKey(t, dir, "ed25519") // one host key for the pair
	lb := func(f *fixture, c *Config) {
		c.HostKeys = []string{hostKey.Priv}
		c.ProxyProtocolFrom = []string{"127.0.0.1/32"}
		c.PenaltyFailures = 2
		c.PenaltyWindow = Duration{time.Minute}
		c.Penalty = Duration{time.Minute}
	}
	f1 := newFixture(t, lb)
	target := "127.0.0.1:" + strconv.Itoa(f1.sshd.Port)
	f2 := newFixture(t, func(f *fixture, c *Config) {
		lb(f, c)
		c.Rules[0].Jump = append(c.Rules[0].Jump, target) // the pair's rules name the same target
	})
	bastions := []*fixture{f1, f2}
	h := startHAProxy(t, f1.port, f2.port)

	known := filepath.Join(dir, "known_hosts")
	// jump runs "ssh -J" from client address src through HAProxy to
	// f1's sshd (background when bg).
	sshConf := func(key sshtest.Key, cert, src string, port int) string {
		return sshtest.WriteConfig(t, filepath.Join(dir, fmt.Sprintf("ssh_config_%d", idSeq.Add(1))), known,
			sshtest.Host{Alias: "bastion", HostName: "127.0.0.1", Port: port, User: "admin",
				IdentityFiles: []string{key.Priv}, CertificateFiles: []string{cert}, Extra: []string{"BindAddress " + src}},
			sshtest.Host{Alias: "target", HostName: "127.0.0.1", Port: f1.sshd.Port, User: f1.sshd.User,
				IdentityFiles: []string{f1.targetKey.Priv}, Extra: []string{"ProxyJump bastion"}},
		)
	}
	// onEach repeats do until every bastion's audit log has a matching
	// event (HAProxy balances round-robin; four tries are plenty).
	onEach := func(t *testing.T, name string, want map[string]string, do func()) []event {
		t.Helper()
		for try := 0; ; try++ {
			do()
			var got []event
			time.Sleep(200 * time.Millisecond)
			for _, b := range bastions {
				for _, e := range b.events(t) {
					if e.str("event") != name {
						continue
					}
					ok := true
					for k, v := range want {
						if e.str(k) != v {
							ok = false
						}
					}
					if ok {
						got = append(got, e)
						break
					}
				}
			}
			if len(got) == len(bastions) {
				return got
			}
			if try == 4 {
				t.Fatalf("after %d tries %d of %d bastions have a %s event with %v\nhaproxy: %s", try+1, len(got), len(bastions), name, want, h.log.String())
			}
		}
	}

	t.Run("source-address-is-the-client", func(t *testing.T) {
		key, cert, id := f1.userCert(t, f1.ca, "-n", "admin", "-V", "-1m:+1h", "-O", "source-address=127.0.0.5/32")
		cfg := sshConf(key, cert, "127.0.0.5", h.port)
		evs := onEach(t, "conn.start", map[string]string{}, func() {
			if r := sshtest.SSH(t, "-F", cfg, "target", "echo", "through-haproxy"); r.Exit != 0 || strings.TrimSpace(r.Stdout) != "through-haproxy" {
				t.Fatalf("login through HAProxy from 127.0.0.5 with source-address=127.0.0.5/32: %s", r)
			}
		})
		for _, e := range evs {
			if !strings.HasPrefix(e.str("source"), "127.0.0.5:") {
				t.Errorf("conn.start source %q, want the client's 127.0.0.5", e.str("source"))
			}
		}
		for _, b := range bastions {
			b.waitEvent(t, "auth", map[string]string{"key_id": id, "result": "accepted"})
		}
		// A certificate bound to HAProxy's own address is refused: the
		// bastion does not take the balancer for the client.
		key2, cert2, id2 := f1.userCert(t, f1.ca, "-n", "admin", "-V", "-1m:+1h", "-O", "source-address=127.0.0.1/32")
		if r := sshtest.SSH(t, "-F", sshConf(key2, cert2, "127.0.0.5", h.port), "target", "true"); r.Exit == 0 {
			t.Fatalf("certificate for the balancer's address accepted from client 127.0.0.5: %s", r)
		}
		found := false
		for _, b := range bastions {
			for _, e := range withSamples(b.events(t)) {
				if e.str("key_id") == id2 && e.str("reason") == "source-address" {
					found = true
				}
			}
		}
		if !found {
			f1.waitEvent(t, "auth", map[string]string{"key_id": id2, "reason": "source-address"})
		}
	})

	t.Run("header-from-unlisted-address", func(t *testing.T) {
		key, cert, _ := f1.userCert(t, f1.ca, "-n", "admin", "-V", "-1m:+1h")
		r := sshtest.SSH(t, "-F", sshConf(key, cert, "127.0.0.8", h.unlistedPort), "target", "true")
		if r.Exit == 0 {
			t.Fatalf("login through a balancer at 127.0.0.9, which is not in proxy_protocol_from: %s", r)
		}
		e := f1.waitEvent(t, "preauth", map[string]string{"source": "127.0.0.9"})
		if !strings.Contains(fmt.Sprint(e["samples"]), "proxy_protocol_from") {
			t.Errorf("refusal does not name proxy_protocol_from: %v", e)
		}
		if strings.Contains(f1.allEvents(t), "127.0.0.8") {
			t.Error("the address in the refused header reached the audit log")
		}
	})

	t.Run("penalties-are-per-client", func(t *testing.T) {
		bad, badCert, _ := f1.userCert(t, f1.otherCA, "-n", "admin", "-V", "-1m:+1h")
		badConf := sshConf(bad, badCert, "127.0.0.6", h.port)
		for try := 0; ; try++ {
			if r := sshtest.SSH(t, "-F", badConf, "target", "true"); r.Exit == 0 {
				t.Fatalf("untrusted CA accepted: %s", r)
			}
			_, p1 := f1.srv.lim.penalisedUntil("127.0.0.6")
			_, p2 := f2.srv.lim.penalisedUntil("127.0.0.6")
			if p1 && p2 {
				break
			}
			if try == 8 {
				t.Fatalf("127.0.0.6 not penalised on both bastions after %d failures (%v %v)", try+1, p1, p2)
			}
		}
		// 127.0.0.6 is now refused everywhere, even with a good
		// certificate; 127.0.0.5, through the same HAProxy, logs in on
		// both bastions.
		good, goodCert, id := f1.userCert(t, f1.ca, "-n", "admin", "-V", "-1m:+1h")
		if r := sshtest.SSH(t, "-F", sshConf(good, goodCert, "127.0.0.6", h.port), "target", "true"); r.Exit == 0 {
			t.Fatalf("penalised client logged in: %s", r)
		}
		onEach(t, "auth", map[string]string{"key_id": id, "result": "accepted"}, func() {
			if r := sshtest.SSH(t, "-F", sshConf(good, goodCert, "127.0.0.5", h.port), "target", "true"); r.Exit != 0 {
				t.Fatalf("127.0.0.5 locked out by 127.0.0.6's failures: %s", r)
			}
		})
		for i, b := range bastions {
			if _, pen := b.srv.lim.penalisedUntil("127.0.0.1"); pen {
				t.Errorf("bastion%d penalised HAProxy's address", i+1)
			}
			b.waitEvent(t, "preauth", map[string]string{"source": "127.0.0.6"})
		}
	})

	t.Run("krl-on-both-closes-sessions-on-both", func(t *testing.T) {
		key, cert, id := f1.userCert(t, f1.ca, "-n", "admin", "-V", "-1m:+1h", "-z", "4243")
		cfg := sshConf(key, cert, "127.0.0.5", h.port)
		var procs []*sshtest.Proc
		onEach(t, "forward.open", map[string]string{"key_id": id}, func() {
			p := sshtest.StartSSH(t, "-F", cfg, "target", "sleep", "50")
			procs = append(procs, p)
			deadline := time.Now().Add(10 * time.Second)
			for n := len(procs); countEvents(bastions, t, "forward.open", id) < n && time.Now().Before(deadline); {
				time.Sleep(50 * time.Millisecond)
			}
		})
		for _, b := range bastions {
			b.writeKRL(t, "serial: 666", "id: revoked-id", "hash: "+shared.revFP, "serial: 4243")
		}
		for i, p := range procs {
			select {
			case <-p.Done():
			case <-time.After(15 * time.Second):
				t.Fatalf("session %d still open 15 s after the KRL update", i)
			}
			if r := p.Wait(); r.Exit == 0 {
				t.Errorf("session %d ended cleanly: %s", i, r)
			}
		}
		for _, b := range bastions {
			e := b.waitEvent(t, "conn.end", map[string]string{"key_id": id})
			if !strings.Contains(e.str("reason"), "revoked") || !strings.HasPrefix(e.str("source"), "127.0.0.5:") {
				t.Errorf("conn.end: %v", e)
			}
		}
	})

	// HAProxy checked both bastions every second throughout: none of it
	// is in their audit logs.
	for i, b := range bastions {
		if n := b.countSource(t, "127.0.0.1"); n != 0 {
			t.Errorf("bastion%d has %d audit lines from HAProxy's own address", i+1, n)
		}
	}
}

// countEvents counts events named name for key id over the bastions.
func countEvents(bs []*fixture, t testing.TB, name, id string) int {
	n := 0
	for _, b := range bs {
		for _, e := range b.events(t) {
			if e.str("event") == name && e.str("key_id") == id {
				n++
			}
		}
	}
	return n
}

// TestHAProxyConfigInREADME keeps README's HAProxy configuration the one
// TestHAProxyTwoBastions runs (with documentation addresses).
func TestHAProxyConfigInREADME(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	want := strings.NewReplacer(
		"{{DIR}}/haproxy.sock", "/run/haproxy/admin.sock",
		"{{LISTEN}}", "192.0.2.10:22",
		"{{BASTION1}}", "10.0.1.21:2222",
		"{{BASTION2}}", "10.0.1.22:2222",
	).Replace(haproxyConfig)
	if !strings.Contains(string(readme), "```\n"+want+"```\n") {
		t.Errorf("README.md (\"Bastions behind a load balancer\") does not hold the tested HAProxy configuration:\n%s", want)
	}
}

// TestHAProxyRecordedSession: a recorded proxy session through a real
// HAProxy keeps the client's address as the recording's source and the
// balancer as its raw_peer, and the audit log's proxy events name the
// client.
func TestHAProxyRecordedSession(t *testing.T) {
	e := newProxyEnv(t)
	b := newProxyBastion(t, e, func(c *Config) { c.ProxyProtocolFrom = []string{"127.0.0.1"} })
	h := startHAProxy(t, b.port, b.port)
	key, cert, id := b.admin(t, "-O", "source-address=127.0.0.5/32")
	known := filepath.Join(b.dir, "known_lb")
	writeFile(t, known, catFiles(t, e.clientKnow))
	cfg := sshtest.WriteConfig(t, filepath.Join(b.dir, "ssh_config_lb"), known,
		sshtest.Host{Alias: "bastion", HostName: "127.0.0.1", Port: h.port, User: "admin",
			IdentityFiles: []string{key.Priv}, CertificateFiles: []string{cert}, Extra: []string{"BindAddress 127.0.0.5"}},
		sshtest.Host{Alias: "web1", HostName: "127.0.0.1", Port: e.sshd.Port, User: e.sshd.User,
			IdentityFiles: []string{key.Priv}, CertificateFiles: []string{cert}, Extra: []string{"ProxyJump bastion", "StrictHostKeyChecking yes"}},
	)
	if r := sshtest.SSH(t, "-F", cfg, "web1", "echo recorded-through-haproxy"); r.Exit != 0 || r.Stdout != "recorded-through-haproxy\n" {
		t.Fatalf("recorded session through HAProxy: %s", r)
	}
	dir, end := b.recordingOf(t, id)
	if !strings.HasPrefix(end.str("source"), "127.0.0.5:") {
		t.Errorf("proxy.end source %q, want the client's 127.0.0.5", end.str("source"))
	}
	data, err := os.ReadFile(filepath.Join(dir, "meta.json"))
	if err != nil {
		t.Fatal(err)
	}
	var meta struct {
		Source  string `json:"source"`
		RawPeer string `json:"raw_peer"`
	}
	if err := json.Unmarshal(data, &meta); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(meta.Source, "127.0.0.5:") || !strings.HasPrefix(meta.RawPeer, "127.0.0.1:") {
		t.Errorf("meta.json source %q raw_peer %q; want the client 127.0.0.5 and the balancer 127.0.0.1", meta.Source, meta.RawPeer)
	}
}
