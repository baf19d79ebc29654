package heapfloor

import (
	"os"
	"runtime"
	"testing"
)

func TestPercent(t *testing.T) {
	for _, c := range []struct {
		live, room uint64
		want       int
	}{
		{1 << 20, 32 << 20, 800},   // small heap: computed from the 4 MiB minimum
		{8 << 20, 32 << 20, 400},   // goal 8+32 MiB
		{32 << 20, 32 << 20, 100},  // GOGC=100's goal already has the room
		{200 << 20, 32 << 20, 100}, // large heap: proportional as always
		{0, 32 << 20, 800},
	} {
		if got := Percent(c.live, c.room); got != c.want {
			t.Errorf("Percent(%d MiB, %d MiB) = %d, want %d", c.live>>20, c.room>>20, got, c.want)
		}
	}
}

var sink []byte

// churn allocates n MiB in 32 KiB+ buffers, as x/crypto does per packet,
// and returns how many collections ran meanwhile.
func churn(mib int) uint32 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	before := ms.NumGC
	for i := 0; i < mib*32; i++ {
		sink = make([]byte, 32<<10+9)
	}
	runtime.ReadMemStats(&ms)
	return ms.NumGC - before
}

// TestFloorCutsCollections relays-like churn with a small live heap: at
// GOGC=100 it collects every ~4 MiB; with a 32 MiB floor about every 36.
func TestFloorCutsCollections(t *testing.T) {
	if os.Getenv("GOGC") != "" {
		t.Skip("GOGC is set: the floor leaves it alone")
	}
	runtime.GC()
	plain := churn(256)
	Start(32 << 20)
	runtime.GC() // a cycle for the finalizer to adjust after
	runtime.GC()
	floored := churn(256)
	t.Logf("collections per 256 MiB of garbage: %d at GOGC=100, %d with a 32 MiB floor", plain, floored)
	if plain < 30 {
		t.Fatalf("only %d collections without the floor: the test does not measure what it should", plain)
	}
	if floored > 16 {
		t.Errorf("%d collections per 256 MiB with a 32 MiB floor, want at most 16", floored)
	}
}
