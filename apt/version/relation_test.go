package version

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseRelations(t *testing.T) {
	tests := []struct {
		in   string
		want []Alternatives
	}{
		{"", nil},
		{" \n\t", nil},
		{"a", []Alternatives{{{Name: "a"}}}},
		{"a (>= 1:2.0~rc1) | b:any, c [amd64] <!nocheck>", []Alternatives{
			{{Name: "a", Op: OpGreaterEqual, Version: "1:2.0~rc1"}, {Name: "b", ArchQual: "any"}},
			{{Name: "c", Archs: []string{"amd64"}, Profiles: [][]string{{"!nocheck"}}}},
		}},
		{"libc6 (<< 2.37), libfoo1 (= 1.0-1), bar (>> 0), baz (<= 3)", []Alternatives{
			{{Name: "libc6", Op: OpLess, Version: "2.37"}},
			{{Name: "libfoo1", Op: OpEqual, Version: "1.0-1"}},
			{{Name: "bar", Op: OpGreater, Version: "0"}},
			{{Name: "baz", Op: OpLessEqual, Version: "3"}},
		}},
		// Legacy single-character operators mean <= and >=, as in dpkg.
		{"a (< 1), b (> 2)", []Alternatives{
			{{Name: "a", Op: OpLessEqual, Version: "1"}},
			{{Name: "b", Op: OpGreaterEqual, Version: "2"}},
		}},
		// No spaces, and folded deb822 continuation lines.
		{"a(>=1)|b,\n c:native\n (=2)\n [!i386 !hurd-any]\n <stage1 cross> <!nocheck>,", []Alternatives{
			{{Name: "a", Op: OpGreaterEqual, Version: "1"}, {Name: "b"}},
			{{Name: "c", ArchQual: "native", Op: OpEqual, Version: "2", Archs: []string{"!i386", "!hurd-any"},
				Profiles: [][]string{{"stage1", "cross"}, {"!nocheck"}}}},
		}},
		{"python3:any (>= 3.11~), gcc-12:amd64, lib+plus.dot-dash", []Alternatives{
			{{Name: "python3", ArchQual: "any", Op: OpGreaterEqual, Version: "3.11~"}},
			{{Name: "gcc-12", ArchQual: "amd64"}},
			{{Name: "lib+plus.dot-dash"}},
		}},
		// Empty comma-separated items are skipped, as Dpkg::Deps does.
		{", a,, b ,", []Alternatives{{{Name: "a"}}, {{Name: "b"}}}},
		{"a [linux-any any-arm64]", []Alternatives{{{Name: "a", Archs: []string{"linux-any", "any-arm64"}}}}},
		// Adjacent profile groups need no space between them (Dpkg::Deps
		// 1.21 would read "<a><b>" as one odd term; apt and policy read two).
		{"a <stage1><!nocheck>", []Alternatives{{{Name: "a", Profiles: [][]string{{"stage1"}, {"!nocheck"}}}}}},
	}
	for _, tt := range tests {
		got, err := ParseRelations(tt.in)
		if err != nil {
			t.Errorf("ParseRelations(%q): %v", tt.in, err)
			continue
		}
		if d := cmp.Diff(tt.want, got); d != "" {
			t.Errorf("ParseRelations(%q) mismatch (-want +got):\n%s", tt.in, d)
		}
		// The canonical form parses back to the same value.
		again, err := ParseRelations(FormatRelations(got))
		if err != nil || !cmp.Equal(got, again) {
			t.Errorf("round trip of %q via %q: %v %v", tt.in, FormatRelations(got), again, err)
		}
	}
}

func TestParseRelationsErrors(t *testing.T) {
	tests := []struct{ in, want string }{
		{"a |", "relation 1 (\"a |\"), alternative 2: missing package name at byte 3"},
		{"a | | b", "alternative 2: missing package name at byte 4"},
		{"|a", "alternative 1: missing package name"},
		{"a, b (>= 1", "relation 2 (\"b (>= 1\"), alternative 1: unterminated version constraint opened at byte 5"},
		{"a (1.0)", "missing or invalid operator"},
		{"a (== 1.0)", "invalid character \"=\""},
		{"a (>= )", "missing version"},
		{"a (>= 1:)", "nothing after the epoch colon"},
		{"a (>= 1.0 2.0)", "unterminated version constraint"},
		{"a [amd64", "unterminated architecture list opened at byte 2"},
		{"a []", "empty architecture list"},
		{"a [!]", "invalid architecture name"},
		{"a [amd_64]", "invalid character \"_\" in architecture name"},
		{"a <!nocheck", "unterminated build profile list"},
		{"a <>", "empty build profile list"},
		{"a:", "invalid architecture qualifier"},
		{"a:any:any", "invalid character \":\""},
		{"a_b", "invalid character \"_\" in package name"},
		{"-a", "invalid package name start \"-\""},
		{"a b", "unexpected \"b\" at byte 2; expected ',' or '|'"},
		{"a [amd64] (>= 1)", "unexpected \"(\""},
		{"a <x> [amd64]", "unexpected \"[\""},
		{"a, b, c d", "relation 3 (\"c d\")"},
	}
	for _, tt := range tests {
		got, err := ParseRelations(tt.in)
		if err == nil {
			t.Errorf("ParseRelations(%q) = %v, want error containing %q", tt.in, got, tt.want)
			continue
		}
		if !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseRelations(%q) error:\n  %v\nwant it to contain\n  %s", tt.in, err, tt.want)
		}
	}
}

func TestSatisfiedBy(t *testing.T) {
	tests := []struct {
		rel, ver string
		want     bool
	}{
		{"a", "1.0", true},
		{"a (>= 1.0)", "1.0", true},
		{"a (>= 1.0)", "1.0~rc1", false},
		{"a (>= 1.0)", "1:0.1", true},
		{"a (>> 1.0)", "1.0", false},
		{"a (>> 1.0)", "1.0-1", true},
		{"a (>> 1.0)", "1.0-0", false}, // "-0" equals no revision
		{"a (<< 2)", "2~beta", true},
		{"a (<< 2)", "2", false},
		{"a (<= 2)", "2", true},
		{"a (<= 2)", "2+b1", false},
		{"a (= 1.0-1)", "1.0-1", true},
		{"a (= 1.0-1)", "0:1.0-1", true},
		{"a (= 1.0-1)", "1.0-1+b1", false},
		{"a (= 1.0)", "1.0-1", false},
		{"a (< 2)", "2", true}, // legacy '<' is <=
		{"a (> 2)", "2", true}, // legacy '>' is >=
		{"a (> 2)", "1.9", false},
	}
	for _, tt := range tests {
		rels, err := ParseRelations(tt.rel)
		if err != nil {
			t.Fatalf("ParseRelations(%q): %v", tt.rel, err)
		}
		if got := rels[0][0].SatisfiedBy(mustParse(t, tt.ver)); got != tt.want {
			t.Errorf("%q SatisfiedBy(%q) = %v, want %v", tt.rel, tt.ver, got, tt.want)
		}
	}
	bad := Relation{Name: "a", Op: OpEqual, Version: "1:"}
	if bad.SatisfiedBy(mustParse(t, "1")) {
		t.Error("a relation with an unparsable version must not be satisfied")
	}
	unknownOp := Relation{Name: "a", Op: "~=", Version: "1"}
	if unknownOp.SatisfiedBy(mustParse(t, "1")) {
		t.Error("a relation with an unknown operator must not be satisfied")
	}
}

func TestAppliesToArch(t *testing.T) {
	tests := []struct {
		archs []string
		arch  string
		want  bool
	}{
		{nil, "amd64", true},
		{[]string{"amd64"}, "amd64", true},
		{[]string{"amd64"}, "i386", false},
		{[]string{"amd64", "i386"}, "i386", true},
		{[]string{"!i386"}, "amd64", true},
		{[]string{"!i386"}, "i386", false},
		{[]string{"!i386", "!amd64"}, "amd64", false},
		{[]string{"!i386", "!amd64"}, "arm64", true},
		{[]string{"linux-any"}, "amd64", true},
		{[]string{"linux-any"}, "hurd-i386", false},
		{[]string{"!linux-any"}, "kfreebsd-amd64", true},
		{[]string{"any-amd64"}, "amd64", true},
		{[]string{"any-amd64"}, "kfreebsd-amd64", true},
		{[]string{"any-amd64"}, "x32", true}, // x32's CPU is amd64
		{[]string{"any-i386"}, "amd64", false},
		{[]string{"any-arm"}, "armhf", true},
		{[]string{"any-arm"}, "armel", true},
		{[]string{"any-arm"}, "arm64", false},
		{[]string{"musl-linux-any"}, "musl-linux-amd64", true},
		{[]string{"musl-linux-any"}, "amd64", false},
		{[]string{"gnu-any-any"}, "hurd-amd64", true},
		{[]string{"any"}, "whatever", true},
		{[]string{"AMD64"}, "amd64", true}, // list entries are lowercased, as dpkg does
		{[]string{"linux-amd64"}, "amd64", true},
		{[]string{"amd64", "!amd64"}, "amd64", true}, // first match wins, as in dpkg
	}
	for _, tt := range tests {
		r := Relation{Name: "a", Archs: tt.archs}
		if got := r.AppliesToArch(tt.arch); got != tt.want {
			t.Errorf("%v AppliesToArch(%q) = %v, want %v", tt.archs, tt.arch, got, tt.want)
		}
	}
}

func TestAppliesToProfiles(t *testing.T) {
	tests := []struct {
		profiles [][]string
		active   []string
		want     bool
	}{
		{nil, nil, true},
		{[][]string{{"!nocheck"}}, nil, true},
		{[][]string{{"!nocheck"}}, []string{"nocheck"}, false},
		{[][]string{{"stage1", "cross"}}, []string{"stage1"}, false},
		{[][]string{{"stage1", "cross"}}, []string{"cross", "stage1"}, true},
		{[][]string{{"stage1", "cross"}, {"!nocheck"}}, []string{"nocheck"}, false},
		{[][]string{{"stage1", "cross"}, {"!nocheck"}}, nil, true},
		{[][]string{{"stage1", "!cross"}}, []string{"stage1"}, true},
	}
	for _, tt := range tests {
		r := Relation{Name: "a", Profiles: tt.profiles}
		if got := r.AppliesToProfiles(tt.active); got != tt.want {
			t.Errorf("%v AppliesToProfiles(%q) = %v, want %v", tt.profiles, tt.active, got, tt.want)
		}
	}
}

func TestAlternativesString(t *testing.T) {
	rels, err := ParseRelations("a:any  (>=1.0)[ amd64  !i386 ]< !nocheck  stage1 ><cross>|b")
	if err != nil {
		t.Fatal(err)
	}
	want := "a:any (>= 1.0) [amd64 !i386] <!nocheck stage1> <cross> | b"
	if got := rels[0].String(); got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}
