package main

import (
	"bytes"
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestDemo runs the README's first command end to end: a signed sample
// upstream is synced, served and fetched by the real apt-get; the real ssh
// goes through the bastion with a certificate; tampering and a plain key are
// refused. Every check line must be a ✓.
func TestDemo(t *testing.T) {
	for _, tool := range []string{"dpkg-deb", "apt-get", "ssh"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out, errb bytes.Buffer
	code := run(ctx, []string{"demo", "--exit", "--dir", t.TempDir()}, &out, &errb)
	t.Log(out.String())
	if code != 0 {
		t.Fatalf("demo exit %d: %s", code, errb.String())
	}
	checks := strings.Count(out.String(), "  ✓  ")
	if checks != 6 || strings.Contains(out.String(), "✗") {
		t.Fatalf("want 6 passing checks and no failure, got %d:\n%s", checks, out.String())
	}
	for _, want := range []string{"synced and verified: published", "gatehouse-hello", "ssh -F "} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %q", want)
		}
	}
}
