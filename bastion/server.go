// Package bastion is the certificate-only SSH bastion: it wires
// gliderlabs/ssh and x/crypto/ssh to certificate checks (certauth),
// destination policy (policy) and the audit log (record), relays
// ProxyJump (direct-tcpip) channels to allowed jump destinations, and
// terminates SSH for proxy destinations (ssh -J, or login@host@bastion)
// to relay and record the session to the target with a certificate
// minted for it (upstream, record).
package bastion

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	gl "github.com/gliderlabs/ssh"
	gossh "golang.org/x/crypto/ssh"
	"golang.org/x/time/rate"

	"gatehouse/bastion/certauth"
	"gatehouse/bastion/internal/heapfloor"
	"gatehouse/bastion/policy"
	"gatehouse/bastion/record"
)

// reloadPoll is how often Serve checks the CA and revocation files for
// changes, so a KRL update takes effect without a SIGHUP.
const reloadPoll = 2 * time.Second

// Service-log budget for refusals after authentication (forwards,
// requests, proxy targets refused by policy): per source, a burst and then
// one line per refusalEvery, so that one admin's script cannot flood the
// journal. Refusals before authentication are summarised per source by
// preauthLog instead.
const (
	refusalEvery = 10 * time.Second
	refusalBurst = 5
)

// auditDownEvery spaces the service-log lines that say the audit log is
// still unwritable (and logins are therefore refused).
const auditDownEvery = time.Minute

// Server is a running bastion. Create it with New, run it with Serve.
type Server struct {
	cfg     Config
	log     *slog.Logger
	now     func() time.Time
	checker *certauth.Checker
	audit   *record.Audit
	signers []gossh.Signer
	glKeys  []gl.Signer // signers as gliderlabs takes them, for every connection's gliderServer
	lim     *limiter
	proxy   *proxySetup // nil: no rule names a proxy destination

	settings atomic.Pointer[Config] // settings SIGHUP may change (see Apply)
	policy   atomic.Pointer[policy.Policy]
	rules    atomic.Pointer[[]policy.Rule]
	localIPs atomic.Pointer[map[netip.Addr]bool]

	preauth  *preauthLog
	pp       proxyHeaders // PROXY protocol header reads in flight (proxyproto.go)
	resolver atomic.Pointer[net.Resolver]

	// Service-log rate limits: refusals per source, audit-down repeats.
	refusalLog   *KeyedLimiter
	auditDown    atomic.Bool
	auditDownLog *rate.Limiter
	auditLost    atomic.Int64

	observe atomic.Pointer[func(record.Event)]

	mu   sync.Mutex
	live map[*session]struct{}
	wg   sync.WaitGroup // one per connection goroutine
}

// New checks cfg (after filling defaults), loads the host keys (refusing
// group- or world-readable ones), the user CA keys and revocation list, the
// rules, and opens the audit log. The caller owns the Server and must Close
// it after Serve returns.
func New(cfg Config, log *slog.Logger, now func() time.Time) (*Server, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if now == nil {
		now = time.Now
	}
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	signers, err := loadHostSigners(cfg.HostKeys, cfg.HostCertificates)
	if err == nil {
		signers, err = restrictHostSigners(signers, cfg.algorithms().hostKeys, log)
	}
	if err != nil {
		return nil, fmt.Errorf("[bastion] host_keys: %w", err)
	}
	checker, pol, err := newDecider(&cfg, log, now)
	if err != nil {
		return nil, err
	}
	if len(cfg.Rules) == 0 {
		log.Warn("no [[bastion.rule]] configured: every forward will be refused")
	}
	audit, err := record.OpenAudit(cfg.AuditLog, now)
	if err != nil {
		return nil, fmt.Errorf("[bastion] audit_log: %w", err)
	}
	s := &Server{
		cfg:     cfg,
		log:     log,
		now:     now,
		checker: checker,
		audit:   audit,
		signers: signers,
		lim:     newLimiter(&cfg, now),
		live:    make(map[*session]struct{}),

		refusalLog:   NewKeyedLimiter(refusalEvery, refusalBurst, now),
		auditDownLog: rate.NewLimiter(rate.Every(auditDownEvery), 1),
	}
	s.preauth = newPreauthLog(s, cfg.PenaltyWindow.Duration)
	live := cfg
	s.settings.Store(&live)
	s.resolver.Store(newResolver(cfg.DNSServer))
	if cfg.ProxyEnabled() {
		ps, err := newProxySetup(&cfg, log, now, s.auditLog)
		if err != nil {
			audit.Close()
			return nil, err
		}
		s.proxy = ps
	}
	if err := s.startCheckpoints(); err != nil {
		s.Close()
		return nil, err
	}
	s.policy.Store(pol)
	rules := append([]policy.Rule(nil), cfg.Rules...)
	s.rules.Store(&rules)
	s.refreshLocalIPs()
	for _, sg := range signers {
		s.glKeys = append(s.glKeys, sg)
	}
	return s, nil
}

// newDecider loads what every decision reads, for New and NewCheckOnly
// alike (so check-cert decides as the live bastion): the certificate
// checker (CA keys, revocation list) and the policy.
func newDecider(cfg *Config, log *slog.Logger, now func() time.Time) (*certauth.Checker, *policy.Policy, error) {
	checker, err := certauth.New(certauth.Config{
		UserCAKeys:      cfg.UserCAKeys,
		RevokedKeys:     cfg.RevokedKeys,
		MaxCertLifetime: cfg.MaxCertLifetime.Duration,
		ClockSkew:       cfg.ClockSkew.Duration,
	}, now, log)
	if err != nil {
		return nil, nil, fmt.Errorf("[bastion] user_ca_keys/revoked_keys: %w", err)
	}
	pol, err := policy.New(cfg.Rules)
	if err != nil {
		return nil, nil, fmt.Errorf("[[bastion.rule]]: %w", err)
	}
	return checker, pol, nil
}

// Close closes the audit log, then the recordings index, each with a final
// checkpoint; in that order the index's last checkpoint also signs the
// audit log's, so not even the audit log's last line can be cut unseen.
// Call it after Serve has returned.
func (s *Server) Close() error {
	err := s.audit.Close()
	if s.proxy != nil {
		err = errors.Join(err, s.proxy.recCfg.Index.Close())
	}
	return err
}

// SetRules replaces the destination rules (after a configuration reload).
// Live forwards keep running; new channels use the new rules.
func (s *Server) SetRules(rules []policy.Rule) error {
	pol, err := policy.New(rules)
	if err != nil {
		return fmt.Errorf("[[bastion.rule]]: %w", err)
	}
	rules = append([]policy.Rule(nil), rules...)
	s.policy.Store(pol)
	s.rules.Store(&rules)
	live := *s.conf()
	live.Rules = rules
	s.settings.Store(&live)
	n := len(rules)
	s.auditLog(record.Reload{What: "rules", Rules: &n})
	return nil
}

// conf returns the current settings: those Apply changes on SIGHUP are read
// through it, the others from s.cfg.
func (s *Server) conf() *Config { return s.settings.Load() }

// hotKeys are the [bastion] keys Apply puts into effect without a restart.
// The others (listen, host keys, CA and revocation file paths, the audit
// log, the recording proxy's keys and directories, …) are read once at
// start: Apply names them when they changed.
var hotKeys = map[string]bool{
	"rule": true, "max_unauthenticated": true, "max_unauthenticated_per_source": true,
	"penalty_failures": true, "penalty_window": true, "penalty": true, "dns_server": true,
	"handshake_timeout": true, "max_session": true, "dial_timeout": true, "idle_timeout": true,
	"proxy_protocol_from": true,
	// Read by each recorded session channel when it opens (proxyConn.handle).
	"accept_env": true, "max_command_bytes": true, "sftp_extensions": true,
}

// Apply puts a reloaded [bastion] table into effect (SIGHUP): every
// setting in hotKeys takes effect for new connections and channels (live
// ones keep what they started with); it returns the keys it applied and
// the keys that changed but only take effect after a restart. On an
// invalid configuration nothing changes. Call Reload as well to re-read
// the CA and revocation files.
func (s *Server) Apply(cfg Config) (applied, restart []string, err error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		s.auditLog(record.Reload{What: "config", Result: "failed", Error: record.Sanitize(err.Error(), 300)})
		return nil, nil, err
	}
	old := s.conf()
	ov, nv := reflect.ValueOf(*old), reflect.ValueOf(cfg)
	for i := 0; i < ov.NumField(); i++ {
		key, _, _ := strings.Cut(ov.Type().Field(i).Tag.Get("toml"), ",")
		if key == "" || sameSetting(ov.Field(i), nv.Field(i)) {
			continue
		}
		if hotKeys[key] {
			applied = append(applied, key)
		} else {
			restart = append(restart, key)
		}
	}
	if cfg.ProxyEnabled() && s.proxy == nil {
		// Proxy rules arrive, but the recording proxy was not set up at
		// start: they refuse with "not configured" until a restart.
		restart = append(restart, "rule (proxy destinations: the recording proxy starts only at start-up)")
	}
	if slices.Contains(applied, "rule") {
		pol, err := policy.New(cfg.Rules)
		if err != nil {
			return nil, nil, fmt.Errorf("[[bastion.rule]]: %w", err)
		}
		rules := append([]policy.Rule(nil), cfg.Rules...)
		s.policy.Store(pol)
		s.rules.Store(&rules)
	}
	// Keys that need a restart keep their old values in the live settings,
	// so that nothing half-applies.
	live := *old
	live.Rules = cfg.Rules
	live.MaxUnauthenticated, live.MaxUnauthenticatedPerSource = cfg.MaxUnauthenticated, cfg.MaxUnauthenticatedPerSource
	live.PenaltyFailures, live.PenaltyWindow, live.Penalty = cfg.PenaltyFailures, cfg.PenaltyWindow, cfg.Penalty
	live.DNSServer = cfg.DNSServer
	live.ProxyProtocolFrom = cfg.ProxyProtocolFrom
	live.HandshakeTimeout, live.MaxSession, live.DialTimeout, live.IdleTimeout = cfg.HandshakeTimeout, cfg.MaxSession, cfg.DialTimeout, cfg.IdleTimeout
	live.AcceptEnv, live.MaxCommandBytes, live.SFTPExtensions = cfg.AcceptEnv, cfg.MaxCommandBytes, cfg.SFTPExtensions
	s.settings.Store(&live)
	s.lim.configure(&live)
	s.preauth.setWindow(live.PenaltyWindow.Duration)
	if old.DNSServer != live.DNSServer {
		s.resolver.Store(newResolver(live.DNSServer))
	}
	ev := record.Reload{What: "config", Result: "ok", ReloadChanges: &record.ReloadChanges{Applied: nonNil(applied), NeedsRestart: nonNil(restart)}}
	if slices.Contains(applied, "rule") {
		n := len(cfg.Rules)
		ev.Rules = &n
	}
	s.auditLog(ev)
	return applied, restart, nil
}

// hideAddrs removes a target's resolved address from a message meant for
// the client (a dial or handshake error names it): the name the client
// asked for is theirs, the address behind it is internal.
func hideAddrs(msg, host string, ip netip.Addr, port uint16) string {
	if !ip.IsValid() || host == ip.String() {
		return msg
	}
	ap := netip.AddrPortFrom(ip, port).String()
	msg = strings.ReplaceAll(msg, " ("+ap+")", "")
	msg = strings.ReplaceAll(msg, ap, "the target")
	return strings.ReplaceAll(msg, ip.String(), "the target")
}

// sameSetting compares one setting of two configurations; an empty list
// equals an absent one (TOML's [] against a missing key).
func sameSetting(a, b reflect.Value) bool {
	if a.Kind() == reflect.Slice && a.Len() == 0 && b.Len() == 0 {
		return true
	}
	return reflect.DeepEqual(a.Interface(), b.Interface())
}

func nonNil(v []string) []string {
	if v == nil {
		return []string{}
	}
	return v
}

// Reload re-reads the user CA keys and the revocation list (SIGHUP), then
// closes every live connection whose certificate is no longer valid. Other
// connections keep running. On error the previous trust material stays in
// force.
func (s *Server) Reload() error {
	if err := s.checker.Reload(); err != nil {
		s.auditLog(record.Reload{What: "ca+krl", Result: "failed", Error: record.Sanitize(err.Error(), 300)})
		return fmt.Errorf("bastion reload: %w", err)
	}
	s.refreshLocalIPs()
	s.auditLog(record.Reload{What: "ca+krl", Result: "ok"})
	s.revalidate()
	return nil
}

// Serve accepts connections on ln until ctx is done, then closes ln and
// every connection it accepted (their audit "conn.end" says why) and
// returns nil once they are all gone. Any other accept error is returned.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	// Process-wide, but only a bastion makes garbage at the rate of
	// the bytes it relays (see relayHeapHeadroom).
	heapfloor.Start(relayHeapHeadroom)
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()

	pollDone := make(chan struct{})
	pollCtx, cancelPoll := context.WithCancel(ctx)
	go func() {
		defer close(pollDone)
		s.pollReload(pollCtx)
	}()

	uploadDone := make(chan struct{})
	uploadCtx, cancelUpload := context.WithCancel(context.WithoutCancel(ctx))
	go func() {
		defer close(uploadDone)
		if s.proxy != nil && s.proxy.upload != nil {
			s.proxy.upload.Run(uploadCtx, time.Minute, 30*time.Second)
		}
	}()

	var err error
	var delay time.Duration
	for {
		var nc net.Conn
		nc, err = ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				err = nil
				break
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) ||
				errors.Is(err, syscall.ENFILE) || errors.Is(err, syscall.ECONNABORTED) {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.log.Warn("bastion accept failed; retrying", "err", err, "delay", delay)
				time.Sleep(delay)
				continue
			}
			err = fmt.Errorf("bastion: accept on %s: %w", ln.Addr(), err)
			break
		}
		delay = 0
		s.acceptConn(nc)
	}

	cancelPoll()
	<-pollDone
	s.endProxyHeaders()
	s.closeAll("server shutting down")
	s.wg.Wait()
	// Recordings sealed at shutdown get a last, bounded upload pass.
	cancelUpload()
	<-uploadDone
	s.preauth.close()
	return err
}

// pollReload picks up changed CA and KRL files.
func (s *Server) pollReload(ctx context.Context) {
	t := time.NewTicker(reloadPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		changed, err := s.checker.ReloadIfChanged()
		if err != nil {
			s.log.Error("bastion: reloading CA keys or revocation list failed; keeping the previous ones", "err", err)
			continue
		}
		if changed {
			s.auditLog(record.Reload{What: "ca+krl", Result: "ok", Trigger: "file changed"})
			s.revalidate()
		}
	}
}

// accept applies the unauthenticated-connection limits and starts the
// connection goroutine.
func (s *Server) accept(nc net.Conn) {
	src := addrPortOf(nc.RemoteAddr())
	if ok, why := s.lim.admit(src.Addr()); !ok {
		// A line before the version string is allowed by RFC 4253 4.2; it is
		// the only way to tell a client why before closing.
		_ = nc.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = nc.Write([]byte("gatehouse: " + why + "; try again later\r\n"))
		nc.Close()
		// A flood must not turn into a flood of lines: counted per
		// source, one line per source per penalty_window.
		s.preauth.record(src, outcomeRefused, why, nil)
		return
	}
	sess := s.newSession(nc, src)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		sess.run()
	}()
}

func (s *Server) newSession(nc net.Conn, src netip.AddrPort) *session {
	var idb [8]byte
	_, _ = rand.Read(idb[:])
	sess := &session{
		s:       s,
		id:      hex.EncodeToString(idb[:]),
		nc:      nc,
		src:     src,
		start:   s.now(),
		tokens:  make(map[string]*authEntry),
		drained: make(chan struct{}),
		slot:    true,
	}
	s.mu.Lock()
	s.live[sess] = struct{}{}
	s.mu.Unlock()
	return sess
}

func (s *Server) forget(sess *session) {
	s.mu.Lock()
	delete(s.live, sess)
	s.mu.Unlock()
}

func (s *Server) sessions() []*session {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*session, 0, len(s.live))
	for sess := range s.live {
		out = append(out, sess)
	}
	return out
}

func (s *Server) closeAll(reason string) {
	for _, sess := range s.sessions() {
		sess.closeWith(reason)
	}
}

// revalidate closes authenticated connections whose certificate the
// current CA set and revocation list no longer accept.
func (s *Server) revalidate() {
	for _, sess := range s.sessions() {
		id := sess.identity()
		if id == nil {
			continue
		}
		if err := s.checker.StillValid(id); err != nil {
			reason, detail := refusalOf(err)
			sess.closeWith("certificate no longer valid: " + reason + ": " + detail)
		}
	}
}

func (s *Server) refreshLocalIPs() {
	set := map[netip.Addr]bool{}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil {
				set[p.Addr().Unmap()] = true
			}
		}
	}
	s.localIPs.Store(&set)
}

// protected reports destinations a rule must name literally: loopback,
// link-local (cloud metadata lives there), unspecified and multicast
// addresses, and every address of this machine (its own services).
func (s *Server) protected(ap netip.AddrPort) bool {
	ip := ap.Addr().Unmap()
	if ip.IsLoopback() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() ||
		ip.IsInterfaceLocalMulticast() || ip.IsMulticast() || ip.IsUnspecified() {
		return true
	}
	return (*s.localIPs.Load())[ip]
}

// auditLog writes one audit event; a failure is returned so that callers
// on an allow path can fail closed (a login is refused while the audit log
// cannot be written). The service log says so once when writing starts to
// fail, then at most once per auditDownEvery, and once when it works again
// (the audit log itself then holds an "audit.gap" line counting what was
// lost). Refusals by policy after authentication also go to the service
// log, rate-limited per source.
func (s *Server) auditLog(ev record.Event) error {
	err := s.audit.Log(ev)
	if f := s.observe.Load(); f != nil {
		o := ev
		if err != nil {
			o = record.AuditFailed{Event: ev, Error: err.Error()}
		}
		(*f)(o)
	}
	if err != nil {
		if !errors.Is(err, record.ErrUnwritable) {
			s.log.Error("bastion: audit log write failed", "event", ev.EventName(), "err", err)
			return err
		}
		lost := s.auditLost.Add(1)
		switch {
		case !s.auditDown.Swap(true):
			s.auditDownLog.Allow() // the first line uses up the budget
			s.log.Error("bastion: the audit log cannot be written; new logins are refused until it can", "event", ev.EventName(), "err", err)
		case s.auditDownLog.Allow():
			s.log.Error("bastion: the audit log still cannot be written; new logins are refused", "events_lost", lost, "err", err)
		}
		return err
	}
	if s.auditDown.Swap(false) {
		s.log.Info("bastion: the audit log is writable again; logins are accepted; the gap is recorded in it as an audit.gap event",
			"events_lost", s.auditLost.Swap(0))
	}
	if src, args := refusalArgs(ev); args != nil {
		s.logRefusal(ev.EventName(), src, args)
	}
	return nil
}

// refusalArgs returns, for an event that refuses an authenticated user
// something, its source and the service-log attributes that say who was
// refused what (args nil for other events).
func refusalArgs(ev record.Event) (src string, args []any) {
	switch e := ev.(type) {
	case record.ForwardDenied:
		return e.Source, []any{"login", e.Login, "key_id", e.KeyID, "destination", e.Destination, "reason", e.Reason}
	case record.RequestDenied:
		args = []any{}
		if e.Identity != nil {
			args = append(args, "login", e.Login, "key_id", e.KeyID)
		}
		if e.Target != "" {
			args = append(args, "target", e.Target)
		}
		return e.Source, append(args, "request", e.Request, "reason", e.Reason)
	case record.ProxyRequestDenied:
		return e.Source, []any{"login", e.Login, "key_id", e.KeyID, "target", e.Target, "request", e.Request, "reason", e.Reason}
	case record.ProxyFailed:
		return e.Source, []any{"login", e.Login, "key_id", e.KeyID, "target", e.Target, "reason", e.Reason}
	}
	return "", nil
}

// logRefusal copies a refusal to the service log unless its source used up
// its budget.
func (s *Server) logRefusal(event, src string, fields []any) {
	key := src
	if ap, err := netip.ParseAddrPort(src); err == nil {
		key = sourceString(sourceKey(ap.Addr()))
	}
	ok, suppressed := s.refusalLog.Allow(key)
	if !ok {
		return
	}
	args := append([]any{"event", event, "source", src}, fields...)
	if suppressed > 0 {
		args = append(args, "suppressed", suppressed)
	}
	s.log.Warn("bastion: refused", args...)
}

// observeOnly passes an event to the observer without writing it (refused
// attempts, which the audit log aggregates; metrics still count each).
func (s *Server) observeOnly(ev record.Event) {
	if f := s.observe.Load(); f != nil {
		(*f)(ev)
	}
}

// SetObserver registers f to be called with every audit event after it is
// written (a record.AuditFailed wrapping it when writing failed), and with
// every refused authentication attempt (record.AuthRefused), which the
// audit log only counts in a record.Preauth line unless the connection
// later authenticates. f derives metrics, say: it switches on the event's
// type. It runs on the connection's goroutine, must return quickly and
// must not modify or keep the event's slices and maps.
func (s *Server) SetObserver(f func(record.Event)) {
	s.observe.Store(&f)
}

func addrPortOf(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		return netip.AddrPortFrom(ta.AddrPort().Addr().Unmap(), ta.AddrPort().Port())
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

func refusalOf(err error) (reason, detail string) {
	var r *certauth.Refusal
	if errors.As(err, &r) {
		return r.Reason, record.Sanitize(r.Detail, 300)
	}
	return "error", record.Sanitize(err.Error(), 300)
}
