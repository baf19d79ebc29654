package serve

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"
)

// Defaults of the [serve] limits (see Config).
const (
	DefaultMaxConnsPerSource = 64
	DefaultMinSendRate       = 1 << 10 // bytes per second
	DefaultMinSendTime       = 30 * time.Second
	DefaultIdleTimeout       = 60 * time.Second
	// DefaultHeaderTimeout bounds reading a request's headers (and, for
	// the rare request with a body, the body), against slowloris.
	DefaultHeaderTimeout = 10 * time.Second
	// FDsPerConn is what one connection may hold at once: its socket and
	// the file it is sending. max_conns's default is computed with it, so
	// that connections alone can never exhaust the descriptor limit.
	FDsPerConn = 2
	// minDefaultMaxConns is the floor of the computed default, for a
	// process started with a tiny descriptor limit.
	minDefaultMaxConns = 16
	// maxLoggedSources bounds the memory of the once-a-minute refusal log.
	// Past it, sources not logged within the last minute are forgotten;
	// if all were, further new sources are counted but not logged.
	maxLoggedSources = 4096
)

// Duration is a time.Duration that decodes from TOML strings like "30s".
type Duration struct{ time.Duration }

// UnmarshalText parses a Go duration string ("30s", "2m").
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil || v < 0 {
		return fmt.Errorf("invalid duration %q: use a number with a unit, like \"30s\" or \"2m\"", b)
	}
	d.Duration = v
	return nil
}

// FDLimit returns the process's RLIMIT_NOFILE soft limit as it is now (the
// Go runtime raises it to the hard limit at start-up where it may), or 0
// if it cannot be read.
func FDLimit() int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0
	}
	if rl.Cur > 1<<30 {
		return 1 << 30
	}
	return int(rl.Cur)
}

// DefaultMaxConns is max_conns's default for a process whose descriptor
// limit is fdLimit, when reserve descriptors are kept for others in the
// same process (the bastion under `gatehouse run`): three quarters of the
// limit, less reserve, at FDsPerConn descriptors per connection. The
// remaining quarter is for log files, the state directory, metrics
// scrapes and syncs.
func DefaultMaxConns(fdLimit, reserve int) int {
	n := (fdLimit*3/4 - reserve) / FDsPerConn
	return max(n, minDefaultMaxConns)
}

// Options are Serve's limits and timeouts. Zero values mean the defaults
// above; MaxConns 0 means DefaultMaxConns(FDLimit(), 0).
type Options struct {
	// Grace is how long requests in flight may finish at shutdown (0: 30s).
	Grace time.Duration
	// Log receives refusals and server errors; nil discards them.
	Log *slog.Logger
	// MaxConns caps open connections over all sources.
	MaxConns int
	// MaxConnsPerSource caps open connections from one IPv4 address or
	// one IPv6 /64 (what one host, or one customer of an ISP, controls).
	MaxConnsPerSource int
	// MinSendRate (bytes per second) and MinSendTime: a response that sends
	// less than MinSendRate*MinSendTime bytes in any MinSendTime while it
	// has bytes to send is cut, with its connection.
	MinSendRate int64
	MinSendTime time.Duration
	// IdleTimeout closes a keep-alive connection that sends no new request.
	IdleTimeout time.Duration
	// HeaderTimeout bounds reading one request's headers.
	HeaderTimeout time.Duration
	// Refused, if set, is called for every connection refused at accept,
	// with reason "max_conns" or "max_conns_per_source" (for metrics).
	Refused func(reason string)
	// Now is the clock of the refusal log; nil means time.Now.
	Now func() time.Time
}

func (o *Options) defaults() {
	if o.Grace <= 0 {
		o.Grace = 30 * time.Second
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.MaxConns <= 0 {
		o.MaxConns = DefaultMaxConns(FDLimit(), 0)
	}
	if o.MaxConnsPerSource <= 0 {
		o.MaxConnsPerSource = DefaultMaxConnsPerSource
	}
	if o.MinSendRate <= 0 {
		o.MinSendRate = DefaultMinSendRate
	}
	if o.MinSendTime <= 0 {
		o.MinSendTime = DefaultMinSendTime
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	if o.HeaderTimeout <= 0 {
		o.HeaderTimeout = DefaultHeaderTimeout
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// Source returns the key connections from addr are counted under: the
// IPv4 address (also when written as IPv4-mapped IPv6), or the IPv6 /64.
// One host owns a whole /64 (SLAAC, privacy addresses), so counting IPv6
// addresses one by one would let it open 2^64 times the cap.
func Source(addr netip.Addr) netip.Prefix {
	addr = addr.Unmap().WithZone("")
	bits := 32
	if addr.Is6() {
		bits = 64
	}
	p, _ := addr.Prefix(bits)
	return p
}

// limitListener refuses, at accept, connections beyond the caps: the new
// connection is closed at once, never one already being served. Refusals
// are logged once per source per minute.
type limitListener struct {
	net.Listener
	opt      Options
	minBytes int64 // MinSendRate * MinSendTime

	mu     sync.Mutex
	total  int
	per    map[netip.Prefix]int
	logged map[netip.Prefix]*refusals
}

type refusals struct {
	last  time.Time // when the last line for this source was logged
	count int       // refusals since then, not yet logged
}

func newLimitListener(ln net.Listener, opt Options) *limitListener {
	return &limitListener{
		Listener: ln,
		opt:      opt,
		minBytes: max(1, int64(float64(opt.MinSendRate)*opt.MinSendTime.Seconds())),
		per:      map[netip.Prefix]int{},
		logged:   map[netip.Prefix]*refusals{},
	}
}

// Accept returns the next connection within the caps, closing those
// beyond them.
func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		src := netip.Prefix{} // not TCP: all such share one count
		if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
			src = Source(ta.AddrPort().Addr())
		}
		if reason := l.admit(src); reason != "" {
			l.refused(src, reason) // first: once the peer sees the close, it is counted
			if tc, ok := c.(*net.TCPConn); ok {
				// RST instead of FIN: no TIME_WAIT, no buffers kept for a
				// peer that is not being served anyway.
				tc.SetLinger(0)
			}
			c.Close()
			continue
		}
		return &limitConn{Conn: c, l: l, src: src}, nil
	}
}

// admit counts a new connection from src, or returns why it is refused.
func (l *limitListener) admit(src netip.Prefix) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.total >= l.opt.MaxConns {
		return "max_conns"
	}
	if l.per[src] >= l.opt.MaxConnsPerSource {
		return "max_conns_per_source"
	}
	l.total++
	l.per[src]++
	return ""
}

func (l *limitListener) release(src netip.Prefix) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.per[src]--; l.per[src] <= 0 {
		delete(l.per, src)
	}
}

// refused counts a refusal and logs it if src had no line in the last
// minute, with the number of refusals since the previous line.
func (l *limitListener) refused(src netip.Prefix, reason string) {
	if l.opt.Refused != nil {
		l.opt.Refused(reason)
	}
	now := l.opt.Now()
	l.mu.Lock()
	r := l.logged[src]
	if r == nil {
		if len(l.logged) >= maxLoggedSources {
			for k, v := range l.logged {
				if now.Sub(v.last) >= time.Minute {
					delete(l.logged, k)
				}
			}
		}
		if len(l.logged) >= maxLoggedSources {
			l.mu.Unlock()
			return
		}
		r = &refusals{}
		l.logged[src] = r
	}
	r.count++
	if !r.last.IsZero() && now.Sub(r.last) < time.Minute {
		l.mu.Unlock()
		return
	}
	n := r.count
	r.last, r.count = now, 0
	total, per := l.total, l.per[src]
	l.mu.Unlock()
	limit := l.opt.MaxConns
	if reason == "max_conns_per_source" {
		limit = l.opt.MaxConnsPerSource
	}
	l.opt.Log.Warn("serve: refusing new connections (logged once a minute per source)",
		"source", src.String(), "reason", reason, "limit", limit, "refused", n,
		"open_from_source", per, "open_total", total)
}

// limitConn is an admitted connection: it gives its slot back once
// closed, and cuts responses that do not progress at the minimum rate.
type limitConn struct {
	net.Conn
	l    *limitListener
	src  netip.Prefix
	once sync.Once
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c.src) })
	return err
}

// CloseWrite lets net/http half-close before closing (so that the client
// reads an error response instead of a reset).
func (c *limitConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// Write sends p in windows of MinSendTime: a window that ends with p not
// yet sent must have moved at least MinSendRate*MinSendTime bytes, else
// the write fails (and net/http closes the connection). A client that
// stops reading is thus cut after one window; one that reads slowly but
// steadily is not, however large the response.
func (c *limitConn) Write(p []byte) (int, error) {
	var n int
	for {
		c.Conn.SetWriteDeadline(time.Now().Add(c.l.opt.MinSendTime))
		m, err := c.Conn.Write(p[n:])
		n += m
		if err == nil || !c.progressed(int64(m), err) {
			return n, c.cut(err)
		}
	}
}

// ReadFrom is Write for http.ServeContent's file copies: it keeps the
// kernel's sendfile(2) path (net's TCPConn.ReadFrom recognises the file
// inside the *io.LimitedReader that ServeContent passes) and applies the
// same windows. After a window cut short by its deadline, the file
// position (and the limit) are set back to just after the bytes actually
// sent, since a copy that fell back to read+write may have read more than
// it wrote. Other sources go through Write.
func (c *limitConn) ReadFrom(r io.Reader) (int64, error) {
	rf, ok := c.Conn.(io.ReaderFrom)
	src := r
	lr, _ := r.(*io.LimitedReader)
	if lr != nil {
		src = lr.R
	}
	f, isFile := src.(*os.File)
	if !ok || !isFile {
		return io.Copy(struct{ io.Writer }{c}, r)
	}
	var n int64
	for {
		start, err := f.Seek(0, io.SeekCurrent)
		if err != nil {
			m, err := io.Copy(struct{ io.Writer }{c}, r)
			return n + m, err
		}
		var limit int64
		if lr != nil {
			limit = lr.N
		}
		c.Conn.SetWriteDeadline(time.Now().Add(c.l.opt.MinSendTime))
		m, err := rf.ReadFrom(r)
		n += m
		if err == nil || !c.progressed(m, err) {
			return n, c.cut(err)
		}
		if _, err := f.Seek(start+m, io.SeekStart); err != nil {
			return n, err
		}
		if lr != nil {
			lr.N = limit - m
		}
	}
}

// progressed reports whether a write that ended with err after sending m
// bytes in one window may go on in another window.
func (c *limitConn) progressed(m int64, err error) bool {
	return errors.Is(err, os.ErrDeadlineExceeded) && m >= c.l.minBytes
}

// cut names the minimum rate in the error of a write cut for being slow.
func (c *limitConn) cut(err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("client %s read less than %d bytes in %s (min_send_rate): %w",
			c.RemoteAddr(), c.l.minBytes, c.l.opt.MinSendTime, err)
	}
	return err
}
