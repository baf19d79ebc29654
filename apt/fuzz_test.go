package apt

import (
	"bytes"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"gatehouse/apt/deb822"
)

func FuzzParseRelease(f *testing.F) {
	for _, name := range []string{"testdata/bookworm-security_InRelease"} {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(clearsignedBody(f, data))
	}
	f.Add([]byte("Origin: a\nDate: Sat, 1 Jun 2024 00:00:00 UTC\nComponents: main\nSHA256:\n " + sha256a + " 1 main/binary-all/Packages\n"))
	f.Add([]byte("MD5Sum:\n " + md5a + " 1 a\nSHA256:\n " + sha256a + " 2 a\n"))
	f.Add([]byte("Valid-Until: Sat, 1 Jun 2024 00:00:00 +0000\nAcquire-By-Hash: yes\n"))
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := ParseRelease(body)
		if err != nil {
			return
		}
		for i, e := range r.Files {
			if c, err := CleanRepoPath(e.Path); err != nil || c != e.Path {
				t.Fatalf("accepted unsafe path %q", e.Path)
			}
			if i > 0 && r.Files[i-1].Path >= e.Path {
				t.Fatalf("Files not sorted and unique at %q", e.Path)
			}
		}
		// Writing the raw paragraph back and parsing it again gives the
		// same Release: what a re-signing mirror relies on.
		var buf bytes.Buffer
		w := deb822.NewWriter(&buf)
		if err := w.Write(r.Para); err != nil {
			t.Fatalf("write accepted Release: %v", err)
		}
		w.Flush()
		r2, err := ParseRelease(buf.Bytes())
		if err != nil {
			t.Fatalf("re-parse written Release: %v\n%s", err, buf.Bytes())
		}
		if diff := cmp.Diff(r, r2, cmpopts.IgnoreFields(Release{}, "Para")); diff != "" {
			t.Fatalf("Release changed by write+parse (-want +got):\n%s", diff)
		}
		r.IndexFiles(r.Components, r.Architectures, true)
	})
}

func FuzzPackagesReader(f *testing.F) {
	f.Add([]byte(stanza))
	f.Add([]byte(stanza + "\n" + stanza))
	f.Add([]byte("Package: a\nVersion: 1\nArchitecture: all\nFilename: ./a.deb\nSize: 0\nSHA512: " + strings.Repeat("a", 128) + "\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		pr := NewPackagesReader(bytes.NewReader(data), "fuzz")
		for {
			p, err := pr.Next()
			if err != nil {
				if _, err2 := pr.Next(); err2 != err {
					t.Fatalf("error not sticky: %v then %v", err, err2)
				}
				return
			}
			if p.Name == "" || p.Version == "" || p.Architecture == "" || p.Size < 0 || (p.SHA256 == "" && p.SHA512 == "") {
				t.Fatalf("accepted incomplete package %+v", p)
			}
			if c, err := CleanRepoPath(p.Filename); err != nil || c != p.Filename {
				t.Fatalf("accepted unsafe Filename %q", p.Filename)
			}
		}
	})
}

func FuzzSourcesReader(f *testing.F) {
	f.Add([]byte(srcStanza))
	f.Add([]byte(srcStanza + "\n" + strings.Replace(srcStanza, "Files:", "Checksums-Sha1:\n "+sha1a+" 100 foo_1.0-1.dsc\nFiles:", 1)))
	f.Fuzz(func(t *testing.T, data []byte) {
		sr := NewSourcesReader(bytes.NewReader(data), "fuzz")
		for {
			s, err := sr.Next()
			if err == io.EOF {
				return
			}
			if err != nil {
				return
			}
			if c, err := CleanRepoPath(s.Directory); err != nil || c != s.Directory || len(s.Files) == 0 {
				t.Fatalf("accepted bad source %+v", s)
			}
			for _, f := range s.Files {
				if strings.Contains(f.Name, "/") || f.Name == "." || f.Name == ".." || f.Name == "" || (f.SHA256 == "" && f.SHA512 == "") {
					t.Fatalf("accepted bad file %+v", f)
				}
			}
		}
	})
}

func FuzzCleanRepoPath(f *testing.F) {
	for _, s := range []string{"pool/main/a/a.deb", "./a.deb", "../x", "/x", "a//b", "a\\b", "a/./b", ".", "..", "...", "a/..."} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		c, err := CleanRepoPath(p)
		if err != nil {
			return
		}
		if c == "" || path.Clean(c) != c || path.IsAbs(c) || strings.ContainsAny(c, "\\\x00") {
			t.Fatalf("CleanRepoPath(%q) = %q: not a clean relative path", p, c)
		}
		if !strings.HasPrefix(filepath.Join("/srv/root", c), "/srv/root/") {
			t.Fatalf("CleanRepoPath(%q) = %q escapes the root", p, c)
		}
		if c2, err := CleanRepoPath(c); err != nil || c2 != c {
			t.Fatalf("not idempotent: %q -> %q -> %q, %v", p, c, c2, err)
		}
	})
}
