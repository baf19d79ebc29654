package apttest

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func serverFixture(t *testing.T) (*Server, []byte) {
	t.Helper()
	dir := t.TempDir()
	body := bytes.Repeat([]byte("0123456789abcdef"), 64) // 1 KiB
	for _, p := range []string{"dists/s/InRelease", "dists/s/main/binary-amd64/Packages.xz", "pool/main/h/hello/hello_1_amd64.deb", "poolx"} {
		f := filepath.Join(dir, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f, body, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	outside := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(outside, []byte("secret"), 0o644)
	if err := os.Symlink(outside, filepath.Join(dir, "escape")); err != nil {
		t.Fatal(err)
	}
	return Serve(t, dir), body
}

type result struct {
	status int
	body   []byte
	err    error // error reading the body
	header http.Header
}

func get(t *testing.T, method, url string, hdr ...string) result {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	// A fresh transport per request: a dropped connection must not
	// affect the next request.
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return result{resp.StatusCode, b, err, resp.Header}
}

func TestServerPlain(t *testing.T) {
	s, body := serverFixture(t)
	u := s.URL + "/dists/s/InRelease"
	r := get(t, "GET", u)
	if r.status != 200 || !bytes.Equal(r.body, body) || r.err != nil {
		t.Fatalf("GET: %d %v", r.status, r.err)
	}
	etag, lm := r.header.Get("ETag"), r.header.Get("Last-Modified")
	if etag == "" || lm == "" || r.header.Get("Content-Length") != "1024" {
		t.Fatalf("missing validators: %v", r.header)
	}
	if r := get(t, "GET", u, "If-None-Match", etag); r.status != 304 || len(r.body) != 0 {
		t.Errorf("If-None-Match: %d", r.status)
	}
	if r := get(t, "GET", u, "If-Modified-Since", lm); r.status != 304 {
		t.Errorf("If-Modified-Since: %d", r.status)
	}
	if r := get(t, "GET", u, "If-Modified-Since", "Mon, 01 Jan 2001 00:00:00 GMT"); r.status != 200 {
		t.Errorf("old If-Modified-Since: %d", r.status)
	}
	if r := get(t, "HEAD", u); r.status != 200 || len(r.body) != 0 || r.header.Get("Content-Length") != "1024" {
		t.Errorf("HEAD: %d %v", r.status, r.header)
	}
	if r := get(t, "GET", u, "Range", "bytes=16-31"); r.status != 206 || string(r.body) != "0123456789abcdef" {
		t.Errorf("Range: %d %q", r.status, r.body)
	}
	for _, p := range []string{"/dists/s/Missing", "/dists/s", "/", "/escape", "/../../etc/passwd"} {
		if r := get(t, "GET", s.URL+p); r.status != 404 {
			t.Errorf("GET %s: %d, want 404", p, r.status)
		}
	}
	if r := get(t, "POST", u); r.status != 405 {
		t.Errorf("POST: %d", r.status)
	}
	log := s.Requests()
	if log[0] != "dists/s/InRelease" || log[1] != "dists/s/InRelease (conditional)" || !slices.Contains(log, "HEAD dists/s/InRelease") {
		t.Errorf("request log: %q", log)
	}
	if n := s.Count("dists/s/InRelease"); n != 7 {
		t.Errorf("Count = %d, want 7", n)
	}
	if rl := s.RequestLog(); rl[1].Status != 304 || rl[0].Status != 200 {
		t.Errorf("logged statuses: %+v", rl[:2])
	}
	s.ResetRequests()
	if len(s.Requests()) != 0 {
		t.Error("ResetRequests kept entries")
	}
	s.Close()
	if _, err := http.Get(u); err == nil {
		t.Error("GET after Close succeeded")
	}
}

func TestServerFaults(t *testing.T) {
	s, body := serverFixture(t)
	deb := "pool/main/h/hello/hello_1_amd64.deb"

	t.Run("status and Times", func(t *testing.T) {
		s.SetFault(deb, Fault{Status: 404, Times: 1})
		if r := get(t, "GET", s.URL+"/"+deb); r.status != 404 {
			t.Errorf("first: %d", r.status)
		}
		if r := get(t, "GET", s.URL+"/"+deb); r.status != 200 || !bytes.Equal(r.body, body) {
			t.Errorf("second: %d", r.status)
		}
		s.SetFault("dists/*/InRelease", Fault{Status: 500})
		for range 2 {
			if r := get(t, "GET", s.URL+"/dists/s/InRelease"); r.status != 500 {
				t.Errorf("glob 500: %d", r.status)
			}
		}
		s.SetFault("pool", Fault{Status: 503})
		if r := get(t, "GET", s.URL+"/"+deb); r.status != 503 {
			t.Errorf("prefix: %d", r.status)
		}
		if r := get(t, "GET", s.URL+"/poolx"); r.status != 200 {
			t.Errorf("prefix matched beyond a path element: %d", r.status)
		}
		s.SetFault(deb, Fault{Status: 410}) // set last: wins
		if r := get(t, "GET", s.URL+"/"+deb); r.status != 410 {
			t.Errorf("latest fault: %d", r.status)
		}
		s.ClearFaults()
		if r := get(t, "GET", s.URL+"/dists/s/InRelease"); r.status != 200 {
			t.Errorf("after ClearFaults: %d", r.status)
		}
	})

	t.Run("truncate", func(t *testing.T) {
		defer s.ClearFaults()
		s.SetFault(deb, Fault{TruncateAt: 100, FlipByte: -1})
		r := get(t, "GET", s.URL+"/"+deb)
		if r.status != 200 || r.header.Get("Content-Length") != "1024" || len(r.body) != 100 || !errors.Is(r.err, io.ErrUnexpectedEOF) {
			t.Errorf("truncated: %d len %d err %v", r.status, len(r.body), r.err)
		}
		if !bytes.Equal(r.body, body[:100]) {
			t.Error("truncated body is not a prefix")
		}
		s.SetFault(deb, Fault{Truncate: true})
		if r := get(t, "GET", s.URL+"/"+deb); len(r.body) != 0 || r.err == nil {
			t.Errorf("truncate at 0: len %d err %v", len(r.body), r.err)
		}
		// Range is ignored while the body is faulted, so offsets are file
		// offsets.
		s.SetFault(deb, Fault{TruncateAt: 10})
		if r := get(t, "GET", s.URL+"/"+deb, "Range", "bytes=500-"); r.status != 200 || len(r.body) != 10 {
			t.Errorf("truncate with Range: %d len %d", r.status, len(r.body))
		}
	})

	t.Run("flip", func(t *testing.T) {
		defer s.ClearFaults()
		for _, f := range []Fault{{FlipByte: 700, TruncateAt: -1}, {Flip: true}, {FlipByte: 1023}} {
			s.SetFault(deb, f)
			r := get(t, "GET", s.URL+"/"+deb)
			if r.err != nil || len(r.body) != len(body) {
				t.Fatalf("flip %+v: %v len %d", f, r.err, len(r.body))
			}
			var diff []int
			for i := range body {
				if body[i] != r.body[i] {
					diff = append(diff, i)
				}
			}
			if len(diff) != 1 || int64(diff[0]) != f.FlipByte || r.body[diff[0]] != ^body[diff[0]] {
				t.Errorf("flip %+v changed bytes %v", f, diff)
			}
		}
	})

	t.Run("slow and delayed", func(t *testing.T) {
		defer s.ClearFaults()
		s.SetFault(deb, Fault{BytesPerSec: 4096}) // 1 KiB: about 0.25 s
		start := time.Now()
		r := get(t, "GET", s.URL+"/"+deb)
		if d := time.Since(start); d < 200*time.Millisecond || !bytes.Equal(r.body, body) {
			t.Errorf("throttled GET took %v (want >= 0.2s), body ok %v", d, bytes.Equal(r.body, body))
		}
		s.SetFault(deb, Fault{Delay: 300 * time.Millisecond, Times: 1})
		start = time.Now()
		r = get(t, "GET", s.URL+"/"+deb)
		if d := time.Since(start); d < 300*time.Millisecond || r.status != 200 {
			t.Errorf("delayed GET took %v, status %d", d, r.status)
		}
		get(t, "GET", s.URL+"/"+deb)
		if rl := s.RequestLog(); !rl[len(rl)-2].Fault || rl[len(rl)-1].Fault {
			t.Errorf("Times: 1 fault applied %v, %v", rl[len(rl)-2].Fault, rl[len(rl)-1].Fault)
		}
		// A client that gives up ends a delayed request.
		s.SetFault(deb, Fault{Delay: time.Hour})
		c := &http.Client{Timeout: 100 * time.Millisecond}
		if _, err := c.Get(s.URL + "/" + deb); err == nil {
			t.Error("no timeout")
		}
	})

	t.Run("changed between requests", func(t *testing.T) {
		defer s.ClearFaults()
		p := "dists/s/main/binary-amd64/Packages.xz"
		second := []byte("the new state")
		s.ChangeBetweenRequests(p, second)
		if r := get(t, "HEAD", s.URL+"/"+p); r.header.Get("Content-Length") != "1024" {
			t.Errorf("HEAD before first GET: %v", r.header)
		}
		r1 := get(t, "GET", s.URL+"/"+p)
		r2 := get(t, "GET", s.URL+"/"+p)
		r3 := get(t, "HEAD", s.URL+"/"+p)
		if !bytes.Equal(r1.body, body) || !bytes.Equal(r2.body, second) || r3.header.Get("Content-Length") != strconv.Itoa(len(second)) {
			t.Errorf("change: %q / %q / %v", r1.body[:8], r2.body, r3.header)
		}
		// A client holding the first version's validators gets the new one.
		if r := get(t, "GET", s.URL+"/"+p, "If-None-Match", r1.header.Get("ETag"), "If-Modified-Since", r1.header.Get("Last-Modified")); r.status != 200 || !bytes.Equal(r.body, second) {
			t.Errorf("conditional GET after change: %d %q", r.status, r.body)
		}
		s.ClearFaults()
		if r := get(t, "GET", s.URL+"/"+p); !bytes.Equal(r.body, body) {
			t.Error("ClearFaults kept the change")
		}
	})

	if !strings.Contains(strings.Join(s.Requests(), "\n"), deb) {
		t.Error("faulted requests not logged")
	}
}
