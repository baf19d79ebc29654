package statuspage

import (
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"gatehouse/bastion/record"
)

const (
	// maxRecentSessions bounds the recordings listed (and verified) per
	// page view.
	maxRecentSessions = 50
	// maxLiveSessions bounds the active-session set should proxy.end
	// events be lost (e.g. an audit write failed), so it cannot grow
	// without limit; sealed recordings are pruned from it anyway.
	maxLiveSessions = 10000
)

// sessionsView is the sessions half of the status page and the recording
// replay, shown only to clients inside [status] sessions_from.
type sessionsView struct {
	allow   []netip.Prefix
	recDir  string        // "" when no [bastion] recordings_dir
	pubPath string        // "" when no [bastion] recording_key
	live    *liveSessions // nil when the bastion runs in another process
	log     *slog.Logger

	metas record.MetaCache // the recordings' meta.json, read once each

	mu       sync.Mutex
	pub      ssh.PublicKey
	verified map[string]verifyEntry // by recording id
}

// verifyEntry caches record.Verify for one recording while its files (names,
// sizes, modification times) and the key stay the same: a sealed recording
// never changes, so the page re-hashes it only when something touched it.
type verifyEntry struct {
	key string
	err error
}

// liveSession is one proxied session the bastion in this process has
// started and not yet ended, from its proxy.start audit event.
type liveSession struct {
	Recording, Conn, Login, KeyID, Source, Target, TargetLogin string
	Start                                                      time.Time
}

// liveSessions follows the bastion's audit events (see Site.ObserveBastion).
type liveSessions struct {
	now func() time.Time

	mu    sync.Mutex
	byRec map[string]liveSession
}

func newLiveSessions() *liveSessions {
	return &liveSessions{now: time.Now, byRec: map[string]liveSession{}}
}

// observe keeps the set of active sessions from the bastion's
// record.ProxyStart, ProxyEnd and ConnEnd events.
func (l *liveSessions) observe(ev record.Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch e := ev.(type) {
	case record.ProxyStart:
		if e.Recording == "" || len(l.byRec) >= maxLiveSessions {
			return
		}
		l.byRec[e.Recording] = liveSession{Recording: e.Recording, Conn: e.ConnRef.ID, Login: e.Login, KeyID: e.KeyID,
			Source: e.Source, Target: e.Target, TargetLogin: e.TargetLogin, Start: l.now()}
	case record.ProxyEnd:
		delete(l.byRec, e.Recording)
	case record.ConnEnd:
		// Ends every proxied session of the connection, also one whose
		// proxy.end could not be written.
		for k, s := range l.byRec {
			if s.Conn == e.ConnRef.ID {
				delete(l.byRec, k)
			}
		}
	}
}

// list returns the active sessions, newest first.
func (l *liveSessions) list() []liveSession {
	l.mu.Lock()
	out := make([]liveSession, 0, len(l.byRec))
	for _, s := range l.byRec {
		out = append(out, s)
	}
	l.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Start.Equal(out[j].Start) {
			return out[i].Start.After(out[j].Start)
		}
		return out[i].Recording < out[j].Recording
	})
	return out
}

func (l *liveSessions) has(rec string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, ok := l.byRec[rec]
	return ok
}

// channelLink is one channel's replay link.
type channelLink struct{ Name, URL string }

// activeRow is one active session on the page.
type activeRow struct {
	ID, Start, Login, KeyID, Source, Target, Running string
	Channels                                         []channelLink
}

// sessionRow is one recording on the page.
type sessionRow struct {
	ID, Start, Principal, KeyID, Source, Target, Duration string
	Channels                                              []channelLink
	// State is "signature ok", "in progress" or what is wrong; Class
	// colours it (ok, warn, bad).
	State, Class string
	// Note reports a recording that sealed itself as failed.
	Note string
}

// sessionsData is what the "sessions" template renders.
type sessionsData struct {
	Live     bool // the bastion runs in this process
	Active   []activeRow
	RecDir   bool
	Recent   []sessionRow
	Total    int
	Problems []string
}

const stamp = "2006-01-02 15:04:05 UTC"

// pageData gathers the sessions section for r, or nil when r's client may
// not see sessions (the page then shows nothing about them).
func (sv *sessionsView) pageData(r *http.Request) *sessionsData {
	if !sv.allowed(r) {
		return nil
	}
	d := &sessionsData{Live: sv.live != nil, RecDir: sv.recDir != ""}
	now := time.Now()
	if sv.live != nil {
		for _, s := range sv.live.list() {
			d.Active = append(d.Active, activeRow{
				ID: s.Recording, Start: s.Start.UTC().Format(stamp), Login: s.Login, KeyID: record.Sanitize(s.KeyID, 80),
				Source: s.Source, Target: s.TargetLogin + "@" + s.Target, Running: now.Sub(s.Start).Round(time.Second).String(),
				Channels: sv.channels(s.Recording, nil),
			})
		}
	}
	if sv.recDir == "" {
		return d
	}
	metas, err := sv.metas.List(sv.recDir)
	switch {
	case err != nil && metas == nil && errors.Is(err, fs.ErrNotExist):
		// No session recorded yet: the bastion creates the directory.
	case err != nil:
		d.Problems = append(d.Problems, record.Sanitize(err.Error(), 500))
	}
	sort.SliceStable(metas, func(i, j int) bool { return metas[i].Start.After(metas[j].Start) })
	d.Total = len(metas)
	if len(metas) > maxRecentSessions {
		metas = metas[:maxRecentSessions]
	}
	seen := map[string]bool{}
	for _, m := range metas {
		if !recIDPattern.MatchString(m.ID) {
			d.Problems = append(d.Problems, fmt.Sprintf("a %s names the invalid recording id %q", record.MetaFile, record.Sanitize(m.ID, 80)))
			continue
		}
		seen[m.ID] = true
		d.Recent = append(d.Recent, sv.row(m, now))
	}
	sv.mu.Lock()
	for id := range sv.verified {
		if !seen[id] {
			delete(sv.verified, id)
		}
	}
	sv.mu.Unlock()
	return d
}

var castName = regexp.MustCompile(`^(ch[0-9]{2,6})\.cast$`)

// channels lists the replay links of recording id; entries, when given,
// is its directory listing.
func (sv *sessionsView) channels(id string, entries []os.DirEntry) []channelLink {
	if sv.recDir == "" || !recIDPattern.MatchString(id) {
		return nil
	}
	if entries == nil {
		entries, _ = os.ReadDir(filepath.Join(sv.recDir, id))
	}
	var out []channelLink
	for _, e := range entries {
		if m := castName.FindStringSubmatch(e.Name()); m != nil && e.Type().IsRegular() {
			out = append(out, channelLink{Name: m[1], URL: "/recordings/" + id + "/" + m[1]})
		}
	}
	return out
}

// row describes one recording: identity and target from meta.json, the
// duration from the manifest, and the result of verifying it.
func (sv *sessionsView) row(m record.Meta, now time.Time) sessionRow {
	dir := filepath.Join(sv.recDir, m.ID)
	entries, _ := os.ReadDir(dir)
	row := sessionRow{
		ID: m.ID, Start: m.Start.UTC().Format(stamp), Principal: m.Principal, KeyID: record.Sanitize(m.KeyID, 80),
		Source: m.Source, Target: m.TargetLogin + "@" + m.Target, Channels: sv.channels(m.ID, entries),
	}
	man, _, err := record.ReadManifest(dir)
	if err != nil {
		row.Duration = now.Sub(m.Start).Round(time.Second).String() + " so far"
		switch {
		case sv.live != nil && sv.live.has(m.ID):
			row.State, row.Class = "in progress (sealed and signed when it ends)", "warn"
		case sv.live != nil:
			row.State, row.Class = "not sealed: the bastion stopped during this session, or the manifest was deleted", "bad"
		default:
			row.State, row.Class = "not sealed yet: in progress in the bastion process, or the bastion stopped during it", "warn"
		}
		return row
	}
	row.Duration = man.End.Sub(man.Start).Round(time.Second).String()
	if man.Failed {
		row.Note = "recording failed mid-session: " + record.Sanitize(man.Failure, 300)
	}
	pub, perr := sv.publicKey()
	if perr != nil {
		row.State, row.Class = "not verified: "+perr.Error(), "warn"
		return row
	}
	if verr := sv.verify(dir, m.ID, entries, pub); verr != nil {
		msg := verr.Error()
		var ve *record.VerifyError
		if errors.As(verr, &ve) {
			msg = strings.Join(ve.Problems, "; ")
		}
		row.State, row.Class = "VERIFICATION FAILED: "+record.Sanitize(msg, 400), "bad"
		return row
	}
	row.State, row.Class = "signature ok", "ok"
	return row
}

// publicKey loads the recording key's public half once; until it can be
// read (run creates the key when the bastion first starts) every call
// tries again.
func (sv *sessionsView) publicKey() (ssh.PublicKey, error) {
	sv.mu.Lock()
	defer sv.mu.Unlock()
	if sv.pub != nil {
		return sv.pub, nil
	}
	if sv.pubPath == "" {
		return nil, errors.New("no [bastion] recording_key configured")
	}
	b, err := os.ReadFile(sv.pubPath)
	if err != nil {
		return nil, fmt.Errorf("recording public key: %w", err)
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey(b)
	if err != nil {
		return nil, fmt.Errorf("recording public key %s: %w", sv.pubPath, err)
	}
	sv.pub = pub
	return pub, nil
}

// verify runs record.Verify unless its result for the same files and key
// is cached.
func (sv *sessionsView) verify(dir, id string, entries []os.DirEntry, pub ssh.PublicKey) error {
	var key strings.Builder
	key.WriteString(ssh.FingerprintSHA256(pub))
	for _, e := range entries {
		info, err := e.Info()
		if err != nil {
			key.Reset() // changed under us: do not cache
			break
		}
		fmt.Fprintf(&key, "\x00%s\x00%d\x00%d", e.Name(), info.Size(), info.ModTime().UnixNano())
	}
	sv.mu.Lock()
	c, ok := sv.verified[id]
	sv.mu.Unlock()
	if ok && key.Len() > 0 && c.key == key.String() {
		return c.err
	}
	err := record.Verify(dir, pub)
	if key.Len() > 0 {
		sv.mu.Lock()
		sv.verified[id] = verifyEntry{key: key.String(), err: err}
		sv.mu.Unlock()
	}
	return err
}

// The status page's "sessions" section, rendered only for clients inside
// sessions_from; it joins statusPage's template set.
var _ = template.Must(statusPage.New("sessions").Parse(`
<h2 id="sessions">Bastion sessions</h2>
{{range .Problems}}<p class="warn">{{.}}</p>{{end}}
{{if .Live}}<h3>Active</h3>
{{if .Active}}<table id="active-sessions"><tr><th>started</th><th>admin</th><th>target</th><th>running for</th><th>replay</th></tr>
{{range .Active}}<tr id="live-{{.ID}}"><td>{{.Start}}</td><td>{{.Login}}<br><small>key id <code>{{.KeyID}}</code><br>from {{.Source}}</small></td><td><code>{{.Target}}</code></td><td>{{.Running}}</td><td>{{range .Channels}}<a class="nowrap" href="{{.URL}}">replay {{.Name}}</a><br>{{end}}</td></tr>
{{end}}</table>{{else}}<p>No active sessions.</p>{{end}}
{{else}}<p>The bastion does not run in this process (<code>gatehouse serve</code>, or <code>run</code> without <code>[bastion]</code>),
so this page lists recordings only; <code>gatehouse run</code> with the bastion also shows the active sessions.</p>{{end}}
<h3>Recent recordings</h3>
{{if not .RecDir}}<p>No recordings directory is configured (<code>[bastion] recordings_dir</code>).</p>
{{else if not .Recent}}<p>No sessions recorded yet.</p>
{{else}}<p>Newest first, {{len .Recent}} of {{.Total}}; <code>gatehouse recordings list</code> shows all.</p>
<table id="recordings"><tr><th>started</th><th>admin</th><th>target</th><th>duration</th><th>channels</th><th>verification</th><th>replay</th></tr>
{{range .Recent}}<tr id="rec-{{.ID}}"><td>{{.Start}}</td><td>{{.Principal}}<br><small>key id <code>{{.KeyID}}</code><br>from {{.Source}}</small></td><td><code>{{.Target}}</code></td><td>{{.Duration}}</td><td>{{len .Channels}}</td><td class="verify"><span class="{{.Class}}">{{.State}}</span>{{with .Note}}<br><span class="bad">{{.}}</span>{{end}}</td><td>{{range .Channels}}<a class="nowrap" href="{{.URL}}">replay {{.Name}}</a><br>{{end}}</td></tr>
{{end}}</table>{{end}}
`))
