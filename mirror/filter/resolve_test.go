package filter

import (
	"runtime"
	"slices"
	"strings"
	"testing"
	"weak"

	"github.com/google/go-cmp/cmp"

	"gatehouse/apt"
)

func TestResolve(t *testing.T) {
	tests := []struct {
		name     string
		pkgs     []pkg
		spec     Spec
		want     []string
		problems []string // substrings, one per expected Problem, in order
	}{
		{
			name: "first satisfiable alternative",
			pkgs: []pkg{
				{name: "a", ver: "1", dep: "nothere | b | c"},
				{name: "b", ver: "1"}, {name: "c", ver: "1"},
			},
			spec: Spec{Include: []string{"a"}, WithDependencies: true},
			want: []string{"a=1:amd64", "b=1:amd64"},
		},
		{
			name: "alternative already selected wins",
			pkgs: []pkg{
				{name: "a", ver: "1", dep: "b | c"},
				{name: "b", ver: "1"}, {name: "c", ver: "1"},
			},
			spec: Spec{Include: []string{"a", "c"}, WithDependencies: true},
			want: []string{"a=1:amd64", "c=1:amd64"},
		},
		{
			name: "virtual package: first provider by name",
			pkgs: []pkg{
				{name: "app", ver: "1", dep: "mta"},
				{name: "zmail", ver: "1", prov: "mta"}, {name: "exim", ver: "4", prov: "mta"},
			},
			spec: Spec{Include: []string{"app"}, WithDependencies: true},
			want: []string{"app=1:amd64", "exim=4:amd64"},
		},
		{
			name: "versioned provides",
			pkgs: []pkg{
				{name: "app", ver: "1", dep: "virt (>= 2)"},
				{name: "p1", ver: "9", prov: "virt (= 1)"},
				{name: "p2", ver: "1", prov: "virt (= 2.1)"},
				{name: "p0", ver: "1", prov: "virt"}, // unversioned: never satisfies a versioned relation
			},
			spec: Spec{Include: []string{"app"}, WithDependencies: true},
			want: []string{"app=1:amd64", "p2=1:amd64"},
		},
		{
			name: "versioned provides none fits",
			pkgs: []pkg{
				{name: "app", ver: "1", dep: "virt (>= 3)"},
				{name: "p1", ver: "9", prov: "virt (= 1)"}, {name: "p0", ver: "1", prov: "virt"},
			},
			spec:     Spec{Include: []string{"app"}, WithDependencies: true},
			want:     []string{"app=1:amd64"},
			problems: []string{"provides virt (= 1)"},
		},
		{
			name: "versioned deps pick the newest that fits",
			pkgs: []pkg{
				{name: "new", ver: "1", dep: "lib (>= 1.2)"},
				{name: "old", ver: "1", dep: "lib (<< 1.5)"},
				{name: "both", ver: "1", dep: "lib (>= 1.2), lib (<< 2.0)"},
				{name: "lib", ver: "1.0"}, {name: "lib", ver: "1.5"}, {name: "lib", ver: "2.0"},
			},
			spec: Spec{Include: []string{"new", "old", "both"}, WithDependencies: true},
			want: []string{"both=1:amd64", "lib=1.0:amd64", "lib=1.5:amd64", "lib=2.0:amd64", "new=1:amd64", "old=1:amd64"},
		},
		{
			name: "only the newest version of a root",
			pkgs: []pkg{{name: "a", ver: "1:0.9"}, {name: "a", ver: "10"}, {name: "a", ver: "2~rc1"}},
			spec: Spec{Include: []string{"a"}},
			want: []string{"a=1:0.9:amd64"},
		},
		{
			name: "any needs Multi-Arch allowed",
			pkgs: []pkg{
				{name: "a", ver: "1", dep: "py:any, perl:any"},
				{name: "py", ver: "3", ma: "allowed"},
				{name: "perl", ver: "5", ma: "foreign"},
			},
			spec:     Spec{Include: []string{"a"}, WithDependencies: true},
			want:     []string{"a=1:amd64", "py=3:amd64"},
			problems: []string{"perl 5 amd64 is not installable as perl:any"},
		},
		{
			name: "arch restrictions",
			pkgs: []pkg{
				{name: "a", ver: "1", arch: "all", dep: "x [amd64], y [!amd64], z [arm64] | w"},
				{name: "x", ver: "1", arch: "amd64"}, {name: "x", ver: "1", arch: "arm64"},
				{name: "y", ver: "1", arch: "amd64"}, {name: "y", ver: "1", arch: "arm64"},
				{name: "z", ver: "1", arch: "amd64"}, {name: "z", ver: "1", arch: "arm64"},
				{name: "w", ver: "1", arch: "amd64"}, {name: "w", ver: "1", arch: "arm64"},
			},
			spec: Spec{Include: []string{"a"}, WithDependencies: true, Architectures: []string{"amd64", "arm64"}},
			want: []string{"a=1:all", "w=1:amd64", "x=1:amd64", "y=1:arm64", "z=1:arm64"},
		},
		{
			name: "arch all depends closes for every native arch; foreign satisfies across arches",
			pkgs: []pkg{
				{name: "a", ver: "1", arch: "all", dep: "lib"},
				{name: "lib", ver: "1", arch: "amd64", dep: "tool"},
				{name: "lib", ver: "1", arch: "arm64", dep: "tool"},
				{name: "tool", ver: "1", arch: "amd64", ma: "foreign"},
				{name: "lib", ver: "1", arch: "i386"}, // not a native arch: ignored
			},
			spec: Spec{Include: []string{"a"}, WithDependencies: true, Architectures: []string{"amd64", "arm64"}},
			want: []string{"a=1:all", "lib=1:amd64", "lib=1:arm64", "tool=1:amd64"},
		},
		{
			name: "pre-depends followed",
			pkgs: []pkg{{name: "a", ver: "1", pre: "dpkg (>= 1.15)"}, {name: "dpkg", ver: "1.21"}},
			spec: Spec{Include: []string{"a"}, WithDependencies: true},
			want: []string{"a=1:amd64", "dpkg=1.21:amd64"},
		},
		{
			name: "missing dependency with chain",
			pkgs: []pkg{
				{name: "root", ver: "1", dep: "mid"},
				{name: "mid", ver: "2", dep: "leaf"},
				{name: "leaf", ver: "3", dep: "gone (>= 1) | alsogone"},
			},
			spec:     Spec{Include: []string{"root"}, WithDependencies: true},
			want:     []string{"leaf=3:amd64", "mid=2:amd64", "root=1:amd64"},
			problems: []string{"leaf 3 amd64: Depends: gone (>= 1) | alsogone: no package is named or provides gone; no package is named or provides alsogone (pulled in by root 1 amd64 -> mid 2 amd64)"},
		},
		{
			name: "exclude breaks a dependency",
			pkgs: []pkg{{name: "a", ver: "1", dep: "b-dbg"}, {name: "b-dbg", ver: "1"}},
			spec: Spec{Include: []string{"*"}, Exclude: []string{"*-dbg"}, WithDependencies: true},
			want: []string{"a=1:amd64"}, problems: []string{"b-dbg 1 amd64 is excluded"},
		},
		{
			name: "exclude skips to the next alternative",
			pkgs: []pkg{{name: "a", ver: "1", dep: "b | c"}, {name: "b", ver: "1", sect: "debug"}, {name: "c", ver: "1"}},
			spec: Spec{Include: []string{"a"}, Exclude: []string{"section:debug"}, WithDependencies: true},
			want: []string{"a=1:amd64", "c=1:amd64"},
		},
		{
			name: "version too old",
			pkgs: []pkg{{name: "a", ver: "1", dep: "lib (>= 2.0)"}, {name: "lib", ver: "1.3-1"}, {name: "lib", ver: "1.1-1"}},
			spec: Spec{Include: []string{"a"}, WithDependencies: true},
			want: []string{"a=1:amd64"}, problems: []string{"lib has only version 1.1-1, 1.3-1"},
		},
		{
			name: "unparsable relation field",
			pkgs: []pkg{{name: "a", ver: "1", dep: "b"}, {name: "b", ver: "1", pre: "c (>= )"}, {name: "z", ver: "1", dep: "(("}},
			spec: Spec{Include: []string{"a"}, WithDependencies: true},
			want: []string{"a=1:amd64", "b=1:amd64"}, problems: []string{"b 1 amd64: Pre-Depends: the field does not parse: relation 1"},
		},
		{
			name: "cycle terminates",
			pkgs: []pkg{{name: "a", ver: "1", dep: "b"}, {name: "b", ver: "1", pre: "a (= 1)"}, {name: "c", ver: "1", dep: "c"}},
			spec: Spec{Include: []string{"a", "c"}, WithDependencies: true},
			want: []string{"a=1:amd64", "b=1:amd64", "c=1:amd64"},
		},
		{
			name: "recommends only when asked; missing ones ignored",
			pkgs: []pkg{{name: "a", ver: "1", rec: "doc, nodoc"}, {name: "doc", ver: "1", arch: "all"}},
			spec: Spec{Include: []string{"a"}, WithDependencies: true, WithRecommends: true},
			want: []string{"a=1:amd64", "doc=1:all"},
		},
		{
			name: "recommends not followed by default",
			pkgs: []pkg{{name: "a", ver: "1", rec: "doc"}, {name: "doc", ver: "1", arch: "all"}},
			spec: Spec{Include: []string{"a"}, WithDependencies: true},
			want: []string{"a=1:amd64"},
		},
		{
			name: "without dependencies only roots",
			pkgs: []pkg{{name: "a", ver: "1", dep: "b, missing"}, {name: "b", ver: "1"}},
			spec: Spec{Include: []string{"a"}},
			want: []string{"a=1:amd64"},
		},
		{
			name: "priority, section and glob patterns",
			pkgs: []pkg{
				{name: "base", ver: "1", prio: "required"},
				{name: "imp", ver: "1", prio: "important"},
				{name: "opt", ver: "1", prio: "optional", sect: "contrib/admin"},
				{name: "python3-x", ver: "1"}, {name: "python3-x-dbg", ver: "1"}, {name: "python2-x", ver: "1"},
			},
			spec: Spec{Include: []string{"priority:required", "section:admin", "python3-*", "section:nothing"}, Exclude: []string{"*-dbg"}},
			want: []string{"base=1:amd64", "opt=1:amd64", "python3-x=1:amd64"},
		},
		{
			name: "include a virtual name or a missing one",
			pkgs: []pkg{{name: "postfix", ver: "3", prov: "mail-transport-agent"}},
			spec: Spec{Include: []string{"mail-transport-agent", "no-such-package"}},
			want: []string{"postfix=3:amd64"}, problems: []string{"Include: no-such-package: no package is named or provides no-such-package"},
		},
		{
			name: "native qualifier and explicit arch",
			pkgs: []pkg{
				{name: "a", ver: "1", dep: "t:native, u:arm64"},
				{name: "t", ver: "1", arch: "arm64", ma: "foreign"}, {name: "t", ver: "1", arch: "amd64", ma: "foreign"},
				{name: "u", ver: "1", arch: "arm64"}, {name: "u", ver: "2", arch: "amd64"},
			},
			spec: Spec{Include: []string{"a"}, WithDependencies: true, Architectures: []string{"amd64", "arm64"}},
			want: []string{"a=1:amd64", "t=1:amd64", "u=1:arm64"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u := universe(t, tc.pkgs...)
			if tc.spec.Architectures == nil {
				tc.spec.Architectures = []string{"amd64"}
			}
			r := resolve(t, u, tc.spec)
			if d := cmp.Diff(tc.want, names(r)); d != "" {
				t.Errorf("selection (-want +got):\n%s\nproblems: %v", d, r.Unsatisfied)
			}
			if len(r.Unsatisfied) != len(tc.problems) {
				t.Fatalf("problems = %q, want %d like %q", r.Unsatisfied, len(tc.problems), tc.problems)
			}
			for i, p := range r.Unsatisfied {
				if !strings.Contains(p.String(), tc.problems[i]) {
					t.Errorf("problem %d = %q, want it to contain %q", i, p.String(), tc.problems[i])
				}
			}
			checkClosed(t, u, tc.spec, r)
		})
	}
}

func TestResolveReportsUnmatchedAndChain(t *testing.T) {
	u := universe(t, pkg{name: "a", ver: "1", dep: "b"}, pkg{name: "b", ver: "1", dep: "c (>= 2)"}, pkg{name: "c", ver: "1"})
	r := resolve(t, u, Spec{Include: []string{"a", "zz*", "priority:extra"}, WithDependencies: true})
	if d := cmp.Diff([]string{"zz*", "priority:extra"}, r.Unmatched); d != "" {
		t.Errorf("Unmatched (-want +got):\n%s", d)
	}
	if len(r.Unsatisfied) != 1 {
		t.Fatalf("problems %v", r.Unsatisfied)
	}
	p := r.Unsatisfied[0]
	want := Problem{Package: "b 1 amd64", Relation: "Depends: c (>= 2)", Why: "c (>= 2): c has only version 1", Chain: []string{"a 1 amd64", "b 1 amd64"}}
	if d := cmp.Diff(want, p); d != "" {
		t.Errorf("problem (-want +got):\n%s", d)
	}
}

func TestResolveSpecErrors(t *testing.T) {
	u := universe(t, pkg{name: "a", ver: "1"})
	for _, spec := range []Spec{
		{Include: []string{"a"}},                                               // no arch
		{Include: []string{"a"}, Architectures: []string{"all"}},               // only all
		{Include: []string{"a["}, Architectures: []string{"amd64"}},            // bad glob
		{Include: []string{"prio:required"}, Architectures: []string{"amd64"}}, // unknown prefix
		{Include: []string{"priority:"}, Architectures: []string{"amd64"}},
		{Exclude: []string{"a b"}, Architectures: []string{"amd64"}},
		{Include: []string{"a"}, Architectures: []string{"amd/64"}},
	} {
		if _, err := Resolve(u, spec); err == nil {
			t.Errorf("Resolve(%+v) accepted a bad spec", spec)
		}
	}
}

func TestAdd(t *testing.T) {
	u := NewUniverse()
	all := pkg{name: "doc", ver: "1", arch: "all"}.stanza()
	for _, loc := range [][2]string{{"s", "main"}, {"s", "main"}, {"s2", "contrib"}} {
		if err := addText(u, loc[0], loc[1], all); err != nil {
			t.Fatal(err)
		}
	}
	if u.Len() != 1 {
		t.Fatalf("Len = %d after adding one stanza thrice", u.Len())
	}
	e := u.byName["doc"][0]
	if d := cmp.Diff([]Location{{"s", "main"}, {"s2", "contrib"}}, e.Locations()); d != "" {
		t.Errorf("locations (-want +got):\n%s", d)
	}
	if !e.In("s2", "contrib") || e.In("s2", "main") || e.In("x", "main") {
		t.Error("In disagrees with Locations")
	}
	if e.Stanza() != strings.TrimSuffix(all, "\n") {
		t.Errorf("stanza changed:\n%s\nwant\n%s", e.Stanza(), all)
	}
	if h := e.Hashes(); h.Path != "pool/main/doc_1_all.deb" || h.SHA256 == "" || h.Size != int64(len("doc_1_all")) {
		t.Errorf("Hashes = %+v", h)
	}

	other := strings.Replace(all, "SHA256: ", "SHA256: 00", 1)
	other = other[:strings.LastIndex(other, "\n")-2] + "\n"
	for name, text := range map[string]string{
		"same version, other file": other,
		"bad provides":             pkg{name: "x", ver: "1", prov: "a | b"}.stanza(),
		"provides with >=":         pkg{name: "x", ver: "1", prov: "a (>= 1)"}.stanza(),
		"bad version":              pkg{name: "x", ver: "1 2"}.stanza(),
	} {
		err := addText(u, "s", "main", text)
		if err == nil {
			t.Errorf("%s: accepted", name)
		}
		t.Logf("%s: %v", name, err)
	}
	if u.Len() != 1 || len(u.byName["x"]) != 0 || len(u.provides) != 0 {
		t.Errorf("a refused stanza left traces: Len %d", u.Len())
	}
	for i := range MaxLocations + 1 {
		err := addText(u, "suite", strings.Repeat("c", i+1), all)
		if (err != nil) != (i >= MaxLocations-2) { // two locations are in use
			t.Fatalf("location %d: %v", i, err)
		}
	}
}

// checkClosed verifies independently of the resolver that every hard
// relation of every selected entry is met by the selection or reported.
func checkClosed(t testing.TB, u *Universe, spec Spec, r *Result) {
	t.Helper()
	natives := slices.DeleteFunc(slices.Clone(spec.Architectures), func(a string) bool { return a == "all" })
	sel := map[*Entry]bool{}
	for _, e := range r.Selected {
		sel[e] = true
		for _, x := range spec.Exclude {
			if p, _ := parsePatterns("", []string{x}); p[0].match(e) {
				t.Errorf("excluded %s selected", e)
			}
		}
	}
	if !spec.WithDependencies {
		return
	}
	reported := map[string]bool{}
	for _, p := range r.Unsatisfied {
		reported[p.Package+"\x00"+p.Relation] = true
	}
	for _, e := range r.Selected {
		archs := []string{e.Architecture}
		if e.Architecture == "all" {
			archs = natives
		}
		for _, field := range [][2]string{{"Pre-Depends", e.preDepends}, {"Depends", e.depends}} {
			groups, err := parseRel(field[1])
			if err != nil {
				if !reported[e.String()+"\x00"+field[0]] {
					t.Errorf("%s: unparsable %s not reported", e, field[0])
				}
				continue
			}
			for _, a := range archs {
				for _, g := range groups {
					ok, applies := false, false
					for _, rel := range g {
						if !rel.AppliesToArch(a) {
							continue
						}
						applies = true
						for s := range sel {
							if satisfies(s, rel.Name, rel.ArchQual, a, natives, func(v string) bool { return relSatisfied(rel, v) }) {
								ok = true
							}
						}
					}
					if applies && !ok && !reported[e.String()+"\x00"+field[0]+": "+g.String()] {
						t.Errorf("%s on %s: %s unmet and not reported", e, a, g)
					}
				}
			}
		}
	}
}

// TestResolveAcrossSuites: an update suite's newer version replaces the
// base suite's, its dependencies may come from the base suite, and each
// suite's index lists only its own entries.
func TestResolveAcrossSuites(t *testing.T) {
	u := universe(t,
		pkg{name: "a", ver: "1", dep: "b", suite: "stable"},
		pkg{name: "a", ver: "1+deb1u1", dep: "b (>= 1)", suite: "stable-security"},
		pkg{name: "b", ver: "1", suite: "stable"},
		pkg{name: "c", ver: "1", arch: "all", suite: "stable"},
		pkg{name: "c", ver: "1", arch: "all", suite: "stable-security"},
	)
	r := resolve(t, u, Spec{Include: []string{"a", "c"}, WithDependencies: true})
	if d := cmp.Diff([]string{"a=1+deb1u1:amd64", "b=1:amd64", "c=1:all"}, names(r)); d != "" {
		t.Fatalf("selection (-want +got):\n%s", d)
	}
	dir := t.TempDir()
	for suite, want := range map[string]string{"stable": "b c", "stable-security": "a c"} {
		files, err := WriteIndexes(osDir(dir+"/"+suite), r, Indexes{Suite: suite, Components: []string{"main"}, Architectures: []string{"amd64"}})
		if err != nil {
			t.Fatal(err)
		}
		data := mustDecompress(t, mustRead(t, dir+"/"+suite+"/"+files[1].Path), files[1].Path)
		var got []string
		for _, line := range strings.Split(string(data), "\n") {
			if n, ok := strings.CutPrefix(line, "Package: "); ok {
				got = append(got, n)
			}
		}
		if strings.Join(got, " ") != want {
			t.Errorf("%s lists %v, want %s", suite, got, want)
		}
	}
}

// TestDetach: after Detach the selection still knows its locations, and
// the Universe, with every entry not selected, can be collected.
func TestDetach(t *testing.T) {
	u := universe(t,
		pkg{name: "a", ver: "1", dep: "b", suite: "stable"},
		pkg{name: "a", ver: "1+deb1u1", dep: "b", suite: "stable-security"},
		pkg{name: "b", ver: "1", suite: "stable"},
		pkg{name: "unused", ver: "1", suite: "stable"},
	)
	r := resolve(t, u, Spec{Include: []string{"a"}, WithDependencies: true})
	w := weak.Make(u)
	r.Detach()
	u = nil
	runtime.GC()
	if w.Value() != nil {
		t.Error("the Universe is still reachable from the detached Result")
	}
	if d := cmp.Diff([]string{"a=1+deb1u1:amd64", "b=1:amd64"}, names(r)); d != "" {
		t.Fatalf("selection (-want +got):\n%s", d)
	}
	if !r.Selected[0].In("stable-security", "main") || r.Selected[0].In("stable", "main") ||
		len(r.Selected[1].Locations()) != 1 || r.Selected[1].Locations()[0].Suite != "stable" {
		t.Errorf("locations lost: %v %v", r.Selected[0].Locations(), r.Selected[1].Locations())
	}
}

// TestEntrySource: the source an entry was built from, as Debian policy
// defines it.
func TestEntrySource(t *testing.T) {
	text := "Package: a\nVersion: 1.2-3+b1\nArchitecture: amd64\nSource: asrc (1.2-3)\nFilename: pool/a.deb\nSize: 1\nSHA256: " + strings.Repeat("1", 64) + "\n\n" +
		"Package: b\nVersion: 2.0\nArchitecture: all\nsource: bsrc\nFilename: pool/b.deb\nSize: 1\nSHA256: " + strings.Repeat("2", 64) + "\n\n" +
		"Package: c\nVersion: 3\nArchitecture: all\nDescription: x\n Source: not-a-field\nFilename: pool/c.deb\nSize: 1\nSHA256: " + strings.Repeat("3", 64) + "\n"
	u := NewUniverse()
	pr := apt.NewPackagesReader(strings.NewReader(text), "Packages")
	for {
		p, err := pr.Next()
		if err != nil {
			break
		}
		if err := u.Add("s", "main", p); err != nil {
			t.Fatal(err)
		}
	}
	for name, want := range map[string][2]string{"a": {"asrc", "1.2-3"}, "b": {"bsrc", "2.0"}, "c": {"c", "3"}} {
		n, v := u.byName[name][0].Source()
		if n != want[0] || v != want[1] {
			t.Errorf("%s: Source() = %q %q, want %q", name, n, v, want)
		}
	}
}
