package fetch

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// MaxRedirects is how many redirects one request follows before it fails.
// Archives redirect once (to a CDN or a mirror of the day); a chain longer
// than this is a loop or a server playing games.
const MaxRedirects = 5

// RedirectError is a redirect the Client refused to follow. From is the URL
// the caller asked for (built from the configured url), To the target that
// was refused. Retrying does not help: the upstream's answer, or the
// mirror's redirect_hosts, has to change.
type RedirectError struct {
	From, To string
	Reason   string
}

// Error names both URLs and why the redirect was refused.
func (e *RedirectError) Error() string {
	return fmt.Sprintf("GET %s: redirect to %s refused: %s", e.From, e.To, e.Reason)
}

// addrClass is the kind of network an IP address belongs to, for the rule
// that redirects never lead to internal addresses.
type addrClass int

const (
	classPublic addrClass = iota
	classLoopback
	classPrivate
	classLinkLocal
	classOther // unspecified, multicast, reserved: never a web server
)

func (c addrClass) String() string {
	switch c {
	case classLoopback:
		return "loopback"
	case classPrivate:
		return "private"
	case classLinkLocal:
		return "link-local"
	case classOther:
		return "unspecified, multicast or reserved"
	}
	return "public"
}

var (
	// Shared address space (carrier-grade NAT) and the IPv4 "this
	// network" and benchmarking ranges are as internal as RFC 1918.
	cgnat     = netip.MustParsePrefix("100.64.0.0/10")
	thisNet   = netip.MustParsePrefix("0.0.0.0/8")
	benchNet  = netip.MustParsePrefix("198.18.0.0/15")
	ietfNet   = netip.MustParsePrefix("192.0.0.0/24")
	reserved4 = netip.MustParsePrefix("240.0.0.0/4")
	nat64     = netip.MustParsePrefix("64:ff9b::/96")
)

// classOf says what kind of address a is. IPv4-mapped and NAT64 addresses
// are judged by the IPv4 address inside them, so that ::ffff:127.0.0.1 or
// 64:ff9b::a9fe:a9fe (169.254.169.254) do not pass as public.
func classOf(a netip.Addr) addrClass {
	a = a.Unmap()
	if a.Is6() && nat64.Contains(a) {
		b := a.As16()
		a = netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]})
	}
	switch {
	case a.IsLoopback():
		return classLoopback
	case a.IsLinkLocalUnicast():
		return classLinkLocal
	case a.IsPrivate(), a.Is4() && (cgnat.Contains(a) || benchNet.Contains(a) || ietfNet.Contains(a)):
		return classPrivate
	case a.IsUnspecified(), a.IsMulticast(), a.IsLinkLocalMulticast(), a.IsInterfaceLocalMulticast(),
		a.Is4() && (thisNet.Contains(a) || reserved4.Contains(a)):
		return classOther
	}
	return classPublic
}

// guard holds what the Client knows about where it may connect. Every URL a
// caller passes to Get, GetBytes or Open is configured (the caller built it
// from the mirror's url or suite_urls), so its host:port is trusted as is;
// any other host:port can only be a redirect target, and those connections
// are checked at dial time, against the address actually dialed, so that a
// name that resolves to a public address for one lookup and to 127.0.0.1 for
// the next (DNS rebinding) is still refused.
type guard struct {
	dialer        *net.Dialer
	redirectHosts []hostPort
	trusted       sync.Map // "host:port" -> struct{}
	proxy         string   // "host:port" of Config.Proxy, dialed as is
	// allowed is a bit set of addrClass values that redirect targets may
	// resolve to besides public ones: the classes of the addresses the
	// configured hosts were reached at ("unless the configured URL itself
	// is one").
	allowed atomic.Uint32
}

type hostPort struct{ host, port string } // port "" = the scheme's default

// ParseRedirectHost checks one entry of redirect_hosts: a host name or IP
// address with an optional port ("cdn.example.org", "cdn.example.org:8080",
// "[2001:db8::1]:443"), without scheme or path.
func ParseRedirectHost(s string) error {
	_, err := parseHostPort(s)
	return err
}

func parseHostPort(s string) (hostPort, error) {
	bad := func(why string) (hostPort, error) {
		return hostPort{}, fmt.Errorf("%q is not a host name with an optional port (like \"cdn.example.org\" or \"cdn.example.org:8080\"): %s", s, why)
	}
	if s == "" || strings.ContainsAny(s, "/?#@ \t*") {
		return bad("no scheme, path, user or wildcard")
	}
	host, port := s, ""
	if h, p, err := net.SplitHostPort(s); err == nil {
		host, port = h, p
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return bad("the port must be 1-65535")
		}
	} else if strings.Count(s, ":") == 1 || strings.HasPrefix(s, "[") {
		return bad(err.Error())
	}
	if host == "" {
		return bad("the host is empty")
	}
	return hostPort{host: strings.ToLower(strings.Trim(host, "[]")), port: port}, nil
}

func defaultPort(scheme string) string {
	if scheme == "https" {
		return "443"
	}
	return "80"
}

// originKey is "host:port" of u with the scheme's default port filled in,
// the form the Transport dials.
func originKey(u *url.URL) string {
	port := u.Port()
	if port == "" {
		port = defaultPort(u.Scheme)
	}
	return net.JoinHostPort(strings.ToLower(u.Hostname()), port)
}

// sameOrigin compares scheme, host and port as written (names are not
// resolved), with default ports made explicit.
func sameOrigin(a, b *url.URL) bool {
	return strings.EqualFold(a.Scheme, b.Scheme) && originKey(a) == originKey(b)
}

func (g *guard) trust(u *url.URL) { g.trusted.Store(originKey(u), struct{}{}) }

func (g *guard) isTrusted(addr string) bool {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	_, ok := g.trusted.Load(net.JoinHostPort(strings.ToLower(host), port))
	return ok
}

func (g *guard) allows(c addrClass) bool {
	return c == classPublic || g.allowed.Load()&(1<<c) != 0
}

// addrError is a dial refused because of where the target resolved to.
type addrError struct {
	addr  netip.Addr
	class addrClass
}

func (e *addrError) Error() string {
	return fmt.Sprintf("it resolves to %s, a %s address, and the configured url is not one (redirects never lead to internal addresses)", e.addr, e.class)
}

// dial connects to configured hosts as asked, remembering the class of
// the address it reached, and to any other host only at an address whose
// class is public or one of those.
func (g *guard) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if g.proxy != "" && strings.EqualFold(addr, g.proxy) {
		// The operator's own proxy: wherever it is, it is not an
		// upstream, so its address class allows nothing.
		return g.dialer.DialContext(ctx, network, addr)
	}
	if g.isTrusted(addr) {
		conn, err := g.dialer.DialContext(ctx, network, addr)
		if err == nil {
			if ap, perr := netip.ParseAddrPort(conn.RemoteAddr().String()); perr == nil {
				if c := classOf(ap.Addr()); c != classPublic {
					for {
						old := g.allowed.Load()
						if g.allowed.CompareAndSwap(old, old|1<<c) {
							break
						}
					}
				}
			}
		}
		return conn, err
	}
	d := *g.dialer
	d.Control = func(_, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return fmt.Errorf("cannot check the address %q of a redirect target: %w", address, err)
		}
		if c := classOf(ap.Addr()); !g.allows(c) {
			return &addrError{addr: ap.Addr().Unmap(), class: c}
		}
		return nil
	}
	return d.DialContext(ctx, network, addr)
}

// checkRedirect is the http.Client's redirect policy: same scheme, host and
// port as the URL first asked for, or a host in redirect_hosts; never from
// https to http; at most MaxRedirects hops.
func (g *guard) checkRedirect(req *http.Request, via []*http.Request) error {
	from, to := via[0].URL, req.URL
	refuse := func(format string, args ...any) error {
		return &RedirectError{From: from.String(), To: to.String(), Reason: fmt.Sprintf(format, args...)}
	}
	if len(via) > MaxRedirects {
		return refuse("more than %d redirects in a row", MaxRedirects)
	}
	if to.Scheme != "http" && to.Scheme != "https" {
		return refuse("only http and https are followed")
	}
	for _, v := range via {
		if v.URL.Scheme == "https" && to.Scheme != "https" {
			return refuse("it leaves https for plain http, where anyone on the path could answer")
		}
	}
	if sameOrigin(from, to) {
		return nil
	}
	host, port := strings.ToLower(to.Hostname()), to.Port()
	if port == "" {
		port = defaultPort(to.Scheme)
	}
	// An entry without a port allows the scheme's default port only.
	listed := slices.ContainsFunc(g.redirectHosts, func(h hostPort) bool {
		return h.host == host && (h.port == port || h.port == "" && port == defaultPort(to.Scheme))
	})
	if !listed {
		return refuse("%s is not the scheme, host and port of the configured url, and %s is not in this mirror's redirect_hosts (add it there if the upstream really serves from it)",
			to.Scheme+"://"+to.Host, to.Hostname())
	}
	// With a proxy the proxy resolves names, so only literal addresses
	// can be checked here; without one, dial checks every address.
	if a, err := netip.ParseAddr(strings.Trim(to.Hostname(), "[]")); err == nil {
		if c := classOf(a); !g.allows(c) {
			return refuse("%s", (&addrError{addr: a.Unmap(), class: c}).Error())
		}
	}
	return nil
}

// transportErr turns an error of http.Client.Do for rawURL into the
// Client's own: refused redirects (permanent, naming both URLs), and
// everything else without bytes the server sent (see scrub).
func transportErr(rawURL string, err error) error {
	var re *RedirectError
	if errors.As(err, &re) {
		return permanent(re)
	}
	var ae *addrError
	if errors.As(err, &ae) {
		to := ""
		var ue *url.Error
		if errors.As(err, &ue) {
			to = ue.URL
		}
		return permanent(&RedirectError{From: rawURL, To: to, Reason: ae.Error()})
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		// url.Error repeats the URL (perhaps the redirect target) in
		// quotes; the caller names the URL itself.
		err = ue.Err
	}
	return fmt.Errorf("GET %s: %w", rawURL, scrub(err))
}

// scrubbed is an error whose message had server-sent bytes removed.
type scrubbed struct {
	msg string
	err error
}

func (e *scrubbed) Error() string { return e.msg }
func (e *scrubbed) Unwrap() error { return e.err }

// scrub removes quoted text from a transport error. net/http quotes what a
// server sent when it cannot parse it (`malformed HTTP response "..."`,
// `invalid Content-Length "..."`), and such text must not reach errors,
// logs, the state file or the status page: a server that is not an HTTP
// server (or is hostile) decides what it says. Sizes and the shape of the
// failure stay.
func scrub(err error) error {
	msg := err.Error()
	if !strings.Contains(msg, `"`) {
		return err
	}
	var b strings.Builder
	rest := msg
	for {
		i := strings.IndexByte(rest, '"')
		if i < 0 {
			b.WriteString(rest)
			break
		}
		b.WriteString(rest[:i])
		q, qerr := strconv.QuotedPrefix(rest[i:])
		if qerr != nil {
			b.WriteString("(server text not shown)")
			break
		}
		s, _ := strconv.Unquote(q)
		fmt.Fprintf(&b, "(%d bytes of server text not shown)", len(s))
		rest = rest[i+len(q):]
	}
	return &scrubbed{msg: b.String(), err: err}
}

// lowSpeed aborts a transfer that stays below Config.LowSpeedLimit bytes
// per second for Config.LowSpeedTime, as curl's --speed-limit and
// --speed-time do. The stall watchdog alone cannot: a server that sends one
// byte just before each timeout keeps it quiet forever. The rate is the
// sum over a window of LowSpeedTime split into steps, checked every step,
// so a transfer is judged on exactly the last LowSpeedTime.
type lowSpeed struct {
	limit   int64
	window  time.Duration
	step    time.Duration
	recv    *atomic.Int64 // bytes received, updated by Read
	last    int64
	buckets []int64
	ticks   int
	timer   *time.Timer
	stop    context.CancelCauseFunc
	mu      sync.Mutex
	stopped bool
}

// errTooSlow is the cause of a transfer aborted by lowSpeed; like a stall it
// is retried.
var errTooSlow = errors.New("transfer too slow")

func startLowSpeed(limit int64, window time.Duration, recv *atomic.Int64, stop context.CancelCauseFunc) *lowSpeed {
	if limit <= 0 || window <= 0 {
		return nil
	}
	n := 10
	step := window / time.Duration(n)
	if step > time.Second {
		n = int((window + time.Second - 1) / time.Second)
		step = window / time.Duration(n)
	}
	if step < time.Millisecond {
		step = time.Millisecond
	}
	l := &lowSpeed{limit: limit, window: window, step: step, recv: recv, buckets: make([]int64, n), stop: stop}
	l.timer = time.AfterFunc(step, l.tick)
	return l
}

func (l *lowSpeed) tick() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopped {
		return
	}
	cur := l.recv.Load()
	l.buckets[l.ticks%len(l.buckets)] = cur - l.last
	l.last = cur
	l.ticks++
	if l.ticks >= len(l.buckets) {
		var sum int64
		for _, b := range l.buckets {
			sum += b
		}
		if float64(sum) < float64(l.limit)*l.window.Seconds() {
			l.stopped = true
			l.stop(fmt.Errorf("%w: %d bytes in the last %s, below the low_speed_limit of %d bytes/s (low_speed_time %s)",
				errTooSlow, sum, l.window, l.limit, l.window))
			return
		}
	}
	l.timer.Reset(l.step)
}

func (l *lowSpeed) halt() {
	if l == nil {
		return
	}
	l.mu.Lock()
	l.stopped = true
	l.mu.Unlock()
	l.timer.Stop()
}

// Interrupted is a transfer that the caller's context ended (a deadline
// such as max_sync_duration, or a cancel) while it was running.
type Interrupted struct {
	URL string
	// Running is the time since the first attempt at URL began; Bytes is
	// how much of the body the last attempt had received.
	Running time.Duration
	Bytes   int64
}

// Interrupted lists the transfers the context ended while they ran,
// longest-running first, so that the caller of a sync that ran out of time
// can say which file was slow.
func (c *Client) Interrupted() []Interrupted {
	c.intMu.Lock()
	defer c.intMu.Unlock()
	out := slices.Clone(c.interrupted)
	slices.SortStableFunc(out, func(a, b Interrupted) int { return int(b.Running - a.Running) })
	return out
}

func (c *Client) noteInterrupted(url string, running time.Duration, bytes int64) {
	c.intMu.Lock()
	defer c.intMu.Unlock()
	if len(c.interrupted) < 64 {
		c.interrupted = append(c.interrupted, Interrupted{URL: url, Running: running, Bytes: bytes})
	}
}

// ctxErr is the reason ctx ended: its cause when one was given (for example
// "max_sync_duration exceeded", which wraps context.DeadlineExceeded), else
// ctx.Err().
func ctxErr(ctx context.Context) error {
	if c := context.Cause(ctx); c != nil {
		return c
	}
	return ctx.Err()
}
