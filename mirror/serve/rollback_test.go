package serve

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"gatehouse/mirror/store"
)

// TestRollbackNotModified: publish A, publish B, roll back to A. A client
// (the real curl) holding B's InRelease asks with B's Last-Modified
// (If-Modified-Since, as apt does) or B's ETag (If-None-Match) and gets
// 200 with A's bytes, not 304; with A's own validators it gets 304. (The
// header is sent with -H: curl's -z would itself discard a 200 whose
// Last-Modified is older than the date, and report 304.)
func TestRollbackNotModified(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl not installed")
	}
	root := t.TempDir()
	st, err := store.Open(root, "debian")
	if err != nil {
		t.Fatal(err)
	}
	unlock, err := st.Lock(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	publish := func(content string) string {
		t.Helper()
		sn, err := st.NewSnapshot()
		if err != nil {
			t.Fatal(err)
		}
		p, err := sn.Path("dists/stable/InRelease")
		if err != nil {
			t.Fatal(err)
		}
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		id, err := sn.Commit(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	const a, b = "Origin: Example\nDate: A\n", "Origin: Example\nDate: B, a later one\n"
	idA := publish(a)
	time.Sleep(1100 * time.Millisecond) // HTTP dates have whole seconds
	publish(b)
	srv := (&fixture{root: root}).server(t, nil)
	url := srv.URL + "/debian/dists/stable/InRelease"

	// fetch runs curl with extra arguments and returns status, headers
	// and body.
	fetch := func(args ...string) (string, string, string) {
		t.Helper()
		dir := t.TempDir()
		hdr, body := filepath.Join(dir, "h"), filepath.Join(dir, "b")
		out, err := exec.Command(curl, append([]string{"-sS", "-o", body, "-D", hdr, "-w", "%{http_code}", url}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("curl %v: %v\n%s", args, err, out)
		}
		h, _ := os.ReadFile(hdr)
		bb, _ := os.ReadFile(body)
		return string(out), string(h), string(bb)
	}
	header := func(h, name string) string {
		m := regexp.MustCompile(`(?im)^` + name + `: (.*?)\r?$`).FindStringSubmatch(h)
		if m == nil {
			t.Fatalf("no %s header in\n%s", name, h)
		}
		return m[1]
	}
	code, h, body := fetch()
	if code != "200" || body != b {
		t.Fatalf("before rollback: %s %q", code, body)
	}
	lmB, etagB := header(h, "Last-Modified"), header(h, "ETag")
	if code, _, _ := fetch("-H", "If-Modified-Since: "+lmB); code != "304" {
		t.Fatalf("B's own Last-Modified before rollback: %s, want 304", code)
	}

	if err := st.Rollback(idA); err != nil {
		t.Fatal(err)
	}
	code, h, body = fetch("-H", "If-Modified-Since: "+lmB)
	if code != "200" || body != a {
		t.Fatalf("If-Modified-Since: %s (B's) after rollback to A: %s %q, want 200 with A's bytes", lmB, code, body)
	}
	lmA, etagA := header(h, "Last-Modified"), header(h, "ETag")
	if lmA == lmB || etagA == etagB {
		t.Fatalf("A and B share validators: Last-Modified %q/%q, ETag %q/%q", lmA, lmB, etagA, etagB)
	}
	if code, _, body := fetch("-H", "If-None-Match: "+etagB); code != "200" || body != a {
		t.Errorf("If-None-Match: B's ETag after rollback: %s %q, want 200 with A's bytes", code, body)
	}
	if code, _, _ := fetch("-H", "If-Modified-Since: "+lmA); code != "304" {
		t.Errorf("A's own Last-Modified: %s, want 304", code)
	}
	if code, _, _ := fetch("-H", "If-None-Match: "+etagA); code != "304" {
		t.Errorf("A's own ETag: %s, want 304", code)
	}
	if !strings.Contains(h, "X-Gatehouse-Snapshot: "+idA) {
		t.Errorf("served snapshot is not %s:\n%s", idA, h)
	}
}
