package filter

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"gatehouse/apt"
	"gatehouse/apt/deb822"
	"gatehouse/apt/version"
)

// pkg is a handmade stanza for resolver tests.
type pkg struct {
	name, ver, arch         string
	ma, dep, pre, rec, prov string
	prio, sect              string
	suite, comp             string // default "s", "main"
}

func (p pkg) stanza() string {
	var b strings.Builder
	arch := p.arch
	if arch == "" {
		arch = "amd64"
	}
	fmt.Fprintf(&b, "Package: %s\nVersion: %s\nArchitecture: %s\n", p.name, p.ver, arch)
	for _, f := range []struct{ k, v string }{
		{"Multi-Arch", p.ma}, {"Pre-Depends", p.pre}, {"Depends", p.dep}, {"Recommends", p.rec},
		{"Provides", p.prov}, {"Priority", p.prio}, {"Section", p.sect},
	} {
		if f.v != "" {
			fmt.Fprintf(&b, "%s: %s\n", f.k, f.v)
		}
	}
	id := p.name + "_" + p.ver + "_" + arch
	sum := sha256.Sum256([]byte(id))
	fmt.Fprintf(&b, "Filename: pool/main/%s.deb\nSize: %d\nSHA256: %s\n", id, len(id), hex.EncodeToString(sum[:]))
	return b.String()
}

// universe builds a Universe from handmade packages, failing t on error.
func universe(t testing.TB, pkgs ...pkg) *Universe {
	t.Helper()
	u := NewUniverse()
	for _, p := range pkgs {
		if err := addText(u, p.suiteOr("s"), p.compOr("main"), p.stanza()); err != nil {
			t.Fatal(err)
		}
	}
	return u
}

func (p pkg) suiteOr(d string) string {
	if p.suite != "" {
		return p.suite
	}
	return d
}

func (p pkg) compOr(d string) string {
	if p.comp != "" {
		return p.comp
	}
	return d
}

// addText adds every stanza of Packages text to u.
func addText(u *Universe, suite, comp, text string) error {
	pr := apt.NewPackagesReader(strings.NewReader(text), "test")
	for {
		p, err := pr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := u.Add(suite, comp, p); err != nil {
			return err
		}
	}
}

// names returns "name=version:arch" of the selection, sorted.
func names(r *Result) []string {
	var out []string
	for _, e := range r.Selected {
		out = append(out, e.Name+"="+e.Version+":"+e.Architecture)
	}
	slices.Sort(out)
	return out
}

func resolve(t testing.TB, u *Universe, spec Spec) *Result {
	t.Helper()
	if spec.Architectures == nil {
		spec.Architectures = []string{"amd64"}
	}
	r, err := Resolve(u, spec)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func parseRel(s string) ([]version.Alternatives, error) { return version.ParseRelations(s) }

func relSatisfied(rel version.Relation, v string) bool {
	pv, err := version.Parse(v)
	return err == nil && rel.SatisfiedBy(pv)
}

// satisfies is the test's own reading of the documented rules: whether
// entry s meets a relation on name with qualifier qual from architecture
// a, directly or through its Provides; verOK checks a version.
func satisfies(s *Entry, name, qual, a string, natives []string, verOK func(string) bool) bool {
	archOK := func() bool {
		if s.Architecture != "all" && !slices.Contains(natives, s.Architecture) {
			return false
		}
		switch qual {
		case "":
			return s.Architecture == a || s.Architecture == "all" || s.MultiArch == "foreign"
		case "native":
			return s.Architecture == a || s.Architecture == "all"
		case "any":
			return s.MultiArch == "allowed"
		}
		return s.Architecture == qual || s.Architecture == "all"
	}
	if !archOK() {
		return false
	}
	if s.Name == name && verOK(s.Version) {
		return true
	}
	para, err := deb822.NewReader(strings.NewReader(s.Stanza()), "stanza", deb822.Limits{}).Next()
	if err != nil {
		panic(err)
	}
	provs, _ := version.ParseRelations(para.Value("Provides"))
	for _, g := range provs {
		p := g[0]
		if p.Name != name {
			continue
		}
		if p.Version == "" {
			// An unversioned provide meets only an unversioned relation:
			// verOK of a version nothing can have tells which.
			if verOK("0~~~~~~~") && verOK("99999999:9") {
				return true
			}
			continue
		}
		if verOK(p.Version) {
			return true
		}
	}
	return false
}

func mustRead(t testing.TB, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// osDir is a Dir at a plain directory, for these tests (a mirror's
// filtered sync uses mirror/store.SubDir).
type osDir string

func (d osDir) Create(rel string) (io.WriteCloser, error) {
	p := filepath.Join(string(d), filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return nil, err
	}
	return os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
}

func (d osDir) Link(target, rel string) error {
	dst := filepath.Join(string(d), filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	err := os.Link(filepath.Join(string(d), filepath.FromSlash(target)), dst)
	if errors.Is(err, os.ErrExist) {
		return nil
	}
	return err
}
