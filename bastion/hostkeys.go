package bastion

import (
	"bytes"
	"fmt"
	"os"

	gossh "golang.org/x/crypto/ssh"
)

// loadHostSigners reads the private host keys and optional host
// certificates. Each key is offered both plain and, when a certificate for
// it is configured, as a certificate, so clients with either a known_hosts
// entry or an @cert-authority line can verify the bastion.
func loadHostSigners(keys, certs []string) ([]gossh.Signer, error) {
	var plain []gossh.Signer
	for _, path := range keys {
		s, err := loadPrivateKey(path)
		if err != nil {
			return nil, err
		}
		plain = append(plain, s)
	}
	out := append([]gossh.Signer(nil), plain...)
	for _, path := range certs {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("host certificate: %w", err)
		}
		pub, _, _, _, err := gossh.ParseAuthorizedKey(data)
		if err != nil {
			return nil, fmt.Errorf("host certificate %s: %w", path, err)
		}
		cert, ok := pub.(*gossh.Certificate)
		if !ok || cert.CertType != gossh.HostCert {
			return nil, fmt.Errorf("host certificate %s: not an OpenSSH host certificate (sign one with ssh-keygen -h -s CA)", path)
		}
		var match gossh.Signer
		for _, s := range plain {
			if bytes.Equal(s.PublicKey().Marshal(), cert.Key.Marshal()) {
				match = s
			}
		}
		if match == nil {
			return nil, fmt.Errorf("host certificate %s: certifies a key that is not among host_keys", path)
		}
		cs, err := gossh.NewCertSigner(cert, match)
		if err != nil {
			return nil, fmt.Errorf("host certificate %s: %w", path, err)
		}
		out = append(out, cs)
	}
	return out, nil
}

// loadPrivateKey loads one unencrypted OpenSSH private key, refusing a file
// that others can read: a leaked host key lets anyone impersonate the
// bastion.
func loadPrivateKey(path string) (gossh.Signer, error) { return loadSecretKey("host key", path) }

// loadSecretKey loads one unencrypted OpenSSH private key (what names it in
// errors, e.g. "host key" or "upstream_ca_key"), refusing a file that
// others can read.
func loadSecretKey(what, path string) (gossh.Signer, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w (create one with 'gatehouse init' or ssh-keygen -t ed25519 -N '' -f %s)", what, err, path)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", what, path, err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%s %s is readable by group or others (mode %04o): run chmod 600 %s", what, path, st.Mode().Perm(), path)
	}
	if st.Size() > 64<<10 {
		return nil, fmt.Errorf("%s %s: %d bytes is too large for a private key", what, path, st.Size())
	}
	data := make([]byte, st.Size())
	if _, err := f.ReadAt(data, 0); err != nil {
		return nil, fmt.Errorf("%s %s: %w", what, path, err)
	}
	s, err := gossh.ParsePrivateKey(data)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w (it must be an unencrypted OpenSSH private key)", what, path, err)
	}
	if as, ok := s.(gossh.AlgorithmSigner); ok && s.PublicKey().Type() == gossh.KeyAlgoRSA {
		// Never sign with SHA-1 ("ssh-rsa") even if a client asks for it.
		s, err = gossh.NewSignerWithAlgorithms(as, []string{gossh.KeyAlgoRSASHA512, gossh.KeyAlgoRSASHA256})
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", what, path, err)
		}
	}
	return s, nil
}
