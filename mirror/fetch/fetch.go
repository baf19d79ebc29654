// Package fetch downloads files over HTTP and refuses to hand over any byte
// that does not match the size and hash the caller expects.
//
// One Client holds one keep-alive connection pool for a whole sync. Get
// streams a body into the temporary file of its Dest (a writer of
// mirror/store, which alone names files in its tree), hashing on the way,
// and commits it only when size and every given hash match, so a
// destination either does not exist or holds verified content. Open
// gives the same guarantee to a streaming consumer: its Read returns a
// *MismatchError instead of io.EOF when the content is wrong. GetBytes is the
// conditional GET used for InRelease, where an unchanged upstream costs one
// 304 round trip.
//
// Transient failures (connection errors, stalls, 5xx, 408, 429, truncated
// bodies) are retried with exponential backoff and jitter; permanent ones
// (404/403/410, other 4xx, oversized bodies, hash mismatches, local file
// system errors) are returned at once. The Client never fsyncs: the store makes
// a whole sync durable with one syncfs(2) before publishing. What a killed
// Get leaves behind is the store's to clean (see store.NewFile).
package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// Config tunes a Client. The zero value is usable: every zero field means the
// documented default.
type Config struct {
	// Concurrency is how many requests the caller runs in parallel; it sizes
	// the idle keep-alive pool so that no parallel request has to open a new
	// connection after warm-up. The Client does not limit concurrency itself:
	// callers bound it (errgroup.SetLimit). Zero means 8.
	Concurrency int
	// RateLimit caps the total body bytes per second over all requests of
	// this Client. Zero means unlimited; negative is treated as zero.
	RateLimit int64
	// Retries is how many times a transient failure is retried after the
	// first attempt. Zero means 4; negative means never retry.
	Retries int
	// RetryWait is the backoff before the first retry; it doubles per retry
	// (with jitter) up to 30s. Zero means 500ms.
	RetryWait time.Duration
	// Timeout bounds connecting, waiting for response headers, and any
	// single stall while reading a body (no byte for this long). It is not a
	// limit on a whole transfer, so large files on slow links still finish.
	// Zero means 60s.
	Timeout time.Duration
	// UserAgent is sent with every request. Empty means "gatehouse".
	UserAgent string
	// Proxy, if non-empty, is the URL of an HTTP proxy for every request.
	// The Client never reads proxy settings from the environment. Through
	// a proxy, the proxy resolves host names, so the rule that redirects
	// never lead to internal addresses can only check literal addresses.
	Proxy string
	// RedirectHosts lists the hosts ("cdn.example.org", or with a port,
	// "cdn.example.org:8080") that a redirect may lead to besides the
	// scheme, host and port of the URL asked for. Redirects never go from
	// https to http, never to a loopback, link-local or private address
	// unless a URL the caller asked for is at one, and at most
	// MaxRedirects in a row. Entries must pass ParseRedirectHost; invalid
	// ones are ignored.
	RedirectHosts []string
	// LowSpeedLimit and LowSpeedTime abort a body transfer that receives
	// fewer than LowSpeedLimit bytes per second over LowSpeedTime (curl's
	// --speed-limit and --speed-time); it is then retried like a stall.
	// Zero means 1024 bytes and 60s; negative LowSpeedLimit disables the
	// check. With a RateLimit below Concurrency*LowSpeedLimit the limit
	// is lowered to half of each request's share, so that throttling by
	// this Client never counts as a slow upstream.
	LowSpeedLimit int64
	LowSpeedTime  time.Duration
}

// ErrNotFound is wrapped by errors for HTTP 404, 403 and 410: the upstream
// says the file is not there, so retrying will not help.
var ErrNotFound = errors.New("not found upstream")

// StatusError is an HTTP status the Client does not treat as success.
type StatusError struct {
	URL    string
	Status int
}

// Error names the URL and the status.
func (e *StatusError) Error() string {
	return fmt.Sprintf("GET %s: HTTP %d %s", e.URL, e.Status, http.StatusText(e.Status))
}

// Unwrap makes errors.Is(err, ErrNotFound) true for 404, 403 and 410.
func (e *StatusError) Unwrap() error {
	switch e.Status {
	case http.StatusNotFound, http.StatusForbidden, http.StatusGone:
		return ErrNotFound
	}
	return nil
}

// MismatchError says that a body did not have the expected size or hash.
// Field is "size", "sha256" or "sha512"; Want and Got are decimal sizes or
// lower-case hex digests.
type MismatchError struct {
	URL   string
	Field string
	Want  string
	Got   string
}

// Error names the URL, the field, and expected versus received values.
func (e *MismatchError) Error() string {
	return fmt.Sprintf("GET %s: %s mismatch: expected %s, got %s (upstream file corrupt, changed, or tampered with; nothing was kept)", e.URL, e.Field, e.Want, e.Got)
}

// Stats are running totals for one Client.
type Stats struct {
	Files       int64 // bodies fully received and verified (Get, GetBytes, Open at EOF)
	Bytes       int64 // body bytes received, including failed attempts
	Requests    int64 // HTTP requests sent
	Retries     int64 // attempts repeated after a transient failure
	NotModified int64 // conditional requests answered 304
	Resumed     int64 // broken transfers continued with a Range request
}

// Client fetches files. It is safe for concurrent use.
type Client struct {
	cfg     Config
	log     *slog.Logger
	hc      *http.Client
	limiter *rate.Limiter // nil when unlimited
	guard   *guard

	intMu       sync.Mutex
	interrupted []Interrupted

	files, bytes, requests, retries, notModified, resumed atomic.Int64
}

// New returns a Client. A nil log discards log output. An unparsable
// cfg.Proxy is reported on the first request.
func New(cfg Config, log *slog.Logger) *Client {
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 8
	}
	if cfg.Retries == 0 {
		cfg.Retries = 4
	} else if cfg.Retries < 0 {
		cfg.Retries = 0
	}
	if cfg.RetryWait <= 0 {
		cfg.RetryWait = 500 * time.Millisecond
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 60 * time.Second
	}
	if cfg.UserAgent == "" {
		cfg.UserAgent = "gatehouse"
	}
	if cfg.LowSpeedLimit == 0 {
		cfg.LowSpeedLimit = 1024
	}
	if cfg.LowSpeedTime <= 0 {
		cfg.LowSpeedTime = 60 * time.Second
	}
	if cfg.RateLimit > 0 && cfg.LowSpeedLimit > 0 && cfg.LowSpeedLimit*int64(cfg.Concurrency) > cfg.RateLimit {
		cfg.LowSpeedLimit = max(1, cfg.RateLimit/int64(cfg.Concurrency)/2)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	g := &guard{dialer: &net.Dialer{Timeout: cfg.Timeout, KeepAlive: 30 * time.Second}}
	for _, h := range cfg.RedirectHosts {
		if hp, err := parseHostPort(h); err == nil {
			g.redirectHosts = append(g.redirectHosts, hp)
		}
	}
	tr := &http.Transport{
		DialContext:           g.dial,
		MaxIdleConns:          cfg.Concurrency * 2,
		MaxIdleConnsPerHost:   cfg.Concurrency,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   cfg.Timeout,
		ResponseHeaderTimeout: cfg.Timeout,
		// Archives send a handful of headers; a megabyte of them is
		// not a web server worth waiting for.
		MaxResponseHeaderBytes: 64 << 10,
		ExpectContinueTimeout:  time.Second,
		// A pool file of a few KiB then arrives with its headers in
		// one read(2) instead of three (the default 4 KiB buffer
		// splits it): 20,000 small files cost 40,000 fewer system
		// calls, and their bodies are written with one write(2).
		ReadBufferSize: 64 << 10,
		// Transparent gzip would change the bytes we hash: the hashes in
		// Release are of the files as stored, so ask for exactly those.
		DisableCompression: true,
		ForceAttemptHTTP2:  false,
	}
	if cfg.Proxy != "" {
		pu, err := url.Parse(cfg.Proxy)
		if err == nil {
			g.proxy = originKey(pu)
		}
		tr.Proxy = func(*http.Request) (*url.URL, error) {
			if err != nil {
				return nil, fmt.Errorf("fetch: config proxy %q: %w", cfg.Proxy, err)
			}
			return pu, nil
		}
	}
	c := &Client{cfg: cfg, log: log, guard: g, hc: &http.Client{Transport: tr, CheckRedirect: g.checkRedirect}}
	if cfg.RateLimit > 0 {
		burst := cfg.RateLimit
		if burst > 1<<20 {
			burst = 1 << 20
		}
		c.limiter = rate.NewLimiter(rate.Limit(cfg.RateLimit), int(burst))
	}
	return c
}

// Stats returns a snapshot of the running totals.
func (c *Client) Stats() Stats {
	return Stats{
		Files:       c.files.Load(),
		Bytes:       c.bytes.Load(),
		Requests:    c.requests.Load(),
		Retries:     c.retries.Load(),
		NotModified: c.notModified.Load(),
		Resumed:     c.resumed.Load(),
	}
}

// CloseIdleConnections closes idle keep-alive connections; call it when a
// sync is over so no sockets linger.
func (c *Client) CloseIdleConnections() { c.hc.CloseIdleConnections() }

// Validators identify one version of a remote file for conditional requests.
type Validators struct {
	ETag         string `json:"etag,omitempty"`
	LastModified string `json:"last_modified,omitempty"`
	// Date is the Date header of the response that brought the file. It
	// is never sent; callers keep it to tell whether LastModified is
	// trustworthy: a file replaced within the same second as the response
	// keeps its Last-Modified (one-second resolution), so a validator
	// taken that close to its Date can hide a change (see LastModifiedNearDate).
	Date string `json:"date,omitempty"`
}

// LastModifiedNearDate reports whether v's Last-Modified lies within 2 s
// of the Date of the response that brought it. Such a validator cannot
// be trusted for If-Modified-Since: the file may have been replaced again
// in the same second, and a server such as nginx then answers 304 (and,
// with the same size, the same ETag) to the new file. The caller asks
// unconditionally instead and compares the bytes. False when either header
// is missing or unparsable.
func (v Validators) LastModifiedNearDate() bool {
	lm, err1 := http.ParseTime(v.LastModified)
	d, err2 := http.ParseTime(v.Date)
	if err1 != nil || err2 != nil {
		return false
	}
	diff := d.Sub(lm)
	return diff <= 2*time.Second && diff >= -2*time.Second
}

// GetBytes fetches a small file (such as InRelease) into memory. When prev
// holds validators from an earlier response they are sent as If-None-Match
// and If-Modified-Since; a 304 answer returns notModified=true, a nil body
// and prev. Otherwise it returns the body and the response's validators.
// A body longer than max bytes is an error, not a truncation. No hash is
// checked here: the caller verifies the signature.
func (c *Client) GetBytes(ctx context.Context, url string, max int64, prev Validators) (body []byte, v Validators, notModified bool, err error) {
	if max <= 0 {
		return nil, Validators{}, false, fmt.Errorf("GET %s: max must be positive, got %d", url, max)
	}
	hdr := http.Header{}
	// If-None-Match goes first in RFC 9110's evaluation order: an
	// upstream that gave an ETag is asked by it, which is exact where
	// Last-Modified has one-second resolution.
	if prev.ETag != "" {
		hdr.Set("If-None-Match", prev.ETag)
	}
	if prev.LastModified != "" {
		hdr.Set("If-Modified-Since", prev.LastModified)
	}
	err = c.retry(ctx, url, func(ctx context.Context) error {
		ctx, stop := context.WithCancelCause(ctx)
		defer stop(nil)
		resp, err := c.do(ctx, stop, url, hdr)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode == http.StatusNotModified {
			if prev.ETag == "" && prev.LastModified == "" {
				return permanent(fmt.Errorf("GET %s: HTTP 304 to an unconditional request", url))
			}
			notModified, v, body = true, prev, nil
			return nil
		}
		if err := statusErr(url, resp); err != nil {
			return err
		}
		if resp.ContentLength > max {
			return permanent(fmt.Errorf("GET %s: Content-Length %d exceeds the limit of %d bytes", url, resp.ContentLength, max))
		}
		mr := c.body(ctx, stop, resp.Body)
		defer mr.stop()
		b, err := io.ReadAll(io.LimitReader(mr, max+1))
		if err != nil {
			return c.readErr(ctx, url, err)
		}
		if int64(len(b)) > max {
			return permanent(fmt.Errorf("GET %s: body exceeds the limit of %d bytes", url, max))
		}
		if resp.ContentLength >= 0 && int64(len(b)) != resp.ContentLength {
			return fmt.Errorf("GET %s: body has %d bytes, Content-Length said %d", url, len(b), resp.ContentLength)
		}
		notModified, body = false, b
		v = Validators{ETag: resp.Header.Get("ETag"), LastModified: resp.Header.Get("Last-Modified"), Date: resp.Header.Get("Date")}
		return nil
	})
	if err != nil {
		return nil, Validators{}, false, err
	}
	if notModified {
		c.notModified.Add(1)
	} else {
		c.files.Add(1)
	}
	return body, v, notModified, nil
}

// do sends one GET. stop cancels the attempt; the idle watchdog uses it.
func (c *Client) do(ctx context.Context, stop context.CancelCauseFunc, url string, hdr http.Header) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, permanent(fmt.Errorf("GET %s: %w", url, err))
	}
	// The caller built url from its configuration: its host is trusted
	// at any address (redirect targets are not; see guard).
	c.guard.trust(req.URL)
	for k, vs := range hdr {
		req.Header[k] = vs
	}
	req.Header.Set("User-Agent", c.cfg.UserAgent)
	c.requests.Add(1)
	resp, err := c.hc.Do(req)
	if err != nil {
		if cause := context.Cause(ctx); cause != nil && (errors.Is(cause, errStalled) || errors.Is(cause, errTooSlow)) {
			return nil, fmt.Errorf("GET %s: %w", url, cause)
		}
		return nil, transportErr(url, err)
	}
	return resp, nil
}

// statusErr maps a non-200 response to an error; the body is drained a
// little so the connection can be reused.
func statusErr(url string, resp *http.Response) error {
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	se := &StatusError{URL: url, Status: resp.StatusCode}
	switch {
	case resp.StatusCode >= 500, resp.StatusCode == http.StatusTooManyRequests, resp.StatusCode == http.StatusRequestTimeout:
		if d := retryAfter(resp.Header.Get("Retry-After")); d > 0 {
			return &retryAfterError{err: se, after: d}
		}
		return se
	default:
		return permanent(se)
	}
}

// readErr classifies an error that happened while reading a body.
func (c *Client) readErr(ctx context.Context, url string, err error) error {
	if cause := context.Cause(ctx); cause != nil && (errors.Is(cause, errStalled) || errors.Is(cause, errTooSlow)) {
		return fmt.Errorf("GET %s: reading body: %w", url, cause)
	}
	var pe *permanentError
	if errors.As(err, &pe) {
		return err
	}
	var me *MismatchError
	if errors.As(err, &me) {
		return permanent(err)
	}
	return fmt.Errorf("GET %s: reading body: %w", url, scrub(err))
}

var errStalled = errors.New("no data received within the timeout")

// copyBufs holds buffers larger than io.Copy's 32 KiB: fewer read and
// write system calls per file on fast links.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

// body wraps a response body with the rate limit, the stall watchdog and
// the low-speed check. The caller must call stop when done with it.
func (c *Client) body(ctx context.Context, stop context.CancelCauseFunc, r io.Reader) *meteredReader {
	a, _ := ctx.Value(attemptKey{}).(*attempt)
	if a == nil {
		a = &attempt{start: time.Now()}
	}
	m := &meteredReader{c: c, ctx: ctx, r: r, recv: &a.recv, watchdog: time.AfterFunc(c.cfg.Timeout, func() { stop(errStalled) })}
	m.slow = startLowSpeed(c.cfg.LowSpeedLimit, c.cfg.LowSpeedTime, m.recv, stop)
	return m
}

// stop disarms the watchdog and the low-speed check so no timer outlives
// the request.
func (m *meteredReader) stop() {
	m.watchdog.Stop()
	m.slow.halt()
}

type meteredReader struct {
	c        *Client
	ctx      context.Context
	r        io.Reader
	watchdog *time.Timer
	slow     *lowSpeed     // nil when disabled
	recv     *atomic.Int64 // body bytes of this attempt
}

// attempt is one try of a request, carried in its context so the body
// reader can count its bytes for lowSpeed and Interrupted.
type attempt struct {
	start time.Time
	recv  atomic.Int64
}

type attemptKey struct{}

func (m *meteredReader) Read(p []byte) (int, error) {
	if m.c.limiter != nil && len(p) > m.c.limiter.Burst() {
		p = p[:m.c.limiter.Burst()]
	}
	m.watchdog.Reset(m.c.cfg.Timeout)
	n, err := m.r.Read(p)
	if err != nil {
		m.watchdog.Stop()
	}
	m.c.bytes.Add(int64(n))
	m.recv.Add(int64(n))
	if n > 0 && m.c.limiter != nil {
		if werr := m.c.limiter.WaitN(m.ctx, n); werr != nil && err == nil {
			err = werr
		}
	}
	return n, err
}

// permanentError marks an error that retrying cannot fix.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

func permanent(err error) error { return &permanentError{err: err} }

type retryAfterError struct {
	err   error
	after time.Duration
}

func (e *retryAfterError) Error() string { return e.err.Error() }
func (e *retryAfterError) Unwrap() error { return e.err }

func retryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil && s > 0 {
		return min(time.Duration(s)*time.Second, 2*time.Minute)
	}
	return 0
}

// retry runs op until it succeeds, fails permanently, the context ends, or
// the retries are used up. Returned errors carry no internal wrapper types
// other than the public ones.
func (c *Client) retry(ctx context.Context, url string, op func(context.Context) error) error {
	first := time.Now()
	for try := 0; ; try++ {
		if ctx.Err() != nil {
			return fmt.Errorf("GET %s: %w", url, ctxErr(ctx))
		}
		a := &attempt{start: time.Now()}
		err := op(context.WithValue(ctx, attemptKey{}, a))
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			running := time.Since(first)
			c.noteInterrupted(url, running, a.recv.Load())
			return fmt.Errorf("GET %s: %w, %s after its first request, %d body bytes into attempt %d (%v)",
				url, ctxErr(ctx), running.Round(time.Millisecond), a.recv.Load(), try+1, unwrapInternal(err))
		}
		var pe *permanentError
		if errors.As(err, &pe) {
			return unwrapInternal(err)
		}
		if try >= c.cfg.Retries {
			if try > 0 {
				return fmt.Errorf("%w (gave up after %d attempts)", unwrapInternal(err), try+1)
			}
			return unwrapInternal(err)
		}
		wait := backoff(c.cfg.RetryWait, try)
		var ra *retryAfterError
		if errors.As(err, &ra) && ra.after > wait {
			wait = ra.after
		}
		c.retries.Add(1)
		c.log.Warn("fetch: retrying", "url", url, "attempt", try+1, "wait", wait, "err", unwrapInternal(err))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			c.noteInterrupted(url, time.Since(first), 0)
			return fmt.Errorf("GET %s: %w, %s after its first request, waiting to retry (last error: %v)",
				url, ctxErr(ctx), time.Since(first).Round(time.Millisecond), unwrapInternal(err))
		case <-t.C:
		}
	}
}

// unwrapInternal strips the retry-classification wrappers so callers see
// only documented error types in the chain.
func unwrapInternal(err error) error {
	for {
		switch e := err.(type) {
		case *permanentError:
			err = e.err
		case *retryAfterError:
			err = e.err
		default:
			return err
		}
	}
}

func backoff(base time.Duration, attempt int) time.Duration {
	d := base << min(attempt, 16)
	if d > 30*time.Second || d <= 0 {
		d = 30 * time.Second
	}
	// Jitter in [d/2, d): parallel workers that failed together must not
	// retry in lockstep.
	return d/2 + rand.N(d/2+1)
}
