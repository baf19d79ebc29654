package fetch

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// server is a loopback HTTP server that counts new connections and requests.
type server struct {
	*httptest.Server
	newConns atomic.Int64
	hits     sync.Map // path -> *atomic.Int64
}

func newServer(t *testing.T, h http.HandlerFunc) *server {
	t.Helper()
	s := &server{}
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := s.hits.LoadOrStore(r.URL.Path, new(atomic.Int64))
		n.(*atomic.Int64).Add(1)
		h(w, r)
	}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.Listener = ln
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			s.newConns.Add(1)
		}
	}
	s.Start()
	t.Cleanup(s.Close)
	return s
}

func (s *server) count(path string) int64 {
	n, ok := s.hits.Load(path)
	if !ok {
		return 0
	}
	return n.(*atomic.Int64).Load()
}

func randBytes(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func wantOf(b []byte) Want {
	h := sha256.Sum256(b)
	return Want{Size: int64(len(b)), SHA256: hex.EncodeToString(h[:])}
}

func testClient(cfg Config) *Client {
	if cfg.RetryWait == 0 {
		cfg.RetryWait = time.Millisecond
	}
	return New(cfg, nil)
}

// dirEntries lists names in dir, so tests can prove no temp file is left.
func dirEntries(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

func serveBytes(b []byte) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		w.Write(b)
	}
}

func TestGetGood(t *testing.T) {
	body := randBytes(t, 300<<10)
	srv := newServer(t, serveBytes(body))
	c := testClient(Config{})
	dir := t.TempDir()
	dest := filepath.Join(dir, "sub", "dir", "f.deb")
	n, err := c.Get(context.Background(), srv.URL+"/f.deb", toPath(dest), wantOf(body))
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(len(body)) {
		t.Errorf("n = %d, want %d", n, len(body))
	}
	got, err := os.ReadFile(dest)
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("dest content differs (err %v)", err)
	}
	if names := dirEntries(t, filepath.Dir(dest)); len(names) != 1 {
		t.Errorf("directory holds %v, want only f.deb", names)
	}
	if fi, err := os.Stat(dest); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("dest mode %v, want 0644 so a server under another user can read it", fi.Mode())
	}
	st := c.Stats()
	if st.Files != 1 || st.Bytes != int64(len(body)) || st.Requests != 1 || st.Retries != 0 {
		t.Errorf("stats = %+v", st)
	}
}

func TestGetSHA512Only(t *testing.T) {
	body := randBytes(t, 1000)
	srv := newServer(t, serveBytes(body))
	h := sha512.Sum512(body)
	want := Want{Size: -1, SHA512: strings.ToUpper(hex.EncodeToString(h[:]))}
	dest := filepath.Join(t.TempDir(), "f")
	if _, err := testClient(Config{}).Get(context.Background(), srv.URL+"/f", toPath(dest), want); err != nil {
		t.Fatal(err)
	}
	h[0] ^= 1
	want.SHA512 = hex.EncodeToString(h[:])
	_, err := testClient(Config{}).Get(context.Background(), srv.URL+"/f", toPath(dest+"2"), want)
	var me *MismatchError
	if !errors.As(err, &me) || me.Field != "sha512" {
		t.Fatalf("err = %v, want sha512 mismatch", err)
	}
}

func TestGetRefusesWithoutHash(t *testing.T) {
	srv := newServer(t, serveBytes([]byte("x")))
	for _, w := range []Want{{Size: 1}, {Size: 1, SHA256: "abc"}, {Size: -2, SHA256: strings.Repeat("0", 64)}, {Size: 1, SHA512: strings.Repeat("g", 128)}} {
		_, err := testClient(Config{}).Get(context.Background(), srv.URL+"/x", toPath(filepath.Join(t.TempDir(), "x")), w)
		if err == nil {
			t.Errorf("Get with %+v succeeded", w)
		}
	}
	if n := srv.count("/x"); n != 0 {
		t.Errorf("server saw %d requests for invalid Wants", n)
	}
}

// TestGetWrongHash covers a flipped byte and a wrong expected hash: the error
// names URL, expected and actual digest, nothing is retried, an existing
// destination is untouched and no temporary file is left.
func TestGetWrongHash(t *testing.T) {
	good := randBytes(t, 64<<10)
	flipped := bytes.Clone(good)
	flipped[len(flipped)/2] ^= 0x01
	srv := newServer(t, serveBytes(flipped))
	dir := t.TempDir()
	dest := filepath.Join(dir, "f.deb")
	if err := os.WriteFile(dest, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := testClient(Config{})
	want := wantOf(good)
	_, err := c.Get(context.Background(), srv.URL+"/f.deb", toPath(dest), want)
	var me *MismatchError
	if !errors.As(err, &me) || me.Field != "sha256" {
		t.Fatalf("err = %v, want sha256 MismatchError", err)
	}
	gotHash := sha256.Sum256(flipped)
	for _, s := range []string{srv.URL + "/f.deb", want.SHA256, hex.EncodeToString(gotHash[:])} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not mention %q", err, s)
		}
	}
	if b, _ := os.ReadFile(dest); string(b) != "old" {
		t.Errorf("dest changed to %d bytes", len(b))
	}
	if names := dirEntries(t, dir); len(names) != 1 {
		t.Errorf("directory holds %v, want only f.deb", names)
	}
	if n := srv.count("/f.deb"); n != 1 {
		t.Errorf("hash mismatch fetched %d times, want 1 (not retried)", n)
	}
}

func TestGetTruncated(t *testing.T) {
	body := randBytes(t, 100<<10)
	cases := map[string]http.HandlerFunc{
		// Content-Length promises more than is sent.
		"content-length-lie": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
			w.Write(body[:len(body)/2])
		},
		// No Content-Length; the connection closes mid-body.
		"closed-mid-body": func(w http.ResponseWriter, r *http.Request) {
			conn, bw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				t.Error(err)
				return
			}
			defer conn.Close()
			bw.WriteString("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
			bw.Write(body[:len(body)/3])
			bw.Flush()
		},
	}
	for name, h := range cases {
		t.Run(name, func(t *testing.T) {
			srv := newServer(t, h)
			dir := t.TempDir()
			c := testClient(Config{Retries: 2})
			_, err := c.Get(context.Background(), srv.URL+"/f", toPath(filepath.Join(dir, "f")), wantOf(body))
			if err == nil {
				t.Fatal("truncated body accepted")
			}
			if !strings.Contains(err.Error(), srv.URL+"/f") {
				t.Errorf("error %q does not name the URL", err)
			}
			if n := srv.count("/f"); n != 3 {
				t.Errorf("fetched %d times, want 3 (truncation is retried)", n)
			}
			if names := dirEntries(t, dir); len(names) != 0 {
				t.Errorf("directory holds %v after failure", names)
			}
		})
	}

	// A truncation that heals on retry succeeds.
	var calls atomic.Int64
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		if calls.Add(1) == 1 {
			w.Write(body[:10])
			return
		}
		w.Write(body)
	})
	dest := filepath.Join(t.TempDir(), "f")
	c := testClient(Config{})
	if _, err := c.Get(context.Background(), srv.URL+"/f", toPath(dest), wantOf(body)); err != nil {
		t.Fatal(err)
	}
	if st := c.Stats(); st.Retries != 1 {
		t.Errorf("retries = %d, want 1", st.Retries)
	}
}

func TestGetOversized(t *testing.T) {
	body := randBytes(t, 4096)
	t.Run("content-length", func(t *testing.T) {
		srv := newServer(t, serveBytes(append(bytes.Clone(body), 'x')))
		_, err := testClient(Config{}).Get(context.Background(), srv.URL+"/f", toPath(filepath.Join(t.TempDir(), "f")), wantOf(body))
		var me *MismatchError
		if !errors.As(err, &me) || me.Field != "size" {
			t.Fatalf("err = %v, want size mismatch", err)
		}
		if n := srv.count("/f"); n != 1 {
			t.Errorf("oversized fetched %d times, want 1", n)
		}
	})
	t.Run("endless-chunked", func(t *testing.T) {
		srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
			chunk := make([]byte, 32<<10)
			for r.Context().Err() == nil {
				if _, err := w.Write(chunk); err != nil {
					return
				}
			}
		})
		dir := t.TempDir()
		c := testClient(Config{})
		_, err := c.Get(context.Background(), srv.URL+"/f", toPath(filepath.Join(dir, "f")), wantOf(body))
		var me *MismatchError
		if !errors.As(err, &me) || me.Field != "size" {
			t.Fatalf("err = %v, want size mismatch", err)
		}
		// Reading stops at Size+1 bytes; the meter counts at most one read
		// buffer beyond that.
		if b := c.Stats().Bytes; b > int64(len(body))+1 {
			t.Errorf("read %d bytes of an endless body for a %d-byte file", b, len(body))
		}
		if names := dirEntries(t, dir); len(names) != 0 {
			t.Errorf("directory holds %v after failure", names)
		}
	})
}

func TestGetNotFoundNotRetried(t *testing.T) {
	for _, code := range []int{404, 403, 410} {
		srv := newServer(t, func(w http.ResponseWriter, r *http.Request) { http.Error(w, "no", code) })
		_, err := testClient(Config{}).Get(context.Background(), srv.URL+"/f", toPath(filepath.Join(t.TempDir(), "f")), wantOf(nil))
		if !errors.Is(err, ErrNotFound) {
			t.Errorf("HTTP %d: err = %v, want ErrNotFound", code, err)
		}
		var se *StatusError
		if !errors.As(err, &se) || se.Status != code {
			t.Errorf("HTTP %d: err = %v, want StatusError", code, err)
		}
		if n := srv.count("/f"); n != 1 {
			t.Errorf("HTTP %d fetched %d times, want 1", code, n)
		}
	}
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) { http.Error(w, "no", 400) })
	_, err := testClient(Config{}).Get(context.Background(), srv.URL+"/f", toPath(filepath.Join(t.TempDir(), "f")), wantOf(nil))
	if err == nil || errors.Is(err, ErrNotFound) || srv.count("/f") != 1 {
		t.Errorf("HTTP 400: err = %v after %d requests, want one non-NotFound error", err, srv.count("/f"))
	}
}

func TestGetRetriesServerErrors(t *testing.T) {
	body := randBytes(t, 1000)
	for _, code := range []int{500, 503, 429} {
		var calls atomic.Int64
		srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
			if calls.Add(1) <= 2 {
				http.Error(w, "busy", code)
				return
			}
			w.Write(body)
		})
		c := testClient(Config{})
		dest := filepath.Join(t.TempDir(), "f")
		if _, err := c.Get(context.Background(), srv.URL+"/f", toPath(dest), wantOf(body)); err != nil {
			t.Fatalf("HTTP %d then 200: %v", code, err)
		}
		if st := c.Stats(); st.Retries != 2 || st.Requests != 3 {
			t.Errorf("HTTP %d: stats %+v, want 2 retries in 3 requests", code, st)
		}
	}
	// Persistent 500: gives up after Retries and says so.
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) { http.Error(w, "down", 500) })
	_, err := testClient(Config{Retries: 3}).Get(context.Background(), srv.URL+"/f", toPath(filepath.Join(t.TempDir(), "f")), wantOf(body))
	var se *StatusError
	if !errors.As(err, &se) || se.Status != 500 || !strings.Contains(err.Error(), "4 attempts") {
		t.Errorf("err = %v", err)
	}
	if n := srv.count("/f"); n != 4 {
		t.Errorf("requests = %d, want 4", n)
	}
}

func TestGetSlowServerCancel(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100000")
		w.Write(make([]byte, 1000))
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := testClient(Config{}).Get(ctx, srv.URL+"/f", toPath(filepath.Join(dir, "f")), Want{Size: 100000, SHA256: strings.Repeat("0", 64)})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("cancel took %v", d)
	}
	if names := dirEntries(t, dir); len(names) != 0 {
		t.Errorf("directory holds %v after cancel", names)
	}
}

func TestGetStallTimeout(t *testing.T) {
	body := randBytes(t, 2000)
	var calls atomic.Int64
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		if calls.Add(1) == 1 {
			w.Write(body[:100])
			w.(http.Flusher).Flush()
			<-r.Context().Done() // stall until the client gives up
			return
		}
		w.Write(body)
	})
	c := testClient(Config{Timeout: 300 * time.Millisecond})
	start := time.Now()
	if _, err := c.Get(context.Background(), srv.URL+"/f", toPath(filepath.Join(t.TempDir(), "f")), wantOf(body)); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 300*time.Millisecond || d > 10*time.Second {
		t.Errorf("stalled fetch took %v", d)
	}
	if st := c.Stats(); st.Retries != 1 {
		t.Errorf("retries = %d, want 1", st.Retries)
	}
}

func TestGetBytesConditional(t *testing.T) {
	body := []byte("Origin: Example\nSuite: stable\n")
	const etag = `"v1"`
	const lm = "Mon, 02 Jan 2006 15:04:05 GMT"
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("ETag", etag)
		w.Header().Set("Last-Modified", lm)
		if r.Header.Get("If-None-Match") == etag {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Write(body)
	})
	c := testClient(Config{})
	url := srv.URL + "/dists/stable/InRelease"
	b, v, nm, err := c.GetBytes(context.Background(), url, 1<<20, Validators{})
	if err != nil || nm || !bytes.Equal(b, body) {
		t.Fatalf("first GetBytes = %q, %v, %v", b, nm, err)
	}
	if v.ETag != etag || v.LastModified != lm {
		t.Errorf("validators = %+v", v)
	}
	b, v2, nm, err := c.GetBytes(context.Background(), url, 1<<20, v)
	if err != nil || !nm || b != nil || v2 != v {
		t.Fatalf("conditional GetBytes = %q, %+v, %v, %v; want 304", b, v2, nm, err)
	}
	if _, _, _, err := c.GetBytes(context.Background(), url, 10, Validators{}); err == nil {
		t.Error("body over max accepted")
	}
	if st := c.Stats(); st.NotModified != 1 || st.Files != 1 {
		t.Errorf("stats = %+v", st)
	}
}

func TestKeepAliveReuse(t *testing.T) {
	body := randBytes(t, 8<<10)
	srv := newServer(t, serveBytes(body))
	c := testClient(Config{Concurrency: 4})
	dir := t.TempDir()
	for i := range 30 {
		if _, err := c.Get(context.Background(), srv.URL+"/f", toPath(filepath.Join(dir, strconv.Itoa(i))), wantOf(body)); err != nil {
			t.Fatal(err)
		}
	}
	if n := srv.newConns.Load(); n != 1 {
		t.Errorf("30 sequential GETs opened %d connections, want 1", n)
	}
	// Parallel: after warm-up, no more than Concurrency connections.
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for w := range 4 {
		wg.Go(func() {
			for i := range 50 {
				_, err := c.Get(context.Background(), srv.URL+"/f", toPath(filepath.Join(dir, strconv.Itoa(w*1000+i))), wantOf(body))
				if err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// Ideally 4; the transport may dial one more while a connection is on
	// its way back to the idle pool. Without keep-alive it would be 200,
	// and with an idle pool smaller than the worker count, dozens.
	if n := srv.newConns.Load(); n > 8 {
		t.Errorf("4 workers × 50 GETs opened %d connections, want ≤ 8", n)
	}
}

func TestRateLimit(t *testing.T) {
	body := randBytes(t, 300<<10)
	srv := newServer(t, serveBytes(body))
	c := testClient(Config{RateLimit: 200 << 10})
	start := time.Now()
	if _, err := c.Get(context.Background(), srv.URL+"/f", toPath(filepath.Join(t.TempDir(), "f")), wantOf(body)); err != nil {
		t.Fatal(err)
	}
	// The first 200 KiB are the burst; the other 100 KiB take ≥ 0.5 s.
	if d := time.Since(start); d < 400*time.Millisecond {
		t.Errorf("300 KiB at 200 KiB/s took only %v", d)
	}
}

func TestOpenVerifies(t *testing.T) {
	good := randBytes(t, 100<<10)
	bad := bytes.Clone(good)
	bad[12345] ^= 0x80
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/bad" {
			w.Write(bad)
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(good)))
		w.Write(good)
	})
	c := testClient(Config{})
	rc, err := c.Open(context.Background(), srv.URL+"/good", wantOf(good))
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	if err != nil || !bytes.Equal(got, good) {
		t.Fatalf("ReadAll good: %v", err)
	}
	if err := rc.Close(); err != nil {
		t.Errorf("Close after verified EOF: %v", err)
	}

	rc, err = c.Open(context.Background(), srv.URL+"/bad", wantOf(good))
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.ReadAll(rc)
	var me *MismatchError
	if !errors.As(err, &me) || me.Field != "sha256" {
		t.Errorf("ReadAll bad: err = %v, want sha256 mismatch", err)
	}
	if err := rc.Close(); err == nil {
		t.Error("Close after mismatch returned nil")
	}

	rc, err = c.Open(context.Background(), srv.URL+"/good", wantOf(good))
	if err != nil {
		t.Fatal(err)
	}
	rc.Read(make([]byte, 10))
	if err := rc.Close(); err == nil {
		t.Error("Close before EOF returned nil: unverified content looked verified")
	}

	// Oversized stream: fails at Size+1 bytes.
	small := good[:1000]
	rc, err = c.Open(context.Background(), srv.URL+"/good", Want{Size: -1, SHA256: wantOf(small).SHA256})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(rc); !errors.As(err, &me) {
		t.Errorf("longer body with wrong hash: err = %v", err)
	}
	rc.Close()
	if _, err := c.Open(context.Background(), srv.URL+"/good", Want{Size: 1000, SHA256: wantOf(small).SHA256}); !errors.As(err, &me) || me.Field != "size" {
		t.Errorf("Content-Length over Size: err = %v", err)
	}
}

func TestProxy(t *testing.T) {
	body := []byte("via proxy")
	var seen atomic.Value
	proxy := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		seen.Store(r.URL.String()) // a proxy receives the absolute URL
		w.Write(body)
	})
	c := testClient(Config{Proxy: proxy.URL})
	dest := filepath.Join(t.TempDir(), "f")
	if _, err := c.Get(context.Background(), "http://archive.example.org/debian/f", toPath(dest), wantOf(body)); err != nil {
		t.Fatal(err)
	}
	if got, _ := seen.Load().(string); got != "http://archive.example.org/debian/f" {
		t.Errorf("proxy saw %q", got)
	}
	bad := testClient(Config{Proxy: "http://[::1"})
	if _, err := bad.Get(context.Background(), "http://archive.example.org/f", toPath(dest+"2"), wantOf(body)); err == nil || !strings.Contains(err.Error(), "proxy") {
		t.Errorf("bad proxy: %v", err)
	}
}

// fileDest is a Dest at a plain path, for these tests: a named temporary
// file beside path, renamed onto it by Commit. mirror/store.NewFile is the
// Dest of a sync (its tests cover unnamed temporary files and replacing).
type fileDest struct {
	path string
	f    *os.File
}

func toPath(p string) *fileDest { return &fileDest{path: p} }

func (d *fileDest) Name() string { return d.path }

func (d *fileDest) Create() (*os.File, error) {
	if err := os.MkdirAll(filepath.Dir(d.path), 0o755); err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(filepath.Dir(d.path), ".tmp-*")
	if err != nil {
		return nil, err
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, err
	}
	d.f = f
	return f, nil
}

func (d *fileDest) Commit() error {
	if err := d.f.Close(); err != nil {
		return err
	}
	return os.Rename(d.f.Name(), d.path)
}

func (d *fileDest) Discard() {
	if d.f != nil {
		d.f.Close()
		os.Remove(d.f.Name())
		d.f = nil
	}
}
