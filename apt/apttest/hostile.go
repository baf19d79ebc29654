package apttest

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Marker is the text a MarkerServer's pages and Hostile's Body answers are
// built around. Tests search errors, logs, state files and status pages for
// it: it must never appear there, because those bytes came from a server
// that nobody verified.
const Marker = "HOSTILE-MARKER-5be4c0de"

// Hostile is an upstream that misbehaves on purpose, in front of a real
// one: per path it redirects elsewhere, trickles the real bytes, or answers
// with a body of its choosing; every other request is passed to the
// upstream unchanged. It listens on 127.0.0.1 and is closed by t.Cleanup.
type Hostile struct {
	// URL is the repository root, "http://127.0.0.1:PORT", no trailing
	// slash.
	URL string

	upstream string
	hs       *httptest.Server

	mu    sync.Mutex
	rules []hostileRule
}

type hostileRule struct {
	pattern string // as for Server.SetFault
	// redirect: target base URL; the path below pattern's match is kept.
	redirect string
	status   int
	// trickle: n bytes per every.
	n     int
	every time.Duration
	// body replaces the content.
	body []byte
}

// SameHostPrefix is a directory of every Hostile that serves the upstream's
// root again, without rules: Redirect(pattern, h.URL+"/"+SameHostPrefix)
// is a redirect to the same scheme, host and port that leads to the same
// file.
const SameHostPrefix = "same-host"

// ServeHostile starts a Hostile in front of upstream (an archive root URL,
// such as Server.URL).
func ServeHostile(t testing.TB, upstream string) *Hostile {
	t.Helper()
	h := &Hostile{upstream: strings.TrimRight(upstream, "/")}
	h.hs = httptest.NewServer(http.HandlerFunc(h.handle))
	h.URL = h.hs.URL
	t.Cleanup(func() {
		h.hs.CloseClientConnections()
		h.hs.Close()
	})
	return h
}

func (h *Hostile) add(r hostileRule) {
	h.mu.Lock()
	defer h.mu.Unlock()
	r.pattern = strings.TrimPrefix(r.pattern, "/")
	h.rules = append(h.rules, r)
}

// Clear removes every rule: the Hostile then passes everything through.
func (h *Hostile) Clear() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.rules = nil
}

// Redirect answers requests for paths matching pattern (as in
// Server.SetFault) with a 302 to base + "/" + the requested path, so that
// redirecting to another Hostile, Server or MarkerServer root keeps the
// archive layout.
func (h *Hostile) Redirect(pattern, base string) {
	h.add(hostileRule{pattern: pattern, redirect: strings.TrimRight(base, "/"), status: http.StatusFound})
}

// Trickle serves the upstream's bytes for matching paths n bytes at a time,
// one piece every interval, with the full Content-Length announced: the
// transfer never stalls, it is only too slow to finish.
func (h *Hostile) Trickle(pattern string, n int, every time.Duration) {
	h.add(hostileRule{pattern: pattern, n: max(n, 1), every: every})
}

// Body answers matching paths with 200 and body instead of the upstream's
// file (use BodyWithMarker for a page that must never be quoted).
func (h *Hostile) Body(pattern string, body []byte) {
	h.add(hostileRule{pattern: pattern, body: append([]byte(nil), body...)})
}

// BodyWithMarker is a page that is not a signed message, carrying Marker
// on its first line and further down: what an internal service, a captive
// portal or an error page might send.
func BodyWithMarker() []byte {
	return []byte(Marker + " internal service\n<html><body>token=" + Marker + "</body></html>\n")
}

func (h *Hostile) rule(p string) (hostileRule, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i := len(h.rules) - 1; i >= 0; i-- {
		if matchFault(h.rules[i].pattern, p) {
			return h.rules[i], true
		}
	}
	return hostileRule{}, false
}

func (h *Hostile) handle(w http.ResponseWriter, r *http.Request) {
	p := strings.TrimPrefix(path.Clean("/"+r.URL.Path), "/")
	if rest, via := strings.CutPrefix(p, SameHostPrefix+"/"); via {
		// The target of a same-host redirect: no rule applies.
		h.proxy(w, r, rest, hostileRule{}, false)
		return
	}
	rule, ok := h.rule(p)
	switch {
	case ok && rule.redirect != "":
		http.Redirect(w, r, rule.redirect+"/"+p, rule.status)
		return
	case ok && rule.body != nil:
		w.Header().Set("Content-Length", strconv.Itoa(len(rule.body)))
		w.Write(rule.body)
		return
	}
	h.proxy(w, r, p, rule, ok)
}

// proxy passes the request for p to the upstream, trickled when ok (rule
// is then a Trickle).
func (h *Hostile) proxy(w http.ResponseWriter, r *http.Request, p string, rule hostileRule, ok bool) {
	req, err := http.NewRequestWithContext(r.Context(), r.Method, h.upstream+"/"+p, nil)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	for _, k := range []string{"If-None-Match", "If-Modified-Since", "Range", "If-Range"} {
		if v := r.Header.Get(k); v != "" && !ok { // a trickle always sends the whole file
			req.Header.Set(k, v)
		}
	}
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for _, k := range []string{"Content-Length", "Content-Range", "ETag", "Last-Modified", "Content-Type"} {
		if v := resp.Header.Get(k); v != "" {
			w.Header().Set(k, v)
		}
	}
	w.WriteHeader(resp.StatusCode)
	if !ok {
		io.Copy(w, resp.Body)
		return
	}
	rc := http.NewResponseController(w)
	buf := make([]byte, rule.n)
	t := time.NewTicker(rule.every)
	defer t.Stop()
	for {
		n, err := io.ReadFull(resp.Body, buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return
			}
			rc.Flush()
		}
		if err != nil {
			return
		}
		select {
		case <-t.C:
		case <-r.Context().Done():
			return
		}
	}
}

// MarkerServer answers every request with 200 and BodyWithMarker: the
// stand-in for an internal service (a metadata endpoint, an admin page)
// that a redirect must never reach. It counts the requests it got.
type MarkerServer struct {
	URL string

	mu   sync.Mutex
	hits int
}

// ServeMarker starts a MarkerServer on addr, such as "127.0.0.2:0" (on
// Linux every 127.0.0.0/8 address is local). It skips the test when addr
// cannot be bound.
func ServeMarker(t testing.TB, addr string) *MarkerServer {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("apttest: cannot listen on %s: %v", addr, err)
	}
	m := &MarkerServer{}
	hs := &httptest.Server{Listener: ln, Config: &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.mu.Lock()
		m.hits++
		m.mu.Unlock()
		w.Write(BodyWithMarker())
	})}}
	hs.Start()
	m.URL = hs.URL
	t.Cleanup(hs.Close)
	return m
}

// Hits is how many requests the MarkerServer answered.
func (m *MarkerServer) Hits() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.hits
}

// HostPort is the MarkerServer's "host:port", as a redirect_hosts entry
// names it.
func (m *MarkerServer) HostPort() string { return strings.TrimPrefix(m.URL, "http://") }

// String names the server in test messages.
func (m *MarkerServer) String() string { return fmt.Sprintf("marker server %s", m.URL) }
