// Package metrics holds the Prometheus metrics of one gatehouse process,
// for both halves: the mirror's freshness, read from each mirror's state on
// disk at scrape time (so a sync run by cron or a timer in its own process
// shows up in serve's metrics), and counters of what this process did (HTTP
// responses, refused connections, syncs, the bastion's audit events).
//
// It imports mirror and the bastion's typed audit events (bastion/record)
// but not the bastion itself: the bastion reports through its observer
// callback (see ObserveBastion), which keeps the dependency direction of
// DESIGN.md (cmd joins the halves).
package metrics

import (
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"gatehouse/bastion/record"
	"gatehouse/mirror"
)

// Metrics holds the Prometheus metrics of one gatehouse process. Mirror
// freshness is read from each mirror's state at scrape time; counters
// count what this process did. Its methods are safe for concurrent use.
type Metrics struct {
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
}

// New returns the metrics of a process whose mirrors (their state under
// stateDir) are mirrors; log receives a warning when a mirror's state
// cannot be read at scrape time (that mirror is then left out).
func New(stateDir string, mirrors []mirror.Config, log *slog.Logger) *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{
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

// ObserveRefused counts one HTTP connection refused at accept because the
// cap named by reason was reached (serve.Options.Refused).
func (m *Metrics) ObserveRefused(reason string) {
	m.connRefused.WithLabelValues(reason).Inc()
}

// ObserveSync counts one finished sync of mirror name: its result, and
// the bytes and files it fetched. rep may be nil (the sync failed before
// it had a report): it counts as failed.
func (m *Metrics) ObserveSync(name string, rep *mirror.Report, err error) {
	result := mirror.ResultFailed
	if rep != nil {
		result = rep.Result
		m.fetchedBytes.WithLabelValues(name).Add(float64(rep.BytesFetched))
		m.fetchedFiles.WithLabelValues(name).Add(float64(rep.FilesFetched))
	}
	m.syncs.WithLabelValues(name, result).Inc()
}

// ObserveBastion turns one of the bastion's audit events (as passed to
// bastion.Server.SetObserver) into metrics; event types it does not count
// are ignored.
func (m *Metrics) ObserveBastion(ev record.Event) {
	switch e := ev.(type) {
	case record.AuthAccepted:
		m.auth.WithLabelValues(e.Result, "").Inc()
	case record.AuthRefused:
		m.auth.WithLabelValues(e.Result, e.Reason).Inc()
	case record.ConnStart:
		m.connections.Inc()
	case record.ConnEnd:
		m.connections.Dec()
	case record.ForwardOpen:
		m.forwards.WithLabelValues("opened").Inc()
	case record.ForwardDenied:
		m.forwards.WithLabelValues("denied").Inc()
	case record.ForwardEnd:
		m.relayedBytes.WithLabelValues("in").Add(float64(e.BytesIn))
		m.relayedBytes.WithLabelValues("out").Add(float64(e.BytesOut))
	case record.AuditFailed:
		m.auditFailures.Inc()
	case record.RecordingFailed, record.SealFailed:
		m.recFailures.Inc()
	}
}

// Instrument wraps h so that its responses are counted by status code.
func (m *Metrics) Instrument(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
		h.ServeHTTP(sw, r)
		m.httpRequests.WithLabelValues(strconv.Itoa(sw.code)).Inc()
	})
}

// statusWriter remembers the status code h wrote (200 unless it said
// otherwise).
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
	// The last sync's figures come from the mirror's state, which every
	// sync writes (also one run by the timer or cron in its own process),
	// so they are right whichever process ran it.
	descLastDuration = prometheus.NewDesc("gatehouse_mirror_last_sync_duration_seconds", "How long the mirror's last sync took, from start to recording its result (garbage collection after a publish not included).", []string{"mirror"}, nil)
	descLastBytes    = prometheus.NewDesc("gatehouse_mirror_last_sync_fetched_bytes", "Bytes the mirror's last sync fetched from upstream and verified (whichever process ran it).", []string{"mirror"}, nil)
	descLastFiles    = prometheus.NewDesc("gatehouse_mirror_last_sync_fetched_files", "Files the mirror's last sync fetched from upstream and verified (whichever process ran it).", []string{"mirror"}, nil)
	// Package counts are recorded in the snapshot when it is made, so a
	// scrape reads one small manifest and parses no Packages file.
	descPackages = prometheus.NewDesc("gatehouse_mirror_packages", "Packages in each index of the published snapshot (architecture \"source\": source packages in a Sources index). A package for \"all\" is counted in every architecture's index that lists it.", []string{"mirror", "suite", "component", "architecture"}, nil)
	descWaiting  = prometheus.NewDesc("gatehouse_mirror_unpublished_snapshot_timestamp_seconds", "With publish = \"manual\": when the newest snapshot, staged and never published, was made (absent when none waits).", []string{"mirror"}, nil)
	descUploadOK = prometheus.NewDesc("gatehouse_mirror_upload_ok", "1 if the last upload of the mirror to the publish target succeeded, 0 if it failed (from the mirror's state, so uploads by timer-run syncs count).", []string{"mirror", "target"}, nil)
	descHookFail = prometheus.NewDesc("gatehouse_mirror_post_publish_failures", "Consecutive failed runs of the mirror's post_publish command, from its state (0 after a success; absent when none ran).", []string{"mirror"}, nil)
)

// Describe sends the descriptors of the mirror metrics.
func (c *mirrorCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descLastSuccess, descLastResult, descDate, descValidUntil, descPoolBytes, descPoolFiles, descPublished,
		descLastDuration, descLastBytes, descLastFiles, descPackages, descWaiting, descHookFail, descUploadOK} {
		ch <- d
	}
}

// statuses returns every mirror's status, from a cache of at most two
// seconds.
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

// Collect sends the current mirror metrics.
func (c *mirrorCollector) Collect(ch chan<- prometheus.Metric) {
	for _, st := range c.statuses() {
		if !st.LastSuccess.IsZero() {
			ch <- prometheus.MustNewConstMetric(descLastSuccess, prometheus.GaugeValue, float64(st.LastSuccess.Unix()), st.Mirror)
		}
		if st.LastSync != nil {
			ok := 0.0
			if mirror.SyncOK(st.LastSync.Result) {
				ok = 1
			}
			ch <- prometheus.MustNewConstMetric(descLastResult, prometheus.GaugeValue, ok, st.Mirror)
			ls := st.LastSync
			if !ls.Started.IsZero() && !ls.Finished.Before(ls.Started) {
				ch <- prometheus.MustNewConstMetric(descLastDuration, prometheus.GaugeValue, ls.Finished.Sub(ls.Started).Seconds(), st.Mirror)
			}
			ch <- prometheus.MustNewConstMetric(descLastBytes, prometheus.GaugeValue, float64(ls.Bytes), st.Mirror)
			ch <- prometheus.MustNewConstMetric(descLastFiles, prometheus.GaugeValue, float64(ls.Files), st.Mirror)
		}
		pub := 0.0
		if st.Published != "" {
			pub = 1
		}
		ch <- prometheus.MustNewConstMetric(descPublished, prometheus.GaugeValue, pub, st.Mirror)
		if st.Waiting != "" {
			ch <- prometheus.MustNewConstMetric(descWaiting, prometheus.GaugeValue, float64(st.WaitingSince.Unix()), st.Mirror)
		}
		if h := st.PostPublish; h != nil {
			ch <- prometheus.MustNewConstMetric(descHookFail, prometheus.GaugeValue, float64(h.Failures), st.Mirror)
		}
		for name, u := range st.Uploads {
			ok := 1.0
			if u.Error != "" {
				ok = 0
			}
			ch <- prometheus.MustNewConstMetric(descUploadOK, prometheus.GaugeValue, ok, st.Mirror, name)
		}
		ch <- prometheus.MustNewConstMetric(descPoolBytes, prometheus.GaugeValue, float64(st.PoolBytes), st.Mirror)
		ch <- prometheus.MustNewConstMetric(descPoolFiles, prometheus.GaugeValue, float64(st.PoolFiles), st.Mirror)
		for _, s := range st.Suites {
			if !s.Date.IsZero() {
				ch <- prometheus.MustNewConstMetric(descDate, prometheus.GaugeValue, float64(s.Date.Unix()), st.Mirror, s.Suite)
			}
			if !s.ValidUntil.IsZero() {
				ch <- prometheus.MustNewConstMetric(descValidUntil, prometheus.GaugeValue, float64(s.ValidUntil.Unix()), st.Mirror, s.Suite)
			}
			for _, c := range s.Packages {
				ch <- prometheus.MustNewConstMetric(descPackages, prometheus.GaugeValue, float64(c.Packages), st.Mirror, s.Suite, c.Component, c.Architecture)
			}
		}
	}
}

// MirrorStatuses returns the status of every configured mirror whose state
// can be read, from the same cache of at most two seconds the scrapes use,
// so the status page and /metrics agree and neither walks a pool per
// request.
func (m *Metrics) MirrorStatuses() []*mirror.MirrorStatus { return m.mirrors.statuses() }

// Handler serves the Prometheus exposition of these metrics (/metrics).
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}
