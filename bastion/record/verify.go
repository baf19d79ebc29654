package record

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"golang.org/x/crypto/ssh"
)

// maxManifest bounds the manifest Verify reads (about 300k chunks).
const maxManifest = 64 << 20

// VerifyError lists every problem Verify found in one recording.
type VerifyError struct {
	Dir      string
	Problems []string
}

func (e *VerifyError) Error() string {
	return fmt.Sprintf("recording %s: %d problem(s):\n  %s", e.Dir, len(e.Problems), strings.Join(e.Problems, "\n  "))
}

// ReadManifest parses dir's manifest.json without checking anything else.
func ReadManifest(dir string) (*Manifest, []byte, error) {
	f, err := os.Open(filepath.Join(dir, ManifestName))
	if err != nil {
		return nil, nil, fmt.Errorf("manifest: %w (recording never closed: bastion stopped mid-session, or deleted)", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxManifest+1))
	if err != nil {
		return nil, nil, fmt.Errorf("manifest: read: %w", err)
	}
	if len(b) > maxManifest {
		return nil, nil, fmt.Errorf("manifest: larger than %d bytes", maxManifest)
	}
	m, err := parseManifest(b)
	return m, b, err
}

func parseManifest(b []byte) (*Manifest, error) {
	var m Manifest
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("manifest: does not parse (truncated or edited?): %w", err)
	}
	if dec.More() {
		return nil, errors.New("manifest: trailing data after the JSON object")
	}
	if m.Version != 1 {
		return nil, fmt.Errorf("manifest: version %d, want 1", m.Version)
	}
	return &m, nil
}

// Verify checks one recording directory against pub, the recording key:
// manifest.json.sig is a valid SSHSIG (namespace gatehouse-recording) over
// manifest.json; every listed file exists with exactly the listed size and
// every chunk's SHA-256 and chain match; the final hash matches; and no
// other files are present. It returns a *VerifyError listing every problem,
// or nil. A recording whose manifest says failed:true verifies when what it
// claims is intact; callers show Manifest.Failed separately.
func Verify(dir string, pub ssh.PublicKey) error {
	ve := &VerifyError{Dir: dir}
	add := func(format string, args ...any) { ve.Problems = append(ve.Problems, fmt.Sprintf(format, args...)) }

	m, raw, err := ReadManifest(dir)
	if err != nil {
		add("%v", err)
	}
	if raw != nil {
		sig, err := os.ReadFile(filepath.Join(dir, SignatureName))
		switch {
		case err != nil:
			add("signature: %v", err)
		case pub == nil:
			add("signature: no public key given to check it against")
		default:
			if err := VerifySSHSIG(pub, RecordingNamespace, raw, sig); err != nil {
				add("signature: %v", err)
			}
		}
	}
	listed := map[string]bool{ManifestName: true, SignatureName: true}
	if m != nil {
		if m.ID != filepath.Base(dir) {
			add("manifest: id %q but the directory is named %q (moved or swapped)", Sanitize(m.ID, 140), filepath.Base(dir))
		}
		if m.Final != finalHash(m.Files) {
			add("manifest: final hash does not match its file list")
		}
		for _, f := range m.Files {
			if !validFileName(f.Name) {
				add("manifest: bad file name %q", Sanitize(f.Name, 80))
				continue
			}
			if listed[f.Name] {
				add("manifest: file %s listed twice", f.Name)
				continue
			}
			listed[f.Name] = true
			for _, p := range verifyFile(filepath.Join(dir, f.Name), f) {
				add("%s: %s", f.Name, p)
			}
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		add("list directory: %v", err)
	}
	for _, e := range entries {
		if !listed[e.Name()] && (m != nil || e.Name() == reserveFile) {
			add("%s: present but not in the manifest", Sanitize(e.Name(), 80))
		}
	}
	if len(ve.Problems) > 0 {
		return ve
	}
	return nil
}

func validFileName(name string) bool {
	return name != "" && name != "." && name != ".." && !strings.ContainsAny(name, "/\\\x00") &&
		name != ManifestName && name != SignatureName
}

// verifyFile re-hashes one file chunk by chunk.
func verifyFile(path string, mf ManifestFile) []string {
	var problems []string
	f, err := os.Open(path)
	if err != nil {
		return []string{fmt.Sprintf("missing or unreadable: %v", err)}
	}
	defer f.Close()
	var chain [32]byte
	var off int64
	h := sha256.New()
	for i, c := range mf.Chunks {
		if c.Offset != off || c.Len < 0 {
			problems = append(problems, fmt.Sprintf("chunk %d: offset %d len %d, want offset %d", i, c.Offset, c.Len, off))
			return problems
		}
		h.Reset()
		n, err := io.CopyN(h, f, c.Len)
		if err != nil {
			problems = append(problems, fmt.Sprintf("chunk %d: file ends %d bytes into a %d-byte chunk at offset %d (truncated)", i, n, c.Len, off))
			return problems
		}
		var sum [32]byte
		h.Sum(sum[:0])
		if hex.EncodeToString(sum[:]) != c.SHA256 {
			problems = append(problems, fmt.Sprintf("chunk %d (bytes %d-%d): content does not match its SHA-256 (edited)", i, off, off+c.Len))
		}
		var claimed [32]byte
		if _, err := hex.Decode(claimed[:], []byte(c.SHA256)); err != nil || len(c.SHA256) != 64 {
			problems = append(problems, fmt.Sprintf("chunk %d: bad sha256 field", i))
		}
		chain = chainNext(chain, claimed)
		if hex.EncodeToString(chain[:]) != c.Chain {
			problems = append(problems, fmt.Sprintf("chunk %d: chain hash mismatch (chunk list edited, reordered or cut)", i))
			return problems
		}
		off += c.Len
	}
	if off != mf.Size {
		problems = append(problems, fmt.Sprintf("manifest size %d but chunks add up to %d", mf.Size, off))
	}
	st, err := f.Stat()
	if err == nil && st.Size() != off {
		problems = append(problems, fmt.Sprintf("file is %d bytes, manifest claims %d (appended to or truncated)", st.Size(), off))
	}
	return problems
}

// List reads meta.json of every recording directory under root, sorted by
// start time. Directories whose meta.json is missing or unreadable are
// skipped and reported together in the returned error, alongside the
// recordings that could be read.
func List(root string) ([]Meta, error) {
	return (&MetaCache{}).List(root)
}

// MetaCache makes repeated Lists of one root cheap: a recording's
// meta.json is written once, when the recording starts, so each is read
// only the first time it is listed. (The status page lists the recordings
// on every view; a bastion may keep thousands.) Safe for concurrent use.
type MetaCache struct {
	mu sync.Mutex
	m  map[string]Meta
}

// List is the package's List, reading only the meta.json files this
// cache has not read yet; recordings gone from root are forgotten.
func (c *MetaCache) List(root string) ([]Meta, error) {
	entries, err := os.ReadDir(root)
	if err != nil {
		return nil, fmt.Errorf("recordings %s: %w", root, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.m
	c.m = make(map[string]Meta, len(entries))
	var metas []Meta
	var errs []error
	for _, e := range entries {
		if !e.IsDir() || !validID(e.Name()) {
			continue
		}
		m, ok := old[e.Name()]
		if !ok {
			if m, err = readMeta(filepath.Join(root, e.Name())); err != nil {
				errs = append(errs, fmt.Errorf("recording %s: %w", e.Name(), err))
				continue
			}
		}
		c.m[e.Name()] = m
		metas = append(metas, m)
	}
	sort.SliceStable(metas, func(i, j int) bool {
		if !metas[i].Start.Equal(metas[j].Start) {
			return metas[i].Start.Before(metas[j].Start)
		}
		return metas[i].ID < metas[j].ID
	})
	return metas, errors.Join(errs...)
}

func readMeta(dir string) (Meta, error) {
	var m Meta
	f, err := os.Open(filepath.Join(dir, MetaFile))
	if err != nil {
		return m, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 1<<20))
	if err != nil {
		return m, err
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("%s: %w", MetaFile, err)
	}
	return m, nil
}
