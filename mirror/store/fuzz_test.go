package store

import (
	"path/filepath"
	"strings"
	"testing"
)

// FuzzCheckRel: whatever CheckRel accepts stays inside its base directory
// when joined, and is already in canonical form.
func FuzzCheckRel(f *testing.F) {
	for _, s := range []string{"main/h/hello_1.0_amd64.deb", "../x", "a/../../b", "/etc/passwd", "a//b", "a/./b", "a\\b", "a\x00b", "", ".", "..", "a/", "+~:%", "..."} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, rel string) {
		if CheckRel(rel) != nil {
			return
		}
		if !filepath.IsLocal(rel) {
			t.Fatalf("CheckRel accepted non-local %q", rel)
		}
		base := "/base"
		j := filepath.Join(base, filepath.FromSlash(rel))
		if !strings.HasPrefix(j, base+"/") {
			t.Fatalf("CheckRel accepted %q, which joins to %q", rel, j)
		}
		if filepath.ToSlash(filepath.Clean(rel)) != rel {
			t.Fatalf("CheckRel accepted non-canonical %q", rel)
		}
	})
}
