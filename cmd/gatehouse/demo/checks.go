package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"gatehouse/cmd/gatehouse/internal/sshkeys"
	"gatehouse/mirror"
)

// ServeLoopback serves h on a fresh port of 127.0.0.1 until stop is
// called, and returns its base URL ("http://127.0.0.1:PORT"). stop shuts
// the server down gracefully, waiting at most 5 s, even after ctx is done.
func ServeLoopback(ctx context.Context, h http.Handler) (url string, stop func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() { srv.Serve(ln); close(done) }()
	return "http://" + ln.Addr().String(), func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
		<-done
	}, nil
}

// Check runs one real client command and prints ✓ or ✗ with its output
// on failure. A missing tool is reported, not failed.
func Check(ctx context.Context, w io.Writer, what, name string, args ...string) bool {
	if _, err := exec.LookPath(name); err != nil {
		fmt.Fprintf(w, "  -  %s: skipped (%s not installed)\n", what, name)
		return true
	}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(cctx, name, args...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	b, err := cmd.CombinedOutput()
	if err != nil {
		fmt.Fprintf(w, "  ✗  %s: %v\n%s\n", what, err, Indent(string(b)))
		return false
	}
	last := strings.TrimSpace(string(b))
	if i := strings.LastIndexByte(last, '\n'); i >= 0 {
		last = last[i+1:]
	}
	fmt.Fprintf(w, "  ✓  %s  (%s)\n", what, last)
	return true
}

// Indent indents command output (or an error) under a check line.
func Indent(s string) string {
	return "     " + strings.ReplaceAll(strings.TrimSpace(s), "\n", "\n     ")
}

// Refusals shows the checks working: a package injected upstream without
// re-signing is refused and the published mirror stays as it was; a plain SSH
// key (no certificate) is refused by the bastion.
func Refusals(ctx context.Context, w io.Writer, log *slog.Logger, upstream, stateDir string, mcfg mirror.Config, bdir, bastionAddr string) bool {
	ok := true
	// An attacker on the path edits the upstream's signed Release (here: adds
	// a line) without the upstream's key.
	inrel := filepath.Join(upstream, "dists", "stable", "InRelease")
	orig, err := os.ReadFile(inrel)
	if err != nil {
		fmt.Fprintf(w, "  ✗  tamper check: %v\n", err)
		return false
	}
	tampered := strings.Replace(string(orig), "\nLabel: ", "\nLabel: Evil ", 1)
	before, _ := os.Stat(inrel)
	os.WriteFile(inrel, []byte(tampered), 0o644)
	os.Chtimes(inrel, time.Now(), before.ModTime().Add(2*time.Second))
	rep, err := mirror.Sync(ctx, stateDir, mcfg, mirror.Options{Log: log, Now: time.Now})
	os.WriteFile(inrel, orig, 0o644)
	os.Chtimes(inrel, time.Now(), before.ModTime().Add(4*time.Second))
	switch {
	case errors.Is(err, mirror.ErrRefused):
		fmt.Fprintf(w, "  ✓  an upstream Release edited without the upstream's key is refused\n     (%s)\n", firstLine(err.Error()))
	default:
		fmt.Fprintf(w, "  ✗  tampered upstream was not refused: report %+v, err %v\n", rep, err)
		ok = false
	}
	if _, err := exec.LookPath("ssh"); err == nil {
		if _, _, err := sshkeys.Ensure(filepath.Join(bdir, "intruder"), "intruder@demo"); err != nil {
			fmt.Fprintf(w, "  ✗  %v\n", err)
			return false
		}
		cctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		host, port, _ := net.SplitHostPort(bastionAddr)
		b, err := exec.CommandContext(cctx, "ssh", "-F", "/dev/null", "-i", filepath.Join(bdir, "intruder"),
			"-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "UserKnownHostsFile="+filepath.Join(bdir, "known_hosts"),
			"-o", "StrictHostKeyChecking=yes", "-p", port, "admin@"+host, "true").CombinedOutput()
		if err != nil && strings.Contains(string(b), "Permission denied") {
			fmt.Fprintf(w, "  ✓  a plain SSH key without a certificate is refused by the bastion\n")
		} else {
			fmt.Fprintf(w, "  ✗  a plain key was not refused: %v\n%s\n", err, Indent(string(b)))
			ok = false
		}
	}
	return ok
}

// firstLine is s up to its first newline.
func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// CheckStatusPage checks that the status page shows the demo mirror and
// links the replay of the recording id, with a verified signature.
func CheckStatusPage(w io.Writer, base, id string) bool {
	body, err := httpGetBody(base + "/")
	want := []string{`id="m-demo"`, "/recordings/" + id + "/", "signature ok"}
	for _, s := range want {
		if err == nil && !strings.Contains(body, s) {
			err = fmt.Errorf("the page has no %q", s)
		}
	}
	if err != nil {
		fmt.Fprintf(w, "  ✗  status page %s/: %v\n", base, err)
		return false
	}
	fmt.Fprintf(w, "  ✓  status page %s/ lists the mirror and the recording, with a replay link\n", base)
	return true
}

// httpGetBody returns the body of a successful GET of url.
func httpGetBody(url string) (string, error) {
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("%s: %s", url, resp.Status)
	}
	return string(b), err
}
