package deb822

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func readAll(t testing.TB, in string, lim Limits) ([]*Paragraph, error) {
	t.Helper()
	r := NewReader(strings.NewReader(in), "test", lim)
	var ps []*Paragraph
	for {
		p, err := r.Next()
		if err == io.EOF {
			return ps, nil
		}
		if err != nil {
			return ps, err
		}
		ps = append(ps, p)
	}
}

func TestReader(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []*Paragraph
	}{
		{"empty", "", nil},
		{"only blank and comments", "\n \n#c\n\t\n", nil},
		{
			"two paragraphs, leading and multiple blank lines",
			"\n\nA: 1\nB:  two  \n\n\n\nC: 3\n",
			[]*Paragraph{
				{Fields: []Field{{"A", "1"}, {"B", "two"}}, Line: 3},
				{Fields: []Field{{"C", "3"}}, Line: 8},
			},
		},
		{
			"continuation and dot lines kept verbatim",
			"Description: short\n long line\n .\n   indented  \n\tTab\n",
			[]*Paragraph{{Fields: []Field{{"Description", "short\nlong line\n.\n  indented\nTab"}}, Line: 1}},
		},
		{
			"empty first line (Release file list)",
			"SHA256:\n abc 12 main/Packages\n def 3 Release\nDate: x\n",
			[]*Paragraph{{Fields: []Field{{"SHA256", "\nabc 12 main/Packages\ndef 3 Release"}, {"Date", "x"}}, Line: 1}},
		},
		{
			"CRLF and missing trailing newline",
			"A: 1\r\nB: 2\r\n x\r\n\r\nC: 3",
			[]*Paragraph{
				{Fields: []Field{{"A", "1"}, {"B", "2\nx"}}, Line: 1},
				{Fields: []Field{{"C", "3"}}, Line: 5},
			},
		},
		{
			"comments dropped anywhere at line start, kept elsewhere",
			"# head\nTypes: deb\n# inside\nURIs: http://example.org/debian # not a comment\nSuites: a\n# between continuation\n b\n",
			[]*Paragraph{{Fields: []Field{{"Types", "deb"}, {"URIs", "http://example.org/debian # not a comment"}, {"Suites", "a\nb"}}, Line: 2}},
		},
		{
			"whitespace-only line separates paragraphs",
			"A: 1\n \t \nB: 2\n",
			[]*Paragraph{{Fields: []Field{{"A", "1"}}, Line: 1}, {Fields: []Field{{"B", "2"}}, Line: 3}},
		},
		{
			"empty value and colon in value",
			"A:\nB: http://x:1/\n",
			[]*Paragraph{{Fields: []Field{{"A", ""}, {"B", "http://x:1/"}}, Line: 1}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := readAll(t, tc.in, Limits{})
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("paragraphs (-want +got):\n%s", diff)
			}
		})
	}
}

func TestReaderErrors(t *testing.T) {
	tests := []struct {
		name  string
		in    string
		lim   Limits
		is    error
		line  int
		valid int // paragraphs returned before the error
	}{
		{"continuation first", " x\nA: 1\n", Limits{}, ErrSyntax, 1, 0},
		{"continuation after comment at start", "# c\n x\n", Limits{}, ErrSyntax, 2, 0},
		{"no colon", "A: 1\nnot a field\n", Limits{}, ErrSyntax, 2, 0},
		{"space in name", "A B: 1\n", Limits{}, ErrSyntax, 1, 0},
		{"name starts with dash", "-A: 1\n", Limits{}, ErrSyntax, 1, 0},
		{"empty name", ": 1\n", Limits{}, ErrSyntax, 1, 0},
		{"non-ascii name", "Ä: 1\n", Limits{}, ErrSyntax, 1, 0},
		{"duplicate field", "A: 1\n\nPackage: x\npackage: y\n", Limits{}, ErrDuplicateField, 4, 1},
		{"line too long", "A: 1\n\nB: " + strings.Repeat("x", 100) + "\n", Limits{MaxLineBytes: 50}, ErrLineTooLong, 3, 1},
		{"line too long beyond bufio buffer", "B: " + strings.Repeat("x", 200<<10) + "\n", Limits{MaxLineBytes: 100 << 10}, ErrLineTooLong, 1, 0},
		{"paragraph too large", "A: 1\n\nB: 12345\nC: 12345\nD: 12345\n", Limits{MaxParagraphBytes: 20}, ErrParagraphTooLarge, 5, 1},
		{"too many fields", "A: 1\nB: 2\nC: 3\n", Limits{MaxFields: 2}, ErrTooManyFields, 3, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := readAll(t, tc.in, tc.lim)
			if !errors.Is(err, tc.is) {
				t.Fatalf("err = %v, want %v", err, tc.is)
			}
			var pe *ParseError
			if !errors.As(err, &pe) || pe.Line != tc.line || pe.Name != "test" {
				t.Fatalf("err = %#v, want ParseError at test:%d", err, tc.line)
			}
			if !strings.HasPrefix(err.Error(), "test:") {
				t.Errorf("message %q does not start with the input name", err)
			}
			if len(got) != tc.valid {
				t.Errorf("%d paragraphs before error, want %d", len(got), tc.valid)
			}
		})
	}
}

func TestReaderLongLineWithinLimit(t *testing.T) {
	long := strings.Repeat("y", 300<<10)
	got, err := readAll(t, "A: "+long+"\r\nB: 2\n", Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Value("A") != long || got[0].Value("b") != "2" {
		t.Fatalf("long line not read back intact")
	}
	// Exactly at the limit, with and without CR.
	for _, in := range []string{"A: 12345678\n", "A: 12345678\r\n", "A: 12345678"} {
		if _, err := readAll(t, in, Limits{MaxLineBytes: 11}); err != nil {
			t.Errorf("%q at limit: %v", in, err)
		}
	}
}

func TestReaderStickyError(t *testing.T) {
	r := NewReader(strings.NewReader("bad\nA: 1\n"), "f", Limits{})
	_, err1 := r.Next()
	_, err2 := r.Next()
	if err1 == nil || err1 != err2 {
		t.Fatalf("errors %v, %v: want the same error twice", err1, err2)
	}
	r = NewReader(strings.NewReader("A: 1"), "f", Limits{})
	if _, err := r.Next(); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := r.Next(); err != io.EOF {
			t.Fatalf("after last paragraph: %v, want io.EOF", err)
		}
	}
}

type failingReader struct{ data string }

func (f *failingReader) Read(p []byte) (int, error) {
	if f.data == "" {
		return 0, errors.New("disk on fire")
	}
	n := copy(p, f.data)
	f.data = f.data[n:]
	return n, nil
}

func TestReaderPropagatesReadError(t *testing.T) {
	got, err := readAll(t, "", Limits{}) // sanity
	if err != nil || got != nil {
		t.Fatal(err)
	}
	r := NewReader(&failingReader{data: "A: 1\nB: 2\n"}, "f", Limits{})
	p, err := r.Next()
	if err == nil || !strings.Contains(err.Error(), "disk on fire") || !strings.Contains(err.Error(), "f") {
		t.Fatalf("got %v, %v: want the read error, never a partial paragraph", p, err)
	}
}

func TestParagraphAccessors(t *testing.T) {
	p := &Paragraph{Fields: []Field{{"Package", "a"}, {"Version", "1"}, {"MD5sum", "x"}}}
	if v, ok := p.Get("md5SUM"); !ok || v != "x" {
		t.Errorf("Get case-insensitive: %q %v", v, ok)
	}
	if _, ok := p.Get("Md5"); ok {
		t.Errorf("Get matched a prefix")
	}
	if p.Value("missing") != "" {
		t.Errorf("Value of missing field not empty")
	}
	p.Set("version", "2")
	p.Set("Size", "10")
	p.Delete("PACKAGE")
	want := []Field{{"Version", "2"}, {"MD5sum", "x"}, {"Size", "10"}}
	if diff := cmp.Diff(want, p.Fields); diff != "" {
		t.Errorf("fields after Set/Delete (-want +got):\n%s", diff)
	}
}

func TestWriter(t *testing.T) {
	var b bytes.Buffer
	w := NewWriter(&b)
	ps := []*Paragraph{
		{Fields: []Field{{"Origin", "Example"}, {"SHA256", "\nabc 1 main/Packages\ndef 2 Release"}, {"Empty", ""}}},
		{Fields: []Field{{"Description", "short\nlong\n.\n  indented"}}},
	}
	for _, p := range ps {
		if err := w.Write(p); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	want := "Origin: Example\nSHA256:\n abc 1 main/Packages\n def 2 Release\nEmpty:\n\nDescription: short\n long\n .\n   indented\n"
	if b.String() != want {
		t.Fatalf("wrote %q\nwant  %q", b.String(), want)
	}
}

func TestWriterRejects(t *testing.T) {
	tests := []struct {
		name string
		p    Paragraph
		is   error
	}{
		{"no fields", Paragraph{}, ErrInvalidValue},
		{"bad name", Paragraph{Fields: []Field{{"A B", "1"}}}, ErrSyntax},
		{"comment name", Paragraph{Fields: []Field{{"#A", "1"}}}, ErrSyntax},
		{"duplicate", Paragraph{Fields: []Field{{"A", "1"}, {"a", "2"}}}, ErrDuplicateField},
		{"leading space", Paragraph{Fields: []Field{{"A", " 1"}}}, ErrInvalidValue},
		{"trailing CR", Paragraph{Fields: []Field{{"A", "1\r"}}}, ErrInvalidValue},
		{"empty continuation", Paragraph{Fields: []Field{{"A", "1\n\n2"}}}, ErrInvalidValue},
		{"blank continuation", Paragraph{Fields: []Field{{"A", "1\n \t"}}}, ErrInvalidValue},
		{"trailing newline", Paragraph{Fields: []Field{{"A", "1\n"}}}, ErrInvalidValue},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			w := NewWriter(&b)
			if err := w.Write(&tc.p); !errors.Is(err, tc.is) {
				t.Fatalf("err = %v, want %v", err, tc.is)
			}
			w.Flush()
			if b.Len() != 0 {
				t.Errorf("rejected paragraph partly written: %q", b.String())
			}
		})
	}
}

// roundTrip checks the package's central promise: what the Reader accepts,
// the Writer writes, and reading that gives the same paragraphs.
func roundTrip(t *testing.T, in []byte) {
	r := NewReader(bytes.NewReader(in), "fuzz", Limits{MaxLineBytes: 4096, MaxParagraphBytes: 1 << 16, MaxFields: 64})
	var ps []*Paragraph
	for {
		p, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) || pe.Line < 1 {
				t.Fatalf("error without line: %v", err)
			}
			return
		}
		if p.Line < 1 {
			t.Fatalf("paragraph without line number")
		}
		ps = append(ps, p)
	}
	var b bytes.Buffer
	w := NewWriter(&b)
	for _, p := range ps {
		if err := w.Write(p); err != nil {
			t.Fatalf("writing a paragraph the reader accepted: %v\nparagraph: %q", err, p.Fields)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	r2 := NewReader(&b, "again", Limits{})
	for i, want := range ps {
		got, err := r2.Next()
		if err != nil {
			t.Fatalf("re-reading paragraph %d: %v", i, err)
		}
		if diff := cmp.Diff(want.Fields, got.Fields); diff != "" {
			t.Fatalf("paragraph %d changed by write+read (-want +got):\n%s", i, diff)
		}
	}
	if p, err := r2.Next(); err != io.EOF {
		t.Fatalf("extra output after round trip: %v %v", p, err)
	}
}

func FuzzReader(f *testing.F) {
	for _, s := range []string{
		"",
		"A: 1\n",
		"Package: a\nDescription: x\n y\n .\n z\n\nPackage: b\n",
		"SHA256:\n abc 1 f\r\n def 2 g\n",
		"# comment\nTypes: deb\n# c\n  x\n",
		" bad\n",
		"A: 1\nA: 2\n",
		"A:\t \n\n\n \nB:\n\t.",
		"A: \x00\xff\n \x01\n",
		"A: 1\n\r\nB: 2\r",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(roundTrip)
}
