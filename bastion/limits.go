package bastion

import (
	"math/rand/v2"
	"net/netip"
	"sync"
	"time"
)

// maxTrackedSources bounds the memory spent on per-source penalty records,
// like OpenSSH's PerSourcePenalties max-sources: past it, new sources are
// not penalised (overflow is permissive) rather than evicting old ones.
const maxTrackedSources = 65536

// Random early drop for sources that already hold an unauthenticated
// connection, as OpenSSH's MaxStartups start:rate:full, in fractions of
// max_unauthenticated: from earlyDropStart on such a source is refused with
// probability earlyDropRate, rising linearly to always at earlyDropFull.
// The quarter of the cap above earlyDropFull is left to sources that hold
// nothing yet, so an admin from a fresh address still gets in while a few
// addresses flood the port.
const (
	earlyDropStart = 0.5
	earlyDropRate  = 0.3
	earlyDropFull  = 0.75
)

// Reasons the limiter gives for a refusal; the client reads them before
// the connection is closed, the audit log counts them per source.
const (
	whyPenalised = "source penalised after repeated connections that did not authenticate"
	whyGlobal    = "too many unauthenticated connections (max_unauthenticated)"
	whyPerSource = "too many unauthenticated connections from this source (max_unauthenticated_per_source)"
	whyThrottled = "too many unauthenticated connections (max_unauthenticated); sources already connecting are throttled first"
)

// sourceKey is what the limits count per: an IPv4 address, or the /64 of
// an IPv6 address (a single host is routinely given a whole /64, so
// counting per address would give one attacker 2^64 sources).
func sourceKey(ip netip.Addr) netip.Prefix {
	ip = ip.Unmap().WithZone("")
	if ip.Is4() {
		return netip.PrefixFrom(ip, 32)
	}
	p, _ := ip.Prefix(64)
	return p
}

// sourceString renders a source key: the address for IPv4, the prefix for
// IPv6.
func sourceString(k netip.Prefix) string {
	if k.Addr().Is4() {
		return k.Addr().String()
	}
	return k.String()
}

// limiter implements MaxStartups-like caps on unauthenticated connections
// (overall, fair to fresh sources, and per source) and
// PerSourcePenalties-like blocking of sources whose connections keep ending
// before authentication. Authenticated connections are not counted, so the
// caps never limit how many admins can be logged in at once.
type limiter struct {
	now  func() time.Time
	rand func() float64 // in [0,1); the early drop's coin

	mu           sync.Mutex
	maxTotal     int
	maxPerSource int
	failures     int // < 0: penalties disabled
	window       time.Duration
	penalty      time.Duration
	total        int
	src          map[netip.Prefix]*sourceState
}

type sourceState struct {
	unauth       int
	fails        []time.Time // recent failures, oldest first, at most failures long
	blockedUntil time.Time
}

func newLimiter(cfg *Config, now func() time.Time) *limiter {
	l := &limiter{now: now, rand: rand.Float64, src: make(map[netip.Prefix]*sourceState)}
	l.configure(cfg)
	return l
}

// configure applies the limit settings of cfg (at start and on reload).
// Slots already taken stay taken; the new caps apply to the next admit.
func (l *limiter) configure(cfg *Config) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.maxTotal = cfg.MaxUnauthenticated
	l.maxPerSource = cfg.MaxUnauthenticatedPerSource
	l.failures = cfg.PenaltyFailures
	l.window = cfg.PenaltyWindow.Duration
	l.penalty = cfg.Penalty.Duration
}

// admit reserves an unauthenticated slot for ip, or says why not. A
// successful admit must be paired with exactly one release.
func (l *limiter) admit(ip netip.Addr) (ok bool, why string) {
	k := sourceKey(ip)
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.src[k]
	if st != nil && l.now().Before(st.blockedUntil) {
		return false, whyPenalised
	}
	if l.maxTotal > 0 && l.total >= l.maxTotal {
		return false, whyGlobal
	}
	if st != nil && st.unauth > 0 {
		if l.maxPerSource > 0 && st.unauth >= l.maxPerSource {
			return false, whyPerSource
		}
		if l.earlyDropLocked() {
			return false, whyThrottled
		}
	}
	if st == nil {
		st = &sourceState{}
		l.src[k] = st
	}
	st.unauth++
	l.total++
	return true, ""
}

// earlyDropLocked tosses the MaxStartups coin for a source that already
// holds an unauthenticated connection.
func (l *limiter) earlyDropLocked() bool {
	if l.maxTotal <= 0 {
		return false
	}
	start := float64(l.maxTotal) * earlyDropStart
	full := float64(l.maxTotal) * earlyDropFull
	t := float64(l.total)
	switch {
	case t < start:
		return false
	case t >= full:
		return true
	}
	p := earlyDropRate + (1-earlyDropRate)*(t-start)/(full-start)
	return l.rand() < p
}

// release frees the slot taken by admit; failed records a penalty strike
// for the source: every connection that ends without authenticating
// (failed, timed out, or simply closed, as OpenSSH's PerSourcePenalties
// authfail, grace-exceeded and noauth) counts. It reports whether the
// source is now penalised.
func (l *limiter) release(ip netip.Addr, failed bool) (penalised bool) {
	k := sourceKey(ip)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	st := l.src[k]
	if st == nil { // cannot happen: admit created it
		return false
	}
	st.unauth--
	now := l.now()
	if failed && l.failures > 0 {
		cut := 0
		for cut < len(st.fails) && now.Sub(st.fails[cut]) > l.window {
			cut++
		}
		st.fails = append(st.fails[cut:], now)
		if len(st.fails) >= l.failures {
			st.blockedUntil = now.Add(l.penalty)
			st.fails = st.fails[:0]
		}
	}
	penalised = now.Before(st.blockedUntil)
	l.forgetLocked(k, st, now)
	if len(l.src) > maxTrackedSources {
		// Overflow: drop this source's record rather than grow without bound.
		if st.unauth == 0 {
			delete(l.src, k)
		}
	}
	return penalised
}

// forgetLocked drops a record that no longer influences any decision.
func (l *limiter) forgetLocked(k netip.Prefix, st *sourceState, now time.Time) {
	if st.unauth > 0 || now.Before(st.blockedUntil) {
		return
	}
	if n := len(st.fails); n > 0 && now.Sub(st.fails[n-1]) <= l.window {
		return
	}
	delete(l.src, k)
}

// penalisedUntil reports until when the source rendered by sourceString
// is refused, if it is.
func (l *limiter) penalisedUntil(source string) (time.Time, bool) {
	k, err := netip.ParsePrefix(source)
	if err != nil {
		a, err := netip.ParseAddr(source)
		if err != nil {
			return time.Time{}, false
		}
		k = sourceKey(a)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.src[k]
	if st == nil || !l.now().Before(st.blockedUntil) {
		return time.Time{}, false
	}
	return st.blockedUntil, true
}
