package bastion

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
)

// v2Header renders a PROXY v2 header for TCP over IPv4 from src to dst,
// with tlvs appended (go-proxyproto's writer, the format HAProxy sends).
func v2Header(t testing.TB, src, dst string, tlvs ...proxyproto.TLV) []byte {
	t.Helper()
	s, _ := net.ResolveTCPAddr("tcp", src)
	d, _ := net.ResolveTCPAddr("tcp", dst)
	h := proxyproto.HeaderProxyFromAddrs(2, s, d)
	if len(tlvs) > 0 {
		if err := h.SetTLVs(tlvs); err != nil {
			t.Fatal(err)
		}
	}
	b, err := h.Format()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// v2Raw is a v2 header with any command byte, family byte and payload.
func v2Raw(cmd, fam byte, length int, payload []byte) []byte {
	b := append([]byte{}, proxyproto.SIGV2...)
	b = append(b, cmd, fam)
	b = binary.BigEndian.AppendUint16(b, uint16(length))
	return append(b, payload...)
}

// TestReadProxyHeader: each form of header is parsed or refused as the
// specification says, and never a byte past the header is consumed (the
// SSH banner that follows stays on the socket for streamconn).
func TestReadProxyHeader(t *testing.T) {
	const rest = "SSH-2.0-OpenSSH_9.2\r\n"
	cases := []struct {
		name    string
		in      []byte
		src     string // client address wanted; "" for an error
		err     string // substring of the error
		health  bool
		consume int  // bytes consumed on error (-1: do not check)
		alone   bool // the connection ends after in (no SSH banner follows)
	}{
		{name: "v1-tcp4", in: []byte("PROXY TCP4 192.0.2.7 192.0.2.1 50123 2222\r\n"), src: "192.0.2.7:50123"},
		{name: "v1-tcp6", in: []byte("PROXY TCP6 2001:db8::7 2001:db8::1 50123 2222\r\n"), src: "[2001:db8::7]:50123"},
		{name: "v1-unknown", in: []byte("PROXY UNKNOWN\r\n"), health: true},
		{name: "v1-garbage", in: []byte("PROXY TCP4 not-an-address 192.0.2.1 1 2\r\n"), err: "PROXY header", consume: -1},
		{name: "v1-bad-port", in: []byte("PROXY TCP4 192.0.2.7 192.0.2.1 99999 2222\r\n"), err: "PROXY header", consume: -1},
		{name: "v1-lf-only", in: []byte("PROXY TCP4 192.0.2.7 192.0.2.1 1 2\n"), err: "PROXY header", consume: -1},
		{name: "v1-too-long", in: []byte("PROXY TCP4 " + strings.Repeat("1", 300) + "\r\n"), err: "longer than 107", consume: 107},
		{name: "v1-nul", in: []byte("PROXY TCP4 192.0.2.7\x00 192.0.2.1 1 2\r\n"), err: "PROXY header", consume: -1},
		{name: "v2-tcp4", in: v2Header(t, "192.0.2.7:50123", "192.0.2.1:2222"), src: "192.0.2.7:50123"},
		{name: "v2-tcp4-tlvs", in: v2Header(t, "192.0.2.8:1", "192.0.2.1:2222",
			proxyproto.TLV{Type: proxyproto.PP2_TYPE_AUTHORITY, Value: []byte("bastion.example.org")},
			proxyproto.TLV{Type: proxyproto.PP2_TYPE_UNIQUE_ID, Value: bytes.Repeat([]byte("u"), 128)}), src: "192.0.2.8:1"},
		{name: "v2-local", in: v2Raw(0x20, 0x00, 0, nil), health: true},
		{name: "v2-local-with-block", in: v2Raw(0x20, 0x11, 12, make([]byte, 12)), health: true},
		{name: "v2-oversized", in: v2Raw(0x21, 0x11, 65535, make([]byte, 100)), err: "announces 65535 bytes", consume: 16},
		{name: "v2-just-over", in: v2Raw(0x21, 0x11, maxProxyV2Payload+1, nil), err: "announces", consume: 16},
		{name: "v2-truncated", in: v2Raw(0x21, 0x11, 12, make([]byte, 5)), err: "EOF", consume: -1, alone: true},
		{name: "v2-udp", in: v2Raw(0x21, 0x12, 12, make([]byte, 12)), err: "not TCP", consume: -1},
		{name: "v2-unix", in: v2Raw(0x21, 0x31, 216, make([]byte, 216)), err: "not TCP", consume: -1},
		{name: "v2-bad-family", in: v2Raw(0x21, 0x13, 12, make([]byte, 12)), err: "PROXY header", consume: -1},
		{name: "v2-bad-version", in: v2Raw(0x11, 0x11, 12, make([]byte, 12)), err: "PROXY header", consume: -1},
		{name: "v2-unspecified-source", in: v2Header(t, "0.0.0.0:1", "192.0.2.1:2222"), err: "not a client address", consume: -1},
		{name: "ssh-banner", in: []byte(rest), err: "does not start with a PROXY", consume: 5},
		{name: "v2-signature-then-junk", in: append(append([]byte{}, proxyproto.SIGV2[:5]...), []byte("xxxxxxxxxxxxxx")...), err: "does not start with a PROXY", consume: 16},
		{name: "empty", in: nil, err: "EOF", consume: 0, alone: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			full := append(append([]byte{}, c.in...), rest...)
			if c.alone {
				full = c.in
			}
			r := bytes.NewReader(full)
			h, err := readProxyHeader(r)
			var src string
			if err == nil {
				var ap interface{ String() string }
				ap, err = proxySource(h)
				if err == nil {
					src = ap.String()
				}
			}
			consumed := len(full) - r.Len()
			switch {
			case c.health:
				if !errors.Is(err, errHealthCheck) {
					t.Fatalf("want a health check, got %v", err)
				}
				if consumed != len(c.in) {
					t.Errorf("consumed %d bytes, the header has %d", consumed, len(c.in))
				}
			case c.src != "":
				if err != nil || src != c.src {
					t.Fatalf("source %q, err %v; want %s", src, err, c.src)
				}
				if consumed != len(c.in) {
					t.Errorf("consumed %d bytes, the header has %d", consumed, len(c.in))
				}
			default:
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("err %v, want one containing %q", err, c.err)
				}
				if c.consume >= 0 && consumed != c.consume {
					t.Errorf("consumed %d bytes, want %d", consumed, c.consume)
				}
				if consumed > len(c.in) {
					t.Errorf("read %d bytes past the input's header part", consumed-len(c.in))
				}
			}
		})
	}
}

// FuzzReadProxyHeader: whatever a balancer (or an attacker who got into
// proxy_protocol_from) sends, the header reader neither panics nor reads
// more than the specification's bounds, and a header it accepts is
// exactly the bytes it consumed: a second parse of them gives the same
// source.
func FuzzReadProxyHeader(f *testing.F) {
	f.Add([]byte("PROXY TCP4 192.0.2.7 192.0.2.1 50123 2222\r\nSSH-2.0-x\r\n"))
	f.Add([]byte("PROXY TCP6 2001:db8::7 2001:db8::1 1 2\r\n"))
	f.Add([]byte("PROXY UNKNOWN\r\n"))
	f.Add(v2Header(f, "192.0.2.7:50123", "192.0.2.1:2222", proxyproto.TLV{Type: proxyproto.PP2_TYPE_AUTHORITY, Value: []byte("example.org")}))
	f.Add(v2Header(f, "[2001:db8::7]:1", "[2001:db8::1]:2"))
	f.Add(v2Raw(0x20, 0x00, 0, nil))
	f.Add(v2Raw(0x21, 0x11, 65535, nil))
	f.Add(v2Raw(0x21, 0x31, 216, make([]byte, 216)))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		h, err := readProxyHeader(r)
		consumed := len(data) - r.Len()
		if consumed > 16+maxProxyV2Payload {
			t.Fatalf("consumed %d bytes", consumed)
		}
		if bytes.HasPrefix(data, []byte("PROXY")) && consumed > maxProxyV1Line {
			t.Fatalf("v1: consumed %d bytes", consumed)
		}
		if err != nil {
			return
		}
		src, err := proxySource(h)
		if err != nil {
			return
		}
		if !src.Addr().IsValid() || src.Addr().Is4In6() {
			t.Fatalf("source %v", src)
		}
		h2, err := readProxyHeader(bytes.NewReader(data[:consumed]))
		if err != nil {
			t.Fatalf("the consumed bytes do not parse again: %v", err)
		}
		if src2, err := proxySource(h2); err != nil || src2 != src {
			t.Fatalf("second parse: %v %v, first %v", src2, err, src)
		}
	})
}

// TestParseProxyFrom: proxy_protocol_from entries, and what Validate says
// about a bad one.
func TestParseProxyFrom(t *testing.T) {
	for in, want := range map[string]string{
		"10.0.0.0/24": "10.0.0.0/24", "10.0.0.7/24": "10.0.0.0/24", "192.0.2.7": "192.0.2.7/32",
		"2001:db8::/64": "2001:db8::/64", "2001:db8::1": "2001:db8::1/128", "::ffff:10.0.0.0/104": "10.0.0.0/8",
	} {
		p, err := parseProxyFrom(in)
		if err != nil || p.String() != want {
			t.Errorf("parseProxyFrom(%q) = %v, %v; want %s", in, p, err, want)
		}
	}
	for _, in := range []string{"", "lb.example.org", "10.0.0.0/33", "fe80::1%eth0", "::ffff:10.0.0.0/8", "10.0.0.0/24 "} {
		if _, err := parseProxyFrom(in); err == nil {
			t.Errorf("parseProxyFrom(%q) accepted", in)
		}
	}
	c := Config{HostKeys: []string{"k"}, UserCAKeys: "ca", AuditLog: "a", ProxyProtocolFrom: []string{"lb.example.org"}}
	c.Defaults()
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "[bastion] proxy_protocol_from") {
		t.Errorf("Validate: %v", err)
	}
}

// dialFrom opens a TCP connection to the bastion from a chosen loopback
// source address.
func dialFrom(t *testing.T, src string, port int) *net.TCPConn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// readUntilClosed reads until the bastion closes the connection (or 10 s
// pass) and returns what it sent and how long that took.
func readUntilClosed(t *testing.T, c net.Conn) (string, time.Duration) {
	t.Helper()
	start := time.Now()
	_ = c.SetReadDeadline(start.Add(10 * time.Second))
	b, err := io.ReadAll(c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the bastion kept the connection open for 10 s (read %q)", b)
	}
	return string(b), time.Since(start)
}

// TestProxyProtocolAttacks, with real sockets against a bastion whose
// proxy_protocol_from is 127.0.0.1: headers from anywhere else are refused
// (a client must not choose its own source address), broken, slow and
// oversized headers from the balancer are closed in bounded time and
// counted against the balancer without penalising it, health checks leave
// no trace, and the client address in a header is what admission,
// penalties and the audit log see.
func TestProxyProtocolAttacks(t *testing.T) {
	f := newFixture(t, func(f *fixture, c *Config) {
		c.ProxyProtocolFrom = []string{"127.0.0.1/32"}
		c.PenaltyFailures = 3
		c.PenaltyWindow = Duration{2 * time.Second}
		c.Penalty = Duration{time.Minute}
		c.HandshakeTimeout = Duration{5 * time.Second}
	})
	sshPrefix := func(s string) bool { return strings.HasPrefix(s, "SSH-2.0-gatehouse") }

	t.Run("header-from-unlisted-source", func(t *testing.T) {
		// A client at 127.0.0.7 claims to be 127.0.0.99, whose
		// certificate source-address it might want to borrow.
		for i, hdr := range [][]byte{
			v2Header(t, "127.0.0.99:4000", "127.0.0.1:2222"),
			[]byte("PROXY TCP4 127.0.0.99 127.0.0.1 4001 2222\r\n"),
		} {
			c := dialFrom(t, "127.0.0.7", f.port)
			if _, err := c.Write(append(hdr, "SSH-2.0-OpenSSH_9.2\r\n"...)); err != nil {
				t.Fatal(err)
			}
			got, took := readUntilClosed(t, c)
			if strings.Count(got, "\n") > 1 || took > 3*time.Second {
				t.Errorf("header %d: the bastion went on after the header (sent %q, %v)", i, got, took)
			}
		}
		e := f.waitEvent(t, "preauth", map[string]string{"source": "127.0.0.7"})
		if !strings.Contains(f.allEvents(t), "proxy_protocol_from") {
			t.Errorf("the refusal does not name proxy_protocol_from: %v", e)
		}
		if strings.Contains(f.allEvents(t), "127.0.0.99") {
			t.Errorf("the spoofed address reached the audit log:\n%s", f.allEvents(t))
		}
	})

	t.Run("health-checks", func(t *testing.T) {
		before := f.countSource(t, "127.0.0.1")
		for i := 0; i < 30; i++ {
			c := dialFrom(t, "127.0.0.1", f.port)
			switch i % 3 {
			case 0: // plain connect and close, HAProxy's "check"
			case 1: // check-send-proxy with v2: a LOCAL header
				c.Write(v2Raw(0x20, 0x00, 0, nil))
			case 2: // check-send-proxy with v1
				c.Write([]byte("PROXY UNKNOWN\r\n"))
			}
			if i%3 == 0 {
				c.SetLinger(0) // HAProxy ends checks with a reset
				c.Close()
				continue
			}
			if got, _ := readUntilClosed(t, c); got != "" {
				t.Errorf("health check got %q", got)
			}
		}
		time.Sleep(500 * time.Millisecond)
		if n := f.countSource(t, "127.0.0.1"); n != before {
			t.Errorf("health checks wrote %d audit lines for the balancer", n-before)
		}
		if _, pen := f.srv.lim.penalisedUntil("127.0.0.1"); pen {
			t.Error("health checks penalised the balancer")
		}
	})

	t.Run("bad-headers-from-balancer", func(t *testing.T) {
		cases := []struct {
			name, detail string
			send         []byte
			min, max     time.Duration
		}{
			{"slow", "no complete PROXY protocol header within", []byte("PROXY TCP4 127.0."), 2 * time.Second, 5 * time.Second},
			{"silent", "no complete PROXY protocol header within", nil, 2 * time.Second, 5 * time.Second},
			{"oversized-v2", "announces 65535 bytes", v2Raw(0x21, 0x11, 65535, bytes.Repeat([]byte{1}, 4000)), 0, time.Second},
			{"v1-garbage", "invalid PROXY protocol header", []byte("PROXY TCP4 127.0.0.50 127.0.0.1 x y\r\nSSH-2.0-x\r\n"), 0, time.Second},
			{"v1-endless", "longer than 107", bytes.Repeat([]byte("PROXY "), 100), 0, time.Second},
			{"ssh-without-header", "does not start with a PROXY", []byte("SSH-2.0-OpenSSH_9.2\r\n"), 0, time.Second},
		}
		for _, c := range cases {
			conn := dialFrom(t, "127.0.0.1", f.port)
			if c.send != nil {
				conn.Write(c.send)
			}
			got, took := readUntilClosed(t, conn)
			if got != "" || took < c.min || took > c.max {
				t.Errorf("%s: closed after %v (want %v..%v), sent %q", c.name, took, c.min, c.max, got)
			}
		}
		e := f.waitEvent(t, "preauth", map[string]string{"source": "127.0.0.1"})
		if e.str("outcomes") == "" {
			t.Errorf("preauth line: %v", e)
		}
		if _, pen := f.srv.lim.penalisedUntil("127.0.0.1"); pen {
			t.Error("bad headers penalised the balancer (and so every client behind it)")
		}
		// The rest of the window's lines come later: the first one is in.
		if !strings.Contains(f.allEvents(t), outcomeBadProxyHeader) {
			t.Errorf("no %s outcome in the audit log:\n%s", outcomeBadProxyHeader, f.allEvents(t))
		}
	})

	t.Run("client-address-is-the-source", func(t *testing.T) {
		// Three connections from client 127.0.0.50 through the balancer
		// end before authenticating: 127.0.0.50 is penalised, the
		// balancer and another client are not.
		for i := 0; i < 3; i++ {
			c := dialFrom(t, "127.0.0.1", f.port)
			c.Write(v2Header(t, "127.0.0.50:"+strconv.Itoa(40000+i), "127.0.0.1:2222"))
			c.Write([]byte("SSH-2.0-OpenSSH_9.2\r\n"))
			buf := make([]byte, 64)
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if n, err := c.Read(buf); err != nil || !sshPrefix(string(buf[:n])) {
				t.Fatalf("proxied connection %d: %q %v", i, buf[:n], err)
			}
			c.Close()
		}
		deadline := time.Now().Add(5 * time.Second)
		for {
			if _, pen := f.srv.lim.penalisedUntil("127.0.0.50"); pen {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the client behind the balancer was not penalised")
			}
			time.Sleep(20 * time.Millisecond)
		}
		c := dialFrom(t, "127.0.0.1", f.port)
		c.Write(v2Header(t, "127.0.0.50:41000", "127.0.0.1:2222"))
		if got, _ := readUntilClosed(t, c); !strings.Contains(got, "penalised") {
			t.Errorf("penalised client through the balancer got %q", got)
		}
		c = dialFrom(t, "127.0.0.1", f.port)
		c.Write(v2Header(t, "127.0.0.51:41000", "127.0.0.1:2222"))
		buf := make([]byte, 64)
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := c.Read(buf); err != nil || !sshPrefix(string(buf[:n])) {
			t.Errorf("another client through the same balancer: %q %v", buf[:n], err)
		}
		c.Close()
		if _, pen := f.srv.lim.penalisedUntil("127.0.0.1"); pen {
			t.Error("the balancer was penalised")
		}
		f.waitEvent(t, "preauth", map[string]string{"source": "127.0.0.50"})
	})

	t.Run("pending-headers-capped", func(t *testing.T) {
		// Header reads in flight are capped by max_unauthenticated: past
		// it, a balancer connection is closed at once instead of holding
		// a goroutine for the header timeout.
		cfg := f.cfg
		cfg.MaxUnauthenticated = 5
		if _, _, err := f.srv.Apply(cfg); err != nil {
			t.Fatal(err)
		}
		defer f.srv.Apply(f.cfg)
		var conns []*net.TCPConn
		for i := 0; i < 12; i++ {
			conns = append(conns, dialFrom(t, "127.0.0.1", f.port))
		}
		for _, c := range conns {
			readUntilClosed(t, c) // at once, or after the header timeout
		}
		// The refusals are counted in the balancer's preauth lines (a
		// penalty_window apart); nothing earlier from 127.0.0.1 was
		// refused.
		deadline := time.Now().Add(10 * time.Second)
		for {
			refused := 0
			for _, e := range f.events(t) {
				if o, ok := e["outcomes"].(map[string]any); ok && e.str("event") == "preauth" && e.str("source") == "127.0.0.1" {
					n, _ := o[outcomeRefused].(float64)
					refused += int(n)
				}
			}
			if refused == 7 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d of 12 silent balancer connections refused with 5 header reads allowed; want 7", refused)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})

	t.Run("sighup-applies-the-list", func(t *testing.T) {
		// The balancer is taken out of the list: its headers are now
		// refused like anyone else's.
		cfg := f.cfg
		cfg.ProxyProtocolFrom = []string{"127.0.0.2/32"}
		applied, restart, err := f.srv.Apply(cfg)
		if err != nil || !slices.Contains(applied, "proxy_protocol_from") || slices.Contains(restart, "proxy_protocol_from") {
			t.Fatalf("Apply: applied %v, restart %v, %v", applied, restart, err)
		}
		c := dialFrom(t, "127.0.0.1", f.port)
		c.Write(v2Header(t, "127.0.0.52:41000", "127.0.0.1:2222"))
		c.Write([]byte("SSH-2.0-OpenSSH_9.2\r\n"))
		readUntilClosed(t, c)
		// Lines of one source are a penalty_window apart and keep four
		// samples: wait for the count. Nothing earlier from 127.0.0.1
		// was a handshake failure.
		deadline := time.Now().Add(10 * time.Second)
		for !hasOutcome(f.events(t), "127.0.0.1", outcomeHandshakeFailed) {
			if time.Now().After(deadline) {
				t.Fatalf("no refusal of the delisted balancer's header:\n%s", f.allEvents(t))
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
}

// allEvents is the audit log as text.
func (f *fixture) allEvents(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile(f.auditPath)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// hasOutcome reports a "preauth" line of source that counts outcome.
func hasOutcome(evs []event, source, outcome string) bool {
	for _, e := range evs {
		if o, ok := e["outcomes"].(map[string]any); ok && e.str("event") == "preauth" && e.str("source") == source && o[outcome] != nil {
			return true
		}
	}
	return false
}

// countSource counts audit lines whose source is src (any port).
func (f *fixture) countSource(t testing.TB, src string) int {
	t.Helper()
	n := 0
	for _, e := range f.events(t) {
		s := e.str("source")
		if s == src || strings.HasPrefix(s, src+":") {
			n++
		}
	}
	return n
}
