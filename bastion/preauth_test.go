package bastion

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"gatehouse/bastion/internal/sshtest"
	"gatehouse/bastion/record"
)

// ipPort matches an IPv4 address with a port, as Go's resolver errors
// name their DNS server.
var ipPort = regexp.MustCompile(`\d+\.\d+\.\d+\.\d+:\d+`)

// dnsServer is a loopback UDP DNS server that counts the queries it gets
// and answers A queries for the names in a with that address, everything
// else with NXDOMAIN (AAAA queries for a known name: no data).
type dnsServer struct {
	addr    string
	queries atomic.Int64
	a       map[string]netip.Addr
}

func startDNS(t testing.TB, a map[string]netip.Addr) *dnsServer {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	d := &dnsServer{addr: pc.LocalAddr().String(), a: a}
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			d.queries.Add(1)
			if resp := d.answer(buf[:n]); resp != nil {
				pc.WriteTo(resp, from)
			}
		}
	}()
	return d
}

// answer builds the reply to one query: header, the question, and an A
// record if the name is known.
func (d *dnsServer) answer(q []byte) []byte {
	if len(q) < 12 {
		return nil
	}
	i := 12
	var labels []string
	for i < len(q) && q[i] != 0 {
		l := int(q[i])
		if i+1+l > len(q) {
			return nil
		}
		labels = append(labels, string(q[i+1:i+1+l]))
		i += 1 + l
	}
	if i+5 > len(q) {
		return nil
	}
	qtype := int(q[i+1])<<8 | int(q[i+2])
	end := i + 5
	resp := append([]byte(nil), q[:end]...)
	resp[2] |= 0x80 // QR: a response
	resp[3] = 0x80  // RA, RCODE 0
	resp[6], resp[7], resp[8], resp[9], resp[10], resp[11] = 0, 0, 0, 0, 0, 0
	ip, known := d.a[strings.ToLower(strings.Join(labels, "."))]
	switch {
	case !known:
		resp[3] |= 3 // NXDOMAIN
	case qtype == 1:
		resp[7] = 1 // one answer
		resp = append(resp, 0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4)
		b := ip.As4()
		resp = append(resp, b[:]...)
	}
	return resp
}

// TestNoDNSBeforeCA: a certificate from an untrusted CA with the proxy
// login root@name.example:22 makes the bastion send no DNS query (the
// issue: it resolved the name before checking the CA, a DNS channel out of
// the segment and seconds of blocking per attempt) and is refused fast.
// The same login with a trusted certificate does resolve: the DNS server
// sees that, so the first half can fail. Neither refusal shows the client
// the DNS server's address.
func TestNoDNSBeforeCA(t *testing.T) {
	dns := startDNS(t, nil)
	e := newProxyEnv(t)
	b := newProxyBastion(t, e, func(c *Config) { c.DNSServer = dns.addr })
	sh := sharedKeys(t)

	key, cert, _ := b.userCert(t, sh.otherCA, "-n", "admin,root", "-V", "-1m:+1h")
	start := time.Now()
	r := b.sshBastion(t, key, cert, "root@name.example:22", "true")
	took := time.Since(start)
	if r.Exit != 255 || !strings.Contains(r.Stderr, "Permission denied") {
		t.Fatalf("untrusted CA: %s", r)
	}
	time.Sleep(300 * time.Millisecond)
	if n := dns.queries.Load(); n != 0 {
		t.Fatalf("the bastion sent %d DNS queries for a certificate from an untrusted CA", n)
	}
	if took > 3*time.Second {
		t.Errorf("refusal took %v", took)
	}
	b.waitEvent(t, "auth", map[string]string{"reason": "untrusted-ca", "login": "root@name.example:22"})

	// Control: a trusted certificate gets the lookup (and a refusal that
	// says the name does not resolve, without the DNS server's address).
	key2, cert2, id2 := b.admin(t)
	r = b.sshBastion(t, key2, cert2, "root@name.example:22", "true")
	if r.Exit != 255 {
		t.Fatalf("trusted certificate to an unresolvable target: %s", r)
	}
	if dns.queries.Load() == 0 {
		t.Fatal("control: the trusted certificate's proxy login sent no DNS query; the test cannot see queries")
	}
	ev := b.waitEvent(t, "auth", map[string]string{"key_id": id2, "result": "refused"})
	if !strings.Contains(ev.str("detail"), "no such host") || ipPort.MatchString(ev.str("detail")) {
		t.Errorf("refusal detail %q: want \"no such host\" without the DNS server's address", ev.str("detail"))
	}
}

// TestJumpRefusalHidesAddresses: a jump to a name that does not resolve is
// refused with "no such host"; the client is not told the address of the
// bastion's DNS server (the issue: Go's message names it), while the
// service log keeps the full error for the operator.
func TestJumpRefusalHidesAddresses(t *testing.T) {
	// 192.0.2.1 (TEST-NET-1) is allowed for "wide" and never answers.
	dns := startDNS(t, map[string]netip.Addr{"silent.example": netip.MustParseAddr("192.0.2.1")})
	f := newFixture(t, func(_ *fixture, c *Config) {
		c.DNSServer = dns.addr
		c.DialTimeout.Duration = time.Second
	})
	key, cert, _ := f.userCert(t, f.ca, "-n", "wide", "-V", "-1m:+1h")
	r := f.sshBastion(t, key, cert, "wide", "-W", "name.example:22")
	if r.Exit == 0 {
		t.Fatalf("jump to an unresolvable name succeeded: %s", r)
	}
	if !strings.Contains(r.Stderr, "no such host") {
		t.Errorf("client was not told the name does not resolve: %s", r.Stderr)
	}
	// Go's resolver names the server it asked ("lookup x on
	// 10.0.0.53:53: ..."), the one in resolv.conf even when dns_server
	// redirects the query: no address may reach the client.
	if ipPort.MatchString(r.Stderr) || strings.Contains(r.Stderr, "lookup ") {
		t.Errorf("client was shown a DNS server's address: %s", r.Stderr)
	}
	if dns.queries.Load() == 0 {
		t.Error("no DNS query reached dns_server")
	}
	waitLog(t, f.logs, "DNS lookup failed")
	// A name that resolves but whose address does not answer: the client
	// learns that connecting failed, not the address behind the name.
	r = f.sshBastion(t, key, cert, "wide", "-W", "silent.example:22")
	if r.Exit == 0 || !strings.Contains(r.Stderr, "connecting to silent.example:22 failed") {
		t.Fatalf("jump to an address that does not answer: %s", r)
	}
	if strings.Contains(r.Stderr, "192.0.2.1") {
		t.Errorf("client was shown the resolved address: %s", r.Stderr)
	}
	f.waitEvent(t, "forward.denied", map[string]string{"destination": "silent.example:22", "resolved_ip": "192.0.2.1"})
	// A jump refusal by policy reaches the service log too.
	key2, cert2, _ := f.userCert(t, f.ca, "-n", "admin", "-V", "-1m:+1h")
	f.sshBastion(t, key2, cert2, "admin", "-W", "192.0.2.1:22")
	waitLog(t, f.logs, "bastion: refused")
}

func waitLog(t testing.TB, b *syncBuf, want string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(b.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the service log:\n%s", want, b.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestAuditDiskFull: when the audit log's file system fills up, logins
// are refused (fail closed) with one error line in the service log, not
// one per connection; once space is freed, logins work again without a
// restart (the issue: the write error was sticky) and the audit log
// records the gap in an "audit.gap" line; the chain still verifies.
func TestAuditDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	mnt := filepath.Join(t.TempDir(), "auditfs")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", mnt).Run() })
	f := newFixture(t, func(f *fixture, c *Config) {
		f.auditPath = filepath.Join(mnt, "audit.jsonl")
		c.AuditLog = f.auditPath
	})
	key, cert, _ := f.userCert(t, f.ca, "-n", "admin", "-V", "-1m:+1h")
	cfg := f.jumpConfig(t, key, cert, "admin")
	login := func() sshtest.Result { return sshtest.SSH(t, "-F", cfg, "target", "true") }
	if r := login(); r.Exit != 0 {
		t.Fatalf("login before the disk is full: %s", r)
	}

	// Fill the file system.
	filler := filepath.Join(mnt, "filler")
	fh, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 4096)
	for {
		if _, err := fh.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			break
		}
	}
	fh.Close()
	// The audit file's last page may still take a line or two.
	refused := 0
	for i := 0; i < 10 && refused == 0; i++ {
		if r := login(); r.Exit != 0 {
			refused++
		}
	}
	if refused == 0 {
		t.Fatal("logins still accepted with the audit log's disk full")
	}
	for i := range 4 {
		if r := login(); r.Exit == 0 {
			t.Fatalf("login %d accepted while the audit log cannot be written", i)
		}
	}
	if n := strings.Count(f.logs.String(), "new logins are refused until it can"); n != 1 {
		t.Errorf("%d 'cannot be written' lines in the service log for 5 refused logins, want 1:\n%s", n, f.logs.String())
	}
	if n := strings.Count(f.logs.String(), "level=ERROR"); n != 1 {
		t.Errorf("%d ERROR lines in the service log while the disk was full, want a rate-limited one or two", n)
	}

	// Free the space: the next login works, no restart.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if r := login(); r.Exit != 0 {
		t.Fatalf("login after space was freed: %s", r)
	}
	gap := f.waitEvent(t, "audit.gap", nil)
	if n, _ := strconv.Atoi(gap.str("lost_events")); n < 1 || !strings.Contains(gap.str("error"), "no space left") {
		t.Errorf("audit.gap %v: want lost_events >= 1 and the cause", gap)
	}
	waitLog(t, f.logs, "writable again")
	f.stop(t)
	fa, err := os.Open(f.auditPath)
	if err != nil {
		t.Fatal(err)
	}
	defer fa.Close()
	if n, err := record.VerifyAudit(fa); err != nil {
		t.Fatalf("audit log after the gap does not verify (%d lines): %v", n, err)
	} else {
		t.Logf("audit log verifies: %d lines", n)
	}
}

// TestApplyReload: a reloaded [bastion] table applies every setting that
// can change live (the limits at once) and names each changed one that
// needs a restart (the issue: newly added proxy settings were silently
// ignored); an invalid one changes nothing.
func TestApplyReload(t *testing.T) {
	f := newFixture(t, nil)
	nc := f.cfg
	nc.MaxUnauthenticatedPerSource = 1
	nc.PenaltyFailures = 3
	nc.DNSServer = "127.0.0.1:53"
	nc.Listen = "127.0.0.1:1"
	nc.RecordingsDir = filepath.Join(f.dir, "rec")
	applied, restart, err := f.srv.Apply(nc)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(applied, ",") + " | " + strings.Join(restart, ",")
	for _, k := range []string{"max_unauthenticated_per_source", "penalty_failures", "dns_server"} {
		if !strings.Contains(strings.Join(applied, ","), k) {
			t.Errorf("%s not applied: %s", k, got)
		}
	}
	for _, k := range []string{"listen", "recordings_dir"} {
		if !strings.Contains(strings.Join(restart, ","), k) {
			t.Errorf("%s not named as needing a restart: %s", k, got)
		}
	}
	// The new per-source cap is in force: a second idle connection from
	// one source is turned away.
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(f.port))
	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	time.Sleep(200 * time.Millisecond)
	if line := dialLine(t, addr); !strings.Contains(line, whyPerSource) {
		t.Errorf("after reload a second connection got %q", line)
	}
	f.waitEvent(t, "reload", map[string]string{"what": "config", "result": "ok"})

	bad := nc
	bad.PenaltyWindow.Duration = -time.Second
	if _, _, err := f.srv.Apply(bad); err == nil {
		t.Error("invalid configuration applied")
	}
	if f.srv.conf().PenaltyWindow.Duration <= 0 {
		t.Error("invalid configuration half-applied")
	}
}
