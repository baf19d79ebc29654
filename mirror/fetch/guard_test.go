package fetch

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// marker is what servers that must never be quoted send; no error may
// contain it.
const marker = "SECRET-MARKER-7d1f"

// listenOn starts an HTTP server on addr ("127.0.0.2:0") that answers
// every request with 200 and a body holding marker, and counts requests.
func listenOn(t *testing.T, addr string) (string, *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("cannot listen on %s: %v", addr, err)
	}
	var hits atomic.Int64
	srv := &httptest.Server{Listener: ln, Config: &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Write([]byte(marker + "\ninternal metadata " + marker + "\n"))
	})}}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.URL, &hits
}

// redirector answers /from/* with 302 to to+rest, and serves body
// elsewhere.
func redirector(t *testing.T, to func() string, body []byte) *server {
	return newServer(t, func(w http.ResponseWriter, r *http.Request) {
		if rest, ok := strings.CutPrefix(r.URL.Path, "/from/"); ok {
			http.Redirect(w, r, to()+"/"+rest, http.StatusFound)
			return
		}
		w.Write(body)
	})
}

func TestRedirectSameOriginFollowed(t *testing.T) {
	body := randBytes(t, 3000)
	var srv *server
	srv = redirector(t, func() string { return srv.URL }, body)
	c := testClient(Config{})
	dest := filepath.Join(t.TempDir(), "f")
	if _, err := c.Get(context.Background(), srv.URL+"/from/f", toPath(dest), wantOf(body)); err != nil {
		t.Fatal(err)
	}
	if srv.count("/f") != 1 {
		t.Errorf("target fetched %d times", srv.count("/f"))
	}
}

// TestRedirectElsewhereRefused: redirects to another port of the same
// address, and to another loopback address, are refused before any
// connection to the target, with an error naming both URLs and no byte of
// what the target would have said.
func TestRedirectElsewhereRefused(t *testing.T) {
	for name, addr := range map[string]string{"other port": "127.0.0.1:0", "other loopback address": "127.0.0.2:0"} {
		t.Run(name, func(t *testing.T) {
			target, hits := listenOn(t, addr)
			src := redirector(t, func() string { return target }, nil)
			c := testClient(Config{})
			from := src.URL + "/from/InRelease"
			_, _, _, err := c.GetBytes(context.Background(), from, 1<<20, Validators{})
			var re *RedirectError
			if !errors.As(err, &re) || re.From != from || re.To != target+"/InRelease" {
				t.Fatalf("err = %v, want a RedirectError from %s to %s/InRelease", err, from, target)
			}
			if !strings.Contains(err.Error(), from) || !strings.Contains(err.Error(), target+"/InRelease") || !strings.Contains(err.Error(), "redirect_hosts") {
				t.Errorf("error does not name both URLs and the remedy: %v", err)
			}
			if strings.Contains(err.Error(), marker) {
				t.Errorf("error quotes the target: %v", err)
			}
			if hits.Load() != 0 {
				t.Errorf("the refused target got %d requests", hits.Load())
			}
			if st := c.Stats(); st.Retries != 0 {
				t.Errorf("a refused redirect was retried %d times", st.Retries)
			}
		})
	}
}

func TestRedirectHostsListedFollowed(t *testing.T) {
	target, hits := listenOn(t, "127.0.0.2:0")
	src := redirector(t, func() string { return target }, nil)
	host := strings.TrimPrefix(target, "http://")
	c := testClient(Config{RedirectHosts: []string{host}})
	body, _, _, err := c.GetBytes(context.Background(), src.URL+"/from/x", 1<<20, Validators{})
	if err != nil || !strings.Contains(string(body), marker) || hits.Load() != 1 {
		t.Fatalf("listed host: err %v, %d hits", err, hits.Load())
	}
	// The entry names a port: the same host on another port is not listed.
	other, hits2 := listenOn(t, "127.0.0.2:0")
	src2 := redirector(t, func() string { return other }, nil)
	if _, _, _, err := c.GetBytes(context.Background(), src2.URL+"/from/x", 1<<20, Validators{}); err == nil || hits2.Load() != 0 {
		t.Errorf("unlisted port followed: %v", err)
	}
}

func TestRedirectLoopLimited(t *testing.T) {
	var srv *server
	srv = newServer(t, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, srv.URL+r.URL.Path+"x", http.StatusFound)
	})
	c := testClient(Config{})
	_, _, _, err := c.GetBytes(context.Background(), srv.URL+"/a", 1<<20, Validators{})
	var re *RedirectError
	if !errors.As(err, &re) || !strings.Contains(re.Reason, "more than") {
		t.Fatalf("err = %v", err)
	}
	if n := srv.newConns.Load(); n > 2 {
		t.Errorf("%d connections for one redirect loop", n)
	}
}

// TestRedirectHTTPSToHTTPRefused: a TLS upstream that redirects to plain
// HTTP is refused even when the target host is listed.
func TestRedirectHTTPSToHTTPRefused(t *testing.T) {
	plain, hits := listenOn(t, "127.0.0.1:0")
	tlsSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, plain+r.URL.Path, http.StatusFound)
	}))
	t.Cleanup(tlsSrv.Close)
	c := testClient(Config{RedirectHosts: []string{"127.0.0.1", strings.TrimPrefix(plain, "http://")}})
	c.hc.Transport.(*http.Transport).TLSClientConfig = tlsSrv.Client().Transport.(*http.Transport).TLSClientConfig
	_, _, _, err := c.GetBytes(context.Background(), tlsSrv.URL+"/InRelease", 1<<20, Validators{})
	var re *RedirectError
	if !errors.As(err, &re) || !strings.Contains(re.Reason, "https") || hits.Load() != 0 {
		t.Fatalf("https->http: err %v, %d hits", err, hits.Load())
	}
}

// TestDialRefusesInternalAddresses: when no configured URL is internal, a
// redirect target (any host not asked for directly) is refused at dial
// time by the address it resolves to, also when it is a name ("localhost")
// and not a literal: DNS rebinding cannot get past it.
func TestDialRefusesInternalAddresses(t *testing.T) {
	target, _ := listenOn(t, "127.0.0.1:0")
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(target, "http://"))
	c := testClient(Config{})
	for _, host := range []string{"127.0.0.1", "localhost"} {
		_, err := c.guard.dial(context.Background(), "tcp", net.JoinHostPort(host, port))
		var ae *addrError
		if !errors.As(err, &ae) || ae.class != classLoopback {
			t.Errorf("dial %s: %v, want a refusal for a loopback address", host, err)
		}
	}
	// Once a configured URL was reached at a loopback address, loopback
	// redirect targets are allowed (the test setups of this package).
	if _, _, _, err := c.GetBytes(context.Background(), target+"/x", 1<<20, Validators{}); err != nil {
		t.Fatal(err)
	}
	conn, err := c.guard.dial(context.Background(), "tcp", net.JoinHostPort("localhost", port))
	if err != nil {
		t.Fatalf("after a loopback configured URL: %v", err)
	}
	conn.Close()
	// A proxy on loopback does not count as a configured URL.
	pc := testClient(Config{Proxy: target})
	if _, _, _, err := pc.GetBytes(context.Background(), "http://archive.example.org/x", 1<<20, Validators{}); err != nil {
		t.Fatal(err)
	}
	if pc.guard.allows(classLoopback) {
		t.Error("a loopback proxy allowed loopback redirect targets")
	}
}

func TestClassOf(t *testing.T) {
	for addr, want := range map[string]addrClass{
		"127.0.0.1": classLoopback, "127.0.0.2": classLoopback, "::1": classLoopback, "::ffff:127.0.0.1": classLoopback,
		"10.1.2.3": classPrivate, "172.16.0.1": classPrivate, "192.168.1.1": classPrivate, "fd00::1": classPrivate, "100.64.0.1": classPrivate,
		"169.254.169.254": classLinkLocal, "fe80::1": classLinkLocal, "64:ff9b::a9fe:a9fe": classLinkLocal,
		"0.0.0.0": classOther, "::": classOther, "224.0.0.1": classOther,
		"192.0.2.1": classPublic, "2001:db8::1": classPublic, "93.184.216.34": classPublic,
	} {
		if got := classOf(netip.MustParseAddr(addr)); got != want {
			t.Errorf("classOf(%s) = %s, want %s", addr, got, want)
		}
	}
}

func TestParseRedirectHost(t *testing.T) {
	for _, ok := range []string{"cdn.example.org", "cdn.example.org:8080", "192.0.2.1", "[2001:db8::1]:443", "2001:db8::1"} {
		if err := ParseRedirectHost(ok); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "http://cdn.example.org", "cdn.example.org/debian", "*.example.org", "cdn.example.org:0", "cdn.example.org:x", "user@cdn.example.org", ":80"} {
		if err := ParseRedirectHost(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestLowSpeedAborts: a body trickled at 5 bytes per second, below a
// LowSpeedLimit of 100 over 1s, is aborted and retried each time, and the
// whole fetch fails within (attempts × LowSpeedTime) plus slack, although
// bytes keep arriving well within the stall Timeout.
func TestLowSpeedAborts(t *testing.T) {
	body := randBytes(t, 1000)
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1000")
		for i := range body {
			if _, err := w.Write(body[i : i+1]); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			select {
			case <-time.After(200 * time.Millisecond):
			case <-r.Context().Done():
				return
			}
		}
	})
	c := testClient(Config{Retries: 2, Timeout: 10 * time.Second, LowSpeedLimit: 100, LowSpeedTime: time.Second})
	start := time.Now()
	_, err := c.Get(context.Background(), srv.URL+"/f", toPath(filepath.Join(t.TempDir(), "f")), wantOf(body))
	d := time.Since(start)
	if err == nil || !strings.Contains(err.Error(), "low_speed_limit") {
		t.Fatalf("err = %v", err)
	}
	if d < 3*time.Second || d > 8*time.Second {
		t.Errorf("3 slow attempts took %v, want about 3s", d)
	}
	if srv.count("/f") != 3 {
		t.Errorf("%d requests, want 3", srv.count("/f"))
	}
}

// TestLowSpeedPassesSteadyTransfer: a transfer that is slow but above the
// limit completes even when it takes several LowSpeedTimes.
func TestLowSpeedPassesSteadyTransfer(t *testing.T) {
	body := randBytes(t, 3000)
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "3000")
		for i := 0; i < len(body); i += 100 {
			w.Write(body[i : i+100])
			w.(http.Flusher).Flush()
			time.Sleep(50 * time.Millisecond) // 2000 bytes/s
		}
	})
	c := testClient(Config{Retries: -1, LowSpeedLimit: 500, LowSpeedTime: 300 * time.Millisecond})
	if _, err := c.Get(context.Background(), srv.URL+"/f", toPath(filepath.Join(t.TempDir(), "f")), wantOf(body)); err != nil {
		t.Fatal(err)
	}
}

// TestNonHTTPResponseNotQuoted: a server that answers with something other
// than HTTP gets an error that says so, without its bytes.
func TestNonHTTPResponseNotQuoted(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				bufio.NewReader(conn).ReadString('\n')
				conn.Write([]byte("HTTP/1.1 " + marker + " redis ready\r\n\r\n"))
			}()
		}
	}()
	c := testClient(Config{Retries: -1})
	_, _, _, err = c.GetBytes(context.Background(), "http://"+ln.Addr().String()+"/InRelease", 1<<20, Validators{})
	if err == nil || strings.Contains(err.Error(), marker) || strings.Contains(err.Error(), "redis") {
		t.Fatalf("err = %v", err)
	}
	if !strings.Contains(err.Error(), "not shown") {
		t.Errorf("error does not say that text was left out: %v", err)
	}
}

// TestInterruptedNamesSlowFile: a context deadline with a cause ends a
// slow transfer; the error carries the cause, and Interrupted names the
// file.
func TestInterruptedNamesSlowFile(t *testing.T) {
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100")
		w.Write([]byte("x"))
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	})
	cause := errors.New("max_sync_duration exceeded")
	ctx, cancel := context.WithTimeoutCause(context.Background(), 300*time.Millisecond, cause)
	defer cancel()
	c := testClient(Config{})
	_, err := c.Get(ctx, srv.URL+"/slow.deb", toPath(filepath.Join(t.TempDir(), "f")), Want{Size: 100, SHA256: strings.Repeat("0", 64)})
	if !errors.Is(err, cause) || !strings.Contains(err.Error(), "/slow.deb") {
		t.Fatalf("err = %v", err)
	}
	in := c.Interrupted()
	if len(in) != 1 || !strings.HasSuffix(in[0].URL, "/slow.deb") || in[0].Bytes != 1 || in[0].Running < 200*time.Millisecond {
		t.Errorf("Interrupted = %+v", in)
	}
}

// TestHeadersBounded: response headers trickled a byte at a time (never
// stalling for Timeout) fail after Timeout, and a response with more than
// 64 KiB of headers fails at once.
func TestHeadersBounded(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				bufio.NewReader(conn).ReadString('\n')
				for _, b := range []byte("HTTP/1.1 200 OK\r\nX-Slow: " + strings.Repeat("a", 1000)) {
					if _, err := conn.Write([]byte{b}); err != nil {
						return
					}
					time.Sleep(50 * time.Millisecond)
				}
			}()
		}
	}()
	c := testClient(Config{Retries: -1, Timeout: 500 * time.Millisecond})
	start := time.Now()
	if _, _, _, err := c.GetBytes(context.Background(), "http://"+ln.Addr().String()+"/InRelease", 1<<20, Validators{}); err == nil {
		t.Fatal("trickled headers accepted")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("trickled headers took %v to fail with Timeout 500ms", d)
	}

	big := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Big", strings.Repeat("b", 100<<10))
		w.Write([]byte("x"))
	})
	if _, _, _, err := c.GetBytes(context.Background(), big.URL+"/x", 1<<20, Validators{}); err == nil {
		t.Error("100 KiB of headers accepted")
	}
}
