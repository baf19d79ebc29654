package record

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"sync"
)

// The session's data path (Output, Input, Event) only encodes into memory.
// Writing, hashing and chaining happen on one writer goroutine per
// recording, so the disk and SHA-256 overlap with relaying instead of
// delaying it. The queue is short, so a slow disk slows the session down
// (backpressure) instead of growing memory.
const writeQueue = 4

// trackedFile is one append-only file whose flushed chunks are chained.
// buf and open belong to producers under Recording.mu; f, off, chain and
// chunks belong to the writer goroutine (and to Close once it has stopped).
type trackedFile struct {
	name string
	buf  []byte
	open bool

	f      *os.File
	off    int64
	chain  [32]byte
	chunks []Chunk
}

// writeJob is one chunk to append, or a request to close the file.
type writeJob struct {
	tf    *trackedFile
	data  []byte
	close bool
}

var bufPool = sync.Pool{New: func() any {
	b := make([]byte, 0, flushThreshold+(32<<10))
	return &b
}}

func getBuf() []byte { return (*bufPool.Get().(*[]byte))[:0] }

func putBuf(b []byte) {
	if cap(b) > 1<<20 {
		return // an outsized one-off; let the GC have it
	}
	b = b[:0]
	bufPool.Put(&b)
}

// failure returns the sticky failure, or nil.
func (r *Recording) failure() error {
	r.errMu.Lock()
	defer r.errMu.Unlock()
	return r.err
}

// fail records the first failure; later ones add nothing.
func (r *Recording) fail(err error) {
	r.errMu.Lock()
	defer r.errMu.Unlock()
	if r.err == nil {
		r.err = fmt.Errorf("recording %s failed, session must end (fail closed): %w", r.id, err)
	}
}

// enqueue hands tf's buffer to the writer; r.mu must be held.
func (r *Recording) enqueue(tf *trackedFile) {
	if len(tf.buf) == 0 || !tf.open {
		return
	}
	j := writeJob{tf: tf, data: tf.buf}
	tf.buf = nil
	r.jobs <- j
}

// enqueueClose flushes tf and asks the writer to fsync and close it; r.mu
// must be held.
func (r *Recording) enqueueClose(tf *trackedFile) {
	if !tf.open {
		return
	}
	r.enqueue(tf)
	tf.open = false
	r.jobs <- writeJob{tf: tf, close: true}
}

func (r *Recording) writer() {
	defer close(r.writerDone)
	for j := range r.jobs {
		if j.close {
			r.closeFile(j.tf)
			continue
		}
		r.writeChunk(j.tf, j.data)
		putBuf(j.data)
	}
}

// writeChunk appends data to tf as one chunk and chains its hash. On a
// write error the recording fails, the file is cut back to the last
// claimed chunk, and the data is not claimed. Only the writer goroutine
// (or NewRecording before it starts) calls it.
func (r *Recording) writeChunk(tf *trackedFile, data []byte) {
	if len(data) == 0 || tf.f == nil || r.failure() != nil {
		return
	}
	n, err := tf.f.Write(data)
	if err != nil {
		r.fail(fmt.Errorf("write %s at offset %d: %w", tf.name, tf.off, err))
		if n > 0 {
			// Leave no unclaimed tail that would look like tampering;
			// truncating also frees the space for the manifest.
			tf.f.Truncate(tf.off)
			tf.f.Seek(tf.off, 0)
		}
		return
	}
	sum := sha256.Sum256(data)
	tf.chain = chainNext(tf.chain, sum)
	tf.chunks = append(tf.chunks, Chunk{
		Offset: tf.off, Len: int64(len(data)),
		SHA256: hex.EncodeToString(sum[:]), Chain: hex.EncodeToString(tf.chain[:]),
	})
	tf.off += int64(len(data))
}

// closeFile fsyncs and closes tf. An fsync error fails the recording;
// chunks already claimed stay claimed (they were written, and the manifest
// records the failure).
func (r *Recording) closeFile(tf *trackedFile) {
	if tf.f == nil {
		return
	}
	if err := tf.f.Sync(); err != nil {
		r.fail(fmt.Errorf("fsync %s: %w", tf.name, err))
	}
	if err := tf.f.Close(); err != nil {
		r.fail(fmt.Errorf("close %s: %w", tf.name, err))
	}
	tf.f = nil
}

func chainNext(prev, sum [32]byte) [32]byte {
	var b [64]byte
	copy(b[:32], prev[:])
	copy(b[32:], sum[:])
	return sha256.Sum256(b[:])
}
