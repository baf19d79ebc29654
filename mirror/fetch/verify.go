package fetch

import (
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"strconv"
)

// Want is what a body must be. Size -1 means unknown (not checked, and then
// nothing bounds the download). At least one of SHA256 and SHA512 must be
// set, as lower- or upper-case hex; every one that is set is checked, so a
// caller that wants speed passes only the strongest hash it trusts.
type Want struct {
	Size   int64
	SHA256 string
	SHA512 string
}

func (w Want) check() error {
	if w.Size < -1 {
		return permanent(fmt.Errorf("invalid expected size %d", w.Size))
	}
	if w.SHA256 == "" && w.SHA512 == "" {
		return permanent(errors.New("no expected SHA256 or SHA512 given; refusing to fetch unverifiable content"))
	}
	if w.SHA256 != "" && !isHex(w.SHA256, sha256.Size) {
		return permanent(fmt.Errorf("expected SHA256 %q is not %d hex digits", w.SHA256, 2*sha256.Size))
	}
	if w.SHA512 != "" && !isHex(w.SHA512, sha512.Size) {
		return permanent(fmt.Errorf("expected SHA512 %q is not %d hex digits", w.SHA512, 2*sha512.Size))
	}
	return nil
}

func isHex(s string, n int) bool {
	if len(s) != 2*n {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// verifier hashes everything written to it and fails a write that goes past
// the expected size, so an oversized body stops at Size+1 bytes.
type verifier struct {
	url        string
	want       Want
	h256, h512 hash.Hash
	n          int64
}

func newVerifier(url string, want Want) *verifier {
	v := &verifier{url: url, want: want}
	if want.SHA256 != "" {
		v.h256 = sha256.New()
	}
	if want.SHA512 != "" {
		v.h512 = sha512.New()
	}
	return v
}

func (v *verifier) Write(p []byte) (int, error) {
	v.n += int64(len(p))
	if v.want.Size >= 0 && v.n > v.want.Size {
		return 0, permanent(&MismatchError{URL: v.url, Field: "size", Want: strconv.FormatInt(v.want.Size, 10), Got: "more than that"})
	}
	if v.h256 != nil {
		v.h256.Write(p)
	}
	if v.h512 != nil {
		v.h512.Write(p)
	}
	return len(p), nil
}

// final checks a body that ended cleanly after n bytes. A short body is a
// retryable error (the connection may have been cut without a
// Content-Length to notice it); a wrong hash is permanent.
func (v *verifier) final(n int64) error {
	if v.want.Size >= 0 && n != v.want.Size {
		return &MismatchError{URL: v.url, Field: "size", Want: strconv.FormatInt(v.want.Size, 10), Got: strconv.FormatInt(n, 10)}
	}
	if v.h256 != nil {
		if got := hex.EncodeToString(v.h256.Sum(nil)); !equalHex(got, v.want.SHA256) {
			return permanent(&MismatchError{URL: v.url, Field: "sha256", Want: v.want.SHA256, Got: got})
		}
	}
	if v.h512 != nil {
		if got := hex.EncodeToString(v.h512.Sum(nil)); !equalHex(got, v.want.SHA512) {
			return permanent(&MismatchError{URL: v.url, Field: "sha512", Want: v.want.SHA512, Got: got})
		}
	}
	return nil
}

func equalHex(lower, s string) bool {
	if len(lower) != len(s) {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'F' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

// limitBody bounds a body to want.Size+1 bytes: one byte more than allowed is
// enough to prove a body oversized.
func limitBody(r io.Reader, want Want) io.Reader {
	if want.Size >= 0 {
		return io.LimitReader(r, want.Size+1)
	}
	return r
}

// errWriter tags write errors so they are not mistaken for network errors.
type errWriter struct{ w io.Writer }

type writeError struct{ err error }

func (e *writeError) Error() string { return e.err.Error() }
func (e *writeError) Unwrap() error { return e.err }

func (w errWriter) Write(p []byte) (int, error) {
	n, err := w.w.Write(p)
	if err != nil {
		return n, &writeError{err: err}
	}
	return n, nil
}

// Open starts a GET of url and returns its body as a verifying stream, for
// consumers that parse while downloading. Read returns a *MismatchError
// instead of io.EOF when the size or a hash is wrong, so a consumer that reads
// to io.EOF has read verified content — but it has already seen the bytes,
// and must discard whatever it built from them on any error. Close returns an
// error when the stream was not read to a verified end.
//
// Connection errors and error statuses before the body starts are retried
// as in Get; errors while reading the body are not (the consumer has seen
// part of it), so the caller restarts with a new Open.
func (c *Client) Open(ctx context.Context, url string, want Want) (io.ReadCloser, error) {
	if err := want.check(); err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, unwrapInternal(err))
	}
	var rc *verifyingReader
	err := c.retry(ctx, url, func(actx context.Context) error {
		actx, stop := context.WithCancelCause(actx)
		resp, err := c.do(actx, stop, url, nil)
		if err != nil {
			stop(nil)
			return err
		}
		if err := statusErr(url, resp); err != nil {
			resp.Body.Close()
			stop(nil)
			return err
		}
		if want.Size >= 0 && resp.ContentLength > want.Size {
			resp.Body.Close()
			stop(nil)
			return permanent(&MismatchError{URL: url, Field: "size", Want: strconv.FormatInt(want.Size, 10), Got: strconv.FormatInt(resp.ContentLength, 10) + " (Content-Length)"})
		}
		mr := c.body(actx, stop, resp.Body)
		rc = &verifyingReader{
			c:    c,
			ctx:  actx,
			stop: func(err error) { mr.stop(); stop(err) },
			body: resp.Body,
			r:    limitBody(mr, want),
			v:    newVerifier(url, want),
			url:  url,
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return rc, nil
}

type verifyingReader struct {
	c    *Client
	ctx  context.Context
	stop context.CancelCauseFunc
	body io.Closer
	r    io.Reader
	v    *verifier
	url  string
	err  error // sticky: io.EOF once verified, or the failure
}

func (r *verifyingReader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	n, err := r.r.Read(p)
	if n > 0 {
		if _, werr := r.v.Write(p[:n]); werr != nil {
			r.err = unwrapInternal(werr)
			return 0, r.err
		}
	}
	switch {
	case err == io.EOF:
		if ferr := r.v.final(r.v.n); ferr != nil {
			r.err = unwrapInternal(ferr)
			return n, r.err
		}
		r.err = io.EOF
		r.c.files.Add(1)
		return n, io.EOF
	case err != nil:
		r.err = unwrapInternal(r.c.readErr(r.ctx, r.url, err))
		return n, r.err
	}
	return n, nil
}

func (r *verifyingReader) Close() error {
	r.body.Close()
	r.stop(nil)
	switch r.err {
	case io.EOF:
		return nil
	case nil:
		r.err = fmt.Errorf("GET %s: closed before the end of the body; content not verified", r.url)
		return r.err
	default:
		return r.err
	}
}
