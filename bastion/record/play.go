package record

import (
	"context"
	"fmt"
	"io"
	"time"
)

// PlayOptions controls Play.
type PlayOptions struct {
	// Speed divides every delay; values <= 0 mean 1.
	Speed float64
	// IdleLimit caps each pause (after Speed); zero means no cap.
	IdleLimit time.Duration
	// Sleep waits for d or until ctx ends; nil means a timer. Tests and
	// non-interactive exports pass their own.
	Sleep func(ctx context.Context, d time.Duration) error
}

// Play writes the output ("o") events of an asciicast v2 recording to w
// with their original timing, scaled by Speed and capped by IdleLimit, so
// that `gatehouse recordings play` needs no external player. It stops at
// the end of the recording, at the first malformed line, or when ctx ends.
func Play(ctx context.Context, w io.Writer, cast io.Reader, opt PlayOptions) error {
	speed := opt.Speed
	if speed <= 0 {
		speed = 1
	}
	sleep := opt.Sleep
	if sleep == nil {
		sleep = sleepCtx
	}
	cr, err := NewCastReader(cast)
	if err != nil {
		return fmt.Errorf("play: %w", err)
	}
	last := 0.0
	for {
		ev, err := cr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("play: %w", err)
		}
		if ev.Code != "o" {
			continue
		}
		d := time.Duration((ev.Time - last) / speed * float64(time.Second))
		last = ev.Time
		if opt.IdleLimit > 0 && d > opt.IdleLimit {
			d = opt.IdleLimit
		}
		if d > 0 {
			if err := sleep(ctx, d); err != nil {
				return err
			}
		}
		if _, err := io.WriteString(w, ev.Data); err != nil {
			return fmt.Errorf("play: write: %w", err)
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
