package apt

import (
	"errors"
	"fmt"
	"strings"
)

// ErrUnsafePath marks a repository path CleanRepoPath refuses.
var ErrUnsafePath = errors.New("unsafe repository path")

// Longest accepted path and path element: the mirror stores each path as a
// file, and Linux refuses longer names.
const (
	maxPathLen    = 4096
	maxElementLen = 255
)

// CleanRepoPath checks a path taken from repository metadata (a Packages
// Filename, a Sources Directory or file name, a Release file entry) before
// it is used as a URL suffix or a file name under the mirror's root. It
// returns p without leading "./" (flat repositories write "./foo.deb") and
// refuses, wrapping ErrUnsafePath: empty paths, absolute paths, "." and ".."
// elements, empty elements ("a//b", trailing "/"), backslashes, NUL and
// other control bytes, and over-long paths or elements. It never rewrites
// anything else, so the result names the same URL the upstream serves.
func CleanRepoPath(p string) (string, error) {
	orig := p
	for strings.HasPrefix(p, "./") {
		p = p[2:]
	}
	bad := func(why string) (string, error) {
		return "", fmt.Errorf("%w %q: %s", ErrUnsafePath, clip(orig), why)
	}
	switch {
	case p == "":
		return bad("empty")
	case len(p) > maxPathLen:
		return bad("too long")
	case p[0] == '/':
		return bad("absolute")
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; c < 0x20 || c == 0x7f {
			return bad("control character")
		} else if c == '\\' {
			return bad("backslash")
		}
	}
	for elem := range strings.SplitSeq(p, "/") {
		switch {
		case elem == "":
			return bad("empty path element")
		case elem == "." || elem == "..":
			return bad("\".\" or \"..\" element")
		case len(elem) > maxElementLen:
			return bad("path element too long")
		}
	}
	return p, nil
}
