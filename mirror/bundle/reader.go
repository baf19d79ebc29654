package bundle

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"

	"gatehouse/apt/pgp"
)

// Reader reads one bundle. Use it from one goroutine.
type Reader struct {
	path string
	dir  string        // directory form: the directory; "" for the stream form
	vr   *volumeReader // stream form
	tr   *tar.Reader

	manRaw, sig []byte
	man         *Manifest
	// dataEnd is where the last entry read, padding included, ends in
	// the stream: the end-of-archive marker must follow there.
	dataEnd   int64
	verified  bool
	extracted bool
	stats     Stats
}

// Stats counts what Extract did.
type Stats struct {
	// Written files were streamed, verified and renamed into place.
	Written      int
	WrittenBytes int64
	// Present files were already at their destination with the right size
	// and hash (an interrupted import resumed, or a file shared with an
	// earlier bundle); their bytes in the bundle were verified all the same.
	Present int
	// Ignored files were those the caller gave no destination (verified,
	// not written).
	Ignored int
}

// Open opens the bundle at p: a directory, a single tar file, or a volume
// set (p is "NAME.000" or "NAME" when only NAME.000, NAME.001, ... exist).
// It reads the manifest and its signature, with bounded sizes, and checks
// the manifest's format; it does not yet trust it (see Verify). A gap in
// the volume numbers is an error naming the missing volume.
func Open(p string) (*Reader, error) {
	r := &Reader{path: p}
	fi, err := os.Stat(p)
	switch {
	case err == nil && fi.IsDir():
		r.dir = p
		if r.manRaw, err = readBounded(filepath.Join(p, ManifestName), MaxManifestSize); err != nil {
			return nil, fmt.Errorf("bundle %s: %w (an export into this directory did not finish?)", p, err)
		}
		if r.sig, err = readBounded(filepath.Join(p, SignatureName), MaxSignatureSize); err != nil {
			return nil, fmt.Errorf("bundle %s: %w", p, err)
		}
	case err == nil && strings.HasSuffix(p, ".000"):
		if r.vr, err = openVolumes(strings.TrimSuffix(p, ".000")); err != nil {
			return nil, err
		}
	case err == nil:
		if r.vr, err = newVolumeReader([]string{p}); err != nil {
			return nil, err
		}
	case errors.Is(err, fs.ErrNotExist):
		if _, err0 := os.Stat(volumeName(p, 0)); err0 != nil {
			return nil, fmt.Errorf("bundle: %w", err)
		}
		if r.vr, err = openVolumes(p); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("bundle: %w", err)
	}
	if r.vr != nil {
		r.tr = tar.NewReader(r.vr)
		var err error
		if r.manRaw, err = r.leading(ManifestName, MaxManifestSize); err == nil {
			r.sig, err = r.leading(SignatureName, MaxSignatureSize)
		}
		if err != nil {
			r.Close()
			return nil, fmt.Errorf("bundle %s: %w", p, err)
		}
	}
	if r.man, err = ParseManifest(r.manRaw); err != nil {
		r.Close()
		return nil, fmt.Errorf("bundle %s: %w", p, err)
	}
	return r, nil
}

func readBounded(p string, limit int64) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, invalid("%s is larger than %d bytes", filepath.Base(p), limit)
	}
	return b, nil
}

// leading reads the next tar entry, which must be the regular file name.
func (r *Reader) leading(name string, limit int64) ([]byte, error) {
	hdr, err := r.tr.Next()
	if err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF) {
		return nil, invalid("the stream ends before %s", name)
	}
	if err != nil {
		return nil, invalid("not a bundle (a tar stream starting with %s): %v", ManifestName, err)
	}
	if hdr.Name != name || hdr.Typeflag != tar.TypeReg {
		return nil, invalid("expected %s, found entry %q: not a gatehouse bundle", name, hdr.Name)
	}
	if hdr.Size > limit {
		return nil, invalid("%s is larger than %d bytes", name, limit)
	}
	if err := plainEntry(r.vr, hdr); err != nil {
		return nil, err
	}
	r.dataEnd = entryEnd(r.vr, hdr)
	b, err := io.ReadAll(r.tr)
	if err != nil {
		return nil, invalid("reading %s: %v", name, err)
	}
	return b, nil
}

// Close releases the open volume, if any.
func (r *Reader) Close() error {
	if r.vr != nil {
		return r.vr.Close()
	}
	return nil
}

// Manifest returns the manifest as read, before or after Verify. Before a
// successful Verify nothing in it is trustworthy.
func (r *Reader) Manifest() *Manifest { return r.man }

// Stats reports what the last Extract did.
func (r *Reader) Stats() Stats { return r.stats }

// Verify checks the manifest's signature with APT's rule against trusted
// at time now, and that the manifest's Key is a good signer. The error wraps
// ErrInvalid and names the key IDs that signed, so the operator can tell an
// untrusted exporter from a damaged bundle.
func (r *Reader) Verify(trusted *pgp.Keyring, now time.Time) (*Manifest, error) {
	res, err := pgp.VerifyDetached(r.manRaw, r.sig, trusted, now)
	if err != nil {
		var ids []string
		var ve *pgp.VerifyError
		if errors.As(err, &ve) && ve.Result != nil {
			for _, s := range slices.Concat(ve.Result.Good, ve.Result.Bad, ve.Result.Unknown) {
				ids = append(ids, s.KeyID)
			}
		}
		return nil, invalid("%s: manifest not signed by a trusted key (signed by key ID %s; trusted keys are %s): %v; add the exporting appliance's public key to [import] trusted_keys if you trust it",
			r.path, strings.Join(ids, ", "), strings.Join(trusted.Fingerprints(), ", "), err)
	}
	if !slices.Contains(res.SignedBy(), r.man.Key) {
		return nil, invalid("%s: manifest says it was signed by %s, but the good signatures are by %s", r.path, r.man.Key, strings.Join(res.SignedBy(), ", "))
	}
	r.verified = true
	return r.man, nil
}

// Dest is where Extract puts one file: a writer of the caller's store
// (mirror/store.NewFile implements it), so that the bundle code never
// creates, renames or removes anything in the store's tree itself.
type Dest interface {
	// Open opens the file already at the destination, to check it
	// (fs.ErrNotExist when there is none).
	Open() (*os.File, error)
	// Create returns the empty, writable temporary file.
	Create() (*os.File, error)
	// Commit gives the complete, verified file its final name.
	Commit() error
	// Discard throws the temporary file away.
	Discard()
	// Name names the destination in errors.
	Name() string
}

// Extract streams every file of the bundle, in manifest order, to where
// dest says. dest is called once per file (with its manifest entry), after
// every earlier file is in place (so a caller may check earlier files, such
// as a mirror's dists before its pool, before it answers); it returns
// the destination, nil to leave the file out, or an error to stop.
// Each file is written to the destination's temporary file, hashed on the
// way, and committed only when its size and SHA-256 match the manifest. A
// destination already holding the right bytes is left alone (so an
// interrupted import resumes), and so is a file dest leaves out; the
// bundle's bytes of both are still read and verified, so damage anywhere
// in the bundle refuses it.
// A missing, extra or misplaced file, a size or hash mismatch, or a
// truncated stream is an error wrapping ErrInvalid. Files are not fsynced:
// the caller makes them durable (mirror/store's Commit does, with syncfs).
//
// Verify must have succeeded first. Extract runs once per Open.
func (r *Reader) Extract(ctx context.Context, dest func(f File) (Dest, error)) error {
	if !r.verified {
		return errors.New("bundle: Extract before a successful Verify")
	}
	if r.extracted {
		return errors.New("bundle: Extract runs once; open the bundle again")
	}
	r.extracted = true
	r.stats = Stats{}
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(1<<24), zstd.WithDecoderMaxMemory(1<<28))
	if err != nil {
		return fmt.Errorf("bundle: zstd: %w", err)
	}
	defer dec.Close()
	x := &extractor{ctx: ctx, dec: dec, bufs: [][]byte{make([]byte, copyBuf)}, dest: dest, stats: &r.stats}
	if r.dir != "" {
		return x.dir(r.dir, r.man)
	}
	return x.stream(r.tr, r.vr, r.man, r.dataEnd)
}

// plainEntry refuses tar entries whose data is not simply the next
// hdr.Size bytes of the stream: sparse files (archive/tar would make up
// their holes, so a few bytes could claim a huge file) and entries longer
// than what is left of the stream (a truncated bundle, found before any
// buffer is sized by the claim).
func plainEntry(vr *volumeReader, hdr *tar.Header) error {
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return invalid("entry %q is a sparse file; bundles hold none", hdr.Name)
		}
	}
	if left := vr.total() - vr.pos; hdr.Size > left {
		return invalid("entry %q claims %d bytes but the stream has %d left: it is truncated, or a later volume is missing", hdr.Name, hdr.Size, left)
	}
	return nil
}

// entryEnd returns the stream offset where the data of the entry tar just
// returned, padded to a 512-byte block, ends. archive/tar reads headers
// block by block without buffering, so the stream is at the data's start.
func entryEnd(vr *volumeReader, hdr *tar.Header) int64 {
	return vr.pos + (hdr.Size+511)/512*512
}

type extractor struct {
	ctx   context.Context
	dec   *zstd.Decoder
	bufs  [][]byte
	dest  func(File) (Dest, error)
	stats *Stats
}

// stream extracts from the tar stream positioned after the signature.
func (x *extractor) stream(tr *tar.Reader, vr *volumeReader, man *Manifest, dataEnd int64) error {
	for i, f := range man.Files {
		if err := x.ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF) {
			return invalid("the stream ends before %s (file %d of %d): it is truncated, or a later volume is missing", f.Path, i+1, len(man.Files))
		}
		if err != nil {
			return invalid("before %s: %v", f.Path, err)
		}
		compressed := hdr.Name == storedName(f.Path, true)
		if hdr.Typeflag != tar.TypeReg || (hdr.Name != f.Path && !compressed) {
			return invalid("expected %s next, found entry %q: a file is missing or out of order", f.Path, hdr.Name)
		}
		if !compressed && hdr.Size != f.Size {
			return invalid("%s: stored with %d bytes, manifest says %d", f.Path, hdr.Size, f.Size)
		}
		if err := plainEntry(vr, hdr); err != nil {
			return err
		}
		dataEnd = entryEnd(vr, hdr)
		if err := x.one(f, tr, compressed); err != nil {
			return err
		}
	}
	hdr, err := tr.Next()
	if err == nil {
		return invalid("entry %q follows the last file the manifest lists", hdr.Name)
	}
	if err != io.EOF {
		return invalid("after the last file: %v", err)
	}
	// archive/tar also reports a stream that simply stops after the last
	// entry as io.EOF; only the two zero blocks of the end-of-archive marker
	// tell that no volume is missing.
	if vr.pos != dataEnd+2*512 {
		return invalid("the stream ends without its end-of-archive marker: it is truncated, or its last volume is missing")
	}
	var one [1]byte
	if n, _ := io.ReadFull(vr, one[:]); n > 0 {
		return invalid("data follows the end of the tar stream (a foreign extra volume?)")
	}
	return nil
}

// dir extracts from the directory form, after checking that it holds no
// file the manifest does not name.
func (x *extractor) dir(root string, man *Manifest) error {
	want := make(map[string]int, 2*len(man.Files))
	for i, f := range man.Files {
		want[f.Path] = i
		want[storedName(f.Path, true)] = i
	}
	found := make([]int8, len(man.Files)) // 1 raw, 2 compressed
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if rel == ManifestName || rel == SignatureName {
			return nil
		}
		i, ok := want[rel]
		if !ok || !d.Type().IsRegular() {
			return invalid("%s holds %s, which the manifest does not list", root, rel)
		}
		kind := int8(1)
		if rel != man.Files[i].Path {
			kind = 2
		}
		if found[i] != 0 {
			return invalid("%s is stored twice (plain and compressed)", man.Files[i].Path)
		}
		found[i] = kind
		return nil
	})
	if err != nil {
		if errors.Is(err, ErrInvalid) {
			return err
		}
		return fmt.Errorf("bundle: %w", err)
	}
	for i, f := range man.Files {
		if found[i] == 0 {
			return invalid("%s is missing from %s", f.Path, root)
		}
	}
	for i, f := range man.Files {
		if err := x.ctx.Err(); err != nil {
			return err
		}
		compressed := found[i] == 2
		err := func() error {
			src, err := os.OpenFile(filepath.Join(root, filepath.FromSlash(storedName(f.Path, compressed))), os.O_RDONLY|unix.O_NOFOLLOW, 0)
			if err != nil {
				return fmt.Errorf("bundle: %w", err)
			}
			defer src.Close()
			return x.one(f, src, compressed)
		}()
		if err != nil {
			return err
		}
	}
	return nil
}

// one extracts one file from src.
func (x *extractor) one(f File, src io.Reader, compressed bool) error {
	dest, err := x.dest(f)
	if err != nil {
		return err
	}
	if compressed {
		if err := x.dec.Reset(src); err != nil {
			return invalid("%s: %v", f.Path, err)
		}
		src = x.dec
	}
	// A file left out or already in place is still read and hashed: a
	// bundle with one damaged byte is refused as a whole, wherever the
	// byte sits, rather than imported because the damage happened to fall
	// on a file this side did not need.
	if dest == nil || present(dest, f) {
		if err := x.check(f, src); err != nil {
			return err
		}
		if dest == nil {
			x.stats.Ignored++
		} else {
			x.stats.Present++
		}
		return nil
	}
	if err := x.write(dest, f, src); err != nil {
		return err
	}
	x.stats.Written++
	x.stats.WrittenBytes += f.Size
	return nil
}

// present reports whether dest already holds a regular file with f's size
// and hash.
func present(dest Dest, f File) bool {
	rd, err := dest.Open()
	if err != nil {
		return false
	}
	defer rd.Close()
	fi, err := rd.Stat()
	if err != nil || !fi.Mode().IsRegular() || fi.Size() != f.Size {
		return false
	}
	sum, n, err := hashReader(rd)
	return err == nil && n == f.Size && sum == f.SHA256
}

func (x *extractor) write(dest Dest, f File, src io.Reader) (err error) {
	tmp, err := dest.Create()
	if err != nil {
		return fmt.Errorf("bundle: %w", err)
	}
	defer func() {
		if err != nil {
			dest.Discard()
		}
	}()
	if err := x.copyVerified(tmp, f, src); err != nil {
		var we *writeError
		if errors.As(err, &we) {
			return fmt.Errorf("bundle: writing %s: %w", dest.Name(), we.err)
		}
		return err
	}
	if err := dest.Commit(); err != nil {
		return fmt.Errorf("bundle: %w", err)
	}
	return nil
}

// check reads f's data from src to its end and verifies its size and
// SHA-256 against the manifest, writing nothing.
func (x *extractor) check(f File, src io.Reader) error {
	return x.copyVerified(io.Discard, f, src)
}

// copyVerified copies f's data from src to dst, hashing it on the way, and
// fails with ErrInvalid unless size and SHA-256 are the manifest's. An
// error writing to dst (the local disk, not the bundle's fault) comes back
// as a *writeError.
func (x *extractor) copyVerified(dst io.Writer, f File, src io.Reader) error {
	h := sha256.New()
	n, err := copyHash(x.ctx, writeErrors{dst}, src, h, f.Size+1, f.Size, &x.bufs)
	if err != nil {
		if cerr := x.ctx.Err(); cerr != nil {
			return cerr
		}
		var we *writeError
		if errors.As(err, &we) {
			return err
		}
		return invalid("%s: reading its data: %v", f.Path, err)
	}
	if n != f.Size {
		return invalid("%s: has %s bytes, manifest says %d", f.Path, sizeWord(n, f.Size), f.Size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != f.SHA256 {
		return invalid("%s: SHA-256 is %s, manifest says %s", f.Path, got, f.SHA256)
	}
	return nil
}

// writeError marks an error of the destination writer, so that it is not
// blamed on the bundle.
type writeError struct{ err error }

func (e *writeError) Error() string { return e.err.Error() }
func (e *writeError) Unwrap() error { return e.err }

// writeErrors wraps the errors of w in *writeError.
type writeErrors struct{ w io.Writer }

func (w writeErrors) Write(p []byte) (int, error) {
	n, err := w.w.Write(p)
	if err != nil {
		err = &writeError{err}
	}
	return n, err
}

func sizeWord(n, want int64) string {
	if n > want {
		return "more than " + strconv.FormatInt(want, 10)
	}
	return strconv.FormatInt(n, 10)
}

// volumeReader reads a list of files as one stream. It can skip forward
// (io.Seeker with io.SeekCurrent), which archive/tar uses to pass over
// files the caller does not want without reading them.
type volumeReader struct {
	names []string
	sizes []int64
	idx   int
	cur   *os.File
	off   int64 // offset in the current volume
	pos   int64 // offset in the whole stream
}

// openVolumes finds base.000, base.001, ... and fails on a gap.
func openVolumes(base string) (*volumeReader, error) {
	matches, err := filepath.Glob(globEscape(base) + ".[0-9][0-9][0-9]*")
	if err != nil {
		return nil, fmt.Errorf("bundle: %w", err)
	}
	nums := map[int]string{}
	top := -1
	for _, m := range matches {
		n, err := strconv.Atoi(strings.TrimPrefix(m, base+"."))
		if err != nil || n < 0 || volumeName(base, n) != m {
			continue
		}
		nums[n] = m
		top = max(top, n)
	}
	if top < 0 {
		return nil, fmt.Errorf("bundle: no volumes %s.000, %s.001, ... found", base, base)
	}
	names := make([]string, top+1)
	for i := 0; i <= top; i++ {
		if nums[i] == "" {
			return nil, fmt.Errorf("bundle: volume %s is missing (volumes %s.000 to %s exist); copy every volume of the bundle", volumeName(base, i), base, volumeName(base, top))
		}
		names[i] = nums[i]
	}
	return newVolumeReader(names)
}

func globEscape(s string) string {
	r := strings.NewReplacer(`*`, `\*`, `?`, `\?`, `[`, `\[`, `\`, `\\`)
	return r.Replace(s)
}

func newVolumeReader(names []string) (*volumeReader, error) {
	v := &volumeReader{names: names}
	for _, n := range names {
		fi, err := os.Stat(n)
		if err != nil {
			return nil, fmt.Errorf("bundle: %w", err)
		}
		if !fi.Mode().IsRegular() {
			return nil, fmt.Errorf("bundle: %s is not a regular file", n)
		}
		v.sizes = append(v.sizes, fi.Size())
	}
	return v, nil
}

func (v *volumeReader) Read(p []byte) (int, error) {
	for {
		if v.idx >= len(v.names) {
			return 0, io.EOF
		}
		if v.cur == nil {
			f, err := os.Open(v.names[v.idx])
			if err != nil {
				return 0, fmt.Errorf("bundle: %w", err)
			}
			if v.off > 0 {
				if _, err := f.Seek(v.off, io.SeekStart); err != nil {
					f.Close()
					return 0, fmt.Errorf("bundle: %w", err)
				}
			}
			v.cur = f
		}
		n, err := v.cur.Read(p)
		v.off += int64(n)
		v.pos += int64(n)
		if err == io.EOF || (err == nil && n == 0) {
			v.next()
			if n > 0 {
				return n, nil
			}
			continue
		}
		if err != nil {
			return n, fmt.Errorf("bundle: read %s: %w", v.names[v.idx], err)
		}
		return n, nil
	}
}

func (v *volumeReader) next() {
	if v.cur != nil {
		v.cur.Close()
		v.cur = nil
	}
	v.idx++
	v.off = 0
}

// Seek supports only io.SeekCurrent with offset ≥ 0; it never moves past
// the end of the last volume.
func (v *volumeReader) Seek(offset int64, whence int) (int64, error) {
	if whence != io.SeekCurrent || offset < 0 {
		return v.pos, errors.New("bundle: volume reader seeks only forward from the current position")
	}
	for offset > 0 && v.idx < len(v.names) {
		left := v.sizes[v.idx] - v.off
		if offset < left {
			v.off += offset
			v.pos += offset
			if v.cur != nil {
				if _, err := v.cur.Seek(v.off, io.SeekStart); err != nil {
					return v.pos, err
				}
			}
			return v.pos, nil
		}
		offset -= left
		v.pos += left
		v.next()
	}
	return v.pos, nil
}

// total is the length of the whole stream.
func (v *volumeReader) total() int64 {
	var n int64
	for _, s := range v.sizes {
		n += s
	}
	return n
}

// Close closes the open volume.
func (v *volumeReader) Close() error {
	if v.cur != nil {
		err := v.cur.Close()
		v.cur = nil
		return err
	}
	return nil
}
