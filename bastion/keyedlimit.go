package bastion

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// KeyedLimiter is the service log's budget for repeated warnings, one
// budget per key (a source address here; a mirror's name for the mirror
// refusals cmd/gatehouse logs): a burst, then one line per interval, so
// one noisy source can neither flood the journal nor hide the others. It
// counts the lines it suppressed, so the next line allowed can say how
// many were left out. Memory is bounded: past maxKeys keys every budget
// starts afresh (crude, and only an attacker with that many sources
// notices). It is exported for cmd/gatehouse, which joins both halves and
// uses the same budget for the mirror's refusals rather than a second
// limiter. Safe for concurrent use; the zero value is not usable.
type KeyedLimiter struct {
	every   time.Duration
	burst   int
	maxKeys int
	now     func() time.Time

	mu   sync.Mutex
	keys map[string]*keyedBudget
}

type keyedBudget struct {
	lim        *rate.Limiter
	suppressed int
}

// NewKeyedLimiter returns a limiter allowing, per key, burst lines at
// once and then one per every; now is its clock (nil: time.Now).
func NewKeyedLimiter(every time.Duration, burst int, now func() time.Time) *KeyedLimiter {
	if now == nil {
		now = time.Now
	}
	return &KeyedLimiter{every: every, burst: burst, maxKeys: maxTrackedSources, now: now, keys: map[string]*keyedBudget{}}
}

// Allow reports whether a line for key may be written now; when it may,
// suppressed is the number of lines for key refused since the last one
// allowed (log it, so the reader knows the line stands for more).
func (l *KeyedLimiter) Allow(key string) (ok bool, suppressed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.keys[key]
	if b == nil {
		if len(l.keys) >= l.maxKeys {
			clear(l.keys)
		}
		b = &keyedBudget{lim: rate.NewLimiter(rate.Every(l.every), l.burst)}
		l.keys[key] = b
	}
	if !b.lim.AllowN(l.now(), 1) {
		b.suppressed++
		return false, 0
	}
	n := b.suppressed
	b.suppressed = 0
	return true, n
}
