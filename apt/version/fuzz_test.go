package version

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// refVerrevcmp is a literal transliteration of dpkg's C verrevcmp (pointer
// walk over NUL-terminated strings, first_diff on equal-length digit runs),
// kept deliberately naive so the fuzzer can check the optimized verrevcmp
// against it on arbitrary bytes. Bytes >= 0x80 are read as signed char, as on
// amd64.
func refVerrevcmp(as, bs string) int {
	a := append([]byte(as), 0)
	b := append([]byte(bs), 0)
	ord := func(c byte) int {
		switch {
		case isDigit(c):
			return 0
		case isAlpha(c):
			return int(c)
		case c == '~':
			return -1
		case c != 0:
			return int(int8(c)) + 256
		}
		return 0
	}
	i, j := 0, 0
	for a[i] != 0 || b[j] != 0 {
		firstDiff := 0
		for (a[i] != 0 && !isDigit(a[i])) || (b[j] != 0 && !isDigit(b[j])) {
			ac, bc := ord(a[i]), ord(b[j])
			if ac != bc {
				return ac - bc
			}
			i++
			j++
		}
		for a[i] == '0' {
			i++
		}
		for b[j] == '0' {
			j++
		}
		for isDigit(a[i]) && isDigit(b[j]) {
			if firstDiff == 0 {
				firstDiff = int(a[i]) - int(b[j])
			}
			i++
			j++
		}
		if isDigit(a[i]) {
			return 1
		}
		if isDigit(b[j]) {
			return -1
		}
		if firstDiff != 0 {
			return firstDiff
		}
	}
	return 0
}

func sign(x int) int {
	switch {
	case x < 0:
		return -1
	case x > 0:
		return 1
	}
	return 0
}

var versionSeeds = []string{
	"1.0", "1.0~", "1.0~~", "1:2.30-4+deb12u1", "0:1:2", "1-2-3", "1.0-", "1:", ":1",
	"2147483648:1", "abc", "~", "1.0\x00", "1.0\xff", "1 2", " 1.0 ", "1.0-1~bpo1",
	"1234567890123456789012345678901234567890", "0001.0001", "1.0+dfsg-1+b1", "1.0a", "1.0Z",
}

// FuzzParse checks that Parse never panics, that what it accepts only holds
// allowed characters, and that String round-trips through Parse.
func FuzzParse(f *testing.F) {
	for _, s := range versionSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := Parse(s)
		if err != nil {
			if len(err.Error()) > 1024 {
				t.Fatalf("error message of %d bytes", len(err.Error()))
			}
			return
		}
		if v.Upstream == "" || strings.ContainsAny(v.Upstream+v.Revision, " \t\n\x00") {
			t.Fatalf("Parse(%q) accepted %#v", s, v)
		}
		back, err := Parse(v.String())
		if err != nil || back != v {
			t.Fatalf("Parse(%q) = %#v; String %q parses to %#v, %v", s, v, v.String(), back, err)
		}
		if Compare(v, back) != 0 {
			t.Fatalf("Compare(v, v) != 0 for %q", s)
		}
	})
}

// FuzzCompare checks Compare against the naive C transliteration on raw
// strings, antisymmetry, reflexivity, transitivity on triples, and
// consistency with Parse/String.
func FuzzCompare(f *testing.F) {
	for i, s := range versionSeeds {
		f.Add(s, versionSeeds[(i+1)%len(versionSeeds)], versionSeeds[(i+5)%len(versionSeeds)])
	}
	f.Fuzz(func(t *testing.T, a, b, c string) {
		// Raw parts, never parsed: Compare must still be total and exact.
		// C strings cannot hold NUL, so the differential skips those.
		if !strings.Contains(a+b, "\x00") {
			if got, want := verrevcmp(a, b), sign(refVerrevcmp(a, b)); got != want {
				t.Fatalf("verrevcmp(%q, %q) = %d, dpkg's algorithm gives %d", a, b, got, want)
			}
		}
		ra, rb := Version{Upstream: a}, Version{Upstream: b}
		if Compare(ra, rb) != -Compare(rb, ra) {
			t.Fatalf("raw Compare not antisymmetric for %q, %q", a, b)
		}
		va, errA := Parse(a)
		vb, errB := Parse(b)
		vc, errC := Parse(c)
		if errA != nil || errB != nil {
			return
		}
		ab, ba := Compare(va, vb), Compare(vb, va)
		if ab != -ba || ab < -1 || ab > 1 {
			t.Fatalf("Compare(%q, %q) = %d, reverse %d", a, b, ab, ba)
		}
		if Compare(va, va) != 0 {
			t.Fatalf("Compare(%q, itself) != 0", a)
		}
		if s, err := CompareStrings(va.String(), b); err != nil || s != ab {
			t.Fatalf("CompareStrings(%q, %q) = %d, %v; want %d", va.String(), b, s, err, ab)
		}
		if errC != nil {
			return
		}
		bc, ac := Compare(vb, vc), Compare(va, vc)
		if ab <= 0 && bc <= 0 && ac > 0 {
			t.Fatalf("not transitive: %q <= %q <= %q but first > last", a, b, c)
		}
		if ab == 0 && bc == 0 && ac != 0 {
			t.Fatalf("equality not transitive: %q, %q, %q", a, b, c)
		}
	})
}

// FuzzParseRelations checks that ParseRelations never panics, that accepted
// input round-trips through FormatRelations, and that every parsed version
// constraint is a valid version.
func FuzzParseRelations(f *testing.F) {
	for _, s := range []string{
		"a (>= 1:2.0~rc1) | b:any, c [amd64] <!nocheck>",
		"a(<1),b (>2)", "a,\n b [!i386 linux-any] <stage1 cross> <!nocheck>,", "a |", "a [", "a <", "a (",
		"a (>= 1.0", ", ,", "libc6 (>= 2.36), libgcc-s1 (>= 3.0) | libgcc1", "x:native (= 1-1)",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		rels, err := ParseRelations(s)
		if err != nil {
			if len(err.Error()) > 1024 {
				t.Fatalf("error message of %d bytes", len(err.Error()))
			}
			return
		}
		for _, alts := range rels {
			if len(alts) == 0 {
				t.Fatalf("empty alternatives from %q", s)
			}
			for _, r := range alts {
				if r.Name == "" {
					t.Fatalf("empty name from %q", s)
				}
				if (r.Op == OpAny) != (r.Version == "") {
					t.Fatalf("op %q with version %q from %q", r.Op, r.Version, s)
				}
				if r.Op != OpAny {
					if _, err := Parse(r.Version); err != nil {
						t.Fatalf("accepted bad version %q from %q", r.Version, s)
					}
				}
			}
		}
		out := FormatRelations(rels)
		again, err := ParseRelations(out)
		if err != nil {
			t.Fatalf("canonical form %q of %q does not parse: %v", out, s, err)
		}
		if !cmp.Equal(rels, again) {
			t.Fatalf("round trip of %q via %q changed the value", s, out)
		}
	})
}
