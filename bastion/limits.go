package bastion

import (
	"net/netip"
	"sync"
	"time"
)

// maxTrackedSources bounds the memory spent on per-source penalty records,
// like OpenSSH's PerSourcePenalties max-sources: past it, new sources are
// not penalised (overflow is permissive) rather than evicting old ones.
const maxTrackedSources = 65536

// limiter implements MaxStartups-like caps on unauthenticated connections
// (overall and per source IP) and PerSourcePenalties-like blocking of
// sources that keep failing. Authenticated connections are not counted, so
// the caps never limit how many admins can be logged in at once.
type limiter struct {
	now          func() time.Time
	maxTotal     int
	maxPerSource int
	failures     int // < 0: penalties disabled
	window       time.Duration
	penalty      time.Duration

	mu    sync.Mutex
	total int
	src   map[netip.Addr]*sourceState
}

type sourceState struct {
	unauth       int
	fails        []time.Time // recent failures, oldest first, at most failures long
	blockedUntil time.Time
}

func newLimiter(cfg *Config, now func() time.Time) *limiter {
	return &limiter{
		now:          now,
		maxTotal:     cfg.MaxUnauthenticated,
		maxPerSource: cfg.MaxUnauthenticatedPerSource,
		failures:     cfg.PenaltyFailures,
		window:       cfg.PenaltyWindow.Duration,
		penalty:      cfg.Penalty.Duration,
		src:          make(map[netip.Addr]*sourceState),
	}
}

// admit reserves an unauthenticated slot for ip, or says why not. A
// successful admit must be paired with exactly one release.
func (l *limiter) admit(ip netip.Addr) (ok bool, why string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.src[ip]
	if st != nil && l.now().Before(st.blockedUntil) {
		return false, "source penalised after repeated failures"
	}
	if l.maxTotal > 0 && l.total >= l.maxTotal {
		return false, "too many unauthenticated connections (max_unauthenticated)"
	}
	if st == nil {
		st = &sourceState{}
		l.src[ip] = st
	}
	if l.maxPerSource > 0 && st.unauth >= l.maxPerSource {
		return false, "too many unauthenticated connections from this source (max_unauthenticated_per_source)"
	}
	st.unauth++
	l.total++
	return true, ""
}

// release frees the slot taken by admit; failed records a penalty strike
// for the source (authentication failures or an exceeded handshake
// deadline).
func (l *limiter) release(ip netip.Addr, failed bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	st := l.src[ip]
	if st == nil { // cannot happen: admit created it
		return
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
	l.forgetLocked(ip, st, now)
	if len(l.src) > maxTrackedSources {
		// Overflow: drop this source's record rather than grow without bound.
		if st.unauth == 0 {
			delete(l.src, ip)
		}
	}
}

// forgetLocked drops a record that no longer influences any decision.
func (l *limiter) forgetLocked(ip netip.Addr, st *sourceState, now time.Time) {
	if st.unauth > 0 || now.Before(st.blockedUntil) {
		return
	}
	if n := len(st.fails); n > 0 && now.Sub(st.fails[n-1]) <= l.window {
		return
	}
	delete(l.src, ip)
}
