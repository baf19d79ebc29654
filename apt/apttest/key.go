package apttest

import (
	"testing"
	"time"

	"gatehouse/apt/pgp"
)

// NewKey returns a new signing key of the given algorithm ("ed25519",
// "rsa3072", "rsa4096") for a test repository, failing t on error. Its
// creation time is a day back, so signatures dated a little in the past
// (as fixtures with fixed Dates want) are still after it.
func NewKey(t testing.TB, algo string) *pgp.SigningKey {
	t.Helper()
	// Created well in the past, so suites dated weeks back (for fake-clock
	// tests of expiry) can be signed at their Date.
	k, err := pgp.GenerateSigningKey("gatehouse apttest", "apttest@example.org", algo, time.Now().Add(-400*24*time.Hour))
	if err != nil {
		t.Fatalf("apttest: generate %s key: %v", algo, err)
	}
	return k
}
