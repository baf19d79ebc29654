// Package statuspage is the HTTP site that serve, run and the demo share:
// the verified mirrors below /, Prometheus metrics at /metrics, a
// read-only status page at / (mirror freshness for everyone; the bastion's
// live and recorded sessions for clients inside [status] sessions_from
// only), the vendored asciinema player under /_static/ and recording
// replay under /recordings/. It joins both halves (mirror state, bastion
// recordings and audit events), so it lives under cmd/gatehouse, apart
// from package main, which only wires it to the configuration.
//
// Who may see sessions is decided by the TCP peer address alone, never by
// X-Forwarded-For or similar headers; every /recordings URL is 404 to
// anyone else, and recordings are opened through an os.Root, so no path
// reaches outside recordings_dir.
package statuspage

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"path"
	"regexp"
	"strings"
	"time"

	"gatehouse/bastion/record"
	"gatehouse/cmd/gatehouse/metrics"
	"gatehouse/mirror"
)

// Config is the [status] table: who may see the bastion's sessions on the
// status page. The mirror part of the page is public (apt clients already
// see everything it shows); sessions and recordings are not.
type Config struct {
	// SessionsFrom lists the networks (CIDR, e.g. "127.0.0.0/8",
	// "10.1.2.0/24", "::1/128") whose clients see the sessions section and
	// may replay recordings. Empty (the default): nobody does; the page
	// shows no session information and every /recordings/ URL is 404.
	//
	// The client is identified by the TCP peer address, never by
	// X-Forwarded-For or similar headers: no proxy in front of gatehouse is
	// trusted, and any client can write such a header.
	SessionsFrom []string `toml:"sessions_from"`
}

// Prefixes parses SessionsFrom; an entry that is not a CIDR is an error
// naming it (and, for a bare address, the prefix length to add).
func (c Config) Prefixes() ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range c.SessionsFrom {
		p, err := netip.ParsePrefix(strings.TrimSpace(s))
		if err != nil {
			hint := ""
			if _, aerr := netip.ParseAddr(strings.TrimSpace(s)); aerr == nil {
				hint = " (a single address needs a prefix length: /32 for IPv4, /128 for IPv6)"
			}
			return nil, fmt.Errorf("sessions_from entry %q is not a CIDR like \"127.0.0.0/8\"%s", s, hint)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// webFS holds the vendored player (see web/README.md) and replay.js.
//
//go:embed web/asciinema-player.min.js web/asciinema-player.css web/replay.js web/LICENSE
var webFS embed.FS

// staticFile is one embedded asset with its content type and a content
// hash, which versions its URL so that it can be cached for a year.
type staticFile struct {
	data  []byte
	ctype string
	etag  string
}

var staticFiles = loadStatic()

func loadStatic() map[string]staticFile {
	types := map[string]string{
		".js":  "text/javascript; charset=utf-8",
		".css": "text/css; charset=utf-8",
		"":     "text/plain; charset=utf-8",
	}
	out := map[string]staticFile{}
	entries, err := fs.ReadDir(webFS, "web")
	if err != nil {
		panic(err) // embedded at build time: cannot fail
	}
	for _, e := range entries {
		data, err := webFS.ReadFile("web/" + e.Name())
		if err != nil {
			panic(err)
		}
		sum := sha256.Sum256(data)
		out[e.Name()] = staticFile{data: data, ctype: types[path.Ext(e.Name())], etag: hex.EncodeToString(sum[:8])}
	}
	return out
}

// staticURL is the cache-busting URL of an embedded asset.
func staticURL(name string) string {
	return "/_static/" + name + "?v=" + staticFiles[name].etag
}

// serveStatic serves an embedded asset; anything else under /_static/ is
// 404.
func serveStatic(w http.ResponseWriter, r *http.Request) {
	f, ok := staticFiles[r.PathValue("name")]
	if !ok {
		http.NotFound(w, r)
		return
	}
	h := w.Header()
	h.Set("Content-Type", f.ctype)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "public, max-age=31536000, immutable")
	h.Set("ETag", `"`+f.etag+`"`)
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(f.data))
}

// Options are what the site needs besides the metrics and the mirrors.
type Options struct {
	// Status says who may see sessions.
	Status Config
	// RecordingsDir is the bastion's recordings_dir, "" when it has none:
	// the page then lists no recordings and /recordings/ is all 404.
	RecordingsDir string
	// RecordingKey is the bastion's recording_key: the page verifies each
	// listed recording with RecordingKey+".pub". "" shows them unverified.
	RecordingKey string
	// Live says that a bastion runs in this process and reports to
	// Site.ObserveBastion, so the page lists active sessions; otherwise it
	// says the bastion runs elsewhere.
	Live bool
	// Log receives warnings about unreadable recordings and state.
	Log *slog.Logger
}

// Site is the HTTP surface described in the package comment. It is an
// http.Handler; its methods are safe for concurrent use.
type Site struct {
	handler  http.Handler
	metrics  *metrics.Metrics
	sessions *sessionsView
}

// New returns the site serving mirrors below / (mirror names cannot be
// "_static" or "recordings": the configuration refuses them), with m's
// metrics at /metrics and on the page. The error names a bad
// sessions_from entry.
func New(o Options, m *metrics.Metrics, mirrors http.Handler) (*Site, error) {
	allow, err := o.Status.Prefixes()
	if err != nil {
		return nil, fmt.Errorf("[status] %w", err)
	}
	sv := &sessionsView{allow: allow, log: o.Log, verified: map[string]verifyEntry{}, recDir: o.RecordingsDir}
	if o.RecordingKey != "" {
		sv.pubPath = o.RecordingKey + ".pub"
	}
	if o.Live {
		sv.live = newLiveSessions()
	}
	s := &Site{metrics: m, sessions: sv}
	s.handler = s.newHandler(mirrors)
	return s, nil
}

// ServeHTTP serves the site.
func (s *Site) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

// Metrics returns the metrics the site serves, for the callers that count
// syncs and refused connections.
func (s *Site) Metrics() *metrics.Metrics { return s.metrics }

// ObserveBastion is the observer to pass to bastion.Server.SetObserver:
// the metrics count the event, and (with Options.Live) the page's
// active-session table follows proxy.start, proxy.end and conn.end.
func (s *Site) ObserveBastion(ev record.Event) {
	s.metrics.ObserveBastion(ev)
	if s.sessions.live != nil {
		s.sessions.live.observe(ev)
	}
}

// allowed reports whether the request's TCP peer is inside sessions_from.
func (sv *sessionsView) allowed(r *http.Request) bool {
	if sv == nil || len(sv.allow) == 0 {
		return false
	}
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	ip := ap.Addr().Unmap()
	for _, p := range sv.allow {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// guardRecordings answers 404 for every /recordings URL unless the client
// may see sessions, and for any path that is not already clean (so a ".."
// never reaches the mux, which would redirect). Percent-encoded slashes
// stay inside one path segment and fail the id and channel patterns.
func (sv *sessionsView) guardRecordings(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		if p == "/recordings" || strings.HasPrefix(p, "/recordings/") {
			if !sv.allowed(r) || path.Clean(p) != p && p != "/recordings/" {
				http.NotFound(w, r)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

var (
	recIDPattern   = regexp.MustCompile(`^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$`)
	channelPattern = regexp.MustCompile(`^ch[0-9]{2,6}$`)
)

// replayCSP allows the embedded player and nothing else: scripts and
// styles from this origin, the cast fetched from this origin, and
// 'wasm-unsafe-eval' because the player compiles its terminal emulator
// from WebAssembly (it allows WebAssembly compilation, not eval).
const replayCSP = "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self' 'unsafe-inline'; " +
	"connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// serveRecording answers /recordings/{id}/{file}: chNN is the replay page,
// chNN.cast the asciicast itself. Anything else, an unknown recording or
// channel, or a client outside sessions_from is 404.
func (sv *sessionsView) serveRecording(w http.ResponseWriter, r *http.Request) {
	id, file := r.PathValue("id"), r.PathValue("file")
	ch, isCast := strings.CutSuffix(file, ".cast")
	if !sv.allowed(r) || sv.recDir == "" || !recIDPattern.MatchString(id) || !channelPattern.MatchString(ch) {
		http.NotFound(w, r)
		return
	}
	root, err := os.OpenRoot(sv.recDir)
	if err != nil {
		sv.log.Warn("status page: recordings dir unavailable", "dir", sv.recDir, "err", err)
		http.NotFound(w, r)
		return
	}
	defer root.Close()
	f, err := root.Open(id + "/" + ch + ".cast")
	if err != nil {
		http.NotFound(w, r)
		return
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		http.NotFound(w, r)
		return
	}
	h := w.Header()
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	h.Set("Referrer-Policy", "no-referrer")
	if isCast {
		// A live session's cast grows while it is served: ServeContent
		// sends the length it saw when it started, which always ends on
		// a line the recorder flushed whole.
		h.Set("Content-Type", "application/x-asciicast")
		h.Set("Content-Disposition", fmt.Sprintf("inline; filename=%q", id+"-"+ch+".cast"))
		http.ServeContent(w, r, "", time.Time{}, f)
		return
	}
	meta, err := readMetaIn(root, id)
	if err != nil {
		sv.log.Warn("status page: recording metadata unreadable", "recording", id, "err", err)
	}
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", replayCSP)
	err = replayPage.Execute(w, map[string]any{
		"ID": id, "Channel": ch, "Meta": meta,
		"Cast":   "/recordings/" + id + "/" + ch + ".cast",
		"CSS":    staticURL("asciinema-player.css"),
		"Player": staticURL("asciinema-player.min.js"),
		"Init":   staticURL("replay.js"),
	})
	if err != nil {
		sv.log.Debug("status page: replay page not sent", "err", err)
	}
}

// readMetaIn reads id/meta.json through root, bounded like record.List.
func readMetaIn(root *os.Root, id string) (*record.Meta, error) {
	f, err := root.Open(id + "/" + record.MetaFile)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 1<<20+1))
	if err != nil {
		return nil, err
	}
	if len(b) > 1<<20 {
		return nil, errors.New(record.MetaFile + ": larger than 1 MiB")
	}
	var m record.Meta
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%s: %w", record.MetaFile, err)
	}
	return &m, nil
}

var replayPage = template.Must(template.New("replay").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>replay {{.ID}} {{.Channel}} — gatehouse</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<link rel="stylesheet" href="{{.CSS}}">
<style>
body{font:15px/1.4 system-ui,sans-serif;margin:2em;color:#222}
code{background:#f6f6f6;padding:0 .2em}#player{max-width:1100px;margin:1em 0}
</style></head><body>
<p><a href="/">← status</a></p>
<h1>Recording <code>{{.ID}}</code>, channel {{.Channel}}</h1>
{{with .Meta}}<p>{{.Principal}} (key id <code>{{.KeyID}}</code>) from {{.Source}} to <code>{{.TargetLogin}}@{{.Target}}</code>, started {{.Start.UTC.Format "2006-01-02 15:04:05 UTC"}}.</p>{{end}}
<div id="player" data-cast="{{.Cast}}"></div>
<p><a href="{{.Cast}}">download the asciicast</a>; verify the recording with <code>gatehouse recordings verify {{.ID}}</code>.</p>
<script src="{{.Player}}"></script>
<script src="{{.Init}}"></script>
</body></html>
`))

// newHandler routes /metrics, the status page at /, the player's assets
// under /_static/, recordings under /recordings/ (for clients in [status]
// sessions_from only), and the mirrors below, every response counted.
func (s *Site) newHandler(mirrors http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", s.metrics.Handler())
	mux.Handle("GET /{$}", s.pageHandler())
	mux.HandleFunc("GET /_static/{name}", serveStatic)
	mux.Handle("/_static/", http.NotFoundHandler())
	mux.HandleFunc("GET /recordings/{id}/{file}", s.sessions.serveRecording)
	mux.Handle("/recordings/", http.NotFoundHandler())
	mux.Handle("/", mirrors)
	return s.metrics.Instrument(s.sessions.guardRecordings(mux))
}

// statusPage is the page at /; its "sessions" template is in sessions.go.
var statusPage = template.Must(template.New("status").Funcs(template.FuncMap{
	"totalPackages": mirror.TotalPackages,
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
{{if .Waiting}}<tr><th>waiting for publish</th><td><span class="warn">{{.Waiting}}</span> (made {{ts .WaitingSince}}; canary URL /{{.Mirror}}/snapshots/{{.Waiting}}/)</td></tr>{{end}}
{{with .PostPublish}}<tr><th>post_publish</th><td>{{ts .Finished}} for {{.Snapshot}}: {{if .OK}}<span class="ok">ok</span>{{else}}<span class="bad">failed</span> — {{.Error}}{{end}}</td></tr>{{end}}
{{with .LastSync}}<tr><th>last sync</th><td>{{ts .Finished}}: <span class="{{if or (eq .Result "published") (eq .Result "current") (eq .Result "staged")}}ok{{else}}bad{{end}}">{{.Result}}</span>{{if .Error}} — {{.Error}}{{end}}</td></tr>{{end}}
<tr><th>pool</th><td>{{.PoolFiles}} files, {{.PoolBytes}} bytes</td></tr>
</table>
<table><tr><th>suite</th><th>upstream Date</th><th>Valid-Until</th><th>packages</th><th></th></tr>
{{range .Suites}}<tr><td>{{.Suite}}</td><td>{{ts .Date}}</td><td>{{ts .ValidUntil}}</td><td>{{if .Packages}}{{totalPackages .Packages}} <small>({{range $i, $c := .Packages}}{{if $i}}, {{end}}{{$c.Component}}/{{$c.Architecture}} {{$c.Packages}}{{end}})</small>{{else}}—{{end}}</td><td>{{if .Warn}}<span class="warn">{{.Warn}}</span>{{else}}<span class="ok">ok</span>{{end}}</td></tr>{{end}}
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
func (s *Site) pageHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Type", "text/html; charset=utf-8")
		h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		var sessions *sessionsData
		if s.sessions != nil {
			sessions = s.sessions.pageData(r)
			h.Set("Cache-Control", "no-store")
		}
		statusPage.Execute(w, map[string]any{"Mirrors": s.metrics.MirrorStatuses(), "Now": time.Now(), "Sessions": sessions})
	})
}
