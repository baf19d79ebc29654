package version

import (
	"bufio"
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// dpkgPerl answers queries with dpkg's own Perl modules (libdpkg-perl, part
// of dpkg-dev): Dpkg::Arch::debarch_is and Dpkg::Deps::deps_parse. One query
// per line, tab-separated; newlines and tabs inside a field are sent as \x01
// and \x02.
const dpkgPerl = `
use strict; use warnings;
use Dpkg::Arch qw(debarch_is);
use Dpkg::Deps;
$SIG{__WARN__} = sub {};
while (my $line = <STDIN>) {
	chomp $line;
	my ($kind, @f) = map { tr/\x01\x02/\n\t/r } split /\t/, $line, -1;
	if ($kind eq 'A') {
		print debarch_is($f[0], $f[1]) ? "1\n" : "0\n";
	} elsif ($kind eq 'P') {
		my $d = deps_parse($f[0], build_dep => 1);
		print defined $d ? "$d\n" : "ERR\n";
	} elsif ($kind eq 'R') {
		my @p = grep { length } split /,/, $f[1];
		my $d = deps_parse($f[2], build_dep => 1, reduce_arch => 1, host_arch => $f[0],
			reduce_profiles => 1, build_profiles => \@p);
		print defined $d ? "$d\n" : "ERR\n";
	} else { die "bad query $kind" }
}
`

// askDpkgPerl runs all queries through one perl process and returns one
// answer per query.
func askDpkgPerl(t *testing.T, queries [][]string) []string {
	t.Helper()
	perl, err := exec.LookPath("perl")
	if err != nil {
		t.Skip("perl not installed")
	}
	if _, err := os.Stat("/usr/share/perl5/Dpkg/Deps.pm"); err != nil {
		t.Skip("libdpkg-perl (dpkg-dev) not installed")
	}
	var in bytes.Buffer
	esc := strings.NewReplacer("\n", "\x01", "\t", "\x02")
	for _, q := range queries {
		for i, f := range q {
			if i > 0 {
				in.WriteByte('\t')
			}
			in.WriteString(esc.Replace(f))
		}
		in.WriteByte('\n')
	}
	var stderr bytes.Buffer
	cmd := exec.Command(perl, "-e", dpkgPerl)
	cmd.Stdin = &in
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("perl Dpkg helper: %v: %s", err, stderr.String())
	}
	lines := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	if len(lines) != len(queries) {
		t.Fatalf("perl answered %d of %d queries: %s", len(lines), len(queries), stderr.String())
	}
	return lines
}

// TestArchMatchesAgainstDpkg compares ArchMatches with Dpkg::Arch::debarch_is
// for every known architecture against names and wildcards, which also
// checks our copy of dpkg's cputable/tupletable against the installed one.
func TestArchMatchesAgainstDpkg(t *testing.T) {
	var archs []string
	for a := range archTuples {
		archs = append(archs, a)
	}
	slices.Sort(archs)
	archs = append(archs, "linux-amd64", "unknownarch")
	patterns := []string{"any", "linux-any", "any-amd64", "any-i386", "any-arm", "any-arm64", "musl-linux-any",
		"gnu-linux-any", "any-any", "any-any-any", "any-any-any-any", "hurd-any", "kfreebsd-any", "bsd-freebsd-any",
		"eabihf-any-any-arm", "any-any-linux-any", "x32", "armhf", "amd64", "linux-amd64", "any-mips64el",
		"uclibc-any-any", "base-any-any-any", "unknownarch", "any-unknowncpu", "darwin-any", "any-powerpc"}
	var queries [][]string
	type q struct{ arch, pat string }
	var qs []q
	for _, a := range archs {
		for _, p := range append(patterns, archs[:20]...) {
			queries = append(queries, []string{"A", a, p})
			qs = append(qs, q{a, p})
		}
	}
	answers := askDpkgPerl(t, queries)
	bad := 0
	for i, x := range qs {
		want := answers[i] == "1"
		if got := ArchMatches(x.arch, x.pat); got != want {
			bad++
			if bad <= 20 {
				t.Errorf("ArchMatches(%q, %q) = %v, dpkg says %v", x.arch, x.pat, got, want)
			}
		}
	}
	t.Logf("%d arch/pattern pairs checked against Dpkg::Arch (%d architectures)", len(qs), len(archs))
}

// relationCorpus returns distinct relation field values of real Packages
// indexes in /var/lib/apt/lists (empty when there are none).
func relationCorpus(t *testing.T, limit int) []string {
	fields := map[string]bool{"Depends": true, "Pre-Depends": true, "Recommends": true, "Suggests": true,
		"Enhances": true, "Breaks": true, "Conflicts": true, "Replaces": true, "Provides": true, "Built-Using": true}
	seen := map[string]bool{}
	var out []string
	files, _ := filepath.Glob("/var/lib/apt/lists/*Packages*")
	for _, f := range files {
		var cur *strings.Builder
		flush := func() {
			if cur != nil && !seen[cur.String()] && len(out) < limit {
				seen[cur.String()] = true
				out = append(out, cur.String())
			}
			cur = nil
		}
		err := scanIndex(f, func(sc *bufio.Scanner) {
			for sc.Scan() {
				line := sc.Text()
				if strings.HasPrefix(line, " ") || strings.HasPrefix(line, "\t") {
					if cur != nil {
						cur.WriteString("\n" + line)
					}
					continue
				}
				flush()
				name, val, ok := strings.Cut(line, ":")
				if ok && fields[name] {
					cur = &strings.Builder{}
					cur.WriteString(strings.TrimSpace(val))
				}
			}
		})
		flush()
		if err != nil {
			t.Logf("skipping %s: %v", f, err)
		}
	}
	return out
}

// generatedRelations builds deterministic build-dependency fields with
// qualifiers, legacy and modern operators, arch lists (negated, wildcards)
// and profile formulas, in varied spacing and folding.
func generatedRelations(n int) []string {
	rng := rand.New(rand.NewPCG(5, 6))
	names := []string{"a", "libc6-dev", "gcc-12", "python3", "lib+x.y-z", "Foo", "debhelper-compat", "g++"}
	quals := []string{"", "", "", ":any", ":native", ":amd64"}
	ops := []string{"<<", "<=", "=", ">=", ">>", "<", ">"}
	vers := []string{"1", "1:2.0~rc1", "2.36-9+deb12u4", "0~", "13", "1.0-1~bpo1"}
	archs := []string{"amd64", "i386", "arm64", "armhf", "linux-any", "any-amd64", "any-arm", "hurd-any",
		"kfreebsd-any", "x32", "musl-linux-any", "hurd-i386", "any", "s390x", "any-i386"}
	profs := []string{"nocheck", "nodoc", "stage1", "stage2", "cross", "pkg.foo.bar", "noudeb"}
	sp := func() string { return []string{"", " ", "  ", "\n ", "\t"}[rng.IntN(5)] }
	rel := func() string {
		var b strings.Builder
		b.WriteString(names[rng.IntN(len(names))] + quals[rng.IntN(len(quals))])
		if rng.IntN(2) == 0 {
			fmt.Fprintf(&b, "%s(%s%s%s%s%s)", sp(), sp(), ops[rng.IntN(len(ops))], sp(), vers[rng.IntN(len(vers))], sp())
		}
		if rng.IntN(2) == 0 {
			neg := rng.IntN(2) == 0
			b.WriteString(" [" + sp())
			for k := range 1 + rng.IntN(3) {
				if k > 0 {
					b.WriteString(" ")
				}
				if neg {
					b.WriteString("!")
				}
				b.WriteString(archs[rng.IntN(len(archs))])
			}
			b.WriteString(sp() + "]")
		}
		for range rng.IntN(3) {
			// Dpkg::BuildProfiles only splits groups separated by
			// whitespace ("<a> <b>"), so always put some in; "<a><b>" is
			// covered by TestParseRelations.
			b.WriteString(" " + sp() + "<")
			for k := range 1 + rng.IntN(2) {
				if k > 0 {
					b.WriteString(" ")
				}
				if rng.IntN(2) == 0 {
					b.WriteString("!")
				}
				b.WriteString(profs[rng.IntN(len(profs))])
			}
			b.WriteString(">")
		}
		return b.String()
	}
	var out []string
	for range n {
		var b strings.Builder
		for i := range 1 + rng.IntN(4) {
			if i > 0 {
				b.WriteString("," + sp())
			}
			for j := range 1 + rng.IntN(3) {
				if j > 0 {
					b.WriteString(sp() + "|" + sp())
				}
				b.WriteString(rel())
			}
		}
		if rng.IntN(5) == 0 {
			b.WriteString(",")
		}
		out = append(out, b.String())
	}
	return out
}

// reduce keeps what applies to arch and profiles and drops the restrictions,
// as Dpkg::Deps::deps_parse does with reduce_arch and reduce_profiles.
func reduce(rels []Alternatives, arch string, profiles []string) []Alternatives {
	var out []Alternatives
	for _, alts := range rels {
		var keep Alternatives
		for _, r := range alts {
			if r.AppliesToArch(arch) && r.AppliesToProfiles(profiles) {
				r.Archs, r.Profiles = nil, nil
				keep = append(keep, r)
			}
		}
		if len(keep) > 0 {
			out = append(out, keep)
		}
	}
	return out
}

// TestParseRelationsAgainstDpkg parses real archive relation fields and
// generated build-dependency fields with both ParseRelations and
// Dpkg::Deps, and compares the canonical output, then the reduction for
// several host architectures and build-profile sets (AppliesToArch and
// AppliesToProfiles against dpkg's evaluation).
func TestParseRelationsAgainstDpkg(t *testing.T) {
	real := relationCorpus(t, 20000)
	gen := generatedRelations(1500)
	inputs := append(append([]string{}, real...), gen...)
	hosts := []string{"amd64", "i386", "arm64", "armhf", "hurd-i386", "kfreebsd-amd64", "musl-linux-amd64", "x32"}
	profileSets := [][]string{nil, {"nocheck"}, {"stage1"}, {"stage1", "cross"}, {"nocheck", "nodoc", "pkg.foo.bar"}}

	var queries [][]string
	for _, s := range inputs {
		queries = append(queries, []string{"P", s})
	}
	for i, s := range gen {
		h := hosts[i%len(hosts)]
		for _, ps := range profileSets {
			queries = append(queries, []string{"R", h, strings.Join(ps, ","), s})
		}
	}
	answers := askDpkgPerl(t, queries)
	bad := 0
	fail := func(format string, args ...any) {
		bad++
		if bad <= 20 {
			t.Errorf(format, args...)
		}
	}
	parsed := make([][]Alternatives, len(inputs))
	for i, s := range inputs {
		rels, err := ParseRelations(s)
		if err != nil {
			fail("ParseRelations(%q): %v (dpkg: %q)", s, err, answers[i])
			continue
		}
		parsed[i] = rels
		if got := FormatRelations(rels); got != answers[i] {
			fail("ParseRelations(%q) formats as\n  %q\ndpkg gives\n  %q", s, got, answers[i])
		}
	}
	k := len(inputs)
	for i := range gen {
		rels := parsed[len(real)+i]
		h := hosts[i%len(hosts)]
		for _, ps := range profileSets {
			want := answers[k]
			k++
			if rels == nil {
				continue
			}
			if got := FormatRelations(reduce(rels, h, ps)); got != want {
				fail("reduce(%q, %s, %v) = %q, dpkg gives %q", gen[i], h, ps, got, want)
			}
		}
	}
	t.Logf("%d real and %d generated fields, %d reductions checked against Dpkg::Deps", len(real), len(gen), len(gen)*len(profileSets))
}
