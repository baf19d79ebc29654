package pgp

import (
	"bytes"
	"crypto"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/clearsign"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

// Key algorithms GenerateSigningKey accepts.
const (
	AlgoEd25519 = "ed25519"
	AlgoRSA3072 = "rsa3072"
	AlgoRSA4096 = "rsa4096"
)

// SigningKey is an unencrypted OpenPGP secret key that signs repository
// metadata. Its signatures use SHA-512 and verify with gpgv 2.2 and sqv.
type SigningKey struct {
	entity *openpgp.Entity
}

// GenerateSigningKey creates a v4 signing key valid from now without expiry:
// algo is AlgoEd25519 (default when ""; EdDSA as Debian's own release keys,
// readable by gpgv 2.2), AlgoRSA3072 or AlgoRSA4096. The key has one
// user ID "name <email>" and no subkeys; self-signatures use SHA-512.
func GenerateSigningKey(name, email string, algo string, now time.Time) (*SigningKey, error) {
	cfg := &packet.Config{
		DefaultHash: crypto.SHA512,
		Time:        func() time.Time { return now },
	}
	switch algo {
	case "", AlgoEd25519:
		cfg.Algorithm = packet.PubKeyAlgoEdDSA
		cfg.Curve = packet.Curve25519
	case AlgoRSA3072:
		cfg.Algorithm, cfg.RSABits = packet.PubKeyAlgoRSA, 3072
	case AlgoRSA4096:
		cfg.Algorithm, cfg.RSABits = packet.PubKeyAlgoRSA, 4096
	default:
		return nil, fmt.Errorf("generate signing key: unknown algorithm %q (use %s, %s or %s)", algo, AlgoEd25519, AlgoRSA3072, AlgoRSA4096)
	}
	if strings.ContainsAny(name+email, "()<>\x00\n") {
		return nil, fmt.Errorf("generate signing key: name %q or email %q contains ( ) < > or control characters", name, email)
	}
	e, err := openpgp.NewEntity(name, "", email, cfg)
	if err != nil {
		return nil, fmt.Errorf("generate signing key: %w", err)
	}
	// NewEntity adds an encryption subkey; a signing-only key needs none.
	e.Subkeys = nil
	return &SigningKey{entity: e}, nil
}

// WriteSigningKey writes k as an ASCII-armored secret key to path, created
// with mode 0600. It refuses to overwrite an existing file; the directory
// must exist. The file appears complete or not at all.
func WriteSigningKey(path string, k *SigningKey) error {
	var buf bytes.Buffer
	w, err := armor.Encode(&buf, openpgp.PrivateKeyType, nil)
	if err != nil {
		return fmt.Errorf("write signing key %s: %w", path, err)
	}
	if err := k.entity.SerializePrivateWithoutSigning(w, nil); err != nil {
		return fmt.Errorf("write signing key %s: %w", path, err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("write signing key %s: %w", path, err)
	}
	buf.WriteByte('\n')

	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, ".signing-key-*")
	if err != nil {
		return fmt.Errorf("write signing key %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("write signing key %s: %w", path, err)
	}
	if _, err := tmp.Write(buf.Bytes()); err != nil {
		tmp.Close()
		return fmt.Errorf("write signing key %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write signing key %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write signing key %s: %w", path, err)
	}
	// link(2) fails when path exists, unlike rename(2): an existing key is
	// never replaced by accident.
	if err := os.Link(tmp.Name(), path); err != nil {
		if os.IsExist(err) {
			return fmt.Errorf("write signing key %s: file exists; refusing to overwrite a key (move it away first)", path)
		}
		return fmt.Errorf("write signing key %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// LoadSigningKey reads a secret key written by WriteSigningKey (or exported
// unencrypted by gpg --export-secret-keys, armored or binary). It refuses a
// file readable by group or others, and passphrase-protected keys.
func LoadSigningKey(path string) (*SigningKey, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("load signing key: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("load signing key: %w", err)
	}
	if m := fi.Mode().Perm(); m&0o077 != 0 {
		return nil, fmt.Errorf("load signing key %s: mode %04o lets group or others read a secret key; run: chmod 600 %s", path, m, path)
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxKeyringSize+1))
	if err != nil {
		return nil, fmt.Errorf("load signing key %s: %w", path, err)
	}
	if len(data) > MaxKeyringSize {
		return nil, fmt.Errorf("load signing key %s: larger than %d bytes: not a key", path, MaxKeyringSize)
	}
	var el openpgp.EntityList
	if bytes.HasPrefix(bytes.TrimLeft(data, " \t\r\n"), []byte("-----BEGIN PGP")) {
		el, err = openpgp.ReadArmoredKeyRing(bytes.NewReader(data))
	} else {
		el, err = openpgp.ReadKeyRing(bytes.NewReader(data))
	}
	if err != nil {
		return nil, fmt.Errorf("load signing key %s: %v", path, err)
	}
	if len(el) != 1 {
		return nil, fmt.Errorf("load signing key %s: holds %d keys, want exactly one", path, len(el))
	}
	e := el[0]
	if e.PrivateKey == nil {
		return nil, fmt.Errorf("load signing key %s: holds only a public key", path)
	}
	// Whether the key may sign depends on the time of signing (expiry,
	// revocation); ClearSign and DetachSign check that with their now.
	encrypted := e.PrivateKey.Encrypted
	for _, sk := range e.Subkeys {
		encrypted = encrypted || (sk.PrivateKey != nil && sk.PrivateKey.Encrypted)
	}
	if encrypted {
		return nil, fmt.Errorf("load signing key %s: secret key is passphrase-protected; export it unencrypted (the file's mode 0600 protects it)", path)
	}
	return &SigningKey{entity: e}, nil
}

// Fingerprint returns the primary key fingerprint, uppercase hex: the value
// clients put in Signed-By.
func (k *SigningKey) Fingerprint() string { return fpr(k.entity.PrimaryKey.Fingerprint) }

// PublicKey returns the public key for clients' Signed-By keyring, armored
// (.asc) or binary (.gpg).
func (k *SigningKey) PublicKey(armored bool) ([]byte, error) {
	var buf bytes.Buffer
	var w io.Writer = &buf
	var aw io.WriteCloser
	if armored {
		var err error
		if aw, err = armor.Encode(&buf, openpgp.PublicKeyType, nil); err != nil {
			return nil, fmt.Errorf("export public key: %w", err)
		}
		w = aw
	}
	if err := k.entity.Serialize(w); err != nil {
		return nil, fmt.Errorf("export public key: %w", err)
	}
	if aw != nil {
		if err := aw.Close(); err != nil {
			return nil, fmt.Errorf("export public key: %w", err)
		}
		buf.WriteByte('\n')
	}
	return buf.Bytes(), nil
}

func (k *SigningKey) config(now time.Time) *packet.Config {
	return &packet.Config{DefaultHash: crypto.SHA512, Time: func() time.Time { return now }}
}

func (k *SigningKey) signer(now time.Time) (*packet.PrivateKey, error) {
	sk, ok := k.entity.SigningKey(now)
	if !ok || sk.PrivateKey == nil {
		return nil, fmt.Errorf("key %s cannot sign at %s (expired, revoked or not signing-capable)", k.Fingerprint(), now.UTC().Format(time.RFC3339))
	}
	return sk.PrivateKey, nil
}

// ClearSign returns body as a clearsigned document (an InRelease file) with
// a SHA-512 text signature and a "Hash: SHA512" header. As with gpg
// --clearsign, a final line break of body separates the text from the
// signature and is not signed, trailing spaces and tabs of lines are not part
// of the signed text, and CRLF line ends become LF. VerifyClearsigned returns
// the signed text with every line ended by "\n".
func (k *SigningKey) ClearSign(body []byte, now time.Time) ([]byte, error) {
	priv, err := k.signer(now)
	if err != nil {
		return nil, fmt.Errorf("clearsign: %w", err)
	}
	body = bytes.TrimSuffix(body, []byte("\n"))
	body = bytes.TrimSuffix(body, []byte("\r"))
	var out bytes.Buffer
	w, err := clearsign.Encode(&out, priv, k.config(now))
	if err != nil {
		return nil, fmt.Errorf("clearsign: %w", err)
	}
	if _, err := w.Write(body); err != nil {
		return nil, fmt.Errorf("clearsign: %w", err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("clearsign: %w", err)
	}
	return rearmor(out.Bytes())
}

// rearmor rewrites the signature block of go-crypto's clearsign output with
// a CRC-24 line and a final line break. Without the CRC line gpgv 2.2 (Debian
// 12) misreads the armor of short (Ed25519) signatures: it reports NODATA
// and exits non-zero although the signature is good.
func rearmor(doc []byte) ([]byte, error) {
	marker := []byte("\n-----BEGIN PGP SIGNATURE-----\n")
	i := bytes.LastIndex(doc, marker)
	if i < 0 {
		return nil, fmt.Errorf("clearsign: no signature block in output")
	}
	block, err := armor.Decode(bytes.NewReader(doc[i+1:]))
	if err != nil {
		return nil, fmt.Errorf("clearsign: re-read signature armor: %w", err)
	}
	var out bytes.Buffer
	out.Write(doc[:i+1])
	w, err := armor.Encode(&out, "PGP SIGNATURE", nil)
	if err != nil {
		return nil, fmt.Errorf("clearsign: %w", err)
	}
	if _, err := io.Copy(w, block.Body); err != nil {
		return nil, fmt.Errorf("clearsign: re-read signature armor: %w", err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("clearsign: %w", err)
	}
	out.WriteByte('\n')
	return out.Bytes(), nil
}

// DetachSign returns a detached binary-mode signature over body (a
// Release.gpg), armored or binary, made with SHA-512.
func (k *SigningKey) DetachSign(body []byte, armored bool, now time.Time) ([]byte, error) {
	if _, err := k.signer(now); err != nil {
		return nil, fmt.Errorf("detach-sign: %w", err)
	}
	var out bytes.Buffer
	var err error
	if armored {
		err = openpgp.ArmoredDetachSign(&out, k.entity, bytes.NewReader(body), k.config(now))
		out.WriteByte('\n')
	} else {
		err = openpgp.DetachSign(&out, k.entity, bytes.NewReader(body), k.config(now))
	}
	if err != nil {
		return nil, fmt.Errorf("detach-sign: %w", err)
	}
	return out.Bytes(), nil
}
