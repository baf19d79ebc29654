package bastion

import (
	"net/netip"
	"strings"
	"testing"

	gossh "golang.org/x/crypto/ssh"
)

func directPayload(host string, port uint32) []byte {
	return gossh.Marshal(directTCPIPMsg{DestAddr: host, DestPort: port, OrigAddr: "192.0.2.9", OrigPort: 4711})
}

func TestParseDirectTCPIP(t *testing.T) {
	for _, c := range []struct {
		host     string
		port     uint32
		wantHost string
		ok       bool
	}{
		{"db1.internal", 5432, "db1.internal", true},
		{"10.0.0.7", 22, "10.0.0.7", true},
		{"[2001:db8::7]", 22, "2001:db8::7", true},
		{"2001:db8::7", 22, "2001:db8::7", true},
		{"fe80::1%eth0", 22, "", false},
		{"db1.internal", 0, "", false},
		{"db1.internal", 65536, "", false},
		{"", 22, "", false},
		{"evil host", 22, "", false},
		{"a/b", 22, "", false},
		{"x\x1b[31m", 22, "", false},
		{strings.Repeat("a", 254), 22, "", false},
	} {
		h, p, err := parseDirectTCPIP(directPayload(c.host, c.port))
		if (err == nil) != c.ok || (c.ok && (h != c.wantHost || uint32(p) != c.port)) {
			t.Errorf("%q:%d: got %q %d %v", c.host, c.port, h, p, err)
		}
	}
	if _, _, err := parseDirectTCPIP([]byte{0, 0, 0, 9, 'x'}); err == nil {
		t.Error("truncated payload accepted")
	}
}

// FuzzParseDirectTCPIP: the channel-open payload is attacker-controlled;
// parsing never panics, and whatever it accepts is a valid port and a host
// that is an IP literal or a plain DNS name.
func FuzzParseDirectTCPIP(f *testing.F) {
	f.Add(directPayload("db1.internal", 5432))
	f.Add(directPayload("[::1]", 22))
	f.Add(directPayload("127.0.0.1", 65535))
	f.Add([]byte{0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, payload []byte) {
		h, p, err := parseDirectTCPIP(payload)
		if err != nil {
			return
		}
		if p == 0 {
			t.Fatalf("accepted port 0")
		}
		if _, perr := netip.ParseAddr(h); perr == nil {
			return
		}
		if h == "" || len(h) > 253 || strings.ContainsFunc(h, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.')
		}) {
			t.Fatalf("accepted host %q", h)
		}
	})
}

func TestParseProxyLogin(t *testing.T) {
	cases := []struct {
		in, login, host string
		port            uint16
		ok              bool
	}{
		{"root@web1.internal", "root", "web1.internal", 22, true},
		{"deploy@web1.internal:2200", "deploy", "web1.internal", 2200, true},
		{"root@10.0.0.7:22", "root", "10.0.0.7", 22, true},
		{"root@[2001:db8::7]:2222", "root", "2001:db8::7", 2222, true},
		{"root@[2001:db8::7]", "root", "2001:db8::7", 22, true},
		{"root@2001:db8::7", "root", "2001:db8::7", 22, true},
		{"root", "", "", 0, false},
		{"@web1", "", "", 0, false},
		{"-oProxy@web1", "", "", 0, false},
		{"root@web1@x", "", "", 0, false},
		{"root@web1:0", "", "", 0, false},
		{"root@web1:65536", "", "", 0, false},
		{"root@web1:+22", "", "", 0, false},
		{"root@[fe80::1%eth0]:22", "", "", 0, false},
		{"root@[2001:db8::7", "", "", 0, false},
		{"root@[2001:db8::7]x", "", "", 0, false},
		{"root@[web1]:22", "", "", 0, false},
		{"root@web 1", "", "", 0, false},
		{"ro ot@web1", "", "", 0, false},
		{"root@", "", "", 0, false},
		{"averyveryveryveryverylongloginname@web1", "", "", 0, false},
	}
	for _, c := range cases {
		login, host, port, err := parseProxyLogin(c.in)
		if (err == nil) != c.ok || c.ok && (login != c.login || host != c.host || port != c.port) {
			t.Errorf("parseProxyLogin(%q) = %q %q %d %v", c.in, login, host, port, err)
		}
	}
}

func FuzzParseProxyLogin(f *testing.F) {
	for _, s := range []string{"root@web1.internal", "deploy@10.0.0.7:2200", "root@[2001:db8::7]:22", "root@2001:db8::1", "x@[", "a@b:c:d", "@", "root@web1:99999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		login, host, port, err := parseProxyLogin(s)
		if err != nil {
			return
		}
		if checkLoginName(login) != nil || port == 0 || strings.ContainsAny(host, "@[] ") {
			t.Fatalf("accepted %q as %q %q %d", s, login, host, port)
		}
		if _, err := checkDestHost(host); err != nil {
			t.Fatalf("accepted host %q that checkDestHost refuses: %v", host, err)
		}
	})
}
