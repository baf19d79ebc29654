package bastion

import (
	"fmt"
	"testing"
	"time"
)

// TestKeyedLimiter: each key has its own burst, then one line per
// interval; the line allowed after a pause says how many were suppressed;
// the number of keys tracked stays bounded.
func TestKeyedLimiter(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l := NewKeyedLimiter(10*time.Second, 2, func() time.Time { return now })
	allowed := func(key string) int {
		n := 0
		for range 5 {
			if ok, _ := l.Allow(key); ok {
				n++
			}
		}
		return n
	}
	if n := allowed("a"); n != 2 {
		t.Fatalf("burst of 2 allowed %d of 5", n)
	}
	if n := allowed("b"); n != 2 {
		t.Fatalf("another key's budget was used up by the first: %d allowed", n)
	}
	now = now.Add(10 * time.Second)
	ok, suppressed := l.Allow("a")
	if !ok || suppressed != 3 {
		t.Fatalf("after the interval: ok %v, suppressed %d; want true, 3", ok, suppressed)
	}
	if ok, _ := l.Allow("a"); ok {
		t.Fatal("a second line within the interval was allowed")
	}
	l.maxKeys = 100
	for i := range 1000 {
		l.Allow(fmt.Sprint("k", i))
	}
	if len(l.keys) > 100 {
		t.Fatalf("%d keys tracked, bound is 100", len(l.keys))
	}
}
