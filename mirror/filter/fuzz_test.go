package filter

import (
	"fmt"
	"math/rand"
	"slices"
	"strings"
	"testing"

	"gatehouse/apt"
	"gatehouse/apt/deb822"
)

// FuzzResolve builds small random package graphs from the input and
// checks that Resolve never panics, terminates, is deterministic, never
// selects an excluded entry, and leaves no hard relation of a selected
// entry both unmet and unreported (checked by checkClosed, which reads the
// documented rules independently of the resolver).
func FuzzResolve(f *testing.F) {
	f.Add([]byte{4, 0, 1, 0, 0, 2, 1, 1, 0, 0, 0, 0})
	f.Add([]byte("\x07\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19"))
	f.Add([]byte(strings.Repeat("\xff\x00\x13\x37", 30)))
	rng := rand.New(rand.NewSource(7))
	for range 20 {
		seed := make([]byte, 40+rng.Intn(200))
		rng.Read(seed)
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 512 {
			return
		}
		pkgs, spec := graphFromBytes(data)
		u := NewUniverse()
		for _, p := range pkgs {
			// Duplicates of one name, version and arch with other relations
			// are kept once; that is Add's documented behaviour.
			_ = addText(u, "s", "main", p.stanza())
		}
		r1, err := Resolve(u, spec)
		if err != nil {
			t.Fatalf("spec %+v: %v", spec, err)
		}
		r2, err := Resolve(u, spec)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(names(r1), names(r2)) || fmt.Sprint(r1.Unsatisfied) != fmt.Sprint(r2.Unsatisfied) {
			t.Fatalf("Resolve is not deterministic: %v / %v", names(r1), names(r2))
		}
		checkClosed(t, u, spec, r1)
	})
}

// TestResolveRandomGraphs runs FuzzResolve's checks on pseudo-random
// graphs in every test run.
func TestResolveRandomGraphs(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for range 3000 {
		data := make([]byte, 40+rng.Intn(200))
		rng.Read(data)
		pkgs, spec := graphFromBytes(data)
		u := NewUniverse()
		for _, p := range pkgs {
			_ = addText(u, "s", "main", p.stanza())
		}
		r, err := Resolve(u, spec)
		if err != nil {
			t.Fatal(err)
		}
		checkClosed(t, u, spec, r)
		if t.Failed() {
			t.Fatalf("graph %+v\nspec %+v", pkgs, spec)
		}
	}
}

// graphFromBytes decodes a graph of at most 8 packages over a few names,
// versions, architectures, qualifiers and arch restrictions.
func graphFromBytes(data []byte) ([]pkg, Spec) {
	next := func() int {
		if len(data) == 0 {
			return 0
		}
		b := data[0]
		data = data[1:]
		return int(b)
	}
	pick := func(xs ...string) string { return xs[next()%len(xs)] }
	names := []string{"a", "b", "c", "d", "e", "virt", "gone"}
	vers := []string{"1", "1.5", "2", "1:0", "2~rc1"}
	relation := func() string {
		rel := pick(names...) + pick("", "", ":any", ":native", ":arm64")
		if op := pick("", "", ">=", "<<", "=", "<=", ">>"); op != "" {
			rel += " (" + op + " " + pick(vers...) + ")"
		}
		return rel + pick("", "", " [amd64]", " [!amd64]", " [arm64 i386]")
	}
	field := func() string {
		var groups []string
		for range next() % 4 {
			alts := []string{relation()}
			if next()%3 == 0 {
				alts = append(alts, relation())
			}
			groups = append(groups, strings.Join(alts, " | "))
		}
		return strings.Join(groups, ", ")
	}
	var pkgs []pkg
	for range next()%8 + 1 {
		p := pkg{name: pick(names[:5]...), ver: pick(vers...), arch: pick("amd64", "amd64", "all", "arm64", "i386"),
			ma: pick("", "", "same", "foreign", "allowed"), prio: pick("", "required", "optional"), sect: pick("", "admin", "debug")}
		p.dep, p.pre = field(), field()
		if next()%2 == 0 {
			p.rec = field()
		}
		switch next() % 4 {
		case 1:
			p.prov = "virt"
		case 2:
			p.prov = "virt (= " + pick(vers...) + ")"
		}
		pkgs = append(pkgs, p)
	}
	spec := Spec{WithDependencies: next()%4 != 0, WithRecommends: next()%2 == 0, Architectures: []string{"amd64"}}
	if next()%2 == 0 {
		spec.Architectures = append(spec.Architectures, "arm64")
	}
	for range next()%3 + 1 {
		spec.Include = append(spec.Include, pick("a", "b*", "virt", "gone", "priority:required", "section:admin", "*"))
	}
	if next()%2 == 0 {
		spec.Exclude = append(spec.Exclude, pick("c", "d*", "section:debug", "priority:optional"))
	}
	return pkgs, spec
}

// FuzzAdd feeds arbitrary Packages text through apt.PackagesReader and
// Add, and checks that every accepted entry keeps exactly the values the
// reader returned and a stanza that reads back to the same paragraph.
func FuzzAdd(f *testing.F) {
	f.Add(pkg{name: "a", ver: "1:2.0-1", dep: "b (>= 1) | c:any [amd64]", prov: "v (= 1)", ma: "allowed"}.stanza() + "\n" +
		pkg{name: "b", ver: "1", arch: "all"}.stanza())
	f.Add("Package: x\nVersion: 1\nArchitecture: amd64\nFilename: ./pool/x.deb\nSize: 1\nSHA256: " + strings.Repeat("AB", 32) +
		"\nDepends: a,\n b\nDescription: short\n long\n .\n more\nDescription-md5: " + strings.Repeat("0", 32) + "\n")
	f.Fuzz(func(t *testing.T, text string) {
		if len(text) > 1<<16 {
			return
		}
		u := NewUniverse()
		pr := apt.NewPackagesReader(strings.NewReader(text), "fuzz")
		for {
			p, err := pr.Next()
			if err != nil {
				return
			}
			n := u.Len()
			if err := u.Add("s", "main", p); err != nil {
				continue
			}
			if u.Len() == n {
				// The same package listed again (name, version,
				// architecture and file): only its location was added,
				// and the entry keeps the first stanza's text, which may
				// differ in other fields.
				continue
			}
			var e *Entry
			for _, x := range u.byName[p.Name] {
				if x.Version == p.Version && x.Architecture == p.Architecture {
					e = x
				}
			}
			if e == nil {
				t.Fatalf("accepted %s %s not found", p.Name, p.Version)
			}
			descMD5, _ := p.Para.Get("Description-md5")
			got := []string{e.Name, e.Version, e.Architecture, e.Filename, e.MD5Sum, e.SHA1, e.SHA256, e.SHA512, e.DescriptionMD5,
				e.depends, e.preDepends, e.recommends, e.MultiArch, e.Priority, e.Section}
			want := []string{p.Name, p.Version, p.Architecture, p.Filename, p.MD5Sum, p.SHA1, p.SHA256, p.SHA512, descMD5,
				p.Depends, p.PreDepends, p.Recommends, p.MultiArch, p.Priority, p.Section}
			if e.u.byName[p.Name][0] == e && !slices.Equal(got, want) {
				t.Fatalf("entry values %q, want %q", got, want)
			}
			back, err := deb822.NewReader(strings.NewReader(e.Stanza()), "stanza", deb822.Limits{}).Next()
			if err != nil {
				t.Fatalf("stanza %q does not read back: %v", e.Stanza(), err)
			}
			if e.u.byName[p.Name][0] == e && !slices.Equal(back.Fields, p.Para.Fields) {
				t.Fatalf("stanza fields %q, want %q", back.Fields, p.Para.Fields)
			}
		}
	})
}
