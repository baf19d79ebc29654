package main

import (
	"errors"
	"fmt"

	"gatehouse/mirror"
)

// Exit codes are part of the operator interface (cron, systemd, scripts rely
// on them) and must stay stable.
const (
	exitOK       = 0 // success, including "already current"
	exitFailure  = 1 // the operation failed (network, disk, upstream broken)
	exitUsage    = 2 // bad command line or configuration
	exitRefused  = 3 // refused by verification: signature, hash, rollback, expiry, tampered bundle
	exitInternal = exitFailure
)

// usageError marks an error caused by how gatehouse was invoked or
// configured; it exits with exitUsage.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usageErrorf(format string, args ...any) error {
	return &usageError{fmt.Errorf(format, args...)}
}

// refusedError marks a verification refusal; it exits with exitRefused.
// Packages signal refusals with their own sentinel errors; refusedSentinels
// lists them so this stays the one place mapping errors to exit codes.
type refusedError struct{ err error }

func (e *refusedError) Error() string { return e.err.Error() }
func (e *refusedError) Unwrap() error { return e.err }

// refusedSentinels are errors (matched with errors.Is) that mean "refused by
// verification". Filled in by the files wiring each subsystem.
var refusedSentinels = []error{mirror.ErrRefused}

// exitCode maps an error returned by a command to the process exit code.
func exitCode(err error) int {
	if err == nil {
		return exitOK
	}
	var ue *usageError
	if errors.As(err, &ue) {
		return exitUsage
	}
	if errors.Is(err, mirror.ErrConfig) || errors.Is(err, mirror.ErrOlderThanPublished) {
		return exitUsage
	}
	var re *refusedError
	if errors.As(err, &re) {
		return exitRefused
	}
	for _, s := range refusedSentinels {
		if errors.Is(err, s) {
			return exitRefused
		}
	}
	return exitFailure
}
