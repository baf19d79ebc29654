package bastion

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"gatehouse/bastion/record"
)

// maxCertFile bounds what CheckCert reads: certificates are a few KiB.
const maxCertFile = 64 << 10

// CheckCert explains, one line per fact or check, whether the OpenSSH user
// certificate in certFile would be accepted for login from source (an IP
// address; empty means 127.0.0.1) and which rules it would match. An empty
// login means the certificate's first principal; a login of the form
// "login@host[:port]" is checked as the recording proxy's way in would
// check it: the principal a proxy rule allows for that target and login. ok is true only if the
// certificate passes every check and at least one rule names one of its
// principals. It reads the same CA keys, revocation list and rules as the
// running bastion would.
func (s *Server) CheckCert(certFile, login, source string) (report []string, ok bool) {
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

	if login == "" && len(cert.ValidPrincipals) > 0 {
		login = cert.ValidPrincipals[0]
	}
	if source == "" {
		source = "127.0.0.1"
	}
	ip, err := netip.ParseAddr(source)
	if err != nil {
		add("REFUSED: source %q is not an IP address", record.Sanitize(source, 60))
		return report, false
	}
	add("checking login %q from %s at %s", record.Sanitize(login, 100), ip, s.now().UTC().Format(time.RFC3339))
	var target *proxyTarget
	if strings.Contains(login, "@") {
		t, principal, ar := s.proxyLogin(nil, login, pub)
		if ar != nil {
			add("REFUSED: %s: %s", ar.reason, ar.detail)
			return report, false
		}
		target = t
		add("recorded proxy login: %q on %s (%s) as principal %q", t.login, t.String(), t.ip, record.Sanitize(principal, 100))
		login = principal
	}
	id, err := s.checker.Check(login, &net.TCPAddr{IP: ip.AsSlice(), Port: 0}, pub)
	if err != nil {
		reason, detail := refusalOf(err)
		add("REFUSED: %s: %s", reason, detail)
		return report, false
	}
	add("certificate checks: all passed (CA trusted, signature algorithm allowed, principals sane, login is a principal, within validity and max_cert_lifetime, not revoked, source address and critical options acceptable)")
	if target != nil {
		add("ACCEPTED: the bastion records the session and logs in to %s as %q with a certificate it mints", target.String(), target.login)
		return report, true
	}
	if !id.PermitPortForwarding {
		add("note: no permit-port-forwarding extension: ssh -J to jump destinations will be refused (recorded proxy destinations still work)")
	}
	matched := false
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
		matched = true
		add("rule %d matches (principals %s): jump %s; proxy %s", i, strings.Join(hit, ", "), listOrNone(r.Jump), listOrNone(r.Proxy))
	}
	if !matched {
		add("REFUSED: no [[bastion.rule]] names any of the principals: login would succeed but every destination would be refused")
		return report, false
	}
	add("ACCEPTED")
	return report, true
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
