package serve

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// startServe runs Serve with opt on a loopback port for the test's
// duration and returns its address.
func startServe(t *testing.T, f *fixture, opt Options) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	opt.Grace = 100 * time.Millisecond
	go func() { done <- Serve(ctx, ln, NewHandler(f.root, []string{"debian"}, nil), opt) }()
	t.Cleanup(func() { cancel(); <-done })
	return ln.Addr().String()
}

// bigPoolFile puts a file of n bytes into the fixture's pool and returns
// its URL path.
func bigPoolFile(t *testing.T, f *fixture, n int) string {
	t.Helper()
	rel := "main/b/big/big_1.0_amd64.deb"
	p, err := f.st.PoolPath(rel)
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Dir(p), 0o755)
	if err := os.WriteFile(p, bytes.Repeat([]byte("0123456789abcdef"), n/16), 0o644); err != nil {
		t.Fatal(err)
	}
	return "/debian/pool/" + rel
}

// dialFrom connects to addr from the loopback address src with a small
// receive buffer, so that a client that does not read stalls the
// server's writes early.
func dialFrom(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	c, err := tryDialFrom(src, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// tryDialFrom is dialFrom for connections that may be refused: the reset
// of a connection closed at accept can arrive before connect(2) returns.
func tryDialFrom(src, addr string) (net.Conn, error) {
	d := net.Dialer{
		LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)},
		Timeout:   5 * time.Second,
		Control: func(network, address string, c syscall.RawConn) error {
			var serr error
			c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
			return serr
		},
	}
	return d.Dial("tcp", addr)
}

func sendGet(t *testing.T, c net.Conn, path string) {
	t.Helper()
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path); err != nil {
		t.Fatal(err)
	}
}

// served reports whether a new connection from src is answered (true) or
// closed without an answer, as a refused one is.
func served(t *testing.T, src, addr string) bool {
	t.Helper()
	c, err := tryDialFrom(src, addr)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(c, "GET /debian/dists/stable/InRelease HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		return false
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("connection from %s neither answered nor closed: %v", src, err)
		}
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == 200
}

// logBuffer collects slog output for assertions.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestMinSendRateCutsStalledResponse: a client that requests a large file
// and never reads is cut after one min_send_time window, which frees its
// connection slot (max_conns_per_source = 1 here); until then a second
// connection from the same source is refused at accept.
func TestMinSendRateCutsStalledResponse(t *testing.T) {
	f := newFixture(t)
	const size = 8 << 20
	big := bigPoolFile(t, f, size)
	addr := startServe(t, f, Options{MinSendRate: 1024, MinSendTime: 400 * time.Millisecond, MaxConnsPerSource: 1})
	slow := dialFrom(t, "127.0.0.1", addr)
	sendGet(t, slow, big)
	start := time.Now()
	time.Sleep(100 * time.Millisecond)
	if served(t, "127.0.0.1", addr) {
		t.Fatal("a second connection from the source was served while the stalled one held its only slot")
	}
	for !served(t, "127.0.0.1", addr) {
		if time.Since(start) > 10*time.Second {
			t.Fatal("the stalled response was not cut within 10s (min_send_time 400ms)")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if d := time.Since(start); d < 350*time.Millisecond {
		t.Errorf("cut after %v, before one window of 400ms", d)
	}
	slow.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := io.Copy(io.Discard, slow)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the stalled connection is still open after %d bytes", n)
	}
	if n >= size {
		t.Errorf("the stalled client received all %d bytes", n)
	}
}

// TestMinSendRateSparesSteadyReader: a client reading slowly but above the
// minimum rate receives a file whose sending spans many windows, whole.
func TestMinSendRateSparesSteadyReader(t *testing.T) {
	f := newFixture(t)
	const size = 256 << 10
	big := bigPoolFile(t, f, size)
	addr := startServe(t, f, Options{MinSendRate: 1024, MinSendTime: 200 * time.Millisecond})
	c := dialFrom(t, "127.0.0.1", addr)
	sendGet(t, c, big)
	br := bufio.NewReaderSize(c, 4096)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var n int64
	buf := make([]byte, 16<<10)
	for {
		m, err := resp.Body.Read(buf)
		n += int64(m)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("after %d bytes: %v", n, err)
		}
		time.Sleep(10 * time.Millisecond) // ~400 KiB/s with 4 KiB reads; 1 KiB/s needed
	}
	if n != size {
		t.Fatalf("received %d bytes, want %d", n, size)
	}
	if d := time.Since(start); d < 400*time.Millisecond {
		t.Logf("the transfer took %v: too fast to span several windows, the test proves less", d)
	}
}

// TestIdleTimeout: a keep-alive connection is closed after idle_timeout
// without a request, and serves further requests sent before that.
func TestIdleTimeout(t *testing.T) {
	f := newFixture(t)
	addr := startServe(t, f, Options{IdleTimeout: 400 * time.Millisecond})
	c := dialFrom(t, "127.0.0.1", addr)
	br := bufio.NewReader(c)
	get := func() error {
		sendGet(t, c, "/debian/dists/stable/InRelease")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return nil
	}
	if err := get(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(150 * time.Millisecond)
	if err := get(); err != nil {
		t.Fatalf("a request within idle_timeout: %v", err)
	}
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := br.ReadByte()
	d := time.Since(start)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("idle connection still open after 5s (idle_timeout 400ms)")
	}
	if d < 300*time.Millisecond {
		t.Errorf("idle connection closed after %v, before idle_timeout", d)
	}
}

// TestRequestBodyDeadline: a request with a body that never arrives does
// not hold its connection (net/http would wait to drain it) beyond the
// header timeout.
func TestRequestBodyDeadline(t *testing.T) {
	f := newFixture(t)
	addr := startServe(t, f, Options{HeaderTimeout: 400 * time.Millisecond})
	c := dialFrom(t, "127.0.0.1", addr)
	fmt.Fprintf(c, "GET /debian/dists/stable/InRelease HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nx")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("a connection trickling a request body is still open after 5s")
	}
}

// TestConnCaps: max_conns_per_source and max_conns refuse the new
// connection at accept, never an open one; a refused source is logged
// once per minute with the number refused; the slot of a closed
// connection is free again.
func TestConnCaps(t *testing.T) {
	f := newFixture(t)
	var logs logBuffer
	var mu sync.Mutex
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	reasons := map[string]int{}
	addr := startServe(t, f, Options{
		MaxConns: 4, MaxConnsPerSource: 2,
		Log: slog.New(slog.NewTextHandler(&logs, nil)),
		Now: func() time.Time { mu.Lock(); defer mu.Unlock(); return now },
		Refused: func(r string) {
			mu.Lock()
			defer mu.Unlock()
			reasons[r]++
		},
	})
	// open holds a served keep-alive connection from src.
	open := func(src string) (net.Conn, *bufio.Reader) {
		c := dialFrom(t, src, addr)
		br := bufio.NewReader(c)
		sendGet(t, c, "/debian/dists/stable/InRelease")
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("connection from %s not served: %v", src, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return c, br
	}
	a1, a1r := open("127.0.0.2")
	open("127.0.0.2")
	for range 3 {
		if served(t, "127.0.0.2", addr) {
			t.Fatal("a third connection from 127.0.0.2 was served (max_conns_per_source 2)")
		}
	}
	open("127.0.0.3")
	open("127.0.0.3")
	if served(t, "127.0.0.4", addr) {
		t.Fatal("a fifth connection was served (max_conns 4)")
	}
	// The open connections are still served.
	sendGet(t, a1, "/debian/dists/stable/InRelease")
	if resp, err := http.ReadResponse(a1r, nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("an admitted connection stopped being served: %v", err)
	}
	mu.Lock()
	if reasons["max_conns_per_source"] != 3 || reasons["max_conns"] != 1 {
		t.Errorf("refusals counted %v, want 3 max_conns_per_source and 1 max_conns", reasons)
	}
	mu.Unlock()
	lines := func(src string) []string {
		var out []string
		for _, l := range strings.Split(logs.String(), "\n") {
			if strings.Contains(l, "source="+src+"/32") {
				out = append(out, l)
			}
		}
		return out
	}
	if l := lines("127.0.0.2"); len(l) != 1 || !strings.Contains(l[0], "reason=max_conns_per_source") || !strings.Contains(l[0], "limit=2") {
		t.Errorf("log lines for 127.0.0.2 after 3 refusals within a minute: %q", l)
	}
	if l := lines("127.0.0.4"); len(l) != 1 || !strings.Contains(l[0], "reason=max_conns ") {
		t.Errorf("log lines for 127.0.0.4: %q", l)
	}
	// A minute later, the next refusal logs again, counting those since
	// the last line: two above, one now, one after the minute.
	served(t, "127.0.0.2", addr)
	mu.Lock()
	now = now.Add(61 * time.Second)
	mu.Unlock()
	served(t, "127.0.0.2", addr)
	if l := lines("127.0.0.2"); len(l) != 2 || !strings.Contains(l[1], "refused=4") {
		t.Errorf("log lines for 127.0.0.2 a minute later: %q", l)
	}
	// Closing one connection frees its slot, for any source.
	a1.Close()
	deadline := time.Now().Add(5 * time.Second)
	for !served(t, "127.0.0.4", addr) {
		if time.Now().After(deadline) {
			t.Fatal("the slot of a closed connection was not freed")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSource: connections are counted per IPv4 address and per IPv6 /64.
func TestSource(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.7":               "192.0.2.7/32",
		"::ffff:192.0.2.7":        "192.0.2.7/32",
		"2001:db8:1:2:3:4:5:6":    "2001:db8:1:2::/64",
		"2001:db8:1:2:ffff::1":    "2001:db8:1:2::/64",
		"fe80::1%eth0":            "fe80::/64",
		"2001:db8:1:3::1":         "2001:db8:1:3::/64",
		"::1":                     "::/64",
		"127.0.0.1":               "127.0.0.1/32",
		"::ffff:127.0.0.1":        "127.0.0.1/32",
		"2001:db8:ffff:ffff:1::9": "2001:db8:ffff:ffff::/64",
	} {
		if got := Source(netip.MustParseAddr(in)).String(); got != want {
			t.Errorf("Source(%s) = %s, want %s", in, got, want)
		}
	}
}

// TestDefaultMaxConns: three quarters of the limit at two descriptors per
// connection, less what is reserved, and never below the floor.
func TestDefaultMaxConns(t *testing.T) {
	for _, c := range []struct{ limit, reserve, want int }{
		{1024, 0, 384},
		{1024, 384, 192},
		{524288, 0, 196608},
		{20, 0, minDefaultMaxConns},
		{1024, 5000, minDefaultMaxConns},
	} {
		if got := DefaultMaxConns(c.limit, c.reserve); got != c.want {
			t.Errorf("DefaultMaxConns(%d, %d) = %d, want %d", c.limit, c.reserve, got, c.want)
		}
	}
	if FDLimit() <= 0 {
		t.Error("FDLimit cannot read RLIMIT_NOFILE")
	}
}
