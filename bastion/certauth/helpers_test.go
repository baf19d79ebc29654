package certauth

import (
	"errors"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// fixture builds keys, certificates and KRLs with the real ssh-keygen in a
// per-test temporary directory.
type fixture struct {
	t   testing.TB
	dir string
	n   int
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	if _, err := exec.LookPath("ssh-keygen"); err != nil {
		t.Skip("ssh-keygen not installed (Debian package openssh-client)")
	}
	return &fixture{t: t, dir: t.TempDir()}
}

// keygen runs ssh-keygen and fails the test on a non-zero exit.
func (f *fixture) keygen(args ...string) string {
	f.t.Helper()
	out, err := f.keygenErr(args...)
	if err != nil {
		f.t.Fatalf("ssh-keygen %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func (f *fixture) keygenErr(args ...string) (string, error) {
	cmd := exec.Command("ssh-keygen", args...)
	cmd.Dir = f.dir
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// key generates a key pair and returns the private key path (".pub" added
// for the public key).
func (f *fixture) key(name, typ string, bits int) string {
	f.t.Helper()
	p := filepath.Join(f.dir, name)
	args := []string{"-q", "-t", typ, "-N", "", "-C", name, "-f", p}
	if bits > 0 {
		args = append(args, "-b", strconv.Itoa(bits))
	}
	f.keygen(args...)
	return p
}

// cert signs a copy of userKey's public key with ca and returns the path of
// the certificate. args are the ssh-keygen signing options (-I, -n, -V, ...).
func (f *fixture) cert(ca, userKey string, args ...string) string {
	f.t.Helper()
	f.n++
	pub := filepath.Join(f.dir, "c"+strconv.Itoa(f.n)+".pub")
	data, err := os.ReadFile(userKey + ".pub")
	if err != nil {
		f.t.Fatal(err)
	}
	if err := os.WriteFile(pub, data, 0o644); err != nil {
		f.t.Fatal(err)
	}
	f.keygen(append(append([]string{"-q", "-s", ca}, args...), pub)...)
	return strings.TrimSuffix(pub, ".pub") + "-cert.pub"
}

func (f *fixture) write(name, content string) string {
	f.t.Helper()
	p := filepath.Join(f.dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		f.t.Fatal(err)
	}
	return p
}

func (f *fixture) read(path string) string {
	f.t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		f.t.Fatal(err)
	}
	return string(data)
}

// loadKey parses a public key or certificate file.
func loadKey(t testing.TB, path string) ssh.PublicKey {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	k, _, _, _, err := ssh.ParseAuthorizedKey(data)
	if err != nil {
		t.Fatalf("parse %s: %v", path, err)
	}
	return k
}

func loadCert(t testing.TB, path string) *ssh.Certificate {
	t.Helper()
	c, ok := loadKey(t, path).(*ssh.Certificate)
	if !ok {
		t.Fatalf("%s is not a certificate", path)
	}
	return c
}

// clock is a settable test clock.
type clock struct{ ns atomic.Int64 }

func newClock(t time.Time) *clock { c := &clock{}; c.set(t); return c }
func (c *clock) set(t time.Time)  { c.ns.Store(t.UnixNano()) }
func (c *clock) now() time.Time   { return time.Unix(0, c.ns.Load()) }

var (
	localhost = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}
	tenNet    = &net.TCPAddr{IP: net.IPv4(10, 1, 2, 3), Port: 40000}
)

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// reasonOf returns the Refusal reason of err, or "" for nil, failing the
// test on any other error type.
func reasonOf(t testing.TB, err error) string {
	t.Helper()
	if err == nil {
		return ""
	}
	var r *Refusal
	if !errors.As(err, &r) {
		t.Fatalf("error %v (%T) is not a *Refusal", err, err)
	}
	return r.Reason
}
