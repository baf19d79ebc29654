// Package version parses and orders Debian package versions exactly as dpkg
// does, and parses dependency relation fields (Depends, Build-Depends, ...)
// including architecture restrictions and build-profile formulas.
//
// The package is pure: it imports nothing of this module and touches no
// process state, so every function is safe for concurrent use and fuzzable.
package version

import (
	"fmt"
	"strings"
)

// maxEpoch is the largest epoch dpkg accepts (INT_MAX in lib/dpkg/parsehelp.c).
const maxEpoch = 1<<31 - 1

// Version is a parsed Debian version "[epoch:]upstream[-revision]".
//
// The zero Version is not a valid parse result (upstream may not be empty) but
// Compare and String handle it deterministically.
type Version struct {
	// Epoch is the number before the first ':'; 0 when absent.
	Epoch uint32
	// Upstream is the part between the epoch and the last '-'.
	Upstream string
	// Revision is the part after the last '-'; "" when there is none.
	Revision string
}

// Parse parses s with dpkg's rules (lib/dpkg/parsehelp.c parseversion).
//
// Leading and trailing blanks (space, tab) are ignored, as dpkg does.
// Parse fails for everything dpkg rejects outright (empty string, embedded
// blanks, empty/non-numeric/too-big epoch, nothing after the colon, empty
// upstream, empty revision after a trailing '-') and, stricter than dpkg which
// only warns, for characters outside Debian policy: upstream allows
// [A-Za-z0-9.+~:-], revision [A-Za-z0-9.+~]. An epoch must be plain ASCII
// digits (dpkg's strtol would also take a sign). An upstream version that does
// not start with a digit is accepted: dpkg only warns and compares it, and
// such versions exist in real archives.
//
// The returned Version's strings are substrings of s (no copy is made).
func Parse(s string) (Version, error) {
	orig := s
	s = strings.Trim(s, " \t")
	if s == "" {
		return Version{}, parseErr(orig, "version string is empty")
	}
	if i := strings.IndexAny(s, " \t"); i >= 0 {
		return Version{}, parseErr(orig, fmt.Sprintf("embedded blank at byte %d; a version has no spaces", i))
	}
	var v Version
	if colon := strings.IndexByte(s, ':'); colon >= 0 {
		ep := s[:colon]
		if ep == "" {
			return Version{}, parseErr(orig, "epoch before ':' is empty")
		}
		var n uint64
		for i := 0; i < len(ep); i++ {
			c := ep[i]
			if !isDigit(c) {
				return Version{}, parseErr(orig, fmt.Sprintf("epoch %s before the first ':' is not a number", quoteShort(ep)))
			}
			n = n*10 + uint64(c-'0')
			if n > maxEpoch {
				return Version{}, parseErr(orig, fmt.Sprintf("epoch %s is too big (max %d)", quoteShort(ep), maxEpoch))
			}
		}
		v.Epoch = uint32(n)
		s = s[colon+1:]
		if s == "" {
			return Version{}, parseErr(orig, "nothing after the epoch colon")
		}
	}
	v.Upstream = s
	if h := strings.LastIndexByte(s, '-'); h >= 0 {
		v.Upstream, v.Revision = s[:h], s[h+1:]
		if v.Revision == "" {
			return Version{}, parseErr(orig, "revision after the last '-' is empty")
		}
	}
	if v.Upstream == "" {
		return Version{}, parseErr(orig, "upstream version is empty")
	}
	for i := 0; i < len(v.Upstream); i++ {
		if c := v.Upstream[i]; !isAlnum(c) && !strings.ContainsRune(".-+~:", rune(c)) {
			return Version{}, parseErr(orig, fmt.Sprintf("invalid character %q in upstream version (allowed: letters, digits, . + ~ - :)", v.Upstream[i:i+1]))
		}
	}
	for i := 0; i < len(v.Revision); i++ {
		if c := v.Revision[i]; !isAlnum(c) && !strings.ContainsRune(".+~", rune(c)) {
			return Version{}, parseErr(orig, fmt.Sprintf("invalid character %q in revision (allowed: letters, digits, . + ~)", v.Revision[i:i+1]))
		}
	}
	return v, nil
}

func parseErr(s, msg string) error {
	return fmt.Errorf("version %s: %s", quoteShort(s), msg)
}

// quoteShort quotes s for an error message, cutting it so hostile input
// cannot make error strings arbitrarily long.
func quoteShort(s string) string {
	const max = 80
	if len(s) > max {
		return fmt.Sprintf("%q...(%d bytes)", s[:max], len(s))
	}
	return fmt.Sprintf("%q", s)
}

// String formats v so that Parse(v.String()) == v for every Version Parse
// returns. The epoch is written when non-zero, and also when it is zero but
// the upstream contains ':' (otherwise the colon would be read as an epoch).
func (v Version) String() string {
	var b strings.Builder
	b.Grow(len(v.Upstream) + len(v.Revision) + 12)
	if v.Epoch != 0 || strings.IndexByte(v.Upstream, ':') >= 0 {
		fmt.Fprintf(&b, "%d:", v.Epoch)
	}
	b.WriteString(v.Upstream)
	if v.Revision != "" {
		b.WriteByte('-')
		b.WriteString(v.Revision)
	}
	return b.String()
}

// Compare orders a and b as dpkg does (lib/dpkg/version.c
// dpkg_version_compare): it returns -1 if a < b, 0 if equal, +1 if a > b.
// Epochs compare numerically, then upstream, then revision with verrevcmp.
// Digit runs compare numerically at any length (no overflow).
func Compare(a, b Version) int {
	switch {
	case a.Epoch < b.Epoch:
		return -1
	case a.Epoch > b.Epoch:
		return 1
	}
	if c := verrevcmp(a.Upstream, b.Upstream); c != 0 {
		return c
	}
	return verrevcmp(a.Revision, b.Revision)
}

// CompareStrings parses a and b with Parse and compares them with Compare.
// The error names which side failed to parse.
func CompareStrings(a, b string) (int, error) {
	va, err := Parse(a)
	if err != nil {
		return 0, fmt.Errorf("compare versions: first: %w", err)
	}
	vb, err := Parse(b)
	if err != nil {
		return 0, fmt.Errorf("compare versions: second: %w", err)
	}
	return Compare(va, vb), nil
}

// order is dpkg's order(): the weight of a non-digit character. The end of
// the string weighs 0 (as NUL does in C); '~' sorts before the end; letters
// weigh their ASCII code; every other character weighs code+256, so letters
// sort before non-letters. Bytes >= 0x80 weigh their unsigned value, which is
// what dpkg computes on amd64 where char is signed (c + 256 for c < 0). A NUL
// byte inside a Go string weighs 256 so that it stays distinct from the end.
func order(s string, i int) int {
	if i >= len(s) {
		return 0
	}
	c := s[i]
	switch {
	case isDigit(c):
		return 0
	case isAlpha(c):
		return int(c)
	case c == '~':
		return -1
	case c >= 0x80:
		return int(c)
	default:
		return int(c) + 256
	}
}

// verrevcmp compares one upstream or revision part as dpkg does: alternating
// runs of non-digits (compared by order) and digits (compared numerically,
// leading zeros ignored).
func verrevcmp(a, b string) int {
	// Skip the common prefix, backed off to the start of a digit run so
	// that runs are still compared whole ("100" vs "1000"). After a shared
	// non-digit (or at the start) dpkg's loop is in the same state as a
	// fresh call, so the result is unchanged; this makes the common case,
	// versions differing late ("...+deb12u1" vs "...+deb12u2"), cheap.
	n := min(len(a), len(b))
	p := 0
	for p < n && a[p] == b[p] {
		p++
	}
	if p == len(a) && p == len(b) {
		return 0
	}
	for p > 0 && isDigit(a[p-1]) {
		p--
	}
	a, b = a[p:], b[p:]
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		for (i < len(a) && !isDigit(a[i])) || (j < len(b) && !isDigit(b[j])) {
			ac, bc := order(a, i), order(b, j)
			if ac != bc {
				if ac < bc {
					return -1
				}
				return 1
			}
			i++
			j++
		}
		for i < len(a) && a[i] == '0' {
			i++
		}
		for j < len(b) && b[j] == '0' {
			j++
		}
		// Compare the two digit runs numerically: the longer one (without
		// leading zeros) is bigger, else the first differing digit decides.
		si, sj := i, j
		for i < len(a) && isDigit(a[i]) {
			i++
		}
		for j < len(b) && isDigit(b[j]) {
			j++
		}
		if li, lj := i-si, j-sj; li != lj {
			if li < lj {
				return -1
			}
			return 1
		}
		if c := strings.Compare(a[si:i], b[sj:j]); c != 0 {
			return c
		}
	}
	return 0
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }
func isAlpha(c byte) bool { return c|0x20 >= 'a' && c|0x20 <= 'z' }
func isAlnum(c byte) bool { return isDigit(c) || isAlpha(c) }
