// Package filter produces the content of a filtered (re-signed) mirror
// from a verified upstream: it selects packages by name pattern, priority
// and section, closes the selection over Depends and Pre-Depends (and
// optionally Recommends) across every suite and component of the
// upstream, and writes Packages and Translation indexes holding exactly the
// chosen stanzas plus a Release signed with the appliance's own key.
//
// It trusts its input: the caller feeds it stanzas of Packages files whose
// size and hash it has already verified against a signed upstream Release,
// and every stanza it writes is one of those, written by deb822.Writer
// from the paragraph the reader returned (so every field and value is the
// upstream's; only comments and CRLF line ends are not kept). It does no
// network I/O and keeps no state between calls.
package filter

import (
	"bytes"
	"fmt"
	"strings"

	"gatehouse/apt"
	"gatehouse/apt/deb822"
	"gatehouse/apt/version"
)

// MaxLocations bounds the distinct (suite, component) pairs one Universe
// holds; a mirror of three suites with four components uses twelve.
const MaxLocations = 64

// Location is one suite and component of the upstream a stanza was listed in.
type Location struct {
	Suite, Component string
}

// Entry is one binary package (name, version, architecture and file) of
// the upstream. Its strings share one allocation per entry, so an Entry
// pins no buffer of the Packages file it came from.
type Entry struct {
	Name, Version, Architecture string
	// MultiArch, Priority and Section are the fields as written ("" when
	// absent).
	MultiArch, Priority, Section string
	// Filename is the pool path relative to the archive root, checked by
	// apt.CleanRepoPath.
	Filename string
	Size     int64
	// Hashes in lowercase hex; "" when the stanza has none.
	MD5Sum, SHA1, SHA256, SHA512 string
	// DescriptionMD5 is the Description-md5 field that keys the package's
	// long description in Translation files; "" when absent.
	DescriptionMD5 string

	depends, preDepends, recommends string
	ver                             version.Version
	// stanza is the package's paragraph as deb822.Writer writes it.
	stanza string
	// locs has bit i set when the stanza was listed at u.locs[i].
	locs uint64
	u    *Universe
}

// Hashes returns the entry's pool file as an apt.FileEntry, for fetching
// and verifying it.
func (e *Entry) Hashes() apt.FileEntry {
	return apt.FileEntry{Path: e.Filename, Size: e.Size, MD5Sum: e.MD5Sum, SHA1: e.SHA1, SHA256: e.SHA256, SHA512: e.SHA512}
}

// Stanza returns the entry's Packages paragraph as text, without the
// blank line that separates paragraphs.
func (e *Entry) Stanza() string { return e.stanza }

// Locations returns the suites and components whose Packages listed the
// entry, in the order they were first seen.
func (e *Entry) Locations() []Location {
	var out []Location
	for i, l := range e.u.locs {
		if e.locs&(1<<i) != 0 {
			out = append(out, l)
		}
	}
	return out
}

// In reports whether the entry was listed in suite's component.
func (e *Entry) In(suite, component string) bool {
	i, ok := e.u.locIndex[Location{suite, component}]
	return ok && e.locs&(1<<i) != 0
}

// String names the entry as "name version arch", for messages.
func (e *Entry) String() string { return e.Name + " " + e.Version + " " + e.Architecture }

// provider is one Provides item: entry provides name at version ("" when
// the item is unversioned).
type provider struct {
	e       *Entry
	version string
	ver     version.Version
}

// Universe holds every candidate package of an upstream, indexed by name
// and by the virtual names they provide. Build it with NewUniverse and Add;
// it is not safe for concurrent use while being built, and Resolve only
// reads it.
type Universe struct {
	byName   map[string][]*Entry
	all      []*Entry // in Add order
	provides map[string][]provider
	locs     []Location
	locIndex map[Location]int
	// intern shares the few distinct values of short fields (architecture,
	// priority, section, Multi-Arch) among all entries.
	intern map[string]string
	n      int
	// buf and w write one stanza at a time, reused across Add calls.
	buf bytes.Buffer
	w   *deb822.Writer
}

// NewUniverse returns an empty Universe. It costs about 1.4 KB per
// package, most of it the stanza text: bookworm main amd64 (63k packages,
// 50 MB of Packages) takes about 85 MiB of heap, 100,000 synthetic
// Debian-sized stanzas 1.3 KB each (BenchmarkUniverse100k). The caller
// bounds it: mirror refuses more than max_packages entries.
func NewUniverse() *Universe {
	u := &Universe{
		byName:   make(map[string][]*Entry),
		provides: make(map[string][]provider),
		locIndex: make(map[Location]int),
		intern:   make(map[string]string),
	}
	u.w = deb822.NewWriter(&u.buf)
	return u
}

// Len returns the number of distinct entries (a stanza listed in several
// Packages files counts once).
func (u *Universe) Len() int { return u.n }

// Add records a stanza streamed from suite's component Packages (one of
// binary-ARCH or binary-all). A stanza with the same name, version,
// architecture and SHA256 as one added before is the same package listed
// again (architecture "all" packages appear in every binary-ARCH index):
// only its location is added. A stanza with the same name, version and
// architecture but another file is a conflict the upstream should not have
// and is an error, as is a Version or Provides field that does not parse
// (Provides is indexed here). Depends, Pre-Depends and Recommends are
// parsed only when Resolve reaches the package, which reports one that does
// not parse as a Problem: a broken stanza nobody selects does not stop a
// mirror. Add keeps nothing of p and changes nothing when it returns an
// error, so a caller may log and skip the stanza.
func (u *Universe) Add(suite, component string, p *apt.Package) error {
	// where names the stanza in errors; built only when one is returned.
	where := func() string {
		w := fmt.Sprintf("package %s version %s (suite %q, component %q", clip(p.Name), clip(p.Version), suite, component)
		if p.Para != nil && p.Para.Line > 0 {
			w += fmt.Sprintf(", stanza at line %d", p.Para.Line)
		}
		return w + ")"
	}
	if suite == "" || component == "" {
		return fmt.Errorf("filter: adding %s: empty suite or component", where())
	}
	if p.Para == nil {
		return fmt.Errorf("filter: adding %s: package has no paragraph (use apt.PackagesReader)", where())
	}
	if p.Name == "" || p.Version == "" || p.Architecture == "" || p.Filename == "" {
		return fmt.Errorf("filter: adding %s: missing Package, Version, Architecture or Filename", where())
	}
	loc := Location{suite, component}
	li, ok := u.locIndex[loc]
	if !ok && len(u.locs) >= MaxLocations {
		return fmt.Errorf("filter: adding %s: more than %d suite/component pairs", where(), MaxLocations)
	}
	for _, old := range u.byName[p.Name] {
		if old.Version != p.Version || old.Architecture != p.Architecture {
			continue
		}
		if old.SHA256 != p.SHA256 || old.SHA512 != p.SHA512 || old.Size != p.Size {
			return fmt.Errorf("filter: adding %s: listed before with another file (%s, size %d); the upstream's indexes disagree",
				where(), old.Filename, old.Size)
		}
		if !ok {
			li = u.addLoc(loc)
		}
		old.locs |= 1 << li
		return nil
	}
	provs, err := version.ParseRelations(p.Provides)
	if err != nil {
		return fmt.Errorf("filter: adding %s: field Provides: %w", where(), err)
	}
	for _, g := range provs {
		if len(g) != 1 || (g[0].Op != version.OpAny && g[0].Op != version.OpEqual) {
			return fmt.Errorf("filter: adding %s: field Provides: %s is not \"name\" or \"name (= version)\"", where(), clip(g.String()))
		}
	}
	u.buf.Reset()
	if err := u.w.Write(p.Para); err != nil {
		return fmt.Errorf("filter: adding %s: cannot write its stanza back: %w", where(), err)
	}
	if err := u.w.Flush(); err != nil {
		return fmt.Errorf("filter: adding %s: %w", where(), err)
	}
	// The writer separates paragraphs with a blank line; one stanza alone
	// is wanted here.
	text := bytes.TrimSuffix(bytes.TrimPrefix(u.buf.Bytes(), []byte("\n")), []byte("\n"))

	// One allocation holds the stanza and every string the entry keeps:
	// values written on one line in the stanza are substrings of it, the
	// rest (values the reader normalised, such as lowercased hashes or a
	// Filename without "./") follow it.
	descMD5, _ := p.Para.Get("Description-md5")
	vals := [len(keptFields)]string{p.Name, p.Version, p.Filename, p.MD5Sum, p.SHA1, p.SHA256, p.SHA512,
		descMD5, p.Depends, p.PreDepends, p.Recommends}
	offs := singleLineValues(text)
	n := len(text)
	for i, v := range vals {
		if o := offs[i]; o.end == 0 || string(text[o.start:o.end]) != v {
			n += len(v)
		}
	}
	var b strings.Builder
	b.Grow(n)
	b.Write(text)
	for i, v := range vals {
		if o := offs[i]; o.end == 0 || string(text[o.start:o.end]) != v {
			offs[i] = span{b.Len(), b.Len() + len(v)}
			b.WriteString(v)
		}
	}
	all := b.String()
	for i, o := range offs {
		vals[i] = all[o.start:o.end]
	}
	e := &Entry{stanza: all[:len(text)], u: u}
	e.Name, e.Version, e.Filename = vals[0], vals[1], vals[2]
	e.MD5Sum, e.SHA1, e.SHA256, e.SHA512 = vals[3], vals[4], vals[5], vals[6]
	e.DescriptionMD5 = vals[7]
	e.depends, e.preDepends, e.recommends = vals[8], vals[9], vals[10]
	e.Size = p.Size
	e.Architecture = u.interned(p.Architecture)
	e.MultiArch = u.interned(p.MultiArch)
	e.Priority = u.interned(p.Priority)
	e.Section = u.interned(p.Section)
	if e.ver, err = version.Parse(e.Version); err != nil {
		return fmt.Errorf("filter: adding %s: field Version: %w", where(), err)
	}
	if !ok {
		li = u.addLoc(loc)
	}
	e.locs = 1 << li
	u.byName[e.Name] = append(u.byName[e.Name], e)
	u.all = append(u.all, e)
	for _, g := range provs {
		r := g[0]
		pv := provider{e: e}
		if r.Op == version.OpEqual {
			pv.version = strings.Clone(r.Version)
			pv.ver, _ = version.Parse(pv.version) // ParseRelations checked it
		}
		if old, ok := u.provides[r.Name]; ok {
			u.provides[r.Name] = append(old, pv) // keeps the existing key
		} else {
			u.provides[strings.Clone(r.Name)] = []provider{pv}
		}
	}
	u.n++
	return nil
}

// keptFields are the fields whose values an Entry keeps, in the order
// Add and singleLineValues use.
var keptFields = [...]string{"Package", "Version", "Filename", "MD5sum", "SHA1", "SHA256", "SHA512",
	"Description-md5", "Depends", "Pre-Depends", "Recommends"}

type span struct{ start, end int }

// singleLineValues finds the value of each keptFields field in stanza text
// as deb822.Writer writes it ("Name: value" lines); a field that is absent,
// empty or continued on further lines gets a zero span.
func singleLineValues(text []byte) (offs [len(keptFields)]span) {
	for pos := 0; pos < len(text); {
		end := bytes.IndexByte(text[pos:], '\n')
		if end < 0 {
			end = len(text)
		} else {
			end += pos
		}
		line := text[pos:end]
		next := end + 1
		continued := next < len(text) && (text[next] == ' ' || text[next] == '\t')
		if name, val, ok := bytes.Cut(line, []byte(": ")); ok && !continued && len(val) > 0 {
			for i, k := range keptFields {
				if len(k) == len(name) && strings.EqualFold(k, string(name)) {
					start := pos + len(name) + 2
					offs[i] = span{start, start + len(val)}
					break
				}
			}
		}
		pos = next
	}
	return offs
}

func (u *Universe) addLoc(l Location) int {
	l = Location{strings.Clone(l.Suite), strings.Clone(l.Component)}
	u.locIndex[l] = len(u.locs)
	u.locs = append(u.locs, l)
	return len(u.locs) - 1
}

// interned returns a copy of s shared by every caller asking for an equal
// string. Only short, low-cardinality fields go through it.
func (u *Universe) interned(s string) string {
	if s == "" {
		return ""
	}
	if v, ok := u.intern[s]; ok {
		return v
	}
	v := strings.Clone(s)
	u.intern[v] = v
	return v
}

// clip shortens hostile or huge values before they go into a message.
func clip(s string) string {
	const max = 80
	if len(s) > max {
		return fmt.Sprintf("%q...", s[:max])
	}
	return fmt.Sprintf("%q", s)
}
