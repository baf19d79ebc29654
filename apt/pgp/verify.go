package pgp

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/clearsign"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

// MaxClockSkew is how far in the future (relative to the caller's now) a
// signature's creation time may lie before it is refused, as gpgv refuses
// signatures "created in the future".
const MaxClockSkew = 5 * time.Minute

// MaxSignatures bounds the signature packets accepted in one signature block;
// real archives carry one to four.
const MaxSignatures = 64

// MinRSABits is the smallest RSA key accepted for a signature (apt warns
// about and newer releases reject smaller ones).
const MinRSABits = 2048

var (
	// ErrNoGoodSignature: no signature by a key in the keyring verified.
	ErrNoGoodSignature = errors.New("no good signature by a key in the keyring")
	// ErrBadSignature: a signature by a keyring key (or a malformed one) failed.
	ErrBadSignature = errors.New("bad signature")
	// ErrMalformed: the signed document itself is not acceptable (text outside
	// the signed block, several signed blocks, broken armor).
	ErrMalformed = errors.New("malformed signed document")
)

// Signature describes one signature packet and what became of it.
type Signature struct {
	// KeyID is the issuer key ID the signature names (16 uppercase hex
	// digits), taken from the issuer fingerprint when that is present.
	KeyID string
	// Fingerprint is the primary key fingerprint of the signer, "" if the
	// signer is not in the keyring.
	Fingerprint string
	// SubkeyFingerprint is the fingerprint of the subkey that made the
	// signature, "" when the primary key made it or the signer is unknown.
	SubkeyFingerprint string
	// UserID is the signer's primary user ID, "" if unknown.
	UserID string
	// Created is the signature's creation time.
	Created time.Time
	// Hash names the digest algorithm, e.g. "SHA512".
	Hash string
	// Good reports whether the signature verified under every rule.
	Good bool
	// Err says why a signature is not good; nil for good and unknown ones.
	Err error
}

// Result lists the signatures found, by outcome.
type Result struct {
	// Good signatures were made by keyring keys and verified.
	Good []Signature
	// Bad signatures were made by keyring keys (or could not be parsed) and
	// failed; any entry here fails verification.
	Bad []Signature
	// Unknown signatures were made by keys outside the keyring; APT ignores them.
	Unknown []Signature
}

// SignedBy returns the primary fingerprints of the good signers, in the
// order their signatures appear.
func (r *Result) SignedBy() []string {
	if r == nil {
		return nil
	}
	var out []string
	for _, s := range r.Good {
		out = append(out, s.Fingerprint)
	}
	return out
}

// VerifyError is the error of a failed verification. It matches
// ErrNoGoodSignature, ErrBadSignature or ErrMalformed with errors.Is.
type VerifyError struct {
	Kind    error   // one of the Err* sentinels
	Keyring string  // the keyring's name
	Result  *Result // signatures seen, nil when none could be read
	Detail  string
}

// Error returns the full message: what failed, for which keys, and what to do.
func (e *VerifyError) Error() string { return e.Detail }

// Unwrap returns the sentinel so errors.Is works.
func (e *VerifyError) Unwrap() error { return e.Kind }

func malformed(kr *Keyring, format string, args ...any) error {
	return &VerifyError{Kind: ErrMalformed, Keyring: kr.name, Detail: fmt.Sprintf(format, args...)}
}

// VerifyClearsigned verifies a clearsigned document (an InRelease file) with
// APT's rule against kr at time now, and returns the signed text.
//
// The document must consist of exactly one signed message: only whitespace
// may precede "-----BEGIN PGP SIGNED MESSAGE-----" or follow
// "-----END PGP SIGNATURE-----". The returned body is what the signatures
// cover: dash-escapes removed, trailing spaces and tabs of each line removed,
// each line ended by "\n" (so a Release file signed by gpg --clearsign comes
// back byte for byte). It is returned only when err is nil; res is returned
// whenever signatures could be read, to name the signers in messages.
func VerifyClearsigned(data []byte, kr *Keyring, now time.Time) (body []byte, res *Result, err error) {
	const begin = "-----BEGIN PGP SIGNED MESSAGE-----"
	trimmed := bytes.TrimLeft(data, " \t\r\n")
	if !bytes.HasPrefix(trimmed, []byte(begin)) {
		// The text itself is never quoted: it may be anything a server
		// or a man in the middle sent (an internal page, a captive
		// portal), and this message ends up in logs and status pages.
		return nil, nil, malformed(kr, "clearsigned file does not start with %q: it is not a signed message, or unsigned text before the signed block is refused (%s; an HTML error page or a captive portal looks like this)",
			begin, describe(data))
	}
	block, rest := clearsign.Decode(trimmed)
	if block == nil {
		return nil, nil, malformed(kr, "clearsigned file: signed block is incomplete or has invalid headers")
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		if bytes.Contains(rest, []byte(begin)) {
			return nil, nil, malformed(kr, "clearsigned file holds more than one signed message")
		}
		return nil, nil, malformed(kr, "%d bytes of unsigned text after the signature block (%s)", len(bytes.TrimSpace(rest)), describe(data))
	}
	if block.ArmoredSignature.Type != "PGP SIGNATURE" {
		return nil, nil, malformed(kr, "clearsigned file: the signature block is not a \"PGP SIGNATURE\" block")
	}
	if i := bytes.IndexByte(block.Plaintext, '\r'); i >= 0 {
		return nil, nil, malformed(kr, "clearsigned text line %d contains a carriage return inside the line",
			bytes.Count(block.Plaintext[:i], []byte("\n"))+1)
	}
	allowed := block.Headers.Values("Hash")
	res, err = verify(kr, block.ArmoredSignature.Body, now, func(sig *packet.Signature) ([]byte, error) {
		if len(allowed) > 0 && !contains(allowed, hashName(sig.Hash)) {
			return nil, fmt.Errorf("signature digest %s not announced in the Hash: header of the signed message", hashName(sig.Hash))
		}
		// clearsign.Decode already produced the canonical form
		// (CRLF line ends, trailing whitespace removed, no final line end),
		// which is what both text- and binary-type signatures hash here,
		// as in gpg.
		return block.Bytes, nil
	})
	if err != nil {
		return nil, res, err
	}
	body = make([]byte, 0, len(block.Plaintext)+1)
	body = append(body, block.Plaintext...)
	body = append(body, '\n')
	return body, res, nil
}

// VerifyDetached verifies a detached signature (Release.gpg, armored or
// binary) over signed with APT's rule against kr at time now. Binary
// signatures (type 0x00) hash signed as is; text signatures (0x01) hash its
// canonical form (CRLF line ends).
func VerifyDetached(signed []byte, sig []byte, kr *Keyring, now time.Time) (*Result, error) {
	var body io.Reader = bytes.NewReader(sig)
	if trimmed := bytes.TrimLeft(sig, " \t\r\n"); bytes.HasPrefix(trimmed, []byte("-----BEGIN PGP")) {
		block, err := armor.Decode(bytes.NewReader(trimmed))
		if err != nil {
			return nil, malformed(kr, "detached signature: armor: %v", err)
		}
		if block.Type != "PGP SIGNATURE" {
			return nil, malformed(kr, "detached signature: the armored block is not a \"PGP SIGNATURE\" block")
		}
		// The armor must be the whole file, as for InRelease.
		if bytes.Count(trimmed, []byte("-----BEGIN PGP")) != 1 {
			return nil, malformed(kr, "detached signature: more than one armored block")
		}
		all, err := io.ReadAll(io.LimitReader(block.Body, int64(len(sig))+1))
		if err != nil {
			return nil, malformed(kr, "detached signature: armor: %v", err)
		}
		end := []byte("-----END PGP SIGNATURE-----")
		if i := bytes.LastIndex(trimmed, end); i < 0 || len(bytes.TrimSpace(trimmed[i+len(end):])) != 0 {
			return nil, malformed(kr, "detached signature: text after the armored signature block")
		}
		body = bytes.NewReader(all)
	}
	return verify(kr, body, now, func(s *packet.Signature) ([]byte, error) {
		if s.SigType == packet.SigTypeText {
			var buf bytes.Buffer
			w := openpgp.NewCanonicalTextHash(nopHash{&buf})
			w.Write(signed)
			return buf.Bytes(), nil
		}
		return signed, nil
	})
}

// verify reads every signature packet from packets and applies APT's rule.
// data returns the bytes a signature hashes (or why it cannot be checked).
func verify(kr *Keyring, packets io.Reader, now time.Time, data func(*packet.Signature) ([]byte, error)) (*Result, error) {
	res := &Result{}
	for n := 0; ; n++ {
		p, err := packet.Read(packets)
		if err == io.EOF {
			break
		}
		if n >= MaxSignatures {
			return res, &VerifyError{Kind: ErrMalformed, Keyring: kr.name, Result: res,
				Detail: fmt.Sprintf("more than %d signature packets", MaxSignatures)}
		}
		if err != nil {
			// An unparseable signature may be a keyring key's: it counts as
			// bad, never as absent (MD5/RIPEMD160 digests land here too).
			// Any bad entry fails the file, so stop here.
			res.Bad = append(res.Bad, Signature{Err: fmt.Errorf("signature packet %d: %w", n+1, err)})
			break
		}
		switch s := p.(type) {
		case *packet.Signature:
			sig := check(kr, s, now, data)
			switch {
			case sig.Good:
				res.Good = append(res.Good, sig)
			case sig.Fingerprint == "" && sig.Err == nil:
				res.Unknown = append(res.Unknown, sig)
			default:
				res.Bad = append(res.Bad, sig)
			}
		case *packet.Marker, packet.Padding:
		default:
			res.Bad = append(res.Bad, Signature{Err: fmt.Errorf("packet %d is a %T, not a signature", n+1, p)})
		}
	}
	return res, result(kr, res)
}

// result turns a Result into APT's verdict.
func result(kr *Keyring, res *Result) error {
	if len(res.Bad) > 0 {
		var parts []string
		for _, s := range res.Bad {
			who := "unparseable signature"
			if s.KeyID != "" {
				who = "signature by " + s.KeyID
				if s.UserID != "" {
					who += " (" + s.UserID + ")"
				}
			}
			parts = append(parts, fmt.Sprintf("%s: %v", who, s.Err))
		}
		return &VerifyError{Kind: ErrBadSignature, Keyring: kr.name, Result: res,
			Detail: fmt.Sprintf("bad signature (keyring %s): %s: the file was altered or signed wrongly; do not use it",
				kr.name, strings.Join(parts, "; "))}
	}
	if len(res.Good) == 0 {
		var ids []string
		for _, s := range res.Unknown {
			ids = append(ids, s.KeyID)
		}
		seen := "not signed at all"
		if len(ids) > 0 {
			seen = "signed by " + strings.Join(ids, ", ")
		}
		return &VerifyError{Kind: ErrNoGoodSignature, Keyring: kr.name, Result: res,
			Detail: fmt.Sprintf("%s; none in keyring %s: add the right key to the keyring or fix Signed-By", seen, kr.name)}
	}
	return nil
}

// check decides one signature. An unknown signer yields a Signature with an
// empty Fingerprint and nil Err.
func check(kr *Keyring, s *packet.Signature, now time.Time, data func(*packet.Signature) ([]byte, error)) Signature {
	out := Signature{Created: s.CreationTime, Hash: hashName(s.Hash)}
	switch {
	case len(s.IssuerFingerprint) >= 8:
		out.KeyID = fpr(s.IssuerFingerprint[len(s.IssuerFingerprint)-8:])
		if s.IssuerKeyVersion >= 5 {
			out.KeyID = fpr(s.IssuerFingerprint[:8])
		}
	case s.IssuerKeyId != nil:
		out.KeyID = fmt.Sprintf("%016X", *s.IssuerKeyId)
	default:
		out.Err = errors.New("signature names no issuer")
		return out
	}
	cands := kr.lookup(s)
	if len(cands) == 0 {
		return out // unknown signer: ignored by APT's rule
	}
	var firstErr error
	for _, c := range cands {
		out.Fingerprint = fpr(c.entity.PrimaryKey.Fingerprint)
		out.SubkeyFingerprint = ""
		if c.key != c.entity.PrimaryKey {
			out.SubkeyFingerprint = fpr(c.key.Fingerprint)
		}
		if id := c.entity.PrimaryIdentity(); id != nil {
			out.UserID = id.Name
		}
		err := checkWith(c, s, now, data)
		if err == nil {
			out.Good, out.Err = true, nil
			return out
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	out.Err = firstErr
	return out
}

func checkWith(c candidate, s *packet.Signature, now time.Time, data func(*packet.Signature) ([]byte, error)) error {
	if !acceptedHash(s.Hash) {
		return fmt.Errorf("weak digest %s refused (sign with SHA-256 or stronger)", hashName(s.Hash))
	}
	if s.SigType != packet.SigTypeBinary && s.SigType != packet.SigTypeText {
		return fmt.Errorf("signature type %#x is not a document signature", uint8(s.SigType))
	}
	if err := acceptedKey(c.key); err != nil {
		return err
	}
	if s.CreationTime.After(now.Add(MaxClockSkew)) {
		return fmt.Errorf("signature created %s, in the future (now %s): check the clock", s.CreationTime.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	if s.SigLifetimeSecs != nil && *s.SigLifetimeSecs != 0 &&
		now.After(s.CreationTime.Add(time.Duration(*s.SigLifetimeSecs)*time.Second)) {
		return fmt.Errorf("signature expired at %s", s.CreationTime.Add(time.Duration(*s.SigLifetimeSecs)*time.Second).UTC().Format(time.RFC3339))
	}
	if c.key.CreationTime.After(s.CreationTime) {
		return fmt.Errorf("key %X was created after the signature", c.key.Fingerprint)
	}
	if err := keyUsable(c, now); err != nil {
		return err
	}
	b, err := data(s)
	if err != nil {
		return err
	}
	h, err := s.PrepareVerify()
	if err != nil {
		return fmt.Errorf("prepare digest: %v", err)
	}
	h.Write(b)
	if err := c.key.VerifySignature(h, s); err != nil {
		return fmt.Errorf("does not verify: %v", err)
	}
	return nil
}

// keyUsable checks that the key is, at now, a valid signing key of its
// entity: primary not expired or revoked, the (sub)key not expired or
// revoked, and flagged for signing.
func keyUsable(c candidate, now time.Time) error {
	e := c.entity
	self, ident := e.PrimarySelfSignature()
	switch {
	case self == nil:
		return errors.New("key has no valid self-signature")
	case e.Revoked(now) || (ident != nil && ident.Revoked(now) && e.PrimaryKey.Version < 6):
		return fmt.Errorf("key %X is revoked", e.PrimaryKey.Fingerprint)
	case e.PrimaryKey.KeyExpired(self, now) || self.SigExpired(now):
		return fmt.Errorf("key %X expired at %s", e.PrimaryKey.Fingerprint, expiry(e.PrimaryKey, self))
	}
	if c.key == e.PrimaryKey {
		if !self.FlagsValid || !self.FlagSign {
			return fmt.Errorf("primary key %X is not flagged for signing", c.key.Fingerprint)
		}
		return nil
	}
	for i := range e.Subkeys {
		sk := &e.Subkeys[i]
		if sk.PublicKey != c.key {
			continue
		}
		switch {
		case sk.Revoked(now):
			return fmt.Errorf("subkey %X is revoked", c.key.Fingerprint)
		case c.key.KeyExpired(sk.Sig, now) || sk.Sig.SigExpired(now):
			return fmt.Errorf("subkey %X expired at %s", c.key.Fingerprint, expiry(c.key, sk.Sig))
		case !sk.Sig.FlagsValid || !sk.Sig.FlagSign:
			return fmt.Errorf("subkey %X is not a signing subkey", c.key.Fingerprint)
		}
		return nil
	}
	return errors.New("subkey not bound to its primary key")
}

func expiry(pk *packet.PublicKey, sig *packet.Signature) string {
	if sig.KeyLifetimeSecs == nil || *sig.KeyLifetimeSecs == 0 {
		return "(self-signature expired)"
	}
	return pk.CreationTime.Add(time.Duration(*sig.KeyLifetimeSecs) * time.Second).UTC().Format(time.RFC3339)
}

func acceptedKey(pk *packet.PublicKey) error {
	switch pk.PubKeyAlgo {
	case packet.PubKeyAlgoRSA, packet.PubKeyAlgoRSASignOnly:
		bits, err := pk.BitLength()
		if err != nil || int(bits) < MinRSABits {
			return fmt.Errorf("RSA key %X has %d bits, fewer than %d", pk.Fingerprint, bits, MinRSABits)
		}
	case packet.PubKeyAlgoEdDSA, packet.PubKeyAlgoEd25519, packet.PubKeyAlgoEd448, packet.PubKeyAlgoECDSA:
	default:
		return fmt.Errorf("key %X uses public-key algorithm %d, not accepted for archive signatures", pk.Fingerprint, pk.PubKeyAlgo)
	}
	return nil
}

func acceptedHash(h crypto.Hash) bool {
	switch h {
	case crypto.SHA224, crypto.SHA256, crypto.SHA384, crypto.SHA512, crypto.SHA3_256, crypto.SHA3_512:
		return true
	}
	return false
}

// hashName uses the names of the clearsign Hash: header.
func hashName(h crypto.Hash) string {
	switch h {
	case crypto.MD5:
		return "MD5"
	case crypto.SHA1:
		return "SHA1"
	case crypto.RIPEMD160:
		return "RIPEMD160"
	case crypto.SHA224:
		return "SHA224"
	case crypto.SHA256:
		return "SHA256"
	case crypto.SHA384:
		return "SHA384"
	case crypto.SHA512:
		return "SHA512"
	case crypto.SHA3_256:
		return "SHA3-256"
	case crypto.SHA3_512:
		return "SHA3-512"
	}
	return fmt.Sprintf("hash#%d", h)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// describe identifies data by size and hash, never by content: content
// can be anything the sender chose, and errors reach logs and web pages.
func describe(data []byte) string {
	sum := sha256.Sum256(data)
	return fmt.Sprintf("%d bytes, SHA-256 %s", len(data), hex.EncodeToString(sum[:]))
}

// nopHash adapts a buffer to the hash.Hash that NewCanonicalTextHash wraps,
// to obtain the canonical text itself.
type nopHash struct{ *bytes.Buffer }

func (nopHash) Sum(b []byte) []byte { return b }
func (nopHash) Size() int           { return 0 }
func (nopHash) BlockSize() int      { return 1 }
func (h nopHash) Reset()            { h.Buffer.Reset() }
