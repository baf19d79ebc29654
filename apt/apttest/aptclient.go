package apttest

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Apt runs the real apt-get with a private configuration: its own sources
// list, state, cache and log directories in a temp dir, an empty dpkg
// status (so install --download-only fetches the whole dependency closure)
// and none of the machine's apt configuration, keys or sources. Nothing
// outside its directory changes.
type Apt struct {
	// Dir holds the private configuration and state.
	Dir string
	// Config is the apt configuration file passed as APT_CONFIG and -c.
	Config string
	// Options are extra "-o Key=Value" arguments for every run, e.g.
	// "Acquire::Check-Valid-Until=false".
	Options []string
	// Timeout bounds each apt-get run; zero means two minutes.
	Timeout time.Duration

	t testing.TB
}

// AptClient returns an Apt for architecture amd64 with the given
// sources.list lines (one or more, newline-separated), e.g.
// "deb [signed-by=/tmp/k.gpg] http://127.0.0.1:PORT/ stable main". It skips
// the test when apt-get is not installed.
func AptClient(t testing.TB, sourcesLines string) *Apt {
	t.Helper()
	return AptClientArch(t, "amd64", sourcesLines)
}

// AptClientArch is AptClient for another native architecture.
func AptClientArch(t testing.TB, arch, sourcesLines string) *Apt {
	t.Helper()
	if _, err := exec.LookPath("apt-get"); err != nil {
		t.Skip("apt-get not installed (apt package)")
	}
	d := t.TempDir()
	conf, err := WriteAptConfig(d, arch, sourcesLines)
	if err != nil {
		t.Fatalf("apttest: apt client: %v", err)
	}
	a := &Apt{Dir: d, Config: conf, t: t}
	return a
}

// Run runs apt-get with the private configuration and args, returning
// its combined output and an error naming the exit status.
func (a *Apt) Run(args ...string) (string, error) {
	return a.RunIn(a.Dir, args...)
}

// RunIn is Run with dir as the working directory (apt-get source and
// download write there).
func (a *Apt) RunIn(dir string, args ...string) (string, error) {
	timeout := a.Timeout
	if timeout == 0 {
		timeout = 2 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	full := []string{"-c", a.Config}
	for _, o := range a.Options {
		full = append(full, "-o", o)
	}
	full = append(full, args...)
	cmd := exec.CommandContext(ctx, "apt-get", full...)
	cmd.Dir = dir
	// A clean environment: no proxies, no user apt config, C messages
	// so tests can match them.
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C", "APT_CONFIG=" + a.Config, "DEBIAN_FRONTEND=noninteractive", "HOME=" + a.Dir}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		err = fmt.Errorf("apt-get %s: %w", strings.Join(args, " "), err)
	}
	return out.String(), err
}

// Update runs apt-get update with --error-on=any, so that any index or
// signature it could not use is an error, not a warning.
func (a *Apt) Update() (string, error) {
	return a.Run("update", "--error-on=any")
}

// InstallDownloadOnly runs apt-get install --download-only for pkgs (with
// apt's default of installing Recommends); the
// fetched .debs land in ArchivesDir.
func (a *Apt) InstallDownloadOnly(pkgs ...string) (string, error) {
	return a.Run(append([]string{"install", "--download-only"}, pkgs...)...)
}

// ArchivesDir is where InstallDownloadOnly leaves the .deb files.
func (a *Apt) ArchivesDir() string { return filepath.Join(a.Dir, "cache/archives") }

// ListsDir is where Update leaves the fetched indexes.
func (a *Apt) ListsDir() string { return filepath.Join(a.Dir, "state/lists") }
