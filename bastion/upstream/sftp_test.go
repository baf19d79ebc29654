package upstream

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"gatehouse/bastion/internal/sshtest"
)

// sftpEvents decodes the recording's sftp events.
func sftpEvents(t *testing.T, lines []string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

// findEvent returns the first event whose fields include all of want.
func findEvent(evs []map[string]any, want map[string]any) map[string]any {
next:
	for _, e := range evs {
		for k, v := range want {
			if e[k] != v {
				continue next
			}
		}
		return e
	}
	return nil
}

// TestRelaySFTPRealClient: the real sftp client through the relay to the
// target's sftp server: files arrive intact, each file operation is an
// event with path, result and byte counts, and nothing is byte-recorded.
func TestRelaySFTPRealClient(t *testing.T) {
	sshtest.Require(t, "sftp", "scp", "ssh")
	e := newEnv(t)
	rec, allowed := newRecording(t, true)
	f := startFront(t, e, frontOptions{rec: rec})

	dir := t.TempDir()
	local := filepath.Join(dir, "local.bin")
	payload := make([]byte, 300<<10) // several SFTP packets
	rand.Read(payload)
	if err := os.WriteFile(local, payload, 0o600); err != nil {
		t.Fatal(err)
	}
	remote := filepath.Join(dir, "remote")
	if err := os.Mkdir(remote, 0o700); err != nil {
		t.Fatal(err)
	}
	batch := filepath.Join(dir, "batch")
	script := strings.Join([]string{
		"put " + local + " " + remote + "/up.bin",
		"get " + remote + "/up.bin " + dir + "/down.bin",
		"rename " + remote + "/up.bin " + remote + "/moved.bin",
		"mkdir " + remote + "/sub",
		"rmdir " + remote + "/sub",
		"rm " + remote + "/moved.bin",
		"-rm " + remote + "/absent.bin",
	}, "\n") + "\n"
	if err := os.WriteFile(batch, []byte(script), 0o600); err != nil {
		t.Fatal(err)
	}
	known := filepath.Join(dir, "known_hosts")
	args := append(sshtest.ClientOptions(known, f.key.Priv, ""), "-b", batch, "-P", strconv.Itoa(f.port), "admin@127.0.0.1")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "sftp", args...).CombinedOutput(); err != nil {
		t.Fatalf("sftp: %v\n%s", err, out)
	}
	// scp (the SFTP protocol since OpenSSH 9.0) takes the same path.
	scpArgs := append(sshtest.ClientOptions(known, f.key.Priv, ""), "-P", strconv.Itoa(f.port), local, "admin@127.0.0.1:"+remote+"/scp.bin")
	if out, err := exec.CommandContext(ctx, "scp", scpArgs...).CombinedOutput(); err != nil {
		t.Fatalf("scp: %v\n%s", err, out)
	}
	if got, err := os.ReadFile(filepath.Join(remote, "scp.bin")); err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("scp copy differs (%d bytes, %v)", len(got), err)
	}
	if got, err := os.ReadFile(filepath.Join(dir, "down.bin")); err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("downloaded file differs from the uploaded one (%d bytes, %v)", len(got), err)
	}
	if _, err := os.Stat(filepath.Join(remote, "moved.bin")); !os.IsNotExist(err) {
		t.Errorf("rm did not reach the target: %v", err)
	}
	for range 2 {
		if err := f.result(t); err != nil {
			t.Fatalf("relay: %v", err)
		}
	}
	if err := rec.Close("test done"); err != nil {
		t.Fatal(err)
	}
	evs := sftpEvents(t, events(t, rec, "sftp"))
	size := float64(len(payload))
	for _, want := range []map[string]any{
		{"op": "open", "path": remote + "/up.bin", "result": "ok"},
		{"op": "close", "path": remote + "/up.bin", "bytes_written": size, "bytes_read": 0.0, "result": "ok"},
		{"op": "close", "path": remote + "/up.bin", "bytes_read": size, "bytes_written": 0.0, "result": "ok"},
		{"op": "rename", "path": remote + "/up.bin", "target": remote + "/moved.bin", "result": "ok"},
		{"op": "mkdir", "path": remote + "/sub", "result": "ok"},
		{"op": "rmdir", "path": remote + "/sub", "result": "ok"},
		{"op": "remove", "path": remote + "/moved.bin", "result": "ok"},
		{"op": "remove", "path": remote + "/absent.bin", "result": "no such file"},
		{"op": "realpath", "path": ".", "result": "ok"},
		{"op": "close", "path": remote + "/scp.bin", "bytes_written": size, "bytes_read": 0.0, "result": "ok", "channel": 1.0},
	} {
		if findEvent(evs, want) == nil {
			t.Errorf("no sftp event %v among:\n%s", want, strings.Join(events(t, rec, "sftp"), "\n"))
		}
	}
	if ev := findEvent(evs, map[string]any{"op": "open", "path": remote + "/up.bin"}); ev == nil || !strings.Contains(ev["flags"].(string), "write") {
		t.Errorf("open event lacks write flags: %v", ev)
	}
	if m, _ := filepath.Glob(filepath.Join(rec.Dir(), "ch*")); len(m) != 0 {
		t.Errorf("sftp channel was byte-recorded: %v", m)
	}
	verifyManifest(t, rec, allowed)
}

// sftpPacket frames one SFTP packet: type, then fields (uint32, uint64
// or string).
func sftpPacket(typ byte, fields ...any) []byte {
	body := []byte{typ}
	for _, f := range fields {
		switch v := f.(type) {
		case uint32:
			body = binary.BigEndian.AppendUint32(body, v)
		case uint64:
			body = binary.BigEndian.AppendUint64(body, v)
		case string:
			body = binary.BigEndian.AppendUint32(body, uint32(len(v)))
			body = append(body, v...)
		}
	}
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...)
}

// TestSFTPAuditSequence feeds a hand-built open/write/close/read
// sequence one byte at a time, so every packet is split across chunks.
func TestSFTPAuditSequence(t *testing.T) {
	var got []map[string]any
	a := newSFTPAudit(func(f map[string]any) error { got = append(got, f); return nil })
	data := strings.Repeat("x", 40000) // beyond the kept prefix
	client := bytes.Join([][]byte{
		sftpPacket(fxpInit, uint32(3)),
		sftpPacket(fxpOpen, uint32(1), "/srv/a.txt", uint32(0x1a), uint32(0)),
		sftpPacket(fxpWrite, uint32(2), "H1", uint64(0), data),
		sftpPacket(fxpWrite, uint32(3), "H1", uint64(40000), "tail"),
		sftpPacket(fxpRead, uint32(4), "H1", uint64(0), uint32(100)),
		sftpPacket(fxpClose, uint32(5), "H1"),
		sftpPacket(fxpExtended, uint32(6), "posix-rename@openssh.com", "/srv/a.txt", "/srv/b.txt"),
		sftpPacket(fxpSetstat, uint32(7), "/srv/b.txt", uint32(0)),
	}, nil)
	server := bytes.Join([][]byte{
		sftpPacket(fxpVersion, uint32(3)),
		sftpPacket(fxpHandle, uint32(1), "H1"),
		sftpPacket(fxpStatus, uint32(2), uint32(0), "", ""),
		sftpPacket(fxpStatus, uint32(3), uint32(4), "failure", ""), // failed write: not counted
		sftpPacket(fxpData, uint32(4), "0123456789"),
		sftpPacket(fxpStatus, uint32(5), uint32(0), "", ""),
		sftpPacket(fxpStatus, uint32(6), uint32(0), "", ""),
		sftpPacket(fxpStatus, uint32(7), uint32(3), "denied", ""),
	}, nil)
	for i := range client {
		if err := a.fromClient(client[i : i+1]); err != nil {
			t.Fatal(err)
		}
	}
	for i := range server {
		if err := a.fromServer(server[i : i+1]); err != nil {
			t.Fatal(err)
		}
	}
	want := []map[string]any{
		{"op": "open", "path": "/srv/a.txt", "flags": "write,create,trunc", "result": "ok"},
		{"op": "close", "path": "/srv/a.txt", "bytes_read": uint64(10), "bytes_written": uint64(40000), "result": "ok"},
		{"op": "rename", "path": "/srv/a.txt", "target": "/srv/b.txt", "result": "ok"},
		{"op": "setstat", "path": "/srv/b.txt", "result": "permission denied"},
	}
	if len(got) != len(want) {
		t.Fatalf("events %v, want %v", got, want)
	}
	for i := range want {
		if findEvent(got[i:i+1], want[i]) == nil || len(got[i]) != len(want[i]) {
			t.Errorf("event %d: %v, want %v", i, got[i], want[i])
		}
	}
}

func TestSFTPAuditRejectsHostileInput(t *testing.T) {
	emit := func(map[string]any) error { return nil }
	huge := binary.BigEndian.AppendUint32(nil, maxSFTPPacket+1)
	if err := newSFTPAudit(emit).fromClient(huge); err == nil {
		t.Error("oversized packet length accepted")
	}
	if err := newSFTPAudit(emit).fromClient([]byte{0, 0, 0, 0}); err == nil {
		t.Error("empty packet accepted")
	}
	// A WRITE claiming more data than its packet holds.
	lie := sftpPacket(fxpWrite, uint32(1), "H", uint64(0), uint32(1<<30))
	if err := newSFTPAudit(emit).fromClient(lie); err == nil {
		t.Error("write with a lying length accepted")
	}
	// An OPEN whose path field overruns the packet.
	bad := sftpPacket(fxpOpen, uint32(1), uint32(500))
	if err := newSFTPAudit(emit).fromClient(bad); err == nil {
		t.Error("malformed open accepted")
	}
	// Unanswered requests are bounded.
	a := newSFTPAudit(emit)
	var err error
	for i := uint32(0); i <= maxSFTPPending && err == nil; i++ {
		err = a.fromClient(sftpPacket(fxpStat, i, "/x"))
	}
	if err == nil {
		t.Error("unbounded outstanding requests")
	}
}

func FuzzSFTPAudit(f *testing.F) {
	f.Add(sftpPacket(fxpOpen, uint32(1), "/a", uint32(1), uint32(0)), sftpPacket(fxpHandle, uint32(1), "h"))
	f.Add(sftpPacket(fxpWrite, uint32(2), "h", uint64(0), "data"), sftpPacket(fxpStatus, uint32(2), uint32(0)))
	f.Add(sftpPacket(fxpRealpath, uint32(3), "."), sftpPacket(fxpName, uint32(3), uint32(1), "/root", "", uint32(0)))
	f.Add([]byte{0, 0, 0, 1, 200}, []byte{0, 0, 0, 5, 101, 0, 0, 0})
	f.Fuzz(func(t *testing.T, client, server []byte) {
		n := 0
		a := newSFTPAudit(func(map[string]any) error { n++; return nil })
		// Alternate chunks of both directions, as a live channel would.
		for len(client) > 0 || len(server) > 0 {
			k := min(len(client), 7)
			if a.fromClient(client[:k]) != nil {
				return
			}
			client = client[k:]
			k = min(len(server), 5)
			if a.fromServer(server[:k]) != nil {
				return
			}
			server = server[k:]
		}
		a.finish()
		if len(a.pending) > maxSFTPPending || len(a.handles) > maxSFTPHandles || len(a.client.prefix) > sftpPrefixCap {
			t.Fatalf("bounds exceeded: %d pending, %d handles", len(a.pending), len(a.handles))
		}
	})
}
