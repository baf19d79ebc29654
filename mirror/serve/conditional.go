package serve

import (
	"net/http"
	"time"
)

// exactIfModifiedSince returns r, or a copy of it without If-Modified-Since
// when that date is not exactly modtime's (to the second), so that
// http.ServeContent answers 304 only for the very version the client
// holds. ServeContent's own rule, "not modified since" (modtime <= the
// date), is wrong for a mirror: after `mirror rollback` the published
// files are older than the ones a client fetched, and that client would
// be told its newer copy is current. nginx's default
// (if_modified_since exact) compares the same way. If-None-Match, when
// present, takes precedence in ServeContent as RFC 9110 says.
func exactIfModifiedSince(r *http.Request, modtime time.Time) *http.Request {
	v := r.Header.Get("If-Modified-Since")
	if v == "" {
		return r
	}
	if t, err := http.ParseTime(v); err == nil && t.Equal(modtime.Truncate(time.Second)) {
		return r
	}
	r = r.Clone(r.Context())
	r.Header.Del("If-Modified-Since")
	return r
}
