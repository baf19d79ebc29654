package bundle

import (
	"archive/tar"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"

	"gatehouse/apt/pgp"
	"gatehouse/mirror/store"
)

// MinVolumeSize is the smallest VolumeSize Export accepts.
const MinVolumeSize = 4096

// smallFile is the size up to which a compressible file is compressed in
// memory; larger ones are compressed twice (once to learn the size the tar
// header needs), which costs CPU but no memory or temporary space.
const smallFile = 4 << 20

// copyBuf is the buffer size for streaming file data.
const copyBuf = 1 << 20

// ExportOptions control Export.
type ExportOptions struct {
	// Key signs the manifest (the exporting appliance's archive key).
	Key *pgp.SigningKey
	// VolumeSize, when > 0, splits the stream form into volumes
	// DEST.000, DEST.001, ... of this many bytes (the last may be smaller).
	VolumeSize int64
	// Now is the clock for the manifest's Created time and the signature;
	// nil means time.Now.
	Now func() time.Time
	// Progress, when set, is called after each file is written with the
	// counts so far and the totals. It must return quickly.
	Progress func(files, filesTotal int, bytes, bytesTotal int64)
}

// Source is one mirror's published snapshot to export.
type Source struct {
	// Name is the mirror name (the first element of its bundle paths).
	Name string
	// SnapshotID is the exporter's snapshot ID, recorded in the manifest.
	SnapshotID string
	// SnapshotDir is the snapshot directory holding dists/ (or flat/);
	// every regular file below them is exported.
	SnapshotDir string
	// Suites are recorded in the manifest for the importer.
	Suites []string
	// PoolDir is the mirror's pool directory.
	PoolDir string
	// Overrides maps the PoolFiles the snapshot serves from its own
	// override layer (mirror/store) to their absolute paths, read instead
	// of PoolDir's.
	Overrides map[string]string
	// PoolFiles are the pool files the snapshot references, relative to
	// PoolDir.
	PoolFiles []string
	// PoolSHA256 optionally gives the expected SHA-256 of pool files (from
	// the snapshot's indexes). A file with a known hash is hashed once,
	// while it is written, and the export fails if it differs; others are
	// hashed before the manifest is written, then again while written.
	PoolSHA256 map[string]string
	// Since holds the PoolFiles the receiver already has; they are left
	// out (an incremental bundle).
	Since map[string]bool
	// SinceID names the snapshot Since came from, recorded in the manifest.
	SinceID string
}

// planned is one file to write.
type planned struct {
	File
	abs string
}

// Export writes a bundle of srcs to dest and returns its manifest. The form
// follows dest and opt: with VolumeSize > 0 the stream is split into
// dest.000, dest.001, ...; a dest that is an existing directory or ends in
// "/" gets the directory form; otherwise dest is one tar file. Existing
// files are never overwritten. Everything is written through a temporary
// name or removed again on failure, and made durable before Export returns.
func Export(ctx context.Context, dest string, srcs []Source, opt ExportOptions) (*Manifest, error) {
	man, files, sig, err := prepare(ctx, srcs, opt)
	if err != nil {
		return nil, err
	}
	fi, statErr := os.Stat(dest)
	isDir := statErr == nil && fi.IsDir() || strings.HasSuffix(dest, "/")
	switch {
	case opt.VolumeSize > 0:
		if opt.VolumeSize < MinVolumeSize {
			return nil, fmt.Errorf("bundle: volume size %d is below the minimum %d bytes", opt.VolumeSize, MinVolumeSize)
		}
		if isDir {
			return nil, fmt.Errorf("bundle: %s is a directory; volumes need a file name (they become NAME.000, NAME.001, ...)", dest)
		}
		vw := &volumeWriter{base: dest, size: opt.VolumeSize}
		err := writeStream(ctx, vw, man, files, sig, opt)
		if err == nil {
			err = vw.finish()
		}
		if err != nil {
			vw.remove()
			return nil, err
		}
		return man, nil
	case isDir:
		return man, writeDir(ctx, dest, man, files, sig, opt)
	default:
		if statErr == nil || !errors.Is(statErr, fs.ErrNotExist) {
			return nil, fmt.Errorf("bundle: %s already exists; choose a new name or remove it", dest)
		}
		return man, writeFile(ctx, dest, man, files, sig, opt)
	}
}

// ExportStream writes srcs as one tar stream (the single-file form) to w.
func ExportStream(ctx context.Context, w io.Writer, srcs []Source, opt ExportOptions) (*Manifest, error) {
	man, files, sig, err := prepare(ctx, srcs, opt)
	if err != nil {
		return nil, err
	}
	return man, writeStream(ctx, w, man, files, sig, opt)
}

// prepare lists and hashes what a bundle of srcs holds, and signs its
// manifest.
func prepare(ctx context.Context, srcs []Source, opt ExportOptions) (*Manifest, []planned, []byte, error) {
	if opt.Key == nil {
		return nil, nil, nil, errors.New("bundle: export needs a signing key (the [signing] key of this appliance)")
	}
	now := time.Now
	if opt.Now != nil {
		now = opt.Now
	}
	man := &Manifest{Format: FormatVersion, Created: now().UTC().Truncate(time.Second), Key: opt.Key.Fingerprint()}
	var files []planned
	for _, src := range srcs {
		if !mirrorName.MatchString(src.Name) {
			return nil, nil, nil, fmt.Errorf("bundle: invalid mirror name %q", src.Name)
		}
		if man.Mirror(src.Name) != nil {
			return nil, nil, nil, fmt.Errorf("bundle: mirror %s given twice", src.Name)
		}
		man.Mirrors = append(man.Mirrors, MirrorEntry{Name: src.Name, Snapshot: src.SnapshotID, Suites: src.Suites, Since: src.SinceID})
		var err error
		for _, area := range []string{"dists", store.FlatDir} {
			top := filepath.Join(src.SnapshotDir, area)
			if _, serr := os.Lstat(top); errors.Is(serr, fs.ErrNotExist) {
				continue // a snapshot has dists/ or, for a flat repository, flat/
			}
			err = filepath.WalkDir(top, func(p string, d fs.DirEntry, err error) error {
				if err != nil {
					return err
				}
				if d.IsDir() {
					return ctx.Err()
				}
				if !d.Type().IsRegular() {
					return fmt.Errorf("%s is not a regular file; a snapshot holds only regular files", p)
				}
				rel, err := filepath.Rel(src.SnapshotDir, p)
				if err != nil {
					return err
				}
				sum, size, err := hashFile(p)
				if err != nil {
					return err
				}
				files = append(files, planned{File{Path: src.Name + "/" + filepath.ToSlash(rel), Size: size, SHA256: sum}, p})
				return nil
			})
			if err != nil {
				break
			}
		}
		if err != nil {
			return nil, nil, nil, fmt.Errorf("bundle: mirror %s: reading snapshot %s: %w", src.Name, src.SnapshotID, err)
		}
		for _, rel := range src.PoolFiles {
			if src.Since[rel] {
				continue
			}
			if err := ctx.Err(); err != nil {
				return nil, nil, nil, err
			}
			if err := store.CheckRel(rel); err != nil {
				return nil, nil, nil, fmt.Errorf("bundle: mirror %s: pool file: %w", src.Name, err)
			}
			p := filepath.Join(src.PoolDir, filepath.FromSlash(rel))
			if o, ok := src.Overrides[rel]; ok {
				p = o
			}
			fi, err := os.Lstat(p)
			if err != nil {
				return nil, nil, nil, fmt.Errorf("bundle: mirror %s: %w (run `gatehouse mirror verify %s`)", src.Name, err, src.Name)
			}
			if !fi.Mode().IsRegular() {
				return nil, nil, nil, fmt.Errorf("bundle: mirror %s: %s is not a regular file", src.Name, p)
			}
			sum := strings.ToLower(src.PoolSHA256[rel])
			if sum == "" {
				if sum, _, err = hashFile(p); err != nil {
					return nil, nil, nil, fmt.Errorf("bundle: mirror %s: %w", src.Name, err)
				}
			}
			files = append(files, planned{File{Path: src.Name + "/pool/" + rel, Size: fi.Size(), SHA256: sum}, p})
		}
	}
	slices.SortFunc(files, func(a, b planned) int { return strings.Compare(a.Path, b.Path) })
	man.Files = make([]File, len(files))
	for i, f := range files {
		man.Files[i] = f.File
	}
	raw, err := man.marshal()
	if err != nil {
		return nil, nil, nil, fmt.Errorf("bundle: encode manifest: %w", err)
	}
	// Round-trip through the reader's rules, so a bundle this package
	// writes is one it reads.
	if _, err := ParseManifest(raw); err != nil {
		return nil, nil, nil, fmt.Errorf("bundle: refusing to write an unreadable manifest: %w", err)
	}
	sig, err := opt.Key.DetachSign(raw, false, now())
	if err != nil {
		return nil, nil, nil, fmt.Errorf("bundle: sign manifest: %w", err)
	}
	return man, files, sig, nil
}

func hashFile(p string) (string, int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	return hashReader(f)
}

// hashReader returns the SHA-256 and length of what f holds.
func hashReader(f *os.File) (string, int64, error) {
	h := sha256.New()
	n, err := io.CopyBuffer(h, f, make([]byte, copyBuf))
	if err != nil {
		return "", 0, fmt.Errorf("read %s: %w", f.Name(), err)
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// sink receives the stored entries of a bundle.
type sink interface {
	// put stores one entry of size bytes that write produces.
	put(name string, size int64, write func(io.Writer) error) error
}

// writer turns planned files into stored entries, verifying each file's
// hash on the way.
type writer struct {
	ctx  context.Context
	enc  *zstd.Encoder
	bufs [][]byte // bufs[0] for plain copies, the rest for copyHash
	mem  []byte   // a small file's content
	zbuf []byte   // its compressed form
	h    hash.Hash

	progress func(files, filesTotal int, bytes, bytesTotal int64)
}

func newWriter(ctx context.Context, opt ExportOptions) (*writer, error) {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1),
		zstd.WithWindowSize(1<<22), zstd.WithEncoderCRC(false))
	if err != nil {
		return nil, fmt.Errorf("bundle: zstd: %w", err)
	}
	return &writer{ctx: ctx, enc: enc, bufs: [][]byte{make([]byte, copyBuf)}, h: sha256.New(), progress: opt.Progress}, nil
}

func (w *writer) files(s sink, files []planned) error {
	var total, done int64
	for _, f := range files {
		total += f.Size
	}
	for i, f := range files {
		if err := w.ctx.Err(); err != nil {
			return err
		}
		if err := w.file(s, f); err != nil {
			return fmt.Errorf("bundle: %s: %w", f.Path, err)
		}
		done += f.Size
		if w.progress != nil {
			w.progress(i+1, len(files), done, total)
		}
	}
	return nil
}

func (w *writer) mismatch(f planned) error {
	return fmt.Errorf("%s changed or is corrupt: its content no longer has the size %d and SHA-256 %s recorded for it (run `gatehouse mirror verify`)", f.abs, f.Size, f.SHA256)
}

func (w *writer) file(s sink, f planned) error {
	src, err := os.Open(f.abs)
	if err != nil {
		return err
	}
	defer src.Close()
	if !worthCompressing(f.Path) {
		return w.raw(s, f, src)
	}
	if f.Size <= smallFile {
		if cap(w.mem) < int(f.Size)+1 {
			w.mem = make([]byte, f.Size+1)
		}
		n, err := io.ReadFull(src, w.mem[:f.Size+1])
		if err != io.ErrUnexpectedEOF && err != nil && err != io.EOF {
			return err
		}
		data := w.mem[:n]
		if sum := sha256.Sum256(data); int64(n) != f.Size || hex.EncodeToString(sum[:]) != f.SHA256 {
			return w.mismatch(f)
		}
		w.zbuf = w.enc.EncodeAll(data, w.zbuf[:0])
		c := w.zbuf
		if int64(len(c)) <= f.Size-f.Size/32 && f.Size > 0 {
			return s.put(storedName(f.Path, true), int64(len(c)), func(dst io.Writer) error { _, err := dst.Write(c); return err })
		}
		return s.put(f.Path, f.Size, func(dst io.Writer) error { _, err := dst.Write(data); return err })
	}
	// Large: compress once to count, verifying the hash, then again to
	// write. The encoder is single-threaded and so deterministic; should
	// the file change in between, the tar stream's size check fails the
	// export (and the importer's hash check would catch it anyway).
	var cnt countWriter
	w.enc.Reset(&cnt)
	w.h.Reset()
	n, err := copyHash(w.ctx, w.enc, src, w.h, f.Size+1, f.Size, &w.bufs)
	if err != nil {
		return err
	}
	if err := w.enc.Close(); err != nil {
		return err
	}
	if n != f.Size || hex.EncodeToString(w.h.Sum(nil)) != f.SHA256 {
		return w.mismatch(f)
	}
	if _, err := src.Seek(0, io.SeekStart); err != nil {
		return err
	}
	if cnt.n > f.Size-f.Size/32 {
		return w.raw(s, f, src)
	}
	return s.put(storedName(f.Path, true), cnt.n, func(dst io.Writer) error {
		w.enc.Reset(dst)
		if _, err := io.CopyBuffer(w.enc, w.reader(src, f.Size), w.bufs[0]); err != nil {
			return err
		}
		return w.enc.Close()
	})
}

// raw stores f as it is, hashing it while it is written.
func (w *writer) raw(s sink, f planned, src *os.File) error {
	return s.put(f.Path, f.Size, func(dst io.Writer) error {
		w.h.Reset()
		n, err := copyHash(w.ctx, dst, src, w.h, f.Size, f.Size, &w.bufs)
		if err != nil {
			return err
		}
		if n != f.Size || hex.EncodeToString(w.h.Sum(nil)) != f.SHA256 {
			return w.mismatch(f)
		}
		return nil
	})
}

func (w *writer) reader(r io.Reader, n int64) io.Reader {
	return &ctxReader{ctx: w.ctx, r: io.LimitReader(r, n)}
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

// tarSink writes entries to a tar stream.
type tarSink struct {
	tw    *tar.Writer
	mtime time.Time
}

func (t *tarSink) put(name string, size int64, write func(io.Writer) error) error {
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: name, Size: size, Mode: 0o644, ModTime: t.mtime, Format: tar.FormatPAX}
	if err := t.tw.WriteHeader(hdr); err != nil {
		return err
	}
	return write(t.tw)
}

func writeStream(ctx context.Context, out io.Writer, man *Manifest, files []planned, sig []byte, opt ExportOptions) error {
	raw, err := man.marshal()
	if err != nil {
		return err
	}
	ts := &tarSink{tw: tar.NewWriter(out), mtime: man.Created}
	for _, e := range []struct {
		name string
		b    []byte
	}{{ManifestName, raw}, {SignatureName, sig}} {
		if err := ts.put(e.name, int64(len(e.b)), func(w io.Writer) error { _, err := w.Write(e.b); return err }); err != nil {
			return fmt.Errorf("bundle: write %s: %w", e.name, err)
		}
	}
	w, err := newWriter(ctx, opt)
	if err != nil {
		return err
	}
	defer w.enc.Close()
	if err := w.files(ts, files); err != nil {
		return err
	}
	if err := ts.tw.Close(); err != nil {
		return fmt.Errorf("bundle: finish tar stream: %w", err)
	}
	return nil
}

// writeFile writes the single-file form through a temporary name.
func writeFile(ctx context.Context, dest string, man *Manifest, files []planned, sig []byte, opt ExportOptions) (err error) {
	tmp := filepath.Join(filepath.Dir(dest), store.TempPrefix+filepath.Base(dest)+"-"+rand.Text())
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("bundle: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := writeStream(ctx, f, man, files, sig, opt); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("bundle: fsync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("bundle: close %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, dest); err != nil {
		return fmt.Errorf("bundle: %w", err)
	}
	return syncDir(filepath.Dir(dest))
}

// dirSink writes entries as files below a directory.
type dirSink struct{ dir string }

func (d *dirSink) put(name string, size int64, write func(io.Writer) error) error {
	p := filepath.Join(d.dir, filepath.FromSlash(name))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	cw := &limitWriter{w: f, left: size}
	err = write(cw)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && cw.left != 0 {
		err = fmt.Errorf("wrote %d bytes less than announced", cw.left)
	}
	return err
}

// limitWriter fails writes beyond the announced size, as tar.Writer does.
type limitWriter struct {
	w    io.Writer
	left int64
}

func (l *limitWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > l.left {
		return 0, errors.New("write beyond the announced size")
	}
	l.left -= int64(len(p))
	return l.w.Write(p)
}

// writeDir writes the directory form. The manifest and its signature come
// last, so a directory without them is an export that did not finish.
func writeDir(ctx context.Context, dir string, man *Manifest, files []planned, sig []byte, opt ExportOptions) (err error) {
	dir = strings.TrimSuffix(dir, "/")
	created := false
	if err := os.Mkdir(dir, 0o755); err == nil {
		created = true
	} else if !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("bundle: %w", err)
	} else if es, err := os.ReadDir(dir); err != nil || len(es) > 0 {
		return fmt.Errorf("bundle: directory %s is not empty; export into a new or empty directory", dir)
	}
	defer func() {
		if err != nil {
			es, _ := os.ReadDir(dir)
			for _, e := range es {
				os.RemoveAll(filepath.Join(dir, e.Name()))
			}
			if created {
				os.Remove(dir)
			}
		}
	}()
	w, err := newWriter(ctx, opt)
	if err != nil {
		return err
	}
	defer w.enc.Close()
	ds := &dirSink{dir: dir}
	if err := w.files(ds, files); err != nil {
		return err
	}
	raw, err := man.marshal()
	if err != nil {
		return err
	}
	for _, e := range []struct {
		name string
		b    []byte
	}{{SignatureName, sig}, {ManifestName, raw}} {
		if err := ds.put(e.name, int64(len(e.b)), func(w io.Writer) error { _, err := w.Write(e.b); return err }); err != nil {
			return fmt.Errorf("bundle: write %s: %w", e.name, err)
		}
	}
	return syncFS(dir)
}

// volumeWriter splits a stream into files base.000, base.001, ...
type volumeWriter struct {
	base    string
	size    int64
	cur     *os.File
	left    int64
	created []string
}

func volumeName(base string, i int) string { return fmt.Sprintf("%s.%03d", base, i) }

func (v *volumeWriter) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		if v.cur == nil || v.left == 0 {
			if err := v.next(); err != nil {
				return written, err
			}
		}
		chunk := p
		if int64(len(chunk)) > v.left {
			chunk = chunk[:v.left]
		}
		n, err := v.cur.Write(chunk)
		written += n
		v.left -= int64(n)
		if err != nil {
			return written, fmt.Errorf("bundle: write %s: %w", v.cur.Name(), err)
		}
		p = p[n:]
	}
	return written, nil
}

func (v *volumeWriter) next() error {
	if err := v.closeCur(); err != nil {
		return err
	}
	name := volumeName(v.base, len(v.created))
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("bundle: volume: %w (remove old volumes or choose a new name)", err)
	}
	v.created = append(v.created, name)
	v.cur, v.left = f, v.size
	return nil
}

// closeCur makes the current volume durable before the next one starts,
// so a volume the operator sees complete is complete.
func (v *volumeWriter) closeCur() error {
	if v.cur == nil {
		return nil
	}
	f := v.cur
	v.cur = nil
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("bundle: fsync %s: %w", f.Name(), err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("bundle: close %s: %w", f.Name(), err)
	}
	return nil
}

func (v *volumeWriter) finish() error {
	if err := v.closeCur(); err != nil {
		return err
	}
	return syncDir(filepath.Dir(v.base))
}

func (v *volumeWriter) remove() {
	if v.cur != nil {
		v.cur.Close()
		v.cur = nil
	}
	for _, n := range v.created {
		os.Remove(n)
	}
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("bundle: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("bundle: fsync %s: %w", dir, err)
	}
	return nil
}

// syncFS flushes the file system holding dir: one call instead of an
// fsync per file of a directory bundle.
func syncFS(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("bundle: %w", err)
	}
	defer d.Close()
	if err := unix.Syncfs(int(d.Fd())); err != nil {
		return fmt.Errorf("bundle: syncfs %s: %w", dir, err)
	}
	return nil
}

// storedName is how f is stored when compressed.
func storedName(p string, compressed bool) string {
	if compressed {
		return zstdDir + p + zstdExt
	}
	return p
}
