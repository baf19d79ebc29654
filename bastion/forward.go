package bastion

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	gl "github.com/gliderlabs/ssh"
	gossh "golang.org/x/crypto/ssh"

	"gatehouse/bastion/certauth"
	"gatehouse/bastion/record"
)

// maxForwardsPerConn bounds the direct-tcpip channels one connection may
// have open at once, so one client cannot make the bastion hold unbounded
// sockets. ssh -J uses one.
const maxForwardsPerConn = 256

// resolveTimeout bounds the one DNS lookup per forward.
const resolveTimeout = 5 * time.Second

// noShell is what a client asking for a shell, command or subsystem on the
// bastion itself is told.
const noShell = "gatehouse bastion offers no shell: use ssh -J bastion host"

// directTCPIPMsg is the payload of a "direct-tcpip" channel open (RFC 4254
// 7.2).
type directTCPIPMsg struct {
	DestAddr string
	DestPort uint32
	OrigAddr string
	OrigPort uint32
}

// identityFor returns the identity proven by the connection's final
// authentication, read from the ServerConn's own Permissions, or nil.
func (sess *session) identityFor(conn *gossh.ServerConn) *certauth.Identity {
	if e := sess.authOf(conn); e != nil {
		return e.id
	}
	return nil
}

// authOf returns what the connection's final authentication proved, or
// nil; the login name must be that of the final attempt.
func (sess *session) authOf(conn *gossh.ServerConn) *authEntry {
	if conn == nil || conn.Permissions == nil {
		return nil
	}
	e := sess.entryFor(conn.Permissions.Extensions[permToken])
	if e == nil || e.user != conn.User() {
		return nil
	}
	return e
}

// directTCPIP serves ProxyJump: it resolves the destination once, asks the
// policy about each resolved address, dials the first allowed address
// itself (never the name again, so DNS cannot change the answer between
// check and use), and relays bytes both ways.
func (sess *session) directTCPIP(_ *gl.Server, conn *gossh.ServerConn, nc gossh.NewChannel, ctx gl.Context) {
	s := sess.s
	id := sess.identityFor(conn)
	if !sess.enter() {
		nc.Reject(gossh.ConnectionFailed, "connection closing")
		return
	}
	defer sess.exit()
	if id == nil {
		nc.Reject(gossh.Prohibited, "not authenticated")
		return
	}
	host, port, perr := parseDirectTCPIP(nc.ExtraData())
	dest := net.JoinHostPort(sanitize(host), strconv.FormatUint(uint64(port), 10))
	fw := record.Forward{ConnRef: sess.ref(), Identity: auditIdentity(id), Destination: dest}
	deny := func(kind gossh.RejectionReason, reason string) {
		s.auditLog(record.ForwardDenied{Forward: fw, Reason: reason})
		nc.Reject(kind, "gatehouse: "+reason)
	}
	if perr != nil {
		deny(gossh.ConnectionFailed, perr.Error())
		return
	}
	sess.mu.Lock()
	busy := sess.forwards >= maxForwardsPerConn
	if !busy {
		sess.forwards++
	}
	sess.mu.Unlock()
	if busy {
		deny(gossh.ResourceShortage, fmt.Sprintf("more than %d forwards open on this connection", maxForwardsPerConn))
		return
	}
	defer func() {
		sess.mu.Lock()
		sess.forwards--
		sess.mu.Unlock()
	}()
	v := s.decideJump(ctx, id, host, port, dest)
	if v.proxyIP.IsValid() {
		fw.ResolvedIP.Addr = v.proxyIP.String()
		s.proxyJump(ctx, sess, id, nc, host, v.proxyIP, port, fw)
		return
	}
	if v.refusal != "" {
		if len(v.ips) > 0 && !v.chosen.IsValid() {
			fw.ResolvedIP.All = ipStrings(v.ips)
		}
		deny(v.kind, v.refusal)
		return
	}
	chosen, dec := v.chosen, v.dec
	target := netip.AddrPortFrom(chosen, port)
	fw.ResolvedIP.Addr = chosen.String()
	fw.Route = &record.Route{Rule: dec.Rule, Entry: dec.Entry}

	d := net.Dialer{Timeout: s.conf().DialTimeout.Duration}
	tc, err := d.DialContext(ctx, "tcp", target.String())
	if err != nil {
		// The client is not told which address was dialled: the resolved
		// address is internal (the audit log has it in resolved_ip).
		deny(gossh.ConnectionFailed, fmt.Sprintf("connecting to %s failed: %v", dest, unwrapOp(err)))
		return
	}
	if err := s.auditLog(record.ForwardOpen{Forward: fw}); err != nil {
		tc.Close()
		nc.Reject(gossh.ConnectionFailed, "gatehouse: audit log unavailable")
		return
	}
	ch, reqs, err := nc.Accept()
	if err != nil {
		tc.Close()
		return
	}
	go gossh.DiscardRequests(reqs)
	start := s.now()
	// Closing the target when the SSH connection dies ends a relay whose
	// target would otherwise never notice.
	stop := context.AfterFunc(ctx, func() { tc.Close() })
	in, out := relay(ch, tc.(*net.TCPConn))
	stop()
	tc.Close()
	ch.Close()
	s.auditLog(record.ForwardEnd{Forward: fw, BytesIn: in, BytesOut: out, Duration: seconds(s.now().Sub(start))})
}

// parseDirectTCPIP decodes the client's channel-open payload and checks
// the destination's syntax: a host name of at most 253 bytes of letters,
// digits, '-', '_' and '.', or an IP literal without a zone, and a port in
// 1-65535. The originator fields are ignored: the client chooses them
// freely.
func parseDirectTCPIP(payload []byte) (host string, port uint16, err error) {
	var msg directTCPIPMsg
	if err := gossh.Unmarshal(payload, &msg); err != nil {
		return "", 0, errors.New("malformed direct-tcpip request")
	}
	host = msg.DestAddr
	if msg.DestPort == 0 || msg.DestPort > 65535 {
		return host, 0, fmt.Errorf("destination port %d out of range", msg.DestPort)
	}
	port = uint16(msg.DestPort)
	h, err := checkDestHost(host)
	if err != nil {
		return host, port, err
	}
	return h, port, nil
}

// checkDestHost checks a destination host's syntax: a host name of at
// most 253 bytes of letters, digits, '-', '_' and '.', or an IP literal
// (optionally in brackets) without a zone. It returns the host without
// brackets.
func checkDestHost(host string) (string, error) {
	h := strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if ip, perr := netip.ParseAddr(h); perr == nil {
		if ip.Zone() != "" {
			return "", errors.New("scoped (zone) addresses are not allowed")
		}
		return h, nil
	}
	if h == "" || len(h) > 253 {
		return "", fmt.Errorf("invalid destination host %q", sanitize(host))
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return "", fmt.Errorf("invalid destination host %q", sanitize(host))
		}
	}
	return h, nil
}

// resolve turns a host checked by parseDirectTCPIP into addresses: an IP
// literal as is, a name by one DNS lookup (to dns_server if set). Its
// error is shown to the client, so it never names the DNS server (Go's
// own message does: "lookup x on 10.0.0.53:53: ..."); the service log
// gets the full error.
func (s *Server) resolve(ctx context.Context, h string) ([]netip.Addr, error) {
	if ip, err := netip.ParseAddr(h); err == nil {
		return []netip.Addr{ip.Unmap()}, nil
	}
	rctx, cancel := context.WithTimeout(ctx, resolveTimeout)
	defer cancel()
	addrs, err := s.resolver.Load().LookupNetIP(rctx, "ip", h)
	if err != nil {
		s.log.Warn("bastion: DNS lookup failed", "host", h, "err", err)
		var de *net.DNSError
		switch {
		case errors.As(err, &de) && de.IsNotFound:
			return nil, fmt.Errorf("resolving %s failed: no such host", h)
		case errors.As(err, &de) && de.IsTimeout, errors.Is(err, context.DeadlineExceeded):
			return nil, fmt.Errorf("resolving %s failed: the DNS lookup timed out", h)
		}
		return nil, fmt.Errorf("resolving %s failed: the DNS lookup failed", h)
	}
	out := make([]netip.Addr, 0, len(addrs))
	for _, a := range addrs {
		out = append(out, a.Unmap())
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s has no addresses", h)
	}
	return out, nil
}

// newResolver returns the resolver for destination names: the system's,
// or one that sends every query to server (dns_server).
func newResolver(server string) *net.Resolver {
	if server == "" {
		return net.DefaultResolver
	}
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, server)
		},
	}
}

func ipStrings(ips []netip.Addr) []string {
	out := make([]string, 0, len(ips))
	for _, ip := range ips {
		out = append(out, ip.String())
	}
	return out
}

// unwrapOp drops net.OpError's address prefix, which repeats what the
// message already says.
func unwrapOp(err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return oe.Err
	}
	return err
}

// relay copies both ways with half-close, returning bytes client→target
// (in) and target→client (out).
func relay(ch gossh.Channel, tc *net.TCPConn) (in, out int64) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		out, _ = copyCounted(ch, tc)
		ch.CloseWrite()
	}()
	in, _ = copyCounted(tc, ch)
	tc.CloseWrite()
	wg.Wait()
	return in, out
}

// relayHeapHeadroom is how much the heap may grow between garbage
// collections however small the live heap (bastion/internal/heapfloor):
// x/crypto/ssh allocates a fresh buffer per packet received, so a relay
// makes a GiB of garbage per GiB, and at Go's default (a collection per
// 4 MiB of it on a small heap) the collector cost more CPU than the
// relaying. Measured in README.md, "Bastion throughput".
const relayHeapHeadroom = 32 << 20

const (
	smallBuf = 4 << 10
	bigBuf   = 128 << 10
)

var bigBufs = sync.Pool{New: func() any { b := make([]byte, bigBuf); return &b }}

// copyCounted is io.Copy with a buffer that grows only while data streams:
// an idle forward holds 4 KiB instead of 128 KiB, which matters at 1,000
// concurrent sessions. While streaming, one read takes up to 128 KiB (four
// SSH packets waiting in the channel, or what the target's socket holds),
// so the copier wakes and writes once per batch rather than per packet:
// on the bastion the wake-ups, not the bytes, are what cost CPU (README,
// "Bastion throughput").
func copyCounted(dst io.Writer, src io.Reader) (int64, error) {
	small := make([]byte, smallBuf)
	buf := small
	var big *[]byte
	defer func() {
		if big != nil {
			bigBufs.Put(big)
		}
	}()
	var total int64
	for {
		n, err := src.Read(buf)
		if n > 0 {
			w, werr := dst.Write(buf[:n])
			total += int64(w)
			if werr != nil {
				return total, werr
			}
		}
		switch {
		case big == nil && n == len(buf):
			big = bigBufs.Get().(*[]byte)
			buf = *big
		case big != nil && n < smallBuf:
			bigBufs.Put(big)
			big, buf = nil, small
		}
		if err != nil {
			if err == io.EOF {
				return total, nil
			}
			return total, err
		}
	}
}

// rejectSession refuses shells, commands and subsystems on the bastion.
func (sess *session) rejectSession(_ *gl.Server, conn *gossh.ServerConn, nc gossh.NewChannel, _ gl.Context) {
	sess.denyRequest(conn, "channel:session", noShell)
	nc.Reject(gossh.Prohibited, noShell)
}

// rejectChannel refuses every other channel type (x11, auth-agent,
// forwarded-*, streamlocal).
func (sess *session) rejectChannel(_ *gl.Server, conn *gossh.ServerConn, nc gossh.NewChannel, _ gl.Context) {
	msg := "gatehouse bastion does not open " + record.Sanitize(nc.ChannelType(), 60) + " channels"
	sess.denyRequest(conn, "channel:"+nc.ChannelType(), msg)
	nc.Reject(gossh.UnknownChannelType, msg)
}

// globalRequest refuses all global requests; remote forwarding requests
// (-R) are audited, keepalives are not.
func (sess *session) globalRequest(ctx gl.Context, _ *gl.Server, req *gossh.Request) (bool, []byte) {
	switch req.Type {
	case "tcpip-forward", "cancel-tcpip-forward", "streamlocal-forward@openssh.com", "cancel-streamlocal-forward@openssh.com":
		// gliderlabs' own context value: the handler is not given the
		// connection.
		conn, _ := ctx.Value(gl.ContextKeyConn).(*gossh.ServerConn)
		sess.denyRequest(conn, req.Type, "remote port forwarding (-R) is not offered")
	}
	return false, nil
}

// denyRequest audits a refused channel or request on the bastion itself.
func (sess *session) denyRequest(conn *gossh.ServerConn, kind, reason string) {
	s := sess.s
	if !sess.enter() {
		return
	}
	defer sess.exit()
	ev := record.RequestDenied{ConnRef: sess.ref(), Request: record.Sanitize(kind, 80), Reason: reason}
	if conn != nil {
		if id := sess.identityFor(conn); id != nil {
			ai := auditIdentity(id)
			ev.Identity = &ai
		}
	}
	s.auditLog(ev)
}
