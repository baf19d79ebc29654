package record

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func fixedClock() func() time.Time {
	var mu sync.Mutex
	t := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	return func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		t = t.Add(time.Millisecond)
		return t
	}
}

func writeAudit(t *testing.T, path string, n int) {
	t.Helper()
	a, err := OpenAudit(path, fixedClock())
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		if err := a.logMap("auth", map[string]any{"i": i, "user": "alice", "key_id": "k\x1b[31m"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
}

func readLines(t *testing.T, path string) [][]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.SplitAfter(b, []byte("\n"))[:bytes.Count(b, []byte("\n"))]
}

func TestAuditChain1000(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "sub", "dir")
	path := filepath.Join(dir, "audit.jsonl")
	writeAudit(t, path, 600)
	// Reopen continues the chain.
	writeAudit(t, path, 400)
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("audit log mode %v, want 0600", st.Mode().Perm())
	}
	dst, _ := os.Stat(dir)
	if dst.Mode().Perm() != 0o700 {
		t.Errorf("audit dir mode %v, want 0700", dst.Mode().Perm())
	}
	f, _ := os.Open(path)
	defer f.Close()
	n, err := VerifyAudit(f)
	if err != nil || n != 1000 {
		t.Fatalf("VerifyAudit = %d, %v; want 1000, nil", n, err)
	}
	lines := readLines(t, path)
	// Stable field order: time, event, sorted fields, prev, seq.
	first := string(lines[0])
	if !strings.HasPrefix(first, `{"time":"2026-11-23T10:00:00.001Z","event":"auth","i":0,"key_id":"k\u001b[31m","user":"alice","prev":"0000`) ||
		!strings.HasSuffix(first, `,"seq":1}`+"\n") {
		t.Errorf("first line layout: %s", first)
	}
	var m map[string]any
	if err := json.Unmarshal(lines[999], &m); err != nil || m["seq"].(float64) != 1000 {
		t.Errorf("last line %s: %v", lines[999], err)
	}
}

func TestAuditTamper(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	writeAudit(t, path, 1000)
	orig := readLines(t, path)

	check := func(name string, lines [][]byte, wantLine int) {
		t.Helper()
		_, err := VerifyAudit(bytes.NewReader(bytes.Join(lines, nil)))
		var ae *AuditError
		if !errors.As(err, &ae) {
			t.Errorf("%s: err = %v, want *AuditError", name, err)
			return
		}
		if ae.Line != wantLine {
			t.Errorf("%s: error names line %d, want %d: %v", name, ae.Line, wantLine, err)
		}
		if !strings.Contains(err.Error(), fmt.Sprintf("line %d", wantLine)) {
			t.Errorf("%s: message does not name line %d: %v", name, wantLine, err)
		}
	}
	clone := func() [][]byte {
		c := make([][]byte, len(orig))
		for i := range orig {
			c[i] = append([]byte(nil), orig[i]...)
		}
		return c
	}

	// Edit one byte of a field value on line 500.
	l := clone()
	l[499] = bytes.Replace(l[499], []byte(`"alice"`), []byte(`"alicf"`), 1)
	check("edit", l, 500)

	// Edit the seq of line 500 consistently with its neighbours? Not possible
	// without breaking prev; editing seq is caught at the line itself.
	l = clone()
	l[499] = bytes.Replace(l[499], []byte(`"seq":500}`), []byte(`"seq":501}`), 1)
	check("edit seq", l, 500)

	// Delete line 500.
	l = clone()
	l = append(l[:499], l[500:]...)
	check("delete", l, 500)

	// Reorder lines 500 and 501.
	l = clone()
	l[499], l[500] = l[500], l[499]
	check("reorder", l, 500)

	// Delete the first line.
	l = clone()
	check("delete first", l[1:], 1)

	// Truncate in the middle of line 700.
	l = clone()
	l[699] = l[699][:40]
	check("truncate middle", l[:700], 700)

	// Garbage line inserted.
	l = clone()
	l = append(l[:300], append([][]byte{[]byte("{}\n")}, l[300:]...)...)
	check("insert", l, 301)
}

func TestAuditRefusesPartialTail(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	writeAudit(t, path, 3)
	b, _ := os.ReadFile(path)
	if err := os.WriteFile(path, b[:len(b)-5], 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := OpenAudit(path, nil)
	if err == nil || !strings.Contains(err.Error(), "incomplete") {
		t.Fatalf("OpenAudit on partial tail: %v", err)
	}
	if err := os.WriteFile(path, append(b, "not json\n"...), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = OpenAudit(path, nil)
	if err == nil || !strings.Contains(err.Error(), "does not parse") {
		t.Fatalf("OpenAudit on garbage tail: %v", err)
	}
}

func TestAuditFailClosed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	a, err := OpenAudit(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.logMap("x", map[string]any{"seq": 1}); err == nil {
		t.Error("reserved field accepted")
	}
	if err := a.logMap("x", map[string]any{"c": make(chan int)}); err == nil {
		t.Error("unencodable field accepted")
	}
	if err := a.logMap("x", map[string]any{"big": strings.Repeat("a", MaxAuditLine)}); err == nil {
		t.Error("oversized line accepted")
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.logMap("x", nil); err == nil {
		t.Error("Log after Close succeeded")
	}
	var nilA *Audit
	if err := nilA.logMap("x", nil); err == nil {
		t.Error("Log on nil Audit succeeded")
	}
	// The rejected events wrote nothing.
	b, _ := os.ReadFile(path)
	if len(b) != 0 {
		t.Errorf("rejected events wrote %q", b)
	}
}

func TestAuditConcurrent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	a, err := OpenAudit(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 100; i++ {
				if err := a.logMap("conn.start", map[string]any{"g": g, "i": i}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	a.Close()
	f, _ := os.Open(path)
	defer f.Close()
	if n, err := VerifyAudit(f); err != nil || n != 800 {
		t.Fatalf("VerifyAudit = %d, %v", n, err)
	}
}

func TestSanitize(t *testing.T) {
	for _, c := range []struct {
		in   string
		max  int
		want string
	}{
		{"alice", 0, "alice"},
		{"a\x1b[2Jb", 0, `a\u001b[2Jb`},
		{"ev\u202eil", 0, `ev\u202eil`},
		{"bad\xffutf", 0, `bad\xffutf`},
		{`back\slash`, 0, `back\\slash`},
		{"café ü", 0, "café ü"},
		{"abcdefghij", 6, "abc..."},
		{"ééééé", 6, "é..."},
		{"abc", 2, ""},
		{"a\nb", 0, `a\u000ab`},
	} {
		if got := Sanitize(c.in, c.max); got != c.want {
			t.Errorf("Sanitize(%q, %d) = %q, want %q", c.in, c.max, got, c.want)
		}
		if c.max > 0 && len(Sanitize(c.in, c.max)) > c.max {
			t.Errorf("Sanitize(%q, %d) too long", c.in, c.max)
		}
	}
}

func FuzzVerifyAudit(f *testing.F) {
	path := filepath.Join(f.TempDir(), "audit.jsonl")
	a, err := OpenAudit(path, fixedClock())
	if err != nil {
		f.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		a.logMap("auth", map[string]any{"i": i})
	}
	a.Close()
	good, _ := os.ReadFile(path)
	f.Add(good)
	f.Add(good[:len(good)-3])
	f.Add([]byte("{}\n"))
	f.Add([]byte(`{"time":"x","event":"e","prev":"00","seq":1}` + "\n"))
	f.Add([]byte("\n\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		n, err := VerifyAudit(bytes.NewReader(data))
		if err == nil {
			if n != bytes.Count(data, []byte("\n")) {
				t.Fatalf("accepted %d lines of %d", n, bytes.Count(data, []byte("\n")))
			}
			return
		}
		var ae *AuditError
		if !errors.As(err, &ae) || ae.Line < 1 || ae.Line > n+1 {
			t.Fatalf("bad error %v for %d good lines", err, n)
		}
	})
}

func FuzzSanitize(f *testing.F) {
	f.Add("a\x1b\xffé\u202e", 5)
	f.Fuzz(func(t *testing.T, s string, max int) {
		max %= 200
		out := Sanitize(s, max)
		if max > 0 && len(out) > max {
			t.Fatalf("len %d > %d", len(out), max)
		}
		for _, r := range out {
			if r < 0x20 || r == 0x7f {
				t.Fatalf("control char in %q", out)
			}
		}
	})
}

func TestAuditSecondWriterRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	a, err := OpenAudit(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if b, err := OpenAudit(path, nil); err == nil {
		b.Close()
		t.Fatal("second OpenAudit on the same file succeeded; two writers would fork the chain")
	}
}

// TestAuditDiskFull fills a real tmpfs: Log fails closed, the partial line
// is cut, and once space is freed the log reopens and its chain continues.
func TestAuditDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting tmpfs needs root")
	}
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot mount tmpfs (container without CAP_SYS_ADMIN?): %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", mnt).Run() })
	filler := filepath.Join(mnt, "filler")
	os.WriteFile(filler, make([]byte, 32<<10), 0o600)
	path := filepath.Join(mnt, "audit.jsonl")
	a, err := OpenAudit(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	ok := 0
	var logErr error
	for i := 0; i < 1000; i++ {
		if logErr = a.logMap("auth", map[string]any{"pad": strings.Repeat("x", 700), "i": i}); logErr != nil {
			break
		}
		ok++
	}
	if logErr == nil || !strings.Contains(logErr.Error(), "no space left") {
		t.Fatalf("expected ENOSPC, got %v after %d lines", logErr, ok)
	}
	if err := a.logMap("auth", nil); err == nil {
		t.Error("Log after a failed write succeeded")
	}
	a.Close()
	f, _ := os.Open(path)
	n, err := VerifyAudit(f)
	f.Close()
	if err != nil || n != ok {
		t.Fatalf("after ENOSPC: VerifyAudit = %d, %v; want %d, nil", n, err, ok)
	}
	os.Remove(filler)
	a, err = OpenAudit(path, nil)
	if err != nil {
		t.Fatalf("reopen after freeing space: %v", err)
	}
	if err := a.logMap("audit.resumed", nil); err != nil {
		t.Fatal(err)
	}
	a.Close()
	f, _ = os.Open(path)
	defer f.Close()
	if n, err := VerifyAudit(f); err != nil || n != ok+1 {
		t.Fatalf("VerifyAudit = %d, %v; want %d", n, err, ok+1)
	}
}
