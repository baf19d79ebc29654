package record

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func testMeta() Meta {
	return Meta{User: "admin", Principal: "admin", KeyID: "alice@example.org", Serial: 7,
		CAFingerprint: "SHA256:x", Source: "127.0.0.1:5555", Target: "web1.example.org:22", TargetLogin: "root"}
}

// castEvents parses a .cast file: header and events.
func castEvents(t *testing.T, path string) (map[string]any, [][3]any) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 16<<20)
	var hdr map[string]any
	var evs [][3]any
	for sc.Scan() {
		if hdr == nil {
			if err := json.Unmarshal(sc.Bytes(), &hdr); err != nil {
				t.Fatalf("header: %v", err)
			}
			continue
		}
		var ev []any
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil || len(ev) != 3 {
			t.Fatalf("event %q: %v", sc.Text(), err)
		}
		evs = append(evs, [3]any{ev[0], ev[1], ev[2]})
	}
	return hdr, evs
}

func castText(evs [][3]any, code string) string {
	var b strings.Builder
	for _, e := range evs {
		if e[1] == code {
			b.WriteString(e[2].(string))
		}
	}
	return b.String()
}

// ttyrecPayload concatenates a ttyrec file's frames.
func ttyrecPayload(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []byte
	for len(b) > 0 {
		if len(b) < 12 {
			t.Fatalf("ttyrec: %d trailing bytes", len(b))
		}
		n := binary.LittleEndian.Uint32(b[8:])
		if int(n) > len(b)-12 {
			t.Fatalf("ttyrec: frame of %d bytes, %d left", n, len(b)-12)
		}
		out = append(out, b[12:12+n]...)
		b = b[12+n:]
	}
	return out
}

// recordSample records one shell-like channel whose output splits UTF-8
// characters across chunks, and returns the raw output bytes.
func recordSample(t *testing.T, cfg RecorderConfig, id string) (*Recording, []byte) {
	t.Helper()
	rec, err := NewRecording(cfg, id, testMeta())
	if err != nil {
		t.Fatal(err)
	}
	ch, err := rec.Channel(0, "session", "xterm-256color", 100, 30)
	if err != nil {
		t.Fatal(err)
	}
	chunks := [][]byte{
		[]byte("$ echo caf"), []byte("\xc3"), []byte("\xa9 \xf0\x9f"), []byte("\x98"), []byte("\x80 \"q\" \\ \t\x1b[1mbold\x1b[0m\r\n"),
		[]byte("binary: \xff\xfe\x00 end\r\n"), []byte("ünïcödé ✓\r\n$ exit 3\r\n"),
	}
	var raw []byte
	for i, c := range chunks {
		if err := ch.Output(c); err != nil {
			t.Fatal(err)
		}
		raw = append(raw, c...)
		if i == 2 {
			if err := ch.Resize(120, 40); err != nil {
				t.Fatal(err)
			}
			if err := ch.Input([]byte("echo caf\xc3")); err != nil {
				t.Fatal(err)
			}
			if err := ch.Input([]byte("\xa9\r")); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := ch.Marker("exit-status 3"); err != nil {
		t.Fatal(err)
	}
	if err := rec.Event("exec", map[string]any{"command": "ls -l", "channel": 0}); err != nil {
		t.Fatal(err)
	}
	if err := ch.Close(); err != nil {
		t.Fatal(err)
	}
	return rec, raw
}

// validText is what a UTF-8 decoder makes of b: U+FFFD per invalid byte.
func validText(b []byte) string {
	var s strings.Builder
	for _, r := range string(b) {
		s.WriteRune(r)
	}
	return s.String()
}

func TestRecordingPlaysAndVerifies(t *testing.T) {
	dir := t.TempDir()
	signer, keyPath := genKey(t, dir)
	cfg := RecorderConfig{Dir: filepath.Join(dir, "recs"), RecordInput: true, SigningKey: signer}
	rec, raw := recordSample(t, cfg, "s1")
	if err := rec.Close("client closed"); err != nil {
		t.Fatal(err)
	}
	rdir := filepath.Join(cfg.Dir, "s1")
	cast := filepath.Join(rdir, "ch00.cast")

	// ttyrec is byte-exact.
	if got := ttyrecPayload(t, filepath.Join(rdir, "ch00.ttyrec")); !bytes.Equal(got, raw) {
		t.Errorf("ttyrec payload\n got %q\nwant %q", got, raw)
	}
	// The cast holds the text with split characters intact.
	hdr, evs := castEvents(t, cast)
	if hdr["version"] != 2.0 || hdr["width"] != 100.0 || hdr["height"] != 30.0 {
		t.Errorf("header %v", hdr)
	}
	if env, _ := hdr["env"].(map[string]any); env["TERM"] != "xterm-256color" {
		t.Errorf("header env %v", hdr["env"])
	}
	wantText := validText(raw)
	if got := castText(evs, "o"); got != wantText {
		t.Errorf("cast output\n got %q\nwant %q", got, wantText)
	}
	if !strings.Contains(wantText, "café 😀 ") {
		t.Fatalf("test data lost its split characters: %q", wantText)
	}
	if got := castText(evs, "i"); got != "echo café\r" {
		t.Errorf("cast input %q", got)
	}
	if got := castText(evs, "r"); got != "120x40" {
		t.Errorf("resize %q", got)
	}
	if got := castText(evs, "m"); got != "exit-status 3" {
		t.Errorf("marker %q", got)
	}

	// Real asciinema 2.2: cat needs a terminal (/dev/tty), so run it under
	// script(1) and send its stdout to a file, bypassing the pty's \n
	// translation.
	if _, err := exec.LookPath("asciinema"); err != nil {
		t.Skip("asciinema not installed")
	}
	script := needTool(t, "script")
	out := filepath.Join(dir, "cat.out")
	cmd := exec.Command(script, "-qec", fmt.Sprintf("asciinema cat %s > %s", cast, out), "/dev/null")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("asciinema cat: %v\n%s", err, b)
	}
	got, _ := os.ReadFile(out)
	if string(got) != wantText {
		t.Errorf("asciinema cat printed\n %q\nwant %q", got, wantText)
	}
	play := exec.Command("asciinema", "play", "-s", "100", "-i", "0.1", cast)
	play.Stdin = nil
	pout, err := play.CombinedOutput()
	if err != nil {
		t.Fatalf("asciinema play: %v\n%s", err, pout)
	}
	if !strings.Contains(string(pout), "café 😀") {
		t.Errorf("asciinema play output %q", pout)
	}

	// The manifest verifies with our Verify and with real ssh-keygen.
	if err := Verify(rdir, signer.PublicKey()); err != nil {
		t.Fatal(err)
	}
	allowed := writeAllowedSigners(t, dir, signer.PublicKey())
	mb, _ := os.ReadFile(filepath.Join(rdir, ManifestName))
	if o, ok := sshKeygenVerify(t, allowed, RecordingNamespace, filepath.Join(rdir, SignatureName), mb); !ok {
		t.Fatalf("ssh-keygen -Y verify rejected the manifest: %s", o)
	}
	_ = keyPath

	// Events and files.
	ev, _ := os.ReadFile(filepath.Join(rdir, EventsFile))
	for _, w := range []string{`"event":"channel.open"`, `"event":"exec","channel":0,"command":"ls -l"`, `"event":"channel.close"`} {
		if !bytes.Contains(ev, []byte(w)) {
			t.Errorf("events.jsonl lacks %s:\n%s", w, ev)
		}
	}
	m, _, err := ReadManifest(rdir)
	if err != nil || m.Failed || m.Closed != "client closed" || len(m.Files) != 4 {
		t.Errorf("manifest %+v %v", m, err)
	}
	if _, err := os.Stat(filepath.Join(rdir, reserveFile)); !os.IsNotExist(err) {
		t.Errorf("reserve file left behind: %v", err)
	}
	metas, err := List(cfg.Dir)
	if err != nil || len(metas) != 1 || metas[0].ID != "s1" || metas[0].KeyID != "alice@example.org" {
		t.Errorf("List = %+v, %v", metas, err)
	}
}

func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	if err := os.MkdirAll(dst, 0o700); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(src)
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dst, e.Name()), b, 0o600)
	}
}

func TestVerifyDetectsTampering(t *testing.T) {
	dir := t.TempDir()
	signer, _ := genKey(t, dir)
	root := filepath.Join(dir, "recs")
	cfg := RecorderConfig{Dir: root, SigningKey: signer}
	rec, _ := recordSample(t, cfg, "orig")
	if err := rec.Close("done"); err != nil {
		t.Fatal(err)
	}
	orig := filepath.Join(root, "orig")
	allowed := writeAllowedSigners(t, dir, signer.PublicKey())

	for _, c := range []struct {
		name   string
		mutate func(d string)
		want   []string
		sigBad bool // ssh-keygen must reject too
	}{
		{"edited byte", func(d string) {
			p := filepath.Join(d, "ch00.cast")
			b, _ := os.ReadFile(p)
			i := bytes.Index(b, []byte("bold"))
			b[i] = 'B'
			os.WriteFile(p, b, 0o600)
		}, []string{"ch00.cast: chunk 0", "edited"}, false},
		{"deleted file", func(d string) { os.Remove(filepath.Join(d, "ch00.ttyrec")) }, []string{"ch00.ttyrec: missing"}, false},
		{"appended", func(d string) {
			f, _ := os.OpenFile(filepath.Join(d, EventsFile), os.O_APPEND|os.O_WRONLY, 0)
			f.WriteString("{}\n")
			f.Close()
		}, []string{"events.jsonl: file is"}, false},
		{"truncated manifest", func(d string) {
			p := filepath.Join(d, ManifestName)
			b, _ := os.ReadFile(p)
			os.WriteFile(p, b[:len(b)/2], 0o600)
		}, []string{"does not parse", "signature: sshsig: signature does not verify"}, true},
		{"edited manifest", func(d string) {
			p := filepath.Join(d, ManifestName)
			b, _ := os.ReadFile(p)
			os.WriteFile(p, bytes.Replace(b, []byte(`"done"`), []byte(`"DONE"`), 1), 0o600)
		}, []string{"signature: sshsig: signature does not verify"}, true},
		{"extra file", func(d string) { os.WriteFile(filepath.Join(d, "ch05.cast"), []byte("x"), 0o600) },
			[]string{"ch05.cast: present but not in the manifest"}, false},
		{"deleted signature", func(d string) { os.Remove(filepath.Join(d, SignatureName)) }, []string{"signature:"}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := filepath.Join(dir, "copy", strings.ReplaceAll(c.name, " ", "_"), "orig")
			copyDir(t, orig, d)
			if err := Verify(d, signer.PublicKey()); err != nil {
				t.Fatalf("untouched copy fails: %v", err)
			}
			c.mutate(d)
			err := Verify(d, signer.PublicKey())
			var ve *VerifyError
			if !errors.As(err, &ve) {
				t.Fatalf("Verify = %v, want *VerifyError", err)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
			if c.sigBad {
				mb, _ := os.ReadFile(filepath.Join(d, ManifestName))
				if o, ok := sshKeygenVerify(t, allowed, RecordingNamespace, filepath.Join(d, SignatureName), mb); ok {
					t.Errorf("ssh-keygen accepted tampered manifest: %s", o)
				}
			}
		})
	}
	// Wrong key.
	other, _ := genKey(t, t.TempDir())
	if err := Verify(orig, other.PublicKey()); err == nil || !strings.Contains(err.Error(), "not by the expected key") {
		t.Errorf("other key: %v", err)
	}
	// A deleted recording.
	if err := Verify(filepath.Join(root, "gone"), signer.PublicKey()); err == nil {
		t.Error("missing recording verified")
	}
}

func TestMinFreeSpaceRefuses(t *testing.T) {
	root := t.TempDir()
	_, err := NewRecording(RecorderConfig{Dir: root, MinFreeSpace: 1 << 62}, "s1", testMeta())
	if err == nil || !strings.Contains(err.Error(), "min_free_space") {
		t.Fatalf("NewRecording = %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "s1")); !os.IsNotExist(err) {
		t.Errorf("refused recording left a directory: %v", err)
	}
	for _, id := range []string{"", "../x", ".hidden", "a/b", strings.Repeat("a", 129)} {
		if _, err := NewRecording(RecorderConfig{Dir: root}, id, testMeta()); err == nil {
			t.Errorf("id %q accepted", id)
		}
	}
	r, err := NewRecording(RecorderConfig{Dir: root}, "dup", testMeta())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close("test")
	if _, err := NewRecording(RecorderConfig{Dir: root}, "dup", testMeta()); err == nil {
		t.Error("second recording with the same id accepted")
	}
}

// TestDiskFullFailsClosed fills a real 256 KiB tmpfs mid-recording.
func TestDiskFullFailsClosed(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting tmpfs needs root")
	}
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot mount tmpfs (container without CAP_SYS_ADMIN?): %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", mnt).Run() })
	signer, _ := genKey(t, t.TempDir())
	cfg := RecorderConfig{Dir: filepath.Join(mnt, "recs"), SigningKey: signer, FlushInterval: time.Hour}
	rec, err := NewRecording(cfg, "full", testMeta())
	if err != nil {
		t.Fatal(err)
	}
	ch, err := rec.Channel(0, "session", "xterm", 80, 24)
	if err != nil {
		t.Fatal(err)
	}
	var sent []byte
	var failErr error
	for i := 0; i < 10000; i++ {
		p := []byte(fmt.Sprintf("line %06d ......................................................\r\n", i))
		if err := ch.Output(p); err != nil {
			failErr = err
			break
		}
		sent = append(sent, p...)
	}
	if failErr == nil {
		t.Fatal("256 KiB tmpfs never filled")
	}
	if !strings.Contains(failErr.Error(), "no space left") || !strings.Contains(failErr.Error(), "fail closed") {
		t.Errorf("failure error: %v", failErr)
	}
	if err := ch.Output([]byte("after")); err == nil {
		t.Error("Output after failure succeeded")
	}
	if err := rec.Event("x", nil); err == nil {
		t.Error("Event after failure succeeded")
	}
	if err := rec.Close("recording failed"); err == nil {
		t.Error("Close of a failed recording returned nil")
	}
	rdir := filepath.Join(cfg.Dir, "full")
	m, _, err := ReadManifest(rdir)
	if err != nil {
		t.Fatalf("no manifest after disk full: %v", err)
	}
	if !m.Failed || !strings.Contains(m.Failure, "no space left") {
		t.Errorf("manifest failed=%v failure=%q", m.Failed, m.Failure)
	}
	if err := Verify(rdir, signer.PublicKey()); err != nil {
		t.Fatalf("claimed part does not verify: %v", err)
	}
	// Claimed ttyrec bytes are a prefix of what was sent before the error.
	got := ttyrecPayload(t, filepath.Join(rdir, "ch00.ttyrec"))
	if !bytes.HasPrefix(sent, got) {
		t.Errorf("claimed ttyrec is not a prefix of the output sent")
	}
	if bytes.Contains(got, []byte("after")) {
		t.Error("data written after the failure is claimed")
	}
	t.Logf("sent %d bytes before ENOSPC, %d claimed in ttyrec", len(sent), len(got))
}

func TestConcurrentChannels(t *testing.T) {
	signer, _ := genKey(t, t.TempDir())
	cfg := RecorderConfig{Dir: t.TempDir(), SigningKey: signer, FlushInterval: time.Millisecond, RecordInput: true}
	rec, err := NewRecording(cfg, "conc", testMeta())
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	want := make([][]byte, 4)
	for n := 0; n < 4; n++ {
		ch, err := rec.Channel(n, "session", "", 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 2000; i++ {
				p := []byte(fmt.Sprintf("ch%d é line %d\n", n, i))
				want[n] = append(want[n], p...)
				if err := ch.Output(p[:5]); err != nil { // splits "é"
					t.Error(err)
					return
				}
				if err := ch.Output(p[5:]); err != nil {
					t.Error(err)
					return
				}
				ch.Input([]byte("k"))
				rec.Event("tick", map[string]any{"n": n})
			}
			if n%2 == 0 {
				ch.Close() // the others are closed by rec.Close
			}
		}()
	}
	wg.Wait()
	if err := rec.Close("done"); err != nil {
		t.Fatal(err)
	}
	d := filepath.Join(cfg.Dir, "conc")
	if err := Verify(d, signer.PublicKey()); err != nil {
		t.Fatal(err)
	}
	m, _, _ := ReadManifest(d)
	if chunks := len(m.Files[0].Chunks); chunks < 2 {
		t.Errorf("expected several chunks from the flush ticker, got %d", chunks)
	}
	for n := 0; n < 4; n++ {
		_, evs := castEvents(t, filepath.Join(d, fmt.Sprintf("ch%02d.cast", n)))
		if got := castText(evs, "o"); got != string(want[n]) {
			t.Errorf("channel %d cast text differs (len %d vs %d)", n, len(got), len(want[n]))
		}
		if got := ttyrecPayload(t, filepath.Join(d, fmt.Sprintf("ch%02d.ttyrec", n))); !bytes.Equal(got, want[n]) {
			t.Errorf("channel %d ttyrec differs", n)
		}
	}
}

func TestUnsignedRecordingReported(t *testing.T) {
	cfg := RecorderConfig{Dir: t.TempDir()}
	rec, _ := recordSample(t, cfg, "nosig")
	if err := rec.Close("done"); err != nil {
		t.Fatal(err)
	}
	signer, _ := genKey(t, t.TempDir())
	err := Verify(filepath.Join(cfg.Dir, "nosig"), signer.PublicKey())
	if err == nil || !strings.Contains(err.Error(), "signature") {
		t.Errorf("unsigned recording: %v", err)
	}
	if err := rec.Close("again"); err == nil {
		t.Error("second Close succeeded")
	}
}

func FuzzCastUTF8(f *testing.F) {
	f.Add([]byte("caf\xc3\xa9 \xf0\x9f\x98\x80 \xff\xe2\x82"), uint8(4), uint8(1))
	f.Add([]byte("\xe0\x80\xf4\x90\x80\x80\xed\xa0\x80"), uint8(1), uint8(2))
	f.Add([]byte("\"\\\x00\x1b\x7f"), uint8(2), uint8(3))
	f.Fuzz(func(t *testing.T, data []byte, a, b uint8) {
		want := validText(data)
		for _, step := range []int{len(data) + 1, int(a%7) + 1, int(b%5) + 1} {
			r := &Recording{now: time.Now}
			c := &Channel{r: r, cast: &trackedFile{}, start: time.Now()}
			for i := 0; i < len(data); i += step {
				c.castEvent(time.Now(), 'o', &c.pendOut, data[i:min(i+step, len(data))])
			}
			c.flushPending()
			var got strings.Builder
			sc := bufio.NewScanner(bytes.NewReader(c.cast.buf))
			sc.Buffer(nil, 1<<20)
			for sc.Scan() {
				var ev []any
				if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
					t.Fatalf("bad cast line %q: %v", sc.Bytes(), err)
				}
				got.WriteString(ev[2].(string))
			}
			if got.String() != want {
				t.Fatalf("step %d: got %q want %q", step, got.String(), want)
			}
		}
	})
}

func BenchmarkChannelOutput(b *testing.B) {
	signer, _ := genKey(b, b.TempDir())
	cfg := RecorderConfig{Dir: b.TempDir(), SigningKey: signer}
	rec, err := NewRecording(cfg, "bench", testMeta())
	if err != nil {
		b.Fatal(err)
	}
	ch, err := rec.Channel(0, "session", "xterm", 80, 24)
	if err != nil {
		b.Fatal(err)
	}
	// seq-like output in 32 KiB reads, as an SSH channel delivers it.
	var buf bytes.Buffer
	for i := 1; buf.Len() < 32<<10; i++ {
		fmt.Fprintf(&buf, "%d\r\n", 1000000+i)
	}
	p := buf.Bytes()[:32<<10]
	b.SetBytes(int64(len(p)))
	cpu0 := cpuTime()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := ch.Output(p); err != nil {
			b.Fatal(err)
		}
	}
	if err := rec.Close("bench"); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	// Wall time is noisy on a shared machine; process CPU time (this
	// goroutine plus the writer) is the cost the recorder adds.
	mb := float64(b.N) * float64(len(p)) / 1e6
	b.ReportMetric(float64(cpuTime()-cpu0)/1e6/mb, "cpu-ms/MB")
	st, _ := os.Stat(filepath.Join(cfg.Dir, "bench", "ch00.cast"))
	st2, _ := os.Stat(filepath.Join(cfg.Dir, "bench", "ch00.ttyrec"))
	b.ReportMetric(float64(st.Size()+st2.Size())/1e6/mb, "disk-MB/MB")
}

// cpuTime is the process's user+system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func TestSealAfterCrash(t *testing.T) {
	signer, _ := genKey(t, t.TempDir())
	cfg := RecorderConfig{Dir: t.TempDir(), SigningKey: signer, FlushInterval: 5 * time.Millisecond}
	rec, err := NewRecording(cfg, "crash", testMeta())
	if err != nil {
		t.Fatal(err)
	}
	defer rec.Close("test end")
	ch, _ := rec.Channel(0, "session", "xterm", 80, 24)
	ch.Output([]byte("before the crash\r\n"))
	// The flush ticker puts the output on disk within FlushInterval.
	src := filepath.Join(cfg.Dir, "crash")
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(filepath.Join(src, "ch00.ttyrec"))
		if bytes.Contains(b, []byte("before the crash")) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("output not flushed to disk by the ticker")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// A copy of the directory as a crash leaves it: no manifest.
	crashed := filepath.Join(t.TempDir(), "crash")
	copyDir(t, src, crashed)
	if err := Verify(crashed, signer.PublicKey()); err == nil || !strings.Contains(err.Error(), "never closed") {
		t.Fatalf("unsealed recording: %v", err)
	}
	if err := Seal(crashed, signer, nil, "bastion restarted"); err != nil {
		t.Fatal(err)
	}
	if err := Verify(crashed, signer.PublicKey()); err != nil {
		t.Fatalf("sealed recording does not verify: %v", err)
	}
	m, _, _ := ReadManifest(crashed)
	if !m.Failed || !strings.Contains(m.Failure, "bastion restarted") {
		t.Errorf("sealed manifest %+v", m)
	}
	if err := Seal(crashed, signer, nil, "again"); err == nil {
		t.Error("sealed twice")
	}
}

// TestLargeOutputAsciinema streams a real process's output (several
// flushes' worth, read in odd-sized pieces that split UTF-8) through a
// channel and checks real asciinema prints it back exactly.
func TestLargeOutputAsciinema(t *testing.T) {
	needTool(t, "asciinema")
	script := needTool(t, "script")
	dir := t.TempDir()
	signer, _ := genKey(t, dir)
	cfg := RecorderConfig{Dir: filepath.Join(dir, "recs"), SigningKey: signer, FlushInterval: 20 * time.Millisecond}
	rec, err := NewRecording(cfg, "big", testMeta())
	if err != nil {
		t.Fatal(err)
	}
	ch, err := rec.Channel(0, "session", "xterm", 80, 24)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sh", "-c", `seq 1 100000 | sed 's/$/ héllo wörld ✓ 😀/'`)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var raw []byte
	buf := make([]byte, 4099) // odd size: splits multi-byte characters
	for {
		n, err := out.Read(buf)
		if n > 0 {
			raw = append(raw, buf[:n]...)
			if err := ch.Output(buf[:n]); err != nil {
				t.Fatal(err)
			}
		}
		if err != nil {
			break
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	ch.Marker("exit-status 0")
	if err := rec.Close("exit"); err != nil {
		t.Fatal(err)
	}
	rdir := filepath.Join(cfg.Dir, "big")
	if err := Verify(rdir, signer.PublicKey()); err != nil {
		t.Fatal(err)
	}
	m, _, _ := ReadManifest(rdir)
	for _, f := range m.Files {
		if f.Name == "ch00.cast" && len(f.Chunks) < 10 {
			t.Errorf("cast has %d chunks, expected many flushes", len(f.Chunks))
		}
	}
	if got := ttyrecPayload(t, filepath.Join(rdir, "ch00.ttyrec")); !bytes.Equal(got, raw) {
		t.Fatal("ttyrec differs from the process output")
	}
	catOut := filepath.Join(dir, "cat.out")
	if b, err := exec.Command(script, "-qec", fmt.Sprintf("asciinema cat %s > %s", filepath.Join(rdir, "ch00.cast"), catOut), "/dev/null").CombinedOutput(); err != nil {
		t.Fatalf("asciinema cat: %v\n%s", err, b)
	}
	got, _ := os.ReadFile(catOut)
	if !bytes.Equal(got, raw) {
		t.Fatalf("asciinema cat output differs: %d bytes vs %d", len(got), len(raw))
	}
}

func TestVerifyAllWithIndex(t *testing.T) {
	dir := t.TempDir()
	signer, _ := genKey(t, dir)
	root := filepath.Join(dir, "recs")
	idx, err := OpenAudit(filepath.Join(root, IndexName), nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := RecorderConfig{Dir: root, SigningKey: signer, Index: idx}
	for _, id := range []string{"a", "b", "c"} {
		rec, _ := recordSample(t, cfg, id)
		if err := rec.Close("done"); err != nil {
			t.Fatal(err)
		}
	}
	idx.Close()
	res, err := VerifyAll(root, signer.PublicKey())
	if err != nil || len(res) != 3 {
		t.Fatalf("VerifyAll = %v, %v", res, err)
	}
	for _, r := range res {
		if r.Err != nil || r.Manifest == nil {
			t.Errorf("%s: %v", r.ID, r.Err)
		}
	}

	// Delete b entirely; edit c and re-seal it with the real key (an
	// insider replacing the evidence); add an unindexed directory.
	os.RemoveAll(filepath.Join(root, "b"))
	os.Remove(filepath.Join(root, "c", ManifestName))
	castPath := filepath.Join(root, "c", "ch00.cast")
	cb, _ := os.ReadFile(castPath)
	os.WriteFile(castPath, bytes.Replace(cb, []byte("exit 3"), []byte("exit 0"), 1), 0o600)
	if err := Seal(filepath.Join(root, "c"), signer, nil, "insider"); err != nil {
		t.Fatal(err)
	}
	if err := Verify(filepath.Join(root, "c"), signer.PublicKey()); err != nil {
		t.Fatalf("re-sealed c should verify on its own: %v", err)
	}
	rogue, _ := recordSample(t, RecorderConfig{Dir: root, SigningKey: signer}, "rogue")
	rogue.Close("done")

	res, err = VerifyAll(root, signer.PublicKey())
	if err != nil {
		t.Fatalf("index error: %v", err)
	}
	got := map[string]string{}
	for _, r := range res {
		if r.Err != nil {
			got[r.ID] = r.Err.Error()
		}
	}
	if _, bad := got["a"]; bad {
		t.Errorf("untouched a reported: %s", got["a"])
	}
	for id, want := range map[string]string{"b": "deleted", "c": "manifest final hash differs", "rogue": "not listed in index.jsonl"} {
		if !strings.Contains(got[id], want) {
			t.Errorf("%s: got %q, want %q", id, got[id], want)
		}
	}

	// An edited index line breaks its chain.
	p := filepath.Join(root, IndexName)
	b, _ := os.ReadFile(p)
	os.WriteFile(p, bytes.Replace(b, []byte(`"id":"a"`), []byte(`"id":"A"`), 1), 0o600)
	if _, err := VerifyAll(root, signer.PublicKey()); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Errorf("edited index: %v", err)
	}
}

// TestMetaCache: a second List reads only new recordings' meta.json and
// forgets deleted ones.
func TestMetaCache(t *testing.T) {
	root := t.TempDir()
	mk := func(id string, start time.Time) {
		if err := os.MkdirAll(filepath.Join(root, id), 0o700); err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(Meta{ID: id, Start: start})
		if err := os.WriteFile(filepath.Join(root, id, MetaFile), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	t0 := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	mk("a-1", t0)
	mk("b-1", t0.Add(time.Hour))
	var c MetaCache
	ids := func() []string {
		ms, err := c.List(root)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, m := range ms {
			out = append(out, m.ID)
		}
		return out
	}
	if got := ids(); !slices.Equal(got, []string{"a-1", "b-1"}) {
		t.Fatalf("first list %v", got)
	}
	// A cached meta.json is not read again: making it unreadable changes
	// nothing; a new recording is read; a deleted one is forgotten.
	os.WriteFile(filepath.Join(root, "a-1", MetaFile), []byte("{not json"), 0o600)
	mk("c-1", t0.Add(2*time.Hour))
	os.RemoveAll(filepath.Join(root, "b-1"))
	if got := ids(); !slices.Equal(got, []string{"a-1", "c-1"}) {
		t.Fatalf("second list %v", got)
	}
	if _, err := List(root); err == nil {
		t.Error("an uncached List did not read the damaged meta.json")
	}
}
