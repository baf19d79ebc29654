package mirror

import (
	"path"
	"strings"

	"gatehouse/mirror/store"
)

// Flat repositories ("deb URI dir/" in sources.list: the Release and its
// indexes in a directory of the archive, no dists/ and no components)
// are mirrored verbatim with the same layout, since their signed indexes
// name files by paths relative to the archive root (URI) that a client
// fetches as they are; apt never looks below dir/ for them. A
// snapshot keeps the directory below store.FlatDir, and pool files under the
// key "pool/" + Filename, so the store, GC and Verify treat them as any
// other pool file; serve maps /NAME/REL to the snapshot's flat/REL when
// that is a file of the snapshot, and to the pool otherwise.

// isFlat reports whether a configured suite names a flat repository
// directory: it ends in "/" ("./", "/", "x86_64/").
func isFlat(suite string) bool { return strings.HasSuffix(suite, "/") }

// flatPath is the directory of a flat suite relative to the archive root,
// "" for the root itself ("./" or "/").
func flatPath(suite string) string {
	d := strings.Trim(path.Clean("/"+suite), "/")
	if d == "." {
		return ""
	}
	return d
}

// remoteDir returns the directory of suite's Release and indexes relative
// to the archive root upstream ("" for a flat repository at the root).
func remoteDir(suite string) string {
	if isFlat(suite) {
		return flatPath(suite)
	}
	return "dists/" + suite
}

// publishedDir returns where a verbatim mirror's snapshot keeps suite's
// Release and indexes.
func publishedDir(suite string) string {
	if !isFlat(suite) {
		return "dists/" + suite
	}
	if p := flatPath(suite); p != "" {
		return store.FlatDir + "/" + p
	}
	return store.FlatDir
}

// joinRel joins a directory that may be "" (the root) and a relative path.
func joinRel(dir, rel string) string {
	if dir == "" {
		return rel
	}
	return dir + "/" + rel
}

// flatPoolKey maps a flat repository's Filename (relative to the archive
// root, already checked by apt.CleanRepoPath) to its pool key.
func flatPoolKey(filename string) string {
	return "pool/" + strings.TrimPrefix(filename, "./")
}
