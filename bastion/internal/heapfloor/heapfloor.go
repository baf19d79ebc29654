// Package heapfloor lets the Go heap grow by a fixed headroom between
// garbage collections while the live heap is small.
//
// With GOGC=100 the collector runs whenever the heap has grown by as much
// as the live heap, and at least every 4 MiB. A bastion relaying a stream
// has a live heap of a few MiB but allocates a fresh buffer for every SSH
// packet it decrypts (x/crypto/ssh's transport.readPacket copies each
// packet out of its cipher's buffer): a GiB of garbage per GiB relayed.
// That was a collection every 4 MiB, about 250 per GiB, each waking every
// P's thread and sweeping, and the scavenger handing freed pages back to
// the kernel that the next packets fault in again (README.md, "Bastion
// throughput", has the profile). With a floor the goal is at least the
// live heap plus the headroom, so a collection comes every headroom bytes
// of garbage instead, at the cost of up to headroom more resident memory
// while the bastion is busy. A large live heap (many sessions) keeps
// GOGC's proportional goal, which is then larger than the floor.
//
// The operator's own settings win: with GOGC in the environment nothing
// is changed, and GOMEMLIMIT caps the goal as always.
package heapfloor

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
)

// minHeap is the Go runtime's minimum heap goal at GOGC=100; it scales
// with the GC percentage, so the percentage is computed from at least
// this much, or the minimum would exceed the floor.
const minHeap = 4 << 20

// basePercent is the GC percentage the floor never goes below (Go's
// default GOGC).
const basePercent = 100

var (
	mu       sync.Mutex
	headroom uint64 // 0: not started
	percent  int    // the percentage last set
)

// Start sets the floor: after every collection the GC percentage is
// chosen so that the next goal is the live heap plus at least room bytes.
// It does nothing when GOGC is set in the environment. A later call
// changes the headroom (the process has one heap, so the last caller
// wins).
func Start(room uint64) {
	if os.Getenv("GOGC") != "" || room == 0 {
		return
	}
	mu.Lock()
	first := headroom == 0
	headroom = room
	mu.Unlock()
	if first {
		adjust()
		arm()
	}
}

// arm has adjust run after the next collection: the finalizer of an
// unreachable object runs once a cycle has found it unreachable. The
// object must not be a tiny allocation (those share blocks and may never
// be finalized), hence the pointer-sized fields.
func arm() {
	s := &sentinel{}
	runtime.SetFinalizer(s, func(*sentinel) {
		adjust()
		arm()
	})
}

type sentinel struct{ _, _ *byte }

// adjust sets the GC percentage for the headroom from the heap the last
// collection marked live (plus stacks and globals, which GOGC's goal
// also counts).
func adjust() {
	mu.Lock()
	defer mu.Unlock()
	if want := Percent(liveBytes(), headroom); want != percent {
		debug.SetGCPercent(want)
		percent = want
	}
}

// Percent is the GC percentage whose goal is live+room when that is more
// than GOGC=100's goal, else 100. live counts what the Go runtime's goal
// counts: the marked heap, stacks and globals.
func Percent(live, room uint64) int {
	base := max(live, minHeap)
	p := room * 100 / base
	if p < basePercent {
		return basePercent
	}
	return int(p)
}

var sampleNames = []string{"/gc/heap/live:bytes", "/gc/scan/stack:bytes", "/gc/scan/globals:bytes"}

// liveBytes reads what the last collection found live.
func liveBytes() uint64 {
	s := make([]metrics.Sample, len(sampleNames))
	for i, n := range sampleNames {
		s[i].Name = n
	}
	metrics.Read(s)
	var sum uint64
	for _, x := range s {
		if x.Value.Kind() == metrics.KindUint64 {
			sum += x.Value.Uint64()
		}
	}
	return sum
}
