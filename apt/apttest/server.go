package apttest

import (
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path"
	"strings"
	"sync"
	"testing"
	"time"
)

// Server serves a repository directory over HTTP on 127.0.0.1 with
// injectable faults, and records every request. It answers GET and HEAD
// with http.ServeContent semantics: Content-Length, Last-Modified and an
// ETag, conditional requests (If-Modified-Since, If-None-Match → 304) and
// Range. It never lists directories.
type Server struct {
	// URL is the repository root, "http://127.0.0.1:PORT" without a
	// trailing slash.
	URL string
	// Dir is the directory served.
	Dir string

	hs        *httptest.Server
	root      *os.Root
	closeOnce sync.Once

	mu      sync.Mutex
	faults  []*faultEntry
	changes map[string]*change
	log     []Request
}

// Fault describes what goes wrong when a matching path is requested. The
// zero Fault changes nothing, so Fault{Status: 500} is just a 500. Offsets
// follow the "-1 means none" convention, and 0 also means none unless the
// matching Truncate or Flip flag is set (so that offset 0 stays expressible).
type Fault struct {
	// Status, when non-zero, is answered instead of the file (404, 500...).
	Status int
	// Delay is waited before anything is sent (or until the client gives up).
	Delay time.Duration
	// BytesPerSec, when positive, throttles the body to about that rate.
	BytesPerSec int
	// TruncateAt, when positive (or zero with Truncate), announces the full
	// Content-Length, sends that many bytes of the body and then drops the
	// connection, as a dying upstream does.
	TruncateAt int64
	// Truncate enables TruncateAt = 0 (headers only, then drop).
	Truncate bool
	// FlipByte, when positive (or zero with Flip), inverts the bits of the
	// byte at that file offset. Offsets beyond the end change nothing.
	FlipByte int64
	// Flip enables FlipByte = 0.
	Flip bool
	// Times, when positive, limits the fault to the first Times matching
	// requests; 0 means every request.
	Times int
}

// NoFault is a Fault that does nothing, spelled with the explicit -1
// offsets; start from it when building a fault field by field.
var NoFault = Fault{TruncateAt: -1, FlipByte: -1}

func (f Fault) truncates() bool { return (f.Truncate && f.TruncateAt >= 0) || f.TruncateAt > 0 }
func (f Fault) flips() bool     { return (f.Flip && f.FlipByte >= 0) || f.FlipByte > 0 }

// touchesBody reports whether the fault changes the bytes of the body, in
// which case Range is ignored so that offsets are file offsets.
func (f Fault) touchesBody() bool { return f.truncates() || f.flips() || f.BytesPerSec > 0 }

type faultEntry struct {
	pattern string
	f       Fault
	used    int
}

type change struct {
	second []byte
	mod    time.Time
	gets   int
}

// Request is one logged request.
type Request struct {
	Method string
	Path   string // relative to the repository root, no leading slash
	// Conditional is true when the request carried If-Modified-Since or
	// If-None-Match.
	Conditional bool
	Range       string // the Range header, if any
	Status      int    // status sent (0 if the handler aborted before writing)
	Fault       bool   // a fault applied to this request
}

// Serve starts a Server for dir on 127.0.0.1 that is closed by t.Cleanup.
func Serve(t testing.TB, dir string) *Server {
	t.Helper()
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatalf("apttest: serve %s: %v", dir, err)
	}
	s := &Server{Dir: dir, root: root, changes: map[string]*change{}}
	s.hs = httptest.NewServer(http.HandlerFunc(s.handle))
	s.URL = s.hs.URL
	t.Cleanup(s.Close)
	return s
}

// Close stops the server (clients then get "connection refused", as from
// an upstream that is down) and drops open connections. It may be called
// more than once; Serve arranges a call at the end of the test.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		s.hs.CloseClientConnections()
		s.hs.Close()
		s.root.Close()
	})
}

// SetFault makes requests for matching paths fail as f describes. pattern
// is relative to the repository root ("pool/main/h/hello/hello_1.0_amd64.deb",
// "dists/stable/main/binary-amd64/Packages.xz"); it is a path.Match glob when
// it contains any of "*?[", and otherwise matches the path itself and every
// path below it (a prefix ending at a "/" boundary or at the end). Setting a
// pattern again replaces its fault; when several patterns match, the one set
// last wins.
func (s *Server) SetFault(pattern string, f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	pattern = strings.TrimPrefix(pattern, "/")
	for i, e := range s.faults {
		if e.pattern == pattern {
			s.faults = append(s.faults[:i], s.faults[i+1:]...)
			break
		}
	}
	s.faults = append(s.faults, &faultEntry{pattern: pattern, f: f})
}

// ClearFaults removes every fault and every ChangeBetweenRequests.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = nil
	s.changes = map[string]*change{}
}

// ChangeBetweenRequests makes the first GET of p return the file on disk and
// every later GET (and every HEAD after the first GET) return second, as an
// upstream that publishes between two requests. p is relative to the root.
func (s *Server) ChangeBetweenRequests(p string, second []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p = strings.TrimPrefix(p, "/")
	// The second version's Last-Modified must be after the first's, in
	// whole seconds, or a client's If-Modified-Since would get 304.
	mod := time.Now()
	if st, err := s.root.Stat(p); err == nil && st.ModTime().After(mod) {
		mod = st.ModTime()
	}
	s.changes[p] = &change{second: bytes.Clone(second), mod: mod.Add(time.Second).Truncate(time.Second)}
}

// Requests returns the paths of all requests so far, in order ("dists/
// stable/InRelease"), as "METHOD path" when the method is not GET and with
// " (conditional)" appended to conditional requests.
func (s *Server) Requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, len(s.log))
	for i, r := range s.log {
		e := r.Path
		if r.Method != http.MethodGet {
			e = r.Method + " " + e
		}
		if r.Conditional {
			e += " (conditional)"
		}
		out[i] = e
	}
	return out
}

// RequestLog returns a copy of the detailed request log.
func (s *Server) RequestLog() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.log...)
}

// Count returns how many requests were made for exactly path p.
func (s *Server) Count(p string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, r := range s.log {
		if r.Path == strings.TrimPrefix(p, "/") {
			n++
		}
	}
	return n
}

// ResetRequests empties the request log.
func (s *Server) ResetRequests() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.log = nil
}

func matchFault(pattern, p string) bool {
	if strings.ContainsAny(pattern, "*?[") {
		ok, _ := path.Match(pattern, p)
		return ok
	}
	if pattern == "" || pattern == p {
		return true
	}
	return strings.HasPrefix(p, strings.TrimSuffix(pattern, "/")+"/")
}

// take finds the fault for p and counts its use; it also records the
// request and resolves a pending change.
func (s *Server) take(r *http.Request, p string) (f Fault, faulted bool, content []byte, mod time.Time, idx int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := len(s.faults) - 1; i >= 0; i-- {
		e := s.faults[i]
		if !matchFault(e.pattern, p) {
			continue
		}
		if e.f.Times > 0 && e.used >= e.f.Times {
			continue
		}
		e.used++
		f, faulted = e.f, true
		break
	}
	if c, ok := s.changes[p]; ok {
		if c.gets > 0 {
			content, mod = c.second, c.mod
		}
		if r.Method == http.MethodGet {
			c.gets++
		}
	}
	s.log = append(s.log, Request{
		Method:      r.Method,
		Path:        p,
		Conditional: r.Header.Get("If-Modified-Since") != "" || r.Header.Get("If-None-Match") != "",
		Range:       r.Header.Get("Range"),
		Fault:       faulted,
	})
	return f, faulted, content, mod, len(s.log) - 1
}

func (s *Server) setStatus(idx, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if idx < len(s.log) && s.log[idx].Status == 0 {
		s.log[idx].Status = status
	}
}

func (s *Server) handle(w http.ResponseWriter, r *http.Request) {
	p := strings.TrimPrefix(path.Clean("/"+r.URL.Path), "/")
	f, faulted, content, mod, idx := s.take(r, p)
	sw := &statusWriter{ResponseWriter: w}
	defer func() { s.setStatus(idx, sw.status) }()
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(sw, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if faulted && f.Delay > 0 {
		t := time.NewTimer(f.Delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	if faulted && f.Status != 0 {
		http.Error(sw, http.StatusText(f.Status), f.Status)
		return
	}
	var body io.ReadSeeker
	if content != nil {
		body = bytes.NewReader(content)
	} else {
		if p == "" {
			http.NotFound(sw, r)
			return
		}
		file, err := s.root.Open(p)
		if err != nil {
			http.NotFound(sw, r)
			return
		}
		defer file.Close()
		st, err := file.Stat()
		if err != nil || !st.Mode().IsRegular() {
			http.NotFound(sw, r)
			return
		}
		body, mod = file, st.ModTime()
		w.Header().Set("ETag", fmt.Sprintf("%q", fmt.Sprintf("%x-%x", st.ModTime().UnixNano(), st.Size())))
	}
	if content != nil {
		w.Header().Set("ETag", fmt.Sprintf("%q", fmt.Sprintf("chg-%x-%x", mod.UnixNano(), len(content))))
	}
	if !faulted || !f.touchesBody() {
		http.ServeContent(sw, r, path.Base(p), mod, body)
		return
	}
	r.Header.Del("Range")
	fw := &faultWriter{statusWriter: sw, f: f, start: time.Now()}
	if f.truncates() {
		fw.limit = f.TruncateAt
	} else {
		fw.limit = -1
	}
	http.ServeContent(fw, r, path.Base(p), mod, body)
	if fw.cut {
		// Abort: the client sees a connection closed before the
		// announced Content-Length, as with a dropped upstream.
		panic(http.ErrAbortHandler)
	}
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// faultWriter damages, throttles or cuts the body as its Fault says.
type faultWriter struct {
	*statusWriter
	f     Fault
	off   int64
	limit int64 // -1: no truncation
	cut   bool
	start time.Time
}

func (w *faultWriter) Write(b []byte) (int, error) {
	total := len(b)
	for len(b) > 0 {
		chunk := b
		if w.f.BytesPerSec > 0 {
			chunk = b[:min(len(b), max(1, w.f.BytesPerSec/20))]
		}
		if w.limit >= 0 && w.off+int64(len(chunk)) > w.limit {
			chunk = chunk[:w.limit-w.off]
			w.cut = true
		}
		if w.f.flips() && w.f.FlipByte >= w.off && w.f.FlipByte < w.off+int64(len(chunk)) {
			chunk = bytes.Clone(chunk)
			chunk[w.f.FlipByte-w.off] ^= 0xff
		}
		if len(chunk) > 0 {
			if _, err := w.statusWriter.Write(chunk); err != nil {
				return 0, err
			}
		}
		w.off += int64(len(chunk))
		if w.f.BytesPerSec > 0 {
			if rc := http.NewResponseController(w.statusWriter.ResponseWriter); rc != nil {
				_ = rc.Flush()
			}
			due := w.start.Add(time.Duration(float64(w.off) / float64(w.f.BytesPerSec) * float64(time.Second)))
			time.Sleep(time.Until(due))
		}
		if w.cut {
			if rc := http.NewResponseController(w.statusWriter.ResponseWriter); rc != nil {
				_ = rc.Flush()
			}
			return 0, fs.ErrClosed
		}
		b = b[len(chunk):]
	}
	return total, nil
}
