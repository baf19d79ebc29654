package compress

import (
	"fmt"
	"io"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// WriteSuffixes lists the suffixes Create can produce.
var WriteSuffixes = []string{Plain, GZ, XZ, ZST}

// Create returns a writer that compresses into w, choosing the format by the
// suffix of name: .gz, .xz, .zst, or plain for a name without a compression
// suffix. A name ending in a suffix Create cannot write (.bz2, .lzma, .lz4)
// is an error wrapping ErrUnsupported rather than a silently plain file.
// Close flushes and finishes the compressed stream; it does not close w.
func Create(w io.Writer, name string) (io.WriteCloser, error) {
	if err := checkUnsupported(name); err != nil {
		return nil, err
	}
	switch Suffix(name) {
	case Plain:
		return nopWriteCloser{w}, nil
	case GZ:
		// Level 9 matches what dpkg-scanpackages/apt-ftparchive users get
		// from `gzip -9`; klauspost's level 9 still compresses at >50 MB/s.
		z, err := gzip.NewWriterLevel(w, gzip.BestCompression)
		if err != nil {
			return nil, fmt.Errorf("%s: create gzip stream: %w", name, err)
		}
		return z, nil
	case XZ:
		x, err := xz.WriterConfig{CheckSum: xz.CRC64}.NewWriter(w)
		if err != nil {
			return nil, fmt.Errorf("%s: create xz stream: %w", name, err)
		}
		return x, nil
	case ZST:
		// One goroutine and an 8 MiB window: readers with small memory
		// limits (and this package's MaxZstdWindow) accept the result.
		e, err := zstd.NewWriter(w,
			zstd.WithEncoderConcurrency(1),
			zstd.WithWindowSize(8<<20),
			zstd.WithEncoderLevel(zstd.SpeedBetterCompression))
		if err != nil {
			return nil, fmt.Errorf("%s: create zstd stream: %w", name, err)
		}
		return e, nil
	default:
		return nil, fmt.Errorf("%s: %w for writing %q (write .gz, .xz, .zst or plain)", name, ErrUnsupported, Suffix(name))
	}
}

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }
