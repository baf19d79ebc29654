package bastion

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"

	"gatehouse/bastion/certauth"
	"gatehouse/bastion/internal/streamconn"
	"gatehouse/bastion/record"
)

// session is the owner of one TCP connection, from accept to close: it
// holds the connection's state (source, unauthenticated slot and penalty
// bookkeeping, auth attempts, identity once authenticated, live proxy
// sessions) and its methods are the connection's gliderlabs and x/crypto
// callbacks (see gliderServer). Decisions themselves are Server methods
// shared with check-cert (decide.go), made once per channel.
type session struct {
	s     *Server
	id    string // random, correlates this connection's audit events
	nc    net.Conn
	src   netip.AddrPort
	start time.Time

	mu            sync.Mutex
	tokens        map[string]*authEntry // auth token (in Permissions) → what that attempt proved
	ident         *certauth.Identity    // the accepted identity, once authenticated
	slot          bool                  // still holds an unauthenticated slot in the limiter
	failures      int                   // refused authentication attempts
	noneSeen      bool                  // the customary first "none" probe was seen
	graceExceeded bool                  // closed for exceeding handshake_timeout
	forwards      int                   // open direct-tcpip channels
	plain         *note                 // last refusal decided by the public key pre-filter
	reason        string                // why the bastion closed the connection
	hsErr         string                // handshake error reported by gliderlabs
	expiry        *time.Timer
	active        int                     // channel and request handlers running
	ended         bool                    // HandleConn returned: no new handlers
	drained       chan struct{}           // closed when active drops to 0 after ended
	proxies       map[*proxyConn]struct{} // live recorded proxy sessions
	proxySeq      int                     // numbers this connection's recordings
	loginProxy    *proxyConn              // the proxy of a user@host@bastion login, once started
	refusals      []record.AuthRefused    // refused attempts (at most maxConnRefusals)
	started       bool                    // conn.start was written (the connection authenticated)
}

// authEntry is what one verified authentication attempt proved: the
// identity, the exact login name of that attempt, and for a
// "login@host:port" login the proxy target it was authorised for.
type authEntry struct {
	id     *certauth.Identity
	user   string
	target *proxyTarget
}

// note is a refusal recorded by the pre-filter for AuthLogCallback, which
// is the first place that knows the (fresh) login name of the attempt.
type note struct {
	reason, detail string
	key            *record.OfferedKey
}

// run serves the connection and writes its audit trail: conn.start (when
// it authenticates, see logStart) … conn.end for a connection that
// authenticated, one counted outcome in its source's "preauth" line for
// one that did not.
func (sess *session) run() {
	s := sess.s
	// gliderlabs resets socket deadlines on every read and write, so a
	// deadline set on the socket would be cleared by the first packet: the
	// handshake deadline is a timer that closes the socket instead.
	grace := time.AfterFunc(s.conf().HandshakeTimeout.Duration, func() {
		sess.mu.Lock()
		exceeded := sess.ident == nil
		sess.graceExceeded = exceeded
		sess.mu.Unlock()
		if exceeded {
			sess.closeWith("handshake timeout: not authenticated within handshake_timeout")
		}
	})
	sess.gliderServer().HandleConn(streamconn.New(sess.nc))
	grace.Stop()
	sess.nc.Close()
	// gliderlabs runs channel and request handlers in goroutines it does
	// not wait for; wait here so that their audit events precede
	// conn.end and Serve does not return while they still write.
	sess.mu.Lock()
	sess.ended = true
	busy := sess.active > 0
	sess.mu.Unlock()
	if busy {
		<-sess.drained
	}
	sess.mu.Lock()
	lp := sess.loginProxy
	connReason := sess.reason
	sess.mu.Unlock()
	if lp != nil {
		if connReason == "" {
			connReason = "closed by client"
		}
		lp.end(connReason)
	}

	sess.mu.Lock()
	if sess.expiry != nil {
		sess.expiry.Stop()
	}
	reason := sess.reason
	id := sess.ident
	started := sess.started
	refusals := sess.refusals
	outcome := ""
	if id == nil {
		switch {
		case sess.failures > 0:
			outcome = outcomeAuthFailed
		case sess.graceExceeded:
			outcome = outcomeTimeout
		case sess.hsErr != "":
			outcome = outcomeHandshakeFailed
		default:
			outcome = outcomeClosed
		}
	}
	if reason == "" {
		switch {
		case id != nil:
			reason = "closed by client"
		case sess.failures > 0:
			reason = "authentication failed"
		case sess.hsErr != "":
			reason = "handshake failed: " + sess.hsErr
		default:
			reason = "closed before authentication"
		}
	}
	releaseSlot := sess.slot
	sess.slot = false
	sess.mu.Unlock()
	if releaseSlot {
		// Penalty strikes, as OpenSSH's PerSourcePenalties: every
		// connection that ends before authenticating, however it ends.
		s.lim.release(sess.src.Addr(), id == nil)
	}
	if !started {
		// Never authenticated: its only trace is a count (and perhaps a
		// sample) in its source's aggregated "preauth" line.
		s.preauth.record(sess.src, outcome, reason, refusals)
		s.forget(sess)
		return
	}

	ev := record.ConnEnd{ConnRef: sess.ref(), Duration: seconds(s.now().Sub(sess.start)), Reason: reason}
	if id != nil {
		ai := auditIdentity(id)
		ev.Identity = &ai
	}
	s.auditLog(ev)
	s.forget(sess)
}

// logStart writes the audit lines of a connection that just authenticated:
// conn.start and the attempts it had refused before. Called once, from
// the accepting auth callback, before the accepted "auth" line.
func (sess *session) logStart() error {
	s := sess.s
	sess.mu.Lock()
	if sess.started {
		sess.mu.Unlock()
		return nil
	}
	refusals := sess.refusals
	sess.mu.Unlock()
	if err := s.auditLog(record.ConnStart{
		ConnRef: sess.ref(), Connected: sess.start.UTC().Format(time.RFC3339Nano),
	}); err != nil {
		return err
	}
	sess.mu.Lock()
	sess.started = true
	sess.refusals = nil
	sess.mu.Unlock()
	for _, r := range refusals {
		if err := s.auditLog(r); err != nil {
			return err
		}
	}
	return nil
}

// enter registers a running handler; it returns false once the connection
// is over, and the handler must then do nothing. Pair with exit.
func (sess *session) enter() bool {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	if sess.ended {
		return false
	}
	sess.active++
	return true
}

func (sess *session) exit() {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	sess.active--
	if sess.ended && sess.active == 0 {
		close(sess.drained)
	}
}

// closeWith closes the connection, remembering the first reason given.
// Recorded proxy sessions on it are ended first with reason as the cause,
// so the admin reads why (bounded by proxyTellTimeout).
func (sess *session) closeWith(reason string) {
	sess.mu.Lock()
	if sess.reason == "" {
		sess.reason = reason
	}
	pcs := make([]*proxyConn, 0, len(sess.proxies))
	for pc := range sess.proxies {
		pcs = append(pcs, pc)
	}
	sess.mu.Unlock()
	if len(pcs) == 0 {
		sess.nc.Close()
		return
	}
	for _, pc := range pcs {
		pc.stop(errors.New(reason))
	}
	go func() {
		deadline := time.After(proxyTellTimeout)
		for _, pc := range pcs {
			select {
			case <-pc.relaysDone():
			case <-deadline:
			}
		}
		sess.nc.Close()
	}()
}

// addProxy registers a recorded proxy session; false when the connection
// is already closing.
func (sess *session) addProxy(pc *proxyConn) bool {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	if sess.reason != "" || sess.ended {
		return false
	}
	if sess.proxies == nil {
		sess.proxies = make(map[*proxyConn]struct{})
	}
	sess.proxies[pc] = struct{}{}
	return true
}

func (sess *session) removeProxy(pc *proxyConn) {
	sess.mu.Lock()
	delete(sess.proxies, pc)
	sess.mu.Unlock()
}

func (sess *session) identity() *certauth.Identity {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	return sess.ident
}

// authenticated records the identity of the final, verified attempt,
// gives back the unauthenticated slot and arms the expiry timer.
func (sess *session) authenticated(token string, e *authEntry) {
	id := e.id
	s := sess.s
	now := s.now()
	sess.mu.Lock()
	sess.tokens[token] = e
	sess.ident = id
	releaseSlot := sess.slot
	sess.slot = false
	until := id.ValidBefore.Sub(now)
	why := "certificate expired at " + id.ValidBefore.UTC().Format(time.RFC3339)
	if m := s.conf().MaxSession.Duration; m > 0 && m < until {
		until, why = m, "max_session reached"
	}
	if sess.expiry == nil {
		sess.expiry = time.AfterFunc(until, func() { sess.closeWith(why) })
	}
	sess.mu.Unlock()
	if releaseSlot {
		s.lim.release(sess.src.Addr(), false)
	}
}

// entryFor maps the token in the connection's final Permissions to what
// that attempt proved.
func (sess *session) entryFor(token string) *authEntry {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	return sess.tokens[token]
}

func seconds(d time.Duration) float64 { return float64(d.Milliseconds()) / 1000 }

// auditIdentity is the audit fields that say who a connection is.
func auditIdentity(id *certauth.Identity) record.Identity {
	return record.Identity{
		Login: id.Login, Principals: sanitizeList(id.Principals), KeyID: sanitize(id.KeyID),
		Serial: id.Serial, CAFP: id.CAFingerprint, KeyFP: id.KeyFingerprint,
	}
}

// ref names the connection in its audit events.
func (sess *session) ref() record.ConnRef {
	return record.ConnRef{ID: sess.id, Source: sess.src.String()}
}
