package deb822

import (
	"bufio"
	"fmt"
	"io"
	"strings"
)

// Writer writes paragraphs separated by one blank line, in the exact form
// that Reader reads back to the same Fields.
type Writer struct {
	bw  *bufio.Writer
	n   int
	err error
}

// NewWriter returns a Writer to w. Call Flush when done.
func NewWriter(w io.Writer) *Writer {
	return &Writer{bw: bufio.NewWriter(w)}
}

// Write writes p, preceded by a blank line unless it is the first. It checks
// the whole paragraph first and writes nothing when a field cannot be written
// so that it reads back unchanged: an empty paragraph, an invalid or repeated
// name, a first line with surrounding whitespace, or a continuation segment
// that is empty, all whitespace or ends in whitespace (wrapped ErrSyntax,
// ErrDuplicateField or ErrInvalidValue). An error from the underlying writer
// is sticky.
func (w *Writer) Write(p *Paragraph) error {
	if w.err != nil {
		return w.err
	}
	if err := checkParagraph(p); err != nil {
		return err
	}
	if w.n > 0 {
		w.bw.WriteByte('\n')
	}
	for _, f := range p.Fields {
		w.bw.WriteString(f.Name)
		w.bw.WriteByte(':')
		first, rest, more := strings.Cut(f.Value, "\n")
		if first != "" {
			w.bw.WriteByte(' ')
			w.bw.WriteString(first)
		}
		w.bw.WriteByte('\n')
		for more {
			var seg string
			seg, rest, more = strings.Cut(rest, "\n")
			w.bw.WriteByte(' ')
			w.bw.WriteString(seg)
			w.bw.WriteByte('\n')
		}
	}
	w.n++
	// bufio.Writer keeps its first error and returns it from every later
	// call, so checking once per paragraph is enough.
	if _, err := w.bw.Write(nil); err != nil {
		w.err = fmt.Errorf("write deb822 paragraph %d: %w", w.n, err)
		return w.err
	}
	return nil
}

// Flush writes buffered data to the underlying writer.
func (w *Writer) Flush() error {
	if w.err != nil {
		return w.err
	}
	if err := w.bw.Flush(); err != nil {
		w.err = fmt.Errorf("write deb822: %w", err)
	}
	return w.err
}

func checkParagraph(p *Paragraph) error {
	if len(p.Fields) == 0 {
		return fmt.Errorf("%w: paragraph has no fields", ErrInvalidValue)
	}
	for i, f := range p.Fields {
		if !validName([]byte(f.Name)) {
			return fmt.Errorf("%w: invalid field name %q", ErrSyntax, f.Name)
		}
		for _, g := range p.Fields[:i] {
			if strings.EqualFold(f.Name, g.Name) {
				return fmt.Errorf("%w %q", ErrDuplicateField, f.Name)
			}
		}
		first, rest, more := strings.Cut(f.Value, "\n")
		if first != "" && (isSpace(first[0]) || endsInSpace(first)) {
			return fmt.Errorf("%w: field %s: first line has leading or trailing whitespace", ErrInvalidValue, f.Name)
		}
		for n := 2; more; n++ {
			var seg string
			seg, rest, more = strings.Cut(rest, "\n")
			if seg == "" || endsInSpace(seg) {
				return fmt.Errorf("%w: field %s: line %d is empty or ends in whitespace (use \".\" for an empty line)", ErrInvalidValue, f.Name, n)
			}
		}
	}
	return nil
}

func endsInSpace(s string) bool {
	c := s[len(s)-1]
	return isSpace(c) || c == '\r'
}
