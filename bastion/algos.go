package bastion

import (
	"fmt"
	"log/slog"
	"slices"
	"strings"

	gossh "golang.org/x/crypto/ssh"
)

// Algorithm lists: explicit, so that a library default can never bring back
// SHA-1 key exchange or MACs, CBC, or ssh-rsa signatures. Strict KEX
// (kex-strict-s-v00@openssh.com, the Terrapin fix) is always advertised by
// x/crypto >= v0.17 and needs no setting.
//
// The defaults are what hardening guides (and `ssh-audit`) keep: the
// hybrid post-quantum mlkem768x25519-sha256 (x/crypto implements it on the
// server side since v0.38, with Go >= 1.24's crypto/mlkem) and
// curve25519-sha256 (x/crypto adds its @libssh.org alias itself), the AEAD
// ciphers, and only encrypt-then-MAC MACs (used only if a client insists on
// a CTR cipher, which the defaults do not offer, but ssh-audit judges the
// list). NIST-curve key exchange, CTR ciphers and encrypt-and-MAC
// hmac-sha2-* are in the wider set that [bastion] kex_algorithms, ciphers,
// macs and host_key_algorithms may name for older clients.
var (
	kexAlgos = []string{
		gossh.KeyExchangeMLKEM768X25519,
		gossh.KeyExchangeCurve25519, // also offers curve25519-sha256@libssh.org
	}
	// cipherAlgos keeps aes128-gcm and chacha20-poly1305: the relay
	// benchmarks measure both.
	cipherAlgos = []string{
		gossh.CipherAES128GCM,
		gossh.CipherAES256GCM,
		gossh.CipherChaCha20Poly1305,
	}
	macAlgos = []string{
		gossh.HMACSHA256ETM,
		gossh.HMACSHA512ETM,
	}
	// hostKeyAlgos: ed25519, and RSA only with SHA-2 signatures.
	hostKeyAlgos = []string{
		gossh.KeyAlgoED25519,
		gossh.KeyAlgoRSASHA512,
		gossh.KeyAlgoRSASHA256,
	}
	// pubKeyAuthAlgos are the client signature algorithms accepted; for
	// certificates x/crypto maps the cert algorithm to these.
	pubKeyAuthAlgos = []string{
		gossh.KeyAlgoED25519,
		gossh.KeyAlgoSKED25519,
		gossh.KeyAlgoECDSA256,
		gossh.KeyAlgoECDSA384,
		gossh.KeyAlgoECDSA521,
		gossh.KeyAlgoSKECDSA256,
		gossh.KeyAlgoRSASHA512,
		gossh.KeyAlgoRSASHA256,
	}
)

// WiderAlgorithms are the names the [bastion] algorithm settings accept:
// everything x/crypto implements without a known weakness (no SHA-1, CBC,
// RC4 or ssh-rsa signatures).
var WiderAlgorithms = struct{ KeyExchanges, Ciphers, MACs, HostKeys []string }{
	KeyExchanges: []string{
		gossh.KeyExchangeMLKEM768X25519, gossh.KeyExchangeCurve25519, "curve25519-sha256@libssh.org",
		gossh.KeyExchangeECDHP256, gossh.KeyExchangeECDHP384, gossh.KeyExchangeECDHP521,
		gossh.KeyExchangeDH14SHA256, gossh.KeyExchangeDH16SHA512,
	},
	Ciphers: []string{
		gossh.CipherAES128GCM, gossh.CipherAES256GCM, gossh.CipherChaCha20Poly1305,
		gossh.CipherAES128CTR, gossh.CipherAES192CTR, gossh.CipherAES256CTR,
	},
	MACs: []string{gossh.HMACSHA256ETM, gossh.HMACSHA512ETM, gossh.HMACSHA256, gossh.HMACSHA512},
	HostKeys: []string{
		gossh.KeyAlgoED25519, gossh.KeyAlgoRSASHA512, gossh.KeyAlgoRSASHA256,
		gossh.KeyAlgoECDSA256, gossh.KeyAlgoECDSA384, gossh.KeyAlgoECDSA521,
	},
}

// algorithms is the per-server choice: the defaults or the configured lists.
type algorithms struct{ kex, ciphers, macs, hostKeys []string }

func (c *Config) algorithms() algorithms {
	pick := func(cfg, def []string) []string {
		if len(cfg) > 0 {
			return cfg
		}
		return def
	}
	return algorithms{
		kex:      pick(c.KexAlgorithms, kexAlgos),
		ciphers:  pick(c.Ciphers, cipherAlgos),
		macs:     pick(c.MACs, macAlgos),
		hostKeys: pick(c.HostKeyAlgorithms, hostKeyAlgos),
	}
}

// checkAlgorithms refuses a name outside WiderAlgorithms, naming the key.
func (c *Config) checkAlgorithms() error {
	for _, l := range []struct {
		key     string
		got, ok []string
	}{
		{"kex_algorithms", c.KexAlgorithms, WiderAlgorithms.KeyExchanges},
		{"ciphers", c.Ciphers, WiderAlgorithms.Ciphers},
		{"macs", c.MACs, WiderAlgorithms.MACs},
		{"host_key_algorithms", c.HostKeyAlgorithms, WiderAlgorithms.HostKeys},
	} {
		for _, a := range l.got {
			if !slices.Contains(l.ok, a) {
				return fmt.Errorf("[bastion] %s: %q is not supported or not safe; choose from %s (or leave the key out for the hardened default)",
					l.key, a, strings.Join(l.ok, ", "))
			}
		}
	}
	return nil
}

// baseKeyType is the plain key type of a host key or host certificate.
func baseKeyType(t string) string {
	for _, c := range []struct{ cert, plain string }{
		{gossh.CertAlgoED25519v01, gossh.KeyAlgoED25519},
		{gossh.CertAlgoRSAv01, gossh.KeyAlgoRSA},
		{gossh.CertAlgoECDSA256v01, gossh.KeyAlgoECDSA256},
		{gossh.CertAlgoECDSA384v01, gossh.KeyAlgoECDSA384},
		{gossh.CertAlgoECDSA521v01, gossh.KeyAlgoECDSA521},
	} {
		if t == c.cert {
			return c.plain
		}
	}
	return t
}

// restrictHostSigners keeps the host keys whose algorithms are allowed
// and limits RSA keys to the allowed rsa-sha2-* signatures (x/crypto would
// otherwise also offer ssh-rsa, SHA-1). A key of a type not allowed is
// left out with a warning; none left is a configuration error.
func restrictHostSigners(signers []gossh.Signer, allowed []string, log *slog.Logger) ([]gossh.Signer, error) {
	var out []gossh.Signer
	for _, s := range signers {
		t := s.PublicKey().Type()
		base := baseKeyType(t)
		if base != gossh.KeyAlgoRSA {
			if slices.Contains(allowed, base) {
				out = append(out, s)
			} else {
				log.Warn("bastion: host key not offered: its algorithm is not in [bastion] host_key_algorithms",
					"type", t, "fingerprint", gossh.FingerprintSHA256(s.PublicKey()))
			}
			continue
		}
		var algos []string
		for _, a := range []string{gossh.KeyAlgoRSASHA512, gossh.KeyAlgoRSASHA256} {
			if !slices.Contains(allowed, a) {
				continue
			}
			if t != base {
				a = map[string]string{gossh.KeyAlgoRSASHA512: gossh.CertAlgoRSASHA512v01, gossh.KeyAlgoRSASHA256: gossh.CertAlgoRSASHA256v01}[a]
			}
			algos = append(algos, a)
		}
		as, ok := s.(gossh.AlgorithmSigner)
		if len(algos) == 0 || !ok {
			log.Warn("bastion: RSA host key not offered: no rsa-sha2-* in [bastion] host_key_algorithms",
				"fingerprint", gossh.FingerprintSHA256(s.PublicKey()))
			continue
		}
		ms, err := gossh.NewSignerWithAlgorithms(as, algos)
		if err != nil {
			return nil, fmt.Errorf("host key %s: %w", gossh.FingerprintSHA256(s.PublicKey()), err)
		}
		out = append(out, ms)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no host key has an algorithm in [bastion] host_key_algorithms (%s): add an ed25519 host key or widen the list",
			strings.Join(allowed, ", "))
	}
	return out, nil
}
