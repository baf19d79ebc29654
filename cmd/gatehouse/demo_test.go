package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"gatehouse/bastion/record"
)

// TestDemo runs the README's first command end to end: a signed sample
// upstream is synced, served and fetched by the real apt-get; the real ssh
// goes through the bastion with a certificate, both as a plain jump and
// through the recording proxy, whose recording verifies; tampering and a
// plain key are refused. Every check line must be a ✓. Then the printed
// recordings commands and the ssh-keygen one-liner are run exactly as
// printed.
func TestDemo(t *testing.T) {
	for _, tool := range []string{"dpkg-deb", "apt-get", "ssh", "ssh-keygen"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out, errb bytes.Buffer
	dir := t.TempDir()
	code := run(ctx, []string{"demo", "--exit", "--dir", dir}, &out, &errb)
	t.Log(out.String())
	if code != 0 {
		t.Fatalf("demo exit %d: %s", code, errb.String())
	}
	text := out.String()
	checks := strings.Count(text, "  ✓  ")
	if checks != 9 || strings.Contains(text, "✗") || strings.Contains(text, "skipped") {
		t.Fatalf("want 9 passing checks and no failure or skip, got %d:\n%s", checks, text)
	}
	for _, want := range []string{"synced and verified: published", "gatehouse-hello", "ssh -F ",
		"--exit: the demo has stopped; " + dir + " is kept. The recordings and audit-log commands above still work",
		"recording proxy, as login demo  (hello from a recorded session)", "demo-recorded 'echo hello'"} {
		if !strings.Contains(text, want) {
			t.Errorf("demo output lacks %q", want)
		}
	}

	// The recording the check verified exists, and stock OpenSSH accepts
	// its manifest signature with the demo's recording key.
	m := regexp.MustCompile(`✓  recording: (\S+) \(signature ok\)`).FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("no verified recording in the output")
	}
	recDir := m[1]
	if rel, err := filepath.Rel(dir, recDir); err != nil || strings.HasPrefix(rel, "..") {
		t.Fatalf("recording %s is outside the demo directory %s", recDir, dir)
	}
	for _, f := range []string{record.MetaFile, record.ManifestName, record.SignatureName, "ch00.cast", "ch00.ttyrec"} {
		if _, err := os.Stat(filepath.Join(recDir, f)); err != nil {
			t.Errorf("recording lacks %s: %v", f, err)
		}
	}
	pubData, err := os.ReadFile(filepath.Join(dir, "bastion", "recording_key.pub"))
	if err != nil {
		t.Fatal(err)
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey(pubData)
	if err != nil {
		t.Fatal(err)
	}
	allowed := filepath.Join(t.TempDir(), "allowed_signers")
	if err := os.WriteFile(allowed, []byte(record.AllowedSigners(pub)), 0o644); err != nil {
		t.Fatal(err)
	}
	manifest, err := os.Open(filepath.Join(recDir, record.ManifestName))
	if err != nil {
		t.Fatal(err)
	}
	defer manifest.Close()
	kg := exec.CommandContext(ctx, "ssh-keygen", "-Y", "verify", "-f", allowed, "-I", "gatehouse",
		"-n", record.RecordingNamespace, "-s", filepath.Join(recDir, record.SignatureName))
	kg.Stdin = manifest
	if b, err := kg.CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen -Y verify of the demo's recording: %v\n%s", err, b)
	}
	ttyrec, err := os.ReadFile(filepath.Join(recDir, "ch00.ttyrec"))
	if err != nil || !bytes.Contains(ttyrec, []byte("hello from a recorded session")) {
		t.Errorf("ttyrec lacks the session's output (%v):\n%q", err, ttyrec)
	}

	// Every printed recordings command works as printed.
	id := filepath.Base(recDir)
	var ran int
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "go run ./cmd/gatehouse recordings "):
			args := strings.Fields(strings.TrimPrefix(line, "go run ./cmd/gatehouse "))
			var o, e bytes.Buffer
			if code := run(ctx, args, &o, &e); code != 0 {
				t.Errorf("%s: exit %d\n%s%s", line, code, o.String(), e.String())
				continue
			}
			want := id
			switch args[1] {
			case "play":
				want = "hello from a recorded session"
			case "verify":
				want = ": OK"
			}
			if !strings.Contains(o.String(), want) {
				t.Errorf("%s: output lacks %q:\n%s", line, want, o.String())
			}
			ran++
		case strings.HasPrefix(line, "ssh-keygen -Y verify "):
			if !strings.Contains(line, id) {
				t.Errorf("the ssh-keygen line does not name the recording %s: %s", id, line)
			}
			b, err := exec.CommandContext(ctx, "sh", "-c", line).CombinedOutput()
			if err != nil || !strings.Contains(string(b), "Good \"gatehouse-recording\" signature") {
				t.Errorf("%s: %v\n%s", line, err, b)
			}
			ran++
		}
	}
	if ran != 5 {
		t.Errorf("ran %d printed recordings/ssh-keygen commands, want 5 (list, play, verify --all, verify --audit, ssh-keygen)", ran)
	}
}

// TestDemoExitSaysDirectoryRemoved: `demo --exit` without --dir removes
// its temporary directory, and says so instead of leaving printed commands
// that point into it; --keep keeps it.
func TestDemoExitSaysDirectoryRemoved(t *testing.T) {
	for _, tool := range []string{"dpkg-deb", "apt-get", "ssh", "ssh-keygen"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out, errb bytes.Buffer
	if code := run(ctx, []string{"demo", "--exit"}, &out, &errb); code != 0 {
		t.Fatalf("demo exit %d: %s", code, errb.String())
	}
	m := regexp.MustCompile(`(?m)^gatehouse demo in (\S+) `).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("no directory in the output:\n%s", out.String())
	}
	want := "--exit: the demo has stopped and removed " + m[1] + ", so the commands above no longer work;\nrun 'gatehouse demo' without --exit to try them, or add --keep to keep the files.\n"
	if !strings.Contains(out.String(), want) {
		t.Fatalf("output lacks %q:\n%s", want, out.String())
	}
	if _, err := os.Stat(m[1]); !os.IsNotExist(err) {
		t.Fatalf("%s still exists: %v", m[1], err)
	}
}
