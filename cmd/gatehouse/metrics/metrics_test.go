package metrics

import (
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"gatehouse/bastion/record"
	"gatehouse/mirror"
)

// scrape returns the exposition /metrics serves, fetched over real
// loopback HTTP through Instrument.
func scrape(t *testing.T, m *Metrics) string {
	t.Helper()
	srv := httptest.NewServer(m.Instrument(m.Handler()))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestObserve: every Observe method shows in the exposition with its
// labels, a sync without a report counts as failed, unknown bastion events
// are ignored, and Instrument counts responses by status code.
func TestObserve(t *testing.T) {
	m := New(t.TempDir(), nil, slog.New(slog.DiscardHandler))
	m.ObserveRefused("max_conns")
	m.ObserveSync("deb", &mirror.Report{Result: mirror.ResultPublished, BytesFetched: 1234, FilesFetched: 5}, nil)
	m.ObserveSync("deb", nil, errors.New("upstream unreachable"))
	m.ObserveBastion(record.AuthRefused{Result: "refused", Reason: "no certificate"})
	m.ObserveBastion(record.ConnStart{ConnRef: record.ConnRef{ID: "c1"}})
	m.ObserveBastion(record.ConnStart{ConnRef: record.ConnRef{ID: "c2"}})
	m.ObserveBastion(record.ConnEnd{ConnRef: record.ConnRef{ID: "c1"}})
	m.ObserveBastion(record.ForwardEnd{BytesIn: 10, BytesOut: 20})
	m.ObserveBastion(record.ProxyEnd{BytesIn: 99})
	h := m.Instrument(http.NotFoundHandler())
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/nope", nil))

	text := scrape(t, m)
	for _, want := range []string{
		`gatehouse_http_connections_refused_total{reason="max_conns"} 1`,
		`gatehouse_mirror_syncs_total{mirror="deb",result="published"} 1`,
		`gatehouse_mirror_syncs_total{mirror="deb",result="failed"} 1`,
		`gatehouse_mirror_fetched_bytes_total{mirror="deb"} 1234`,
		`gatehouse_mirror_fetched_files_total{mirror="deb"} 5`,
		`gatehouse_bastion_auth_attempts_total{reason="no certificate",result="refused"} 1`,
		`gatehouse_bastion_connections 1`,
		`gatehouse_bastion_relayed_bytes_total{direction="in"} 10`,
		`gatehouse_bastion_relayed_bytes_total{direction="out"} 20`,
		`gatehouse_http_requests_total{code="404"} 1`,
	} {
		if !hasLine(text, want) {
			t.Errorf("exposition lacks %q", want)
		}
	}
	// The scrape itself was counted (after it was served).
	if text := scrape(t, m); !hasLine(text, `gatehouse_http_requests_total{code="200"} 1`) {
		t.Errorf("the first scrape was not counted as a 200")
	}
}

// TestMirrorStatuses: a configured mirror that never synced is reported
// as not published, on /metrics and by MirrorStatuses alike.
func TestMirrorStatuses(t *testing.T) {
	cfg := mirror.Config{Name: "deb", URL: "http://127.0.0.1:1/debian", Suites: []string{"stable"}, Components: []string{"main"},
		Architectures: []string{"amd64"}, Keyring: "/nonexistent.gpg"}
	cfg.Defaults()
	m := New(t.TempDir(), []mirror.Config{cfg}, slog.New(slog.DiscardHandler))
	st := m.MirrorStatuses()
	if len(st) != 1 || st[0].Mirror != "deb" || st[0].Published != "" {
		t.Fatalf("statuses %+v", st)
	}
	if text := scrape(t, m); !hasLine(text, `gatehouse_mirror_published{mirror="deb"} 0`) {
		t.Errorf("exposition lacks the unpublished mirror:\n%s", text)
	}
}

// hasLine reports whether text has a line equal to want.
func hasLine(text, want string) bool {
	for _, l := range strings.Split(text, "\n") {
		if l == want {
			return true
		}
	}
	return false
}
