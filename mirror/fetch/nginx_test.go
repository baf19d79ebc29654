package fetch

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"gatehouse/apt/apttest"
)

// startNginx serves dir with a real nginx on a loopback port and returns
// its base URL. It skips only when nginx is not installed.
func startNginx(t testing.TB, dir string) string {
	t.Helper()
	base, _ := apttest.NginxRoot(t, dir, "")
	return base
}

// TestAgainstNginx runs Get, Open and conditional GetBytes against a real
// web server: verified downloads over one kept-alive connection, 404 without
// retry, a tampered file refused, and a real 304 for an unchanged InRelease.
func TestAgainstNginx(t *testing.T) {
	dir := t.TempDir()
	files := map[string][]byte{}
	for i := range 20 {
		b := randBytes(t, 1000+i*997)
		name := "pool/main/p/pkg" + strconv.Itoa(i) + "_1.0+b1_amd64.deb"
		os.MkdirAll(filepath.Join(dir, filepath.Dir(name)), 0o755)
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
		files[name] = b
	}
	inrel := []byte("Origin: Example\nSuite: stable\nDate: Mon, 02 Jan 2006 15:04:05 UTC\n")
	os.MkdirAll(filepath.Join(dir, "dists/stable"), 0o755)
	if err := os.WriteFile(filepath.Join(dir, "dists/stable/InRelease"), inrel, 0o644); err != nil {
		t.Fatal(err)
	}
	base := startNginx(t, dir)
	c := New(Config{Concurrency: 2, RetryWait: time.Millisecond}, nil)
	out := t.TempDir()
	for name, b := range files {
		dest := filepath.Join(out, name)
		if _, err := c.Get(context.Background(), base+"/"+name, toPath(dest), wantOf(b)); err != nil {
			t.Fatal(err)
		}
		if got, _ := os.ReadFile(dest); !bytes.Equal(got, b) {
			t.Fatalf("%s differs", name)
		}
	}
	if st := c.Stats(); st.Files != 20 || st.Retries != 0 {
		t.Errorf("stats %+v", st)
	}
	// Keep-alive against a real server: count our dials.
	var dials atomic.Int64
	c2 := New(Config{RetryWait: time.Millisecond}, nil)
	tr := c2.hc.Transport.(*http.Transport)
	d := tr.DialContext
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		return d(ctx, network, addr)
	}
	for name, b := range files {
		if _, err := c2.Get(context.Background(), base+"/"+name, toPath(filepath.Join(out, "again", name)), wantOf(b)); err != nil {
			t.Fatal(err)
		}
	}
	if n := dials.Load(); n != 1 {
		t.Errorf("20 sequential GETs from nginx dialed %d times, want 1", n)
	}

	if _, err := c.Get(context.Background(), base+"/pool/missing.deb", toPath(filepath.Join(out, "m")), wantOf(nil)); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing file: %v", err)
	}
	// Tamper with one file on the server: refused.
	name := "pool/main/p/pkg3_1.0+b1_amd64.deb"
	bad := bytes.Clone(files[name])
	bad[100] ^= 1
	os.WriteFile(filepath.Join(dir, name), bad, 0o644)
	var me *MismatchError
	if _, err := c.Get(context.Background(), base+"/"+name, toPath(filepath.Join(out, "tampered")), wantOf(files[name])); !errors.As(err, &me) {
		t.Errorf("tampered file: %v", err)
	}
	rc, err := c.Open(context.Background(), base+"/"+name, wantOf(files[name]))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bytes.NewBuffer(nil).ReadFrom(rc); !errors.As(err, &me) {
		t.Errorf("Open of tampered file: %v", err)
	}
	rc.Close()

	body, v, nm, err := c.GetBytes(context.Background(), base+"/dists/stable/InRelease", 1<<20, Validators{})
	if err != nil || nm || !bytes.Equal(body, inrel) || v.ETag == "" || v.LastModified == "" {
		t.Fatalf("GetBytes: %q %+v %v %v", body, v, nm, err)
	}
	_, _, nm, err = c.GetBytes(context.Background(), base+"/dists/stable/InRelease", 1<<20, v)
	if err != nil || !nm {
		t.Errorf("conditional GetBytes against nginx: notModified=%v err=%v, want 304", nm, err)
	}
	// Changed upstream: a new body and new validators.
	later := time.Now().Add(time.Hour)
	os.WriteFile(filepath.Join(dir, "dists/stable/InRelease"), append(inrel, "X: 1\n"...), 0o644)
	os.Chtimes(filepath.Join(dir, "dists/stable/InRelease"), later, later)
	body, v2, nm, err := c.GetBytes(context.Background(), base+"/dists/stable/InRelease", 1<<20, v)
	if err != nil || nm || !bytes.HasSuffix(body, []byte("X: 1\n")) || v2 == v {
		t.Errorf("changed InRelease: %q %+v %v %v", body, v2, nm, err)
	}
}
