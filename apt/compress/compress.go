// Package compress opens and creates the compressed streams an APT repository
// uses (.xz .gz .zst .bz2 .lzma, or plain), chosen by the file name's suffix.
//
// Every reader streams with bounded memory and treats a truncated or corrupt
// stream as an error, never as a short success: a caller that reads to io.EOF
// has seen the whole, checksum-verified content.
package compress

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"path"
	"strings"

	"compress/bzip2"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
	"github.com/ulikunitz/xz/lzma"
)

// Suffixes Open understands, as returned by Suffix.
const (
	Plain = ""
	GZ    = ".gz"
	XZ    = ".xz"
	ZST   = ".zst"
	BZ2   = ".bz2"
	LZMA  = ".lzma"
)

// ReadSuffixes lists the variants of one index in the order a reader should
// prefer to parse them, cheapest decoding first. Measured with
// BenchmarkDecompress on the first 50 MB of bookworm main amd64 Packages
// (2 shared cores, output MB/s): plain free, zstd ~600, gzip ~400, xz ~52,
// bzip2 ~41, lzma ~15. The pure-Go xz reader is ~8x slower than gzip, so xz
// comes after gzip although it is the smaller download. A mirror fetches
// every variant anyway, so download size does not enter the order.
var ReadSuffixes = []string{Plain, ZST, GZ, XZ, BZ2, LZMA}

// Limits that keep hostile headers from making a reader allocate without bound.
const (
	// MaxZstdWindow is the largest zstd window Open accepts. It matches the
	// reference zstd tool's default decompression memory limit (--memory=128MB),
	// so every stream `zstd -d` accepts without flags is accepted here.
	MaxZstdWindow = 128 << 20
	// MaxXZDict is the largest xz/lzma dictionary Open accepts. It is the
	// dictionary of xz's strongest preset (-9, -9e); larger ones only come from
	// hand-tuned or hostile files.
	MaxXZDict = 64 << 20
)

// ErrUnsupported is returned for a compression suffix this package recognises
// but cannot handle in that direction (for example writing .bz2, or .lz4 at all).
var ErrUnsupported = errors.New("unsupported compression")

// ErrTooLarge is returned by a reader from OpenLimit once the decompressed
// stream exceeds its limit.
var ErrTooLarge = errors.New("decompressed data exceeds limit")

// unsupported suffixes: reading such a file as plain would silently parse
// compressed bytes, so they are refused instead.
var unsupported = []string{".lz4", ".lz", ".Z", ".bz", ".7z"}

// Suffix returns the compression suffix of name (one of the constants above)
// or "" when name has none this package handles. name may be a file path or a
// URL path; only its last element counts.
func Suffix(name string) string {
	ext := path.Ext(name)
	switch ext {
	case GZ, XZ, ZST, BZ2, LZMA:
		return ext
	}
	return Plain
}

// TrimSuffix returns name without its compression suffix.
func TrimSuffix(name string) string {
	return strings.TrimSuffix(name, Suffix(name))
}

func checkUnsupported(name string) error {
	ext := path.Ext(name)
	for _, u := range unsupported {
		if ext == u {
			return fmt.Errorf("%s: %w %q (supported: .gz .xz .zst .bz2 .lzma or none)", name, ErrUnsupported, ext)
		}
	}
	return nil
}

// Open returns a reader of the decompressed content of r, choosing the format
// by the suffix of name (see Suffix); name is also used in error messages.
// For by-hash files, whose paths have no suffix, pass the index's logical
// name (e.g. "main/binary-amd64/Packages.xz").
// Closing the result releases the decoder but does not close r. A truncated or
// corrupt stream yields an error from Read (never a clean io.EOF), so callers
// must check the error of their final Read.
func Open(r io.Reader, name string) (io.ReadCloser, error) {
	if err := checkUnsupported(name); err != nil {
		return nil, err
	}
	suffix := Suffix(name)
	if suffix == Plain {
		return io.NopCloser(r), nil
	}
	// Every compressed format has a header; an empty file is truncated, not
	// an empty document.
	br := bufio.NewReaderSize(r, 64<<10)
	if _, err := br.Peek(1); err != nil {
		if err == io.EOF {
			return nil, fmt.Errorf("%s: empty %s stream: %w", name, suffix, io.ErrUnexpectedEOF)
		}
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	var (
		rc  io.ReadCloser
		err error
	)
	switch suffix {
	case GZ:
		var z *gzip.Reader
		z, err = gzip.NewReader(br)
		if err == nil {
			rc = z
		}
	case ZST:
		var d *zstd.Decoder
		d, err = zstd.NewReader(br,
			zstd.WithDecoderConcurrency(1),
			zstd.WithDecoderLowmem(true),
			zstd.WithDecoderMaxWindow(MaxZstdWindow),
			zstd.WithDecoderMaxMemory(MaxZstdWindow))
		if err == nil {
			rc = d.IOReadCloser()
		}
	case XZ:
		if err = checkXZHeader(br); err == nil {
			t := &xzTail{r: br}
			var x *xz.Reader
			x, err = xz.ReaderConfig{DictCap: lzma.MinDictCap}.NewReader(t)
			if err == nil {
				rc = io.NopCloser(&xzReader{x: x, t: t})
			}
		}
	case LZMA:
		var l *lzma.Reader
		l, err = lzma.ReaderConfig{DictCap: MaxXZDict}.NewReader(br)
		if err == nil {
			rc = io.NopCloser(&trailerCheck{r: l, under: br, format: "lzma"})
		}
	case BZ2:
		// compress/bzip2 checks the magic only on the first Read; check it
		// now so a non-bzip2 file fails at Open like the others.
		if m, _ := br.Peek(3); string(m) != "BZh" {
			err = errors.New("bzip2: not a bzip2 stream (bad magic)")
		} else {
			rc = io.NopCloser(bzip2.NewReader(br))
		}
	}
	if err != nil {
		return nil, fmt.Errorf("%s: open %s stream: %w", name, suffix, noEOF(err))
	}
	return &reader{rc: rc, name: name}, nil
}

// OpenLimit is Open with a bound on the decompressed size: once more than
// maxBytes bytes have been produced, Read fails with an error wrapping
// ErrTooLarge. Use it for any stream whose size is not already verified, so a
// small hostile file cannot expand into an unbounded one.
func OpenLimit(r io.Reader, name string, maxBytes int64) (io.ReadCloser, error) {
	rc, err := Open(r, name)
	if err != nil {
		return nil, err
	}
	return &limitReader{rc: rc, name: name, left: maxBytes, max: maxBytes}, nil
}

// reader wraps a decoder so that errors name the file and an unexpected EOF
// inside the compressed stream is never reported as a clean end.
type reader struct {
	rc   io.ReadCloser
	name string
	err  error
}

func (r *reader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	n, err := r.rc.Read(p)
	if err != nil && err != io.EOF {
		r.err = fmt.Errorf("%s: decompress: %w", r.name, noEOF(err))
		return n, r.err
	}
	return n, err
}

func (r *reader) Close() error { return r.rc.Close() }

type limitReader struct {
	rc        io.ReadCloser
	name      string
	left, max int64
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.left < 0 {
		return 0, fmt.Errorf("%s: %w (%d bytes): raise the limit only if the file is trusted", l.name, ErrTooLarge, l.max)
	}
	// Read one byte beyond the limit so an exact-size stream still reaches
	// EOF cleanly while a larger one is detected.
	if int64(len(p)) > l.left+1 {
		p = p[:l.left+1]
	}
	n, err := l.rc.Read(p)
	l.left -= int64(n)
	if l.left < 0 {
		n += int(l.left)
		return n, fmt.Errorf("%s: %w (%d bytes): raise the limit only if the file is trusted", l.name, ErrTooLarge, l.max)
	}
	return n, err
}

func (l *limitReader) Close() error { return l.rc.Close() }

// noEOF turns an io.EOF that comes from inside a decoder into
// io.ErrUnexpectedEOF: a decoder that hits EOF before its end marker has read a
// truncated stream.
func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// checkXZHeader peeks at the xz stream header and the first block header and
// refuses an LZMA2 dictionary larger than MaxXZDict before the decoder
// allocates it. Later blocks (multi-threaded xz output) repeat the first
// block's filter settings; a hostile later block is still bounded in touched
// memory by the decompressed size, which OpenLimit caps.
func checkXZHeader(br *bufio.Reader) error {
	const streamHeaderLen = 12
	hdr, err := br.Peek(streamHeaderLen + 1)
	if err != nil {
		return nil // let the decoder report the truncation precisely
	}
	sizeByte := hdr[streamHeaderLen]
	if sizeByte == 0 {
		return nil // no block: the index follows
	}
	blockLen := (int(sizeByte) + 1) * 4
	b, err := br.Peek(streamHeaderLen + blockLen)
	if err != nil {
		return nil
	}
	b = b[streamHeaderLen+1 : streamHeaderLen+blockLen-4] // skip size byte, CRC32
	if len(b) < 1 {
		return nil
	}
	flags := b[0]
	b = b[1:]
	nfilters := int(flags&3) + 1
	for _, present := range []bool{flags&0x40 != 0, flags&0x80 != 0} {
		if present {
			if _, b, err = uvarint(b); err != nil {
				return nil
			}
		}
	}
	for i := 0; i < nfilters; i++ {
		var id, plen uint64
		if id, b, err = uvarint(b); err != nil {
			return nil
		}
		if plen, b, err = uvarint(b); err != nil || plen > uint64(len(b)) {
			return nil
		}
		props := b[:plen]
		b = b[plen:]
		if id == 0x21 && len(props) == 1 {
			dc, err := lzma.DecodeDictCap(props[0])
			if err == nil && dc > MaxXZDict {
				return fmt.Errorf("xz dictionary of %d bytes exceeds the %d-byte limit (xz -9 uses 64 MiB)", dc, MaxXZDict)
			}
		}
	}
	return nil
}

// uvarint decodes an xz multibyte integer (at most 9 bytes, little endian,
// 7 bits per byte).
func uvarint(b []byte) (uint64, []byte, error) {
	var x uint64
	for i := 0; i < len(b) && i < 9; i++ {
		x |= uint64(b[i]&0x7f) << (7 * uint(i))
		if b[i]&0x80 == 0 {
			return x, b[i+1:], nil
		}
	}
	return 0, b, errors.New("bad xz integer")
}

// xzReader works around ulikunitz/xz reporting a clean io.EOF when the input
// ends right before a block header (for example a file cut just after its
// stream header): at EOF the consumed input must end in a valid stream footer
// (optionally followed by stream padding), else the stream was truncated.
type xzReader struct {
	x *xz.Reader
	t *xzTail
}

func (r *xzReader) Read(p []byte) (int, error) {
	n, err := r.x.Read(p)
	if err == io.EOF && !r.t.endsInFooter() {
		return n, fmt.Errorf("xz: stream ends without a stream footer: %w", io.ErrUnexpectedEOF)
	}
	return n, err
}

// xzTail passes reads through and remembers the last 12 bytes read before
// any run of zero bytes (stream padding).
type xzTail struct {
	r     io.Reader
	tail  [12]byte
	ntail int // valid bytes at the end of tail
	zeros int // zero bytes read after tail, capped at len(tail)
}

func (t *xzTail) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	b := p[:n]
	last := len(b) - 1
	for last >= 0 && b[last] == 0 {
		last--
	}
	if last < 0 {
		t.zeros = min(t.zeros+len(b), len(t.tail))
		return n, err
	}
	// Shift in the remembered zeros, then b[:last+1].
	for i := 0; i < t.zeros; i++ {
		t.push(0)
	}
	for _, c := range b[max(0, last+1-len(t.tail)) : last+1] {
		t.push(c)
	}
	t.zeros = min(len(b)-last-1, len(t.tail))
	return n, err
}

func (t *xzTail) push(c byte) {
	copy(t.tail[:], t.tail[1:])
	t.tail[len(t.tail)-1] = c
	t.ntail = min(t.ntail+1, len(t.tail))
}

// endsInFooter reports whether the remembered bytes are an xz stream footer:
// CRC32 of the next 6 bytes, backward size, flags, "YZ".
func (t *xzTail) endsInFooter() bool {
	f := t.tail
	if t.ntail < len(f) || f[10] != 'Y' || f[11] != 'Z' {
		return false
	}
	return crc32.ChecksumIEEE(f[4:10]) == binary.LittleEndian.Uint32(f[0:4])
}

// trailerCheck fails a stream whose decoder stopped (at its end marker or
// declared size) before the input ended: trailing bytes mean a damaged or
// spliced file, and a strict reader refuses rather than guesses.
type trailerCheck struct {
	r      io.Reader
	under  io.Reader
	format string
}

func (t *trailerCheck) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if err == io.EOF {
		var one [1]byte
		if k, _ := io.ReadFull(t.under, one[:]); k > 0 {
			return n, fmt.Errorf("%s: unexpected data after the end of the stream", t.format)
		}
	}
	return n, err
}
