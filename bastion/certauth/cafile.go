package certauth

import (
	"bytes"
	"crypto/rsa"
	"fmt"
	"strings"

	"golang.org/x/crypto/ssh"
)

// maxCAFileSize bounds the trusted-CA file; a few keys are a few kilobytes.
const maxCAFileSize = 1 << 20

// minRSABits is OpenSSH's RequiredRSASize default.
const minRSABits = 3072

// caKey is one trusted user CA.
type caKey struct {
	key         ssh.PublicKey
	fingerprint string
	line        int
}

// parseCAKeys reads an authorized_keys-style file of CA public keys. The only
// option allowed is cert-authority (it is what the line means anyway); any
// other option (from=, principals=, ...) is refused, because this checker
// would not enforce it and the operator would believe it does.
func parseCAKeys(data []byte, name string) (map[string]caKey, error) {
	if len(data) > maxCAFileSize {
		return nil, fmt.Errorf("%s: %d bytes, more than the %d allowed", name, len(data), maxCAFileSize)
	}
	cas := map[string]caKey{}
	for lineNo, line := range bytes.Split(data, []byte("\n")) {
		lineNo++
		t := bytes.TrimSpace(line)
		if len(t) == 0 || t[0] == '#' {
			continue
		}
		key, _, opts, _, err := ssh.ParseAuthorizedKey(t)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: not a public key in authorized_keys format: %w", name, lineNo, err)
		}
		for _, o := range opts {
			if !strings.EqualFold(o, "cert-authority") {
				return nil, fmt.Errorf("%s:%d: option %s is not supported on a CA key (only cert-authority); remove it", name, lineNo, quote(o))
			}
		}
		if _, isCert := key.(*ssh.Certificate); isCert {
			return nil, fmt.Errorf("%s:%d: a certificate cannot be a CA key; list the CA's plain public key", name, lineNo)
		}
		if err := keyStrength(key); err != nil {
			return nil, fmt.Errorf("%s:%d: CA key refused: %w", name, lineNo, err)
		}
		k := string(key.Marshal())
		if _, dup := cas[k]; !dup {
			cas[k] = caKey{key: key, fingerprint: ssh.FingerprintSHA256(key), line: lineNo}
		}
	}
	if len(cas) == 0 {
		return nil, fmt.Errorf("%s: no CA keys; add at least one (to lock everyone out, revoke the CA key in the revocation file instead)", name)
	}
	return cas, nil
}

// allowedKeyTypes are the user and CA key types accepted: OpenSSH's current
// defaults without DSA, and RSA only with at least minRSABits.
var allowedKeyTypes = map[string]bool{
	ssh.KeyAlgoED25519:    true,
	ssh.KeyAlgoSKED25519:  true,
	ssh.KeyAlgoECDSA256:   true,
	ssh.KeyAlgoECDSA384:   true,
	ssh.KeyAlgoECDSA521:   true,
	ssh.KeyAlgoSKECDSA256: true,
	ssh.KeyAlgoRSA:        true,
}

// keyStrength refuses DSA, RSA below minRSABits, and types outside
// allowedKeyTypes.
func keyStrength(key ssh.PublicKey) error {
	t := key.Type()
	if !allowedKeyTypes[t] {
		return fmt.Errorf("key type %s is not allowed", quote(t))
	}
	if t != ssh.KeyAlgoRSA {
		return nil
	}
	ck, ok := key.(ssh.CryptoPublicKey)
	if !ok {
		return fmt.Errorf("cannot read RSA key size")
	}
	rk, ok := ck.CryptoPublicKey().(*rsa.PublicKey)
	if !ok {
		return fmt.Errorf("cannot read RSA key size")
	}
	if n := rk.N.BitLen(); n < minRSABits {
		return fmt.Errorf("RSA key has %d bits, fewer than %d", n, minRSABits)
	}
	return nil
}

// allowedCASignatures are the accepted certificate signature formats: no
// "ssh-rsa" (RSA with SHA-1), matching OpenSSH's CASignatureAlgorithms.
var allowedCASignatures = map[string]bool{
	ssh.KeyAlgoED25519:    true,
	ssh.KeyAlgoSKED25519:  true,
	ssh.KeyAlgoECDSA256:   true,
	ssh.KeyAlgoECDSA384:   true,
	ssh.KeyAlgoECDSA521:   true,
	ssh.KeyAlgoSKECDSA256: true,
	ssh.KeyAlgoRSASHA256:  true,
	ssh.KeyAlgoRSASHA512:  true,
}
