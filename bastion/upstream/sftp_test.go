package upstream

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
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
		"chmod 640 " + remote + "/up.bin",
		"ln " + remote + "/up.bin " + remote + "/hard.bin",
		"cp " + remote + "/up.bin " + remote + "/copy.bin",
		"df " + remote,
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
		{"op": "posix-rename", "path": remote + "/up.bin", "target": remote + "/moved.bin", "result": "ok"},
		{"op": "setstat", "path": remote + "/up.bin", "result": "ok"},
		{"op": "hardlink", "path": remote + "/up.bin", "target": remote + "/hard.bin", "result": "ok"},
		{"op": "copy-data", "path": remote + "/up.bin", "write_path": remote + "/copy.bin", "length": 0.0, "result": "ok"},
		{"op": "statvfs", "path": remote, "result": "ok"},
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
	if ev := findEvent(evs, map[string]any{"op": "setstat", "path": remote + "/up.bin"}); ev == nil || ev["attrs"].(map[string]any)["mode"] != "0640" {
		t.Errorf("setstat event lacks the mode: %v", ev)
	}
	if got, err := os.ReadFile(filepath.Join(remote, "copy.bin")); err != nil || !bytes.Equal(got, payload) {
		t.Errorf("cp (copy-data) through the relay: %d bytes, %v", len(got), err)
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

// feedAll runs client then server bytes through a, in chunks of size k,
// and returns what it relays each way and the replies it made.
func feedAll(t *testing.T, a *sftpAudit, client, server []byte, k int) (toUp, toDown, replies []byte) {
	t.Helper()
	for i := 0; i < len(client); i += k {
		up, rep, err := a.fromClient(client[i:min(i+k, len(client))])
		if err != nil {
			t.Fatal(err)
		}
		toUp, replies = append(toUp, up...), append(replies, rep...)
		a.sent()
	}
	for i := 0; i < len(server); i += k {
		down, _, _, err := a.fromServer(server[i:min(i+k, len(server))])
		if err != nil {
			t.Fatal(err)
		}
		toDown = append(toDown, down...)
	}
	return toUp, toDown, replies
}

// TestSFTPAuditSequence feeds a hand-built session one byte at a time,
// so every packet is split across chunks: each operation is one event
// with its arguments and result, writes are summarised per handle, and
// both streams are relayed unchanged.
func TestSFTPAuditSequence(t *testing.T) {
	var got []map[string]any
	a := newSFTPAudit(func(f map[string]any) error { got = append(got, f); return nil }, DefaultSFTPExtensions)
	data := strings.Repeat("x", 40000) // beyond the held prefix
	attrs := func(mode uint32) []any { return []any{uint32(attrPermissions), mode} }
	client := bytes.Join([][]byte{
		sftpPacket(fxpInit, uint32(3)),
		sftpPacket(fxpOpen, append([]any{uint32(1), "/srv/a.txt", uint32(0x1a)}, attrs(0o640)...)...),
		sftpPacket(fxpWrite, uint32(2), "H1", uint64(0), data),
		sftpPacket(fxpWrite, uint32(3), "H1", uint64(40000), "tail"),
		sftpPacket(fxpRead, uint32(4), "H1", uint64(0), uint32(100)),
		sftpPacket(fxpWrite, uint32(9), "H1", uint64(100000), "gap"),
		sftpPacket(fxpClose, uint32(5), "H1"),
		sftpPacket(fxpExtended, uint32(6), "posix-rename@openssh.com", "/srv/a.txt", "/srv/b.txt"),
		sftpPacket(fxpSetstat, append([]any{uint32(7), "/srv/b.txt"}, attrs(0o4755)...)...),
		sftpPacket(fxpExtended, append([]any{uint32(8), "lsetstat@openssh.com", "/srv/l"}, attrs(0o4777)...)...),
	}, nil)
	server := bytes.Join([][]byte{
		sftpPacket(fxpVersion, uint32(3), "posix-rename@openssh.com", "1"),
		sftpPacket(fxpHandle, uint32(1), "H1"),
		sftpPacket(fxpStatus, uint32(2), uint32(0), "", ""),
		sftpPacket(fxpStatus, uint32(3), uint32(4), "failure", ""), // failed write: not counted
		sftpPacket(fxpData, uint32(4), "0123456789"),
		sftpPacket(fxpStatus, uint32(9), uint32(0), "", ""),
		sftpPacket(fxpStatus, uint32(5), uint32(0), "", ""),
		sftpPacket(fxpStatus, uint32(6), uint32(0), "", ""),
		sftpPacket(fxpStatus, uint32(7), uint32(3), "denied", ""),
		sftpPacket(fxpStatus, uint32(8), uint32(0), "", ""),
	}, nil)
	toUp, toDown, replies := feedAll(t, a, client, server, 1)
	if !bytes.Equal(toUp, client) || !bytes.Equal(toDown, server) || len(replies) != 0 {
		t.Fatalf("streams changed: %d/%d bytes up, %d/%d down, %d bytes of replies", len(toUp), len(client), len(toDown), len(server), len(replies))
	}
	h := hexHandle("H1")
	want := []map[string]any{
		{"op": "version", "version": uint32(3), "extensions": []string{"posix-rename@openssh.com"}},
		{"op": "open", "id": uint32(1), "path": "/srv/a.txt", "flags": "write,create,trunc", "attrs": map[string]any{"mode": "0640"}, "handle": h, "result": "ok"},
		{"op": "close", "path": "/srv/a.txt", "handle": h, "flags": "write,create,trunc", "bytes_read": uint64(10), "bytes_written": uint64(40003),
			"reads": uint64(1), "writes": uint64(2), "failed_writes": uint64(1), "write_ranges": [][2]uint64{{0, 40000}, {100000, 100003}}, "result": "ok"},
		{"op": "posix-rename", "name": "posix-rename@openssh.com", "id": uint32(6), "path": "/srv/a.txt", "target": "/srv/b.txt", "result": "ok"},
		{"op": "setstat", "id": uint32(7), "path": "/srv/b.txt", "attrs": map[string]any{"mode": "4755"}, "result": "permission denied", "message": "denied"},
		{"op": "lsetstat", "name": "lsetstat@openssh.com", "id": uint32(8), "path": "/srv/l", "attrs": map[string]any{"mode": "4777"}, "result": "ok"},
	}
	if len(got) != len(want) {
		t.Fatalf("%d events, want %d:\n%v", len(got), len(want), got)
	}
	for i := range want {
		if fmt.Sprint(got[i]) != fmt.Sprint(want[i]) {
			t.Errorf("event %d:\n got %v\nwant %v", i, got[i], want[i])
		}
	}
}

// TestSFTPAuditRefuses: what the auditor does not relay.
func TestSFTPAuditRefuses(t *testing.T) {
	t.Run("duplicate-id", func(t *testing.T) {
		// OPEN for writing and STAT with the same id in one chunk: the
		// channel is closed and nothing of the chunk is relayed; the open
		// is still recorded.
		var got []map[string]any
		a := newSFTPAudit(func(f map[string]any) error { got = append(got, f); return nil }, nil)
		chunk := append(sftpPacket(fxpOpen, uint32(1), "/srv/evil", uint32(0x1a), uint32(0)), sftpPacket(fxpStat, uint32(1), "/srv")...)
		up, _, err := a.fromClient(chunk)
		if !errors.Is(err, ErrSFTPViolation) || len(up) != 0 {
			t.Fatalf("duplicate id: err %v, %d bytes relayed", err, len(up))
		}
		if err := a.finish(); err != nil {
			t.Fatal(err)
		}
		if findEvent(got, map[string]any{"op": "violation"}) == nil ||
			findEvent(got, map[string]any{"op": "open", "path": "/srv/evil", "flags": "write,create,trunc", "result": "not relayed: channel closed"}) == nil {
			t.Errorf("events: %v", got)
		}
	})
	t.Run("unknown-extension", func(t *testing.T) {
		var got []map[string]any
		a := newSFTPAudit(func(f map[string]any) error { got = append(got, f); return nil }, []string{"allowed@example.org"})
		refused := sftpPacket(fxpExtended, uint32(7), "evil@example.org", "/x")
		allowed := sftpPacket(fxpExtended, uint32(8), "allowed@example.org", "/y")
		up, replies, err := a.fromClient(append(refused, allowed...))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(up, allowed) {
			t.Errorf("relayed %q, want only the allowed extension", up)
		}
		r := &sftpReader{b: replies[4:]}
		if typ, id, code := r.b[0], (&sftpReader{b: r.b[1:]}).u32(), binary.BigEndian.Uint32(r.b[5:]); typ != fxpStatus || id != 7 || code != fxOpUnsupported {
			t.Errorf("reply %q, want STATUS OP_UNSUPPORTED for id 7", replies)
		}
		if findEvent(got, map[string]any{"op": "extended", "name": "evil@example.org", "result": "refused: extension not in [bastion] sftp_extensions"}) == nil {
			t.Errorf("events: %v", got)
		}
	})
	t.Run("unknown-type", func(t *testing.T) {
		a := newSFTPAudit(func(map[string]any) error { return nil }, nil)
		up, replies, err := a.fromClient(sftpPacket(99, uint32(3), "x"))
		if err != nil || len(up) != 0 || len(replies) == 0 {
			t.Errorf("type 99: err %v, relayed %d bytes, replies %d bytes", err, len(up), len(replies))
		}
	})
}

// TestSFTPReplyBetweenPackets: a reply the auditor makes while a target
// packet is half written waits for that packet's end.
func TestSFTPReplyBetweenPackets(t *testing.T) {
	a := newSFTPAudit(func(map[string]any) error { return nil }, nil)
	var down bytes.Buffer
	if _, _, err := a.fromClient(sftpPacket(fxpRead, uint32(1), "H", uint64(0), uint32(20000))); err != nil {
		t.Fatal(err)
	}
	// Larger than the held prefix, so its start is relayed before its end
	// arrives.
	data := sftpPacket(fxpData, uint32(1), strings.Repeat("d", 20000))
	out, b, mid, err := a.fromServer(data[:sftpPrefixCap+100])
	if err != nil || !mid {
		t.Fatalf("err %v mid %v", err, mid)
	}
	if err := a.writeDown(&down, out, b, mid); err != nil {
		t.Fatal(err)
	}
	_, replies, err := a.fromClient(sftpPacket(fxpExtended, uint32(2), "nope@example.org"))
	if err != nil {
		t.Fatal(err)
	}
	a.reply(&down, replies)
	out, b, mid, err = a.fromServer(data[sftpPrefixCap+100:])
	if err != nil || mid {
		t.Fatalf("err %v mid %v", err, mid)
	}
	a.writeDown(&down, out, b, mid)
	if want := append(slices.Clone(data), replies...); !bytes.Equal(down.Bytes(), want) {
		t.Errorf("admin got %q, want %q", down.Bytes(), want)
	}
}

func TestSFTPAuditRejectsHostileInput(t *testing.T) {
	emit := func(map[string]any) error { return nil }
	huge := binary.BigEndian.AppendUint32(nil, maxSFTPPacket+1)
	if _, _, err := newSFTPAudit(emit, nil).fromClient(huge); err == nil {
		t.Error("oversized packet length accepted")
	}
	if _, _, err := newSFTPAudit(emit, nil).fromClient([]byte{0, 0, 0, 0}); err == nil {
		t.Error("empty packet accepted")
	}
	// A WRITE claiming more data than its packet holds.
	lie := sftpPacket(fxpWrite, uint32(1), "H", uint64(0), uint32(1<<30))
	if _, _, err := newSFTPAudit(emit, nil).fromClient(lie); err == nil {
		t.Error("write with a lying length accepted")
	}
	// An OPEN whose path field overruns the packet.
	bad := sftpPacket(fxpOpen, uint32(1), uint32(500))
	if _, _, err := newSFTPAudit(emit, nil).fromClient(bad); err == nil {
		t.Error("malformed open accepted")
	}
	// Unanswered requests are bounded.
	a := newSFTPAudit(emit, nil)
	var err error
	for i := uint32(0); i <= maxSFTPPending && err == nil; i++ {
		_, _, err = a.fromClient(sftpPacket(fxpStat, i, "/x"))
	}
	if err == nil {
		t.Error("unbounded outstanding requests")
	}
}

// FuzzSFTPAudit: whatever both sides send, the auditor stays within its
// bounds, relays whole packets only (each relayed client packet appears
// byte for byte in the input), and answers only with well-formed STATUS
// packets.
func FuzzSFTPAudit(f *testing.F) {
	f.Add(sftpPacket(fxpOpen, uint32(1), "/a", uint32(1), uint32(0)), sftpPacket(fxpHandle, uint32(1), "h"))
	f.Add(sftpPacket(fxpWrite, uint32(2), "h", uint64(0), "data"), sftpPacket(fxpStatus, uint32(2), uint32(0)))
	f.Add(sftpPacket(fxpRealpath, uint32(3), "."), sftpPacket(fxpName, uint32(3), uint32(1), "/root", "", uint32(0)))
	f.Add(sftpPacket(fxpExtended, uint32(4), "lsetstat@openssh.com", "/x", uint32(attrPermissions|attrExtended), uint32(0o4777), uint32(1), "k", "v"), sftpPacket(fxpStatus, uint32(4), uint32(0)))
	f.Add(sftpPacket(fxpExtended, uint32(5), "copy-data", "h", uint64(0), uint64(9), "h", uint64(3)), []byte{})
	f.Add(sftpPacket(fxpExtended, uint32(6), "users-groups-by-id@openssh.com", "\x00\x00\x00\x00", ""), []byte{})
	f.Add(sftpPacket(fxpExtended, uint32(7), "unknown@example.org"), []byte{})
	f.Add([]byte{0, 0, 0, 1, 200}, []byte{0, 0, 0, 5, 101, 0, 0, 0})
	f.Fuzz(func(t *testing.T, client, server []byte) {
		n := 0
		a := newSFTPAudit(func(map[string]any) error { n++; return nil }, nil)
		var up, replies []byte
		in := client
		// Alternate chunks of both directions, as a live channel would.
		for len(client) > 0 || len(server) > 0 {
			k := min(len(client), 7)
			u, r, err := a.fromClient(client[:k])
			if err != nil {
				return
			}
			up, replies = append(up, u...), append(replies, r...)
			a.sent()
			client = client[k:]
			k = min(len(server), 5)
			if _, _, _, err := a.fromServer(server[:k]); err != nil {
				return
			}
			server = server[k:]
		}
		a.finish()
		if len(a.pending) > maxSFTPPending || len(a.handles) > maxSFTPHandles || len(a.client.prefix) > sftpPrefixCap {
			t.Fatalf("bounds exceeded: %d pending, %d handles", len(a.pending), len(a.handles))
		}
		// Relayed bytes are a subsequence of whole packets of the input.
		for len(up) >= 4 {
			l := int(binary.BigEndian.Uint32(up)) + 4
			if l > len(up) {
				l = len(up) // the last packet may be partial
			}
			pkt := up[:l]
			i := bytes.Index(in, pkt)
			if i < 0 {
				t.Fatalf("relayed a packet that was not sent: %q", pkt)
			}
			in = in[i+l:]
			up = up[l:]
		}
		for len(replies) > 0 {
			if len(replies) < 9 || replies[4] != fxpStatus {
				t.Fatalf("malformed reply %q", replies)
			}
			l := int(binary.BigEndian.Uint32(replies)) + 4
			if l > len(replies) {
				t.Fatalf("truncated reply %q", replies)
			}
			replies = replies[l:]
		}
	})
}

// benchSFTP uploads and downloads 64 MiB with the real sftp client
// (extra arguments name the server) per iteration.
func benchSFTP(b *testing.B, args []string, after func()) {
	sshtest.Require(b, "sftp")
	dir := b.TempDir()
	local := filepath.Join(dir, "src")
	payload := make([]byte, 64<<20)
	rand.Read(payload)
	if err := os.WriteFile(local, payload, 0o600); err != nil {
		b.Fatal(err)
	}
	batch := filepath.Join(dir, "batch")
	if err := os.WriteFile(batch, []byte("put "+local+" "+dir+"/dst\nget "+dir+"/dst "+dir+"/back\n"), 0o600); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if out, err := exec.Command("sftp", append([]string{"-b", batch}, args...)...).CombinedOutput(); err != nil {
			b.Fatalf("sftp: %v\n%s", err, out)
		}
		b.SetBytes(2 << 26)
		if after != nil {
			after()
		}
	}
}

// BenchmarkSFTPDirect is the baseline: the real sftp client straight to
// the target's sshd.
//
//	go test -run='^$' -bench=SFTP -benchtime=3x ./bastion/upstream
func BenchmarkSFTPDirect(b *testing.B) {
	e := newEnv(b)
	key := sshtest.UserKey(b, b.TempDir(), "ed25519")
	cert := e.ca.Sign(b, key.Pub, "-I", "bench", "-n", e.sshd.User)
	known := filepath.Join(b.TempDir(), "known")
	benchSFTP(b, append(sshtest.ClientOptions(known, key.Priv, cert), "-P", strconv.Itoa(e.sshd.Port), e.sshd.User+"@127.0.0.1"), nil)
}

// BenchmarkSFTPRelay: the same through Relay and the sftp auditor,
// recorded, as the bastion's recording proxy does.
func BenchmarkSFTPRelay(b *testing.B) {
	e := newEnv(b)
	rec, _ := newRecording(b, true)
	defer rec.Close("bench")
	f := startFront(b, e, frontOptions{rec: rec})
	known := filepath.Join(b.TempDir(), "known")
	benchSFTP(b, append(sshtest.ClientOptions(known, f.key.Priv, ""), "-P", strconv.Itoa(f.port), "admin@127.0.0.1"), func() {
		if err := f.result(b); err != nil {
			b.Fatal(err)
		}
	})
}
