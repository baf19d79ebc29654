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
	"os"
	"sync"
	"syscall"
)

// streamReadBuf is the most one read takes: four packets of 32 KiB.
const streamReadBuf = 128 << 10

var streamBufs = sync.Pool{New: func() any { b := make([]byte, streamReadBuf); return &b }}

// Conn batches the reads of a connection without holding memory while the
// connection is idle: each read takes a pooled buffer just before read(2)
// and, if the socket turns out to be empty, gives it back before waiting
// for data. So a pooled buffer is held only while it holds unread bytes,
// and 1,000 idle sessions cost nothing extra. Writes, deadlines and Close
// are the wrapped connection's.
type Conn struct {
	net.Conn
	rc   syscall.RawConn // nil: plain pass-through reads
	big  *[]byte         // pooled buffer holding pend, or nil
	pend []byte          // unread bytes in *big

	// The read callback and what it returns live here, bound once in
	// New: a closure over fill's locals would move them to the heap,
	// three allocations per read.
	readFD func(fd uintptr) bool
	got    *[]byte // the buffer readFD read into, or nil
	n      int
	rerr   error
}

// New wraps c; a connection that is not a socket (a net.Pipe in a test)
// is read as is.
func New(c net.Conn) *Conn {
	sc := &Conn{Conn: c}
	sc.readFD = sc.readOnce
	if s, ok := c.(syscall.Conn); ok {
		if rc, err := s.SyscallConn(); err == nil {
			sc.rc = rc
		}
	}
	return sc
}

// Read serves buffered bytes first, and otherwise reads once (waiting
// for data if there is none) into a pooled buffer. Only one goroutine
// (x/crypto's transport reader) reads a connection; Read is not safe for
// concurrent use.
func (c *Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if len(c.pend) == 0 && c.rc != nil {
		if err := c.fill(); err != nil {
			return 0, err
		}
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
	// EOF, or the wait ended by a deadline or Close: the plain read
	// reports it with the usual net.Conn errors.
	return c.Conn.Read(p)
}

// fill reads once into a pooled buffer, waiting in the netpoller (without
// the buffer) while the socket is empty. It returns a read error; EOF and
// deadline or Close errors leave pend empty and nil, for Read's fallback.
func (c *Conn) fill() error {
	c.got, c.n, c.rerr = nil, 0, nil
	werr := c.rc.Read(c.readFD)
	big, n, rerr := c.got, c.n, c.rerr
	c.got, c.rerr = nil, nil
	switch {
	case big == nil:
		return nil // werr: deadline or closed; Read's plain read says which
	case rerr != nil:
		streamBufs.Put(big)
		return &net.OpError{Op: "read", Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: os.NewSyscallError("read", rerr)}
	case werr != nil || n <= 0:
		streamBufs.Put(big)
		return nil // EOF: the plain read returns io.EOF
	}
	c.big, c.pend = big, (*big)[:n]
	return nil
}

// readOnce is fill's RawConn.Read callback: one read(2) into a pooled
// buffer, which it gives back (and asks to wait) if the socket is empty.
func (c *Conn) readOnce(fd uintptr) bool {
	big := streamBufs.Get().(*[]byte)
	var n int
	var err error
	for {
		n, err = syscall.Read(int(fd), *big)
		if err != syscall.EINTR {
			break
		}
	}
	if err == syscall.EAGAIN {
		streamBufs.Put(big)
		return false // wait for data, holding nothing
	}
	c.got, c.n, c.rerr = big, n, err
	return true
}
