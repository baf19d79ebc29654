package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// commandPaths lists every visible command of the real tree as the arguments
// that name it ("mirror", "sync"), so the tests below cover commands added
// later without being edited.
func commandPaths(t *testing.T) (groups [][]string, all [][]string) {
	t.Helper()
	root := newRootCmd(&globals{stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}})
	var walk func(c *cobra.Command, path []string)
	walk = func(c *cobra.Command, path []string) {
		if c.HasParent() {
			all = append(all, path)
		}
		if c.HasAvailableSubCommands() {
			groups = append(groups, path)
		}
		for _, sub := range c.Commands() {
			if sub.IsAvailableCommand() {
				walk(sub, append(append([]string(nil), path...), sub.Name()))
			}
		}
	}
	walk(root, nil)
	if len(groups) < 5 || len(all) < 20 {
		t.Fatalf("command tree too small (%d groups, %d commands): the walk is broken", len(groups), len(all))
	}
	return groups, all
}

// TestUnknownSubcommandIsUsageError: a typo at any level of the tree (a cron
// line `gatehouse mirror frobnicate`) must exit 2 and say so, never print a
// help text and exit 0.
func TestUnknownSubcommandIsUsageError(t *testing.T) {
	groups, _ := commandPaths(t)
	for _, g := range groups {
		args := append(append([]string(nil), g...), "frobnicate")
		var out, errb bytes.Buffer
		code := run(context.Background(), args, &out, &errb)
		want := `unknown command "frobnicate" for "` + strings.Join(append([]string{"gatehouse"}, g...), " ") + `"`
		if code != exitUsage || !strings.Contains(errb.String(), want) {
			t.Errorf("gatehouse %s: exit %d, stderr %q; want exit 2 and %q", strings.Join(args, " "), code, errb.String(), want)
		}
		if out.Len() != 0 {
			t.Errorf("gatehouse %s printed to stdout (help?): %q", strings.Join(args, " "), out.String())
		}
	}
}

// TestMisspelledSubcommandSuggests: each visible command, misspelled by one
// letter, gets cobra's "Did you mean this?" naming it, at every level.
func TestMisspelledSubcommandSuggests(t *testing.T) {
	_, all := commandPaths(t)
	for _, p := range all {
		name := p[len(p)-1]
		typo := name[1:2] + name[:1] + name[2:] // swap the first two letters
		args := append(append([]string(nil), p[:len(p)-1]...), typo)
		var out, errb bytes.Buffer
		code := run(context.Background(), args, &out, &errb)
		if code != exitUsage || !strings.Contains(errb.String(), "Did you mean this?\n") || !strings.Contains(errb.String(), "\t"+name+"\n") {
			t.Errorf("gatehouse %s: exit %d, stderr %q; want exit 2 suggesting %q", strings.Join(args, " "), code, errb.String(), name)
		}
	}
}

func TestHelpTopics(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		out  string // in stdout (exit 0) or stderr (exit 2)
	}{
		{[]string{"mirror"}, exitOK, "gatehouse mirror [command]"},
		{[]string{"mirror", "help", "sync"}, exitOK, "gatehouse mirror sync [NAME...]"},
		{[]string{"help", "mirror", "sync"}, exitOK, "gatehouse mirror sync [NAME...]"},
		{[]string{"help", "frobnicate"}, exitUsage, `unknown command "frobnicate" for "gatehouse"`},
		{[]string{"help", "mirror", "snyc"}, exitUsage, "Did you mean this?\n\tsync\n"},
		{[]string{"mirror", "help", "snyc"}, exitUsage, "Did you mean this?\n\tsync\n"},
	} {
		var out, errb bytes.Buffer
		code := run(context.Background(), tc.args, &out, &errb)
		got := out.String()
		if tc.code != exitOK {
			got = errb.String()
		}
		if code != tc.code || !strings.Contains(got, tc.out) {
			t.Errorf("gatehouse %s: exit %d, stdout %q, stderr %q; want exit %d and %q", strings.Join(tc.args, " "), code, out.String(), errb.String(), tc.code, tc.out)
		}
	}
}

// TestVersion: `version` and `--version` print the same line, the stamped
// version when the build set one and an honest "devel" otherwise.
func TestVersion(t *testing.T) {
	for _, stamped := range []string{"", "1.2.3-test"} {
		version = stamped
		want := "gatehouse devel"
		if stamped != "" {
			want = "gatehouse " + stamped + " (go"
		}
		var lines []string
		for _, args := range [][]string{{"version"}, {"--version"}} {
			var out, errb bytes.Buffer
			if code := run(context.Background(), args, &out, &errb); code != 0 {
				t.Fatalf("gatehouse %s: exit %d: %s", args[0], code, errb.String())
			}
			if !strings.HasPrefix(out.String(), want) {
				t.Errorf("gatehouse %s (stamped %q) = %q, want prefix %q", args[0], stamped, out.String(), want)
			}
			lines = append(lines, out.String())
		}
		if lines[0] != lines[1] {
			t.Errorf("version and --version differ: %q vs %q", lines[0], lines[1])
		}
	}
	version = ""
}

// TestGenDocs: the hidden gen-docs command writes a man page per visible
// command and the three completions; with SOURCE_DATE_EPOCH set, two runs
// write identical bytes (the package must build reproducibly).
func TestGenDocs(t *testing.T) {
	t.Setenv("SOURCE_DATE_EPOCH", "1780000000") // 2026-05-28
	var dirs []string
	for i := 0; i < 2; i++ {
		dir := t.TempDir()
		var out, errb bytes.Buffer
		if code := run(context.Background(), []string{"gen-docs", dir}, &out, &errb); code != 0 {
			t.Fatalf("gen-docs: exit %d: %s", code, errb.String())
		}
		dirs = append(dirs, dir)
	}
	_, all := commandPaths(t)
	want := []string{"man/gatehouse.1", "completions/bash/gatehouse", "completions/zsh/_gatehouse", "completions/fish/gatehouse.fish"}
	for _, p := range all {
		want = append(want, "man/gatehouse-"+strings.Join(p, "-")+".1")
	}
	for _, f := range want {
		a, err := os.ReadFile(filepath.Join(dirs[0], f))
		if err != nil {
			t.Errorf("gen-docs did not write %s: %v", f, err)
			continue
		}
		b, _ := os.ReadFile(filepath.Join(dirs[1], f))
		if !bytes.Equal(a, b) {
			t.Errorf("%s differs between two runs", f)
		}
	}
	page, _ := os.ReadFile(filepath.Join(dirs[0], "man", "gatehouse-mirror-sync.1"))
	if !bytes.Contains(page, []byte(`.TH "GATEHOUSE" "1" "May 2026"`)) || !bytes.Contains(page, []byte("gatehouse-mirror-sync")) {
		t.Errorf("gatehouse-mirror-sync.1 lacks its header or name:\n%.400s", page)
	}
	if got, _ := filepath.Glob(filepath.Join(dirs[0], "man", "*gen-docs*")); len(got) != 0 {
		t.Errorf("the hidden gen-docs command got a man page: %v", got)
	}
}

// TestCompletionListsSubcommands: making the groups runnable (so that they
// can refuse unknown subcommands) must not cost shell completion its
// subcommand names.
func TestCompletionListsSubcommands(t *testing.T) {
	for _, tc := range []struct{ args []string }{
		{[]string{"__complete", "mirror", ""}},
		{[]string{"__complete", "bastion", ""}},
		{[]string{"__complete", "help", "mir"}},
	} {
		var out, errb bytes.Buffer
		if code := run(context.Background(), tc.args, &out, &errb); code != 0 {
			t.Fatalf("gatehouse %s: exit %d: %s", strings.Join(tc.args, " "), code, errb.String())
		}
		want := map[string]string{"mirror": "sync\t", "bastion": "check-cert\t", "help": "mirror\t"}[tc.args[1]]
		if !strings.Contains(out.String(), want) {
			t.Errorf("gatehouse %s = %q, want %q among the candidates", strings.Join(tc.args, " "), out.String(), want)
		}
	}
}
