package apttest

import (
	"bytes"
	"net/http"
	"testing"
	"time"
)

// TestHostile checks the fixture itself: pass-through, Redirect (keeping
// the path), the same-host prefix, Body, Trickle's rate, and MarkerServer.
func TestHostile(t *testing.T) {
	srv, body := serverFixture(t)
	h := ServeHostile(t, srv.URL)
	m := ServeMarker(t, "127.0.0.2:0")
	if r := get(t, "GET", h.URL+"/dists/s/InRelease"); r.status != 200 || !bytes.Equal(r.body, body) {
		t.Fatalf("pass-through: %d", r.status)
	}

	h.Redirect("dists/", m.URL)
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Get(h.URL + "/dists/s/InRelease")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != m.URL+"/dists/s/InRelease" {
		t.Errorf("redirect: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if r := get(t, "GET", h.URL+"/"+SameHostPrefix+"/dists/s/InRelease"); r.status != 200 || !bytes.Equal(r.body, body) {
		t.Errorf("same-host prefix: %d", r.status)
	}
	if r := get(t, "GET", m.URL+"/anything"); !bytes.Contains(r.body, []byte(Marker)) || m.Hits() != 1 {
		t.Errorf("marker server: %q, %d hits", r.body, m.Hits())
	}

	h.Clear()
	h.Body("dists/s/InRelease", BodyWithMarker())
	if r := get(t, "GET", h.URL+"/dists/s/InRelease"); !bytes.Equal(r.body, BodyWithMarker()) {
		t.Errorf("body: %q", r.body)
	}

	h.Clear()
	h.Trickle("pool/", 256, 100*time.Millisecond) // 1 KiB in 4 pieces: ~300ms
	start := time.Now()
	r := get(t, "GET", h.URL+"/pool/main/h/hello/hello_1_amd64.deb", "Range", "bytes=10-")
	if d := time.Since(start); r.status != 200 || !bytes.Equal(r.body, body) || d < 250*time.Millisecond || d > 3*time.Second {
		t.Errorf("trickle: %d, %d bytes in %v", r.status, len(r.body), d)
	}
}
