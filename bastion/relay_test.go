package bastion

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"gatehouse/bastion/internal/sshtest"
)

// TestRelayHeapFloor relays 96 MiB through a real `ssh -J` and counts the
// garbage collections meanwhile. x/crypto/ssh allocates a fresh buffer per
// packet it decrypts, so the relay makes as much garbage as it moves; at
// Go's default (a collection about every 4 MiB on a small heap) that was
// about 50 collections here and a fifth of the bastion's CPU. Serve sets a
// heap floor (relayHeapHeadroom), so a collection comes about every
// 32 MiB of garbage.
func TestRelayHeapFloor(t *testing.T) {
	if os.Getenv("GOGC") != "" {
		t.Skip("GOGC is set: the heap floor leaves it alone")
	}
	f := newFixture(t, nil)
	key, cert, _ := f.userCert(t, f.ca, "-n", "admin", "-V", "-1m:+1h")
	ciph := []string{"Ciphers aes128-gcm@openssh.com"}
	cfg := sshtest.WriteConfig(t, filepath.Join(f.dir, "heapfloor_cfg"), f.known,
		sshtest.Host{Alias: "bastion", HostName: "127.0.0.1", Port: f.port, User: "admin", IdentityFiles: []string{key.Priv}, CertificateFiles: []string{cert}, Extra: ciph},
		sshtest.Host{Alias: "target", HostName: "127.0.0.1", Port: f.sshd.Port, User: f.sshd.User, IdentityFiles: []string{f.targetKey.Priv}, Extra: append(ciph, "ProxyJump bastion")},
	)
	const size = 96 << 20
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	gc0, objs0, bytes0 := ms.NumGC, ms.Mallocs, ms.TotalAlloc
	// head feeds ssh, so the test process copies no byte itself.
	out, err := exec.Command("sh", "-c", `head -c `+strconv.Itoa(size)+` /dev/zero | ssh -F "$1" target 'wc -c'`, "sh", cfg).Output()
	if err != nil {
		t.Fatalf("ssh -J: %v", err)
	}
	if n := strings.TrimSpace(string(out)); n != strconv.Itoa(size) {
		t.Fatalf("the target counted %s bytes, want %d", n, size)
	}
	runtime.ReadMemStats(&ms)
	n := ms.NumGC - gc0
	packets := float64(size) / (32 << 10) // the client's packets carry up to 32 KiB
	t.Logf("%d garbage collections while relaying %d MiB; allocated %.2f bytes per byte relayed, %.1f objects per 32 KiB packet",
		n, size>>20, float64(ms.TotalAlloc-bytes0)/size, float64(ms.Mallocs-objs0)/packets)
	if n > 8 {
		t.Errorf("%d garbage collections while relaying %d MiB: the heap floor is not in effect (about 4 expected, about 50 without it)", n, size>>20)
	}
}
