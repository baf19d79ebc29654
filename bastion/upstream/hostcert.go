package upstream

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

// HostCertSigner returns a signer that presents hostKey with a host
// certificate from hostCA (host_ca_key) for names. The bastion presents
// it when it terminates SSH for a proxied destination, so that a client
// with one "@cert-authority * <host_ca.pub>" known_hosts line accepts
// the bastion as that destination. The certificate is valid from one
// minute before now until now+validity; names become its principals
// verbatim (pass an IP literal too when the admin may type one).
func HostCertSigner(hostCA, hostKey ssh.Signer, names []string, now time.Time, validity time.Duration) (ssh.Signer, error) {
	if hostCA == nil || hostKey == nil {
		return nil, errors.New("host certificate: missing host CA or host key")
	}
	if _, ok := hostCA.PublicKey().(*ssh.Certificate); ok {
		return nil, errors.New("host certificate: host_ca_key is a certificate; it must be a plain CA key")
	}
	if _, ok := hostKey.PublicKey().(*ssh.Certificate); ok {
		return nil, errors.New("host certificate: the host key is already a certificate")
	}
	if len(names) == 0 {
		return nil, errors.New("host certificate: no names to certify")
	}
	if validity <= 0 {
		return nil, fmt.Errorf("host certificate: validity %v must be positive", validity)
	}
	var principals []string
	for _, n := range names {
		if err := checkName("host name", n); err != nil {
			return nil, fmt.Errorf("host certificate: %w", err)
		}
		// known_hosts matching is case-insensitive for names: certify
		// the form OpenSSH compares against.
		if _, err := netip.ParseAddr(n); err != nil {
			n = strings.ToLower(n)
		}
		principals = append(principals, n)
	}
	var sb [8]byte
	if _, err := rand.Read(sb[:]); err != nil {
		return nil, fmt.Errorf("host certificate: serial: %w", err)
	}
	cert := &ssh.Certificate{
		Key:             hostKey.PublicKey(),
		Serial:          binary.BigEndian.Uint64(sb[:]),
		CertType:        ssh.HostCert,
		KeyId:           "gatehouse host " + strings.Join(principals, ","),
		ValidPrincipals: principals,
		ValidAfter:      uint64(now.Add(-certBackdate).Unix()),
		ValidBefore:     uint64(now.Add(validity).Unix()),
	}
	if err := cert.SignCert(rand.Reader, hostCA); err != nil {
		return nil, fmt.Errorf("host certificate for %s: sign: %w", principals[0], err)
	}
	s, err := ssh.NewCertSigner(cert, hostKey)
	if err != nil {
		return nil, fmt.Errorf("host certificate for %s: %w", principals[0], err)
	}
	return s, nil
}
