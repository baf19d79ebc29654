// Package policy decides, as a pure function of the configured rules, whether
// a certificate identity may reach a destination through the bastion, by jump
// (direct-tcpip) or by recorded proxy. It does no I/O: the caller resolves the
// requested name once, passes the resolved IP, and dials exactly that IP.
//
// Destination entries, in a rule's jump and proxy lists:
//
//	db1.internal:5432     a host name: matches the requested name, ASCII
//	                      case-insensitively and exactly (no wildcards, no
//	                      trailing-dot folding), whatever it resolved to
//	10.0.0.7:22           one IPv4 address
//	10.20.0.0/16:22       an IPv4 CIDR block (host bits must be zero)
//	[2001:db8::7]:22      one IPv6 address
//	[2001:db8::/32]:22    an IPv6 CIDR block
//
// The port is a number (1-65535), a range "8000-8099", or "*" for any port.
//
// Loopback, link-local (including the 169.254.169.254 metadata address),
// unspecified, "this network" (0.0.0.0/8), broadcast and multicast addresses
// are denied unless the matching entry is an IP or CIDR literal lying wholly
// inside that special range: "127.0.0.1:2223" allows 127.0.0.1:2223, but
// neither a name resolving to 127.0.0.1 nor "0.0.0.0/0:*" does. Addresses
// the caller reports as protected (the bastion's own listeners) are denied
// unless the entry names that single address and that single port.
package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Rule is one [[bastion.rule]] table: the principals it applies to, the
// destinations they may reach by jump and by proxy, and the target logins
// they may use in proxy mode (none when empty).
type Rule struct {
	Principals []string `toml:"principals"`
	Jump       []string `toml:"jump"`
	Proxy      []string `toml:"proxy"`
	Logins     []string `toml:"logins"`
}

// Modes of Request.Mode.
const (
	ModeJump  = "jump"
	ModeProxy = "proxy"
)

// Reasons of Decision.Reason; stable codes for the audit log.
const (
	ReasonAllowed          = "allowed"
	ReasonBadRequest       = "bad-request"
	ReasonNoRule           = "no-rule-for-principals"
	ReasonNoEntry          = "no-matching-entry"
	ReasonSpecialAddress   = "special-address"
	ReasonProtectedAddress = "protected-address"
	ReasonLoginNotAllowed  = "login-not-allowed"
)

// Limits on configuration size, so a hostile or broken config cannot make
// decisions slow.
const (
	maxRules   = 10000
	maxEntries = 10000
	maxNameLen = 253
)

type entry struct {
	text   string
	name   string       // lower-cased host name; "" for IP entries
	prefix netip.Prefix // valid for IP entries
	lo, hi uint16       // port range, inclusive
}

type rule struct {
	principals map[string]bool
	jump       []entry
	proxy      []entry
	logins     map[string]bool
}

// Policy is a compiled, immutable rule set; safe for concurrent use.
type Policy struct {
	rules []rule
}

// New compiles rules. Errors name the rule index (0-based, as in the config
// file order), the list and the offending entry.
func New(rules []Rule) (*Policy, error) {
	if len(rules) > maxRules {
		return nil, fmt.Errorf("policy: %d rules, more than %d", len(rules), maxRules)
	}
	p := &Policy{rules: make([]rule, 0, len(rules))}
	for i, r := range rules {
		cr, err := compileRule(r)
		if err != nil {
			return nil, fmt.Errorf("policy: rule %d: %w", i, err)
		}
		p.rules = append(p.rules, cr)
	}
	return p, nil
}

func compileRule(r Rule) (rule, error) {
	cr := rule{principals: map[string]bool{}, logins: map[string]bool{}}
	if len(r.Principals) == 0 {
		return cr, errors.New("principals is empty; list the certificate principals this rule applies to")
	}
	if len(r.Jump) == 0 && len(r.Proxy) == 0 {
		return cr, errors.New("neither jump nor proxy lists a destination")
	}
	if len(r.Jump)+len(r.Proxy) > maxEntries || len(r.Principals) > maxEntries || len(r.Logins) > maxEntries {
		return cr, fmt.Errorf("more than %d entries", maxEntries)
	}
	for j, s := range r.Principals {
		if err := nameSyntax(s); err != nil {
			return cr, fmt.Errorf("principals entry %d %q: %w", j, s, err)
		}
		cr.principals[s] = true
	}
	for j, s := range r.Logins {
		if err := nameSyntax(s); err != nil {
			return cr, fmt.Errorf("logins entry %d %q: %w", j, s, err)
		}
		cr.logins[s] = true
	}
	for j, s := range r.Jump {
		e, err := parseEntry(s)
		if err != nil {
			return cr, fmt.Errorf("jump entry %d %q: %w", j, s, err)
		}
		cr.jump = append(cr.jump, e)
	}
	for j, s := range r.Proxy {
		e, err := parseEntry(s)
		if err != nil {
			return cr, fmt.Errorf("proxy entry %d %q: %w", j, s, err)
		}
		cr.proxy = append(cr.proxy, e)
	}
	return cr, nil
}

// nameSyntax checks principals and logins: non-empty, printable ASCII
// without blanks, commas or wildcards (rules never pattern-match).
func nameSyntax(s string) error {
	if s == "" {
		return errors.New("empty")
	}
	if len(s) > 256 {
		return errors.New("longer than 256 bytes")
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || c == ',' || c == '*' || c == '?' {
			return fmt.Errorf("character %q at byte %d is not allowed", c, i)
		}
	}
	return nil
}

// parseEntry parses one destination entry; see the package comment.
func parseEntry(s string) (entry, error) {
	e := entry{text: s}
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return e, errors.New(`missing ":port" (use "*" for any port)`)
	}
	host, port := s[:i], s[i+1:]
	var err error
	if e.lo, e.hi, err = parsePorts(port); err != nil {
		return e, err
	}
	if strings.HasPrefix(host, "[") {
		inner, ok := strings.CutSuffix(host[1:], "]")
		if !ok || strings.ContainsAny(inner, "[]") {
			return e, errors.New("unbalanced brackets")
		}
		if !strings.Contains(inner, ":") {
			return e, errors.New("brackets are only for IPv6 addresses")
		}
		e.prefix, err = parseIP(inner)
		return e, err
	}
	if strings.Contains(host, ":") {
		return e, errors.New(`an IPv6 address must be written in brackets, as "[2001:db8::1]:22"`)
	}
	if strings.Contains(host, "/") || looksNumeric(host) {
		e.prefix, err = parseIP(host)
		return e, err
	}
	if err := hostSyntax(host); err != nil {
		return e, err
	}
	e.name = strings.ToLower(host)
	return e, nil
}

// looksNumeric reports whether host is made only of digits and dots, so it
// is meant as an IPv4 address and must parse as one (no "10.1" shorthand
// becoming a name).
func looksNumeric(host string) bool {
	return host != "" && strings.Trim(host, "0123456789.") == ""
}

func parseIP(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("not a CIDR block: %w", err)
		}
		if p.Addr().Is4In6() {
			return netip.Prefix{}, errors.New("write IPv4 blocks in dotted form, not IPv4-mapped IPv6")
		}
		if p != p.Masked() {
			return netip.Prefix{}, fmt.Errorf("host bits are set; did you mean %s?", p.Masked())
		}
		return p, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("not an IP address: %w", err)
	}
	if a.Zone() != "" {
		return netip.Prefix{}, errors.New("IPv6 zones are not supported")
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func parsePorts(s string) (lo, hi uint16, err error) {
	if s == "*" {
		return 1, 65535, nil
	}
	one := func(t string) (uint16, error) {
		if t == "" || strings.Trim(t, "0123456789") != "" {
			return 0, fmt.Errorf("port %q is not a number", t)
		}
		v, err := strconv.ParseUint(t, 10, 16)
		if err != nil || v == 0 {
			return 0, fmt.Errorf("port %q is out of range 1-65535", t)
		}
		return uint16(v), nil
	}
	a, b, isRange := strings.Cut(s, "-")
	if lo, err = one(a); err != nil {
		return 0, 0, err
	}
	hi = lo
	if isRange {
		if hi, err = one(b); err != nil {
			return 0, 0, err
		}
		if hi < lo {
			return 0, 0, fmt.Errorf("port range %q is inverted", s)
		}
	}
	return lo, hi, nil
}

// hostSyntax accepts DNS names made of letters, digits, '-' and '_' labels.
func hostSyntax(h string) error {
	if h == "" {
		return errors.New("empty host")
	}
	if len(h) > maxNameLen {
		return fmt.Errorf("host name longer than %d bytes", maxNameLen)
	}
	for _, label := range strings.Split(strings.TrimSuffix(h, "."), ".") {
		if label == "" || len(label) > 63 {
			return errors.New("host name has an empty or over-long label")
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
			if !ok {
				return fmt.Errorf("host name has character %q; wildcards and patterns are not supported", c)
			}
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return errors.New("host name label starts or ends with '-'")
		}
	}
	return nil
}

// specialRanges are destinations no name entry may reach, and only IP
// entries wholly inside one of them may.
var specialRanges = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),          // "this network"; 0.0.0.0 reaches the local host
	netip.MustParsePrefix("127.0.0.0/8"),        // loopback
	netip.MustParsePrefix("169.254.0.0/16"),     // link-local, cloud metadata
	netip.MustParsePrefix("224.0.0.0/4"),        // multicast
	netip.MustParsePrefix("255.255.255.255/32"), // broadcast
	netip.MustParsePrefix("::/128"),             // unspecified
	netip.MustParsePrefix("::1/128"),            // loopback
	netip.MustParsePrefix("fe80::/10"),          // link-local
	netip.MustParsePrefix("ff00::/8"),           // multicast
}

// specialRange returns the special range holding ip, if any.
func specialRange(ip netip.Addr) (netip.Prefix, bool) {
	for _, p := range specialRanges {
		if p.Contains(ip) {
			return p, true
		}
	}
	return netip.Prefix{}, false
}

// Request is one destination request, as the caller has prepared it.
type Request struct {
	// Principals are the authenticated certificate's principals.
	Principals []string
	// Host is the destination exactly as the client requested it.
	Host string
	// IP is Host resolved once by the caller; the caller dials exactly this.
	IP   netip.Addr
	Port uint16
	// Login is the target account (proxy mode only).
	Login string
	// Mode is ModeJump or ModeProxy.
	Mode string
}

// Decision is the outcome of Decide. Rule and Entry name the allowing rule
// (index into the rules given to New) and entry; on a denial Rule is -1 and
// Reason (a stable code) and Detail say why.
type Decision struct {
	Allow  bool
	Rule   int
	Entry  string
	Reason string
	Detail string
}

// Decide returns whether req is allowed. protected reports addresses that
// must never be reached by a broad entry (the bastion's own listeners, the
// mirror's admin port); it may be nil. Rules are tried in order and the first
// that allows wins; when none allows, the most specific denial is reported.
func (p *Policy) Decide(req Request, protected func(netip.AddrPort) bool) Decision {
	deny := func(reason, format string, args ...any) Decision {
		return Decision{Rule: -1, Reason: reason, Detail: fmt.Sprintf(format, args...)}
	}
	if req.Mode != ModeJump && req.Mode != ModeProxy {
		return deny(ReasonBadRequest, "unknown mode %q", req.Mode)
	}
	if !req.IP.IsValid() || req.IP.Zone() != "" || req.Port == 0 {
		return deny(ReasonBadRequest, "destination address %v port %d is not usable", req.IP, req.Port)
	}
	ip := req.IP.Unmap()
	ap := netip.AddrPortFrom(ip, req.Port)
	host := strings.ToLower(req.Host)
	special, isSpecial := specialRange(ip)
	isProtected := protected != nil && (protected(ap) || protected(netip.AddrPortFrom(req.IP, req.Port)))

	best := deny(ReasonNoRule, "no rule applies to principals %q", req.Principals)
	rank := 0 // how far the best denial got: 1 no entry, 2 address, 3 login
	for i, r := range p.rules {
		if !r.appliesTo(req.Principals) {
			continue
		}
		entries := r.jump
		if req.Mode == ModeProxy {
			entries = r.proxy
		}
		if rank < 1 {
			best, rank = deny(ReasonNoEntry, "no %s entry allows %q (%s) port %d", req.Mode, req.Host, ip, req.Port), 1
		}
		for _, e := range entries {
			if req.Port < e.lo || req.Port > e.hi {
				continue
			}
			literal := e.name == ""
			if literal && !e.prefix.Contains(ip) || !literal && e.name != host {
				continue
			}
			if isSpecial && !(literal && e.prefix.Bits() >= special.Bits() && special.Contains(e.prefix.Addr())) {
				if rank < 2 {
					best, rank = deny(ReasonSpecialAddress, "%s is in %s; only an IP entry inside that range may allow it (entry %q of rule %d matched)", ip, special, e.text, i), 2
				}
				continue
			}
			if isProtected && !(literal && e.prefix.IsSingleIP() && e.lo == e.hi) {
				if rank < 2 {
					best, rank = deny(ReasonProtectedAddress, "%s is one of the bastion's own addresses; only an entry naming that address and port may allow it (entry %q of rule %d matched)", ap, e.text, i), 2
				}
				continue
			}
			if req.Mode == ModeProxy && !r.logins[req.Login] {
				if rank < 3 {
					best, rank = deny(ReasonLoginNotAllowed, "login %q is not in the logins of rule %d", req.Login, i), 3
				}
				continue
			}
			return Decision{Allow: true, Rule: i, Entry: e.text, Reason: ReasonAllowed}
		}
	}
	return best
}

func (r *rule) appliesTo(principals []string) bool {
	for _, p := range principals {
		if r.principals[p] {
			return true
		}
	}
	return false
}
