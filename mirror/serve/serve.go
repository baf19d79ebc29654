// Package serve is the HTTP face of published mirrors: an http.Handler that
// gives apt clients the current snapshot's dists tree and the shared pool,
// and nothing else from the state directory.
//
// URL layout (see mirror/store for the disk layout):
//
//	/                     text/plain list of mirror names
//	/NAME/dists/REL       ROOT/NAME/snapshots/<current>/dists/REL
//	/NAME/pool/REL        ROOT/NAME/snapshots/<current>/pool/REL if that is a file
//	                      (an override: upstream changed the content under that
//	                      name), else ROOT/NAME/pool/REL unless the store's
//	                      hidden list names it (store.HiddenFile: linked by a
//	                      sync whose publish has not happened, or left by a
//	                      GC that pruned its snapshot)
//	/NAME/snapshots/ID/.. the retained snapshot ID (published or not) served as
//	                      above, as if it were current: what canary hosts use
//	                      to test a staged snapshot before `mirror publish`
//
// A flat repository's snapshot has store.FlatDir instead of dists/, and
// its clients ask for files by their upstream paths (the Release, its
// indexes, and every Filename relative to the archive root):
//
//	/NAME/REL             ROOT/NAME/snapshots/<current>/flat/REL if that is a file,
//	                      else the pool as above
//
// Each dists request resolves "current" exactly once and then opens the file
// inside that snapshot directory, so a publish during the request cannot mix
// two snapshots, and an open file keeps being served even if its snapshot is
// pruned meanwhile. Files are opened through os.Root, which refuses any path
// or symlink leading outside the snapshot or pool directory; in addition,
// request paths with ".." or empty elements, backslashes or NUL bytes
// (also when percent-encoded) are rejected before any file system access,
// and so are names of files still being written (store.TempPrefix), which
// are not verified yet.
// "." elements are dropped first: apt asks for "URL/./InRelease" for a
// flat repository's "./" suite.
// Only regular files are served; directories are 404 (no listings).
//
// Responses go through http.ServeContent: Range (single, suffix, multiple;
// 416 when unsatisfiable), HEAD with Content-Length and no body,
// If-None-Match and If-Range against a strong ETag made of inode, size and
// modification time (so it changes with the content), and If-Modified-Since
// compared exactly with Last-Modified, the file's modification time, as
// nginx does: after a rollback the files served are older than the copy a
// client holds, and "not modified since" would keep that client on the
// newer InRelease. (Two versions of one file written within the same
// second are told apart by their ETags only.)
//
// Serve adds what a network with hostile clients needs: caps on
// connections overall and per source, refused at accept; a minimum send
// rate that cuts responses to clients that stop reading; idle and header
// timeouts (see Options).
package serve

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"gatehouse/mirror/store"
)

// Config is the [serve] table of the configuration file. Zero values mean
// the defaults; Serve's Options carry the parsed values.
type Config struct {
	// Listen is the TCP address to serve on, host:port. Empty means
	// DefaultListen.
	Listen string `toml:"listen"`
	// MaxConns caps open HTTP connections (default: DefaultMaxConns, from
	// the process's descriptor limit). A connection beyond it is closed at
	// accept; connections already open are never dropped for it.
	MaxConns int `toml:"max_conns"`
	// MaxConnsPerSource caps open connections from one IPv4 address or
	// IPv6 /64 (default DefaultMaxConnsPerSource).
	MaxConnsPerSource int `toml:"max_conns_per_source"`
	// MinSendRate is the slowest a response may be sent, judged over
	// MinSendTime, written like [[mirror]] rate_limit ("1KiB"; default
	// DefaultMinSendRate). The caller parses it.
	MinSendRate string `toml:"min_send_rate"`
	// MinSendTime is the window MinSendRate is judged over (default
	// DefaultMinSendTime): a client that stops reading is cut after it.
	MinSendTime Duration `toml:"min_send_time"`
	// IdleTimeout closes keep-alive connections without a new request for
	// this long (default DefaultIdleTimeout).
	IdleTimeout Duration `toml:"idle_timeout"`
}

// Validate checks the limits that need no parsing by the caller.
func (c Config) Validate() error {
	if c.MaxConns < 0 {
		return fmt.Errorf("[serve] max_conns = %d: use a positive number, or leave it out for the default", c.MaxConns)
	}
	if c.MaxConnsPerSource < 0 {
		return fmt.Errorf("[serve] max_conns_per_source = %d: use a positive number, or leave it out for the default (%d)", c.MaxConnsPerSource, DefaultMaxConnsPerSource)
	}
	if c.MaxConns > 0 && c.MaxConnsPerSource > c.MaxConns {
		return fmt.Errorf("[serve] max_conns_per_source = %d is larger than max_conns = %d", c.MaxConnsPerSource, c.MaxConns)
	}
	return nil
}

// DefaultListen is the address used when Config.Listen is empty: loopback
// only, so nothing is exposed until the operator chooses an interface.
const DefaultListen = "127.0.0.1:8080"

// Addr is the address to listen on, with the default applied.
func (c Config) Addr() string {
	if c.Listen == "" {
		return DefaultListen
	}
	return c.Listen
}

type handler struct {
	root    string
	mirrors map[string]bool
	names   []string
	log     *slog.Logger
	// flat remembers, per snapshot directory, whether it is a flat
	// repository's: published snapshots never change, and the answer is
	// needed on every request, pool files included. It keeps one small
	// entry per snapshot served (hourly syncs: under 1 MB a year).
	flat sync.Map
	// overrides remembers, per snapshot directory, whether it has an
	// override layer (store.PoolDir inside the snapshot), likewise.
	overrides sync.Map
	// hidden caches the mirrors' store.HiddenFile lists: pool/ paths that
	// no published or retained snapshot names (a sync or GC killed
	// midway), never served.
	hidden store.HiddenCache
}

// NewHandler serves the published snapshots of the named mirrors under the
// state directory root (ROOT/NAME as laid out by mirror/store). A name that
// is not a valid mirror name is logged and never served. Every request is
// logged at Info level (method, path, status, bytes, duration, remote);
// a nil log discards these.
func NewHandler(root string, mirrors []string, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := &handler{root: root, mirrors: map[string]bool{}, log: log}
	for _, m := range mirrors {
		if err := store.ValidName(m); err != nil {
			log.Error("serve: mirror not served", "mirror", m, "err", err)
			continue
		}
		if !h.mirrors[m] {
			h.mirrors[m] = true
			h.names = append(h.names, m)
		}
	}
	slices.Sort(h.names)
	return h
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rw := &recorder{ResponseWriter: w}
	h.serve(rw, r)
	if rw.status == 0 {
		rw.status = http.StatusOK
	}
	h.log.Info("http", "method", r.Method, "path", r.URL.EscapedPath(), "status", rw.status,
		"bytes", rw.n, "duration", time.Since(start), "remote", r.RemoteAddr)
}

func (h *handler) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "405 method not allowed", http.StatusMethodNotAllowed)
		return
	}
	p := r.URL.Path
	if p == "/" {
		h.index(w)
		return
	}
	if !strings.HasPrefix(p, "/") {
		http.Error(w, "400 bad request", http.StatusBadRequest)
		return
	}
	// The path is already percent-decoded, so "%2e%2e" and "%2f" arrive
	// here as ".." and "/" and are checked like their literal forms.
	for strings.Contains(p, "/./") {
		p = strings.ReplaceAll(p, "/./", "/")
	}
	if err := store.CheckRel(p[1:]); err != nil {
		http.Error(w, "400 bad request", http.StatusBadRequest)
		return
	}
	if strings.Contains(p, "/"+store.TempPrefix) {
		http.NotFound(w, r)
		return
	}
	name, rest, _ := strings.Cut(p[1:], "/")
	if !h.mirrors[name] {
		http.NotFound(w, r)
		return
	}
	if rest == "" {
		http.NotFound(w, r)
		return
	}
	top, rel, _ := strings.Cut(rest, "/")
	if top == store.SnapshotsDir {
		h.serveSnapshot(w, r, name, rel)
		return
	}
	id, snap, err := store.ResolveCurrent(h.root, name)
	if errors.Is(err, store.ErrNoCurrent) && top != "pool" {
		http.Error(w, "503 mirror "+name+" has not been published yet", http.StatusServiceUnavailable)
		return
	}
	if err != nil && !errors.Is(err, store.ErrNoCurrent) {
		h.log.Error("serve: resolve current snapshot", "mirror", name, "err", err)
		http.Error(w, "500 internal server error", http.StatusInternalServerError)
		return
	}
	pool := filepath.Join(h.root, name, store.PoolDir)
	if err == nil {
		// Which generation answered: lets an operator correlate a client's
		// view with "mirror list" when debugging.
		w.Header().Set("X-Gatehouse-Snapshot", id)
		if flat := filepath.Join(snap, store.FlatDir); h.isFlat(snap) {
			if isFileIn(flat, rest) {
				h.serveFile(w, r, flat, rest, false)
			} else {
				h.servePool(w, r, name, id, h.poolDir(snap, pool, rest), pool, rest)
			}
			return
		}
	}
	switch {
	case top == "dists" && rel != "":
		h.serveFile(w, r, snap, rest, false) // the snapshot holds "dists/..."
	case top == "pool" && rel != "" && err == nil:
		h.servePool(w, r, name, id, h.poolDir(snap, pool, rel), pool, rel)
	case top == "pool" && rel != "":
		h.servePool(w, r, name, "", pool, pool, rel)
	default:
		http.NotFound(w, r)
	}
}

// serveSnapshot serves /NAME/snapshots/ID/REST: the retained snapshot ID
// (published, staged or older) exactly as /NAME/REST would be served if
// ID were published, read-only, so that a canary host can run apt against
// a snapshot before `mirror publish` gives it to everyone. An ID that is
// not a finished snapshot (invalid, being built, pruned) is 404. Files
// being served keep being served if the snapshot is pruned meanwhile.
func (h *handler) serveSnapshot(w http.ResponseWriter, r *http.Request, name, idRest string) {
	id, rest, _ := strings.Cut(idRest, "/")
	snap, err := store.ResolveSnapshot(h.root, name, id)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			h.log.Error("serve: resolve snapshot", "mirror", name, "snapshot", id, "err", err)
		}
		http.NotFound(w, r)
		return
	}
	w.Header().Set("X-Gatehouse-Snapshot", id)
	pool := filepath.Join(h.root, name, store.PoolDir)
	if h.isFlat(snap) {
		if rest == "" {
			http.NotFound(w, r)
		} else if flat := filepath.Join(snap, store.FlatDir); isFileIn(flat, rest) {
			h.serveFile(w, r, flat, rest, false)
		} else {
			h.serveFile(w, r, h.poolDir(snap, pool, rest), rest, true)
		}
		return
	}
	top, rel, _ := strings.Cut(rest, "/")
	switch {
	case top == "dists" && rel != "":
		h.serveFile(w, r, snap, rest, false)
	case top == "pool" && rel != "":
		h.serveFile(w, r, h.poolDir(snap, pool, rel), rel, true)
	default:
		http.NotFound(w, r)
	}
}

// isFlat reports whether the snapshot directory snap holds a flat
// repository (store.FlatDir).
func (h *handler) isFlat(snap string) bool {
	if v, ok := h.flat.Load(snap); ok {
		return v.(bool)
	}
	fi, err := os.Lstat(filepath.Join(snap, store.FlatDir))
	flat := err == nil && fi.IsDir()
	if err == nil || errors.Is(err, fs.ErrNotExist) {
		h.flat.Store(snap, flat)
	}
	return flat
}

// poolDir returns the directory that serves pool path rel for the
// snapshot directory snap: its override layer snap/pool when that holds
// rel, else the shared pool (see mirror/store). Whether a snapshot has any
// override is remembered, so the common case costs no extra lookup.
func (h *handler) poolDir(snap, pool, rel string) string {
	over := filepath.Join(snap, store.PoolDir)
	has, ok := h.overrides.Load(snap)
	if !ok {
		fi, err := os.Lstat(over)
		has = err == nil && fi.IsDir()
		if err == nil || errors.Is(err, fs.ErrNotExist) {
			h.overrides.Store(snap, has)
		}
	}
	if has.(bool) && isFileIn(over, rel) {
		return over
	}
	return pool
}

// servePool serves pool path rel from dir, the snapshot's override layer
// or the shared pool; from the shared pool only if no sync or GC in
// progress (or killed) hides it: such a file is named by no published or
// retained snapshot (see store.HiddenFile). The check costs one lstat.
func (h *handler) servePool(w http.ResponseWriter, r *http.Request, name, current, dir, pool, rel string) {
	if dir == pool && store.Hidden(&h.hidden, h.root, name, current, rel) {
		http.NotFound(w, r)
		return
	}
	h.serveFile(w, r, dir, rel, true)
}

// isFileIn reports whether rel is a regular file inside dir, following no
// path out of it.
func isFileIn(dir, rel string) bool {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return false
	}
	defer root.Close()
	fi, err := root.Stat(rel)
	return err == nil && fi.Mode().IsRegular()
}

func (h *handler) serveFile(w http.ResponseWriter, r *http.Request, dir, rel string, pool bool) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		h.fileError(w, r, dir, err)
		return
	}
	f, err := root.Open(rel)
	// The file stays open without its Root: a response to a client that
	// reads slowly holds two descriptors (socket, file), not three, which
	// is what max_conns's default is computed with.
	root.Close()
	if err != nil {
		h.fileError(w, r, rel, err)
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		h.fileError(w, r, rel, err)
		return
	}
	if !fi.Mode().IsRegular() {
		http.NotFound(w, r)
		return
	}
	hdr := w.Header()
	hdr.Set("ETag", etag(fi))
	hdr.Set("Content-Type", contentType(rel))
	hdr.Set("X-Content-Type-Options", "nosniff")
	// Pool files and by-hash files never change under their name; other
	// index files change with every publish and must be revalidated.
	if pool || strings.Contains(rel, "/by-hash/") {
		hdr.Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		hdr.Set("Cache-Control", "no-cache")
	}
	http.ServeContent(w, exactIfModifiedSince(r, fi.ModTime()), path.Base(rel), fi.ModTime(), f)
}

// fileError maps open errors to statuses. A path os.Root refuses (a symlink
// leading out of the tree) looks like any missing file to the client.
func (h *handler) fileError(w http.ResponseWriter, r *http.Request, what string, err error) {
	switch {
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ENOTDIR), errors.Is(err, syscall.ELOOP), isEscape(err):
		http.NotFound(w, r)
	default:
		h.log.Error("serve: open", "path", what, "err", err)
		http.Error(w, "500 internal server error", http.StatusInternalServerError)
	}
}

func isEscape(err error) bool {
	var pe *fs.PathError
	return errors.As(err, &pe) && strings.Contains(pe.Err.Error(), "escapes")
}

func etag(fi fs.FileInfo) string {
	var ino uint64
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		ino = st.Ino
	}
	return fmt.Sprintf(`"%x-%x-%x"`, ino, fi.Size(), fi.ModTime().UnixNano())
}

func contentType(rel string) string {
	// by-hash names are digests without a suffix; the content may be
	// compressed, so never call it text (a proxy might recompress text).
	if strings.Contains(rel, "/by-hash/") {
		return "application/octet-stream"
	}
	base := path.Base(rel)
	switch path.Ext(base) {
	case ".deb", ".udeb", ".ddeb", ".dsc", ".bz2", ".lzma", ".zst", ".tar":
		return "application/octet-stream"
	case ".gz":
		return "application/gzip"
	case ".xz":
		return "application/x-xz"
	case ".gpg", ".sig":
		return "application/pgp-signature"
	case "", ".txt", ".diff", ".changes", ".buildinfo":
		return "text/plain; charset=utf-8"
	}
	return "application/octet-stream"
}

func (h *handler) index(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	var b strings.Builder
	for _, n := range h.names {
		b.WriteString(n)
		b.WriteByte('\n')
	}
	io.WriteString(w, b.String())
}

// recorder captures status and body size for the access log. It forwards
// ReadFrom so http.ServeContent can still use sendfile(2).
type recorder struct {
	http.ResponseWriter
	status int
	n      int64
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	n, err := r.ResponseWriter.Write(p)
	r.n += int64(n)
	return n, err
}

func (r *recorder) ReadFrom(src io.Reader) (int64, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	var n int64
	var err error
	if rf, ok := r.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(src)
	} else {
		n, err = io.Copy(struct{ io.Writer }{r.ResponseWriter}, src)
	}
	r.n += n
	return n, err
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// Serve runs h on ln until ctx is done, then shuts down gracefully: it
// stops accepting, lets requests in flight finish for up to opt.Grace, and
// closes the rest. It returns nil after a shutdown caused by ctx, or the
// server's error.
//
// Connections beyond opt's caps are closed as they are accepted (see
// Options), responses that do not progress at the minimum send rate are
// cut, keep-alive connections close after IdleTimeout, and a request's
// headers (and any body) must arrive within HeaderTimeout.
func Serve(ctx context.Context, ln net.Listener, h http.Handler, opt Options) error {
	opt.defaults()
	srv := &http.Server{
		Handler:           bodyDeadline(h, opt.HeaderTimeout),
		ReadHeaderTimeout: opt.HeaderTimeout,
		IdleTimeout:       opt.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(opt.Log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(newLimitListener(ln, opt)) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), opt.Grace)
	defer cancel()
	err := srv.Shutdown(sctx)
	if err != nil {
		srv.Close()
		err = fmt.Errorf("serve %s: shutdown: %w", ln.Addr(), err)
	}
	<-errc // http.ErrServerClosed
	return err
}

// bodyDeadline bounds the reading of a request body (apt sends none, but
// net/http drains up to 256 KiB of an unread body to reuse the connection,
// and without a deadline a client could trickle it forever).
func bodyDeadline(h http.Handler, d time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength != 0 {
			http.NewResponseController(w).SetReadDeadline(time.Now().Add(d))
		}
		h.ServeHTTP(w, r)
	})
}
