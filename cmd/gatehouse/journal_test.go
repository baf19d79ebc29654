package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// journalFile returns a file to use as stderr and the JOURNAL_STREAM value
// systemd would set for it.
func journalFile(t *testing.T) (*os.File, string) {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "journal"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	return f, fmt.Sprintf("%d:%d", st.Dev, st.Ino)
}

// TestJournalPriorities: with stderr being the stream JOURNAL_STREAM names,
// each line starts with its sd-daemon priority; with the variable naming
// another stream (inherited by a child whose stderr was redirected), or
// unset, lines are plain.
func TestJournalPriorities(t *testing.T) {
	for _, tc := range []struct {
		name   string
		json   bool
		env    func(string) string
		prefix bool
	}{
		{"text", false, func(s string) string { return s }, true},
		{"json", true, func(s string) string { return s }, true},
		{"other stream", false, func(s string) string { return "1:2" }, false},
		{"unset", false, func(string) string { return "" }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, env := journalFile(t)
			log := slog.New(newLogHandler(f, &slog.HandlerOptions{Level: slog.LevelDebug}, tc.json, tc.env(env))).With("mirror", "up")
			log.Debug("d")
			log.Info("i", "k", "multi\nline")
			log.Warn("w")
			log.Error("e")
			data, _ := os.ReadFile(f.Name())
			lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
			if len(lines) != 4 {
				t.Fatalf("want 4 lines, got %q", data)
			}
			for i, p := range []string{"<7>", "<6>", "<4>", "<3>"} {
				if has := strings.HasPrefix(lines[i], p); has != tc.prefix {
					t.Errorf("line %d %q: prefix %s present=%v, want %v", i, lines[i], p, has, tc.prefix)
				}
				if !strings.Contains(lines[i], "up") {
					t.Errorf("line %d lost the logger's attributes: %q", i, lines[i])
				}
			}
		})
	}
}

// TestRunLogsScheduleAndShutdown: `gatehouse run` under systemd logs each
// scheduled mirror with its next run time and each shutdown step, at
// journal priority info, and a failed sd_notify as a warning.
func TestRunLogsScheduleAndShutdown(t *testing.T) {
	dir := t.TempDir()
	f, env := journalFile(t)
	t.Setenv("JOURNAL_STREAM", env)
	t.Setenv("NOTIFY_SOCKET", filepath.Join(dir, "no-such-socket"))
	conf := filepath.Join(dir, "gh.toml")
	cfg := fmt.Sprintf("state_dir = %q\n\n[serve]\nlisten = %q\n\n[[mirror]]\nname = \"up\"\nurl = \"http://127.0.0.1:9/\"\nsuites = [\"stable\"]\ncomponents = [\"main\"]\narchitectures = [\"amd64\"]\nkeyring = %q\nschedule = \"daily\"\n",
		filepath.Join(dir, "state"), freePort(t), filepath.Join(dir, "k.gpg"))
	if err := os.WriteFile(conf, []byte(cfg), 0o640); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int)
	go func() { done <- run(ctx, []string{"--config", conf, "run"}, &strings.Builder{}, f) }()
	read := func() string { b, _ := os.ReadFile(f.Name()); return string(b) }
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(read(), "sync scheduled") {
		if time.Now().After(deadline) {
			cancel()
			<-done
			t.Fatalf("no schedule logged:\n%s", read())
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("run exit %d:\n%s", code, read())
	}
	out := read()
	for _, re := range []string{
		`(?m)^<6>.*msg="sync scheduled" mirror=up every=24h0m0s next=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d`,
		`(?m)^<4>.*msg="sd_notify failed"`,
		`(?m)^<6>.*msg="shutdown: signal received; stopping scheduled syncs, the bastion and the HTTP server"`,
		`(?m)^<6>.*msg="shutdown: schedule stopped" mirror=up`,
		`(?m)^<6>.*msg="shutdown: HTTP server stopped"`,
		`(?m)^<6>.*msg="shutdown: complete; every component has stopped"`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("log lacks %s:\n%s", re, out)
		}
	}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if !regexp.MustCompile(`^<[3467]>`).MatchString(l) {
			t.Errorf("line without a priority: %q", l)
		}
	}
}
