package serve

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gatehouse/mirror/store"
)

const outsideSecret = "OUTSIDE-SECRET-root:x:0:0"

// fixture is a state directory with one published mirror "debian", an
// unpublished mirror "empty", and a secret file beside them that no request
// may reach.
type fixture struct {
	root   string
	st     *store.Store
	snapID string
	files  map[string][]byte // URL path -> content
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	root := t.TempDir()
	f := &fixture{root: root, files: map[string][]byte{}}
	if err := os.WriteFile(filepath.Join(root, "secret"), []byte(outsideSecret), 0o644); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(root, "debian")
	if err != nil {
		t.Fatal(err)
	}
	unlock, err := st.Lock(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(unlock)
	f.st = st
	if _, err := store.Open(root, "empty"); err != nil {
		t.Fatal(err)
	}
	sn, err := st.NewSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	put := func(p string, b []byte) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	inrelease := []byte("-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\nOrigin: Example\nSuite: stable\n")
	packages := randBytes(t, 10000)
	for rel, b := range map[string][]byte{
		"dists/stable/InRelease":                     inrelease,
		"dists/stable/main/binary-amd64/Packages.gz": packages,
	} {
		p, err := sn.Path(rel)
		if err != nil {
			t.Fatal(err)
		}
		put(p, b)
		f.files["/debian/"+rel] = b
	}
	// A symlink inside the snapshot pointing out of it.
	if err := os.Symlink(filepath.Join(root, "secret"), filepath.Join(sn.Dir(), "dists/stable/evil")); err != nil {
		t.Fatal(err)
	}
	id, err := sn.Commit(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	f.snapID = id
	deb := randBytes(t, 5000)
	p, _ := st.PoolPath("main/h/hello/hello_1.0-1+b1_amd64.deb")
	put(p, deb)
	f.files["/debian/pool/main/h/hello/hello_1.0-1+b1_amd64.deb"] = deb
	if err := os.Symlink(root, filepath.Join(st.Dir(), store.PoolDir, "evil")); err != nil {
		t.Fatal(err)
	}
	// A download in progress: not verified yet, so never served.
	put(filepath.Join(filepath.Dir(p), store.TempPrefix+"get-123"), []byte("Origin: unverified partial"))
	return f
}

func randBytes(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func (f *fixture) server(t testing.TB, log *slog.Logger) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(NewHandler(f.root, []string{"debian", "empty", "../bad"}, log))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

func get(t *testing.T, method, url string, hdr map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

func TestGetHeadAndTypes(t *testing.T) {
	f := newFixture(t)
	srv := f.server(t, nil)
	types := map[string]string{
		"/debian/dists/stable/InRelease":                     "text/plain; charset=utf-8",
		"/debian/dists/stable/main/binary-amd64/Packages.gz": "application/gzip",
		"/debian/pool/main/h/hello/hello_1.0-1+b1_amd64.deb": "application/octet-stream",
	}
	for p, want := range f.files {
		resp, body := get(t, "GET", srv.URL+p, nil)
		if resp.StatusCode != 200 || !bytes.Equal(body, want) {
			t.Errorf("GET %s: %d, %d bytes (want %d)", p, resp.StatusCode, len(body), len(want))
		}
		if ct := resp.Header.Get("Content-Type"); ct != types[p] {
			t.Errorf("GET %s: Content-Type %q, want %q", p, ct, types[p])
		}
		if resp.Header.Get("Content-Encoding") != "" {
			t.Errorf("GET %s: Content-Encoding set; apt wants the stored bytes", p)
		}
		etag := resp.Header.Get("ETag")
		if !strings.HasPrefix(etag, `"`) || strings.HasPrefix(etag, "W/") {
			t.Errorf("GET %s: ETag %q is not strong", p, etag)
		}
		resp, body = get(t, "HEAD", srv.URL+p, nil)
		if resp.StatusCode != 200 || len(body) != 0 || resp.ContentLength != int64(len(want)) || resp.Header.Get("ETag") != etag {
			t.Errorf("HEAD %s: %d, body %d, Content-Length %d (want %d), ETag %q", p, resp.StatusCode, len(body), resp.ContentLength, len(want), resp.Header.Get("ETag"))
		}
	}
	if resp, _ := get(t, "GET", srv.URL+"/debian/dists/stable/InRelease", nil); resp.Header.Get("X-Gatehouse-Snapshot") != f.snapID {
		t.Errorf("X-Gatehouse-Snapshot = %q, want %q", resp.Header.Get("X-Gatehouse-Snapshot"), f.snapID)
	}
	resp, body := get(t, "GET", srv.URL+"/", nil)
	if resp.StatusCode != 200 || string(body) != "debian\nempty\n" {
		t.Errorf("index: %d %q", resp.StatusCode, body)
	}
	resp, _ = get(t, "GET", srv.URL+"/empty/dists/stable/InRelease", nil)
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("unpublished mirror: %d, want 503", resp.StatusCode)
	}
}

func TestMethods(t *testing.T) {
	f := newFixture(t)
	srv := f.server(t, nil)
	for _, m := range []string{"POST", "PUT", "DELETE", "PATCH", "OPTIONS", "PROPFIND"} {
		resp, _ := get(t, m, srv.URL+"/debian/dists/stable/InRelease", nil)
		if resp.StatusCode != 405 || resp.Header.Get("Allow") != "GET, HEAD" {
			t.Errorf("%s: %d, Allow %q", m, resp.StatusCode, resp.Header.Get("Allow"))
		}
	}
}

func TestRange(t *testing.T) {
	f := newFixture(t)
	srv := f.server(t, nil)
	p := "/debian/dists/stable/main/binary-amd64/Packages.gz"
	full := f.files[p]
	resp, body := get(t, "GET", srv.URL+p, map[string]string{"Range": "bytes=100-199"})
	if resp.StatusCode != 206 || !bytes.Equal(body, full[100:200]) || resp.Header.Get("Content-Range") != fmt.Sprintf("bytes 100-199/%d", len(full)) {
		t.Errorf("single range: %d %q, %d bytes", resp.StatusCode, resp.Header.Get("Content-Range"), len(body))
	}
	resp, body = get(t, "GET", srv.URL+p, map[string]string{"Range": "bytes=-50"})
	if resp.StatusCode != 206 || !bytes.Equal(body, full[len(full)-50:]) {
		t.Errorf("suffix range: %d, %d bytes", resp.StatusCode, len(body))
	}
	resp, body = get(t, "GET", srv.URL+p, map[string]string{"Range": "bytes=9990-"})
	if resp.StatusCode != 206 || !bytes.Equal(body, full[9990:]) {
		t.Errorf("open range: %d, %d bytes", resp.StatusCode, len(body))
	}
	for _, bad := range []string{"bytes=20000-20010", "bytes=10000-"} {
		resp, _ = get(t, "GET", srv.URL+p, map[string]string{"Range": bad})
		if resp.StatusCode != 416 || resp.Header.Get("Content-Range") != fmt.Sprintf("bytes */%d", len(full)) {
			t.Errorf("range %s: %d %q, want 416", bad, resp.StatusCode, resp.Header.Get("Content-Range"))
		}
	}
	// Two ranges: a multipart/byteranges body with both parts.
	resp, body = get(t, "GET", srv.URL+p, map[string]string{"Range": "bytes=0-9,20-29"})
	mt, params, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if resp.StatusCode != 206 || mt != "multipart/byteranges" {
		t.Fatalf("multi range: %d %s", resp.StatusCode, mt)
	}
	mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
	for _, want := range [][]byte{full[0:10], full[20:30]} {
		part, err := mr.NextPart()
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(part)
		if !bytes.Equal(got, want) {
			t.Errorf("multi range part differs")
		}
	}
}

func TestConditional(t *testing.T) {
	f := newFixture(t)
	srv := f.server(t, nil)
	p := srv.URL + "/debian/dists/stable/InRelease"
	resp, _ := get(t, "GET", p, nil)
	etag, lm := resp.Header.Get("ETag"), resp.Header.Get("Last-Modified")
	if etag == "" || lm == "" {
		t.Fatalf("ETag %q Last-Modified %q", etag, lm)
	}
	if resp, body := get(t, "GET", p, map[string]string{"If-None-Match": etag}); resp.StatusCode != 304 || len(body) != 0 {
		t.Errorf("If-None-Match: %d", resp.StatusCode)
	}
	if resp, _ := get(t, "GET", p, map[string]string{"If-Modified-Since": lm}); resp.StatusCode != 304 {
		t.Errorf("If-Modified-Since: %d", resp.StatusCode)
	}
	if resp, _ := get(t, "GET", p, map[string]string{"If-None-Match": `"other"`}); resp.StatusCode != 200 {
		t.Errorf("If-None-Match other: %d", resp.StatusCode)
	}
	old := time.Now().Add(-48 * time.Hour).UTC().Format(http.TimeFormat)
	if resp, _ := get(t, "GET", p, map[string]string{"If-Modified-Since": old}); resp.StatusCode != 200 {
		t.Errorf("If-Modified-Since old: %d", resp.StatusCode)
	}
	// A client holding a copy dated later than the file served (after a
	// rollback) gets the file: If-Modified-Since matches exactly, as nginx.
	newer := time.Now().Add(48 * time.Hour).UTC().Format(http.TimeFormat)
	if resp, _ := get(t, "GET", p, map[string]string{"If-Modified-Since": newer}); resp.StatusCode != 200 {
		t.Errorf("If-Modified-Since later than Last-Modified: %d, want 200", resp.StatusCode)
	}
	if resp, _ := get(t, "GET", p, map[string]string{"If-Modified-Since": "not a date"}); resp.StatusCode != 200 {
		t.Errorf("If-Modified-Since unparsable: %d, want 200", resp.StatusCode)
	}
	if resp, _ := get(t, "GET", p, map[string]string{"Range": "bytes=0-3", "If-Range": `"stale"`}); resp.StatusCode != 200 {
		t.Errorf("If-Range stale: %d, want full 200", resp.StatusCode)
	}
	if resp, body := get(t, "GET", p, map[string]string{"Range": "bytes=0-3", "If-Range": etag}); resp.StatusCode != 206 || len(body) != 4 {
		t.Errorf("If-Range current: %d", resp.StatusCode)
	}
}

// rawGet sends path exactly as given (no client-side cleaning or escaping).
func rawGet(t *testing.T, addr, target string) (int, []byte) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", target)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("GET %q: %v", target, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func TestEscapesRefused(t *testing.T) {
	f := newFixture(t)
	srv := f.server(t, nil)
	addr := srv.Listener.Addr().String()
	attempts := []string{
		"/debian/dists/../../secret",
		"/debian/dists/../../../../etc/passwd",
		"/debian/dists/%2e%2e/%2e%2e/secret",
		"/debian/dists/%2E%2E%2F%2E%2E%2Fsecret",
		"/debian/pool/..%2f..%2fsecret",
		"/debian/pool/main/../../state.json",
		"/debian/pool/main%5c..%5c..%5csecret",
		"/debian/pool/main\\..\\..\\secret",
		"/debian/dists/stable/InRelease%00",
		"/debian/dists/stable/InRelease%00.deb",
		"/debian/./../secret",
		"/debian/pool/main/h/hello/" + store.TempPrefix + "get-123",
		"/debian/pool/./../../secret",
		"/debian//dists/stable/InRelease",
		"/debian/dists/stable/evil",
		"/debian/pool/evil/secret",
		"/debian/pool/evil/debian/state.json",
		"/debian/state.json",
		"/debian/.lock",
		"/debian/current/dists/stable/InRelease",
		"/debian/snapshots/" + f.snapID + "/dists/stable/evil",
		"/debian/snapshots/" + f.snapID + "/dists/../../secret",
		"/debian/snapshots/" + f.snapID + "/pool/evil/secret",
		"/debian/snapshots/" + f.snapID + "/state.json",
		"/debian/snapshots/" + f.snapID + ".tmp/dists/stable/InRelease",
		"/debian/snapshots/" + f.snapID + "%2f..%2f..%2fsecret",
		"/debian/snapshots/..%2f..%2fsecret",
		"/debian/snapshots/%2e%2e/%2e%2e/secret",
		"/debian/snapshots/20200101T000000Z/dists/stable/InRelease",
		"/debian/snapshots/" + f.snapID,
		"/debian/snapshots/" + f.snapID + "/",
		"/debian/snapshots/",
		"/empty/snapshots/" + f.snapID + "/dists/stable/InRelease",
		"/debian",
		"/debian/",
		"/debian/dists",
		"/debian/dists/",
		"/debian/dists/stable",
		"/debian/pool/",
		"/debian/pool/main",
		"/secret",
		"/../secret",
		"/%2e%2e/secret",
		"/empty/pool/../../secret",
		"/bad/dists/x",
		"/nosuch/dists/stable/InRelease",
		"//secret",
		"/debian/dists/stable/InRelease/",
	}
	for _, target := range attempts {
		code, body := rawGet(t, addr, target)
		if code != 400 && code != 404 {
			t.Errorf("GET %q: status %d, want 400 or 404", target, code)
		}
		if bytes.Contains(body, []byte(outsideSecret)) || bytes.Contains(body, []byte("root:x")) || bytes.Contains(body, []byte("Origin:")) {
			t.Errorf("GET %q leaked content: %q", target, body)
		}
	}
	// Sanity: the raw client does reach real files.
	code, want := rawGet(t, addr, "/debian/dists/stable/InRelease")
	if code != 200 {
		t.Fatalf("raw GET of a real file: %d", code)
	}
	// "." elements are harmless and apt sends them for a "./" flat suite.
	if code, got := rawGet(t, addr, "/debian/./dists/././stable/InRelease"); code != 200 || !bytes.Equal(got, want) {
		t.Errorf("GET with ./ elements: %d", code)
	}
	if code, _ := rawGet(t, addr, "/debian/pool/main/h/hello/hello_1.0-1%2bb1_amd64.deb"); code != 200 {
		t.Errorf("percent-encoded + in a pool name: %d", code)
	}
}

// TestSwapMidDownload: a download that started before a publish finishes
// with the old content, even when the old snapshot is pruned meanwhile;
// the next request gets the new content.
func TestSwapMidDownload(t *testing.T) {
	f := newFixture(t)
	srv := f.server(t, nil)
	publish := func(content []byte) {
		sn, err := f.st.NewSnapshot()
		if err != nil {
			t.Fatal(err)
		}
		p, _ := sn.Path("dists/stable/Contents-amd64")
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, content, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := sn.Commit(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	a := bytes.Repeat([]byte("A"), 8<<20)
	b := bytes.Repeat([]byte("B"), 8<<20)
	publish(a)
	url := srv.URL + "/debian/dists/stable/Contents-amd64"
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	head := make([]byte, 64<<10)
	if _, err := io.ReadFull(resp.Body, head); err != nil {
		t.Fatal(err)
	}
	publish(b)
	if _, err := f.st.Prune(0); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if got := append(head, rest...); !bytes.Equal(got, a) {
		t.Errorf("download spanning a publish returned %d bytes not equal to the old snapshot's file", len(got))
	}
	_, body := get(t, "GET", url, nil)
	if !bytes.Equal(body, b) {
		t.Error("request after publish did not get the new snapshot")
	}
}

// TestConcurrentPublishNoErrors: clients fetching in a loop while snapshots
// are published never see an error status.
func TestConcurrentPublishNoErrors(t *testing.T) {
	f := newFixture(t)
	srv := f.server(t, nil)
	publish := func(gen int) {
		sn, _ := f.st.NewSnapshot()
		p, _ := sn.Path("dists/stable/Release")
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, []byte("gen "+strconv.Itoa(gen)), 0o644)
		if _, err := sn.Commit(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	publish(0)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var requests atomic.Int64
	errs := make(chan string, 100)
	for range 2 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := http.Get(srv.URL + "/debian/dists/stable/Release")
				if err != nil {
					errs <- err.Error()
					return
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || !strings.HasPrefix(string(b), "gen ") {
					errs <- fmt.Sprintf("%d %q", resp.StatusCode, b)
					return
				}
				requests.Add(1)
			}
		})
	}
	for gen := 1; gen <= 15; gen++ {
		publish(gen)
	}
	close(stop)
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if requests.Load() < 10 {
		t.Errorf("only %d requests overlapped the publishes", requests.Load())
	}
}

func TestAccessLog(t *testing.T) {
	f := newFixture(t)
	var buf bytes.Buffer
	var mu sync.Mutex
	log := slog.New(slog.NewJSONHandler(lockedWriter{&mu, &buf}, nil))
	srv := f.server(t, log)
	get(t, "GET", srv.URL+"/debian/dists/stable/InRelease", map[string]string{"Range": "bytes=0-9"})
	get(t, "GET", srv.URL+"/debian/nope", nil)
	mu.Lock()
	defer mu.Unlock()
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	var recs []map[string]any
	for _, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatal(err)
		}
		if m["msg"] == "http" {
			recs = append(recs, m)
		}
	}
	if len(recs) != 2 {
		t.Fatalf("log records: %v", lines)
	}
	r := recs[0]
	if r["method"] != "GET" || r["path"] != "/debian/dists/stable/InRelease" || r["status"] != float64(206) || r["bytes"] != float64(10) || r["remote"] == "" || r["duration"] == nil {
		t.Errorf("access log record %v", r)
	}
	if recs[1]["status"] != float64(404) {
		t.Errorf("404 logged as %v", recs[1]["status"])
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// TestCurl fetches with a real HTTP client: full file, a byte range, and a
// HEAD, compared with the bytes on disk.
func TestCurl(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl not installed")
	}
	f := newFixture(t)
	srv := f.server(t, nil)
	p := "/debian/pool/main/h/hello/hello_1.0-1+b1_amd64.deb"
	want := f.files[p]
	out := filepath.Join(t.TempDir(), "out")
	run := func(args ...string) string {
		t.Helper()
		b, err := exec.Command(curl, append([]string{"-sS", "--fail"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("curl %v: %v\n%s", args, err, b)
		}
		return string(b)
	}
	run("-o", out, srv.URL+p)
	if got, _ := os.ReadFile(out); !bytes.Equal(got, want) {
		t.Error("curl full download differs")
	}
	run("-r", "1000-1999", "-o", out, srv.URL+p)
	if got, _ := os.ReadFile(out); !bytes.Equal(got, want[1000:2000]) {
		t.Errorf("curl -r 1000-1999 got %d bytes, differs", len(got))
	}
	hdr := run("-I", srv.URL+p)
	if !strings.Contains(strings.ToLower(hdr), "content-length: "+strconv.Itoa(len(want))) {
		t.Errorf("curl -I headers lack Content-Length %d:\n%s", len(want), hdr)
	}
	// curl resumes a partial download with a range request.
	if err := os.WriteFile(out, want[:1234], 0o644); err != nil {
		t.Fatal(err)
	}
	run("-C", "-", "-o", out, srv.URL+p)
	if got, _ := os.ReadFile(out); !bytes.Equal(got, want) {
		t.Error("curl -C - resume produced different bytes")
	}
	if b, err := exec.Command(curl, "-sS", "--fail", "--path-as-is", srv.URL+"/debian/dists/../../secret").CombinedOutput(); err == nil || bytes.Contains(b, []byte(outsideSecret)) {
		t.Errorf("curl --path-as-is escape: err %v, %q", err, b)
	}
}

func TestServeGracefulShutdown(t *testing.T) {
	f := newFixture(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Serve(ctx, ln, NewHandler(f.root, []string{"debian"}, nil), Options{Grace: time.Second})
	}()
	url := "http://" + ln.Addr().String() + "/debian/dists/stable/InRelease"
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve after cancel: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
	if _, err := http.Get(url); err == nil {
		t.Error("server still answering after shutdown")
	}
	if (Config{}).Addr() != DefaultListen || (Config{Listen: ":1"}).Addr() != ":1" {
		t.Error("Config.Addr default wrong")
	}
}

func FuzzHandlerPath(f *testing.F) {
	fx := newFixture(f)
	h := NewHandler(fx.root, []string{"debian", "empty"}, nil)
	for _, s := range []string{"/debian/dists/stable/InRelease", "/debian/dists/../../secret", "/debian/pool/evil/secret", "/debian/dists/stable/evil", "/%2e%2e/secret", "/debian/pool/main/h/hello/hello_1.0-1+b1_amd64.deb"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, target string) {
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader("GET " + target + " HTTP/1.1\r\nHost: x\r\n\r\n")))
		if err != nil {
			return
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if bytes.Contains(rec.Body.Bytes(), []byte(outsideSecret)) {
			t.Fatalf("GET %q leaked the secret outside the mirror", target)
		}
		if rec.Code == 200 && req.URL.Path != "/" {
			if _, ok := fx.files[req.URL.Path]; !ok {
				t.Fatalf("GET %q (path %q) served 200 for a path that is not a published file", target, req.URL.Path)
			}
		}
	})
}

func TestContentType(t *testing.T) {
	for rel, want := range map[string]string{
		"dists/stable/InRelease":                                   "text/plain; charset=utf-8",
		"dists/stable/Release.gpg":                                 "application/pgp-signature",
		"dists/stable/main/binary-amd64/Packages.xz":               "application/x-xz",
		"dists/stable/main/binary-amd64/Packages.gz":               "application/gzip",
		"dists/stable/main/binary-amd64/by-hash/SHA256/0a1b2c3d4e": "application/octet-stream",
		"dists/stable/main/i18n/Translation-en":                    "text/plain; charset=utf-8",
		"main/h/hello/hello_1.0_amd64.deb":                         "application/octet-stream",
		"main/h/hello/hello_1.0.orig.tar.zst":                      "application/octet-stream",
	} {
		if got := contentType(rel); got != want {
			t.Errorf("contentType(%q) = %q, want %q", rel, got, want)
		}
	}
}

// TestServeSnapshotByID: /NAME/snapshots/ID/ serves a retained snapshot
// that is not published (staged) with its own dists and its override of a
// pool path, while /NAME/ keeps serving the published one; a snapshot
// being built is 404 there until it is finished.
func TestServeSnapshotByID(t *testing.T) {
	f := newFixture(t)
	srv := f.server(t, nil)
	sn, err := f.st.NewSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	newRelease := []byte("staged InRelease")
	if err := sn.WriteFile("dists/stable/InRelease", newRelease, time.Now()); err != nil {
		t.Fatal(err)
	}
	over := filepath.Join(sn.Dir(), store.PoolDir, "main/h/hello/hello_1.0-1+b1_amd64.deb")
	if err := os.MkdirAll(filepath.Dir(over), 0o755); err != nil {
		t.Fatal(err)
	}
	overBytes := []byte("rebuilt hello")
	if err := os.WriteFile(over, overBytes, 0o644); err != nil {
		t.Fatal(err)
	}
	get := func(path string) (int, []byte) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	if code, _ := get("/debian/snapshots/" + sn.ID() + "/dists/stable/InRelease"); code != 404 {
		t.Errorf("a snapshot being built is served: %d", code)
	}
	id, err := sn.Stage(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string][]byte{
		"/debian/snapshots/" + id + "/dists/stable/InRelease":                           newRelease,
		"/debian/snapshots/" + id + "/pool/main/h/hello/hello_1.0-1+b1_amd64.deb":       overBytes,
		"/debian/dists/stable/InRelease":                                                f.files["/debian/dists/stable/InRelease"],
		"/debian/pool/main/h/hello/hello_1.0-1+b1_amd64.deb":                            f.files["/debian/pool/main/h/hello/hello_1.0-1+b1_amd64.deb"],
		"/debian/snapshots/" + f.snapID + "/pool/main/h/hello/hello_1.0-1+b1_amd64.deb": f.files["/debian/pool/main/h/hello/hello_1.0-1+b1_amd64.deb"],
		"/debian/snapshots/" + f.snapID + "/dists/stable/main/binary-amd64/Packages.gz": f.files["/debian/dists/stable/main/binary-amd64/Packages.gz"],
	} {
		if code, got := get(path); code != 200 || !bytes.Equal(got, want) {
			t.Errorf("GET %s: %d, %d bytes; want %d bytes", path, code, len(got), len(want))
		}
	}
	if cur, _ := f.st.Current(); cur != f.snapID {
		t.Fatalf("Stage published: current %s", cur)
	}
}
