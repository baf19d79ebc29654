package record

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"

	"golang.org/x/crypto/ssh"
)

// Seal writes a manifest for a recording directory that has none because
// the bastion stopped before closing it (crash, kill, power loss). Each
// file is taken as found, as one chunk; the manifest says failed: true and
// names reason, so a sealed recording is never mistaken for one closed
// normally: it proves the files have not changed since sealing, not since
// recording. It refuses a directory that already has a manifest.
func Seal(dir string, signer ssh.Signer, now func() time.Time, reason string) error {
	if now == nil {
		now = time.Now
	}
	if _, err := os.Lstat(filepath.Join(dir, ManifestName)); err == nil {
		return fmt.Errorf("seal %s: already has a manifest: %w", dir, fs.ErrExist)
	}
	id := filepath.Base(dir)
	meta, err := readMeta(dir)
	if err != nil {
		return fmt.Errorf("seal %s: %w", dir, err)
	}
	os.Remove(filepath.Join(dir, reserveFile))
	os.Remove(filepath.Join(dir, SignatureName)) // a signature without its manifest is stale
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("seal %s: %w", dir, err)
	}
	m := Manifest{Version: 1, ID: id, Start: meta.Start, End: now(), Closed: "sealed",
		Failed: true, Failure: "not closed by the bastion; sealed afterwards: " + reason}
	for _, e := range entries {
		if !e.Type().IsRegular() || !validFileName(e.Name()) {
			return fmt.Errorf("seal %s: unexpected entry %q", dir, Sanitize(e.Name(), 80))
		}
		mf, err := hashWhole(filepath.Join(dir, e.Name()))
		if err != nil {
			return fmt.Errorf("seal %s: %w", dir, err)
		}
		m.Files = append(m.Files, mf)
	}
	sort.Slice(m.Files, func(i, j int) bool { return m.Files[i].Name < m.Files[j].Name })
	if err := writeManifest(dir, &m, signer); err != nil {
		return fmt.Errorf("seal %s: %w", dir, err)
	}
	return nil
}

// hashWhole describes a file as a single chunk (none when empty).
func hashWhole(path string) (ManifestFile, error) {
	mf := ManifestFile{Name: filepath.Base(path), Chunks: []Chunk{}}
	f, err := os.Open(path)
	if err != nil {
		return mf, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return mf, fmt.Errorf("read %s: %w", path, err)
	}
	if n == 0 {
		return mf, nil
	}
	var sum [32]byte
	h.Sum(sum[:0])
	var zero [32]byte
	chain := chainNext(zero, sum)
	mf.Size = n
	mf.Chunks = append(mf.Chunks, Chunk{Offset: 0, Len: n, SHA256: hex.EncodeToString(sum[:]), Chain: hex.EncodeToString(chain[:])})
	return mf, nil
}
