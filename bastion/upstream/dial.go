// Package upstream is the bastion's client side of a recorded proxy
// session: it dials a target with a certificate minted for that one
// session from the upstream CA, checks the target's host key against
// known_hosts (plain keys or @cert-authority lines), and relays session
// channels between the admin and the target while recording them.
package upstream

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
	"unicode"

	"golang.org/x/crypto/ssh"

	"gatehouse/bastion/internal/sanitize"
	"gatehouse/bastion/internal/streamconn"
)

// Defaults for Config fields left zero.
const (
	DefaultCertValidity = 5 * time.Minute
	DefaultDialTimeout  = 10 * time.Second
	// certBackdate is how far before now a minted certificate becomes
	// valid, so that a target whose clock lags a little still accepts it.
	certBackdate = time.Minute
	// maxKnownHosts bounds the known_hosts file read on every dial.
	maxKnownHosts = 16 << 20
)

// Config configures New.
type Config struct {
	// CAKey is the upstream CA (upstream_ca_key) that signs the
	// per-session user certificates; targets trust its public half with
	// TrustedUserCAKeys and trust nothing else.
	CAKey ssh.Signer
	// KnownHosts is the path of an OpenSSH known_hosts file (plain lines,
	// hashed lines, @cert-authority and @revoked markers). It is re-read
	// on every Dial so edits apply to the next session without a restart.
	KnownHosts string
	// CertValidity is how long a minted certificate is valid after now;
	// zero means DefaultCertValidity.
	CertValidity time.Duration
	// DialTimeout bounds the TCP connect plus SSH handshake; zero means
	// DefaultDialTimeout.
	DialTimeout time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Log receives one line per dial; nil discards.
	Log *slog.Logger
}

// Dialer opens authenticated connections to targets. It is safe for
// concurrent use.
type Dialer struct {
	cfg Config
}

// New checks cfg and returns a Dialer. It fails when CAKey is missing or
// is itself a certificate, or when KnownHosts cannot be read or parsed.
func New(cfg Config) (*Dialer, error) {
	if cfg.CAKey == nil {
		return nil, errors.New("upstream: no CA key (set bastion.upstream_ca_key)")
	}
	if _, ok := cfg.CAKey.PublicKey().(*ssh.Certificate); ok {
		return nil, errors.New("upstream: upstream_ca_key is a certificate; it must be a plain CA key")
	}
	if cfg.KnownHosts == "" {
		return nil, errors.New("upstream: no known_hosts file (set bastion.upstream_known_hosts)")
	}
	if cfg.CertValidity <= 0 {
		cfg.CertValidity = DefaultCertValidity
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if _, err := loadKnownHosts(cfg.KnownHosts); err != nil {
		return nil, err
	}
	return &Dialer{cfg: cfg}, nil
}

// Target is where one proxied session goes.
type Target struct {
	// Host is the destination name as the admin typed it and as the
	// known_hosts file names it; host keys are checked against it.
	Host string
	// IP is the address actually dialled (resolved once by the caller,
	// which checked it against policy).
	IP   netip.Addr
	Port uint16
	// Login is the account on the target, the minted certificate's only
	// principal.
	Login string
}

// Who identifies the admin a session is minted for; it goes into the
// certificate's key id so the target's own logs name the admin.
type Who struct {
	Principal, KeyID, SessionID string
	Serial                      uint64 // serial of the admin's certificate
	Source                      string // admin's address
}

// MintedCert describes the certificate minted for one session and the
// host key the target presented, for the audit log and meta.json.
type MintedCert struct {
	Serial       uint64
	KeyID        string
	Principal    string
	ValidAfter   time.Time
	ValidBefore  time.Time
	Fingerprint  string           // SHA256 fingerprint of the ephemeral key
	HostKey      string           // SHA256 fingerprint of the target's host key (of the CA-signed key for a host certificate)
	HostKeyType  string           // key type as presented, e.g. ssh-ed25519-cert-v01@openssh.com
	HostCertID   string           // key id of the target's host certificate, if it presented one
	Certificate  *ssh.Certificate // the minted certificate itself
	AuthorizedBy string           // how the host key was accepted: "known_hosts" or "host-ca"
}

// Dial connects to t.IP:t.Port, verifies the host key for t.Host,
// and authenticates as t.Login with a fresh ed25519 key and a certificate
// minted for this session alone. The caller closes the client.
func (d *Dialer) Dial(ctx context.Context, t Target, who Who) (*ssh.Client, *MintedCert, error) {
	if !t.IP.IsValid() || t.Port == 0 {
		return nil, nil, fmt.Errorf("upstream %s: no address or port to dial", sanitize.String(t.Host, 100))
	}
	dest := net.JoinHostPort(t.IP.Unmap().String(), strconv.Itoa(int(t.Port)))
	if err := checkName("host", t.Host); err != nil {
		return nil, nil, fmt.Errorf("upstream %s: %w", dest, err)
	}
	if err := checkName("login", t.Login); err != nil {
		return nil, nil, fmt.Errorf("upstream %s: %w", dest, err)
	}
	hostPort := net.JoinHostPort(t.Host, strconv.Itoa(int(t.Port)))
	where := "upstream " + hostPort
	if t.Host != t.IP.String() {
		where += " (" + dest + ")"
	}
	hk, err := loadKnownHosts(d.cfg.KnownHosts)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", where, err)
	}
	mc, auth, err := d.mint(t, who)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", where, err)
	}
	algs := ssh.SupportedAlgorithms()
	cc := &ssh.ClientConfig{
		User:            t.Login,
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(auth)},
		HostKeyCallback: hk.callback(mc),
		Timeout:         d.cfg.DialTimeout,
		Config: ssh.Config{
			KeyExchanges: algs.KeyExchanges,
			Ciphers:      algs.Ciphers,
			MACs:         algs.MACs,
		},
		HostKeyAlgorithms: hk.order(hostPort, t, algs.HostKeys),
		ClientVersion:     "SSH-2.0-gatehouse",
	}
	dctx, cancel := context.WithTimeout(ctx, d.cfg.DialTimeout)
	defer cancel()
	var nd net.Dialer
	nc, err := nd.DialContext(dctx, "tcp", dest)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: connect: %w", where, err)
	}
	// The handshake must respect ctx and the timeout: closing the socket
	// is the only way to interrupt it.
	stop := context.AfterFunc(dctx, func() { nc.Close() })
	conn, chans, reqs, err := ssh.NewClientConn(streamconn.New(nc), hostPort, cc)
	if !stop() {
		if conn != nil {
			conn.Close()
		}
		nc.Close()
		if err == nil {
			err = dctx.Err()
		}
		return nil, nil, fmt.Errorf("%s: handshake: %w", where, errors.Join(err, dctx.Err()))
	}
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("%s: %w", where, explainHandshake(err, t.Login))
	}
	d.cfg.Log.Info("upstream connected", "target", hostPort, "ip", dest, "login", t.Login,
		"serial", mc.Serial, "host_key", mc.HostKey, "host_key_by", mc.AuthorizedBy)
	return ssh.NewClient(conn, chans, reqs), mc, nil
}

// mint creates the ephemeral key and its certificate.
func (d *Dialer) mint(t Target, who Who) (*MintedCert, ssh.Signer, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate session key: %w", err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, nil, fmt.Errorf("session key: %w", err)
	}
	spub, err := ssh.NewPublicKey(pub)
	if err != nil {
		return nil, nil, fmt.Errorf("session key: %w", err)
	}
	var sb [8]byte
	if _, err := rand.Read(sb[:]); err != nil {
		return nil, nil, fmt.Errorf("certificate serial: %w", err)
	}
	serial := binary.BigEndian.Uint64(sb[:])
	now := d.cfg.Now()
	cert := &ssh.Certificate{
		Key:             spub,
		Serial:          serial,
		CertType:        ssh.UserCert,
		KeyId:           KeyID(who),
		ValidPrincipals: []string{t.Login},
		ValidAfter:      uint64(now.Add(-certBackdate).Unix()),
		ValidBefore:     uint64(now.Add(d.cfg.CertValidity).Unix()),
		// Only a pty: no agent or X11 forwarding, no port forwarding, no
		// user rc, so the session cannot reach past the target.
		Permissions: ssh.Permissions{Extensions: map[string]string{"permit-pty": ""}},
	}
	if err := cert.SignCert(rand.Reader, d.cfg.CAKey); err != nil {
		return nil, nil, fmt.Errorf("sign session certificate with upstream_ca_key: %w", err)
	}
	cs, err := ssh.NewCertSigner(cert, signer)
	if err != nil {
		return nil, nil, fmt.Errorf("session certificate: %w", err)
	}
	m := &MintedCert{
		Serial: serial, KeyID: cert.KeyId, Principal: t.Login,
		ValidAfter: time.Unix(int64(cert.ValidAfter), 0), ValidBefore: time.Unix(int64(cert.ValidBefore), 0),
		Fingerprint: ssh.FingerprintSHA256(spub), Certificate: cert,
	}
	return m, cs, nil
}

// KeyID is the key id of a certificate minted for who: it names the
// admin so that the target's sshd log ("Accepted publickey ... ID ...")
// says who logged in. Values are sanitized and spaces escaped, so the
// key=value list stays unambiguous whatever the admin's own key id holds.
func KeyID(who Who) string {
	v := func(s string) string {
		return strings.ReplaceAll(sanitize.String(s, 120), " ", `\x20`)
	}
	return fmt.Sprintf("gatehouse session=%s principal=%s keyid=%s serial=%d from=%s",
		v(who.SessionID), v(who.Principal), v(who.KeyID), who.Serial, v(who.Source))
}

// explainHandshake adds what to do to the common authentication failure.
func explainHandshake(err error, login string) error {
	if strings.Contains(err.Error(), "unable to authenticate") {
		return fmt.Errorf("target refused the minted certificate for login %q: check that its sshd has "+
			"TrustedUserCAKeys with upstream_ca_key.pub and that the account exists: %w", sanitize.String(login, 64), err)
	}
	return err
}

// checkName refuses names that would be ambiguous or unsafe in a
// certificate principal or a known_hosts lookup.
func checkName(what, s string) error {
	if s == "" {
		return fmt.Errorf("empty %s", what)
	}
	if len(s) > 255 {
		return fmt.Errorf("%s longer than 255 bytes", what)
	}
	for _, r := range s {
		if r == ',' || r == '*' || r == '?' || r == '!' || unicode.IsSpace(r) || !unicode.IsPrint(r) {
			return fmt.Errorf("%s %q contains %q, which is not allowed", what, sanitize.String(s, 100), r)
		}
	}
	return nil
}
