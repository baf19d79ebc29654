package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"gatehouse/apt/apttest"
)

// ansi matches the terminal control sequences a progress display writes
// (CSI sequences such as cursor up and erase) and carriage returns.
var ansi = regexp.MustCompile(`\x1b\[[0-9;?]*[A-Za-z]|\r`)

// TestProgressOnTerminal: `mirror sync` on a terminal (a pty made by
// util-linux script) draws a progress bar; a warning logged in the middle
// of the sync (a pool file missing upstream, tolerated) appears on a line
// of its own, with the bar drawn before it and redrawn after it, never in
// the middle of the bar's line. The same sync with stderr not a terminal
// draws nothing.
func TestProgressOnTerminal(t *testing.T) {
	if _, err := exec.LookPath("script"); err != nil {
		t.Skip("script (util-linux) not installed")
	}
	bin := buildGatehouse(t)
	dir := t.TempDir()
	// Packages are fetched in index order one at a time (concurrency 1):
	// "aaa-missing" first, answered 404, then four slow ones.
	pkgs := []apttest.Package{{Name: "aaa-missing", Version: "1.0", Arch: "amd64"}}
	for i := range 4 {
		pkgs = append(pkgs, apttest.Package{Name: fmt.Sprintf("pkg%d", i), Version: "1.0", Arch: "amd64", Size: 20000})
	}
	repo, err := apttest.Build(filepath.Join(dir, "up"), apttest.NewKey(t, "ed25519"), apttest.Suite{
		Name: "stable", Components: []string{"main"}, Architectures: []string{"amd64"},
		Packages: map[string][]apttest.Package{"main": pkgs},
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := apttest.Serve(t, repo.Dir)
	slow := func(d time.Duration) apttest.Fault { f := apttest.NoFault; f.Delay = d; return f }
	srv.SetFault("dists/stable/main/binary-amd64", slow(800*time.Millisecond)) // the bar is up before the pool phase
	srv.SetFault("pool", slow(700*time.Millisecond))
	missing := apttest.NoFault
	missing.Status = 404
	srv.SetFault(repo.PoolPath("aaa-missing", "1.0", "amd64"), missing)

	conf := filepath.Join(dir, "gh.toml")
	writeConf := func(state string) {
		os.WriteFile(conf, []byte(fmt.Sprintf("state_dir = %q\n[[mirror]]\nname = \"tty\"\nurl = %q\nsuites = [\"stable\"]\ncomponents = [\"main\"]\narchitectures = [\"amd64\"]\nkeyring = %q\nconcurrency = 1\ntolerate_missing = true\n",
			state, srv.URL, repo.KeyringPath)), 0o600)
	}
	writeConf(filepath.Join(dir, "state1"))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// script runs the command on a new pty; its stdout is what the
	// terminal showed, byte for byte.
	cmdline := fmt.Sprintf("stty cols 160 rows 40; exec %s --config %s mirror sync tty", bin, conf)
	out, err := exec.CommandContext(ctx, "script", "-qefc", cmdline, "/dev/null").Output()
	if err != nil {
		t.Fatalf("sync on a pty: %v\n%q", err, out)
	}
	raw := string(out)
	const warn = "level=WARN msg=\"pool file missing upstream; tolerated by configuration\""
	i := strings.Index(raw, warn)
	if i < 0 {
		t.Fatalf("no warning in the terminal output:\n%q", raw)
	}
	// The warning's line: from the last newline before it, only control
	// sequences (moving up over the bar and erasing it) and the record's
	// own time= may precede it.
	lineStart := strings.LastIndexByte(raw[:i], '\n') + 1
	if before := ansi.ReplaceAllString(raw[lineStart:i], ""); !regexp.MustCompile(`^time=\S+ $`).MatchString(before) {
		t.Errorf("the warning was written into another line; that line's text before it: %q\n(full output %q)", before, raw)
	}
	barText := regexp.MustCompile(`tty (indexes|pool|release)`)
	if !barText.MatchString(ansi.ReplaceAllString(raw[:lineStart], "")) {
		t.Errorf("no progress bar was drawn before the warning:\n%q", raw[:lineStart])
	}
	lineEnd := i + strings.IndexByte(raw[i:], '\n')
	if lineEnd < i {
		t.Fatalf("the warning's line does not end:\n%q", raw[i:])
	}
	after := ansi.ReplaceAllString(raw[lineEnd:], "")
	if !regexp.MustCompile(`tty pool\s.*files`).MatchString(after) {
		t.Errorf("the bar was not redrawn after the warning:\n%q", raw[lineEnd:])
	}
	if !strings.Contains(raw, "tty: published") {
		t.Errorf("no sync report:\n%q", raw)
	}

	// Not a terminal (cron, journald): no bar, no control sequences.
	writeConf(filepath.Join(dir, "state2"))
	srv.ClearFaults()
	srv.SetFault(repo.PoolPath("aaa-missing", "1.0", "amd64"), missing)
	var stdout, stderr bytes.Buffer
	c := exec.CommandContext(ctx, bin, "--config", conf, "mirror", "sync", "tty")
	c.Stdout, c.Stderr = &stdout, &stderr
	if err := c.Run(); err != nil {
		t.Fatalf("sync without a terminal: %v\n%s", err, stderr.String())
	}
	if strings.ContainsAny(stderr.String(), "\x1b\r") || strings.Contains(stderr.String(), "tty pool") {
		t.Errorf("progress display drawn although stderr is not a terminal:\n%q", stderr.String())
	}
	if !strings.Contains(stderr.String(), warn) {
		t.Errorf("the warning is missing without a terminal:\n%s", stderr.String())
	}
}
