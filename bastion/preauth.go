package bastion

import (
	"maps"
	"net/netip"
	"sync"
	"time"
)

// Pre-authentication outcomes: how a connection ended (or was turned away)
// before it authenticated. They are the keys of a "preauth" event's
// "outcomes" counts.
const (
	outcomeRefused         = "refused"          // turned away at accept by a limit or penalty
	outcomeAuthFailed      = "auth-failed"      // at least one authentication attempt was refused
	outcomeTimeout         = "timeout"          // handshake_timeout passed
	outcomeHandshakeFailed = "handshake-failed" // SSH version/key exchange failed
	outcomeClosed          = "closed"           // closed without trying to authenticate
)

// Bounds of one "preauth" line, so that a line's size does not depend on
// what a flood sends.
const (
	maxPreauthSamples  = 4  // distinct refusals described in full
	maxPreauthReasons  = 16 // distinct refusal reasons counted
	maxConnRefusals    = 8  // refused attempts a connection keeps (MaxAuthTries is 6)
	preauthOverflowKey = "*"
)

// preauthLog aggregates everything that happens before authentication per
// source (see sourceKey), so that the audit log and the service log grow by
// a bounded amount per source per window however hard a source floods:
// the first outcome of a quiet source is written at once (one failed login
// is visible immediately, with its details), later ones are counted and
// written as one "preauth" summary line when the window ends, so lines of
// one source are at least a window apart. Only a connection that
// authenticates gets its own lines (conn.start, its refused attempts,
// auth). Past maxTrackedSources sources, new ones are counted together
// under source "*".
type preauthLog struct {
	s *Server

	mu     sync.Mutex
	window time.Duration
	src    map[string]*preauthSource
	closed bool
}

// preauthSource is what one source did in the current window.
type preauthSource struct {
	key      string
	timer    *time.Timer
	pending  int // outcomes counted since the last line
	since    time.Time
	outcomes map[string]int
	reasons  map[string]int // auth refusal reason → attempts
	attempts int
	samples  []map[string]any
	lastPort uint16
	overflow int // reasons beyond maxPreauthReasons
}

func newPreauthLog(s *Server, window time.Duration) *preauthLog {
	return &preauthLog{s: s, window: window, src: make(map[string]*preauthSource)}
}

// setWindow applies a new penalty_window to windows opened from now on.
func (p *preauthLog) setWindow(d time.Duration) {
	p.mu.Lock()
	p.window = d
	p.mu.Unlock()
}

// record counts one connection's pre-authentication outcome. refusals are
// the audit fields of its refused attempts (at most maxConnRefusals);
// detail says more about the outcome (the limit that refused it, the
// handshake error).
func (p *preauthLog) record(src netip.AddrPort, outcome, detail string, refusals []map[string]any) {
	key := sourceString(sourceKey(src.Addr()))
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	st := p.src[key]
	if st == nil {
		if len(p.src) >= maxTrackedSources {
			key = preauthOverflowKey
			st = p.src[key]
		}
		if st == nil {
			st = &preauthSource{key: key}
			p.src[key] = st
		}
	}
	if st.pending == 0 {
		st.since = p.s.now()
		st.outcomes = make(map[string]int)
		st.reasons = make(map[string]int)
		st.samples = nil
		st.attempts = 0
		st.overflow = 0
	}
	st.pending++
	st.lastPort = src.Port()
	st.outcomes[outcome]++
	if len(refusals) == 0 && outcome != outcomeAuthFailed {
		st.sample(map[string]any{"outcome": outcome, "detail": detail})
	}
	for _, r := range refusals {
		st.attempts++
		reason, _ := r["reason"].(string)
		if _, ok := st.reasons[reason]; ok || len(st.reasons) < maxPreauthReasons {
			st.reasons[reason]++
		} else {
			st.overflow++
		}
		smp := map[string]any{"outcome": outcomeAuthFailed}
		for _, k := range []string{"reason", "detail", "login", "method", "key_type", "key_fp", "key_id", "serial", "ca_fp"} {
			if v, ok := r[k]; ok {
				smp[k] = v
			}
		}
		st.sample(smp)
	}
	var line map[string]any
	if st.timer == nil {
		// A quiet source: write now and open a window.
		line = st.flush()
		st.timer = time.AfterFunc(p.window, func() { p.tick(key) })
	}
	p.mu.Unlock()
	if line != nil {
		p.write(line)
	}
}

// sample keeps a bounded list of distinct refusals, counting repeats.
func (st *preauthSource) sample(m map[string]any) {
	for _, s := range st.samples {
		if s["outcome"] == m["outcome"] && s["reason"] == m["reason"] && s["detail"] == m["detail"] &&
			s["login"] == m["login"] && s["key_fp"] == m["key_fp"] {
			s["count"] = s["count"].(int) + 1
			return
		}
	}
	if len(st.samples) < maxPreauthSamples {
		m["count"] = 1
		st.samples = append(st.samples, m)
	}
}

// flush renders the counted outcomes as one line and starts counting
// afresh; nil if nothing was counted.
func (st *preauthSource) flush() map[string]any {
	if st.pending == 0 {
		return nil
	}
	f := map[string]any{
		"source":      st.key,
		"connections": st.pending,
		"outcomes":    maps.Clone(st.outcomes),
		"since":       st.since.UTC().Format(time.RFC3339Nano),
	}
	if st.pending == 1 && st.key != preauthOverflowKey {
		f["port"] = st.lastPort
	}
	if st.attempts > 0 {
		f["auth_refused"] = st.attempts
		f["auth_reasons"] = maps.Clone(st.reasons)
	}
	if st.overflow > 0 {
		f["auth_reasons_uncounted"] = st.overflow
	}
	if len(st.samples) > 0 {
		f["samples"] = st.samples
	}
	st.pending = 0
	st.samples = nil
	return f
}

// tick ends a source's window: a summary line if anything happened in it
// (and a new window), otherwise the source is forgotten.
func (p *preauthLog) tick(key string) {
	p.mu.Lock()
	st := p.src[key]
	if st == nil || p.closed {
		p.mu.Unlock()
		return
	}
	line := st.flush()
	if line == nil {
		delete(p.src, key)
		st.timer = nil
	} else {
		st.timer.Reset(p.window)
	}
	p.mu.Unlock()
	if line != nil {
		p.write(line)
	}
}

// write puts one summary into the audit log and, as a warning, into the
// service log (so the service log is rate-limited per source the same way).
func (p *preauthLog) write(f map[string]any) {
	s := p.s
	if pen, ok := s.lim.penalisedUntil(f["source"].(string)); ok {
		f["penalised_until"] = pen.UTC().Format(time.RFC3339)
	}
	args := []any{"source", f["source"], "connections", f["connections"], "outcomes", f["outcomes"]}
	if r, ok := f["auth_reasons"]; ok {
		args = append(args, "auth_reasons", r)
	}
	if smp, ok := f["samples"].([]map[string]any); ok && len(smp) > 0 {
		for _, k := range []string{"login", "key_id", "key_fp", "ca_fp", "detail"} {
			if v, ok := smp[0][k]; ok {
				args = append(args, k, v)
			}
		}
	}
	if v, ok := f["penalised_until"]; ok {
		args = append(args, "penalised_until", v)
	}
	s.log.Warn("bastion: connections ended before authentication", args...)
	s.auditLog("preauth", f)
}

// close writes what is still counted and stops the windows (at shutdown,
// before the audit log is closed).
func (p *preauthLog) close() {
	p.mu.Lock()
	var lines []map[string]any
	for _, st := range p.src {
		if st.timer != nil {
			st.timer.Stop()
		}
		if l := st.flush(); l != nil {
			lines = append(lines, l)
		}
	}
	p.closed = true
	p.mu.Unlock()
	for _, l := range lines {
		p.write(l)
	}
}
