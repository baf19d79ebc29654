package bastion

import (
	"bufio"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"gatehouse/bastion/internal/sshtest"
)

func TestLimiter(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	clock := func() time.Time { return now }
	cfg := Config{MaxUnauthenticated: 3, MaxUnauthenticatedPerSource: 2, PenaltyFailures: 2}
	cfg.PenaltyWindow.Duration = time.Minute
	cfg.Penalty.Duration = 30 * time.Second
	l := newLimiter(&cfg, clock)
	l.rand = func() float64 { return 0.99 } // the early drop's coin always says "keep"
	a := netip.MustParseAddr("192.0.2.1")
	b := netip.MustParseAddr("192.0.2.2")
	c := netip.MustParseAddr("192.0.2.3")

	mustAdmit := func(ip netip.Addr, want bool) {
		t.Helper()
		if ok, why := l.admit(ip); ok != want {
			t.Fatalf("admit(%v) = %v (%s), want %v", ip, ok, why, want)
		}
	}
	mustAdmit(a, true)
	mustAdmit(a, true)
	mustAdmit(a, false) // per source
	mustAdmit(b, true)
	mustAdmit(c, false) // overall
	l.release(b, false)
	mustAdmit(c, true)
	l.release(c, false)

	// Two failures within the window: a is blocked for the penalty.
	l.release(a, true)
	l.release(a, true)
	mustAdmit(a, false)
	now = now.Add(31 * time.Second)
	mustAdmit(a, true)
	l.release(a, false)

	// Failures further apart than the window do not add up.
	mustAdmit(b, true)
	l.release(b, true)
	now = now.Add(2 * time.Minute)
	mustAdmit(b, true)
	l.release(b, true)
	mustAdmit(b, true)
	l.release(b, false)

	if l.total != 0 {
		t.Errorf("total = %d after all releases", l.total)
	}
	// Only b has a failure inside the window; a and c are forgotten.
	if len(l.src) != 1 || l.src[sourceKey(b)] == nil {
		t.Errorf("source records: %v", l.src)
	}
}

// TestLimiterFair: sources that already hold unauthenticated connections
// are dropped first (MaxStartups' random early drop), so a fresh source is
// admitted until the global cap is reached; IPv6 sources count per /64.
func TestLimiterFair(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	cfg := Config{MaxUnauthenticated: 100, MaxUnauthenticatedPerSource: 10, PenaltyFailures: -1}
	l := newLimiter(&cfg, func() time.Time { return now })
	coin := 0.0
	l.rand = func() float64 { return coin }

	// Ten flooding sources: below half the cap nobody is dropped; from
	// 50 on the coin decides for sources that already hold some, from 75
	// on they are always refused.
	coin = 0.99
	for range 20 {
		for s := range 10 {
			l.admit(netip.AddrFrom4([4]byte{192, 0, 2, byte(10 + s)}))
		}
	}
	if l.total != 75 {
		t.Fatalf("flooders hold %d slots, want 75 (full point of the early drop)", l.total)
	}
	// A fresh source still gets in, and so do the next 24 fresh ones.
	for s := range 25 {
		ip := netip.AddrFrom4([4]byte{198, 51, 100, byte(s)})
		if ok, why := l.admit(ip); !ok {
			t.Fatalf("fresh source %v refused at total %d: %s", ip, l.total, why)
		}
	}
	if ok, why := l.admit(netip.MustParseAddr("203.0.113.1")); ok || why != whyGlobal {
		t.Fatalf("admit at the global cap = %v, %q", ok, why)
	}

	// Below the full point the coin decides: 30% at the start point.
	l2 := newLimiter(&cfg, func() time.Time { return now })
	for s := range 50 {
		l2.admit(netip.AddrFrom4([4]byte{192, 0, 2, byte(s)}))
	}
	held := netip.MustParseAddr("192.0.2.0")
	l2.rand = func() float64 { return 0.29 }
	if ok, why := l2.admit(held); ok || why != whyThrottled {
		t.Fatalf("coin 0.29 at the start point: %v %q, want dropped", ok, why)
	}
	l2.rand = func() float64 { return 0.31 }
	if ok, why := l2.admit(held); !ok {
		t.Fatalf("coin 0.31 at the start point: dropped (%s)", why)
	}

	// IPv6: two addresses of one /64 are one source, another /64 is not.
	cfg6 := Config{MaxUnauthenticated: 100, MaxUnauthenticatedPerSource: 2, PenaltyFailures: -1}
	l6 := newLimiter(&cfg6, func() time.Time { return now })
	for _, a := range []string{"2001:db8:1:2::1", "2001:db8:1:2:ffff::9"} {
		if ok, why := l6.admit(netip.MustParseAddr(a)); !ok {
			t.Fatalf("admit %s: %s", a, why)
		}
	}
	if ok, why := l6.admit(netip.MustParseAddr("2001:db8:1:2:abcd::1")); ok || why != whyPerSource {
		t.Fatalf("third address of the /64: %v %q, want the per-source cap", ok, why)
	}
	if ok, why := l6.admit(netip.MustParseAddr("2001:db8:1:3::1")); !ok {
		t.Fatalf("another /64 refused: %s", why)
	}
}

// TestHandshakeLimits: an idle unauthenticated connection is closed after
// handshake_timeout and counts against its source's limit meanwhile; a
// source whose connections keep ending before authentication is refused
// before the handshake; all of it is one aggregated "preauth" line.
func TestHandshakeLimits(t *testing.T) {
	f := newFixture(t, func(_ *fixture, c *Config) {
		c.HandshakeTimeout.Duration = time.Second
		c.MaxUnauthenticatedPerSource = 1
		c.PenaltyFailures = 2
		c.PenaltyWindow.Duration = time.Minute
		c.Penalty.Duration = time.Minute
	})
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(f.port))
	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	br := bufio.NewReader(idle)
	banner, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(banner, "SSH-2.0-gatehouse") {
		t.Fatalf("banner %q, %v", banner, err)
	}

	// While idle holds the only slot for 127.0.0.1, a second connection
	// is turned away with a reason.
	if line := dialLine(t, addr); !strings.Contains(line, "too many unauthenticated connections from this source") {
		t.Errorf("second connection got %q", line)
	}

	// The idle connection is closed at the handshake deadline.
	start := time.Now()
	idle.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		if _, err := br.ReadByte(); err != nil {
			break
		}
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("idle connection closed after %v, want about 1s", d)
	}

	// That timeout was failure one; one failed login makes two: the
	// source is now penalised, even with a valid certificate.
	plain := sshtest.UserKey(t, f.dir, "ed25519")
	if r := f.sshBastion(t, plain, "", "admin", "true"); r.Exit != 255 {
		t.Fatalf("plain key: %s", r)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		line := dialLine(t, addr)
		if strings.Contains(line, whyPenalised) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("source not penalised; a connection got %q", line)
		}
		time.Sleep(50 * time.Millisecond)
	}
	key, cert, _ := f.userCert(t, f.ca, "-n", "admin", "-V", "-1m:+1h")
	r := f.sshBastion(t, key, cert, "admin", "-W", "127.0.0.1:"+strconv.Itoa(f.sshd.Port))
	if r.Exit != 255 {
		t.Fatalf("penalised source got through: %s", r)
	}

	// One line at once (the first refusal), the rest counted in one line
	// written when the window ends or, here, at shutdown.
	f.stop(t)
	var pre []event
	for _, e := range f.events(t) {
		if e.str("event") == "preauth" {
			pre = append(pre, e)
		}
	}
	if len(pre) != 2 {
		t.Fatalf("%d preauth lines, want 2: %v", len(pre), pre)
	}
	out, _ := pre[1]["outcomes"].(map[string]any)
	if out[outcomeTimeout] != 1.0 || out[outcomeAuthFailed] != 1.0 || out[outcomeRefused].(float64) < 2 {
		t.Errorf("outcomes %v, want a timeout, a failed login and at least two refusals", out)
	}
	if pre[1].str("penalised_until") == "" {
		t.Errorf("summary does not say the source is penalised: %v", pre[1])
	}
}

// dialLine connects to addr and returns the first line the server sends.
func dialLine(t testing.TB, addr string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, _ := bufio.NewReader(c).ReadString('\n')
	return line
}
