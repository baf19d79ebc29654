package apttest

import (
	"bytes"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"gatehouse/apt/compress"
	"gatehouse/apt/deb822"
)

// tool runs a real program, skipping the test when it is not installed.
func tool(t testing.TB, name string, args ...string) (string, error) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Skipf("%s not installed", name)
	}
	cmd := exec.Command(name, args...)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C", "HOME=" + t.TempDir()}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func paragraphs(t testing.TB, name string, data []byte) []*deb822.Paragraph {
	t.Helper()
	r := deb822.NewReader(bytes.NewReader(data), name, deb822.Limits{})
	var ps []*deb822.Paragraph
	for {
		p, err := r.Next()
		if errors.Is(err, io.EOF) {
			return ps
		}
		if err != nil {
			t.Fatalf("parse %s: %v", name, err)
		}
		ps = append(ps, p)
	}
}

func readFile(t testing.TB, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func sha256hex(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }
func md5hex(b []byte) string    { s := md5.Sum(b); return hex.EncodeToString(s[:]) }

// hashList parses a Release/Sources file list ("\nHASH SIZE PATH"...).
func hashList(t testing.TB, v string) map[string][2]string {
	t.Helper()
	m := map[string][2]string{}
	for _, line := range strings.Split(strings.TrimPrefix(v, "\n"), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 {
			t.Fatalf("bad file list line %q", line)
		}
		m[f[2]] = [2]string{f[0], f[1]}
	}
	return m
}

// checkRelease verifies, independently of the code that wrote it, that a
// Release file lists exactly the index files present under dir (besides
// the by-hash copies and the Release files themselves), each with its true
// size and digests, that every listed file absent from disk is one of
// extra, and that by-hash copies exist when announced. It returns the
// parsed Release paragraph.
func checkRelease(t testing.TB, dir string, extra []string) *deb822.Paragraph {
	t.Helper()
	ps := paragraphs(t, "Release", readFile(t, filepath.Join(dir, "Release")))
	if len(ps) != 1 {
		t.Fatalf("%s/Release: %d paragraphs", dir, len(ps))
	}
	rel := ps[0]
	sha := hashList(t, rel.Value("SHA256"))
	md := map[string][2]string{}
	if v, ok := rel.Get("MD5Sum"); ok {
		md = hashList(t, v)
	}
	byHash := rel.Value("Acquire-By-Hash") == "yes"
	for p, hs := range sha {
		b, err := os.ReadFile(filepath.Join(dir, p))
		if errors.Is(err, fs.ErrNotExist) {
			if !slices.Contains(extra, p) {
				t.Errorf("%s/Release lists %s, which does not exist", dir, p)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if slices.Contains(extra, p) {
			t.Errorf("extra release file %s exists", p)
		}
		if hs[0] != sha256hex(b) || hs[1] != strconv.Itoa(len(b)) {
			t.Errorf("%s: Release says %v, file has %s %d", p, hs, sha256hex(b), len(b))
		}
		if m, ok := md[p]; ok && (m[0] != md5hex(b) || m[1] != hs[1]) {
			t.Errorf("%s: MD5Sum says %v", p, m)
		}
		if byHash && !strings.HasSuffix(p, "/Release") {
			c, err := os.ReadFile(filepath.Join(dir, filepath.Dir(p), "by-hash/SHA256", hs[0]))
			if err != nil || !bytes.Equal(c, b) {
				t.Errorf("%s: by-hash copy missing or different: %v", p, err)
			}
		}
	}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			if d != nil && d.Name() == "by-hash" {
				return filepath.SkipDir
			}
			return err
		}
		r, _ := filepath.Rel(dir, p)
		if r == "Release" || r == "InRelease" || r == "Release.gpg" ||
			strings.HasSuffix(r, ".deb") || strings.HasPrefix(r, "archive-keyring.") { // flat repositories

			return nil
		}
		if _, ok := sha[filepath.ToSlash(r)]; !ok {
			t.Errorf("%s exists but is not listed in Release", r)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return rel
}

// checkIndexes checks every Packages and Sources file under a suite: each
// variant decompresses to the plain one, and every pool file listed exists
// with the listed size and digests. It returns the Packages stanzas by
// index path ("main/binary-amd64/Packages").
func checkIndexes(t testing.TB, root, suiteDir string) map[string][]*deb822.Paragraph {
	t.Helper()
	out := map[string][]*deb822.Paragraph{}
	err := filepath.WalkDir(suiteDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			if d != nil && d.Name() == "by-hash" {
				return filepath.SkipDir
			}
			return err
		}
		base := compress.TrimSuffix(d.Name())
		if base != "Packages" && base != "Sources" {
			return nil
		}
		plain := readFile(t, filepath.Join(filepath.Dir(p), base))
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		rc, err := compress.Open(f, d.Name())
		if err != nil {
			return err
		}
		got, err := io.ReadAll(rc)
		if err != nil {
			return err
		}
		if !bytes.Equal(got, plain) {
			t.Errorf("%s does not decompress to %s", p, base)
		}
		if d.Name() != base {
			return nil
		}
		r, _ := filepath.Rel(suiteDir, p)
		for _, st := range paragraphs(t, p, plain) {
			if base == "Packages" {
				out[filepath.ToSlash(r)] = append(out[filepath.ToSlash(r)], st)
				b := readFile(t, filepath.Join(root, st.Value("Filename")))
				if st.Value("SHA256") != sha256hex(b) || st.Value("Size") != strconv.Itoa(len(b)) {
					t.Errorf("%s: %s: listed digest/size do not match the file", r, st.Value("Filename"))
				}
				if m, ok := st.Get("MD5sum"); ok && m != md5hex(b) {
					t.Errorf("%s: %s: MD5sum does not match", r, st.Value("Filename"))
				}
				continue
			}
			for name, hs := range hashList(t, st.Value("Checksums-Sha256")) {
				b := readFile(t, filepath.Join(root, st.Value("Directory"), name))
				if hs[0] != sha256hex(b) || hs[1] != strconv.Itoa(len(b)) {
					t.Errorf("%s: source %s file %s: listed digest/size do not match", r, st.Value("Package"), name)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
