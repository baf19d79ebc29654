package mirror

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzReadIndex feeds arbitrary Packages and Sources text to the pool
// collector: it must return entries or an error, never panic, and never
// accept a pool path outside pool/.
func FuzzReadIndex(f *testing.F) {
	f.Add([]byte("Package: a\nVersion: 1\nArchitecture: all\nFilename: pool/main/a/a_1_all.deb\nSize: 3\nSHA256: "+strings.Repeat("0", 64)+"\n"), false)
	f.Add([]byte("Package: a\nVersion: 1\nArchitecture: all\nFilename: ../etc/passwd\nSize: 3\nSHA256: "+strings.Repeat("0", 64)+"\n"), false)
	f.Add([]byte("Package: s\nVersion: 1\nDirectory: pool/main/s\nChecksums-Sha256:\n "+strings.Repeat("a", 64)+" 10 s_1.dsc\n"), true)
	f.Add([]byte("Package: s\nVersion: 1\nDirectory: pool/../x\nChecksums-Sha256:\n "+strings.Repeat("a", 64)+" 10 s_1.dsc\n"), true)
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte, sources bool) {
		name := "Packages"
		if sources {
			name = "Sources"
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		ps := newPoolSet()
		if _, err := readIndex(p, "stable", "main/binary-amd64/"+name, 0, func(e poolEntry, w string) error { e.Filename = strings.Clone(e.Filename); return ps.add(e, w) }); err != nil {
			return
		}
		for fn := range ps.files {
			if rel, ok := poolRel(fn); !ok || strings.Contains("/"+rel+"/", "/../") || strings.HasPrefix(rel, "/") {
				t.Fatalf("accepted pool path %q", fn)
			}
		}
	})
}

func FuzzParseRate(f *testing.F) {
	for _, s := range []string{"20MiB", "1k", "1.5Gi/s", "", "x", "1e400"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseRate(s)
		if err == nil && n <= 0 {
			t.Fatalf("ParseRate(%q) = %d without error", s, n)
		}
	})
}

// TestReadIndexRefusesEscape: index entries naming paths outside the tree
// are refusals, and files outside pool/ are errors.
func TestReadIndexRefusesEscape(t *testing.T) {
	h := strings.Repeat("ab", 32)
	dir := t.TempDir()
	for _, tc := range []struct {
		name, text string
		refused    bool
	}{
		{"Packages", "Package: a\nVersion: 1\nArchitecture: all\nFilename: pool/../../etc/passwd\nSize: 3\nSHA256: " + h + "\n", true},
		{"Packages", "Package: a\nVersion: 1\nArchitecture: all\nFilename: /etc/passwd\nSize: 3\nSHA256: " + h + "\n", true},
		{"Packages", "Package: a\nVersion: 1\nArchitecture: all\nFilename: pool/main/a/a_1.deb\nSize: 3\nMD5sum: 00000000000000000000000000000000\n", true},
		{"Packages", "Package: a\nVersion: 1\nArchitecture: all\nFilename: dists/x/a_1.deb\nSize: 3\nSHA256: " + h + "\n", false},
		{"Sources", "Package: s\nVersion: 1\nDirectory: ../s\nChecksums-Sha256:\n " + h + " 10 s_1.dsc\n", true},
		{"Sources", "Package: s\nVersion: 1\nDirectory: pool/main/s\nChecksums-Sha256:\n " + h + " 10 ../s_1.dsc\n", true},
	} {
		p := filepath.Join(dir, tc.name)
		if err := os.WriteFile(p, []byte(tc.text), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := readIndex(p, "stable", "main/"+tc.name, 0, newPoolSet().add)
		if err == nil || errors.Is(err, ErrRefused) != tc.refused {
			t.Errorf("%s %q: err %v, want refused=%t", tc.name, tc.text, err, tc.refused)
		}
	}
}
