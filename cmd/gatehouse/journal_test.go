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

// TestRunLogsSIGHUPReload: each SIGHUP reload is logged with what changed
// in the rules.
func TestRunLogsSIGHUPReload(t *testing.T) {
	dir := t.TempDir()
	f, env := journalFile(t)
	t.Setenv("JOURNAL_STREAM", env)
	for _, k := range []string{"host_key", "user_ca"} {
		if _, _, err := ensureSSHKey(filepath.Join(dir, k), k); err != nil {
			t.Fatal(err)
		}
	}
	conf := filepath.Join(dir, "gh.toml")
	cfg := fmt.Sprintf("state_dir = %q\n\n[serve]\nlisten = %q\n\n[bastion]\nlisten = %q\nhost_keys = [%q]\nuser_ca_keys = %q\naudit_log = %q\n\n[[bastion.rule]]\nprincipals = [\"admin\"]\njump = [\"127.0.0.1:22\"]\n",
		filepath.Join(dir, "state"), freePort(t), freePort(t), filepath.Join(dir, "host_key"), filepath.Join(dir, "user_ca.pub"), filepath.Join(dir, "audit.jsonl"))
	if err := os.WriteFile(conf, []byte(cfg), 0o640); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int)
	go func() {
		done <- run(ctx, []string{"--config", conf, "--log-level", "debug", "run"}, &strings.Builder{}, f)
	}()
	defer func() { cancel(); <-done }()
	read := func() string { b, _ := os.ReadFile(f.Name()); return string(b) }
	wait := func(what string) {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); !strings.Contains(read(), what); time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("no %q logged:\n%s", what, read())
			}
		}
	}
	// Logged after signal.Notify: a SIGHUP now cannot kill the test.
	wait("reload: SIGHUP re-reads")
	if err := os.WriteFile(conf, []byte(cfg+"\n[[bastion.rule]]\nprincipals = [\"ops\"]\njump = [\"127.0.0.1:2022\"]\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	wait("reloaded bastion rules")
	out := read()
	for _, re := range []string{
		`(?m)^<6>.*msg="reload: SIGHUP received; re-reading the \[bastion\] rules, CA keys and revocation list" config=` + regexp.QuoteMeta(conf),
		`(?m)^<6>.*msg="reloaded bastion rules, CA keys and revocations" rules="changed: 1 rules before, 2 now"`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("log lacks %s:\n%s", re, out)
		}
	}
}
