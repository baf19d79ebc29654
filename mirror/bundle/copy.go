package bundle

import (
	"context"
	"errors"
	"hash"
	"io"
)

// pipeChunk is the unit of the two-stage copy.
const pipeChunk = 256 << 10

// pipeMin is the size from which copyHash reads and writes concurrently;
// below it a goroutine costs more than it saves.
const pipeMin = 2 * pipeChunk

// copyHash copies up to limit bytes from src to dst and feeds them to h,
// returning how many it copied. For sizes of at least pipeMin it reads
// and hashes in one goroutine while the caller's goroutine writes, so on
// two cores the hashing (the costliest step) overlaps the I/O, as the
// processes of `tar | zstd` do. It checks ctx between chunks.
//
// bufs holds the buffers, reused across calls: bufs[0] of any size for the
// plain copy, the rest allocated here on first use.
func copyHash(ctx context.Context, dst io.Writer, src io.Reader, h hash.Hash, limit int64, size int64, bufs *[][]byte) (int64, error) {
	src = &ctxReader{ctx: ctx, r: io.LimitReader(src, limit)}
	if size < pipeMin {
		return io.CopyBuffer(dst, io.TeeReader(src, h), (*bufs)[0])
	}
	type chunk struct {
		b   []byte
		err error
	}
	const depth = 3
	for len(*bufs) < depth+1 {
		*bufs = append(*bufs, make([]byte, pipeChunk))
	}
	full := make(chan chunk, depth)
	free := make(chan []byte, depth)
	for _, b := range (*bufs)[1 : depth+1] {
		free <- b
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(full)
		for {
			var b []byte
			select {
			case b = <-free:
			case <-stop:
				return
			}
			n, err := io.ReadFull(src, b)
			if n > 0 {
				h.Write(b[:n])
				select {
				case full <- chunk{b: b[:n]}:
				case <-stop:
					return
				}
			}
			if err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF) {
				return
			}
			if err != nil {
				select {
				case full <- chunk{err: err}:
				case <-stop:
				}
				return
			}
		}
	}()
	var written int64
	var err error
	for c := range full {
		if c.err != nil {
			err = c.err
			break
		}
		n, werr := dst.Write(c.b)
		written += int64(n)
		if werr != nil {
			err = werr
			break
		}
		free <- c.b[:cap(c.b)]
	}
	close(stop)
	<-done
	return written, err
}
