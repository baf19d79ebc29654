package bastion

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pires/go-proxyproto"
)

// PROXY protocol (HAProxy's v1 text and v2 binary header) for bastions
// behind a TCP load balancer. A connection from an address in
// [bastion] proxy_protocol_from must start with a header, whose source
// address then is the connection's RemoteAddr, so that everything after
// accept (admission and penalties, the certificate's source-address, the
// audit log, recordings, the status page) sees the client and not the
// balancer. A connection from any other address must not send one: a
// client that could choose its own source address would otherwise walk
// past source-address checks and penalties.
//
// The header is read here, before anything else happens for the
// connection, bounded in bytes (a v1 line is at most 107 bytes, a v2
// address block and TLVs at most maxProxyV2Payload) and in time
// (proxyHeaderTimeout), never a byte past its end, so that the socket can
// still be handed to streamconn's batched reads unbuffered.
// github.com/pires/go-proxyproto parses it; FuzzReadProxyHeader fuzzes
// the two together.

// proxyHeaderTimeout bounds the wait for the header from a
// proxy_protocol_from address: HAProxy sends it with the connection's
// first segment, so anything slower is not a balancer doing its job.
const proxyHeaderTimeout = 3 * time.Second

// maxProxyV2Payload bounds a v2 header's address block and TLVs. HAProxy's
// own TLVs (unique id, authority, SSL details) fit easily; a longer header
// is refused before any of it is read.
const maxProxyV2Payload = 4096

// maxProxyV1Line is the PROXY protocol specification's bound on a v1 line,
// CRLF included.
const maxProxyV1Line = 107

// maxPendingProxyHeaders caps header reads in flight when
// max_unauthenticated is 0 (unlimited), so that the goroutines waiting for
// headers stay bounded anyway.
const maxPendingProxyHeaders = 10000

// outcomeBadProxyHeader is the "preauth" outcome of a connection from a
// proxy_protocol_from address that sent no valid header in time. It is
// counted against the balancer's address, never penalised: a penalty
// would lock out every client behind it.
const outcomeBadProxyHeader = "bad-proxy-header"

// errHealthCheck is readProxyHeader's answer for a LOCAL (v2) or UNKNOWN
// (v1) header: the balancer's own connection, a health check.
var errHealthCheck = errors.New("PROXY header for the balancer's own connection (LOCAL or UNKNOWN): a health check")

// errNoProxyHeader: the connection does not start with a PROXY signature.
var errNoProxyHeader = errors.New("the connection does not start with a PROXY protocol header")

// proxyPrefixes parses proxy_protocol_from; Validate has checked it, so
// bad entries (impossible after Validate) are skipped. A bare address is
// a one-address prefix.
func proxyPrefixes(list []string) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(list))
	for _, s := range list {
		if p, err := parseProxyFrom(s); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// parseProxyFrom parses one proxy_protocol_from entry: "10.0.0.0/24",
// "192.0.2.7" or an IPv6 form of either.
func parseProxyFrom(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		if p.Addr().Zone() != "" || p.Bits() < unmapBits(p.Addr()) {
			return netip.Prefix{}, fmt.Errorf("%q is not a usable prefix (example: \"10.0.0.0/24\")", s)
		}
		return netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-unmapBits(p.Addr())).Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("%q is neither an address nor a CIDR prefix (example: \"10.0.0.0/24\")", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// unmapBits is what an IPv4-mapped IPv6 prefix loses when unmapped.
func unmapBits(a netip.Addr) int {
	if a.Is4In6() {
		return 96
	}
	return 0
}

// fromBalancer reports whether peer is in proxy_protocol_from (read per
// connection, so SIGHUP applies a new list).
func (s *Server) fromBalancer(peer netip.Addr) bool {
	for _, p := range proxyPrefixes(s.conf().ProxyProtocolFrom) {
		if p.Contains(peer) {
			return true
		}
	}
	return false
}

// proxyHeaders tracks the header reads in flight, so that Serve can end
// them before it closes the connections it admitted.
type proxyHeaders struct {
	mu      sync.Mutex
	pending map[net.Conn]struct{}
	closed  bool
	wg      sync.WaitGroup
}

// acceptConn is Serve's first step for every accepted connection: a
// connection from a balancer gets its header read (in its own goroutine,
// so a slow balancer connection does not hold up accept) and is then
// admitted under the client's address; any other connection is admitted
// at once, watched for a PROXY header it must not send.
func (s *Server) acceptConn(nc net.Conn) {
	peer := addrPortOf(nc.RemoteAddr())
	if !s.fromBalancer(peer.Addr()) {
		s.accept(newDirectConn(nc))
		return
	}
	limit := s.conf().MaxUnauthenticated
	if limit <= 0 {
		limit = maxPendingProxyHeaders
	}
	h := &s.pp
	h.mu.Lock()
	if h.closed || len(h.pending) >= limit {
		closed := h.closed
		h.mu.Unlock()
		nc.Close()
		if !closed {
			s.preauth.record(peer, outcomeRefused, "too many PROXY protocol headers pending (max_unauthenticated)", nil)
		}
		return
	}
	if h.pending == nil {
		h.pending = make(map[net.Conn]struct{})
	}
	h.pending[nc] = struct{}{}
	h.wg.Add(1)
	h.mu.Unlock()
	go func() {
		defer h.wg.Done()
		c := s.readProxied(nc, peer)
		h.mu.Lock()
		delete(h.pending, nc)
		closed := h.closed
		h.mu.Unlock()
		if c == nil {
			return
		}
		if closed {
			nc.Close()
			return
		}
		s.accept(c)
	}()
}

// endProxyHeaders closes the connections still waiting for their header
// and waits for their goroutines: afterwards no connection reaches accept.
func (s *Server) endProxyHeaders() {
	h := &s.pp
	h.mu.Lock()
	h.closed = true
	for c := range h.pending {
		c.Close()
	}
	h.mu.Unlock()
	h.wg.Wait()
}

// readProxied reads the header of a connection from a balancer and
// returns the connection as the client's, or nil when it was closed: a
// health check (LOCAL or UNKNOWN header, or closed before sending a
// byte) silently, anything else counted in the balancer's "preauth" line
// (never penalised: that would lock out everyone behind it).
func (s *Server) readProxied(nc net.Conn, peer netip.AddrPort) net.Conn {
	_ = nc.SetReadDeadline(time.Now().Add(proxyHeaderTimeout))
	cr := &countReader{r: nc}
	hdr, err := readProxyHeader(cr)
	_ = nc.SetReadDeadline(time.Time{})
	var src netip.AddrPort
	if err == nil {
		src, err = proxySource(hdr)
	}
	if err != nil {
		nc.Close()
		if errors.Is(err, errHealthCheck) || cr.n == 0 && (errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)) {
			return nil
		}
		s.preauth.record(peer, outcomeBadProxyHeader, proxyHeaderDetail(err), nil)
		return nil
	}
	return &proxiedConn{Conn: nc, src: net.TCPAddrFromAddrPort(src)}
}

// proxyHeaderDetail says what was wrong with a balancer's header, for
// the "preauth" sample and the service log.
func proxyHeaderDetail(err error) string {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Sprintf("no complete PROXY protocol header within %v from a proxy_protocol_from address", proxyHeaderTimeout)
	}
	msg := err.Error()
	if len(msg) > 200 {
		msg = msg[:200]
	}
	return "invalid PROXY protocol header from a proxy_protocol_from address: " + msg
}

// countReader counts the bytes read, to tell a balancer's health check
// (connect, close) from a broken header.
type countReader struct {
	r io.Reader
	n int
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// readProxyHeader reads exactly one PROXY protocol header (v1 or v2) from
// r, never a byte beyond it, and parses it with go-proxyproto. It returns
// errHealthCheck for a LOCAL/UNKNOWN header.
func readProxyHeader(r io.Reader) (*proxyproto.Header, error) {
	raw := make([]byte, 16, maxProxyV1Line)
	if _, err := io.ReadFull(r, raw[:5]); err != nil {
		return nil, fmt.Errorf("reading the PROXY header: %w", err)
	}
	switch {
	case string(raw[:5]) == "PROXY":
		// v1: one line; read byte by byte so as not to read past it.
		raw = raw[:5]
		for raw[len(raw)-1] != '\n' {
			if len(raw) == maxProxyV1Line {
				return nil, fmt.Errorf("PROXY v1 header longer than %d bytes", maxProxyV1Line)
			}
			var b [1]byte
			if _, err := io.ReadFull(r, b[:]); err != nil {
				return nil, fmt.Errorf("reading the PROXY v1 header: %w", err)
			}
			raw = append(raw, b[0])
		}
	case bytes.Equal(raw[:5], proxyproto.SIGV2[:5]):
		if _, err := io.ReadFull(r, raw[5:16]); err != nil {
			return nil, fmt.Errorf("reading the PROXY v2 header: %w", err)
		}
		if !bytes.Equal(raw[:12], proxyproto.SIGV2) {
			return nil, errNoProxyHeader
		}
		n := int(binary.BigEndian.Uint16(raw[14:16]))
		if n > maxProxyV2Payload {
			return nil, fmt.Errorf("PROXY v2 header announces %d bytes of addresses and TLVs; at most %d are accepted", n, maxProxyV2Payload)
		}
		raw = append(raw[:16], make([]byte, n)...)
		if _, err := io.ReadFull(r, raw[16:]); err != nil {
			return nil, fmt.Errorf("reading the PROXY v2 header: %w", err)
		}
	default:
		return nil, errNoProxyHeader
	}
	// The whole header is in raw: the parser's "header must arrive in one
	// read" rule for v1 holds, and it cannot read beyond it.
	br := bufio.NewReaderSize(bytes.NewReader(raw), len(raw)+16)
	h, err := proxyproto.Read(br)
	if err != nil {
		return nil, fmt.Errorf("PROXY header: %w", err)
	}
	if br.Buffered() != 0 {
		return nil, fmt.Errorf("PROXY header: %d bytes left unparsed", br.Buffered())
	}
	if h.Command.IsLocal() {
		return nil, errHealthCheck
	}
	return h, nil
}

// proxySource is the client address a PROXY header gives: only TCP over
// IPv4 or IPv6 carries one an SSH connection can have.
func proxySource(h *proxyproto.Header) (netip.AddrPort, error) {
	if h.TransportProtocol != proxyproto.TCPv4 && h.TransportProtocol != proxyproto.TCPv6 {
		return netip.AddrPort{}, fmt.Errorf("PROXY header for transport %#x, not TCP over IPv4 or IPv6", byte(h.TransportProtocol))
	}
	ta, ok := h.SourceAddr.(*net.TCPAddr)
	if !ok || ta == nil {
		return netip.AddrPort{}, errors.New("PROXY header without a TCP source address")
	}
	ap := ta.AddrPort()
	ip := ap.Addr().Unmap()
	if !ip.IsValid() || ip.IsUnspecified() || ip.IsMulticast() {
		return netip.AddrPort{}, fmt.Errorf("PROXY header source %s is not a client address", ip)
	}
	return netip.AddrPortFrom(ip, ap.Port()), nil
}

// proxiedConn is a balancer's connection after its header: RemoteAddr is
// the client's address. It hands out the socket (SyscallConn) so that
// streamconn batches reads as for a direct connection: nothing past the
// header was read.
type proxiedConn struct {
	net.Conn
	src *net.TCPAddr
}

// RemoteAddr is the client's address from the PROXY header.
func (c *proxiedConn) RemoteAddr() net.Addr { return c.src }

// SyscallConn is the balancer connection's socket.
func (c *proxiedConn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, errors.New("not a socket")
}

// rawPeer is the TCP peer of a connection: the balancer for a proxied
// one (recordings keep it as raw_peer beside the client's address).
func rawPeer(nc net.Conn) net.Addr {
	if pc, ok := nc.(*proxiedConn); ok {
		return pc.Conn.RemoteAddr()
	}
	return nc.RemoteAddr()
}

// errUnlistedHeader refuses a PROXY header from an address that is not a
// configured balancer: it would let the sender pick its own source
// address.
var errUnlistedHeader = errors.New("PROXY protocol header from an address not in [bastion] proxy_protocol_from: refused")

// directConn is a connection from an address that is not a balancer. Its
// first bytes are peeked at (MSG_PEEK, so nothing is consumed and
// streamconn still reads the socket itself): if they are a PROXY
// signature, every read fails with errUnlistedHeader, the handshake
// fails, and the source's "preauth" line counts it (and penalises it, as
// any connection that does not authenticate).
type directConn struct {
	net.Conn
	raw syscall.RawConn // nil: not a socket, not checked

	clean   atomic.Bool // decided: no PROXY header
	mu      sync.Mutex
	decided bool
	err     error // errUnlistedHeader once decided so
}

func newDirectConn(nc net.Conn) *directConn {
	c := &directConn{Conn: nc}
	if sc, ok := nc.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			c.raw = raw
		}
	}
	return c
}

// check peeks at the first bytes until it can decide, waiting for more
// only while they are a proper prefix of a PROXY signature (bounded by
// handshake_timeout, which closes the socket). A wait ended by a deadline
// or Close decides nothing: the read that follows reports that error, and
// a later read checks again.
func (c *directConn) check() error {
	if c.clean.Load() {
		return nil // the common case, on every read: no lock
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.decided || c.raw == nil {
		return c.err
	}
	var buf [12]byte
	verdict := sigNo
	err := c.raw.Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK)
		for err == syscall.EINTR {
			n, _, err = syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK)
		}
		switch {
		case err == syscall.EAGAIN:
			return false // nothing yet: wait
		case err != nil || n <= 0:
			return true // EOF or error: the plain read reports it
		}
		verdict = proxySignature(buf[:n])
		return verdict != sigMaybe // a partial signature: wait for more
	})
	if err != nil {
		return nil
	}
	c.decided = true
	if verdict == sigYes {
		c.err = errUnlistedHeader
	} else {
		c.clean.Store(true)
	}
	return c.err
}

// Verdicts of proxySignature.
const (
	sigNo = iota
	sigYes
	sigMaybe
)

// proxySignature tells whether b starts with a PROXY v1 or v2 signature,
// or is too short to say.
func proxySignature(b []byte) int {
	v := sigNo
	for _, sig := range [][]byte{[]byte("PROXY"), proxyproto.SIGV2} {
		n := min(len(b), len(sig))
		if !bytes.Equal(b[:n], sig[:n]) {
			continue
		}
		if n == len(sig) {
			return sigYes
		}
		v = sigMaybe
	}
	return v
}

// Read fails once the connection turned out to start with a PROXY header.
func (c *directConn) Read(p []byte) (int, error) {
	if err := c.check(); err != nil {
		return 0, err
	}
	return c.Conn.Read(p)
}

// SyscallConn hands out the socket, checked before its first read.
func (c *directConn) SyscallConn() (syscall.RawConn, error) {
	if c.raw == nil {
		return nil, errors.New("not a socket")
	}
	return checkedRawConn{c}, nil
}

// checkedRawConn runs directConn's check before the first raw read.
type checkedRawConn struct{ c *directConn }

func (r checkedRawConn) Control(f func(fd uintptr)) error { return r.c.raw.Control(f) }

func (r checkedRawConn) Read(f func(fd uintptr) bool) error {
	if err := r.c.check(); err != nil {
		return err
	}
	return r.c.raw.Read(f)
}

func (r checkedRawConn) Write(f func(fd uintptr) bool) error { return r.c.raw.Write(f) }
