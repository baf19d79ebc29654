package repobuild

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"gatehouse/apt/deb822"
)

// Package describes one binary package of a test repository. Relation fields
// (Depends, ...) are written verbatim into the control file and the Packages
// index, so they may use every dpkg syntax ("a (>= 1.0) | b, c:any").
type Package struct {
	Name, Version, Arch                                  string // Arch "all" puts the package into every architecture's index
	Depends, PreDepends, Recommends, Provides, Conflicts string
	Breaks, Replaces                                     string
	Priority, Section, Description                       string
	// Source is the source package name; empty means Name. It decides the
	// pool directory and, with Suite.Sources, the Sources entry.
	Source string
	// MultiArch is the Multi-Arch field ("same", "foreign", "allowed"), or
	// empty for none.
	MultiArch string
	// Size is the size in bytes of a pseudo-random payload file in the data
	// tarball, for realistic .deb sizes; 0 means 256. The payload is derived
	// from name, version and architecture, so a rebuild gives the same bytes.
	Size int
	// Files are extra files of the data tarball: a relative path (no "..",
	// not under DEBIAN/) to its content.
	Files map[string]string
	// Extra are further control fields, written in name order after the
	// standard ones (e.g. "Essential": "yes").
	Extra map[string]string
}

// debEpoch is the fixed timestamp of every file in a built .deb, so that
// the same Package always gives the same bytes.
var debEpoch = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

const defaultPayload = 256

func (p *Package) source() string {
	if p.Source != "" {
		return p.Source
	}
	return p.Name
}

func (p *Package) payloadSize() int {
	if p.Size > 0 {
		return p.Size
	}
	return defaultPayload
}

func (p *Package) description() string {
	if p.Description != "" {
		return p.Description
	}
	return "test package " + p.Name + "\nBuilt by gatehouse apttest for tests; it installs nothing useful."
}

func (p *Package) section() string {
	if p.Section != "" {
		return p.Section
	}
	return "misc"
}

func (p *Package) priority() string {
	if p.Priority != "" {
		return p.Priority
	}
	return "optional"
}

// installedSize is the Installed-Size in KiB, as dpkg-gencontrol rounds.
func (p *Package) installedSize() int {
	n := p.payloadSize()
	for _, c := range p.Files {
		n += len(c)
	}
	return n/1024 + 1
}

// check rejects packages that would produce unusable file names or control
// files before any work is done, naming the package.
func (p *Package) check() error {
	if p.Name == "" || p.Version == "" || p.Arch == "" {
		return fmt.Errorf("package %q %q %q: Name, Version and Arch are required", p.Name, p.Version, p.Arch)
	}
	for _, s := range []string{p.Name, p.Version, p.Arch, p.source()} {
		if strings.ContainsAny(s, "/ \t\n_") || s == "." || s == ".." {
			return fmt.Errorf("package %s_%s_%s: %q may not contain '/', '_' or whitespace", p.Name, p.Version, p.Arch, s)
		}
	}
	for f := range p.Files {
		if err := checkDataPath(f); err != nil {
			return fmt.Errorf("package %s: %w", p.Name, err)
		}
	}
	return nil
}

func checkDataPath(f string) error {
	c := path.Clean(f)
	if f == "" || path.IsAbs(f) || c != f || c == "." || strings.HasPrefix(c, "../") || c == ".." || c == "DEBIAN" || strings.HasPrefix(c, "DEBIAN/") {
		return fmt.Errorf("file %q: want a clean relative path outside DEBIAN/", f)
	}
	return nil
}

// controlParagraph is the DEBIAN/control content; the Packages stanza
// starts from the same fields so both always agree.
func (p *Package) controlParagraph() *deb822.Paragraph {
	c := &deb822.Paragraph{}
	add := func(name, value string) {
		if value != "" {
			c.Fields = append(c.Fields, deb822.Field{Name: name, Value: value})
		}
	}
	add("Package", p.Name)
	if p.source() != p.Name {
		add("Source", p.source())
	}
	add("Version", p.Version)
	add("Architecture", p.Arch)
	add("Maintainer", "gatehouse apttest <apttest@example.org>")
	add("Installed-Size", strconv.Itoa(p.installedSize()))
	add("Multi-Arch", p.MultiArch)
	add("Provides", p.Provides)
	add("Pre-Depends", p.PreDepends)
	add("Depends", p.Depends)
	add("Recommends", p.Recommends)
	add("Conflicts", p.Conflicts)
	add("Breaks", p.Breaks)
	add("Replaces", p.Replaces)
	keys := make([]string, 0, len(p.Extra))
	for k := range p.Extra {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		add(k, p.Extra[k])
	}
	add("Section", p.section())
	add("Priority", p.priority())
	add("Description", p.description())
	return c
}

// dataFiles lists the data tarball's regular files (for Contents indexes).
func (p *Package) dataFiles() []string {
	files := []string{p.payloadPath()}
	for f := range p.Files {
		files = append(files, f)
	}
	sort.Strings(files)
	return files
}

func (p *Package) payloadPath() string {
	return "usr/share/doc/" + p.Name + "/payload"
}

// payload writes the package's deterministic pseudo-random payload.
func (p *Package) payload(w io.Writer) error {
	seed := sha256.Sum256([]byte(p.Name + "\x00" + p.Version + "\x00" + p.Arch))
	return pseudoRandom(w, seed, int64(p.payloadSize()))
}

func pseudoRandom(w io.Writer, seed [32]byte, n int64) error {
	src := rand.NewChaCha8(seed)
	buf := make([]byte, 32<<10)
	for n > 0 {
		chunk := buf[:min(int64(len(buf)), n)]
		_, _ = src.Read(chunk) // ChaCha8.Read never fails
		if _, err := w.Write(chunk); err != nil {
			return err
		}
		n -= int64(len(chunk))
	}
	return nil
}

// debCache keeps built .deb bytes for the life of the process, keyed by
// everything that goes into the archive, so that tests building similar
// repositories pay for dpkg-deb once. It is bounded; beyond the bound,
// packages are simply rebuilt.
var debCache = struct {
	sync.Mutex
	m     map[[32]byte][]byte
	bytes int
}{m: map[[32]byte][]byte{}}

const debCacheMax = 128 << 20

func (p *Package) cacheKey() ([32]byte, error) {
	var buf bytes.Buffer
	w := deb822.NewWriter(&buf)
	if err := w.Write(p.controlParagraph()); err != nil {
		return [32]byte{}, err
	}
	if err := w.Flush(); err != nil {
		return [32]byte{}, err
	}
	fmt.Fprintf(&buf, "\x00size=%d\x00", p.payloadSize())
	names := make([]string, 0, len(p.Files))
	for f := range p.Files {
		names = append(names, f)
	}
	sort.Strings(names)
	for _, f := range names {
		fmt.Fprintf(&buf, "%d:%s%d:%s", len(f), f, len(p.Files[f]), p.Files[f])
	}
	return sha256.Sum256(buf.Bytes()), nil
}

// buildDeb returns the .deb for p, from the cache or by running dpkg-deb.
func buildDeb(ctx context.Context, p *Package) ([]byte, error) {
	key, err := p.cacheKey()
	if err != nil {
		return nil, fmt.Errorf("repobuild: package %s_%s_%s: control file: %w", p.Name, p.Version, p.Arch, err)
	}
	debCache.Lock()
	b, ok := debCache.m[key]
	debCache.Unlock()
	if ok {
		return b, nil
	}
	b, err = runDpkgDeb(ctx, p)
	if err != nil {
		return nil, err
	}
	debCache.Lock()
	if _, dup := debCache.m[key]; !dup && debCache.bytes+len(b) <= debCacheMax {
		debCache.m[key] = b
		debCache.bytes += len(b)
	}
	debCache.Unlock()
	return b, nil
}

func runDpkgDeb(ctx context.Context, p *Package) (_ []byte, err error) {
	id := p.Name + "_" + p.Version + "_" + p.Arch
	tmp, err := os.MkdirTemp("", "repobuild-deb-")
	if err != nil {
		return nil, fmt.Errorf("repobuild: build %s: %w", id, err)
	}
	defer func() {
		if rerr := os.RemoveAll(tmp); rerr != nil && err == nil {
			err = fmt.Errorf("repobuild: build %s: remove staging dir: %w", id, rerr)
		}
	}()
	root := filepath.Join(tmp, "root")
	var ctl bytes.Buffer
	w := deb822.NewWriter(&ctl)
	if err := w.Write(p.controlParagraph()); err != nil {
		return nil, fmt.Errorf("repobuild: build %s: control file: %w", id, err)
	}
	if err := w.Flush(); err != nil {
		return nil, fmt.Errorf("repobuild: build %s: control file: %w", id, err)
	}
	if err := writeTree(root, "DEBIAN/control", ctl.Bytes()); err != nil {
		return nil, fmt.Errorf("repobuild: build %s: %w", id, err)
	}
	if err := writeTree(root, p.payloadPath(), nil); err != nil {
		return nil, fmt.Errorf("repobuild: build %s: %w", id, err)
	}
	pf, err := os.OpenFile(filepath.Join(root, filepath.FromSlash(p.payloadPath())), os.O_WRONLY|os.O_TRUNC, 0)
	if err == nil {
		err = p.payload(pf)
		if cerr := pf.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		return nil, fmt.Errorf("repobuild: build %s: payload: %w", id, err)
	}
	for f, c := range p.Files {
		if err := writeTree(root, f, []byte(c)); err != nil {
			return nil, fmt.Errorf("repobuild: build %s: %w", id, err)
		}
	}
	// Directories get fixed times and modes so the archive is the same on
	// every run whatever the umask.
	err = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if err := os.Chmod(p, 0o755); err != nil {
				return err
			}
		}
		return os.Chtimes(p, debEpoch, debEpoch)
	})
	if err != nil {
		return nil, fmt.Errorf("repobuild: build %s: prepare tree: %w", id, err)
	}
	out := filepath.Join(tmp, "out.deb")
	cmd := exec.CommandContext(ctx, "dpkg-deb", "--build", "--root-owner-group", "-Zgzip", "-z1", root, out)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C", "SOURCE_DATE_EPOCH=" + strconv.FormatInt(debEpoch.Unix(), 10)}
	if msg, err := cmd.CombinedOutput(); err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			return nil, fmt.Errorf("repobuild: build %s: dpkg-deb not found (install the dpkg package): %w", id, err)
		}
		return nil, fmt.Errorf("repobuild: build %s: dpkg-deb --build: %w: %s", id, err, bytes.TrimSpace(msg))
	}
	b, err := os.ReadFile(out)
	if err != nil {
		return nil, fmt.Errorf("repobuild: build %s: %w", id, err)
	}
	return b, nil
}

func writeTree(root, rel string, data []byte) error {
	p := filepath.Join(root, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	return os.WriteFile(p, data, 0o644)
}
