package policy

import (
	"net/netip"
	"strings"
	"testing"
)

var testRules = []Rule{
	{ // rule 0
		Principals: []string{"admin"},
		Jump:       []string{"127.0.0.1:2223", "10.20.0.0/16:22", "db1.internal:5432", "[2001:db8::/32]:22", "web.example.org:*", "10.30.0.0/16:8000-8099"},
		Proxy:      []string{"10.20.0.0/16:22", "Shell.Example.org:22"},
		Logins:     []string{"root", "deploy"},
	},
	{ // rule 1
		Principals: []string{"dba", "ops"},
		Jump:       []string{"db1.internal:5432", "0.0.0.0/0:*", "[::/0]:*"},
	},
	{ // rule 2
		Principals: []string{"metadata"},
		Jump:       []string{"169.254.169.254:80", "meta.example.org:80", "127.0.0.0/8:*", "10.20.0.5:2222"},
		Proxy:      []string{"10.40.0.0/16:22"},
	},
}

func TestDecide(t *testing.T) {
	p, err := New(testRules)
	if err != nil {
		t.Fatal(err)
	}
	bastionOwn := netip.MustParseAddrPort("10.20.0.5:2222")
	protected := func(ap netip.AddrPort) bool { return ap == bastionOwn }
	ip := netip.MustParseAddr
	cases := []struct {
		name   string
		req    Request
		allow  bool
		rule   int
		entry  string
		reason string
	}{
		{"literal loopback entry", Request{Principals: []string{"admin"}, Host: "127.0.0.1", IP: ip("127.0.0.1"), Port: 2223, Mode: "jump"}, true, 0, "127.0.0.1:2223", ReasonAllowed},
		{"loopback other port", Request{Principals: []string{"admin"}, Host: "127.0.0.1", IP: ip("127.0.0.1"), Port: 22, Mode: "jump"}, false, -1, "", ReasonNoEntry},
		{"cidr", Request{Principals: []string{"admin"}, Host: "10.20.3.4", IP: ip("10.20.3.4"), Port: 22, Mode: "jump"}, true, 0, "10.20.0.0/16:22", ReasonAllowed},
		{"cidr wrong port", Request{Principals: []string{"admin"}, Host: "10.20.3.4", IP: ip("10.20.3.4"), Port: 23, Mode: "jump"}, false, -1, "", ReasonNoEntry},
		{"cidr by name resolving inside", Request{Principals: []string{"admin"}, Host: "app.internal", IP: ip("10.20.3.4"), Port: 22, Mode: "jump"}, true, 0, "10.20.0.0/16:22", ReasonAllowed},
		{"IPv4-mapped", Request{Principals: []string{"admin"}, Host: "x", IP: ip("::ffff:10.20.3.4"), Port: 22, Mode: "jump"}, true, 0, "10.20.0.0/16:22", ReasonAllowed},
		{"name", Request{Principals: []string{"admin"}, Host: "DB1.Internal", IP: ip("192.0.2.10"), Port: 5432, Mode: "jump"}, true, 0, "db1.internal:5432", ReasonAllowed},
		{"name trailing dot is another name", Request{Principals: []string{"admin"}, Host: "db1.internal.", IP: ip("192.0.2.10"), Port: 5432, Mode: "jump"}, false, -1, "", ReasonNoEntry},
		{"name suffix is not a match", Request{Principals: []string{"admin"}, Host: "evil-db1.internal", IP: ip("192.0.2.10"), Port: 5432, Mode: "jump"}, false, -1, "", ReasonNoEntry},
		{"name resolving to loopback", Request{Principals: []string{"admin"}, Host: "db1.internal", IP: ip("127.0.0.1"), Port: 5432, Mode: "jump"}, false, -1, "", ReasonSpecialAddress},
		{"name resolving to metadata", Request{Principals: []string{"admin"}, Host: "db1.internal", IP: ip("169.254.169.254"), Port: 5432, Mode: "jump"}, false, -1, "", ReasonSpecialAddress},
		{"name resolving to ::1", Request{Principals: []string{"admin"}, Host: "db1.internal", IP: ip("::1"), Port: 5432, Mode: "jump"}, false, -1, "", ReasonSpecialAddress},
		{"name resolving to 0.0.0.0", Request{Principals: []string{"admin"}, Host: "db1.internal", IP: ip("0.0.0.0"), Port: 5432, Mode: "jump"}, false, -1, "", ReasonSpecialAddress},
		{"name resolving to mapped loopback", Request{Principals: []string{"admin"}, Host: "db1.internal", IP: ip("::ffff:127.0.0.1"), Port: 5432, Mode: "jump"}, false, -1, "", ReasonSpecialAddress},
		{"name resolving to multicast", Request{Principals: []string{"admin"}, Host: "db1.internal", IP: ip("224.0.0.1"), Port: 5432, Mode: "jump"}, false, -1, "", ReasonSpecialAddress},
		{"name resolving to link-local v6", Request{Principals: []string{"admin"}, Host: "db1.internal", IP: ip("fe80::1"), Port: 5432, Mode: "jump"}, false, -1, "", ReasonSpecialAddress},
		{"any port name", Request{Principals: []string{"admin"}, Host: "web.example.org", IP: ip("192.0.2.1"), Port: 8443, Mode: "jump"}, true, 0, "web.example.org:*", ReasonAllowed},
		{"port range low", Request{Principals: []string{"admin"}, Host: "h", IP: ip("10.30.1.1"), Port: 8000, Mode: "jump"}, true, 0, "10.30.0.0/16:8000-8099", ReasonAllowed},
		{"port range high", Request{Principals: []string{"admin"}, Host: "h", IP: ip("10.30.1.1"), Port: 8099, Mode: "jump"}, true, 0, "10.30.0.0/16:8000-8099", ReasonAllowed},
		{"port range out", Request{Principals: []string{"admin"}, Host: "h", IP: ip("10.30.1.1"), Port: 8100, Mode: "jump"}, false, -1, "", ReasonNoEntry},
		{"ipv6 cidr", Request{Principals: []string{"admin"}, Host: "2001:db8::7", IP: ip("2001:db8::7"), Port: 22, Mode: "jump"}, true, 0, "[2001:db8::/32]:22", ReasonAllowed},
		{"no rule", Request{Principals: []string{"guest"}, Host: "10.20.3.4", IP: ip("10.20.3.4"), Port: 22, Mode: "jump"}, false, -1, "", ReasonNoRule},
		{"no principals", Request{Host: "10.20.3.4", IP: ip("10.20.3.4"), Port: 22, Mode: "jump"}, false, -1, "", ReasonNoRule},
		{"wide cidr does not unlock loopback", Request{Principals: []string{"ops"}, Host: "127.0.0.1", IP: ip("127.0.0.1"), Port: 22, Mode: "jump"}, false, -1, "", ReasonSpecialAddress},
		{"wide cidr does not unlock ::1", Request{Principals: []string{"ops"}, Host: "::1", IP: ip("::1"), Port: 22, Mode: "jump"}, false, -1, "", ReasonSpecialAddress},
		{"wide cidr does not unlock metadata", Request{Principals: []string{"ops"}, Host: "169.254.169.254", IP: ip("169.254.169.254"), Port: 80, Mode: "jump"}, false, -1, "", ReasonSpecialAddress},
		{"wide cidr ordinary", Request{Principals: []string{"ops"}, Host: "192.0.2.55", IP: ip("192.0.2.55"), Port: 443, Mode: "jump"}, true, 1, "0.0.0.0/0:*", ReasonAllowed},
		{"wide cidr not own port", Request{Principals: []string{"ops"}, Host: "10.20.0.5", IP: ip("10.20.0.5"), Port: 2222, Mode: "jump"}, false, -1, "", ReasonProtectedAddress},
		{"literal own port", Request{Principals: []string{"metadata"}, Host: "10.20.0.5", IP: ip("10.20.0.5"), Port: 2222, Mode: "jump"}, true, 2, "10.20.0.5:2222", ReasonAllowed},
		{"literal metadata", Request{Principals: []string{"metadata"}, Host: "169.254.169.254", IP: ip("169.254.169.254"), Port: 80, Mode: "jump"}, true, 2, "169.254.169.254:80", ReasonAllowed},
		{"name resolving to the literal metadata IP", Request{Principals: []string{"metadata"}, Host: "meta.example.org", IP: ip("169.254.169.254"), Port: 80, Mode: "jump"}, true, 2, "169.254.169.254:80", ReasonAllowed},
		{"name entry resolving to other link-local", Request{Principals: []string{"metadata"}, Host: "meta.example.org", IP: ip("169.254.169.253"), Port: 80, Mode: "jump"}, false, -1, "", ReasonSpecialAddress},
		{"loopback block literal", Request{Principals: []string{"metadata"}, Host: "localhost", IP: ip("127.0.0.9"), Port: 6000, Mode: "jump"}, true, 2, "127.0.0.0/8:*", ReasonAllowed},
		{"second principal matches", Request{Principals: []string{"guest", "dba"}, Host: "db1.internal", IP: ip("192.0.2.10"), Port: 5432, Mode: "jump"}, true, 1, "db1.internal:5432", ReasonAllowed},
		{"proxy allowed", Request{Principals: []string{"admin"}, Host: "10.20.1.1", IP: ip("10.20.1.1"), Port: 22, Login: "deploy", Mode: "proxy"}, true, 0, "10.20.0.0/16:22", ReasonAllowed},
		{"proxy name case", Request{Principals: []string{"admin"}, Host: "shell.example.ORG", IP: ip("192.0.2.3"), Port: 22, Login: "root", Mode: "proxy"}, true, 0, "Shell.Example.org:22", ReasonAllowed},
		{"proxy login not listed", Request{Principals: []string{"admin"}, Host: "10.20.1.1", IP: ip("10.20.1.1"), Port: 22, Login: "postgres", Mode: "proxy"}, false, -1, "", ReasonLoginNotAllowed},
		{"proxy empty logins", Request{Principals: []string{"metadata"}, Host: "10.40.1.1", IP: ip("10.40.1.1"), Port: 22, Login: "root", Mode: "proxy"}, false, -1, "", ReasonLoginNotAllowed},
		{"proxy uses proxy list only", Request{Principals: []string{"admin"}, Host: "db1.internal", IP: ip("192.0.2.10"), Port: 5432, Login: "root", Mode: "proxy"}, false, -1, "", ReasonNoEntry},
		{"jump uses jump list only", Request{Principals: []string{"admin"}, Host: "shell.example.org", IP: ip("192.0.2.3"), Port: 22, Mode: "jump"}, false, -1, "", ReasonNoEntry},
		{"bad mode", Request{Principals: []string{"admin"}, Host: "10.20.1.1", IP: ip("10.20.1.1"), Port: 22, Mode: "shell"}, false, -1, "", ReasonBadRequest},
		{"port 0", Request{Principals: []string{"admin"}, Host: "10.20.1.1", IP: ip("10.20.1.1"), Port: 0, Mode: "jump"}, false, -1, "", ReasonBadRequest},
		{"no IP", Request{Principals: []string{"admin"}, Host: "db1.internal", Port: 5432, Mode: "jump"}, false, -1, "", ReasonBadRequest},
		{"zoned IP", Request{Principals: []string{"admin"}, Host: "x", IP: ip("fe80::1%eth0"), Port: 22, Mode: "jump"}, false, -1, "", ReasonBadRequest},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := p.Decide(tc.req, protected)
			if d.Allow != tc.allow || d.Rule != tc.rule || d.Entry != tc.entry || d.Reason != tc.reason {
				t.Fatalf("Decide = %+v, want allow=%v rule=%d entry=%q reason=%q", d, tc.allow, tc.rule, tc.entry, tc.reason)
			}
			if !d.Allow && d.Detail == "" {
				t.Fatal("denial without detail")
			}
		})
	}
	// nil protected is allowed.
	if d := p.Decide(Request{Principals: []string{"ops"}, Host: "10.20.0.5", IP: ip("10.20.0.5"), Port: 2222, Mode: "jump"}, nil); !d.Allow {
		t.Fatalf("nil protected: %+v", d)
	}
}

func TestNewErrors(t *testing.T) {
	for _, tc := range []struct {
		rules []Rule
		want  string
	}{
		{[]Rule{{Jump: []string{"h:22"}}}, "rule 0: principals is empty"},
		{[]Rule{{Principals: []string{"a"}}}, "rule 0: neither jump nor proxy"},
		{[]Rule{{Principals: []string{"a"}, Jump: []string{"h:22"}}, {Principals: []string{"a b"}, Jump: []string{"h:22"}}}, `rule 1: principals entry 0 "a b"`},
		{[]Rule{{Principals: []string{"*"}, Jump: []string{"h:22"}}}, "principals entry 0"},
		{[]Rule{{Principals: []string{"a"}, Jump: []string{"h:22"}, Logins: []string{""}}}, "logins entry 0"},
		{[]Rule{{Principals: []string{"a"}, Jump: []string{"h:22", "h"}}}, `jump entry 1 "h": missing ":port"`},
		{[]Rule{{Principals: []string{"a"}, Proxy: []string{"h:0"}}}, `proxy entry 0 "h:0"`},
		{[]Rule{{Principals: []string{"a"}, Jump: []string{"h:65536"}}}, "out of range"},
		{[]Rule{{Principals: []string{"a"}, Jump: []string{"h:22-21"}}}, "inverted"},
		{[]Rule{{Principals: []string{"a"}, Jump: []string{"h:+22"}}}, "not a number"},
		{[]Rule{{Principals: []string{"a"}, Jump: []string{"10.20.0.1/16:22"}}}, "host bits are set; did you mean 10.20.0.0/16"},
		{[]Rule{{Principals: []string{"a"}, Jump: []string{"10.20.0/16:22"}}}, "not a CIDR"},
		{[]Rule{{Principals: []string{"a"}, Jump: []string{"10.1:22"}}}, "not an IP address"},
		{[]Rule{{Principals: []string{"a"}, Jump: []string{"::1:22"}}}, "brackets"},
		{[]Rule{{Principals: []string{"a"}, Jump: []string{"[::1:22"}}}, "unbalanced"},
		{[]Rule{{Principals: []string{"a"}, Jump: []string{"[10.0.0.1]:22"}}}, "only for IPv6"},
		{[]Rule{{Principals: []string{"a"}, Jump: []string{"[fe80::1%eth0]:22"}}}, "zones"},
		{[]Rule{{Principals: []string{"a"}, Jump: []string{"*.example.org:22"}}}, "wildcards"},
		{[]Rule{{Principals: []string{"a"}, Jump: []string{"a..b:22"}}}, "empty or over-long label"},
		{[]Rule{{Principals: []string{"a"}, Jump: []string{"-a.b:22"}}}, "starts or ends"},
		{[]Rule{{Principals: []string{"a"}, Jump: []string{":22"}}}, "empty host"},
		{[]Rule{{Principals: []string{"a"}, Jump: []string{"[::ffff:10.0.0.0/104]:22"}}}, "dotted form"},
		{[]Rule{{Principals: []string{"a"}, Jump: []string{strings.Repeat("a.", 200) + "b:22"}}}, "longer than"},
	} {
		_, err := New(tc.rules)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v): err %v, want it to contain %q", tc.rules, err, tc.want)
		}
	}
	if _, err := New(nil); err != nil {
		t.Errorf("no rules: %v", err)
	}
}

func FuzzPolicy(f *testing.F) {
	for _, r := range testRules {
		for _, e := range append(append([]string{}, r.Jump...), r.Proxy...) {
			f.Add(e, "admin", "10.20.0.1", uint16(22), "root")
		}
	}
	f.Add("[::]:*", "x", "::1", uint16(1), "")
	f.Add("a:1-", "a,b", "", uint16(0), "r")
	f.Fuzz(func(t *testing.T, entry, principal, ipText string, port uint16, login string) {
		p, err := New([]Rule{{Principals: []string{principal}, Jump: []string{entry}, Proxy: []string{entry}, Logins: []string{login}}})
		if err != nil {
			return
		}
		ip, _ := netip.ParseAddr(ipText)
		for _, mode := range []string{ModeJump, ModeProxy} {
			d := p.Decide(Request{Principals: []string{principal}, Host: ipText, IP: ip, Port: port, Login: login, Mode: mode}, func(netip.AddrPort) bool { return false })
			if d.Allow {
				if d.Rule != 0 || d.Entry != entry {
					t.Fatalf("allowed by %d %q", d.Rule, d.Entry)
				}
				if sr, special := specialRange(ip.Unmap()); special {
					// Only an IP entry inside the special range may allow it.
					e, _ := parseEntry(entry)
					if e.name != "" || e.prefix.Bits() < sr.Bits() || !sr.Contains(e.prefix.Addr()) {
						t.Fatalf("special address %s allowed by %q", ip, entry)
					}
				}
			} else if d.Rule != -1 || d.Reason == "" {
				t.Fatalf("bad denial %+v", d)
			}
		}
	})
}
