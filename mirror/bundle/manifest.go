// Package bundle writes and reads air-gap bundles: a signed manifest of
// mirror files (path, size, SHA-256) followed by the files themselves, as a
// directory or as one tar stream that may be split into volumes. It checks
// what it carries (signature, sizes, hashes, no missing or extra file) but
// knows nothing of APT: the caller decides where each file goes and verifies
// the repository it forms.
//
// # Format (version 1)
//
// The stream form is an uncompressed POSIX tar stream, written to FILE or,
// split every VolumeSize bytes, to FILE.000, FILE.001, ... (concatenated they
// are the same tar stream, so `cat FILE.* | tar -t` lists it). Its entries,
// in this order:
//
//	manifest.json          the Manifest, JSON
//	manifest.json.sig      OpenPGP detached signature over manifest.json
//	<path>                 one entry per Manifest file, in Manifest order
//
// A file is stored as the entry "<path>" (its bytes as they are) or as
// "_zstd/<path>.zst" (one zstd frame of its bytes). Files whose name says
// they are compressed already (.deb, .xz, .gz, ...) are always stored as
// they are, so the CPU goes to hashing and I/O, not to recompressing
// packages; other files are compressed at zstd's fastest level when that
// saves at least 1/32 of their size. The manifest names the uncompressed
// size and hash, so the storage choice is not part of what is signed.
//
// The directory form holds the same names as files: DIR/manifest.json,
// DIR/manifest.json.sig, DIR/<path> or DIR/_zstd/<path>.zst. Mirror names
// start with a letter or digit, so "_zstd" never collides with one.
//
// A reader trusts nothing before the signature: Open reads only the
// manifest and its signature (bounded sizes), Verify checks the signature
// against the caller's keyring, and Extract streams each file through
// SHA-256 into the temporary file of its Dest (a writer of mirror/store)
// and commits it only when size and hash match the manifest.
package bundle

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"regexp"
	"strings"
	"time"

	"gatehouse/mirror/store"
)

// FormatVersion is the manifest format this package writes and reads.
const FormatVersion = 1

// Names of the leading entries.
const (
	ManifestName  = "manifest.json"
	SignatureName = "manifest.json.sig"
	// zstdDir prefixes the stored name of a compressed file.
	zstdDir = "_zstd/"
	zstdExt = ".zst"
)

// Limits on untrusted input, checked before any allocation they bound.
const (
	// MaxManifestSize bounds manifest.json: about 1.5 million files.
	MaxManifestSize = 256 << 20
	// MaxSignatureSize bounds manifest.json.sig.
	MaxSignatureSize = 64 << 10
	// MaxFiles bounds the number of files one manifest may list.
	MaxFiles = 4 << 20
)

// ErrInvalid is wrapped by every error that means the bundle itself is not
// acceptable: a bad or untrusted signature, a malformed manifest, a file
// whose size or hash differs, a missing, extra or misplaced file, a
// truncated stream. Nothing a failed check touched is renamed into place.
var ErrInvalid = errors.New("bundle verification failed")

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// Manifest describes a bundle. It is what the exporting appliance signs.
type Manifest struct {
	// Format is FormatVersion.
	Format int `json:"format"`
	// Created is when the bundle was written.
	Created time.Time `json:"created"`
	// Key is the fingerprint (uppercase hex) of the key that signed it.
	Key string `json:"key"`
	// Mirrors says which snapshot of which mirror the bundle carries.
	Mirrors []MirrorEntry `json:"mirrors"`
	// Files lists every file, sorted by Path, without duplicates.
	Files []File `json:"files"`
}

// MirrorEntry is one mirror in a bundle.
type MirrorEntry struct {
	// Name is the mirror name; its files are below "<Name>/".
	Name string `json:"name"`
	// Snapshot is the exporter's snapshot ID the dists come from.
	Snapshot string `json:"snapshot"`
	// Suites are the suites the exporter mirrors.
	Suites []string `json:"suites"`
	// Since is the snapshot ID whose pool files were left out (the
	// receiver is expected to have them), "" for a full bundle.
	Since string `json:"since"`
}

// File is one file of a bundle.
type File struct {
	// Path is "<mirror>/dists/...", "<mirror>/flat/..." (a flat
	// repository's Release and indexes, see store.FlatDir) or
	// "<mirror>/pool/...", slash-separated.
	Path string `json:"path"`
	// Size is the file's length in bytes.
	Size int64 `json:"size"`
	// SHA256 is the lowercase hex SHA-256 of the file's bytes.
	SHA256 string `json:"sha256"`
}

// Mirror returns the entry of the mirror called name, or nil.
func (m *Manifest) Mirror(name string) *MirrorEntry {
	for i := range m.Mirrors {
		if m.Mirrors[i].Name == name {
			return &m.Mirrors[i]
		}
	}
	return nil
}

// FilesOf returns the files of mirror name below area ("dists" or "pool"),
// as paths relative to that area's parent ("pool/main/h/hello/...").
func (m *Manifest) FilesOf(name, area string) []File {
	prefix := name + "/" + area + "/"
	var out []File
	for _, f := range m.Files {
		if rest, ok := strings.CutPrefix(f.Path, prefix); ok {
			out = append(out, File{Path: area + "/" + rest, Size: f.Size, SHA256: f.SHA256})
		}
	}
	return out
}

// mirrorName is the rule mirror.Config applies to names.
var mirrorName = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

// SplitPath splits a manifest path into its mirror name and the path
// below the mirror ("dists/..." or "pool/...").
func SplitPath(p string) (mirror, rel string, ok bool) {
	mirror, rel, ok = strings.Cut(p, "/")
	if !ok || !(strings.HasPrefix(rel, "dists/") || strings.HasPrefix(rel, store.FlatDir+"/") || strings.HasPrefix(rel, "pool/")) {
		return "", "", false
	}
	return mirror, rel, true
}

// ParseManifest decodes and validates manifest.json. Every rule a reader
// relies on is checked here: known format, valid and unique mirror names,
// each file below a listed mirror's dists/, flat/ or pool/ with a clean relative
// path, sizes non-negative, SHA-256 well-formed, paths strictly sorted.
// Errors wrap ErrInvalid.
func ParseManifest(b []byte) (*Manifest, error) {
	if len(b) > MaxManifestSize {
		return nil, invalid("%s is larger than %d bytes", ManifestName, MaxManifestSize)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var m Manifest
	if err := dec.Decode(&m); err != nil {
		return nil, invalid("%s: %v", ManifestName, err)
	}
	if dec.More() {
		return nil, invalid("%s: data after the JSON object", ManifestName)
	}
	if m.Format != FormatVersion {
		return nil, invalid("%s: format %d; this gatehouse reads format %d", ManifestName, m.Format, FormatVersion)
	}
	if len(m.Mirrors) == 0 {
		return nil, invalid("%s lists no mirror", ManifestName)
	}
	if len(m.Files) > MaxFiles {
		return nil, invalid("%s lists %d files, more than the limit %d", ManifestName, len(m.Files), MaxFiles)
	}
	names := map[string]bool{}
	for i, me := range m.Mirrors {
		if !mirrorName.MatchString(me.Name) {
			return nil, invalid("%s: mirrors[%d]: invalid mirror name %q", ManifestName, i, me.Name)
		}
		if names[me.Name] {
			return nil, invalid("%s: mirror %q is listed twice", ManifestName, me.Name)
		}
		names[me.Name] = true
		for _, s := range me.Suites {
			dir := "dists/" + s
			if strings.HasSuffix(s, "/") {
				// A flat repository directory, "./" for the root.
				dir = strings.TrimSuffix(store.FlatDir+"/"+strings.Trim(path.Clean("/"+s), "/"), "/")
			}
			if err := store.CheckRel(dir); err != nil {
				return nil, invalid("%s: mirror %q: invalid suite %q", ManifestName, me.Name, s)
			}
		}
	}
	for i, f := range m.Files {
		where := fmt.Sprintf("%s: files[%d] %q", ManifestName, i, f.Path)
		mirror, _, ok := SplitPath(f.Path)
		if !ok || !names[mirror] {
			return nil, invalid("%s: not below <mirror>/dists/, flat/ or pool/ of a listed mirror", where)
		}
		if err := store.CheckRel(f.Path); err != nil {
			return nil, invalid("%s: %v", where, err)
		}
		if f.Size < 0 {
			return nil, invalid("%s: negative size %d", where, f.Size)
		}
		if len(f.SHA256) != 64 || strings.ToLower(f.SHA256) != f.SHA256 {
			return nil, invalid("%s: sha256 must be 64 lowercase hex digits", where)
		}
		if _, err := hex.DecodeString(f.SHA256); err != nil {
			return nil, invalid("%s: sha256 must be 64 lowercase hex digits", where)
		}
		if i > 0 && m.Files[i-1].Path >= f.Path {
			return nil, invalid("%s: files are not strictly sorted by path", where)
		}
	}
	return &m, nil
}

func (m *Manifest) marshal() ([]byte, error) {
	b, err := json.MarshalIndent(m, "", " ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// alreadyCompressed lists the suffixes of files that zstd would not shrink.
var alreadyCompressed = []string{".deb", ".udeb", ".ddeb", ".xz", ".gz", ".bz2", ".zst", ".lzma", ".lz", ".lz4", ".zip", ".jar", ".png", ".jpg", ".gpg"}

func worthCompressing(p string) bool {
	for _, s := range alreadyCompressed {
		if strings.HasSuffix(p, s) {
			return false
		}
	}
	return true
}
