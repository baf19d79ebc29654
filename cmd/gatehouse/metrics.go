package main

import (
	"html/template"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"gatehouse/mirror"
)

// metrics holds the Prometheus metrics of one gatehouse process. Mirror
// freshness is read from each mirror's state at scrape time (so a sync run
// by cron shows up in `serve`'s metrics); counters count what this process
// did.
type metrics struct {
	reg *prometheus.Registry

	httpRequests *prometheus.CounterVec
	connRefused  *prometheus.CounterVec
	syncs        *prometheus.CounterVec
	fetchedBytes *prometheus.CounterVec
	fetchedFiles *prometheus.CounterVec

	auth          *prometheus.CounterVec
	connections   prometheus.Gauge
	forwards      *prometheus.CounterVec
	relayedBytes  *prometheus.CounterVec
	auditFailures prometheus.Counter
	recFailures   prometheus.Counter

	mirrors *mirrorCollector
	// sessions is the status page's sessions section; nil shows none.
	sessions *sessionsView
}

func newMetrics(stateDir string, mirrors []mirror.Config, log *slog.Logger) *metrics {
	reg := prometheus.NewRegistry()
	m := &metrics{
		reg: reg,
		httpRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatehouse_http_requests_total", Help: "HTTP requests served to apt clients, by status code.",
		}, []string{"code"}),
		connRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatehouse_http_connections_refused_total",
			Help: "HTTP connections closed at accept because a [serve] cap was reached, by cap (max_conns, max_conns_per_source).",
		}, []string{"reason"}),
		syncs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatehouse_mirror_syncs_total", Help: "Mirror syncs run by this process, by result (published, current, failed, refused).",
		}, []string{"mirror", "result"}),
		fetchedBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatehouse_mirror_fetched_bytes_total", Help: "Bytes fetched from upstream and verified by this process's syncs.",
		}, []string{"mirror"}),
		fetchedFiles: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatehouse_mirror_fetched_files_total", Help: "Files fetched from upstream and verified by this process's syncs.",
		}, []string{"mirror"}),
		auth: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatehouse_bastion_auth_attempts_total", Help: "Bastion authentication attempts by result and refusal reason.",
		}, []string{"result", "reason"}),
		connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gatehouse_bastion_connections", Help: "Authenticated bastion connections currently open (connections still authenticating are counted per source in the audit log's preauth lines, not here).",
		}),
		forwards: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatehouse_bastion_forwards_total", Help: "Jump (direct-tcpip) forwards by result (opened, denied).",
		}, []string{"result"}),
		relayedBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatehouse_bastion_relayed_bytes_total", Help: "Bytes relayed through closed forwards, by direction (in = client to target).",
		}, []string{"direction"}),
		auditFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gatehouse_bastion_audit_failures_total", Help: "Audit log writes that failed (the bastion then fails closed).",
		}),
		recFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gatehouse_bastion_recording_failures_total", Help: "Session recordings that failed to be written.",
		}),
	}
	m.mirrors = &mirrorCollector{stateDir: stateDir, mirrors: mirrors, log: log}
	reg.MustRegister(m.httpRequests, m.connRefused, m.syncs, m.fetchedBytes, m.fetchedFiles, m.auth, m.connections, m.forwards,
		m.relayedBytes, m.auditFailures, m.recFailures,
		m.mirrors,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// observeRefused counts one HTTP connection refused at accept.
func (m *metrics) observeRefused(reason string) {
	m.connRefused.WithLabelValues(reason).Inc()
}

// observeSync counts one finished sync.
func (m *metrics) observeSync(name string, rep *mirror.Report, err error) {
	result := mirror.ResultFailed
	if rep != nil {
		result = rep.Result
		m.fetchedBytes.WithLabelValues(name).Add(float64(rep.BytesFetched))
		m.fetchedFiles.WithLabelValues(name).Add(float64(rep.FilesFetched))
	}
	m.syncs.WithLabelValues(name, result).Inc()
}

// observeBastion turns the bastion's audit events into metrics.
func (m *metrics) observeBastion(event string, f map[string]any) {
	str := func(k string) string { s, _ := f[k].(string); return s }
	num := func(k string) float64 {
		switch v := f[k].(type) {
		case int64:
			return float64(v)
		case int:
			return float64(v)
		case uint64:
			return float64(v)
		case float64:
			return v
		}
		return 0
	}
	switch event {
	case "auth":
		m.auth.WithLabelValues(str("result"), str("reason")).Inc()
	case "conn.start":
		m.connections.Inc()
	case "conn.end":
		m.connections.Dec()
	case "forward.open":
		m.forwards.WithLabelValues("opened").Inc()
	case "forward.denied":
		m.forwards.WithLabelValues("denied").Inc()
	case "forward":
		m.relayedBytes.WithLabelValues("in").Add(num("bytes_in"))
		m.relayedBytes.WithLabelValues("out").Add(num("bytes_out"))
	case "audit.failed":
		m.auditFailures.Inc()
	case "recording.failed":
		m.recFailures.Inc()
	}
	if m.sessions != nil && m.sessions.live != nil {
		m.sessions.live.observe(event, f)
	}
}

// instrument counts responses by status code.
func (m *metrics) instrument(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
		h.ServeHTTP(sw, r)
		m.httpRequests.WithLabelValues(strconv.Itoa(sw.code)).Inc()
	})
}

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int)        { w.code = code; w.ResponseWriter.WriteHeader(code) }
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// mirrorCollector reports each mirror's freshness from its state on disk,
// cached for two seconds because the pool size walks the pool.
type mirrorCollector struct {
	stateDir string
	mirrors  []mirror.Config
	log      *slog.Logger

	mu     sync.Mutex
	at     time.Time
	cached []*mirror.MirrorStatus
}

var (
	descLastSuccess = prometheus.NewDesc("gatehouse_mirror_last_success_timestamp_seconds", "When the mirror last synced successfully (published or already current).", []string{"mirror"}, nil)
	descLastResult  = prometheus.NewDesc("gatehouse_mirror_last_sync_ok", "1 if the mirror's last sync succeeded, 0 if it failed or was refused.", []string{"mirror"}, nil)
	descDate        = prometheus.NewDesc("gatehouse_mirror_upstream_date_timestamp_seconds", "Date of the upstream Release last accepted.", []string{"mirror", "suite"}, nil)
	descValidUntil  = prometheus.NewDesc("gatehouse_mirror_valid_until_timestamp_seconds", "Valid-Until of the Release served (absent when the Release has none).", []string{"mirror", "suite"}, nil)
	descPoolBytes   = prometheus.NewDesc("gatehouse_mirror_pool_bytes", "Bytes in the mirror's pool.", []string{"mirror"}, nil)
	descPoolFiles   = prometheus.NewDesc("gatehouse_mirror_pool_files", "Files in the mirror's pool.", []string{"mirror"}, nil)
	descPublished   = prometheus.NewDesc("gatehouse_mirror_published", "1 if the mirror has a published snapshot.", []string{"mirror"}, nil)
)

func (c *mirrorCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descLastSuccess, descLastResult, descDate, descValidUntil, descPoolBytes, descPoolFiles, descPublished} {
		ch <- d
	}
}

func (c *mirrorCollector) statuses() []*mirror.MirrorStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	if time.Since(c.at) < 2*time.Second && c.cached != nil {
		return c.cached
	}
	var out []*mirror.MirrorStatus
	for _, m := range c.mirrors {
		st, err := mirror.Status(c.stateDir, m, time.Now())
		if err != nil {
			c.log.Warn("metrics: mirror status unavailable", "mirror", m.Name, "err", err)
			continue
		}
		out = append(out, st)
	}
	c.cached, c.at = out, time.Now()
	return out
}

func (c *mirrorCollector) Collect(ch chan<- prometheus.Metric) {
	for _, st := range c.statuses() {
		if !st.LastSuccess.IsZero() {
			ch <- prometheus.MustNewConstMetric(descLastSuccess, prometheus.GaugeValue, float64(st.LastSuccess.Unix()), st.Mirror)
		}
		if st.LastSync != nil {
			ok := 0.0
			if st.LastSync.Result == mirror.ResultPublished || st.LastSync.Result == mirror.ResultCurrent {
				ok = 1
			}
			ch <- prometheus.MustNewConstMetric(descLastResult, prometheus.GaugeValue, ok, st.Mirror)
		}
		pub := 0.0
		if st.Published != "" {
			pub = 1
		}
		ch <- prometheus.MustNewConstMetric(descPublished, prometheus.GaugeValue, pub, st.Mirror)
		ch <- prometheus.MustNewConstMetric(descPoolBytes, prometheus.GaugeValue, float64(st.PoolBytes), st.Mirror)
		ch <- prometheus.MustNewConstMetric(descPoolFiles, prometheus.GaugeValue, float64(st.PoolFiles), st.Mirror)
		for _, s := range st.Suites {
			if !s.Date.IsZero() {
				ch <- prometheus.MustNewConstMetric(descDate, prometheus.GaugeValue, float64(s.Date.Unix()), st.Mirror, s.Suite)
			}
			if !s.ValidUntil.IsZero() {
				ch <- prometheus.MustNewConstMetric(descValidUntil, prometheus.GaugeValue, float64(s.ValidUntil.Unix()), st.Mirror, s.Suite)
			}
		}
	}
}

// handler is the HTTP surface of serve/run: /metrics, the status page at /,
// the player's assets under /_static/, recordings under /recordings/ (for
// clients in [status] sessions_from only), and the mirrors below.
// Mirror names cannot be "_static" or "recordings" (parseConfig).
func (m *metrics) handler(mirrors http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	mux.Handle("GET /{$}", m.pageHandler())
	mux.HandleFunc("GET /_static/{name}", serveStatic)
	mux.Handle("/_static/", http.NotFoundHandler())
	mux.HandleFunc("GET /recordings/{id}/{file}", m.sessions.serveRecording)
	mux.Handle("/recordings/", http.NotFoundHandler())
	mux.Handle("/", mirrors)
	return m.instrument(m.sessions.guardRecordings(mux))
}

var statusPage = template.Must(template.New("status").Funcs(template.FuncMap{
	"ts": func(t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		return t.UTC().Format("2006-01-02 15:04 UTC")
	},
}).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>gatehouse</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:15px/1.4 system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}
th{background:#f3f3f3}.ok{color:#176b26}.bad{color:#a40000;font-weight:bold}.warn{color:#8a5a00}
code{background:#f6f6f6;padding:0 .2em}
.nowrap{white-space:nowrap}.verify{min-width:10em}
</style></head><body>
<h1>gatehouse</h1>
<p>Verified APT mirrors served here. Metrics: <a href="/metrics">/metrics</a>.</p>
<h2>Mirrors</h2>
{{if not .Mirrors}}<p>No mirrors configured.</p>{{end}}
{{range .Mirrors}}
<h3 id="m-{{.Mirror}}">{{.Mirror}} <small>({{.Mode}})</small></h3>
<table>
<tr><th>published snapshot</th><td>{{if .Published}}{{.Published}}{{else}}<span class="bad">nothing published yet</span>{{end}}</td></tr>
<tr><th>last success</th><td>{{ts .LastSuccess}}</td></tr>
{{with .LastSync}}<tr><th>last sync</th><td>{{ts .Finished}}: <span class="{{if or (eq .Result "published") (eq .Result "current")}}ok{{else}}bad{{end}}">{{.Result}}</span>{{if .Error}} — {{.Error}}{{end}}</td></tr>{{end}}
<tr><th>pool</th><td>{{.PoolFiles}} files, {{.PoolBytes}} bytes</td></tr>
</table>
<table><tr><th>suite</th><th>upstream Date</th><th>Valid-Until</th><th></th></tr>
{{range .Suites}}<tr><td>{{.Suite}}</td><td>{{ts .Date}}</td><td>{{ts .ValidUntil}}</td><td>{{if .Warn}}<span class="warn">{{.Warn}}</span>{{else}}<span class="ok">ok</span>{{end}}</td></tr>{{end}}
</table>
{{range .Warnings}}<p class="warn">{{.}}</p>{{end}}
{{end}}
{{with .Sessions}}{{template "sessions" .}}{{end}}
<p><small>Generated {{ts .Now}}.</small></p>
</body></html>
`))

// pageHandler renders the read-only status page (no external assets, no
// scripts). Its sessions section appears only for clients inside [status]
// sessions_from.
func (m *metrics) pageHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Type", "text/html; charset=utf-8")
		h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		var sessions *sessionsData
		if m.sessions != nil {
			sessions = m.sessions.pageData(r)
			h.Set("Cache-Control", "no-store")
		}
		statusPage.Execute(w, map[string]any{"Mirrors": m.mirrors.statuses(), "Now": time.Now(), "Sessions": sessions})
	})
}
