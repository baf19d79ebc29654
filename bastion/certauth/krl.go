package certauth

import (
	"bytes"
	"crypto/sha1" //nolint:gosec // KRLs revoke keys by SHA-1 fingerprint; matching a listed hash is not a security use of SHA-1.
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"slices"
	"strings"

	"golang.org/x/crypto/ssh"
)

// KRL section and subsection types from OpenSSH's PROTOCOL.krl.
const (
	krlMagic         = "SSHKRL\n\x00"
	krlFormatVersion = 1

	krlSectionCertificates      = 1
	krlSectionExplicitKey       = 2
	krlSectionFingerprintSHA1   = 3
	krlSectionSignature         = 4
	krlSectionFingerprintSHA256 = 5
	krlSectionExtension         = 255

	krlCertSerialList   = 0x20
	krlCertSerialRange  = 0x21
	krlCertSerialBitmap = 0x22
	krlCertKeyID        = 0x23
	krlCertExtension    = 0x39
)

// Limits that keep a hostile revocation file from exhausting memory. A real
// KRL revoking a million certificates by serial is a few hundred kilobytes.
const (
	// MaxRevocationFileSize is the largest revocation file New and Reload read.
	MaxRevocationFileSize = 16 << 20
	// maxRevocationEntries bounds the number of stored ranges, key IDs, keys
	// and hashes together.
	maxRevocationEntries = 1 << 20
)

// serialRange is an inclusive range of revoked certificate serials.
type serialRange struct{ lo, hi uint64 }

// revokedCerts holds the serial and key-ID revocations for one CA (or for
// every CA, when it is the wildcard section).
type revokedCerts struct {
	serials []serialRange // sorted and merged by finish
	keyIDs  map[string]struct{}
}

func (rc *revokedCerts) revoked(cert *ssh.Certificate) (bool, string) {
	if _, ok := rc.keyIDs[cert.KeyId]; ok {
		return true, "key id " + quote(cert.KeyId)
	}
	// Serial 0 means "no serial" to OpenSSH and is never matched.
	if cert.Serial == 0 {
		return false, ""
	}
	i, found := slices.BinarySearchFunc(rc.serials, cert.Serial, func(r serialRange, s uint64) int {
		switch {
		case r.hi < s:
			return -1
		case r.lo > s:
			return 1
		}
		return 0
	})
	if found {
		r := rc.serials[i]
		if r.lo == r.hi {
			return true, fmt.Sprintf("serial %d", cert.Serial)
		}
		return true, fmt.Sprintf("serial %d (range %d-%d)", cert.Serial, r.lo, r.hi)
	}
	return false, ""
}

// Revocations is a parsed revocation list: an OpenSSH KRL or the plain-text
// form described at ParseRevocations. The zero value revokes nothing. It is
// immutable after parsing and safe for concurrent use.
type Revocations struct {
	// Version and Comment come from a binary KRL header (zero for text).
	Version uint64
	Comment string

	anyCA   *revokedCerts
	byCA    map[string]*revokedCerts // keyed by marshaled CA public key
	keys    map[string]struct{}      // plain public key blobs
	sha1s   map[[sha1.Size]byte]struct{}
	sha256s map[[sha256.Size]byte]struct{}
	entries int
}

func newRevocations() *Revocations {
	return &Revocations{
		byCA:    map[string]*revokedCerts{},
		keys:    map[string]struct{}{},
		sha1s:   map[[sha1.Size]byte]struct{}{},
		sha256s: map[[sha256.Size]byte]struct{}{},
	}
}

// Len reports how many revocation entries (serial ranges, key IDs, keys and
// hashes) the list holds, for logging.
func (r *Revocations) Len() int {
	if r == nil {
		return 0
	}
	return r.entries
}

func (r *Revocations) count() error {
	r.entries++
	if r.entries > maxRevocationEntries {
		return fmt.Errorf("more than %d revocation entries", maxRevocationEntries)
	}
	return nil
}

// certsFor returns the revocation set for ca (nil = wildcard), creating it.
func (r *Revocations) certsFor(ca ssh.PublicKey) *revokedCerts {
	if ca == nil {
		if r.anyCA == nil {
			r.anyCA = &revokedCerts{keyIDs: map[string]struct{}{}}
		}
		return r.anyCA
	}
	k := string(ca.Marshal())
	rc := r.byCA[k]
	if rc == nil {
		rc = &revokedCerts{keyIDs: map[string]struct{}{}}
		r.byCA[k] = rc
	}
	return rc
}

func (r *Revocations) addSerialRange(rc *revokedCerts, lo, hi uint64) error {
	// OpenSSH refuses these too (ssh_krl_revoke_cert_by_serial_range).
	if lo == 0 || lo > hi {
		return fmt.Errorf("invalid serial range %d-%d (serials start at 1; the first must not exceed the second)", lo, hi)
	}
	rc.serials = append(rc.serials, serialRange{lo, hi})
	return r.count()
}

func (r *Revocations) addKeyID(rc *revokedCerts, id string) error {
	if _, dup := rc.keyIDs[id]; dup {
		return nil
	}
	rc.keyIDs[id] = struct{}{}
	return r.count()
}

func (r *Revocations) addKey(blob []byte) error {
	if _, dup := r.keys[string(blob)]; dup {
		return nil
	}
	r.keys[string(blob)] = struct{}{}
	return r.count()
}

func (r *Revocations) addSHA1(h []byte) error {
	if len(h) != sha1.Size {
		return fmt.Errorf("SHA1 fingerprint has %d bytes, want %d", len(h), sha1.Size)
	}
	r.sha1s[[sha1.Size]byte(h)] = struct{}{}
	return r.count()
}

func (r *Revocations) addSHA256(h []byte) error {
	if len(h) != sha256.Size {
		return fmt.Errorf("SHA256 fingerprint has %d bytes, want %d", len(h), sha256.Size)
	}
	r.sha256s[[sha256.Size]byte(h)] = struct{}{}
	return r.count()
}

// finish sorts and merges serial ranges so lookups can binary-search.
func (r *Revocations) finish() {
	merge := func(rc *revokedCerts) {
		if rc == nil || len(rc.serials) == 0 {
			return
		}
		slices.SortFunc(rc.serials, func(a, b serialRange) int {
			switch {
			case a.lo < b.lo:
				return -1
			case a.lo > b.lo:
				return 1
			}
			return 0
		})
		out := rc.serials[:1]
		for _, s := range rc.serials[1:] {
			last := &out[len(out)-1]
			if last.hi == ^uint64(0) || s.lo <= last.hi+1 {
				last.hi = max(last.hi, s.hi)
				continue
			}
			out = append(out, s)
		}
		rc.serials = slices.Clip(out)
	}
	merge(r.anyCA)
	for _, rc := range r.byCA {
		merge(rc)
	}
}

// keyRevoked checks one plain key (a certificate's key is reduced to its
// plain key first), like OpenSSH's is_key_revoked without the cert part.
func (r *Revocations) keyRevoked(key ssh.PublicKey) (bool, string) {
	if c, ok := key.(*ssh.Certificate); ok {
		key = c.Key
	}
	if key == nil {
		return false, ""
	}
	blob := key.Marshal()
	if _, ok := r.sha1s[sha1.Sum(blob)]; ok { //nolint:gosec // matching, see import
		return true, "SHA1 fingerprint"
	}
	if _, ok := r.sha256s[sha256.Sum256(blob)]; ok {
		return true, "SHA256 fingerprint"
	}
	if _, ok := r.keys[string(blob)]; ok {
		return true, "explicit key"
	}
	return false, ""
}

// Revoked reports whether key is revoked, with OpenSSH's semantics
// (ssh_krl_check_key): a key is revoked when its plain key is listed
// explicitly or by SHA1/SHA256 fingerprint; a certificate also when its serial
// or key ID is listed under its CA or under the wildcard CA, or when its CA
// key is itself revoked explicitly or by fingerprint. The string says which
// entry matched, for the audit log.
func (r *Revocations) Revoked(key ssh.PublicKey) (bool, string) {
	if r == nil || key == nil {
		return false, ""
	}
	if ok, why := r.keyRevoked(key); ok {
		return true, why
	}
	cert, isCert := key.(*ssh.Certificate)
	if !isCert {
		return false, ""
	}
	if cert.SignatureKey != nil {
		if rc := r.byCA[string(cert.SignatureKey.Marshal())]; rc != nil {
			if ok, why := rc.revoked(cert); ok {
				return true, why + " under its CA"
			}
		}
	}
	if r.anyCA != nil {
		if ok, why := r.anyCA.revoked(cert); ok {
			return true, why + " for any CA"
		}
	}
	if cert.SignatureKey != nil {
		if ok, why := r.keyRevoked(cert.SignatureKey); ok {
			return true, "CA key revoked by " + why
		}
	}
	return false, ""
}

// krlReader reads SSH wire-format values from a bounded byte slice. Every
// length is checked against what remains, so nothing is allocated on the
// word of the input.
type krlReader struct {
	b   []byte
	off int // offset into the whole file, for error messages
}

var errKRLShort = errors.New("truncated")

func (r *krlReader) u8() (byte, error) {
	if len(r.b) < 1 {
		return 0, errKRLShort
	}
	v := r.b[0]
	r.b, r.off = r.b[1:], r.off+1
	return v, nil
}

func (r *krlReader) u32() (uint32, error) {
	if len(r.b) < 4 {
		return 0, errKRLShort
	}
	v := binary.BigEndian.Uint32(r.b)
	r.b, r.off = r.b[4:], r.off+4
	return v, nil
}

func (r *krlReader) u64() (uint64, error) {
	if len(r.b) < 8 {
		return 0, errKRLShort
	}
	v := binary.BigEndian.Uint64(r.b)
	r.b, r.off = r.b[8:], r.off+8
	return v, nil
}

// str reads an SSH string; the result aliases the input.
func (r *krlReader) str() (*krlReader, error) {
	n, err := r.u32()
	if err != nil {
		return nil, err
	}
	if uint64(n) > uint64(len(r.b)) {
		return nil, fmt.Errorf("string of %d bytes with only %d left: %w", n, len(r.b), errKRLShort)
	}
	s := &krlReader{b: r.b[:n], off: r.off}
	r.b, r.off = r.b[n:], r.off+int(n)
	return s, nil
}

// cstring reads an SSH string with OpenSSH's sshbuf_get_cstring rules: a NUL
// is allowed only as the last byte, and is dropped.
func (r *krlReader) cstring() (string, error) {
	s, err := r.str()
	if err != nil {
		return "", err
	}
	b := s.b
	if i := bytes.IndexByte(b, 0); i >= 0 {
		if i != len(b)-1 {
			return "", errors.New("string contains a NUL byte")
		}
		b = b[:i]
	}
	return string(b), nil
}

// ParseKRL parses an OpenSSH binary key revocation list (PROTOCOL.krl, as
// written by ssh-keygen -k). Like OpenSSH, it refuses unknown section types,
// critical extensions, serial 0, inverted ranges, trailing bytes in a section
// and hashes of the wrong length. KRL signature sections are skipped, as
// OpenSSH's krl.c does: the file's integrity rests on who may write it.
func ParseKRL(data []byte) (*Revocations, error) {
	if len(data) > MaxRevocationFileSize {
		return nil, fmt.Errorf("KRL is %d bytes, more than the %d allowed", len(data), MaxRevocationFileSize)
	}
	if !bytes.HasPrefix(data, []byte(krlMagic)) {
		return nil, errors.New(`not a KRL: missing "SSHKRL" magic`)
	}
	rev := newRevocations()
	r := &krlReader{b: data[len(krlMagic):], off: len(krlMagic)}
	wrap := func(what string, err error) error {
		return fmt.Errorf("KRL %s at byte %d: %w", what, r.off, err)
	}
	ver, err := r.u32()
	if err != nil {
		return nil, wrap("header", err)
	}
	if ver != krlFormatVersion {
		return nil, fmt.Errorf("KRL format version %d is not supported (want %d)", ver, krlFormatVersion)
	}
	if rev.Version, err = r.u64(); err != nil {
		return nil, wrap("header version", err)
	}
	if _, err = r.u64(); err != nil { // generated_date
		return nil, wrap("header date", err)
	}
	if _, err = r.u64(); err != nil { // flags: none defined
		return nil, wrap("header flags", err)
	}
	if _, err = r.str(); err != nil { // reserved
		return nil, wrap("header reserved field", err)
	}
	if rev.Comment, err = r.cstring(); err != nil {
		return nil, wrap("header comment", err)
	}
	for len(r.b) > 0 {
		start := r.off
		typ, err := r.u8()
		if err != nil {
			return nil, wrap("section type", err)
		}
		sect, err := r.str()
		if err != nil {
			return nil, wrap(fmt.Sprintf("section %d", typ), err)
		}
		switch typ {
		case krlSectionCertificates:
			err = parseKRLCerts(sect, rev)
		case krlSectionExplicitKey:
			err = parseKRLBlobs(sect, rev.addKey)
		case krlSectionFingerprintSHA1:
			err = parseKRLBlobs(sect, rev.addSHA1)
		case krlSectionFingerprintSHA256:
			err = parseKRLBlobs(sect, rev.addSHA256)
		case krlSectionExtension:
			err = parseKRLExtension(sect)
		case krlSectionSignature:
			// signature_key was read as the section; skip the signature.
			if _, err = r.str(); err != nil {
				return nil, wrap("signature section", err)
			}
			continue
		default:
			return nil, fmt.Errorf("KRL section at byte %d has unsupported type %d", start, typ)
		}
		if err != nil {
			return nil, fmt.Errorf("KRL section type %d at byte %d: %w", typ, start, err)
		}
		if len(sect.b) > 0 {
			return nil, fmt.Errorf("KRL section type %d at byte %d: %d bytes of trailing data", typ, start, len(sect.b))
		}
	}
	rev.finish()
	return rev, nil
}

func parseKRLBlobs(s *krlReader, add func([]byte) error) error {
	for len(s.b) > 0 {
		b, err := s.str()
		if err != nil {
			return err
		}
		// Copy: the stored map key must not pin the whole file.
		if err := add(bytes.Clone(b.b)); err != nil {
			return fmt.Errorf("entry at byte %d: %w", b.off, err)
		}
	}
	return nil
}

func parseKRLExtension(s *krlReader) error {
	name, err := s.cstring()
	if err != nil {
		return fmt.Errorf("extension name: %w", err)
	}
	crit, err := s.u8()
	if err != nil {
		return fmt.Errorf("extension %s: %w", quote(name), err)
	}
	if _, err := s.str(); err != nil {
		return fmt.Errorf("extension %s: %w", quote(name), err)
	}
	if len(s.b) != 0 {
		return fmt.Errorf("extension %s: trailing data", quote(name))
	}
	if crit != 0 {
		return fmt.Errorf("unsupported critical extension %s", quote(name))
	}
	return nil
}

func parseKRLCerts(s *krlReader, rev *Revocations) error {
	caBlob, err := s.str()
	if err != nil {
		return fmt.Errorf("CA key: %w", err)
	}
	if _, err := s.str(); err != nil {
		return fmt.Errorf("reserved field: %w", err)
	}
	var ca ssh.PublicKey // nil = any CA
	if len(caBlob.b) > 0 {
		if ca, err = ssh.ParsePublicKey(caBlob.b); err != nil {
			return fmt.Errorf("CA key at byte %d: %w", caBlob.off, err)
		}
		if _, isCert := ca.(*ssh.Certificate); isCert {
			return fmt.Errorf("CA key at byte %d is a certificate", caBlob.off)
		}
	}
	rc := rev.certsFor(ca)
	for len(s.b) > 0 {
		start := s.off
		typ, err := s.u8()
		if err != nil {
			return err
		}
		sub, err := s.str()
		if err != nil {
			return fmt.Errorf("subsection 0x%02x at byte %d: %w", typ, start, err)
		}
		switch typ {
		case krlCertSerialList:
			for len(sub.b) > 0 {
				v, err := sub.u64()
				if err == nil {
					err = rev.addSerialRange(rc, v, v)
				}
				if err != nil {
					return fmt.Errorf("serial list at byte %d: %w", sub.off, err)
				}
			}
		case krlCertSerialRange:
			lo, err := sub.u64()
			if err != nil {
				return fmt.Errorf("serial range at byte %d: %w", sub.off, err)
			}
			hi, err := sub.u64()
			if err == nil {
				err = rev.addSerialRange(rc, lo, hi)
			}
			if err != nil {
				return fmt.Errorf("serial range at byte %d: %w", sub.off, err)
			}
		case krlCertSerialBitmap:
			if err := parseKRLBitmap(sub, rev, rc); err != nil {
				return fmt.Errorf("serial bitmap at byte %d: %w", start, err)
			}
		case krlCertKeyID:
			for len(sub.b) > 0 {
				id, err := sub.cstring()
				if err == nil {
					err = rev.addKeyID(rc, id)
				}
				if err != nil {
					return fmt.Errorf("key id at byte %d: %w", sub.off, err)
				}
			}
		case krlCertExtension:
			if err := parseKRLExtension(sub); err != nil {
				return fmt.Errorf("certificate subsection at byte %d: %w", start, err)
			}
		default:
			return fmt.Errorf("certificate subsection at byte %d has unsupported type 0x%02x", start, typ)
		}
		if len(sub.b) > 0 {
			return fmt.Errorf("certificate subsection 0x%02x at byte %d: %d bytes of trailing data", typ, start, len(sub.b))
		}
	}
	return nil
}

// parseKRLBitmap decodes "uint64 offset, mpint bitmap": bit N (counting from
// the least significant bit) revokes serial offset+N. Runs of set bits become
// ranges directly, so a bitmap costs at most one range per run.
//
// Unlike OpenSSH, bitmaps longer than 16384 bits (SSHBUF_MAX_BIGNUM) are
// accepted: ssh-keygen -k writes such bitmaps for dense serial lists and then
// refuses to read its own file ("bignum is too large"). Refusing them here
// too would leave those revocations unenforced; their size is still bounded
// by MaxRevocationFileSize and maxRevocationEntries.
func parseKRLBitmap(sub *krlReader, rev *Revocations, rc *revokedCerts) error {
	offset, err := sub.u64()
	if err != nil {
		return err
	}
	m, err := sub.str()
	if err != nil {
		return err
	}
	b := m.b
	if len(b) > 0 && b[0]&0x80 != 0 {
		return errors.New("bitmap is a negative mpint")
	}
	for len(b) > 0 && b[0] == 0 {
		b = b[1:]
	}
	if len(b) == 0 {
		return nil
	}
	nbits := uint64(len(b)-1)*8 + uint64(bits.Len8(b[0]))
	// OpenSSH: "bitmap wraps u64" when offset+N overflows for any N < nbits.
	if offset > math.MaxUint64-(nbits-1) {
		return errors.New("bitmap wraps past the largest serial")
	}
	// Walk bytes from the least significant end; whole 0x00 and 0xff bytes
	// are skipped or extended at once.
	var runStart uint64
	inRun := false
	flush := func(end uint64) error { // end is exclusive
		inRun = false
		return rev.addSerialRange(rc, offset+runStart, offset+end-1)
	}
	for i := range uint64(len(b)) {
		v := b[uint64(len(b))-1-i]
		base := i * 8
		switch {
		case v == 0 && !inRun, v == 0xff && inRun:
			continue
		case v == 0 && inRun:
			if err := flush(base); err != nil {
				return err
			}
			continue
		}
		for bit := range uint64(8) {
			set := v&(1<<bit) != 0
			if set && !inRun {
				runStart, inRun = base+bit, true
			} else if !set && inRun {
				if err := flush(base + bit); err != nil {
					return err
				}
			}
		}
	}
	if inRun {
		return flush(nbits)
	}
	return nil
}

// quote makes an attacker-chosen string safe to log: Go-quoted ASCII,
// truncated to a readable length.
func quote(s string) string {
	const maxLen = 80
	if len(s) > maxLen {
		s = s[:maxLen] + "…"
	}
	return strings.TrimSpace(fmt.Sprintf("%+q", s))
}
