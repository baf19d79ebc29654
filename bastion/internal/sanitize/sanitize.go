// Package sanitize makes untrusted strings safe to log or echo to a
// terminal. It is its own package so that the relay (bastion/upstream)
// and the recorder (bastion/record) share one escaping without the relay
// depending on the recorder for it.
package sanitize

import (
	"fmt"
	"unicode"
	"unicode/utf8"
)

// String makes an untrusted string (certificate key id, principal, path)
// safe to log or echo to a terminal: invalid UTF-8 bytes become \xNN,
// control and other non-printable runes (including bidi overrides) become
// \uNNNN, and a backslash becomes \\ so the escapes are unambiguous. If max >
// 0 the result is at most max bytes, ending in "..." when cut.
func String(s string, max int) string {
	var b []byte
	const ell = "..."
	cut := false
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		var piece string
		switch {
		case r == utf8.RuneError && size == 1:
			piece = fmt.Sprintf(`\x%02x`, s[i])
		case r == '\\':
			piece = `\\`
		case r == ' ' || unicode.IsPrint(r):
			piece = s[i : i+size]
		case r <= 0xFFFF:
			piece = fmt.Sprintf(`\u%04x`, r)
		default:
			piece = fmt.Sprintf(`\U%08x`, r)
		}
		if max > 0 && len(b)+len(piece) > max {
			cut = true
			break
		}
		b = append(b, piece...)
		i += size
	}
	if cut {
		for len(b)+len(ell) > max && len(b) > 0 {
			// Remove whole pieces' tail bytes; escapes are ASCII and printable
			// runes are whole, so trim back to a rune start.
			_, size := utf8.DecodeLastRune(b)
			b = b[:len(b)-size]
		}
		if len(ell) <= max {
			b = append(b, ell...)
		}
	}
	return string(b)
}
