package mirror

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// deadlineError is the cause of a sync's context when max_sync_duration
// runs out. It wraps context.DeadlineExceeded, so callers that test for a
// deadline still see one, and never ErrRefused: running out of time is a
// failure (exit 1), not a verdict on the upstream's content.
type deadlineError struct{ limit time.Duration }

func (e *deadlineError) Error() string {
	return fmt.Sprintf("the sync ran longer than max_sync_duration (%s)", e.limit)
}

func (e *deadlineError) Unwrap() error { return context.DeadlineExceeded }

// withSyncDeadline bounds a whole sync by cfg.MaxSyncDuration.
func withSyncDeadline(ctx context.Context, cfg Config) (context.Context, context.CancelFunc) {
	return context.WithTimeoutCause(ctx, cfg.MaxSyncDuration.Duration, &deadlineError{limit: cfg.MaxSyncDuration.Duration})
}

// explainDeadline rewrites err, the failure of a sync whose context sctx
// may have run out of max_sync_duration, into one that says so and names
// the transfer that was slowest when time ran out, which is what an
// operator needs to decide between a larger limit and a look at the
// network. Other errors are returned as they are.
func (r *run) explainDeadline(sctx context.Context, err error) error {
	var de *deadlineError
	if err == nil || !errors.As(context.Cause(sctx), &de) {
		return err
	}
	slow := fmt.Sprintf("no download was running (%v)", err)
	if r.client != nil {
		if in := r.client.Interrupted(); len(in) > 0 {
			slow = fmt.Sprintf("the slowest download was %s (%s since its first request, %d bytes into its last attempt)",
				in[0].URL, in[0].Running.Round(time.Second), in[0].Bytes)
			if len(in) > 1 {
				slow += fmt.Sprintf(", and %d more were cut off", len(in)-1)
			}
		}
	}
	return fmt.Errorf("mirror %s: %w and was stopped; nothing was published and the lock is released; %s. Raise max_sync_duration if the upstream is only slow, or check the network to it",
		r.cfg.Name, de, slow)
}
