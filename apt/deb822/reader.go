package deb822

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// Limits bound what a Reader accepts. A zero field selects its default.
type Limits struct {
	// MaxLineBytes is the longest accepted line, excluding its line ending.
	// Default 1 MiB.
	MaxLineBytes int
	// MaxParagraphBytes is the largest accepted paragraph, counted as the
	// bytes of its lines (comments excluded). Default 8 MiB, well above the
	// largest Release file of any Debian suite.
	MaxParagraphBytes int
	// MaxFields is the most fields accepted in one paragraph. Default 1000.
	MaxFields int
}

// Default limits; see Limits.
const (
	DefaultMaxLineBytes      = 1 << 20
	DefaultMaxParagraphBytes = 8 << 20
	DefaultMaxFields         = 1000
)

func (l Limits) withDefaults() Limits {
	if l.MaxLineBytes <= 0 {
		l.MaxLineBytes = DefaultMaxLineBytes
	}
	if l.MaxParagraphBytes <= 0 {
		l.MaxParagraphBytes = DefaultMaxParagraphBytes
	}
	if l.MaxFields <= 0 {
		l.MaxFields = DefaultMaxFields
	}
	return l
}

// fieldOff locates one field inside Reader.buf: name is buf[ns:vs], value is
// buf[vs:ve]. Storing offsets lets one string conversion per paragraph back
// every name and value.
type fieldOff struct{ ns, vs, ve int }

// Reader reads paragraphs one at a time. Memory use is bounded by the Limits
// plus the paragraphs the caller keeps. It is not safe for concurrent use.
type Reader struct {
	br    *bufio.Reader
	name  string
	lim   Limits
	line  int
	atEOF bool
	err   error // sticky: returned by every Next after the first failure

	long []byte // a line that did not fit in br's buffer
	buf  []byte // current paragraph: names and values back to back
	offs []fieldOff
}

// readerBufSize is the bufio buffer size; longer lines are assembled in
// Reader.long up to Limits.MaxLineBytes.
const readerBufSize = 64 << 10

// NewReader returns a Reader of r. name identifies the input (a file name or
// URL) in error messages. A zero Limits selects the defaults.
func NewReader(r io.Reader, name string, lim Limits) *Reader {
	return &Reader{
		br:   bufio.NewReaderSize(r, readerBufSize),
		name: name,
		lim:  lim.withDefaults(),
		buf:  make([]byte, 0, 4096),
		offs: make([]fieldOff, 0, 32),
	}
}

func (r *Reader) fail(line int, err error) error {
	r.err = &ParseError{Name: r.name, Line: line, Err: err}
	return r.err
}

// readLine returns the next line without its '\n'. The slice is valid until
// the next call. It returns io.EOF only when no bytes remain.
func (r *Reader) readLine() ([]byte, error) {
	if r.atEOF {
		return nil, io.EOF
	}
	b, err := r.br.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		r.long = append(r.long[:0], b...)
		for errors.Is(err, bufio.ErrBufferFull) {
			if len(r.long) > r.lim.MaxLineBytes+2 { // +2: room for "\r\n"
				return nil, r.fail(r.line+1, fmt.Errorf("%w: more than %d bytes", ErrLineTooLong, r.lim.MaxLineBytes))
			}
			b, err = r.br.ReadSlice('\n')
			r.long = append(r.long, b...)
		}
		b = r.long
	}
	switch {
	case err == nil:
		b = b[:len(b)-1]
	case err == io.EOF:
		r.atEOF = true
		if len(b) == 0 {
			return nil, io.EOF
		}
	default:
		r.err = fmt.Errorf("read %s after line %d: %w", r.name, r.line, err)
		return nil, r.err
	}
	if n := len(b); n > r.lim.MaxLineBytes && !(n == r.lim.MaxLineBytes+1 && b[n-1] == '\r') {
		return nil, r.fail(r.line+1, fmt.Errorf("%w: more than %d bytes", ErrLineTooLong, r.lim.MaxLineBytes))
	}
	return b, nil
}

// Next returns the next paragraph, or io.EOF after the last one. Any other
// error is final: it names the input and line (a *ParseError for malformed
// input) and every later call returns it again. A paragraph is never returned
// partially.
func (r *Reader) Next() (*Paragraph, error) {
	if r.err != nil {
		return nil, r.err
	}
	if cap(r.buf) > 1<<20 {
		// Release one unusually large paragraph's buffer instead of pinning it.
		r.buf = make([]byte, 0, 4096)
	}
	r.buf = r.buf[:0]
	r.offs = r.offs[:0]
	start, size := 0, 0
	for {
		line, err := r.readLine()
		if err != nil {
			if err == io.EOF {
				if len(r.offs) > 0 {
					return r.finish(start), nil
				}
				r.err = io.EOF
			}
			return nil, err
		}
		r.line++
		line = trimRight(line)
		if len(line) == 0 {
			if len(r.offs) > 0 {
				return r.finish(start), nil
			}
			continue
		}
		if line[0] == '#' {
			continue
		}
		size += len(line) + 1
		if size > r.lim.MaxParagraphBytes {
			return nil, r.fail(r.line, fmt.Errorf("%w: paragraph starting at line %d exceeds %d bytes", ErrParagraphTooLarge, start, r.lim.MaxParagraphBytes))
		}
		if isSpace(line[0]) {
			if len(r.offs) == 0 {
				return nil, r.fail(r.line, fmt.Errorf("%w: continuation line before any field", ErrSyntax))
			}
			r.buf = append(r.buf, '\n')
			r.buf = append(r.buf, line[1:]...)
			r.offs[len(r.offs)-1].ve = len(r.buf)
			continue
		}
		colon := bytes.IndexByte(line, ':')
		if colon < 0 {
			return nil, r.fail(r.line, fmt.Errorf("%w: expected \"Name: value\", got %q", ErrSyntax, clip(line)))
		}
		name := line[:colon]
		if !validName(name) {
			return nil, r.fail(r.line, fmt.Errorf("%w: invalid field name %q", ErrSyntax, clip(name)))
		}
		if len(r.offs) >= r.lim.MaxFields {
			return nil, r.fail(r.line, fmt.Errorf("%w: paragraph starting at line %d has more than %d", ErrTooManyFields, start, r.lim.MaxFields))
		}
		for _, o := range r.offs {
			if o.vs-o.ns == len(name) && bytes.EqualFold(r.buf[o.ns:o.vs], name) {
				return nil, r.fail(r.line, fmt.Errorf("%w %q", ErrDuplicateField, name))
			}
		}
		val := line[colon+1:]
		for len(val) > 0 && isSpace(val[0]) {
			val = val[1:]
		}
		if len(r.offs) == 0 {
			start = r.line
		}
		ns := len(r.buf)
		r.buf = append(r.buf, name...)
		vs := len(r.buf)
		r.buf = append(r.buf, val...)
		r.offs = append(r.offs, fieldOff{ns: ns, vs: vs, ve: len(r.buf)})
	}
}

// finish converts the accumulated paragraph with one string allocation.
func (r *Reader) finish(start int) *Paragraph {
	s := string(r.buf)
	fields := make([]Field, len(r.offs))
	for i, o := range r.offs {
		fields[i] = Field{Name: s[o.ns:o.vs], Value: s[o.vs:o.ve]}
	}
	return &Paragraph{Fields: fields, Line: start}
}

// clip shortens b for inclusion in an error message.
func clip(b []byte) []byte {
	const max = 64
	if len(b) > max {
		return b[:max]
	}
	return b
}
