package apt

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Sentinels for the Release checks, usable with errors.Is.
var (
	// ErrSuiteMismatch: the Release is for another suite than requested.
	ErrSuiteMismatch = errors.New("suite mismatch")
	// ErrMissingDate: the Release has no Date, so rollback cannot be ruled out.
	ErrMissingDate = errors.New("release has no Date")
	// ErrRollback: the Release is older than one accepted before (replay or
	// a stale mirror in between).
	ErrRollback = errors.New("release older than last accepted")
	// ErrFutureDate: the Release is dated further in the future than the
	// allowed clock skew.
	ErrFutureDate = errors.New("release dated in the future")
	// ErrExpired: the Release's Valid-Until has passed (frozen upstream).
	ErrExpired = errors.New("release expired")
)

// CheckSuite applies apt's rule: the requested distribution want must equal
// the Release's Suite or its Codename (exactly, case-sensitively). A flat
// repository is requested by a path ending in "/" (as in apt's "deb URI ./")
// and is not checked, since its Release names no suite apt could compare.
// An empty want is an error: it is a caller bug, never a match. apt itself
// only warns on a mismatch ("Conflicting distribution"); a mirror refuses,
// because serving another suite under this name misleads every client.
func CheckSuite(r *Release, want string) error {
	if want == "" {
		return fmt.Errorf("%w: no suite requested", ErrSuiteMismatch)
	}
	if strings.HasSuffix(want, "/") {
		return nil
	}
	if want == r.Suite || want == r.Codename {
		return nil
	}
	return fmt.Errorf("%w: requested %q but the Release says Suite %q, Codename %q; check the configured suite name and upstream URL",
		ErrSuiteMismatch, want, r.Suite, r.Codename)
}

// CheckDate refuses a Release without Date (ErrMissingDate), one dated
// before lastAccepted (ErrRollback; a zero lastAccepted means none yet and
// an equal Date is the same Release), and one dated more than maxFuture
// after now (ErrFutureDate).
func CheckDate(r *Release, lastAccepted, now time.Time, maxFuture time.Duration) error {
	if r.Date.IsZero() {
		return fmt.Errorf("%w: without it a replayed old Release cannot be detected", ErrMissingDate)
	}
	if !lastAccepted.IsZero() && r.Date.Before(lastAccepted) {
		return fmt.Errorf("%w: Date %s is before the last accepted %s; the upstream (or something in between) serves an older Release",
			ErrRollback, fmtTime(r.Date), fmtTime(lastAccepted))
	}
	if limit := now.Add(maxFuture); r.Date.After(limit) {
		return fmt.Errorf("%w: Date %s is after now (%s) plus the allowed skew %s; check this machine's clock",
			ErrFutureDate, fmtTime(r.Date), fmtTime(now), maxFuture)
	}
	return nil
}

// CheckValidUntil refuses a Release whose Valid-Until is before now
// (ErrExpired). A Release without Valid-Until never expires.
func CheckValidUntil(r *Release, now time.Time) error {
	if r.ValidUntil.IsZero() || !now.After(r.ValidUntil) {
		return nil
	}
	return fmt.Errorf("%w: Valid-Until %s passed at %s (now); the upstream stopped refreshing it or this is a replay",
		ErrExpired, fmtTime(r.ValidUntil), fmtTime(now))
}

func fmtTime(t time.Time) string { return t.UTC().Format(time.RFC1123) }
