package version

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in   string
		want Version
	}{
		{"1.0", Version{0, "1.0", ""}},
		{"1.0-1", Version{0, "1.0", "1"}},
		{"1:2.30-4+deb12u1", Version{1, "2.30", "4+deb12u1"}},
		{"0:1.0", Version{0, "1.0", ""}},
		{"007:1", Version{7, "1", ""}},
		{"2147483647:1", Version{2147483647, "1", ""}},
		{"1:2:3-4", Version{1, "2:3", "4"}},
		{"1-2-3", Version{0, "1-2", "3"}},
		{"1.0~rc1-0~exp1", Version{0, "1.0~rc1", "0~exp1"}},
		{"  1.0-1\t", Version{0, "1.0", "1"}},
		{"abc", Version{0, "abc", ""}}, // dpkg only warns: not starting with a digit
		{"~1", Version{0, "~1", ""}},
		{"1.0-~", Version{0, "1.0", "~"}},
		{"1:1234567890123456789012345678901234567890", Version{1, "1234567890123456789012345678901234567890", ""}},
	}
	for _, tt := range tests {
		got, err := Parse(tt.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", tt.in, err)
			continue
		}
		if got != tt.want {
			t.Errorf("Parse(%q) = %#v, want %#v", tt.in, got, tt.want)
		}
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", "empty"},
		{"  \t", "empty"},
		{"1 2", "embedded blank"},
		{":1", "epoch before ':' is empty"},
		{"a:1", "not a number"},
		{"+1:1", "not a number"},
		{"-1:1", "not a number"},
		{"2147483648:1", "too big"},
		{"99999999999999999999999999:1", "too big"},
		{"1:", "nothing after the epoch colon"},
		{"1.0-", "revision after the last '-' is empty"},
		{"-1", "upstream version is empty"},
		{"1:-1", "upstream version is empty"},
		{"1.0_1", "invalid character \"_\" in upstream"},
		{"1.0-1:2", "epoch \"1.0-1\" before the first ':' is not a number"},
		{"1:1.0-1:2", "invalid character \":\" in revision"},
		{"1.0-a_b", "invalid character \"_\" in revision"},
		{"1.0\n", "invalid character \"\\n\""},
		{"1.0\x00", "invalid character \"\\x00\""},
		{"1.0\xff", "invalid character \"\\xff\""},
	}
	for _, tt := range tests {
		_, err := Parse(tt.in)
		if err == nil {
			t.Errorf("Parse(%q) succeeded, want error containing %q", tt.in, tt.want)
			continue
		}
		if !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Parse(%q) error %q, want it to contain %q", tt.in, err, tt.want)
		}
	}
	// Hostile long input yields a bounded message.
	_, err := Parse(strings.Repeat("1", 10000) + "_")
	if err == nil || len(err.Error()) > 300 {
		t.Errorf("long input: error %v (len %d), want short error", err, len(err.Error()))
	}
}

func TestCompare(t *testing.T) {
	// Each row is checked both ways: Compare(b, a) must be -want.
	tests := []struct {
		a, b string
		want int
	}{
		{"1.0~", "1.0", -1},
		{"1.0~~", "1.0~", -1},
		{"1.0~~a", "1.0~", -1},
		{"1.0", "1.0+", -1},
		{"1.0", "1.0a", -1},
		{"1.0a", "1.0+", -1}, // letters before non-letters
		{"1.0a", "1.0.", -1},
		{"1.0+", "1.0.", -1}, // '+' (43) < '.' (46)
		{"1.0Z", "1.0a", -1}, // ASCII order among letters
		{"1.0~rc1", "1.0", -1},
		{"1.0-1", "1.0-1+b1", -1},
		{"1.0-1~bpo1", "1.0-1", -1},
		{"1.0", "1.0-0", 0}, // an absent revision equals "0",
		{"1.0-0", "1.0-00", 0},
		{"1.0", "1.00", 0},
		{"1.01", "1.1", 0},
		{"0:1.0", "1.0", 0},
		{"00:1.0", "1.0", 0},
		{"1.9", "1.10", -1},
		{"9", "10", -1},
		{"1:0.1", "0:99", 1},
		{"2147483647:0", "2147483646:99", 1},
		{"1.0~", "1.0~0", 0}, // the empty digit run after '~' is 0,
		{"1a", "1aa", -1},
		{"1~", "1", -1},
		{"~", "~~", 1},
		// 40+ digit runs compare numerically without overflow.
		{"1234567890123456789012345678901234567890", "1234567890123456789012345678901234567891", -1},
		{"99999999999999999999999999999999999999999", "100000000000000000000000000000000000000000", -1},
		{"000000000000000000000000000000000000000001", "1", 0},
		{"1.99999999999999999999999999999999999999999", "2.0", -1},
	}
	for _, tt := range tests {
		a, b := mustParse(t, tt.a), mustParse(t, tt.b)
		if got := Compare(a, b); got != tt.want {
			t.Errorf("Compare(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
		if got := Compare(b, a); got != -tt.want {
			t.Errorf("Compare(%q, %q) = %d, want %d", tt.b, tt.a, got, -tt.want)
		}
	}
}

func TestCompareStrings(t *testing.T) {
	if c, err := CompareStrings("1.0", "1.0~"); err != nil || c != 1 {
		t.Errorf("CompareStrings = %d, %v; want 1, nil", c, err)
	}
	if _, err := CompareStrings("1.0", "1:"); err == nil || !strings.Contains(err.Error(), "second") {
		t.Errorf("CompareStrings with bad second: %v, want error naming the second", err)
	}
	if _, err := CompareStrings("", "1"); err == nil || !strings.Contains(err.Error(), "first") {
		t.Errorf("CompareStrings with bad first: %v, want error naming the first", err)
	}
}

func TestString(t *testing.T) {
	tests := []struct {
		v    Version
		want string
	}{
		{Version{0, "1.0", ""}, "1.0"},
		{Version{0, "1.0", "1"}, "1.0-1"},
		{Version{2, "1.0", "1"}, "2:1.0-1"},
		{Version{0, "1:2", ""}, "0:1:2"}, // keeps the colon from being read as an epoch
		{Version{0, "1-2", "3"}, "1-2-3"},
	}
	for _, tt := range tests {
		if got := tt.v.String(); got != tt.want {
			t.Errorf("%#v.String() = %q, want %q", tt.v, got, tt.want)
		}
		back, err := Parse(tt.want)
		if err != nil || back != tt.v {
			t.Errorf("Parse(%q) = %#v, %v; want %#v", tt.want, back, err, tt.v)
		}
	}
}

// TestCorpusRoundTrip parses every real archive version and checks that
// String reproduces it (modulo a "0:" or leading-zero epoch).
func TestCorpusRoundTrip(t *testing.T) {
	for _, s := range loadCorpus(t) {
		v, err := Parse(s)
		if err != nil {
			t.Errorf("Parse(%q): %v", s, err)
			continue
		}
		got := v.String()
		if got != s && got != strings.TrimPrefix(s, "0:") {
			t.Errorf("Parse(%q).String() = %q", s, got)
		}
		if back, err := Parse(got); err != nil || back != v {
			t.Errorf("Parse(%q) = %#v, %v; want %#v", got, back, err, v)
		}
	}
}

func BenchmarkCompare(b *testing.B) {
	pairs := [][2]Version{}
	for _, p := range [][2]string{
		{"1:2.30-4+deb12u1", "1:2.30-4+deb12u2"},
		{"5.10.1-6", "5.10.1-6+b1"},
		{"1.0~rc1-0~exp1", "1.0-1"},
		{"2.36-9+deb12u14", "2.36-9+deb12u4"},
		{"20230210.0.0+ds-1", "20230210.0.0+ds-1~bpo11+1"},
	} {
		pairs = append(pairs, [2]Version{mustParse(b, p[0]), mustParse(b, p[1])})
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		p := pairs[i%len(pairs)]
		Compare(p[0], p[1])
		i++
	}
}

func BenchmarkParse(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse("1:2.30-4+deb12u1"); err != nil {
			b.Fatal(err)
		}
	}
}

func mustParse(tb testing.TB, s string) Version {
	tb.Helper()
	v, err := Parse(s)
	if err != nil {
		tb.Fatalf("Parse(%q): %v", s, err)
	}
	return v
}
