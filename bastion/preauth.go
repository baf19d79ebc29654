package bastion

import (
	"maps"
	"net/netip"
	"sync"
	"time"

	"gatehouse/bastion/record"
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
	samples  []record.PreauthSample
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
// its refused attempts (at most maxConnRefusals);
// detail says more about the outcome (the limit that refused it, the
// handshake error).
func (p *preauthLog) record(src netip.AddrPort, outcome, detail string, refusals []record.AuthRefused) {
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
		st.sample(record.PreauthSample{Outcome: outcome, Detail: detail})
	}
	for _, r := range refusals {
		st.attempts++
		if _, ok := st.reasons[r.Reason]; ok || len(st.reasons) < maxPreauthReasons {
			st.reasons[r.Reason]++
		} else {
			st.overflow++
		}
		st.sample(refusalSample(r))
	}
	var line *record.Preauth
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

// refusalSample describes a refused attempt in a preauth line: what it
// was refused for and the key it offered (not the principals the
// certificate claims, to bound the line).
func refusalSample(r record.AuthRefused) record.PreauthSample {
	a := &record.SampleAuth{Reason: r.Reason, Login: r.Login, Method: r.Method}
	if k := r.OfferedKey; k != nil {
		a.SampleKey = &record.SampleKey{KeyType: k.KeyType, KeyFP: k.KeyFP}
		if c := k.OfferedCert; c != nil {
			a.SampleCert = &record.SampleCert{KeyID: c.KeyID, Serial: c.Serial, CAFP: c.CAFP}
		}
	}
	return record.PreauthSample{Outcome: outcomeAuthFailed, Detail: r.Detail, SampleAuth: a}
}

// sample keeps a bounded list of distinct refusals, counting repeats.
func (st *preauthSource) sample(m record.PreauthSample) {
	for i := range st.samples {
		s := &st.samples[i]
		if sameSample(s, &m) {
			s.Count++
			return
		}
	}
	if len(st.samples) < maxPreauthSamples {
		m.Count = 1
		st.samples = append(st.samples, m)
	}
}

// flush renders the counted outcomes as one line and starts counting
// afresh; nil if nothing was counted.
func (st *preauthSource) flush() *record.Preauth {
	if st.pending == 0 {
		return nil
	}
	f := &record.Preauth{
		Source:      st.key,
		Connections: st.pending,
		Outcomes:    maps.Clone(st.outcomes),
		Since:       st.since.UTC().Format(time.RFC3339Nano),
	}
	if st.pending == 1 && st.key != preauthOverflowKey {
		port := st.lastPort
		f.Port = &port
	}
	if st.attempts > 0 {
		f.AuthRefused = st.attempts
		f.AuthReasons = maps.Clone(st.reasons)
	}
	f.AuthReasonsUncounted = st.overflow
	f.Samples = st.samples
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
func (p *preauthLog) write(f *record.Preauth) {
	s := p.s
	if pen, ok := s.lim.penalisedUntil(f.Source); ok {
		f.PenalisedUntil = pen.UTC().Format(time.RFC3339)
	}
	args := []any{"source", f.Source, "connections", f.Connections, "outcomes", f.Outcomes}
	if f.AuthReasons != nil {
		args = append(args, "auth_reasons", f.AuthReasons)
	}
	if len(f.Samples) > 0 {
		smp := f.Samples[0]
		if a := smp.SampleAuth; a != nil {
			args = append(args, "login", a.Login)
			if k := a.SampleKey; k != nil {
				if c := k.SampleCert; c != nil {
					args = append(args, "key_id", c.KeyID)
				}
				args = append(args, "key_fp", k.KeyFP)
				if k.SampleCert != nil && k.CAFP != "" {
					args = append(args, "ca_fp", k.CAFP)
				}
			}
		}
		args = append(args, "detail", smp.Detail)
	}
	if f.PenalisedUntil != "" {
		args = append(args, "penalised_until", f.PenalisedUntil)
	}
	s.log.Warn("bastion: connections ended before authentication", args...)
	s.auditLog(*f)
}

// close writes what is still counted and stops the windows (at shutdown,
// before the audit log is closed).
func (p *preauthLog) close() {
	p.mu.Lock()
	var lines []*record.Preauth
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

// sameSample reports two samples of the same refusal: same outcome,
// reason, detail, login and key (absent parts compare as "").
func sameSample(a, b *record.PreauthSample) bool {
	part := func(s *record.PreauthSample) (reason, login, keyFP string) {
		if a := s.SampleAuth; a != nil {
			reason, login = a.Reason, a.Login
			if a.SampleKey != nil {
				keyFP = a.KeyFP
			}
		}
		return
	}
	ar, al, ak := part(a)
	br, bl, bk := part(b)
	return a.Outcome == b.Outcome && a.Detail == b.Detail && ar == br && al == bl && ak == bk
}
