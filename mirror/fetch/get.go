package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
)

// Dest is where Get puts a download: a writer of the caller's store
// (mirror/store.NewFile implements it) that hands out an empty temporary
// file and names it only on Commit. Get never creates, renames or removes
// anything itself, so the store stays the only owner of its tree.
type Dest interface {
	// Create returns the empty, writable temporary file (called when
	// the first body byte is due; again only after Discard).
	Create() (*os.File, error)
	// Commit gives the complete, verified file its final name.
	Commit() error
	// Discard throws the temporary file away (no-op after Commit).
	Discard()
	// Name names the destination in errors.
	Name() string
}

// Get downloads url to dest and returns the number of bytes written.
//
// The body is streamed into dest's temporary file, hashed on the way, and
// committed only when its size equals want.Size (unless -1) and every
// non-empty hash in want matches. On any failure the temporary file is
// discarded and the destination is left as it was. Reading stops at
// want.Size+1 bytes so an oversized body cannot fill the disk. want must
// name at least one hash: Get refuses to fetch unverifiable content.
//
// When a transfer breaks off and the server gave a validator (ETag or
// Last-Modified), the retry asks only for the missing tail (Range with
// If-Range) and keeps hashing where it stopped; a server that answers with
// the whole file instead, or a resumed file whose hash is wrong, makes Get
// start over from the first byte, so resuming never turns a transient
// failure into a wrong file.
//
// Errors name the URL; they wrap ErrNotFound (404/403/410, not retried),
// *MismatchError (wrong size or hash, not retried), *StatusError, or the
// context's error. Get does not fsync.
func (c *Client) Get(ctx context.Context, url string, dest Dest, want Want) (int64, error) {
	if err := want.check(); err != nil {
		return 0, fmt.Errorf("GET %s: %w", url, unwrapInternal(err))
	}
	p := &partial{url: url, want: want, dest: dest}
	defer p.discard()
	err := c.retry(ctx, url, func(ctx context.Context) error {
		return c.getOnce(ctx, p)
	})
	if err != nil {
		return 0, err
	}
	c.files.Add(1)
	return p.n, nil
}

// partial is a download in progress, kept across attempts so a retry can
// resume it.
type partial struct {
	url       string
	want      Want
	dest      Dest
	tmp       *os.File // nil until the first body byte is expected
	v         *verifier
	n         int64  // bytes in tmp, all fed to v
	validator string // If-Range value from the response that started tmp
	resumed   bool   // tmp holds bytes from more than one response
	done      bool   // committed
}

// restart throws away what was received so far.
func (p *partial) restart() error {
	p.n, p.resumed, p.validator = 0, false, ""
	p.v = newVerifier(p.url, p.want)
	if p.tmp == nil {
		return nil
	}
	if err := p.tmp.Truncate(0); err != nil {
		return permanent(fmt.Errorf("GET %s: truncate %s: %w", p.url, p.tmp.Name(), err))
	}
	if _, err := p.tmp.Seek(0, io.SeekStart); err != nil {
		return permanent(fmt.Errorf("GET %s: seek %s: %w", p.url, p.tmp.Name(), err))
	}
	return nil
}

func (p *partial) discard() {
	if !p.done {
		p.dest.Discard()
	}
}

// validatorOf returns a value usable in If-Range: a strong ETag, else
// Last-Modified, else "" (then a broken transfer starts over).
func validatorOf(h http.Header) string {
	if et := h.Get("ETag"); et != "" && !strings.HasPrefix(et, "W/") {
		return et
	}
	return h.Get("Last-Modified")
}

func (c *Client) getOnce(ctx context.Context, p *partial) error {
	url, want := p.url, p.want
	ctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	if p.v == nil {
		p.v = newVerifier(url, want)
	}
	var hdr http.Header
	if p.n > 0 && p.validator != "" {
		hdr = http.Header{"Range": {"bytes=" + strconv.FormatInt(p.n, 10) + "-"}, "If-Range": {p.validator}}
	} else if err := p.restart(); err != nil {
		return err
	}
	resp, err := c.do(ctx, stop, url, hdr)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	switch {
	case hdr != nil && resp.StatusCode == http.StatusPartialContent:
		start, _, total, ok := parseContentRange(resp.Header.Get("Content-Range"))
		if !ok || start != p.n || (want.Size >= 0 && total >= 0 && total != want.Size) {
			// Not the tail we asked for: start over on the next attempt.
			if err := p.restart(); err != nil {
				return err
			}
			// The header is not quoted: what a server sends never
			// reaches errors (see scrub).
			return fmt.Errorf("GET %s: resume answered with a %d-byte Content-Range that is not bytes %d- of the file", url, len(resp.Header.Get("Content-Range")), p.n)
		}
		c.resumed.Add(1)
		p.resumed = true
	case hdr != nil && resp.StatusCode == http.StatusRequestedRangeNotSatisfiable:
		if err := p.restart(); err != nil {
			return err
		}
		return fmt.Errorf("GET %s: resume at byte %d refused (HTTP 416)", url, p.n)
	default:
		if err := statusErr(url, resp); err != nil {
			return err
		}
		if p.n > 0 { // a 200 to a range request: the server sends it all again
			if err := p.restart(); err != nil {
				return err
			}
		}
		p.validator = validatorOf(resp.Header)
	}
	if want.Size >= 0 && resp.ContentLength > want.Size-p.n {
		return permanent(&MismatchError{URL: url, Field: "size", Want: strconv.FormatInt(want.Size, 10), Got: strconv.FormatInt(p.n+resp.ContentLength, 10) + " (Content-Length)"})
	}
	if p.tmp == nil {
		tmp, err := p.dest.Create()
		if err != nil {
			return permanent(fmt.Errorf("GET %s: create temporary file for %s: %w", url, p.dest.Name(), err))
		}
		p.tmp = tmp
	}
	body := c.body(ctx, stop, resp.Body)
	defer body.stop()
	var r io.Reader = body
	if want.Size >= 0 {
		r = io.LimitReader(r, want.Size-p.n+1)
	}
	bufp := copyBufs.Get().(*[]byte)
	n, err := io.CopyBuffer(errWriter{p.tmp}, io.TeeReader(r, p.v), *bufp)
	copyBufs.Put(bufp)
	p.n += n
	if err != nil {
		var we *writeError
		if errors.As(err, &we) {
			return permanent(fmt.Errorf("GET %s: write %s: %w", url, p.tmp.Name(), we.err))
		}
		return c.readErr(ctx, url, err)
	}
	if err := p.v.final(p.n); err != nil {
		var me *MismatchError
		if p.resumed && errors.As(err, &me) && me.Field != "size" {
			// The pieces may come from different versions of the file
			// behind a sloppy validator: fetch it whole once more.
			if rerr := p.restart(); rerr != nil {
				return rerr
			}
			return fmt.Errorf("GET %s: resumed download failed verification, starting over: %w", url, unwrapInternal(err))
		}
		return err // a short body is retried (resumed); a bad hash is permanent
	}
	p.done = true
	if err := p.dest.Commit(); err != nil {
		return permanent(fmt.Errorf("GET %s: %w", url, err))
	}
	return nil
}

// parseContentRange parses "bytes START-END/TOTAL" (TOTAL may be "*",
// returned as -1). ok is false for anything else, including END < START.
func parseContentRange(s string) (start, end, total int64, ok bool) {
	rest, found := strings.CutPrefix(s, "bytes ")
	if !found {
		return 0, 0, 0, false
	}
	rng, tot, found := strings.Cut(rest, "/")
	if !found {
		return 0, 0, 0, false
	}
	a, b, found := strings.Cut(rng, "-")
	if !found {
		return 0, 0, 0, false
	}
	var err error
	if start, err = parseNonNeg(a); err != nil {
		return 0, 0, 0, false
	}
	if end, err = parseNonNeg(b); err != nil || end < start {
		return 0, 0, 0, false
	}
	if tot == "*" {
		return start, end, -1, true
	}
	if total, err = parseNonNeg(tot); err != nil || end >= total {
		return 0, 0, 0, false
	}
	return start, end, total, true
}

func parseNonNeg(s string) (int64, error) {
	if s == "" || s[0] < '0' || s[0] > '9' {
		return 0, errors.New("not a number")
	}
	return strconv.ParseInt(s, 10, 64)
}
