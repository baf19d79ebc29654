// Package streamconn batches the reads of an SSH connection's socket.
//
// x/crypto/ssh reads each packet through a 4 KiB bufio.Reader: the 4-byte
// length and the first 4 KiB in one read(2), the rest of a 32 KiB packet in
// a second, and a goroutine park and wake-up whenever that rest has not
// arrived yet. Each wake-up costs context switches (the netpoller's thread,
// an idle P's spinning thread, sysmon leaving its idle sleep), and on a
// virtual machine a context switch costs more than decrypting the packet.
// OpenSSH reads up to 256 KiB at once. A Conn takes everything the socket
// holds in one read, so x/crypto decrypts several packets per wake-up.
package streamconn

import (
	"net"
	"sync"
	"syscall"
)

// streamReadBuf is the most one read takes: four packets of 32 KiB.
const streamReadBuf = 128 << 10

var streamBufs = sync.Pool{New: func() any { b := make([]byte, streamReadBuf); return &b }}

// Conn batches the reads of a connection without holding memory while the
// connection is idle: when its buffer is drained it tries one non-blocking
// read into a pooled buffer, and only if the socket is empty does it block,
// reading straight into the caller's buffer. So a pooled buffer is held
// only while it holds unread bytes, and 1,000 idle sessions cost nothing
// extra. Writes, deadlines and Close are the wrapped connection's.
type Conn struct {
	net.Conn
	rc   syscall.RawConn // nil: plain pass-through reads
	big  *[]byte         // pooled buffer holding pending, or nil
	pend []byte          // unread bytes in *big
}

// New wraps c; a connection that is not a socket (a net.Pipe in a test)
// is read as is.
func New(c net.Conn) *Conn {
	sc := &Conn{Conn: c}
	if s, ok := c.(syscall.Conn); ok {
		if rc, err := s.SyscallConn(); err == nil {
			sc.rc = rc
		}
	}
	return sc
}

// Read serves buffered bytes first, then what one non-blocking read
// returns, then blocks in an ordinary read. Only one goroutine (x/crypto's
// transport reader) reads a connection; Read is not safe for concurrent
// use.
func (c *Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if len(c.pend) == 0 && c.rc != nil {
		c.fill()
	}
	if len(c.pend) > 0 {
		n := copy(p, c.pend)
		c.pend = c.pend[n:]
		if len(c.pend) == 0 {
			streamBufs.Put(c.big)
			c.big, c.pend = nil, nil
		}
		return n, nil
	}
	return c.Conn.Read(p)
}

// fill makes one non-blocking read into a pooled buffer. When the socket
// has nothing (or fails), the buffer goes back to the pool and Read falls
// through to the ordinary blocking read, which reports the error, if any,
// with the usual net.Conn semantics (deadlines, net.ErrClosed).
func (c *Conn) fill() {
	big := streamBufs.Get().(*[]byte)
	var n int
	err := c.rc.Read(func(fd uintptr) bool {
		var rerr error
		n, rerr = syscall.Read(int(fd), *big)
		if rerr != nil || n < 0 {
			n = 0
		}
		return true // never wait here: an empty socket is the blocking read's job
	})
	if err != nil || n == 0 {
		streamBufs.Put(big)
		return
	}
	c.big, c.pend = big, (*big)[:n]
}
