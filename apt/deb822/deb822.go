// Package deb822 reads and writes Debian control-format (deb822) paragraphs as
// a stream: field order kept, continuation lines preserved verbatim, and hard
// limits on line, paragraph and field-count size so hostile input cannot
// exhaust memory. It does not interpret field values and does not handle
// OpenPGP armor (apt/pgp strips that first).
//
// # Value representation
//
// A field's Value is its first-line text with surrounding spaces and tabs
// removed. Each continuation line is appended as "\n" followed by the line
// with its first whitespace character (space or tab) removed and trailing
// whitespace removed; nothing else is interpreted, so a Description line " ."
// becomes "." in Value. A field whose first line is empty, like Release's
// "SHA256:", has a Value that starts with "\n". The Writer reverses exactly
// this mapping, so everything the Reader returns is written back to text that
// reads as the same paragraphs.
//
// # Accepted syntax
//
// Paragraphs are separated by one or more lines that are empty or contain only
// spaces and tabs. Lines beginning with '#' are comments (as in apt's .sources
// files) and are dropped wherever they appear; '#' elsewhere is data. A CR
// before LF is tolerated, and the last line may lack its newline (so a file
// cut at a line boundary reads as complete: callers detect truncation by the
// size and hash a Release lists, which they check before parsing). A field name
// is one or more printable US-ASCII characters other than ':' and space, not
// beginning with '-' or '#'. Field names compare case-insensitively; a name
// repeated within one paragraph is an error.
package deb822

import (
	"errors"
	"fmt"
	"strings"
)

// Field is one field of a paragraph. See the package documentation for the
// exact form of Value.
type Field struct {
	Name  string
	Value string
}

// Paragraph is one deb822 paragraph with its fields in input order.
//
// Strings in a Paragraph returned by Reader.Next share one backing string per
// paragraph; a caller keeping a single value for a long time while dropping
// the paragraph should strings.Clone it so the rest can be collected.
type Paragraph struct {
	Fields []Field
	// Line is the 1-based line number of the paragraph's first field in the
	// input, or 0 for paragraphs built in memory.
	Line int
}

// Get returns the value of the field whose name matches name
// case-insensitively, and whether it exists.
func (p *Paragraph) Get(name string) (string, bool) {
	for i := range p.Fields {
		if len(p.Fields[i].Name) == len(name) && strings.EqualFold(p.Fields[i].Name, name) {
			return p.Fields[i].Value, true
		}
	}
	return "", false
}

// Value returns the value of the named field (case-insensitive), or "" when
// the field is absent.
func (p *Paragraph) Value(name string) string {
	v, _ := p.Get(name)
	return v
}

// Set replaces the value of the named field (case-insensitive, keeping its
// position and original spelling) or appends a new field at the end. It does
// not validate; Writer.Write rejects names and values it cannot write.
func (p *Paragraph) Set(name, value string) {
	for i := range p.Fields {
		if strings.EqualFold(p.Fields[i].Name, name) {
			p.Fields[i].Value = value
			return
		}
	}
	p.Fields = append(p.Fields, Field{Name: name, Value: value})
}

// Delete removes every field with the given name (case-insensitive).
func (p *Paragraph) Delete(name string) {
	out := p.Fields[:0]
	for _, f := range p.Fields {
		if !strings.EqualFold(f.Name, name) {
			out = append(out, f)
		}
	}
	clear(p.Fields[len(out):])
	p.Fields = out
}

// Errors reported by Reader and Writer, usable with errors.Is. Reader errors
// are wrapped in a *ParseError that names the input and line.
var (
	// ErrSyntax marks a line that is not a field, continuation, comment or
	// separator, or a bad field name.
	ErrSyntax = errors.New("syntax error")
	// ErrDuplicateField marks a field name repeated within one paragraph.
	ErrDuplicateField = errors.New("duplicate field")
	// ErrLineTooLong marks a line longer than Limits.MaxLineBytes.
	ErrLineTooLong = errors.New("line too long")
	// ErrParagraphTooLarge marks a paragraph larger than Limits.MaxParagraphBytes.
	ErrParagraphTooLarge = errors.New("paragraph too large")
	// ErrTooManyFields marks a paragraph with more than Limits.MaxFields fields.
	ErrTooManyFields = errors.New("too many fields")
	// ErrInvalidValue marks a Field that Writer cannot write so that it reads
	// back unchanged.
	ErrInvalidValue = errors.New("value cannot be written")
)

// ParseError reports where the input was found malformed.
type ParseError struct {
	Name string // input name given to NewReader
	Line int    // 1-based line number
	Err  error  // one of the Err* sentinels, wrapped with detail
}

// Error formats the error as "name:line: detail", like a compiler.
func (e *ParseError) Error() string {
	name := e.Name
	if name == "" {
		name = "<input>"
	}
	return fmt.Sprintf("%s:%d: %v", name, e.Line, e.Err)
}

// Unwrap returns the underlying error so errors.Is finds the sentinel.
func (e *ParseError) Unwrap() error { return e.Err }

// validName reports whether name is a valid field name.
func validName(name []byte) bool {
	if len(name) == 0 || name[0] == '-' || name[0] == '#' {
		return false
	}
	for _, c := range name {
		if c <= ' ' || c > '~' || c == ':' {
			return false
		}
	}
	return true
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' }

// trimRight removes trailing spaces, tabs and CRs.
func trimRight(b []byte) []byte {
	for len(b) > 0 && (isSpace(b[len(b)-1]) || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}
