package filter

import (
	"bufio"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"path"
	"slices"
	"strings"
	"time"

	"gatehouse/apt"
	"gatehouse/apt/compress"
	"gatehouse/apt/deb822"
	"gatehouse/apt/pgp"
)

// Indexes says which index files of one suite WriteIndexes and
// WriteTranslation produce.
type Indexes struct {
	// Suite selects the entries listed in that upstream suite (as given to
	// Universe.Add).
	Suite string
	// Components are written in this order.
	Components []string
	// Architectures name the binary-ARCH directories. Each holds the
	// selected entries of that architecture and of "all" (as Debian
	// repeats "all" packages in every binary-ARCH); "all" itself writes
	// binary-all with only the "all" entries.
	Architectures []string
	// Compressions are the upstream's variants (".gz", ".xz", ".bz2",
	// ...). Plain, ".gz" and ".xz" are always written; ".zst" is added when
	// listed; variants this appliance cannot write (".bz2", ".lzma") are
	// left out, since apt takes any variant the Release lists.
	Compressions []string
}

func (ix Indexes) check() error {
	if ix.Suite == "" || len(ix.Components) == 0 || len(ix.Architectures) == 0 {
		return errors.New("filter: Indexes needs a Suite, Components and Architectures")
	}
	for _, s := range append(slices.Clone(ix.Components), ix.Architectures...) {
		if s == "" || s == "." || s == ".." || strings.ContainsAny(s, "/\\\x00 \t\n") {
			return fmt.Errorf("filter: component or architecture %q cannot be a directory name", s)
		}
	}
	return nil
}

// suffixes returns the compression suffixes to write, plain first.
func (ix Indexes) suffixes() []string {
	out := []string{compress.Plain, compress.GZ, compress.XZ}
	if slices.Contains(ix.Compressions, compress.ZST) {
		out = append(out, compress.ZST)
	}
	return out
}

// Dir is the directory a suite's files are written to, by paths relative
// to it (slash-separated): the snapshot being built, whose owner
// (mirror/store.SubDir) alone creates and links files in its tree, so this
// package never names a path there.
type Dir interface {
	// Create creates the new file rel, and its directories; an existing
	// file is an error.
	Create(rel string) (io.WriteCloser, error)
	// Link makes rel another name of the file target (a by-hash name);
	// an existing rel is kept.
	Link(target, rel string) error
}

// WriteIndexes writes suiteDir/COMPONENT/binary-ARCH/Packages in every
// variant Indexes asks for, each listing the selected entries of ix.Suite
// and that component with the stanza text the upstream had, sorted as
// Result.Selected is; an empty selection writes empty indexes, which apt
// accepts. Every file also gets its by-hash/SHA256/<hex> name (a hard
// link). It returns the files for the Release,
// paths relative to suiteDir, with MD5Sum and SHA256.
//
// suiteDir should be a fresh directory (a snapshot being built): files are
// created, never replaced, so an existing file is an error. After an error
// the directory holds partial output and must be discarded.
func WriteIndexes(suiteDir Dir, sel *Result, ix Indexes) ([]apt.FileEntry, error) {
	if err := ix.check(); err != nil {
		return nil, err
	}
	var files []apt.FileEntry
	for _, comp := range ix.Components {
		for _, arch := range ix.Architectures {
			dir := path.Join(comp, "binary-"+arch)
			fs, err := writeVariants(suiteDir, dir, "Packages", ix.suffixes(), func(w io.Writer) error {
				bw := bufio.NewWriterSize(w, 64<<10)
				first := true
				for _, e := range sel.Selected {
					if !e.In(ix.Suite, comp) || (e.Architecture != arch && (e.Architecture != "all" || arch == "all")) {
						continue
					}
					if !first {
						bw.WriteByte('\n')
					}
					first = false
					bw.WriteString(e.stanza)
					bw.WriteByte('\n')
				}
				return bw.Flush()
			})
			if err != nil {
				return nil, err
			}
			files = append(files, fs...)
		}
	}
	return files, nil
}

// MaxTranslationBytes bounds the decompressed upstream Translation file
// WriteTranslation reads. Debian's largest (bookworm main
// Translation-en) is about 40 MB.
const MaxTranslationBytes = 1 << 30

// WriteTranslation streams an upstream Translation file (name is its base
// name without compression suffix, e.g. "Translation-en"; upstream is its
// decompressed, verified content) of ix.Suite's component, and writes
// suiteDir/COMPONENT/i18n/NAME in every variant of ix with only the
// paragraphs of selected entries: those whose Package and Description-md5
// match a selected entry listed in that suite and component (by Package
// alone for entries without Description-md5). Paragraphs are written as
// the upstream had them, in upstream order. It returns the files for the
// Release as WriteIndexes does.
func WriteTranslation(suiteDir Dir, sel *Result, ix Indexes, component, name string, upstream io.Reader) ([]apt.FileEntry, error) {
	if err := ix.check(); err != nil {
		return nil, err
	}
	if !slices.Contains(ix.Components, component) {
		return nil, fmt.Errorf("filter: translation of component %q, which Indexes does not list", component)
	}
	if !strings.HasPrefix(name, "Translation-") || strings.ContainsAny(name, "/\\\x00 \t\n") || compress.Suffix(name) != "" {
		return nil, fmt.Errorf("filter: %q is not a Translation file name without suffix", name)
	}
	keep := map[string][]string{} // package name -> Description-md5 values ("" keeps any)
	for _, e := range sel.Selected {
		if e.In(ix.Suite, component) {
			keep[e.Name] = append(keep[e.Name], e.DescriptionMD5)
		}
	}
	where := path.Join(ix.Suite, component, "i18n", name)
	return writeVariants(suiteDir, path.Join(component, "i18n"), name, ix.suffixes(), func(w io.Writer) error {
		rd := deb822.NewReader(&capReader{r: upstream, left: MaxTranslationBytes}, "upstream "+where, deb822.Limits{})
		dw := deb822.NewWriter(w)
		for {
			p, err := rd.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				return fmt.Errorf("reading upstream %s: %w", where, err)
			}
			md5s, ok := keep[p.Value("Package")]
			if !ok {
				continue
			}
			md5 := p.Value("Description-md5")
			if !slices.Contains(md5s, md5) && !slices.Contains(md5s, "") {
				continue
			}
			if err := dw.Write(p); err != nil {
				return fmt.Errorf("writing %s: %w", where, err)
			}
		}
		return dw.Flush()
	})
}

// MaxSourcesBytes bounds the decompressed upstream Sources file
// WriteSources reads. Debian's largest (bookworm main) is about 45 MB.
const MaxSourcesBytes = 1 << 30

// WriteSources streams an upstream Sources file of ix.Suite's component
// (upstream is its decompressed, verified content) and writes
// suiteDir/COMPONENT/source/Sources in every variant of ix with the
// stanzas want accepts (by source name and version), as the upstream had
// them, in upstream order; found is called with each one, for the caller
// to fetch its files. Stanzas are checked as apt.SourcesReader checks
// them, and a bad one fails the whole file. It returns the files for the
// Release as WriteIndexes does.
func WriteSources(suiteDir Dir, ix Indexes, component string, upstream io.Reader, want func(name, version string) bool, found func(*apt.Source)) ([]apt.FileEntry, error) {
	if err := ix.check(); err != nil {
		return nil, err
	}
	if !slices.Contains(ix.Components, component) {
		return nil, fmt.Errorf("filter: sources of component %q, which Indexes does not list", component)
	}
	where := path.Join(ix.Suite, component, "source", "Sources")
	return writeVariants(suiteDir, path.Join(component, "source"), "Sources", ix.suffixes(), func(w io.Writer) error {
		sr := apt.NewSourcesReader(&capReader{r: upstream, left: MaxSourcesBytes}, "upstream "+where)
		dw := deb822.NewWriter(w)
		for {
			s, err := sr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				return fmt.Errorf("reading upstream %s: %w", where, err)
			}
			if !want(s.Name, s.Version) {
				continue
			}
			if err := dw.Write(s.Para); err != nil {
				return fmt.Errorf("writing %s: %w", where, err)
			}
			found(s)
		}
		return dw.Flush()
	})
}

// Source returns the source package the entry was built from, as its
// Source field gives it ("name" or "name (version)"): without the field
// the entry's own name, and without a version there the entry's version
// (a binNMU such as 1.2-3+b1 names its source version explicitly).
func (e *Entry) Source() (name, version string) {
	name, version = e.Name, e.Version
	for line := range strings.SplitSeq(e.stanza, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || !strings.EqualFold(k, "Source") {
			continue
		}
		v = strings.TrimSpace(v)
		if n, rest, ok := strings.Cut(v, " "); ok {
			name = n
			if r := strings.TrimSpace(rest); strings.HasPrefix(r, "(") && strings.HasSuffix(r, ")") {
				version = strings.TrimSpace(r[1 : len(r)-1])
			}
		} else if v != "" {
			name = v
		}
		break
	}
	return name, version
}

// capReader fails once more than left bytes were read, so an oversized
// input is an error rather than a silently shortened one.
type capReader struct {
	r     io.Reader
	left  int64
	limit int64 // the initial left, for the message
}

func (c *capReader) Read(p []byte) (int, error) {
	if c.limit == 0 {
		c.limit = c.left
	}
	if c.left < 0 {
		return 0, fmt.Errorf("input exceeds %d bytes", c.limit)
	}
	if int64(len(p)) > c.left+1 {
		p = p[:c.left+1]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	if c.left < 0 {
		return 0, fmt.Errorf("input exceeds %d bytes", c.limit)
	}
	return n, err
}

// hashWriter counts and hashes what passes to the file.
type hashWriter struct {
	w        io.Writer
	md5, sha hash.Hash
	n        int64
}

func (h *hashWriter) Write(p []byte) (int, error) {
	n, err := h.w.Write(p)
	h.md5.Write(p[:n])
	h.sha.Write(p[:n])
	h.n += int64(n)
	return n, err
}

// writeVariants creates suiteDir/dir/base+suffix for every suffix with the
// content gen produces once, compressed per suffix, plus by-hash links.
// After an error the caller discards the directory (a snapshot being
// built), so partial files are not removed here.
func writeVariants(suiteDir Dir, dir, base string, suffixes []string, gen func(io.Writer) error) (_ []apt.FileEntry, err error) {
	type variant struct {
		rel string
		f   io.WriteCloser
		hw  *hashWriter
		zw  io.WriteCloser
	}
	vs := make([]*variant, 0, len(suffixes))
	defer func() {
		if err != nil {
			for _, v := range vs {
				v.f.Close()
			}
		}
	}()
	ws := make([]io.Writer, 0, len(suffixes))
	for _, s := range suffixes {
		rel := path.Join(dir, base+s)
		f, err := suiteDir.Create(rel)
		if err != nil {
			return nil, fmt.Errorf("filter: creating index: %w", err)
		}
		v := &variant{rel: rel, f: f, hw: &hashWriter{w: f, md5: md5.New(), sha: sha256.New()}}
		vs = append(vs, v)
		if v.zw, err = compress.Create(v.hw, rel); err != nil {
			return nil, fmt.Errorf("filter: %s: %w", rel, err)
		}
		ws = append(ws, v.zw)
	}
	if err := gen(io.MultiWriter(ws...)); err != nil {
		return nil, fmt.Errorf("filter: writing %s/%s: %w", dir, base, err)
	}
	var out []apt.FileEntry
	for _, v := range vs {
		if err := v.zw.Close(); err != nil {
			return nil, fmt.Errorf("filter: finishing %s: %w", v.rel, err)
		}
		if err := v.f.Close(); err != nil {
			return nil, fmt.Errorf("filter: closing %s: %w", v.rel, err)
		}
		fe := apt.FileEntry{Path: v.rel, Size: v.hw.n,
			MD5Sum: hex.EncodeToString(v.hw.md5.Sum(nil)), SHA256: hex.EncodeToString(v.hw.sha.Sum(nil))}
		// An existing by-hash name has the same content by
		// construction (its name is its hash).
		if err := suiteDir.Link(fe.Path, apt.ByHashPath(fe.Path, apt.AlgoSHA256, fe.SHA256)); err != nil {
			return nil, fmt.Errorf("filter: by-hash name of %s: %w", fe.Path, err)
		}
		out = append(out, fe)
	}
	return out, nil
}

// ReleaseInfo is what WriteRelease puts into a re-signed Release.
type ReleaseInfo struct {
	// Upstream supplies Origin, Label, Suite, Codename, Version,
	// Description, NotAutomatic and ButAutomaticUpgrades, which are kept.
	// Its Signed-By is not kept: it names the upstream's keys, which no
	// longer sign this suite.
	Upstream *apt.Release
	// Architectures and Components are written as given.
	Architectures, Components []string
	// Files are the index files (from WriteIndexes and WriteTranslation),
	// listed sorted by path under MD5Sum and SHA256 (and SHA512 when every
	// file has one).
	Files []apt.FileEntry
	// Now is the Date and the signatures' creation time.
	Now time.Time
	// ValidFor sets Valid-Until to Now+ValidFor; zero writes no
	// Valid-Until.
	ValidFor time.Duration
}

// ReleaseBody returns the text of the Release file info describes.
func ReleaseBody(info ReleaseInfo) ([]byte, error) {
	up := info.Upstream
	if up == nil {
		return nil, errors.New("filter: ReleaseInfo has no Upstream Release")
	}
	if up.Suite == "" && up.Codename == "" {
		return nil, errors.New("filter: upstream Release has neither Suite nor Codename; apt could not match it")
	}
	if info.Now.IsZero() || info.ValidFor < 0 {
		return nil, fmt.Errorf("filter: Release needs a Now and a non-negative ValidFor (got %v)", info.ValidFor)
	}
	if len(info.Architectures) == 0 || len(info.Components) == 0 {
		return nil, errors.New("filter: Release needs Architectures and Components")
	}
	files := slices.Clone(info.Files)
	slices.SortFunc(files, func(a, b apt.FileEntry) int { return strings.Compare(a.Path, b.Path) })
	for i, f := range files {
		if _, err := apt.CleanRepoPath(f.Path); err != nil {
			return nil, fmt.Errorf("filter: Release file entry: %w", err)
		}
		if f.SHA256 == "" {
			return nil, fmt.Errorf("filter: Release file entry %s has no SHA256", f.Path)
		}
		if i > 0 && files[i-1].Path == f.Path {
			return nil, fmt.Errorf("filter: Release file entry %s listed twice", f.Path)
		}
	}
	p := &deb822.Paragraph{}
	set := func(name, v string) {
		if v != "" {
			p.Set(name, v)
		}
	}
	set("Origin", up.Origin)
	set("Label", up.Label)
	set("Suite", up.Suite)
	set("Version", up.Version)
	set("Codename", up.Codename)
	set("Date", apt.FormatDate(info.Now))
	if info.ValidFor > 0 {
		set("Valid-Until", apt.FormatDate(info.Now.Add(info.ValidFor)))
	}
	if up.NotAutomatic {
		set("NotAutomatic", "yes")
	}
	if up.ButAutomaticUpgrades {
		set("ButAutomaticUpgrades", "yes")
	}
	set("Acquire-By-Hash", "yes")
	set("Architectures", strings.Join(info.Architectures, " "))
	set("Components", strings.Join(info.Components, " "))
	if d := strings.TrimSpace(up.Description); d != "" && !strings.Contains(d, "\n") {
		set("Description", d)
	}
	set(apt.AlgoMD5, apt.FileListValue(files, apt.AlgoMD5))
	set(apt.AlgoSHA256, apt.FileListValue(files, apt.AlgoSHA256))
	if !slices.ContainsFunc(files, func(f apt.FileEntry) bool { return f.SHA512 == "" }) {
		set(apt.AlgoSHA512, apt.FileListValue(files, apt.AlgoSHA512))
	}
	var b strings.Builder
	w := deb822.NewWriter(&b)
	if err := w.Write(p); err != nil {
		return nil, fmt.Errorf("filter: writing Release: %w", err)
	}
	if err := w.Flush(); err != nil {
		return nil, fmt.Errorf("filter: writing Release: %w", err)
	}
	return []byte(b.String()), nil
}

// WriteRelease writes suiteDir/Release (see ReleaseBody), InRelease
// (clearsigned) and Release.gpg (armored detached signature), signed by
// key at info.Now, so clients that trust key's public part (Signed-By)
// accept them with gpgv or sqv. Existing files are an error, as in
// WriteIndexes.
func WriteRelease(suiteDir Dir, info ReleaseInfo, key *pgp.SigningKey) error {
	if key == nil {
		return errors.New("filter: no signing key for the re-signed Release")
	}
	body, err := ReleaseBody(info)
	if err != nil {
		return err
	}
	inrel, err := key.ClearSign(body, info.Now)
	if err != nil {
		return fmt.Errorf("filter: signing InRelease of %s: %w", info.Upstream.Suite, err)
	}
	sig, err := key.DetachSign(body, true, info.Now)
	if err != nil {
		return fmt.Errorf("filter: signing Release.gpg of %s: %w", info.Upstream.Suite, err)
	}
	for _, f := range []struct {
		name string
		data []byte
	}{{"Release", body}, {"Release.gpg", sig}, {"InRelease", inrel}} {
		if err := createFile(suiteDir, f.name, f.data); err != nil {
			return err
		}
	}
	return nil
}

func createFile(dir Dir, name string, data []byte) error {
	f, err := dir.Create(name)
	if err != nil {
		return fmt.Errorf("filter: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("filter: writing %s: %w", name, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("filter: writing %s: %w", name, err)
	}
	return nil
}

// PoolFiles returns the pool files of the selection, one per Filename,
// sorted by path: what the mirror fetches and verifies (by the strongest
// hash) before publishing the indexes WriteIndexes wrote. Two selected
// entries naming one Filename with different sizes or hashes are an
// error: one pool path cannot hold both, and either index would then lie.
func (r *Result) PoolFiles() ([]apt.FileEntry, error) {
	out := make([]apt.FileEntry, 0, len(r.Selected))
	for _, e := range r.Selected {
		out = append(out, e.Hashes())
	}
	slices.SortFunc(out, func(a, b apt.FileEntry) int { return strings.Compare(a.Path, b.Path) })
	for i := 1; i < len(out); i++ {
		if a, b := out[i-1], out[i]; a.Path == b.Path && a != b {
			return nil, fmt.Errorf("filter: pool file %s is listed with different sizes or hashes (%d bytes SHA256 %s and %d bytes SHA256 %s); the upstream's indexes disagree",
				a.Path, a.Size, a.SHA256, b.Size, b.SHA256)
		}
	}
	return slices.Compact(out), nil
}
