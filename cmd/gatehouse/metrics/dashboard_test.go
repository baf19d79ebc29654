package metrics

import (
	"context"
	"encoding/json"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"gatehouse/apt/apttest"
	"gatehouse/bastion/record"
	"gatehouse/mirror"
)

// syncedMirror syncs a small signed test archive (three binary packages,
// one of them "all", two source packages) into a new state directory and
// returns it, the mirror's config and the sync's report.
func syncedMirror(t *testing.T) (string, mirror.Config, *mirror.Report) {
	t.Helper()
	dir := t.TempDir()
	repo, err := apttest.Build(dir, apttest.NewKey(t, "ed25519"), apttest.Suite{
		Name: "stable", Codename: "lagoon", Components: []string{"main"}, Architectures: []string{"amd64"}, Sources: true,
		ValidUntil: time.Now().Add(7 * 24 * time.Hour),
		Packages: map[string][]apttest.Package{"main": {
			{Name: "hello", Version: "1.0-1", Arch: "amd64", Size: 3000},
			{Name: "hello-data", Source: "hello", Version: "1.0-1", Arch: "all"},
			{Name: "libgreet1", Source: "libgreet", Version: "1.2-1", Arch: "amd64"},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := apttest.Serve(t, dir)
	cfg := mirror.Config{Name: "deb", URL: srv.URL, Suites: []string{"stable"}, Components: []string{"main"},
		Architectures: []string{"amd64"}, Keyring: repo.KeyringPath, Sources: true}
	cfg.Defaults()
	state := t.TempDir()
	rep, err := mirror.Sync(context.Background(), state, cfg, mirror.Options{})
	if err != nil {
		t.Fatalf("sync: %v", err)
	}
	return state, cfg, rep
}

// TestMirrorMetricsFromState: a sync this Metrics never observed (as one
// run by the timer in its own process) shows on /metrics with its
// duration and the bytes and files it fetched, read from the mirror's
// state, and the published snapshot's package counts appear per index.
func TestMirrorMetricsFromState(t *testing.T) {
	state, cfg, rep := syncedMirror(t)
	m := New(state, []mirror.Config{cfg}, slog.New(slog.DiscardHandler))
	text := scrape(t, m)
	for _, want := range []string{
		`gatehouse_mirror_last_sync_fetched_bytes{mirror="deb"} ` + strconv.FormatInt(rep.BytesFetched, 10),
		`gatehouse_mirror_last_sync_fetched_files{mirror="deb"} ` + strconv.Itoa(rep.FilesFetched),
		`gatehouse_mirror_packages{architecture="amd64",component="main",mirror="deb",suite="stable"} 3`,
		`gatehouse_mirror_packages{architecture="source",component="main",mirror="deb",suite="stable"} 2`,
		`gatehouse_mirror_last_sync_ok{mirror="deb"} 1`,
	} {
		if !hasLine(text, want) {
			t.Errorf("exposition lacks %q:\n%s", want, grepLines(text, "gatehouse_mirror_"))
		}
	}
	if rep.BytesFetched == 0 {
		t.Error("the sync fetched nothing; the bytes check would prove nothing")
	}
	dur := -1.0
	for _, l := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(l, `gatehouse_mirror_last_sync_duration_seconds{mirror="deb"} `); ok {
			dur, _ = strconv.ParseFloat(v, 64)
		}
	}
	if dur <= 0 || dur > rep.Duration.Seconds()+1 {
		t.Errorf("last sync duration %v s; the sync reported %v", dur, rep.Duration)
	}
}

// TestDashboardAndAlertsUseExportedMetrics: the Grafana dashboard beside
// the alert rules is valid JSON in Grafana's import format, and every
// metric that it or the alert rules reference is exported on /metrics
// (with every kind of event observed, so that labelled counters exist).
func TestDashboardAndAlertsUseExportedMetrics(t *testing.T) {
	b, err := os.ReadFile("../../../configs/gatehouse-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title  string `json:"title"`
		UID    string `json:"uid"`
		Inputs []struct {
			Name, Type, PluginID string
		} `json:"__inputs"`
		Panels []json.RawMessage `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("dashboard is not valid JSON: %v", err)
	}
	if dash.Title == "" || dash.UID == "" || len(dash.Panels) < 5 || len(dash.Inputs) != 1 || dash.Inputs[0].PluginID != "prometheus" {
		t.Fatalf("dashboard lacks title, uid, panels or its Prometheus input: %+v", dash)
	}
	var exprs []string
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if s, ok := x.(string); ok && k == "expr" {
					exprs = append(exprs, s)
				}
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	var all any
	json.Unmarshal(b, &all)
	walk(all)
	if len(exprs) < 10 {
		t.Fatalf("found %d expressions in the dashboard; the test would check little", len(exprs))
	}
	alerts, err := os.ReadFile("../../../configs/gatehouse-alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	metricName := regexp.MustCompile(`\b(?:gatehouse|process|go)_[a-z0-9_]+`)
	names := map[string][]string{}
	for _, e := range exprs {
		for _, n := range metricName.FindAllString(e, -1) {
			names[n] = append(names[n], "dashboard")
		}
	}
	for _, n := range metricName.FindAllString(string(alerts), -1) {
		names[n] = append(names[n], "alerts")
	}

	state, cfg, _ := syncedMirror(t)
	m := New(state, []mirror.Config{cfg}, slog.New(slog.DiscardHandler))
	m.ObserveRefused("max_conns")
	m.ObserveSync("deb", &mirror.Report{Result: mirror.ResultPublished, BytesFetched: 1, FilesFetched: 1}, nil)
	for _, ev := range []record.Event{
		record.AuthAccepted{Result: "accepted"}, record.AuthRefused{Result: "refused", Reason: "test"},
		record.ConnStart{}, record.ForwardOpen{}, record.ForwardDenied{Reason: "test"}, record.ForwardEnd{},
		record.AuditFailed{Error: "test"}, record.RecordingFailed{Reason: "test"},
	} {
		m.ObserveBastion(ev)
	}
	m.Instrument(http.NotFoundHandler()).ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/nope", nil))
	text := "\n" + scrape(t, m)
	for _, n := range slices.Sorted(maps.Keys(names)) {
		if !strings.Contains(text, "\n# TYPE "+n+" ") {
			t.Errorf("%s (used by %s) is not exported on /metrics", n, strings.Join(slices.Compact(names[n]), ", "))
		}
	}
}

// grepLines returns the lines of text that contain s.
func grepLines(text, s string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
