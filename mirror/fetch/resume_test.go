package fetch

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// flakyServer serves body with a strong ETag. The first response is cut off
// after cut bytes; later responses are produced by later(w, r, call).
type flakyServer struct {
	*server
	mu     sync.Mutex
	ranges []string // Range header of every request
	sent   atomic.Int64
}

func newFlakyServer(t *testing.T, body []byte, cut int, later func(w http.ResponseWriter, r *http.Request, call int)) *flakyServer {
	fs := &flakyServer{}
	var calls atomic.Int64
	fs.server = newServer(t, func(w http.ResponseWriter, r *http.Request) {
		fs.mu.Lock()
		fs.ranges = append(fs.ranges, r.Header.Get("Range"))
		fs.mu.Unlock()
		call := int(calls.Add(1))
		if call == 1 {
			w.Header().Set("ETag", `"v1"`)
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
			n, _ := w.Write(body[:cut])
			fs.sent.Add(int64(n))
			return // the server closes the connection: Content-Length unmet
		}
		later(&countingWriter{w, &fs.sent}, r, call)
	})
	return fs
}

type countingWriter struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.ResponseWriter.Write(p)
	c.n.Add(int64(n))
	return n, err
}

func serveWithRange(body []byte) func(w http.ResponseWriter, r *http.Request, call int) {
	return func(w http.ResponseWriter, r *http.Request, call int) {
		w.Header().Set("ETag", `"v1"`)
		http.ServeContent(w, r, "f", time.Unix(1e9, 0), bytes.NewReader(body))
	}
}

func TestGetResumes(t *testing.T) {
	body := randBytes(t, 1<<20)
	srv := newFlakyServer(t, body, 700<<10, serveWithRange(body))
	c := testClient(Config{})
	dest := filepath.Join(t.TempDir(), "big.deb")
	if _, err := c.Get(context.Background(), srv.URL+"/f", toPath(dest), wantOf(body)); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(dest); !bytes.Equal(got, body) {
		t.Fatal("resumed file differs")
	}
	if st := c.Stats(); st.Resumed != 1 {
		t.Errorf("stats %+v, want one resume", st)
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if len(srv.ranges) != 2 || srv.ranges[1] != fmt.Sprintf("bytes=%d-", 700<<10) {
		t.Errorf("Range headers %q, want a second request for the tail", srv.ranges)
	}
	if s := srv.sent.Load(); s != int64(len(body)) {
		t.Errorf("server sent %d bytes for a %d-byte file", s, len(body))
	}
}

func TestGetResumeFallbacks(t *testing.T) {
	body := randBytes(t, 256<<10)
	garbage := randBytes(t, len(body))
	cases := map[string]func(w http.ResponseWriter, r *http.Request, call int){
		// The server ignores Range: Get must start over, not append.
		"range-ignored": func(w http.ResponseWriter, r *http.Request, call int) {
			w.Write(body)
		},
		// The tail comes from another version of the file: the hash
		// fails, and Get fetches the whole file once more.
		"wrong-tail": func(w http.ResponseWriter, r *http.Request, call int) {
			if call == 2 {
				w.Header().Set("ETag", `"v1"`)
				http.ServeContent(w, r, "f", time.Unix(1e9, 0), bytes.NewReader(garbage))
				return
			}
			w.Write(body)
		},
		// A 206 for another range than asked: start over.
		"wrong-content-range": func(w http.ResponseWriter, r *http.Request, call int) {
			if call == 2 {
				w.Header().Set("Content-Range", fmt.Sprintf("bytes 0-99/%d", len(body)))
				w.WriteHeader(http.StatusPartialContent)
				w.Write(body[:100])
				return
			}
			w.Write(body)
		},
		// 416: start over.
		"range-not-satisfiable": func(w http.ResponseWriter, r *http.Request, call int) {
			if call == 2 {
				w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
				return
			}
			w.Write(body)
		},
	}
	for name, later := range cases {
		t.Run(name, func(t *testing.T) {
			srv := newFlakyServer(t, body, 100<<10, later)
			dest := filepath.Join(t.TempDir(), "f")
			if _, err := testClient(Config{}).Get(context.Background(), srv.URL+"/f", toPath(dest), wantOf(body)); err != nil {
				t.Fatal(err)
			}
			if got, _ := os.ReadFile(dest); !bytes.Equal(got, body) {
				t.Fatal("file differs")
			}
			if names := dirEntries(t, filepath.Dir(dest)); len(names) != 1 {
				t.Errorf("directory holds %v", names)
			}
		})
	}
}

func TestParseContentRange(t *testing.T) {
	for in, want := range map[string][3]int64{
		"bytes 0-99/100":                 {0, 99, 100},
		"bytes 100-199/*":                {100, 199, -1},
		"bytes 5-5/6":                    {5, 5, 6},
		"bytes 9-8/100":                  {-1},
		"bytes 0-100/100":                {-1},
		"bytes -1-5/10":                  {-1},
		"bytes +1-5/10":                  {-1},
		"bytes 1-5":                      {-1},
		"items 1-5/10":                   {-1},
		"bytes */100":                    {-1},
		"":                               {-1},
		"bytes 1-2/99999999999999999999": {-1},
	} {
		s, e, tot, ok := parseContentRange(in)
		if want[0] == -1 {
			if ok {
				t.Errorf("parseContentRange(%q) accepted", in)
			}
			continue
		}
		if !ok || s != want[0] || e != want[1] || tot != want[2] {
			t.Errorf("parseContentRange(%q) = %d %d %d %v", in, s, e, tot, ok)
		}
	}
}

func FuzzParseContentRange(f *testing.F) {
	for _, s := range []string{"bytes 0-99/100", "bytes 100-199/*", "bytes 9-8/100", "bytes 1-2/3x", "bytes 00-1/2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		start, end, total, ok := parseContentRange(s)
		if !ok {
			return
		}
		if start < 0 || end < start || (total != -1 && end >= total) {
			t.Fatalf("parseContentRange(%q) = %d %d %d: inconsistent", s, start, end, total)
		}
	})
}
