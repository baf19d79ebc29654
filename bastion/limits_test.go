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
	if len(l.src) != 1 || l.src[b] == nil {
		t.Errorf("source records: %v", l.src)
	}
}

// TestHandshakeLimits: an idle unauthenticated connection is closed after
// handshake_timeout and counts against its source's limit meanwhile; a
// source that keeps failing is refused before the handshake.
func TestHandshakeLimits(t *testing.T) {
	f := newFixture(t, func(_ *fixture, c *Config) {
		c.HandshakeTimeout.Duration = time.Second
		c.MaxUnauthenticatedPerSource = 1
		c.PenaltyFailures = 2
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
	second, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(second).ReadString('\n')
	second.Close()
	if !strings.Contains(line, "too many unauthenticated connections from this source") {
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
	f.waitEvent(t, "conn.end", map[string]string{"reason": "handshake timeout: not authenticated within handshake_timeout"})

	// That timeout was failure one; one failed login makes two: the
	// source is now penalised, even with a valid certificate.
	plain := sshtest.UserKey(t, f.dir, "ed25519")
	if r := f.sshBastion(t, plain, "", "admin", "true"); r.Exit != 255 {
		t.Fatalf("plain key: %s", r)
	}
	f.waitEvent(t, "conn.end", map[string]string{"reason": "authentication failed"})
	key, cert, _ := f.userCert(t, f.ca, "-n", "admin", "-V", "-1m:+1h")
	r := f.sshBastion(t, key, cert, "admin", "-W", "127.0.0.1:"+strconv.Itoa(f.sshd.Port))
	if r.Exit != 255 {
		t.Fatalf("penalised source got through: %s", r)
	}
	f.waitEvent(t, "conn.refused", map[string]string{"reason": "source penalised after repeated failures"})
}
