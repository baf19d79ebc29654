package certauth

import (
	"bytes"
	"crypto/sha1" //nolint:gosec // KRL fingerprints, see krl.go
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"golang.org/x/crypto/ssh"
)

// maxRevocationLine bounds one line of a text revocation list.
const maxRevocationLine = 64 << 10

// ParseRevocations parses a revocation file. name is used in error messages.
//
// A file starting with the KRL magic is an OpenSSH binary KRL (ParseKRL).
// Anything else is the text specification that `ssh-keygen -k` reads (see
// ssh-keygen(1), KEY REVOCATION LISTS), one directive per line, '#' starts a
// comment, directives are case-insensitive:
//
//	serial: N          revoke certificate serial N (decimal, 0x hex, 0 octal)
//	serial: N-M        revoke serials N..M (M > N)
//	id: KEYID          revoke certificates with this key ID
//	key: PUBKEY        revoke this plain key (a certificate: its plain key)
//	sha1: PUBKEY       revoke by the key's SHA1 fingerprint
//	sha256: PUBKEY     revoke by the key's SHA256 fingerprint
//	hash: SHA256:...   revoke by a SHA256 fingerprint as ssh-keygen -l prints it
//	PUBKEY             a plain key is revoked explicitly; a certificate by its
//	                   serial (by its key ID when the serial is 0) under its CA
//
// There is no CA on the command line here, so serial and id lines apply to
// certificates from every trusted CA: the same as `ssh-keygen -k -s none`.
// The text must end with a newline: a last line without one may be the
// result of a truncated write, and a truncated "serial: 123" would silently
// revoke serial 12 instead.
func ParseRevocations(data []byte, name string) (*Revocations, error) {
	if bytes.HasPrefix(data, []byte(krlMagic)) {
		rev, err := ParseKRL(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		return rev, nil
	}
	if len(data) > MaxRevocationFileSize {
		return nil, fmt.Errorf("%s: %d bytes, more than the %d allowed", name, len(data), MaxRevocationFileSize)
	}
	if len(data) > 0 && data[len(data)-1] != '\n' {
		return nil, fmt.Errorf("%s: last line has no newline; the file may have been truncated (write it to a temporary file and rename it into place)", name)
	}
	rev := newRevocations()
	lineNo := 0
	for len(data) > 0 {
		lineNo++
		i := bytes.IndexByte(data, '\n')
		line := data[:i]
		data = data[i+1:]
		if len(line) > maxRevocationLine {
			return nil, fmt.Errorf("%s:%d: line longer than %d bytes", name, lineNo, maxRevocationLine)
		}
		if !utf8.Valid(line) {
			return nil, fmt.Errorf("%s:%d: not valid UTF-8", name, lineNo)
		}
		if err := parseRevocationLine(rev, string(line)); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", name, lineNo, err)
		}
	}
	rev.finish()
	return rev, nil
}

// cutPrefixFold is strings.CutPrefix, ignoring ASCII case like strncasecmp.
func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix) {
		return strings.TrimLeft(s[len(prefix):], " \t"), true
	}
	return s, false
}

func parseRevocationLine(rev *Revocations, line string) error {
	// Same trimming as ssh-keygen's update_krl_from_file: leading blanks,
	// everything from '#', trailing blanks; CR tolerated.
	line = strings.TrimRight(line, "\r")
	if i := strings.IndexByte(line, '#'); i >= 0 {
		line = line[:i]
	}
	line = strings.Trim(line, " \t")
	if line == "" {
		return nil
	}
	if rest, ok := cutPrefixFold(line, "serial:"); ok {
		lo, hi, err := parseSerialSpec(rest)
		if err != nil {
			return err
		}
		return rev.addSerialRange(rev.certsFor(nil), lo, hi)
	}
	if rest, ok := cutPrefixFold(line, "id:"); ok {
		return rev.addKeyID(rev.certsFor(nil), rest)
	}
	if rest, ok := cutPrefixFold(line, "hash:"); ok {
		b64, ok := strings.CutPrefix(rest, "SHA256:")
		if !ok {
			return fmt.Errorf("hash %s: only SHA256:... fingerprints are supported", quote(rest))
		}
		h, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(b64, "="))
		if err != nil {
			return fmt.Errorf("hash %s: bad base64: %w", quote(rest), err)
		}
		return rev.addSHA256(h)
	}
	kind := ""
	for _, k := range []string{"key:", "sha1:", "sha256:"} {
		if rest, ok := cutPrefixFold(line, k); ok {
			kind, line = k, rest
			break
		}
	}
	key, err := parseKeyLine(line)
	if err != nil {
		return err
	}
	plain := key
	if c, ok := key.(*ssh.Certificate); ok {
		plain = c.Key
	}
	switch kind {
	case "key:":
		return rev.addKey(plain.Marshal())
	case "sha1:":
		h := sha1.Sum(plain.Marshal()) //nolint:gosec // KRL fingerprint
		return rev.addSHA1(h[:])
	case "sha256:":
		h := sha256.Sum256(plain.Marshal())
		return rev.addSHA256(h[:])
	}
	// A bare key: ssh_krl_revoke_key semantics.
	c, isCert := key.(*ssh.Certificate)
	if !isCert {
		return rev.addKey(key.Marshal())
	}
	if c.Serial == 0 {
		return rev.addKeyID(rev.certsFor(c.SignatureKey), c.KeyId)
	}
	return rev.addSerialRange(rev.certsFor(c.SignatureKey), c.Serial, c.Serial)
}

// parseKeyLine reads "type base64 [comment]" as sshkey_read does.
func parseKeyLine(line string) (ssh.PublicKey, error) {
	f := strings.Fields(line)
	if len(f) < 2 {
		return nil, fmt.Errorf("%s is neither a directive (serial:, id:, key:, sha1:, sha256:, hash:) nor a public key", quote(line))
	}
	blob, err := base64.StdEncoding.DecodeString(f[1])
	if err != nil {
		return nil, fmt.Errorf("public key %s: bad base64: %w", quote(f[0]), err)
	}
	key, err := ssh.ParsePublicKey(blob)
	if err != nil {
		return nil, fmt.Errorf("public key %s: %w", quote(f[0]), err)
	}
	if key.Type() != f[0] {
		return nil, fmt.Errorf("public key type %s does not match its data (%s)", quote(f[0]), key.Type())
	}
	return key, nil
}

// parseSerialSpec parses "N" or "N-M" like ssh-keygen (strtoull base 0),
// without strtoull's leniency for signs and blanks.
func parseSerialSpec(s string) (lo, hi uint64, err error) {
	num := func(t string) (uint64, error) {
		if t == "" || strings.ContainsAny(t, "_+- \t") {
			return 0, fmt.Errorf("invalid serial %s", quote(t))
		}
		if len(t) > 1 && t[0] == '0' && t[1] != 'x' && t[1] != 'X' {
			t = "0o" + t[1:] // C octal
		}
		v, err := strconv.ParseUint(t, 0, 64)
		if err != nil {
			var ne *strconv.NumError
			if errors.As(err, &ne) && errors.Is(ne.Err, strconv.ErrRange) {
				return 0, fmt.Errorf("serial %s out of range", quote(t))
			}
			return 0, fmt.Errorf("invalid serial %s", quote(t))
		}
		return v, nil
	}
	a, b, isRange := strings.Cut(s, "-")
	if lo, err = num(a); err != nil {
		return 0, 0, err
	}
	hi = lo
	if isRange {
		if hi, err = num(b); err != nil {
			return 0, 0, err
		}
		if hi <= lo {
			return 0, 0, fmt.Errorf("invalid serial range %d-%d: the second must be larger", lo, hi)
		}
	}
	if lo == 0 {
		return 0, 0, errors.New("serial 0 cannot be revoked (it means \"no serial\")")
	}
	return lo, hi, nil
}
