package bastion

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"gatehouse/bastion/certauth"
	"gatehouse/bastion/policy"
	"gatehouse/bastion/record"
)

// maxCertFile bounds what CheckCert reads: certificates are a few KiB.
const maxCertFile = 64 << 10

// NewCheckOnly builds a Server that can only answer CheckCert: it reads
// the same configuration, CA keys, revocation list and rules as New, but
// opens no audit log, loads no host or recording keys and listens on
// nothing, so `gatehouse bastion check-cert` runs beside a live bastion
// (which holds the audit log's lock) and leaves no trace in its log.
func NewCheckOnly(cfg Config, log *slog.Logger, now func() time.Time) (*Server, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if now == nil {
		now = time.Now
	}
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	checker, pol, err := newDecider(&cfg, log, now)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: log, now: now, checker: checker}
	if cfg.ProxyEnabled() {
		// Decisions only ask whether the recording proxy exists.
		s.proxy = &proxySetup{}
	}
	s.policy.Store(pol)
	rules := append([]policy.Rule(nil), cfg.Rules...)
	s.rules.Store(&rules)
	s.refreshLocalIPs()
	return s, nil
}

// CertUse is the intended use CheckCertUse decides, as the client would
// ask for it.
type CertUse struct {
	// Login is the name the client sends: for a jump, the bastion login
	// (one of the principals; default the first); for a proxy, the target
	// login. "login@host[:port]" is the recording proxy's
	// login@host@bastion form.
	Login string
	// To is the destination, HOST:PORT. Empty: list what the certificate
	// can do under each rule.
	To string
	// Mode is "jump" (ssh -J to a jump destination), "proxy" (a recorded
	// session) or "" (as the bastion decides an ssh -J: jump, or proxy if
	// To is a proxy destination).
	Mode string
	// PTY asks for an interactive terminal.
	PTY bool
	// Source is the client address (default 127.0.0.1).
	Source string
}

// CheckCert is CheckCertUse with only a login (a principal, or
// "login@host[:port]" for the recording proxy) and a source.
func (s *Server) CheckCert(certFile, login, source string) (report []string, ok bool) {
	return s.CheckCertUse(certFile, CertUse{Login: login, Source: source})
}

// CheckCertUse explains, one line per fact or check, whether the OpenSSH
// user certificate in certFile would be accepted for the use u, through the
// very functions the live bastion decides with (acceptIdentity,
// decideJump, proxyLogin, ptyRefusal): every certificate check, the rule
// and entry that allow the destination, and the missing
// permit-port-forwarding or permit-pty a rule needs. Without u.To it lists
// what the certificate can do under each rule; ok is then true if it can
// do anything. It writes nothing anywhere.
func (s *Server) CheckCertUse(certFile string, u CertUse) (report []string, ok bool) {
	add := func(format string, args ...any) { report = append(report, fmt.Sprintf(format, args...)) }
	st, err := os.Stat(certFile)
	if err != nil {
		add("REFUSED: cannot read %s: %v", certFile, err)
		return report, false
	}
	if st.Size() > maxCertFile {
		add("REFUSED: %s is %d bytes, too large for a certificate", certFile, st.Size())
		return report, false
	}
	data, err := os.ReadFile(certFile)
	if err != nil {
		add("REFUSED: cannot read %s: %v", certFile, err)
		return report, false
	}
	pub, _, _, _, err := gossh.ParseAuthorizedKey(data)
	if err != nil {
		add("REFUSED: %s is not an OpenSSH public key or certificate: %v", certFile, err)
		return report, false
	}
	cert, isCert := pub.(*gossh.Certificate)
	if !isCert {
		add("REFUSED: %s is a plain %s key (%s), not a certificate; the bastion accepts certificates only", certFile, pub.Type(), gossh.FingerprintSHA256(pub))
		return report, false
	}
	kind := "user"
	if cert.CertType == gossh.HostCert {
		kind = "host"
	}
	add("certificate: %s (%s certificate, %s)", certFile, kind, cert.Type())
	add("key: %s", gossh.FingerprintSHA256(cert.Key))
	add("key id: %q, serial %d", record.Sanitize(cert.KeyId, 200), cert.Serial)
	if cert.SignatureKey != nil {
		add("signed by CA: %s %s", cert.SignatureKey.Type(), gossh.FingerprintSHA256(cert.SignatureKey))
	}
	if cert.Signature != nil {
		add("CA signature algorithm: %s", cert.Signature.Format)
	}
	add("principals: %s", listOrNone(sanitizeList(cert.ValidPrincipals)))
	add("valid: %s", validity(cert))
	add("critical options: %s", mapOrNone(cert.CriticalOptions))
	add("extensions: %s", mapOrNone(cert.Extensions))

	source := u.Source
	if source == "" {
		source = "127.0.0.1"
	}
	ip, err := netip.ParseAddr(source)
	if err != nil {
		add("REFUSED: source %q is not an IP address", record.Sanitize(source, 60))
		return report, false
	}
	remote := &net.TCPAddr{IP: ip.AsSlice(), Port: 0}
	login, mode := u.Login, u.Mode
	if strings.Contains(login, "@") {
		// login@host[:port]@bastion: exactly the proxy's way in.
		if u.To != "" || mode == policy.ModeJump {
			add("REFUSED: --login %q names a target; do not combine it with --to or --jump", record.Sanitize(login, 100))
			return report, false
		}
		return s.checkProxy(report, login, remote, pub, u.PTY)
	}
	if u.To == "" {
		return s.listUses(report, login, remote, pub, cert, u.PTY)
	}
	host, portStr, err := net.SplitHostPort(u.To)
	port, perr := strconv.ParseUint(portStr, 10, 16)
	if err != nil || perr != nil || port == 0 || host == "" {
		add("REFUSED: --to %q is not HOST:PORT", record.Sanitize(u.To, 100))
		return report, false
	}
	if mode == policy.ModeProxy {
		if login == "" {
			add("REFUSED: --proxy needs --login: the login on the target")
			return report, false
		}
		return s.checkProxy(report, login+"@"+net.JoinHostPort(host, portStr), remote, pub, u.PTY)
	}
	// A jump (ssh -J): the bastion login is a principal.
	jumpLogin := login
	if jumpLogin == "" || !slices.Contains(cert.ValidPrincipals, jumpLogin) {
		if len(cert.ValidPrincipals) > 0 {
			jumpLogin = cert.ValidPrincipals[0]
		}
	}
	report, id := s.explainIdentity(report, jumpLogin, remote, pub)
	if id == nil {
		return report, false
	}
	dest := net.JoinHostPort(sanitize(host), portStr)
	v := s.decideJump(context.Background(), id, host, uint16(port), dest)
	if len(v.ips) > 0 {
		report = append(report, fmt.Sprintf("resolved %s to %s", sanitize(host), strings.Join(ipStrings(v.ips), ", ")))
	}
	switch {
	case v.proxyIP.IsValid():
		report = append(report, fmt.Sprintf("%s is a recorded-proxy destination: ssh -J leads into the recording proxy, which then decides the login on the target", dest))
		if mode == policy.ModeJump || login == "" || login == jumpLogin {
			report = append(report, "REFUSED: no rule allows a plain jump there; check the recorded session with --proxy --login TARGET_LOGIN")
			return report, false
		}
		return s.checkProxy(report, login+"@"+net.JoinHostPort(host, portStr), remote, pub, u.PTY)
	case v.refusal != "":
		report = append(report, "REFUSED: "+v.refusal)
		return report, false
	}
	report = append(report, fmt.Sprintf("jump to %s (%s) allowed by rule %d (%s); permit-port-forwarding present", dest, v.chosen, v.dec.Rule, v.dec.Entry))
	if u.PTY {
		report = append(report, "pty: negotiated with the target inside the jump; the bastion does not see it")
	}
	report = append(report, "ACCEPTED")
	return report, true
}

// explainIdentity adds every certificate check for login to report.
func (s *Server) explainIdentity(report []string, login string, remote net.Addr, pub gossh.PublicKey) ([]string, *certauth.Identity) {
	report = append(report, fmt.Sprintf("checking login %q from %s at %s", record.Sanitize(login, 100), remote, s.now().UTC().Format(time.RFC3339)))
	steps, id, reason, detail := s.acceptIdentity(login, remote, pub, true)
	for _, st := range steps {
		switch {
		case st.OK:
			report = append(report, "  ok    "+st.Check)
		case st.Skipped:
			report = append(report, fmt.Sprintf("  skip  %s: %s", st.Check, st.Detail))
		default:
			report = append(report, fmt.Sprintf("  FAIL  %s: %s: %s", st.Check, st.Reason, record.Sanitize(st.Detail, 300)))
		}
	}
	if id == nil {
		report = append(report, fmt.Sprintf("REFUSED: %s: %s", reason, detail))
		return report, nil
	}
	return report, id
}

// checkProxy decides a recorded session for user = "login@host[:port]".
func (s *Server) checkProxy(report []string, user string, remote net.Addr, pub gossh.PublicKey, pty bool) ([]string, bool) {
	t, principal, ar := s.proxyLogin(user, pub)
	if ar != nil {
		return append(report, fmt.Sprintf("REFUSED: %s: %s", ar.reason, ar.detail)), false
	}
	report = append(report, fmt.Sprintf("recorded proxy login: %q on %s (%s) as principal %q, rule %d (%s)",
		t.login, t.String(), t.ip, record.Sanitize(principal, 100), t.dec.Rule, t.dec.Entry))
	report, id := s.explainIdentity(report, principal, remote, pub)
	if id == nil {
		return report, false
	}
	why := ptyRefusal(id)
	switch {
	case pty && why != "":
		return append(report, "REFUSED: pty: "+why), false
	case why != "":
		report = append(report, "note: "+why+": commands, scp and sftp work; an interactive shell does not")
	default:
		report = append(report, "pty: permitted (permit-pty)")
	}
	report = append(report, fmt.Sprintf("ACCEPTED: the bastion records the session and logs in to %s as %q with a certificate it mints", t.String(), t.login))
	return report, true
}

// listUses lists, rule by rule, what the certificate may do.
func (s *Server) listUses(report []string, login string, remote net.Addr, pub gossh.PublicKey, cert *gossh.Certificate, pty bool) ([]string, bool) {
	if login == "" && len(cert.ValidPrincipals) > 0 {
		login = cert.ValidPrincipals[0]
	}
	report, id := s.explainIdentity(report, login, remote, pub)
	if id == nil {
		return report, false
	}
	usable := 0
	for i, r := range *s.rules.Load() {
		var hit []string
		for _, p := range r.Principals {
			if p == "*" || slices.Contains(id.Principals, p) {
				hit = append(hit, p)
			}
		}
		if len(hit) == 0 {
			continue
		}
		for _, e := range r.Jump {
			if id.PermitPortForwarding {
				report = append(report, fmt.Sprintf("rule %d (principals %s): jump to %s: allowed", i, strings.Join(hit, ", "), e))
				usable++
			} else {
				report = append(report, fmt.Sprintf("rule %d (principals %s): jump to %s: REFUSED: certificate lacks permit-port-forwarding", i, strings.Join(hit, ", "), e))
			}
		}
		for _, e := range r.Proxy {
			what := fmt.Sprintf("rule %d (principals %s): recorded session to %s as %s", i, strings.Join(hit, ", "), e, listOrNone(r.Logins))
			switch {
			case s.proxy == nil:
				report = append(report, what+": REFUSED: the recording proxy is not configured")
			case len(r.Logins) == 0:
				report = append(report, what+": REFUSED: the rule names no logins")
			case id.PermitPTY:
				report = append(report, what+": allowed, with a pty")
				usable++
			case pty:
				report = append(report, what+": REFUSED: pty: certificate lacks permit-pty")
			default:
				report = append(report, what+": allowed without a pty (certificate lacks permit-pty: commands, scp and sftp only)")
				usable++
			}
		}
	}
	if usable == 0 {
		return append(report, "REFUSED: the certificate can log in but no rule lets it reach anything"), false
	}
	return append(report, fmt.Sprintf("ACCEPTED: %d use(s) allowed", usable)), true
}

func validity(c *gossh.Certificate) string {
	if c.ValidBefore == gossh.CertTimeInfinity {
		return fmt.Sprintf("from %s forever (refused: lifetime must be finite)", certTime(c.ValidAfter))
	}
	life := time.Duration(c.ValidBefore-c.ValidAfter) * time.Second
	if c.ValidBefore < c.ValidAfter {
		life = 0
	}
	return fmt.Sprintf("from %s to %s (lifetime %s)", certTime(c.ValidAfter), certTime(c.ValidBefore), life)
}

func certTime(t uint64) string {
	if t == 0 {
		return "always"
	}
	if t > 1<<62 {
		return "forever"
	}
	return time.Unix(int64(t), 0).UTC().Format(time.RFC3339)
}

func listOrNone(v []string) string {
	if len(v) == 0 {
		return "(none)"
	}
	return strings.Join(v, ", ")
}

func mapOrNone(m map[string]string) string {
	if len(m) == 0 {
		return "(none)"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		v := m[k]
		if v == "" {
			parts = append(parts, record.Sanitize(k, 60))
		} else {
			parts = append(parts, record.Sanitize(k, 60)+"="+record.Sanitize(v, 120))
		}
	}
	return strings.Join(parts, ", ")
}
