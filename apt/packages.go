package apt

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"gatehouse/apt/deb822"
)

// ErrIndex marks a malformed Packages or Sources entry; reader errors wrap
// it with the input name and line.
var ErrIndex = errors.New("invalid index entry")

// Package is one stanza of a Packages file. Strings share the paragraph's
// memory: a caller keeping a few fields of many packages should
// strings.Clone them and drop the Package.
type Package struct {
	Name, Version, Architecture, Source, Filename, Priority, Section, MultiArch string

	Size                         int64
	MD5Sum, SHA1, SHA256, SHA512 string // lowercase hex; "" when absent

	// Raw relation fields; apt/version parses them.
	Depends, PreDepends, Recommends, Provides, Conflicts, Breaks string

	// Para is the raw stanza, for regenerating filtered Packages files.
	Para *deb822.Paragraph
}

// Hashes returns the package's file as a FileEntry, so StrongestHash and
// the mirror's verification treat pool files and index files alike.
func (p *Package) Hashes() FileEntry {
	return FileEntry{Path: p.Filename, Size: p.Size, MD5Sum: p.MD5Sum, SHA1: p.SHA1, SHA256: p.SHA256, SHA512: p.SHA512}
}

// PackagesReader streams a Packages file one entry at a time.
type PackagesReader struct {
	rd   *deb822.Reader
	name string
	err  error
}

// NewPackagesReader reads Packages text (already decompressed) from r;
// name is used in errors.
func NewPackagesReader(r io.Reader, name string) *PackagesReader {
	return &PackagesReader{rd: deb822.NewReader(r, name, deb822.Limits{}), name: name}
}

// Next returns the next entry, or io.EOF after the last one. An entry must
// have Package, Version, Architecture, a Filename that CleanRepoPath
// accepts (its "./" prefix removed), a decimal Size, and a SHA256 or SHA512:
// apt refuses to install a file protected by MD5 or SHA1 alone, and the
// mirror verifies every pool file by its strongest hash. Hashes must be hex
// of the right length. Any violation ends the stream with an error wrapping
// ErrIndex that names the input and line.
func (pr *PackagesReader) Next() (*Package, error) {
	if pr.err != nil {
		return nil, pr.err
	}
	para, err := pr.rd.Next()
	if err != nil {
		pr.err = err
		if err != io.EOF {
			pr.err = fmt.Errorf("%w: %w", ErrIndex, err)
		}
		return nil, pr.err
	}
	p := &Package{Para: para}
	var size string
	for _, f := range para.Fields {
		if dst := packageField(p, f.Name, &size); dst != nil {
			*dst = f.Value
		}
	}
	if err := p.check(size); err != nil {
		pr.err = fmt.Errorf("%w: %s:%d: package %q: %w", ErrIndex, pr.name, para.Line, clip(p.Name), err)
		return nil, pr.err
	}
	return p, nil
}

// packageField returns where the value of field name goes, or nil. It
// compares lengths first: this runs for every field of ~64k stanzas.
func packageField(p *Package, name string, size *string) *string {
	eq := func(s string) bool { return len(name) == len(s) && strings.EqualFold(name, s) }
	switch len(name) {
	case 4:
		if eq("Size") {
			return size
		}
		if eq("SHA1") {
			return &p.SHA1
		}
	case 6:
		switch {
		case eq("Source"):
			return &p.Source
		case eq("MD5sum"):
			return &p.MD5Sum
		case eq("SHA256"):
			return &p.SHA256
		case eq("SHA512"):
			return &p.SHA512
		case eq("Breaks"):
			return &p.Breaks
		}
	case 7:
		switch {
		case eq("Package"):
			return &p.Name
		case eq("Version"):
			return &p.Version
		case eq("Section"):
			return &p.Section
		case eq("Depends"):
			return &p.Depends
		}
	case 8:
		switch {
		case eq("Filename"):
			return &p.Filename
		case eq("Priority"):
			return &p.Priority
		case eq("Provides"):
			return &p.Provides
		}
	case 9:
		if eq("Conflicts") {
			return &p.Conflicts
		}
	case 10:
		if eq("Multi-Arch") {
			return &p.MultiArch
		}
		if eq("Recommends") {
			return &p.Recommends
		}
	case 11:
		if eq("Pre-Depends") {
			return &p.PreDepends
		}
	case 12:
		if eq("Architecture") {
			return &p.Architecture
		}
	}
	return nil
}

func (p *Package) check(size string) error {
	for _, req := range []struct{ name, v string }{
		{"Package", p.Name}, {"Version", p.Version}, {"Architecture", p.Architecture}, {"Filename", p.Filename}, {"Size", size},
	} {
		if req.v == "" {
			return fmt.Errorf("missing or empty %s", req.name)
		}
	}
	var err error
	if p.Size, err = parseSize(size); err != nil {
		return err
	}
	if p.Filename, err = CleanRepoPath(p.Filename); err != nil {
		return fmt.Errorf("field Filename: %w", err)
	}
	return checkHashes(&p.MD5Sum, &p.SHA1, &p.SHA256, &p.SHA512)
}

// checkHashes validates and lowercases the hashes present and requires a
// strong one.
func checkHashes(md5, sha1, sha256, sha512 *string) error {
	for _, h := range []struct {
		name string
		v    *string
		n    int
	}{{AlgoMD5, md5, 32}, {AlgoSHA1, sha1, 40}, {AlgoSHA256, sha256, 64}, {AlgoSHA512, sha512, 128}} {
		if *h.v == "" {
			continue
		}
		v, err := parseHex(*h.v, h.n)
		if err != nil {
			return fmt.Errorf("%s: %v", h.name, err)
		}
		*h.v = v
	}
	if *sha256 == "" && *sha512 == "" {
		return errors.New("no SHA256 or SHA512 hash; MD5 and SHA1 alone cannot protect against forgery")
	}
	return nil
}

// SourceFile is one file of a source package, merged from the Files and
// Checksums-* fields.
type SourceFile struct {
	Name                         string // a plain file name inside Source.Directory
	Size                         int64
	MD5Sum, SHA1, SHA256, SHA512 string
}

// Source is one stanza of a Sources file.
type Source struct {
	Name, Version string
	// Directory is the pool directory holding Files, checked by CleanRepoPath.
	Directory string
	Files     []SourceFile // in the order of their first appearance
	Para      *deb822.Paragraph
}

// SourcesReader streams a Sources file one entry at a time.
type SourcesReader struct {
	rd   *deb822.Reader
	name string
	err  error
}

// NewSourcesReader reads Sources text (already decompressed) from r; name
// is used in errors.
func NewSourcesReader(r io.Reader, name string) *SourcesReader {
	return &SourcesReader{rd: deb822.NewReader(r, name, deb822.Limits{}), name: name}
}

var sourceLists = []struct {
	field string
	n     int
	set   func(*SourceFile) *string
}{
	{"Files", 32, func(f *SourceFile) *string { return &f.MD5Sum }},
	{"Checksums-Sha1", 40, func(f *SourceFile) *string { return &f.SHA1 }},
	{"Checksums-Sha256", 64, func(f *SourceFile) *string { return &f.SHA256 }},
	{"Checksums-Sha512", 128, func(f *SourceFile) *string { return &f.SHA512 }},
}

// Next returns the next entry, or io.EOF after the last one. An entry must
// have Package (the source name), Version, a Directory CleanRepoPath
// accepts, and at least one file; each file list line is "HASH SIZE NAME"
// with NAME a plain file name, sizes must agree across lists, and every file
// needs a SHA256 or SHA512. Violations end the stream with an error wrapping
// ErrIndex that names the input and line.
func (sr *SourcesReader) Next() (*Source, error) {
	if sr.err != nil {
		return nil, sr.err
	}
	para, err := sr.rd.Next()
	if err != nil {
		sr.err = err
		if err != io.EOF {
			sr.err = fmt.Errorf("%w: %w", ErrIndex, err)
		}
		return nil, sr.err
	}
	s := &Source{Para: para, Name: para.Value("Package"), Version: para.Value("Version"), Directory: para.Value("Directory")}
	if err := s.parse(); err != nil {
		sr.err = fmt.Errorf("%w: %s:%d: source %q: %w", ErrIndex, sr.name, para.Line, clip(s.Name), err)
		return nil, sr.err
	}
	return s, nil
}

func (s *Source) parse() error {
	for _, req := range []struct{ name, v string }{{"Package", s.Name}, {"Version", s.Version}, {"Directory", s.Directory}} {
		if req.v == "" {
			return fmt.Errorf("missing or empty %s", req.name)
		}
	}
	var err error
	if s.Directory, err = CleanRepoPath(s.Directory); err != nil {
		return fmt.Errorf("field Directory: %w", err)
	}
	index := map[string]int{}
	for _, l := range sourceLists {
		v, ok := s.Para.Get(l.field)
		if !ok {
			continue
		}
		seen := map[string]bool{}
		for n, line := range strings.Split(v, "\n") {
			if n == 0 {
				if line != "" {
					return fmt.Errorf("%s: text %q after the field name", l.field, clip(line))
				}
				continue
			}
			parts := strings.Fields(line)
			if len(parts) != 3 {
				return fmt.Errorf("%s line %d: want \"HASH SIZE NAME\", got %q", l.field, n, clip(line))
			}
			hash, err := parseHex(parts[0], l.n)
			if err != nil {
				return fmt.Errorf("%s line %d: %w", l.field, n, err)
			}
			size, err := parseSize(parts[1])
			if err != nil {
				return fmt.Errorf("%s line %d: %w", l.field, n, err)
			}
			name := parts[2]
			if c, err := CleanRepoPath(name); err != nil || c != name || strings.Contains(name, "/") {
				return fmt.Errorf("%s line %d: %q is not a plain file name", l.field, n, clip(name))
			}
			if seen[name] {
				return fmt.Errorf("%s line %d: %s listed twice", l.field, n, name)
			}
			seen[name] = true
			i, ok := index[name]
			if !ok {
				i = len(s.Files)
				index[name] = i
				s.Files = append(s.Files, SourceFile{Name: name, Size: size})
			} else if s.Files[i].Size != size {
				return fmt.Errorf("%s line %d: %s has size %d here but %d in another list", l.field, n, name, size, s.Files[i].Size)
			}
			*l.set(&s.Files[i]) = hash
		}
	}
	if len(s.Files) == 0 {
		return errors.New("no Files or Checksums-* entries")
	}
	for _, f := range s.Files {
		if f.SHA256 == "" && f.SHA512 == "" {
			return fmt.Errorf("file %s has no SHA256 or SHA512 hash", f.Name)
		}
	}
	return nil
}
