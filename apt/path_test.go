package apt

import (
	"errors"
	"strings"
	"testing"
)

func TestCleanRepoPath(t *testing.T) {
	good := map[string]string{
		"pool/main/a/apt/apt_2.6.1_amd64.deb":   "pool/main/a/apt/apt_2.6.1_amd64.deb",
		"./foo_1.0_all.deb":                     "foo_1.0_all.deb",
		"././foo.deb":                           "foo.deb",
		"pool/main/f/foo/foo_1%3a2.0_amd64.deb": "pool/main/f/foo/foo_1%3a2.0_amd64.deb",
		"main/binary-amd64/Packages.xz":         "main/binary-amd64/Packages.xz",
		"a/..b/c..":                             "a/..b/c..",
	}
	for in, want := range good {
		if got, err := CleanRepoPath(in); err != nil || got != want {
			t.Errorf("CleanRepoPath(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{
		"", "./", "/etc/passwd", "//x", "..", "../x", "pool/../../x", "pool/./x", "pool//x", "pool/x/",
		"pool\\..\\x", "pool/x\x00.deb", "pool/x\n.deb", "pool/\x7f", "a/.", "./../x",
		strings.Repeat("a", 256), strings.Repeat("a/", 2049) + "a",
	} {
		if got, err := CleanRepoPath(in); !errors.Is(err, ErrUnsafePath) {
			t.Errorf("CleanRepoPath(%q) = %q, %v; want ErrUnsafePath", in, got, err)
		}
	}
}
