// Package apt is the typed model of Debian repository metadata: Release
// files, Packages and Sources entries, by-hash paths and safe repository
// paths, plus the Release checks a mirror applies (suite, rollback, future
// date, expiry) as pure functions of their inputs and the current time.
//
// It parses text that has already been authenticated (apt/pgp extracts the
// signed body of an InRelease) and decompressed (apt/compress); it does no
// I/O of its own beyond the io.Reader it is handed.
package apt

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"time"

	"gatehouse/apt/deb822"
)

// Hash algorithm names as they appear in Release files and by-hash paths.
const (
	AlgoMD5    = "MD5Sum"
	AlgoSHA1   = "SHA1"
	AlgoSHA256 = "SHA256"
	AlgoSHA512 = "SHA512"
)

// FileEntry is one file a Release lists, with every hash the Release gives
// for it in lowercase hex ("" when that list does not name the file).
type FileEntry struct {
	Path   string // relative to the Release file's directory, already checked by CleanRepoPath
	Size   int64
	MD5Sum string
	SHA1   string
	SHA256 string
	SHA512 string
}

// StrongestHash returns the strongest hash known for e, preferring SHA512,
// then SHA256, SHA1 and MD5Sum, with its algorithm name as used in Release
// files and by-hash directories; both are "" when e has no hash. A mirror
// must refuse an entry whose strongest hash is SHA1 or MD5Sum, as apt does:
// only SHA256 and SHA512 protect against forgery.
func (e FileEntry) StrongestHash() (algo, hex string) {
	switch {
	case e.SHA512 != "":
		return AlgoSHA512, e.SHA512
	case e.SHA256 != "":
		return AlgoSHA256, e.SHA256
	case e.SHA1 != "":
		return AlgoSHA1, e.SHA1
	case e.MD5Sum != "":
		return AlgoMD5, e.MD5Sum
	}
	return "", ""
}

// Release is a parsed Release file (the signed body of an InRelease).
type Release struct {
	Origin, Label, Suite, Codename, Version, Description string

	// Date is when the archive published this Release; zero when the field
	// is absent (CheckDate refuses such a Release).
	Date time.Time
	// ValidUntil is when the Release expires; zero when absent.
	ValidUntil time.Time

	Architectures, Components []string

	AcquireByHash bool
	// NoSupportForArchAll is true when the Release says
	// "No-Support-for-Architecture-all: Packages": the archive no longer
	// promises architecture "all" packages in binary-ARCH (Debian still
	// repeats them there), so clients must also read binary-all.
	NoSupportForArchAll  bool
	NotAutomatic         bool
	ButAutomaticUpgrades bool
	// SignedBy lists the key fingerprints the Release names as allowed to
	// sign its successor (the Signed-By field), without interpretation.
	SignedBy []string

	// Files merges the MD5Sum, SHA1, SHA256 and SHA512 lists, sorted by Path.
	Files []FileEntry

	// Para is the raw paragraph, so a re-signing writer keeps fields this
	// type does not model.
	Para *deb822.Paragraph
}

// ErrRelease marks a malformed Release file; errors from ParseRelease wrap
// it and name the line and field.
var ErrRelease = errors.New("invalid Release file")

// releaseLists maps each Release file-list field to the hex length of its
// hash and a setter on FileEntry.
var releaseLists = []struct {
	field  string
	hexLen int
	set    func(*FileEntry) *string
}{
	{AlgoMD5, 32, func(e *FileEntry) *string { return &e.MD5Sum }},
	{AlgoSHA1, 40, func(e *FileEntry) *string { return &e.SHA1 }},
	{AlgoSHA256, 64, func(e *FileEntry) *string { return &e.SHA256 }},
	{AlgoSHA512, 128, func(e *FileEntry) *string { return &e.SHA512 }},
}

// ParseRelease parses the text of a Release file: exactly one deb822
// paragraph. Dates follow RFC 2822 as apt accepts them; booleans are "yes"
// or "no"; each file-list line is "HASH SIZE PATH" with a hex hash of the
// algorithm's length, a decimal size and a path CleanRepoPath accepts
// unchanged. A path listed twice in one list, or with different sizes in
// two lists, is an error. No hash list is required here; callers needing a
// strong hash check StrongestHash. Errors wrap ErrRelease and give the line,
// counted from the start of body.
func ParseRelease(body []byte) (*Release, error) {
	rd := deb822.NewReader(bytes.NewReader(body), "Release", deb822.Limits{})
	p, err := rd.Next()
	if err == io.EOF {
		return nil, fmt.Errorf("%w: no fields", ErrRelease)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrRelease, err)
	}
	if extra, err := rd.Next(); err != io.EOF {
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrRelease, err)
		}
		return nil, fmt.Errorf("%w: Release:%d: a second paragraph; a Release file has exactly one", ErrRelease, extra.Line)
	}
	r := &Release{Para: p}
	lines := fieldLines(p)
	bad := func(line, i int, err error) error {
		return fmt.Errorf("%w: Release:%d: field %s: %v", ErrRelease, line, p.Fields[i].Name, err)
	}
	files := map[string]*FileEntry{}
	for i, f := range p.Fields {
		var err error
		switch strings.ToLower(f.Name) {
		case "origin":
			r.Origin = f.Value
		case "label":
			r.Label = f.Value
		case "suite":
			r.Suite = f.Value
		case "codename":
			r.Codename = f.Value
		case "version":
			r.Version = f.Value
		case "description":
			r.Description = f.Value
		case "date":
			r.Date, err = ParseDate(f.Value)
		case "valid-until":
			r.ValidUntil, err = ParseDate(f.Value)
		case "architectures":
			r.Architectures = strings.Fields(f.Value)
		case "components":
			r.Components = strings.Fields(f.Value)
		case "acquire-by-hash":
			r.AcquireByHash, err = parseBool(f.Value)
		case "notautomatic":
			r.NotAutomatic, err = parseBool(f.Value)
		case "butautomaticupgrades":
			r.ButAutomaticUpgrades, err = parseBool(f.Value)
		case "no-support-for-architecture-all":
			// The only value in use names the index type concerned.
			if f.Value != "Packages" {
				err = fmt.Errorf("want %q, got %q", "Packages", f.Value)
			}
			r.NoSupportForArchAll = true
		case "signed-by":
			r.SignedBy = strings.FieldsFunc(f.Value, func(c rune) bool { return c == ',' || c == ' ' || c == '\n' || c == '\t' })
		default:
			for _, l := range releaseLists {
				if strings.EqualFold(f.Name, l.field) {
					if line, err := parseFileList(f.Value, l.hexLen, l.set, files, lines[i]); err != nil {
						return nil, bad(line, i, err)
					}
				}
			}
		}
		if err != nil {
			return nil, bad(lines[i], i, err)
		}
	}
	r.Files = make([]FileEntry, 0, len(files))
	for _, e := range files {
		r.Files = append(r.Files, *e)
	}
	sort.Slice(r.Files, func(i, j int) bool { return r.Files[i].Path < r.Files[j].Path })
	return r, nil
}

// fieldLines returns the input line of each field, assuming the paragraph
// was read from text without comment lines (true of Release files).
func fieldLines(p *deb822.Paragraph) []int {
	lines := make([]int, len(p.Fields))
	n := p.Line
	for i, f := range p.Fields {
		lines[i] = n
		n += 1 + strings.Count(f.Value, "\n")
	}
	return lines
}

// parseFileList adds the "HASH SIZE PATH" lines of one hash list to files.
// On error it returns the input line at fault.
func parseFileList(v string, hexLen int, set func(*FileEntry) *string, files map[string]*FileEntry, line int) (int, error) {
	seen := map[string]bool{}
	for n, l := range strings.Split(v, "\n") {
		if n == 0 {
			if l != "" {
				return line, fmt.Errorf("text %q after the field name; entries go on the following lines", clip(l))
			}
			continue
		}
		parts := strings.Fields(l)
		if len(parts) != 3 {
			return line + n, fmt.Errorf("want \"HASH SIZE PATH\", got %q", clip(l))
		}
		hash, err := parseHex(parts[0], hexLen)
		if err != nil {
			return line + n, err
		}
		size, err := parseSize(parts[1])
		if err != nil {
			return line + n, err
		}
		path, err := CleanRepoPath(parts[2])
		if err != nil || path != parts[2] {
			return line + n, fmt.Errorf("unsafe or non-canonical path %q", clip(parts[2]))
		}
		if seen[path] {
			return line + n, fmt.Errorf("%s listed twice", path)
		}
		seen[path] = true
		e := files[path]
		if e == nil {
			e = &FileEntry{Path: path, Size: size}
			files[path] = e
		} else if e.Size != size {
			return line + n, fmt.Errorf("%s has size %d here but %d in another hash list", path, size, e.Size)
		}
		*set(e) = hash
	}
	return 0, nil
}

// File returns the entry for path (relative to the Release's directory).
func (r *Release) File(path string) (FileEntry, bool) {
	i := sort.Search(len(r.Files), func(i int) bool { return r.Files[i].Path >= path })
	if i < len(r.Files) && r.Files[i].Path == path {
		return r.Files[i], true
	}
	return FileEntry{}, false
}

// IndexFiles returns the entries of r an apt client of the given components
// and architectures may fetch: per component, binary-ARCH and
// debian-installer/binary-ARCH directories for each architecture and for
// "all" when apt reads it (see WantsArchAll), source/ and
// Contents-source when sources is set, and every other file of the
// component (i18n, dep11, cnf, Contents) unless its base name ends in
// "-ARCH" for an architecture of the Release that was not asked for.
// installer-ARCH directories (installer images, not apt indexes) are left
// out, as are files outside the components.
//
// A flat repository (a Release without Components) has its indexes next to
// the Release: all its files are returned, except Sources* when sources is
// false. Components not listed in r are skipped.
func (r *Release) IndexFiles(components, architectures []string, sources bool) []FileEntry {
	want := map[string]bool{"all": r.WantsArchAll()}
	for _, a := range architectures {
		want[a] = true
	}
	known := map[string]bool{"source": true}
	for _, a := range r.Architectures {
		known[a] = true
	}
	for _, a := range architectures {
		known[a] = true
	}
	want["source"] = sources
	var out []FileEntry
	if len(r.Components) == 0 {
		for _, f := range r.Files {
			if !sources && strings.HasPrefix(f.Path[strings.LastIndexByte(f.Path, '/')+1:], "Sources") {
				continue
			}
			out = append(out, f)
		}
		return out
	}
	comps := map[string]bool{}
	for _, c := range components {
		if r.HasComponent(c) {
			comps[c] = true
		}
	}
	for _, f := range r.Files {
		_, rest, ok := componentOf(f.Path, comps)
		if !ok {
			continue
		}
		first, _, _ := strings.Cut(rest, "/")
		switch {
		case strings.HasPrefix(first, "binary-"):
			if !want[strings.TrimPrefix(first, "binary-")] {
				continue
			}
		case first == "debian-installer":
			sub, _, _ := strings.Cut(strings.TrimPrefix(rest, "debian-installer/"), "/")
			if !strings.HasPrefix(sub, "binary-") || !want[strings.TrimPrefix(sub, "binary-")] {
				continue
			}
		case first == "source":
			if !sources {
				continue
			}
		case strings.HasPrefix(first, "installer-"):
			continue
		default:
			base := rest[strings.LastIndexByte(rest, '/')+1:]
			if dot := strings.IndexByte(base, '.'); dot >= 0 {
				base = base[:dot]
			}
			if dash := strings.LastIndexByte(base, '-'); dash >= 0 {
				if a := base[dash+1:]; known[a] && !want[a] {
					continue
				}
			}
		}
		out = append(out, f)
	}
	return out
}

// componentOf finds the wanted component that path lies in. Components may
// contain '/' (older security archives used "updates/main").
func componentOf(path string, comps map[string]bool) (comp, rest string, ok bool) {
	for i := 0; i < len(path); i++ {
		if path[i] == '/' && comps[path[:i]] {
			return path[:i], path[i+1:], true
		}
	}
	return "", "", false
}

// WantsArchAll reports whether apt fetches binary-all indexes from r: when
// the Release lists "all" among its Architectures (or has no such field)
// and does not say "No-Support-for-Architecture-all: Packages", which
// means every binary-ARCH index repeats the "all" packages. Debian's
// main archive says so, its security archive does not list "all"; apt
// fetches binary-all from neither, so neither does the mirror (a broken
// binary-all upstream then cannot fail a sync).
func (r *Release) WantsArchAll() bool {
	return !r.NoSupportForArchAll && (len(r.Architectures) == 0 || slices.Contains(r.Architectures, "all"))
}

// HasComponent reports whether clients naming component c in their
// sources find it in r: r lists c, or lists it below a prefix, as Debian's
// security archive lists "updates/main" while its files and its users'
// sources say "main" (apt accepts that too). A Release without Components
// (a flat repository) has none.
func (r *Release) HasComponent(c string) bool {
	for _, x := range r.Components {
		if x == c || strings.HasSuffix(x, "/"+c) {
			return true
		}
	}
	return false
}

// ByHashPath returns where Acquire-By-Hash archives keep the file indexPath
// (relative to the Release directory) with the given hash:
// "main/binary-amd64/Packages.xz", "SHA256", h gives
// "main/binary-amd64/by-hash/SHA256/h". algo is a Release list name
// (AlgoSHA256 etc.).
func ByHashPath(indexPath, algo, hexHash string) string {
	dir := ""
	if i := strings.LastIndexByte(indexPath, '/'); i >= 0 {
		dir = indexPath[:i+1]
	}
	return dir + "by-hash/" + algo + "/" + hexHash
}

func parseBool(v string) (bool, error) {
	switch strings.ToLower(v) {
	case "yes":
		return true, nil
	case "no":
		return false, nil
	}
	return false, fmt.Errorf("want yes or no, got %q", clip(v))
}

func parseHex(s string, n int) (string, error) {
	if len(s) != n {
		return "", fmt.Errorf("hash %q: want %d hex digits", clip(s), n)
	}
	lower := true
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case '0' <= c && c <= '9', 'a' <= c && c <= 'f':
		case 'A' <= c && c <= 'F':
			lower = false
		default:
			return "", fmt.Errorf("hash %q: not hexadecimal", clip(s))
		}
	}
	if !lower {
		s = strings.ToLower(s)
	}
	return s, nil
}

// parseSize parses a decimal file size: digits only, below 2^63.
func parseSize(s string) (int64, error) {
	if s == "" || len(s) > 18 {
		return 0, fmt.Errorf("size %q: want 1 to 18 decimal digits", clip(s))
	}
	var n int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("size %q: not a decimal number", clip(s))
		}
		n = n*10 + int64(c-'0')
	}
	return n, nil
}

// clip shortens s for inclusion in an error message.
func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

// FileListValue returns the deb822 value of the Release field for hash algo
// (AlgoMD5, AlgoSHA1, AlgoSHA256 or AlgoSHA512) listing files in the given
// order, in the archive's layout ("HASH SIZE PATH", size right-aligned), for
// a Release written with deb822.Writer. Files without that hash are left
// out; "" means none has it, so the caller omits the field.
func FileListValue(files []FileEntry, algo string) string {
	var b strings.Builder
	for _, f := range files {
		var h string
		switch algo {
		case AlgoMD5:
			h = f.MD5Sum
		case AlgoSHA1:
			h = f.SHA1
		case AlgoSHA256:
			h = f.SHA256
		case AlgoSHA512:
			h = f.SHA512
		}
		if h != "" {
			fmt.Fprintf(&b, "\n%s %8d %s", h, f.Size, f.Path)
		}
	}
	return b.String()
}
