// Package certauth decides whether a public key offered to the bastion is an
// acceptable OpenSSH user certificate, and turns an accepted one into an
// Identity. It owns the trusted user CA set and the revocation list (OpenSSH
// KRL or its text form) and reloads both when their files change.
//
// Check performs every certificate check of DESIGN.md "Bastion" 1 itself;
// it does not rely on x/crypto's CertChecker, whose defaults accept empty
// principals, SHA-1 CA signatures and infinite lifetimes.
package certauth

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"golang.org/x/crypto/ssh"
)

// Config names the trust material and limits for user certificates. It is
// decoded from the [bastion] table by the caller.
type Config struct {
	// UserCAKeys is the path of an authorized_keys-style file holding one or
	// more trusted user CA public keys (required).
	UserCAKeys string
	// RevokedKeys is the path of an OpenSSH KRL or a text revocation list
	// (see ParseRevocations); empty means no revocation file.
	RevokedKeys string
	// MaxCertLifetime is the longest ValidBefore-ValidAfter accepted; > 0.
	MaxCertLifetime time.Duration
	// ClockSkew is how far ValidAfter may lie in the future; it is never
	// applied to ValidBefore. >= 0.
	ClockSkew time.Duration
}

// Identity is what an accepted certificate proves. Callers log KeyID and
// Principals only through a quoting formatter: they are chosen by the CA's
// requester and checked here for syntax, not for meaning.
type Identity struct {
	// Login is the user name the client authenticated as (conn.User()); it
	// is always one of Principals.
	Login      string
	Principals []string
	KeyID      string
	Serial     uint64
	// CAFingerprint and KeyFingerprint are "SHA256:..." of the CA key and
	// of the certificate's plain key.
	CAFingerprint, KeyFingerprint string
	ValidAfter, ValidBefore       time.Time
	// SourceAddress holds the source-address critical option; empty = any.
	SourceAddress         []netip.Prefix
	PermitPTY             bool
	PermitPortForwarding  bool
	PermitAgentForwarding bool
	PermitX11Forwarding   bool
	PermitUserRC          bool
	// ForceCommand is always "" for an accepted certificate: certificates
	// carrying force-command are refused (the bastion runs no commands).
	ForceCommand string
	Cert         *ssh.Certificate
}

// Refusal is the error Check and StillValid return when a certificate is not
// acceptable. Reason is a stable machine code for the audit log, one of:
// not-a-certificate, host-certificate, untrusted-ca, weak-ca-signature,
// bad-signature, weak-key, revoked, unknown-critical-option, force-command,
// source-address, no-principals, bad-principal, login-not-in-principals,
// infinite-lifetime, lifetime-too-long, expired, not-yet-valid.
// Detail is for humans; attacker-chosen text in it is quoted.
type Refusal struct{ Reason, Detail string }

// Error returns "certificate refused (REASON): DETAIL".
func (r *Refusal) Error() string {
	return "certificate refused (" + r.Reason + "): " + r.Detail
}

func refuse(reason, format string, args ...any) *Refusal {
	return &Refusal{Reason: reason, Detail: fmt.Sprintf(format, args...)}
}

// Principal syntax limits.
const (
	maxPrincipals   = 256
	maxPrincipalLen = 256
)

// state is one loaded generation of trust material; replaced whole.
type state struct {
	cas        map[string]caKey
	rev        *Revocations // nil when no revocation file is configured
	caStamp    fileStamp
	revStamp   fileStamp
	revEntries int
}

// Checker checks offered keys against the loaded CA set and revocation list.
// It is safe for concurrent use; Check never blocks on Reload.
type Checker struct {
	cfg Config
	now func() time.Time
	log *slog.Logger

	cur atomic.Pointer[state]

	mu        sync.Mutex // serialises Reload / ReloadIfChanged
	failStamp [2]fileStamp
	failErr   error
}

// New loads cfg.UserCAKeys and cfg.RevokedKeys and returns a Checker. now is
// the clock used for every validity decision. Errors name the file and line
// (or byte offset for a binary KRL).
func New(cfg Config, now func() time.Time, log *slog.Logger) (*Checker, error) {
	if cfg.UserCAKeys == "" {
		return nil, errors.New("certauth: user_ca_keys is not set; name the file holding the trusted user CA public keys")
	}
	if cfg.MaxCertLifetime <= 0 {
		return nil, fmt.Errorf("certauth: max_cert_lifetime must be positive, got %v", cfg.MaxCertLifetime)
	}
	if cfg.ClockSkew < 0 {
		return nil, fmt.Errorf("certauth: clock_skew must not be negative, got %v", cfg.ClockSkew)
	}
	if now == nil {
		return nil, errors.New("certauth: nil clock")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Checker{cfg: cfg, now: now, log: log}
	st, err := c.load()
	if err != nil {
		return nil, err
	}
	c.cur.Store(st)
	log.Info("certauth: loaded trust material", "user_ca_keys", cfg.UserCAKeys, "cas", len(st.cas),
		"revoked_keys", cfg.RevokedKeys, "revocation_entries", st.revEntries)
	return c, nil
}

// Check decides whether key, offered by a client at remote that asked to log
// in as login, is an acceptable user certificate. It returns the Identity, or
// a *Refusal naming the first failed check (in the order Explain lists them).
// It has no side effects, so it is safe to call from x/crypto's
// PublicKeyCallback (which also sees keys the client has not proven it
// holds).
func (c *Checker) Check(login string, remote net.Addr, key ssh.PublicKey) (*Identity, error) {
	_, id, ref := c.evaluate(login, remote, key, false)
	if ref != nil {
		return nil, ref
	}
	return id, nil
}

// trustedCA refuses a certificate whose CA is not in the trusted set.
func trustedCA(st *state, cert *ssh.Certificate) *Refusal {
	if _, trusted := st.cas[string(cert.SignatureKey.Marshal())]; !trusted {
		return refuse("untrusted-ca", "CA %s is not in the trusted set", ssh.FingerprintSHA256(cert.SignatureKey))
	}
	return nil
}

// signatureAlgorithm refuses CA signature formats outside the allow-list.
func signatureAlgorithm(cert *ssh.Certificate) *Refusal {
	if cert.Signature == nil {
		return refuse("bad-signature", "certificate is not signed")
	}
	if !allowedCASignatures[cert.Signature.Format] {
		return refuse("weak-ca-signature", "CA signature algorithm %s is not allowed (ssh-rsa means RSA with SHA-1; re-sign with -t rsa-sha2-512)", quote(cert.Signature.Format))
	}
	return nil
}

// verifySignature checks the CA's signature over the certificate. The
// signed bytes are the certificate without its signature field, exactly
// what x/crypto's unexported bytesForSigning computes.
func verifySignature(cert *ssh.Certificate) *Refusal {
	unsigned := *cert
	unsigned.Signature = nil
	data := unsigned.Marshal()
	data = data[:len(data)-4]
	if err := cert.SignatureKey.Verify(data, cert.Signature); err != nil {
		return refuse("bad-signature", "signature by CA %s does not verify: %v", ssh.FingerprintSHA256(cert.SignatureKey), err)
	}
	return nil
}

// criticalOptions refuses unknown and unsupported critical options and
// returns the parsed source-address list (nil when absent).
func criticalOptions(cert *ssh.Certificate) ([]netip.Prefix, *Refusal) {
	var src []netip.Prefix
	for name, val := range cert.CriticalOptions {
		switch name {
		case "source-address":
			prefixes, err := parseSourceAddress(val)
			if err != nil {
				return nil, refuse("source-address", "malformed source-address %s: %v", quote(val), err)
			}
			src = prefixes
		case "force-command":
			// The bastion runs no commands of its own, so it cannot honour it.
			return nil, refuse("force-command", "force-command %s is not supported by this bastion", quote(val))
		case "verify-required":
			return nil, refuse("unknown-critical-option", "verify-required (FIDO user verification) is not supported")
		default:
			return nil, refuse("unknown-critical-option", "critical option %s is not supported", quote(name))
		}
	}
	return src, nil
}

// sourceAddress refuses a client outside the certificate's source-address.
func sourceAddress(src []netip.Prefix, remote net.Addr, raw string) *Refusal {
	if len(src) == 0 {
		return nil
	}
	ip, ok := remoteIP(remote)
	if !ok {
		return refuse("source-address", "certificate restricts source addresses but the client address %v is unknown", remote)
	}
	for _, p := range src {
		if p.Contains(ip) {
			return nil
		}
	}
	return refuse("source-address", "client address %s is not in source-address %s", ip, quote(raw))
}

// parseSourceAddress parses OpenSSH's comma-separated list of addresses and
// CIDR blocks. Blocks with host bits set are refused as probably mistaken.
func parseSourceAddress(v string) ([]netip.Prefix, error) {
	if v == "" {
		return nil, errors.New("empty list")
	}
	parts := strings.Split(v, ",")
	if len(parts) > 1024 {
		return nil, fmt.Errorf("%d entries, more than 1024", len(parts))
	}
	out := make([]netip.Prefix, 0, len(parts))
	for _, s := range parts {
		if strings.Contains(s, "/") {
			p, err := netip.ParsePrefix(s)
			if err != nil {
				return nil, fmt.Errorf("entry %s: %v", quote(s), err)
			}
			if p.Addr().Zone() != "" || p != p.Masked() {
				return nil, fmt.Errorf("entry %s has host bits set", quote(s))
			}
			out = append(out, p)
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return nil, fmt.Errorf("entry %s is not an address or CIDR block", quote(s))
		}
		out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
	}
	return out, nil
}

func remoteIP(a net.Addr) (netip.Addr, bool) {
	switch v := a.(type) {
	case *net.TCPAddr:
		ip, ok := netip.AddrFromSlice(v.IP)
		return ip.Unmap(), ok
	case nil:
		return netip.Addr{}, false
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}, false
	}
	return ap.Addr().Unmap(), true
}

// principalList refuses empty or malformed principal lists. Principals are
// never split or pattern-matched: a principal "a,b" or "*" is refused.
func principalList(cert *ssh.Certificate) *Refusal {
	ps := cert.ValidPrincipals
	if len(ps) == 0 {
		return refuse("no-principals", "certificate lists no principals (it would be valid for every user)")
	}
	if len(ps) > maxPrincipals {
		return refuse("bad-principal", "certificate lists %d principals, more than %d", len(ps), maxPrincipals)
	}
	for _, p := range ps {
		if err := principalSyntax(p); err != nil {
			return refuse("bad-principal", "principal %s: %v", quote(p), err)
		}
	}
	return nil
}

// loginInPrincipals refuses a login that is not exactly one of the
// principals.
func loginInPrincipals(cert *ssh.Certificate, login string) *Refusal {
	for _, p := range cert.ValidPrincipals {
		if p == login {
			return nil
		}
	}
	return refuse("login-not-in-principals", "login %s is not one of the certificate's principals %s", quote(login), quote(strings.Join(cert.ValidPrincipals, " ")))
}

func principalSyntax(p string) error {
	if p == "" {
		return errors.New("empty")
	}
	if len(p) > maxPrincipalLen {
		return fmt.Errorf("longer than %d bytes", maxPrincipalLen)
	}
	if !utf8.ValidString(p) {
		return errors.New("not valid UTF-8")
	}
	for _, r := range p {
		switch {
		case r == ',':
			return errors.New("contains a comma")
		case r == '*' || r == '?':
			return errors.New("contains a wildcard")
		case r <= ' ' || r == 0x7f || (r >= 0x80 && r <= 0x9f):
			return errors.New("contains whitespace or a control character")
		case strings.ContainsRune("\u00a0\u1680\u2028\u2029\u202f\u205f\u3000\ufeff", r) || (r >= 0x2000 && r <= 0x200b):
			return errors.New("contains a Unicode space")
		}
	}
	return nil
}

// lifetime applies the lifetime policy: finite, non-empty, at most
// MaxCertLifetime.
func (c *Checker) lifetime(cert *ssh.Certificate) *Refusal {
	if cert.ValidBefore == ssh.CertTimeInfinity {
		return refuse("infinite-lifetime", "certificate never expires; the maximum lifetime is %v", c.cfg.MaxCertLifetime)
	}
	const maxTime = 1<<63 - 1
	if cert.ValidAfter > maxTime || cert.ValidBefore > maxTime {
		return refuse("infinite-lifetime", "certificate validity ends beyond the year 292277026596")
	}
	va, vb := int64(cert.ValidAfter), int64(cert.ValidBefore)
	if vb <= va {
		return refuse("expired", "certificate validity window is empty (valid after %d, before %d)", va, vb)
	}
	if life := uint64(vb - va); life > uint64(c.cfg.MaxCertLifetime/time.Second) {
		return refuse("lifetime-too-long", "certificate is valid for %v, more than the maximum %v", time.Duration(life)*time.Second, c.cfg.MaxCertLifetime)
	}
	return nil
}

// window checks ValidAfter-ClockSkew <= now < ValidBefore: skew is
// tolerated on ValidAfter only, never on expiry.
func (c *Checker) window(cert *ssh.Certificate, now time.Time) *Refusal {
	const maxTime = 1<<63 - 1
	if cert.ValidAfter > maxTime || cert.ValidBefore > maxTime {
		return refuse("infinite-lifetime", "certificate validity ends beyond the year 292277026596")
	}
	va, vb, n := int64(cert.ValidAfter), int64(cert.ValidBefore), now.Unix()
	if n >= vb {
		return refuse("expired", "certificate expired at %s", time.Unix(vb, 0).UTC().Format(time.RFC3339))
	}
	if skew := int64(c.cfg.ClockSkew / time.Second); n < va-skew {
		return refuse("not-yet-valid", "certificate is valid from %s (clock skew allowed: %v)", time.Unix(va, 0).UTC().Format(time.RFC3339), c.cfg.ClockSkew)
	}
	return nil
}

// StillValid re-checks a live session's identity against the current time,
// the current trusted CA set and the current revocation list. It returns a
// *Refusal (expired, untrusted-ca or revoked) when the session must end.
func (c *Checker) StillValid(id *Identity) error {
	if id == nil || id.Cert == nil {
		return refuse("not-a-certificate", "no certificate")
	}
	st := c.cur.Load()
	if !c.now().Before(id.ValidBefore) {
		return refuse("expired", "certificate expired at %s", id.ValidBefore.UTC().Format(time.RFC3339))
	}
	if _, ok := st.cas[string(id.Cert.SignatureKey.Marshal())]; !ok {
		return refuse("untrusted-ca", "CA %s is no longer trusted", id.CAFingerprint)
	}
	if st.rev != nil {
		if r, why := st.rev.Revoked(id.Cert); r {
			return refuse("revoked", "revoked by %s in %s", why, c.cfg.RevokedKeys)
		}
	}
	return nil
}
