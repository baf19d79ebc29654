package filter

import (
	"errors"
	"fmt"
	"maps"
	"path"
	"slices"
	"strings"

	"gatehouse/apt/version"
)

// Spec says which packages a filtered mirror carries.
type Spec struct {
	// Include and Exclude are patterns, each one of: a glob on the package
	// name ("openssh-server", "python3-*", "lib?ssl*" in path.Match
	// syntax), "priority:NAME" ("priority:required"), or "section:NAME",
	// which matches the Section field or its part after the last "/"
	// ("section:admin" matches "admin" and "contrib/admin").
	Include, Exclude []string
	// WithDependencies closes the selection over Depends and Pre-Depends.
	WithDependencies bool
	// WithRecommends also follows Recommends (only with WithDependencies).
	// Recommends nothing can satisfy are skipped, as apt skips them.
	WithRecommends bool
	// Architectures are the native architectures clients use ("amd64");
	// "all" is implied. Entries of other architectures are ignored.
	Architectures []string
}

// Problem is a relation the selection cannot satisfy, or an Include name
// that names nothing.
type Problem struct {
	// Package is the entry ("name version arch") whose relation is unmet;
	// "" for an Include pattern.
	Package string
	// Relation is the unmet item: "Depends: a (>= 1) | b" or
	// "Include: name".
	Relation string
	// Why says what exists instead, per alternative.
	Why string
	// Chain leads from the selected root to Package, each "name version
	// arch"; nil for an Include pattern.
	Chain []string
}

// String formats p on one line for logs and reports.
func (p Problem) String() string {
	if p.Package == "" {
		return fmt.Sprintf("%s: %s", p.Relation, p.Why)
	}
	if len(p.Chain) <= 1 {
		return fmt.Sprintf("%s: %s: %s (selected by the include patterns)", p.Package, p.Relation, p.Why)
	}
	return fmt.Sprintf("%s: %s: %s (pulled in by %s)", p.Package, p.Relation, p.Why, strings.Join(p.Chain[:len(p.Chain)-1], " -> "))
}

// Result is a resolved selection.
type Result struct {
	// Selected is sorted by name, then architecture, then version
	// (oldest first).
	Selected []*Entry
	// Unsatisfied lists unmet Depends and Pre-Depends and Include names
	// that match nothing, sorted. The entries whose relations are unmet are
	// still in Selected: a caller publishing such a set publishes packages
	// apt refuses to install, so by default it should refuse to publish.
	Unsatisfied []Problem
	// Unmatched lists the Include patterns that matched no entry. A glob,
	// priority or section pattern may legitimately match nothing in a small
	// repository, so these are reported here and not as Problems; a plain
	// name that matches nothing (not even as a virtual package) is a
	// Problem.
	Unmatched []string
}

// Resolve selects packages of u by spec:
//
//  1. Roots: for every name and architecture (a native one or "all"), the
//     newest entry (by dpkg version order) that matches an Include pattern
//     and no Exclude pattern. Older versions are not roots: a filtered
//     mirror carries the current version of what it was asked for. An
//     Include pattern that is a plain name and names no entry is resolved
//     as a dependency on that name, so a virtual package pulls in a
//     provider.
//  2. Closure (WithDependencies): for every selected entry and every
//     architecture it is installable on (its own, or each native one for
//     "all"), each Pre-Depends and Depends group (and Recommends with
//     WithRecommends) is evaluated: alternatives whose [arch] restriction
//     excludes that architecture are dropped; a group already satisfied by
//     a selected entry needs nothing; otherwise the first alternative that
//     any entry satisfies is taken, as apt takes the first alternative,
//     using the newest version of the named package that meets the
//     version constraint, else a provider. A versioned relation is
//     satisfied through Provides only by a versioned provide ("foo (=
//     1.2)") that meets it; among providers the first by name wins.
//
// Suites: the Universe spans every suite and component added, and so does
// resolution: a root's newest version may come from an update suite while
// its dependencies come from the base suite, and an older version that is
// not needed is not carried. Each entry is published in the suites and
// components that listed it (see WriteIndexes), so clients must list every
// suite of the filtered mirror, as they list base and security suites of
// the upstream.
//
// Architecture rules: a relation without qualifier (or ":native") is
// satisfied by an entry of the depending architecture or "all", and
// without qualifier also by a Multi-Arch: foreign entry of another native
// architecture; ":any" is satisfied only by a Multi-Arch: allowed entry of
// a native architecture or "all"; ":ARCH" by that architecture or "all".
// Excluded entries never satisfy anything, so excluding a needed package
// yields a Problem. Conflicts and Breaks are not considered: clients
// resolve them at install time from what the mirror offers.
//
// The error is for a bad Spec only; unmet relations are in
// Result.Unsatisfied.
func Resolve(u *Universe, spec Spec) (*Result, error) {
	r := &resolver{u: u, spec: spec, selected: make(map[*Entry]*Entry), seenProblem: make(map[string]bool)}
	for _, a := range spec.Architectures {
		if a == "" || strings.ContainsAny(a, " \t\n/") {
			return nil, fmt.Errorf("filter: architecture %q is not a valid name", a)
		}
		if a != "all" && !slices.Contains(r.natives, a) {
			r.natives = append(r.natives, a)
		}
	}
	if len(r.natives) == 0 {
		return nil, errors.New("filter: the spec names no native architecture (add one such as \"amd64\")")
	}
	var err error
	if r.incl, err = parsePatterns("include", spec.Include); err != nil {
		return nil, err
	}
	if r.excl, err = parsePatterns("exclude", spec.Exclude); err != nil {
		return nil, err
	}
	res := &Result{}
	r.roots(res)
	if spec.WithDependencies {
		for i := 0; i < len(r.queue); i++ {
			r.close(r.queue[i])
		}
	}
	res.Selected = make([]*Entry, 0, len(r.selected))
	for e := range r.selected {
		res.Selected = append(res.Selected, e)
	}
	slices.SortFunc(res.Selected, compareEntries)
	res.Unsatisfied = r.problems
	slices.SortFunc(res.Unsatisfied, func(a, b Problem) int {
		if c := strings.Compare(a.Package, b.Package); c != 0 {
			return c
		}
		return strings.Compare(a.Relation, b.Relation)
	})
	return res, nil
}

// Detach makes r independent of the Universe it was resolved from, so
// that the Universe (about 85 MiB for bookworm main) can be garbage
// collected while r is written out: the selected entries keep only the
// Universe's list of locations. After Detach the Universe must not be
// used again.
func (r *Result) Detach() {
	var from *Universe
	for _, e := range r.Selected {
		if e.u != from && from != nil {
			panic("filter: Detach of a Result from several Universes")
		}
		from = e.u
	}
	if from == nil {
		return
	}
	small := &Universe{locs: slices.Clone(from.locs), locIndex: maps.Clone(from.locIndex)}
	for _, e := range r.Selected {
		e.u = small
	}
}

func compareEntries(a, b *Entry) int {
	if c := strings.Compare(a.Name, b.Name); c != 0 {
		return c
	}
	if c := strings.Compare(a.Architecture, b.Architecture); c != 0 {
		return c
	}
	return version.Compare(a.ver, b.ver)
}

type patternKind int

const (
	patName patternKind = iota
	patPriority
	patSection
)

type pattern struct {
	kind patternKind
	v    string
	// literal is true for a name pattern without glob metacharacters.
	literal bool
	text    string
}

func parsePatterns(what string, ps []string) ([]pattern, error) {
	var out []pattern
	for _, p := range ps {
		pt := pattern{text: p}
		switch {
		case strings.HasPrefix(p, "priority:"):
			pt.kind, pt.v = patPriority, strings.TrimPrefix(p, "priority:")
		case strings.HasPrefix(p, "section:"):
			pt.kind, pt.v = patSection, strings.TrimPrefix(p, "section:")
		case strings.Contains(p, ":"):
			return nil, fmt.Errorf("filter: %s pattern %q: unknown prefix (use a name glob, \"priority:NAME\" or \"section:NAME\")", what, p)
		default:
			if _, err := path.Match(p, ""); err != nil {
				return nil, fmt.Errorf("filter: %s pattern %q: %w", what, p, err)
			}
			pt.kind, pt.v, pt.literal = patName, p, !strings.ContainsAny(p, `*?[\`)
		}
		if pt.v == "" || strings.ContainsAny(pt.v, " \t\n") {
			return nil, fmt.Errorf("filter: %s pattern %q: empty or contains whitespace", what, p)
		}
		out = append(out, pt)
	}
	return out, nil
}

func (p pattern) match(e *Entry) bool {
	switch p.kind {
	case patPriority:
		return e.Priority == p.v
	case patSection:
		s := e.Section
		return s == p.v || s[strings.LastIndexByte(s, '/')+1:] == p.v
	}
	if p.literal {
		return e.Name == p.v
	}
	ok, _ := path.Match(p.v, e.Name) // checked in parsePatterns
	return ok
}

type resolver struct {
	u          *Universe
	spec       Spec
	natives    []string
	incl, excl []pattern
	// selected maps each selected entry to the entry that pulled it in
	// (nil for roots).
	selected    map[*Entry]*Entry
	queue       []*Entry
	problems    []Problem
	seenProblem map[string]bool
}

func (r *resolver) excluded(e *Entry) bool {
	for _, p := range r.excl {
		if p.match(e) {
			return true
		}
	}
	return false
}

// native reports whether e's architecture is one the mirror serves.
func (r *resolver) native(e *Entry) bool {
	return e.Architecture == "all" || slices.Contains(r.natives, e.Architecture)
}

func (r *resolver) sel(e, parent *Entry) {
	if _, ok := r.selected[e]; ok {
		return
	}
	r.selected[e] = parent
	r.queue = append(r.queue, e)
}

func (r *resolver) roots(res *Result) {
	matched := make([]bool, len(r.incl))
	// The newest matching, non-excluded entry per name and architecture.
	type key struct{ name, arch string }
	best := map[key]*Entry{}
	for _, e := range r.u.all {
		if !r.native(e) {
			continue
		}
		hit := false
		for i, p := range r.incl {
			if p.match(e) {
				hit, matched[i] = true, true
			}
		}
		if !hit || r.excluded(e) {
			continue
		}
		k := key{e.Name, e.Architecture}
		if b := best[k]; b == nil || version.Compare(e.ver, b.ver) > 0 {
			best[k] = e
		}
	}
	// Roots enter the queue sorted, so the result does not depend on the
	// order of Add calls or of map iteration.
	roots := make([]*Entry, 0, len(best))
	for _, e := range best {
		roots = append(roots, e)
	}
	slices.SortFunc(roots, compareEntries)
	for _, e := range roots {
		r.sel(e, nil)
	}
	for i, p := range r.incl {
		if matched[i] {
			continue
		}
		if !p.literal {
			res.Unmatched = append(res.Unmatched, p.text)
			continue
		}
		// A plain name may be virtual: take a provider, as apt-get install
		// does when exactly one exists.
		found := false
		for _, a := range r.natives {
			if c := r.candidates(version.Relation{Name: p.v}, a); len(c) > 0 {
				r.sel(c[0], nil)
				found = true
			}
		}
		if !found {
			r.problem(Problem{Relation: "Include: " + p.text, Why: r.explain(version.Relation{Name: p.v}, r.natives[0])})
		}
	}
}

// close evaluates e's relations on every architecture it installs on.
func (r *resolver) close(e *Entry) {
	archs := []string{e.Architecture}
	if e.Architecture == "all" {
		archs = r.natives
	}
	// hard relations are reported when unmet; Recommends are not, as apt
	// installs without them.
	type field struct {
		name, v string
		hard    bool
	}
	fields := []field{{"Pre-Depends", e.preDepends, true}, {"Depends", e.depends, true}}
	if r.spec.WithRecommends {
		fields = append(fields, field{"Recommends", e.recommends, false})
	}
	for _, f := range fields {
		groups, err := version.ParseRelations(f.v)
		if err != nil {
			r.problem(Problem{Package: e.String(), Relation: f.name, Why: "the field does not parse: " + err.Error(), Chain: r.chain(e)})
			continue
		}
		for _, a := range archs {
			for _, g := range groups {
				r.group(e, a, f.name, g, f.hard)
			}
		}
	}
}

// group satisfies one alternatives group of e on architecture a.
func (r *resolver) group(e *Entry, a, field string, g version.Alternatives, hard bool) {
	var alts version.Alternatives
	for _, rel := range g {
		if rel.AppliesToArch(a) {
			alts = append(alts, rel)
		}
	}
	if len(alts) == 0 {
		return // every alternative is for other architectures
	}
	cands := make([][]*Entry, len(alts))
	for i, rel := range alts {
		cands[i] = r.candidates(rel, a)
		for _, c := range cands[i] {
			if _, ok := r.selected[c]; ok {
				return
			}
		}
	}
	for _, c := range cands {
		if len(c) > 0 {
			r.sel(c[0], e)
			return
		}
	}
	if !hard {
		return
	}
	whys := make([]string, len(alts))
	for i, rel := range alts {
		whys[i] = r.explain(rel, a)
	}
	r.problem(Problem{Package: e.String(), Relation: field + ": " + g.String(), Why: strings.Join(whys, "; "), Chain: r.chain(e)})
}

func (r *resolver) problem(p Problem) {
	k := p.Package + "\x00" + p.Relation
	if r.seenProblem[k] {
		return
	}
	r.seenProblem[k] = true
	r.problems = append(r.problems, p)
}

// chain lists the entries from the root that pulled e in down to e.
func (r *resolver) chain(e *Entry) []string {
	var c []string
	for x := e; x != nil; x = r.selected[x] {
		c = append(c, x.String())
	}
	slices.Reverse(c)
	return c
}

// archOK reports whether e may satisfy a relation with qualifier qual
// from a package installed on architecture a.
func (r *resolver) archOK(e *Entry, qual, a string) bool {
	if !r.native(e) {
		return false
	}
	switch qual {
	case "":
		return e.Architecture == a || e.Architecture == "all" || e.MultiArch == "foreign"
	case "native":
		return e.Architecture == a || e.Architecture == "all"
	case "any":
		return e.MultiArch == "allowed"
	default:
		return e.Architecture == qual || e.Architecture == "all"
	}
}

// candidates returns the entries that satisfy rel on architecture a, best
// first: real packages named rel.Name, newest first (the depending
// architecture before others on equal versions), then providers by name,
// newest first.
func (r *resolver) candidates(rel version.Relation, a string) []*Entry {
	var real []*Entry
	for _, e := range r.u.byName[rel.Name] {
		if r.archOK(e, rel.ArchQual, a) && rel.SatisfiedBy(e.ver) && !r.excluded(e) {
			real = append(real, e)
		}
	}
	slices.SortStableFunc(real, func(x, y *Entry) int {
		if c := version.Compare(y.ver, x.ver); c != 0 {
			return c
		}
		return archRank(x, a) - archRank(y, a)
	})
	var provs []*Entry
	for _, pv := range r.u.provides[rel.Name] {
		if r.archOK(pv.e, rel.ArchQual, a) && r.provideOK(rel, pv) && !r.excluded(pv.e) {
			provs = append(provs, pv.e)
		}
	}
	slices.SortStableFunc(provs, func(x, y *Entry) int {
		if c := strings.Compare(x.Name, y.Name); c != 0 {
			return c
		}
		return version.Compare(y.ver, x.ver)
	})
	return append(real, provs...)
}

// provideOK reports whether a Provides item meets rel's version: an
// unversioned relation takes any provide, a versioned one only a
// versioned provide that satisfies it (dpkg's rule).
func (r *resolver) provideOK(rel version.Relation, pv provider) bool {
	if rel.Op == version.OpAny {
		return true
	}
	return pv.version != "" && rel.SatisfiedBy(pv.ver)
}

// explain says why candidates(rel, a) is empty, for a Problem.
func (r *resolver) explain(rel version.Relation, a string) string {
	var reasons, wrongVer []string
	as := rel.Name + qualSuffix(rel.ArchQual)
	for _, e := range r.u.byName[rel.Name] {
		switch {
		case !r.archOK(e, rel.ArchQual, a):
			reasons = append(reasons, fmt.Sprintf("%s is not installable as %s on %s", e, as, a))
		case !rel.SatisfiedBy(e.ver):
			wrongVer = append(wrongVer, e.Version)
		case r.excluded(e):
			reasons = append(reasons, fmt.Sprintf("%s is excluded", e))
		}
	}
	for _, pv := range r.u.provides[rel.Name] {
		e := pv.e
		switch {
		case !r.archOK(e, rel.ArchQual, a):
			reasons = append(reasons, fmt.Sprintf("provider %s is not installable as %s on %s", e, as, a))
		case !r.provideOK(rel, pv) && pv.version == "":
			reasons = append(reasons, fmt.Sprintf("provider %s provides %s without a version", e, rel.Name))
		case !r.provideOK(rel, pv):
			reasons = append(reasons, fmt.Sprintf("provider %s provides %s (= %s)", e, rel.Name, pv.version))
		case r.excluded(e):
			reasons = append(reasons, fmt.Sprintf("provider %s is excluded", e))
		}
	}
	if len(wrongVer) > 0 {
		slices.SortFunc(wrongVer, func(x, y string) int { c, _ := version.CompareStrings(x, y); return c })
		wrongVer = slices.Compact(wrongVer)
		reasons = append([]string{fmt.Sprintf("%s has only version %s", rel.Name, strings.Join(wrongVer, ", "))}, reasons...)
	}
	if len(reasons) == 0 {
		return fmt.Sprintf("no package is named or provides %s", rel.Name)
	}
	const maxReasons = 4
	if len(reasons) > maxReasons {
		reasons = append(reasons[:maxReasons], fmt.Sprintf("and %d more", len(reasons)-maxReasons))
	}
	return fmt.Sprintf("%s: %s", rel.String(), strings.Join(reasons, ", "))
}

func qualSuffix(q string) string {
	if q == "" {
		return ""
	}
	return ":" + q
}

// archRank orders entries of equal version: the depending architecture,
// then "all", then others.
func archRank(e *Entry, a string) int {
	switch e.Architecture {
	case a:
		return 0
	case "all":
		return 1
	}
	return 2
}
