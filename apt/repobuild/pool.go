package repobuild

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"gatehouse/apt/compress"
	"gatehouse/apt/deb822"
)

// fileInfo is the size and digests of one file of the repository, as
// listed in indexes and Release files.
type fileInfo struct {
	Size                      int64
	MD5, SHA1, SHA256, SHA512 string
}

type hasher struct {
	n                 int64
	md5, s1, s256, s5 hash.Hash
	w                 io.Writer
}

func newHasher() *hasher {
	h := &hasher{md5: md5.New(), s1: sha1.New(), s256: sha256.New(), s5: sha512.New()}
	h.w = io.MultiWriter(h.md5, h.s1, h.s256, h.s5)
	return h
}

func (h *hasher) Write(b []byte) (int, error) {
	h.n += int64(len(b))
	return h.w.Write(b)
}

func (h *hasher) info() fileInfo {
	return fileInfo{
		Size:   h.n,
		MD5:    hex.EncodeToString(h.md5.Sum(nil)),
		SHA1:   hex.EncodeToString(h.s1.Sum(nil)),
		SHA256: hex.EncodeToString(h.s256.Sum(nil)),
		SHA512: hex.EncodeToString(h.s5.Sum(nil)),
	}
}

func infoOf(b []byte) fileInfo {
	h := newHasher()
	h.Write(b)
	return h.info()
}

// writeFile writes data to dir/rel through a temporary file and a rename,
// so a concurrent reader (a mirror syncing while a test rebuilds) sees the
// old or the new file, never half of one. It does not fsync: test trees
// need not survive a crash.
func writeFile(dir, rel string, data []byte) error {
	return writeFileAt(dir, rel, data, time.Time{})
}

// writeFileAt is writeFile that also sets the file's modification time
// unless mtime is zero.
func writeFileAt(dir, rel string, data []byte, mtime time.Time) error {
	p := filepath.Join(dir, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return fmt.Errorf("repobuild: write %s: %w", rel, err)
	}
	f, err := os.CreateTemp(filepath.Dir(p), ".tmp-"+filepath.Base(p)+"-")
	if err != nil {
		return fmt.Errorf("repobuild: write %s: %w", rel, err)
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(f.Name(), 0o644)
	}
	if err == nil && !mtime.IsZero() {
		err = os.Chtimes(f.Name(), mtime, mtime)
	}
	if err == nil {
		err = os.Rename(f.Name(), p)
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("repobuild: write %s: %w", rel, err)
	}
	return nil
}

// hashExisting returns the digests of dir/rel, or ok=false when it does
// not exist.
func hashExisting(dir, rel string) (fileInfo, bool, error) {
	f, err := os.Open(filepath.Join(dir, filepath.FromSlash(rel)))
	if os.IsNotExist(err) {
		return fileInfo{}, false, nil
	}
	if err != nil {
		return fileInfo{}, false, fmt.Errorf("repobuild: read %s: %w", rel, err)
	}
	defer f.Close()
	h := newHasher()
	if _, err := io.Copy(h, f); err != nil {
		return fileInfo{}, false, fmt.Errorf("repobuild: read %s: %w", rel, err)
	}
	return h.info(), true, nil
}

// poolPrefix is the pool subdirectory of a source package, as in Debian:
// "libf" for libfoo, "h" for hello.
func poolPrefix(src string) string {
	if strings.HasPrefix(src, "lib") && len(src) > 3 {
		return src[:4]
	}
	return src[:1]
}

// noEpoch strips "N:" from a version, as file names do.
func noEpoch(v string) string {
	if i := strings.IndexByte(v, ':'); i >= 0 {
		return v[i+1:]
	}
	return v
}

// debPath is the pool path of a binary package relative to the archive
// root.
func debPath(comp string, p *Package) string {
	src := p.source()
	return fmt.Sprintf("pool/%s/%s/%s/%s_%s_%s.deb", comp, poolPrefix(src), src, p.Name, noEpoch(p.Version), p.Arch)
}

// poolJob produces one pool file.
type poolJob struct {
	rel  string
	make func(ctx context.Context) ([]byte, error)
	// stream writes the content directly, for synthetic files too large
	// to keep in memory as a batch.
	stream func(w io.Writer) error
	key    string // identity, to detect two different files at one path
}

// runPoolJob writes the file unless it exists already: pool files are
// immutable in a real archive, so a rebuild keeps the bytes clients and
// mirrors already have.
func runPoolJob(ctx context.Context, dir string, j *poolJob) (fileInfo, error) {
	if fi, ok, err := hashExisting(dir, j.rel); err != nil || ok {
		return fi, err
	}
	if j.stream != nil {
		return streamFile(dir, j.rel, j.stream)
	}
	b, err := j.make(ctx)
	if err != nil {
		return fileInfo{}, err
	}
	if err := writeNew(dir, j.rel, b); err != nil {
		return fileInfo{}, err
	}
	return infoOf(b), nil
}

// writeNew writes a pool file that does not exist yet, directly rather
// than through a rename: no published index names it before this build
// finishes, so no reader can see it half written, and it saves the
// syscalls that dominate building large repositories. A failed write
// removes the file, so a later build does not keep a partial one.
func writeNew(dir, rel string, data []byte) error {
	p := filepath.Join(dir, filepath.FromSlash(rel))
	err := os.WriteFile(p, data, 0o644)
	if errors.Is(err, fs.ErrNotExist) {
		if err = os.MkdirAll(filepath.Dir(p), 0o755); err == nil {
			err = os.WriteFile(p, data, 0o644)
		}
	}
	if err != nil {
		os.Remove(p)
		return fmt.Errorf("repobuild: write %s: %w", rel, err)
	}
	return nil
}

func streamFile(dir, rel string, fn func(io.Writer) error) (fileInfo, error) {
	p := filepath.Join(dir, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return fileInfo{}, fmt.Errorf("repobuild: write %s: %w", rel, err)
	}
	f, err := os.CreateTemp(filepath.Dir(p), ".tmp-"+filepath.Base(p)+"-")
	if err != nil {
		return fileInfo{}, fmt.Errorf("repobuild: write %s: %w", rel, err)
	}
	h := newHasher()
	err = fn(io.MultiWriter(f, h))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(f.Name(), 0o644)
	}
	if err == nil {
		err = os.Rename(f.Name(), p)
	}
	if err != nil {
		os.Remove(f.Name())
		return fileInfo{}, fmt.Errorf("repobuild: write %s: %w", rel, err)
	}
	return h.info(), nil
}

// sourcePkg is one source package version of a component.
type sourcePkg struct {
	name, version, comp string
	binaries            []string
	arches              []string
	section, priority   string
	files               []string // tarball names, set when written
}

func (s *sourcePkg) dir() string {
	return fmt.Sprintf("pool/%s/%s/%s", s.comp, poolPrefix(s.name), s.name)
}

func (s *sourcePkg) native() bool { return !strings.Contains(noEpoch(s.version), "-") }

func (s *sourcePkg) upstream() string {
	v := noEpoch(s.version)
	if i := strings.LastIndexByte(v, '-'); i >= 0 {
		return v[:i]
	}
	return v
}

// tarballs returns the names (in s.dir()) and contents of the source
// package's tarballs. The contents are small but real archives, so that
// tools opening them do not choke.
func (s *sourcePkg) tarballs() (names []string, data [][]byte, err error) {
	base := s.name + "-" + s.upstream()
	mk := func(name, suffix string, files map[string]string) error {
		var buf bytes.Buffer
		cw, err := compress.Create(&buf, suffix)
		if err != nil {
			return err
		}
		tw := tar.NewWriter(cw)
		for _, f := range sortedKeys(files) {
			hdr := &tar.Header{Name: base + "/" + f, Mode: 0o644, Size: int64(len(files[f])), ModTime: debEpoch, Format: tar.FormatUSTAR}
			if err := tw.WriteHeader(hdr); err != nil {
				return err
			}
			if _, err := tw.Write([]byte(files[f])); err != nil {
				return err
			}
		}
		if err := tw.Close(); err != nil {
			return err
		}
		if err := cw.Close(); err != nil {
			return err
		}
		names = append(names, name)
		data = append(data, buf.Bytes())
		return nil
	}
	readme := map[string]string{"README": "source of " + s.name + " " + s.version + ", made by gatehouse apttest\n"}
	// gzip rather than xz everywhere: dpkg-source accepts both, and an xz
	// writer costs tens of MiB of allocation per stream.
	tn := s.tarballNames()
	if s.native() {
		err = mk(tn[0], ".gz", readme)
	} else {
		err = mk(tn[0], ".gz", readme)
		if err == nil {
			err = mk(tn[1], ".gz", map[string]string{
				"debian/changelog": s.name + " (" + s.version + ") unstable; urgency=medium\n\n  * apttest.\n\n -- gatehouse apttest <apttest@example.org>  Mon, 01 Jan 2024 00:00:00 +0000\n",
			})
		}
	}
	if err != nil {
		return nil, nil, fmt.Errorf("repobuild: source %s %s: %w", s.name, s.version, err)
	}
	return names, data, nil
}

// tarballNames are the names of the files tarballs returns, in order.
func (s *sourcePkg) tarballNames() []string {
	if s.native() {
		return []string{s.name + "_" + noEpoch(s.version) + ".tar.gz"}
	}
	return []string{s.name + "_" + s.upstream() + ".orig.tar.gz", s.name + "_" + noEpoch(s.version) + ".debian.tar.gz"}
}

func (s *sourcePkg) format() string {
	if s.native() {
		return "3.0 (native)"
	}
	return "3.0 (quilt)"
}

func (s *sourcePkg) dscName() string { return s.name + "_" + noEpoch(s.version) + ".dsc" }

// dsc returns the .dsc for the given tarballs.
func (s *sourcePkg) dsc(names []string, infos []fileInfo) ([]byte, error) {
	p := &deb822.Paragraph{}
	p.Set("Format", s.format())
	p.Set("Source", s.name)
	p.Set("Binary", strings.Join(s.binaries, ", "))
	p.Set("Architecture", strings.Join(s.arches, " "))
	p.Set("Version", s.version)
	p.Set("Maintainer", "gatehouse apttest <apttest@example.org>")
	p.Set("Standards-Version", "4.6.2")
	p.Set("Checksums-Sha256", fileList(names, infos, func(f fileInfo) string { return f.SHA256 }))
	p.Set("Files", fileList(names, infos, func(f fileInfo) string { return f.MD5 }))
	var buf bytes.Buffer
	w := deb822.NewWriter(&buf)
	if err := w.Write(p); err != nil {
		return nil, fmt.Errorf("repobuild: source %s %s: .dsc: %w", s.name, s.version, err)
	}
	if err := w.Flush(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// fileList formats a .dsc/Sources file list value ("\nHASH SIZE NAME"...).
func fileList(names []string, infos []fileInfo, h func(fileInfo) string) string {
	var b strings.Builder
	for i, n := range names {
		fmt.Fprintf(&b, "\n%s %d %s", h(infos[i]), infos[i].Size, n)
	}
	return b.String()
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
