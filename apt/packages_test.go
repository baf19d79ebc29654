package apt

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func readPackages(t testing.TB, in string) ([]*Package, error) {
	t.Helper()
	pr := NewPackagesReader(strings.NewReader(in), "Packages")
	var out []*Package
	for {
		p, err := pr.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, p)
	}
}

const stanza = "Package: foo\nSource: foo-src (1.0)\nVersion: 1:1.0-1\nArchitecture: amd64\nMulti-Arch: same\n" +
	"Priority: optional\nSection: libs\nDepends: libc6 (>= 2.34), bar | baz\nPre-Depends: dpkg (>= 1.15)\n" +
	"Recommends: r\nProvides: p\nConflicts: c\nBreaks: b\nDescription: foo\n long\n" +
	"Filename: ./pool/main/f/foo/foo_1.0-1_amd64.deb\nSize: 1234\nMD5sum: " + md5a + "\nSHA1: " + sha1a + "\nSHA256: " + sha256a + "\n"

func TestPackagesReader(t *testing.T) {
	ps, err := readPackages(t, stanza+"\n"+strings.Replace(stanza, "Package: foo", "Package: foo2", 1))
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 2 || ps[1].Name != "foo2" {
		t.Fatalf("got %d packages", len(ps))
	}
	p := ps[0]
	p.Para = nil
	want := &Package{
		Name: "foo", Version: "1:1.0-1", Architecture: "amd64", Source: "foo-src (1.0)",
		Filename: "pool/main/f/foo/foo_1.0-1_amd64.deb", Priority: "optional", Section: "libs", MultiArch: "same",
		Size: 1234, MD5Sum: md5a, SHA1: sha1a, SHA256: sha256a,
		Depends: "libc6 (>= 2.34), bar | baz", PreDepends: "dpkg (>= 1.15)", Recommends: "r", Provides: "p", Conflicts: "c", Breaks: "b",
	}
	if diff := cmp.Diff(want, p); diff != "" {
		t.Errorf("package (-want +got):\n%s", diff)
	}
	if e := p.Hashes(); e.Path != p.Filename || e.Size != 1234 {
		t.Errorf("Hashes() = %+v", e)
	}
}

func TestPackagesReaderErrors(t *testing.T) {
	drop := func(field string) string {
		var b strings.Builder
		for _, l := range strings.SplitAfter(stanza, "\n") {
			if !strings.HasPrefix(l, field+":") {
				b.WriteString(l)
			}
		}
		return b.String()
	}
	repl := func(old, new string) string { return strings.Replace(stanza, old, new, 1) }
	tests := []struct{ name, in, msg string }{
		{"no Package", drop("Package"), "missing or empty Package"},
		{"no Version", drop("Version"), "missing or empty Version"},
		{"no Architecture", drop("Architecture"), "missing or empty Architecture"},
		{"no Filename", drop("Filename"), "missing or empty Filename"},
		{"no Size", drop("Size"), "missing or empty Size"},
		{"weak hashes only", drop("SHA256"), "no SHA256 or SHA512"},
		{"bad size", repl("Size: 1234", "Size: 12x4"), "not a decimal"},
		{"bad sha256", repl("SHA256: 0", "SHA256: x"), "SHA256: hash"},
		{"short md5", repl("MD5sum: 0", "MD5sum: "), "MD5Sum: hash"},
		{"escaping filename", repl("./pool/main", "../../etc"), "unsafe repository path"},
		{"absolute filename", repl("./pool/main", "/pool/main"), "unsafe repository path"},
		{"deb822 error", "Package: a\nPackage: b\n", "duplicate field"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// A good stanza first: the error must name the second one's line.
			ps, err := readPackages(t, stanza+"\n"+tc.in)
			if !errors.Is(err, ErrIndex) || !strings.Contains(err.Error(), tc.msg) || !strings.Contains(err.Error(), "Packages:") {
				t.Fatalf("err = %v, want ErrIndex with %q", err, tc.msg)
			}
			if len(ps) != 1 {
				t.Errorf("%d packages before the error, want 1", len(ps))
			}
		})
	}
}

// TestRealPackagesFile parses every stanza of the Packages file apt
// downloaded; each must satisfy the mirror's requirements.
func TestRealPackagesFile(t *testing.T) {
	if testing.Short() {
		t.Skip("reads a 50 MB file")
	}
	rels, _ := filepath.Glob("/var/lib/apt/lists/*_dists_bookworm_InRelease")
	if len(rels) == 0 {
		t.Skip("apt-get update has not fetched bookworm")
	}
	data := realPackages(t, strings.TrimSuffix(rels[0], "InRelease")+"main_binary-amd64_Packages")
	pr := NewPackagesReader(bytes.NewReader(data), "Packages")
	n, all := 0, 0
	for {
		p, err := pr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		n++
		if p.Architecture == "all" {
			all++
		}
		if !strings.HasPrefix(p.Filename, "pool/main/") || len(p.SHA256) != 64 {
			t.Fatalf("%s: Filename %q SHA256 %q", p.Name, p.Filename, p.SHA256)
		}
	}
	if n < 50000 {
		t.Fatalf("only %d packages", n)
	}
	// Debian still repeats "all" packages in binary-amd64 despite
	// No-Support-for-Architecture-all, which only withdraws the promise.
	t.Logf("%d packages, %d of them architecture all", n, all)
}

func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (package dpkg-dev)", tool)
		}
	}
}

func run(t *testing.T, dir, name string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, stderr.String())
	}
	return out
}

// TestDpkgScanpackages parses a Packages file written by the real
// dpkg-scanpackages for a real .deb, in flat-repository form ("./" paths).
func TestDpkgScanpackages(t *testing.T) {
	needTools(t, "dpkg-deb", "dpkg-scanpackages")
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	os.MkdirAll(filepath.Join(root, "DEBIAN"), 0o755)
	os.MkdirAll(filepath.Join(root, "usr/share/doc/hello-gh"), 0o755)
	os.WriteFile(filepath.Join(root, "usr/share/doc/hello-gh/README"), []byte("hi\n"), 0o644)
	os.WriteFile(filepath.Join(root, "DEBIAN/control"), []byte("Package: hello-gh\nVersion: 2:1.0~rc1-3\nArchitecture: all\n"+
		"Maintainer: Example <a@example.org>\nDepends: libc6 (>= 2.34) | musl\nDescription: test package\n multi-line\n .\n description\n"), 0o644)
	repo := filepath.Join(dir, "repo")
	os.Mkdir(repo, 0o755)
	run(t, dir, "dpkg-deb", "--build", "--root-owner-group", root, filepath.Join(repo, "hello-gh_1.0~rc1-3_all.deb"))
	out := run(t, repo, "dpkg-scanpackages", "--multiversion", ".", "/dev/null")
	ps, err := readPackages(t, string(out))
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if len(ps) != 1 {
		t.Fatalf("%d packages", len(ps))
	}
	p := ps[0]
	deb, _ := os.ReadFile(filepath.Join(repo, "hello-gh_1.0~rc1-3_all.deb"))
	sum := sha256.Sum256(deb)
	if p.Name != "hello-gh" || p.Version != "2:1.0~rc1-3" || p.Architecture != "all" || p.Depends != "libc6 (>= 2.34) | musl" ||
		p.Filename != "hello-gh_1.0~rc1-3_all.deb" || p.Size != int64(len(deb)) || p.SHA256 != hex.EncodeToString(sum[:]) {
		t.Errorf("parsed %+v\nfrom %s", p, out)
	}
	if d := p.Para.Value("Description"); d != "test package\nmulti-line\n.\ndescription" {
		t.Errorf("Description %q", d)
	}
}

// TestDpkgScansources parses a Sources file written by the real
// dpkg-scansources for a source package built by the real dpkg-source.
func TestDpkgScansources(t *testing.T) {
	needTools(t, "dpkg-source", "dpkg-scansources")
	dir := t.TempDir()
	src := filepath.Join(dir, "hello-gh-1.0")
	os.MkdirAll(filepath.Join(src, "debian/source"), 0o755)
	files := map[string]string{
		"debian/source/format": "3.0 (native)\n",
		"debian/control": "Source: hello-gh\nSection: misc\nPriority: optional\nMaintainer: Example <a@example.org>\n" +
			"Standards-Version: 4.6.2\n\nPackage: hello-gh\nArchitecture: all\nDescription: test\n test\n",
		"debian/changelog": "hello-gh (1.0) unstable; urgency=medium\n\n  * Test.\n\n -- Example <a@example.org>  Sat, 10 Jun 2023 08:52:18 +0000\n",
		"debian/rules":     "#!/usr/bin/make -f\n%:\n\tdh $@\n",
		"hello.txt":        "hello\n",
	}
	for name, body := range files {
		os.WriteFile(filepath.Join(src, name), []byte(body), 0o755)
	}
	pool := filepath.Join(dir, "pool/main/h/hello-gh")
	os.MkdirAll(pool, 0o755)
	run(t, pool, "dpkg-source", "-b", src)
	out := run(t, dir, "dpkg-scansources", "pool", "/dev/null")
	sr := NewSourcesReader(bytes.NewReader(out), "Sources")
	s, err := sr.Next()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if _, err := sr.Next(); err != io.EOF {
		t.Fatalf("second entry: %v", err)
	}
	if s.Name != "hello-gh" || s.Version != "1.0" || s.Directory != "pool/main/h/hello-gh" || len(s.Files) != 2 {
		t.Fatalf("parsed %+v\nfrom %s", s, out)
	}
	for _, f := range s.Files {
		data, err := os.ReadFile(filepath.Join(dir, s.Directory, f.Name))
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(data)
		if f.Size != int64(len(data)) || f.SHA256 != hex.EncodeToString(sum[:]) || len(f.MD5Sum) != 32 || len(f.SHA1) != 40 {
			t.Errorf("file %+v does not match %d bytes %x", f, len(data), sum)
		}
	}
}

const srcStanza = "Package: foo\nVersion: 1.0-1\nDirectory: pool/main/f/foo\n" +
	"Files:\n " + md5a + " 100 foo_1.0-1.dsc\n " + md5a + " 2000 foo_1.0.orig.tar.gz\n" +
	"Checksums-Sha256:\n " + sha256a + " 100 foo_1.0-1.dsc\n " + sha256a + " 2000 foo_1.0.orig.tar.gz\n"

func TestSourcesReaderErrors(t *testing.T) {
	repl := func(old, new string) string { return strings.Replace(srcStanza, old, new, 1) }
	tests := []struct{ name, in, msg string }{
		{"no Package", repl("Package: foo\n", ""), "missing or empty Package"},
		{"no Directory", repl("Directory: pool/main/f/foo\n", ""), "missing or empty Directory"},
		{"escaping Directory", repl("pool/main/f/foo", "pool/../../etc"), "unsafe repository path"},
		{"no files", "Package: a\nVersion: 1\nDirectory: d\n", "no Files"},
		{"md5 only", "Package: a\nVersion: 1\nDirectory: d\nFiles:\n " + md5a + " 1 a.dsc\n", "no SHA256 or SHA512"},
		{"path in name", repl(" 100 foo_1.0-1.dsc\n "+md5a, " 100 ../foo_1.0-1.dsc\n "+md5a), "not a plain file name"},
		{"slash in name", repl(" 2000 foo_1.0.orig.tar.gz\nChecksums", " 2000 x/foo.tar.gz\nChecksums"), "not a plain file name"},
		{"size disagrees", repl(sha256a+" 100", sha256a+" 101"), "size 101 here but 100"},
		{"bad line", repl(" 2000 foo_1.0.orig.tar.gz\nChecksums", " 2000\nChecksums"), "want \"HASH SIZE NAME\""},
		{"duplicate", repl("2000 foo_1.0.orig.tar.gz\nChecksums", "2000 foo_1.0-1.dsc\nChecksums"), "listed twice"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sr := NewSourcesReader(strings.NewReader(srcStanza+"\n"+tc.in), "Sources")
			if _, err := sr.Next(); err != nil {
				t.Fatal(err)
			}
			_, err := sr.Next()
			if !errors.Is(err, ErrIndex) || !strings.Contains(err.Error(), tc.msg) || !strings.Contains(err.Error(), "Sources:") {
				t.Fatalf("err = %v, want ErrIndex with %q", err, tc.msg)
			}
			if _, err2 := sr.Next(); err2 != err {
				t.Errorf("error not sticky: %v", err2)
			}
		})
	}
}

// BenchmarkPackagesReader measures typed parsing of the real Packages file
// (or ~50 MB of synthetic stanzas when apt has none).
func BenchmarkPackagesReader(b *testing.B) {
	var data []byte
	if rels, _ := filepath.Glob("/var/lib/apt/lists/*_dists_bookworm_InRelease"); len(rels) > 0 {
		data = realPackages(b, strings.TrimSuffix(rels[0], "InRelease")+"main_binary-amd64_Packages")
	} else {
		var buf bytes.Buffer
		for i := 0; buf.Len() < 50e6; i++ {
			buf.WriteString(strings.Replace(stanza, "Package: foo", "Package: foo"+strings.Repeat("x", i%20), 1) + "\n")
		}
		data = buf.Bytes()
	}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		pr := NewPackagesReader(bytes.NewReader(data), "Packages")
		for {
			_, err := pr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
		}
	}
}

// TestPackagesUnsafePathIs: an escaping Filename is both an index error
// and an unsafe path, so callers can tell either by errors.Is.
func TestPackagesUnsafePathIs(t *testing.T) {
	pr := NewPackagesReader(strings.NewReader("Package: a\nVersion: 1\nArchitecture: all\nFilename: pool/../../etc/passwd\nSize: 1\nSHA256: "+strings.Repeat("0", 64)+"\n"), "Packages")
	_, err := pr.Next()
	if !errors.Is(err, ErrIndex) || !errors.Is(err, ErrUnsafePath) {
		t.Errorf("err %v: want ErrIndex and ErrUnsafePath", err)
	}
}
