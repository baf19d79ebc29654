package version

import (
	"fmt"
	"strings"
)

// Op is a relation operator as written in a dependency field.
type Op string

// The relation operators. The legacy "<" and ">" are read as OpLessEqual and
// OpGreaterEqual, which is what dpkg does with them.
const (
	OpAny          Op = ""
	OpLess         Op = "<<"
	OpLessEqual    Op = "<="
	OpEqual        Op = "="
	OpGreaterEqual Op = ">="
	OpGreater      Op = ">>"
)

// Relation is one package relation such as
// "foo:any (>= 1.2) [amd64 !i386] <!nocheck>".
type Relation struct {
	// Name is the package name.
	Name string
	// ArchQual is the qualifier after ':' ("any", "native", an architecture)
	// or "" when there is none.
	ArchQual string
	// Op is the operator; OpAny (empty) when the relation has no version.
	Op Op
	// Version is the version string as written; "" when Op is OpAny. It is
	// always valid for Parse when it came from ParseRelations.
	Version string
	// Archs is the architecture restriction list as written, entries
	// prefixed with '!' when negated; nil when there is none.
	Archs []string
	// Profiles is the build-profile formula: any one group (outer slice) whose
	// terms (inner slice, "!name" for negation) all hold makes it true. Nil
	// when there is none.
	Profiles [][]string
}

// Alternatives is a list of relations of which any one satisfies the
// dependency ("a | b").
type Alternatives []Relation

// SatisfiedBy reports whether v meets the relation's version constraint with
// dpkg's ordering. It ignores Name, ArchQual, Archs and Profiles. A relation
// without an operator is satisfied by every version; a relation whose Version
// does not parse is satisfied by none.
func (r Relation) SatisfiedBy(v Version) bool {
	if r.Op == OpAny {
		return true
	}
	want, err := Parse(r.Version)
	if err != nil {
		return false
	}
	c := Compare(v, want)
	switch r.Op {
	case OpLess:
		return c < 0
	case OpLessEqual:
		return c <= 0
	case OpEqual:
		return c == 0
	case OpGreaterEqual:
		return c >= 0
	case OpGreater:
		return c > 0
	}
	return false
}

// AppliesToArch reports whether the relation is in force when building for
// the concrete architecture arch, following Dpkg::Arch::debarch_is_concerned:
// no list means every architecture; a matching positive entry selects it; a
// matching "!" entry excludes it; a list of only "!" entries selects every
// architecture none of them matches. Entries may be dpkg wildcards such as
// "linux-any" or "any-amd64" (see ArchMatches).
func (r Relation) AppliesToArch(arch string) bool {
	if len(r.Archs) == 0 {
		return true
	}
	return archIsConcerned(arch, r.Archs)
}

// AppliesToProfiles reports whether the relation is in force when building
// with the given active build profiles (e.g. "nocheck", "stage1"), following
// Dpkg::BuildProfiles::evaluate_restriction_formula: true when there is no
// formula, or when in some group every positive term is active and every "!"
// term is inactive.
func (r Relation) AppliesToProfiles(active []string) bool {
	if len(r.Profiles) == 0 {
		return true
	}
	for _, group := range r.Profiles {
		ok := true
		for _, term := range group {
			name, negated := strings.CutPrefix(term, "!")
			found := false
			for _, a := range active {
				if a == name {
					found = true
					break
				}
			}
			if found == negated {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

// String formats the relation in the canonical form Dpkg::Deps writes:
// "name:qual (op version) [archs] <profiles> <profiles>".
func (r Relation) String() string {
	var b strings.Builder
	b.WriteString(r.Name)
	if r.ArchQual != "" {
		b.WriteByte(':')
		b.WriteString(r.ArchQual)
	}
	if r.Op != OpAny {
		b.WriteString(" (")
		b.WriteString(string(r.Op))
		b.WriteByte(' ')
		b.WriteString(r.Version)
		b.WriteByte(')')
	}
	if len(r.Archs) > 0 {
		b.WriteString(" [")
		b.WriteString(strings.Join(r.Archs, " "))
		b.WriteByte(']')
	}
	for _, g := range r.Profiles {
		b.WriteString(" <")
		b.WriteString(strings.Join(g, " "))
		b.WriteByte('>')
	}
	return b.String()
}

// String joins the alternatives with " | ".
func (a Alternatives) String() string {
	parts := make([]string, len(a))
	for i, r := range a {
		parts[i] = r.String()
	}
	return strings.Join(parts, " | ")
}

// FormatRelations formats a whole field, joining the groups with ", ". The
// result parses back with ParseRelations to the same value.
func FormatRelations(rels []Alternatives) string {
	parts := make([]string, len(rels))
	for i, a := range rels {
		parts[i] = a.String()
	}
	return strings.Join(parts, ", ")
}

// ParseRelations parses a relation field such as
// "a (>= 1:2.0~rc1) | b:any, c [amd64] <!nocheck>" into its comma-separated
// groups of alternatives.
//
// Whitespace, including the newlines of a folded deb822 field, may appear
// between any two tokens. Like Dpkg::Deps, empty comma-separated items (for
// example a trailing comma) are skipped, and an all-blank field yields no
// relations and no error; an empty alternative ("a | | b") is an error.
// Package names follow Dpkg::Deps' build-dependency rule
// ([A-Za-z0-9][A-Za-z0-9+.-]*); architecture names and qualifiers are
// [A-Za-z0-9][A-Za-z0-9-]*; profile names use the package-name characters.
// Stricter than Dpkg::Deps: versions inside parentheses must be valid for
// Parse, and empty lists ("[]", "< >") are errors. Adjacent profile groups
// need no space between them ("<a><b>" is two groups, as apt reads it).
// Errors name the 1-based relation and alternative, the byte offset, and the
// item's text.
func ParseRelations(s string) ([]Alternatives, error) {
	p := relParser{s: s}
	var out []Alternatives
	item := 0
	for {
		p.skipSpace()
		if p.eof() {
			return out, nil
		}
		if p.peek() == ',' {
			p.i++
			continue
		}
		item++
		var alts Alternatives
		for {
			r, err := p.relation()
			if err != nil {
				return nil, p.wrap(item, len(alts)+1, err)
			}
			alts = append(alts, r)
			p.skipSpace()
			if !p.eof() && p.peek() == '|' {
				p.i++
				continue
			}
			break
		}
		out = append(out, alts)
		if p.eof() {
			return out, nil
		}
		if p.peek() != ',' {
			return nil, p.wrap(item, len(alts), fmt.Errorf("unexpected %q at byte %d; expected ',' or '|'", p.s[p.i:p.i+1], p.i))
		}
		p.i++
	}
}

type relParser struct {
	s string
	i int
	// start is where the current comma-separated item began, for messages.
	start int
}

func (p *relParser) eof() bool  { return p.i >= len(p.s) }
func (p *relParser) peek() byte { return p.s[p.i] }

func (p *relParser) skipSpace() {
	for p.i < len(p.s) && isSpace(p.s[p.i]) {
		p.i++
	}
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// wrap adds the relation and alternative numbers and the item's text to err.
func (p *relParser) wrap(item, alt int, err error) error {
	end := strings.IndexByte(p.s[p.start:], ',')
	if end < 0 {
		end = len(p.s)
	} else {
		end += p.start
	}
	text := strings.Join(strings.Fields(p.s[p.start:end]), " ")
	return fmt.Errorf("relation %d (%s), alternative %d: %w", item, quoteShort(text), alt, err)
}

// relation parses one "name[:qual] [(op ver)] [[archs]] [<profiles>...]".
func (p *relParser) relation() (Relation, error) {
	p.skipSpace()
	if p.alternativeStart() {
		p.start = p.i
	}
	var r Relation
	if p.eof() || p.peek() == '|' || p.peek() == ',' {
		return r, fmt.Errorf("missing package name at byte %d", p.i)
	}
	nameAt := p.i
	r.Name = p.token(isNameChar)
	if r.Name == "" || !isAlnum(r.Name[0]) {
		return r, fmt.Errorf("invalid package name start %q at byte %d; names start with a letter or digit", p.s[nameAt:nameAt+1], nameAt)
	}
	if !p.eof() && p.peek() == ':' {
		p.i++
		r.ArchQual = p.token(isArchChar)
		if r.ArchQual == "" || !isAlnum(r.ArchQual[0]) {
			return r, fmt.Errorf("invalid architecture qualifier after package %s at byte %d", quoteShort(r.Name), p.i)
		}
	}
	if !p.eof() && !isSpace(p.peek()) && !strings.ContainsRune("(,|[<", rune(p.peek())) {
		return r, fmt.Errorf("invalid character %q in package name or qualifier at byte %d (allowed: letters, digits, + . -)", p.s[p.i:p.i+1], p.i)
	}
	p.skipSpace()
	if !p.eof() && p.peek() == '(' {
		if err := p.versionPart(&r); err != nil {
			return r, err
		}
		p.skipSpace()
	}
	if !p.eof() && p.peek() == '[' {
		archs, err := p.list('[', ']', isArchChar, "architecture")
		if err != nil {
			return r, err
		}
		r.Archs = archs
		p.skipSpace()
	}
	for !p.eof() && p.peek() == '<' {
		g, err := p.list('<', '>', isNameChar, "build profile")
		if err != nil {
			return r, err
		}
		r.Profiles = append(r.Profiles, g)
		p.skipSpace()
	}
	return r, nil
}

// alternativeStart reports whether p.i begins a comma-separated item (so that
// error messages quote the whole item, not just one alternative).
func (p *relParser) alternativeStart() bool {
	j := p.i - 1
	for j >= 0 && isSpace(p.s[j]) {
		j--
	}
	return j < 0 || p.s[j] == ','
}

func (p *relParser) token(ok func(byte) bool) string {
	st := p.i
	for p.i < len(p.s) && ok(p.s[p.i]) {
		p.i++
	}
	return p.s[st:p.i]
}

func isNameChar(c byte) bool { return isAlnum(c) || c == '+' || c == '.' || c == '-' }
func isArchChar(c byte) bool { return isAlnum(c) || c == '-' }

// versionPart parses "(op version)" at p.i.
func (p *relParser) versionPart(r *Relation) error {
	open := p.i
	p.i++ // '('
	p.skipSpace()
	rest := p.s[p.i:]
	switch {
	case strings.HasPrefix(rest, "<<"):
		r.Op, p.i = OpLess, p.i+2
	case strings.HasPrefix(rest, "<="):
		r.Op, p.i = OpLessEqual, p.i+2
	case strings.HasPrefix(rest, ">="):
		r.Op, p.i = OpGreaterEqual, p.i+2
	case strings.HasPrefix(rest, ">>"):
		r.Op, p.i = OpGreater, p.i+2
	case strings.HasPrefix(rest, "="):
		r.Op, p.i = OpEqual, p.i+1
	case strings.HasPrefix(rest, "<"):
		r.Op, p.i = OpLessEqual, p.i+1
	case strings.HasPrefix(rest, ">"):
		r.Op, p.i = OpGreaterEqual, p.i+1
	default:
		return fmt.Errorf("missing or invalid operator after '(' at byte %d; use one of << <= = >= >>", p.i)
	}
	p.skipSpace()
	r.Version = p.token(func(c byte) bool { return !isSpace(c) && c != ')' && c != '(' && c != ',' && c != '|' })
	if r.Version == "" {
		return fmt.Errorf("missing version after %q at byte %d", r.Op, p.i)
	}
	if _, err := Parse(r.Version); err != nil {
		return fmt.Errorf("at byte %d: %w", p.i-len(r.Version), err)
	}
	p.skipSpace()
	if p.eof() || p.peek() != ')' {
		return fmt.Errorf("unterminated version constraint opened at byte %d; expected ')'", open)
	}
	p.i++
	return nil
}

// list parses a whitespace-separated list of optionally '!'-negated names
// between open and close (an architecture list or one build-profile group).
func (p *relParser) list(open, close byte, ok func(byte) bool, what string) ([]string, error) {
	at := p.i
	p.i++
	var out []string
	for {
		p.skipSpace()
		if p.eof() {
			return nil, fmt.Errorf("unterminated %s list opened at byte %d; expected %q", what, at, close)
		}
		if p.peek() == close {
			p.i++
			if len(out) == 0 {
				return nil, fmt.Errorf("empty %s list at byte %d", what, at)
			}
			return out, nil
		}
		st := p.i
		if p.peek() == '!' {
			p.i++
		}
		name := p.token(ok)
		if name == "" || !isAlnum(name[0]) {
			return nil, fmt.Errorf("invalid %s name at byte %d in list opened at byte %d", what, st, at)
		}
		if !p.eof() && !isSpace(p.peek()) && p.peek() != close {
			return nil, fmt.Errorf("invalid character %q in %s name at byte %d", p.s[p.i:p.i+1], what, p.i)
		}
		out = append(out, p.s[st:p.i])
	}
}
