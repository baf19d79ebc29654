package main

import (
	"errors"
	"time"

	"gatehouse/bastion"
	"gatehouse/mirror"
)

// Mirror refusals (a bad signature or hash, a rollback, expired metadata,
// a mirror that no longer verifies) are warnings in the service log, as
// the bastion's refusals are: `journalctl -p warning` shows both. Like the
// bastion's, they are rate-limited per source, here per mirror, with the
// same helper (bastion.KeyedLimiter): a mirror whose upstream is refused on
// every scheduled run, or a script syncing it in a loop, warns a few times
// and then once per mirrorRefusalEvery, each line counting what it
// stands for. Other failures (network, disk) stay errors, unlimited: they
// are the operator's to fix and each one matters.
const (
	mirrorRefusalEvery = 10 * time.Minute
	mirrorRefusalBurst = 3
)

// mirrorRefusals returns the budget for mirror refusals of this run of
// the CLI (in production, of the process), made on first use.
func (g *globals) mirrorRefusals() *bastion.KeyedLimiter {
	g.refusalsOnce.Do(func() {
		g.refusals = bastion.NewKeyedLimiter(mirrorRefusalEvery, mirrorRefusalBurst, time.Now)
	})
	return g.refusals
}

// logSyncError logs a failed sync of mirror name: a refusal by
// verification as a rate-limited warning, anything else as an error.
func (g *globals) logSyncError(msg, name string, err error) {
	if errors.Is(err, mirror.ErrRefused) {
		g.logMirrorRefusal(msg+": refused by verification", name, "err", err)
		return
	}
	g.log.Error(msg, "mirror", name, "err", err)
}

// logMirrorRefusal writes a warning about mirror name unless its budget is
// used up; args are further key-value pairs.
func (g *globals) logMirrorRefusal(msg, name string, args ...any) {
	ok, suppressed := g.mirrorRefusals().Allow(name)
	if !ok {
		return
	}
	args = append([]any{"mirror", name}, args...)
	if suppressed > 0 {
		args = append(args, "suppressed", suppressed)
	}
	g.log.Warn(msg, args...)
}
