package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"

	"gatehouse/mirror"
)

// On a terminal, a running sync, export or import shows a progress bar
// that github.com/vbauerster/mpb/v8 redraws, and log lines go above it:
// the log handler writes to a logSink, which hands lines to the running
// display (mpb prints them above the bar and redraws the bar below), or
// straight to stderr when no display runs. Writing log lines and a
// carriage-return status line to the same terminal by hand is what put
// warnings into the middle of the progress line (issue 13). Off a terminal
// (cron, journald, a pipe) nothing is redrawn: progress is a structured log
// line every 10 seconds.

// isTerminal reports whether w is a character device (a terminal or pty).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// logSink is the writer of the log handler when stderr is a terminal.
type logSink struct {
	w io.Writer // stderr

	mu sync.Mutex
	p  *mpb.Progress // the running display, nil when none
}

// Write passes one log record (the handler writes each in one call) to the
// running display, which prints it above its bars, or to stderr.
func (s *logSink) Write(b []byte) (int, error) {
	s.mu.Lock()
	p := s.p
	s.mu.Unlock()
	if p != nil {
		// Fails only once the display has shut down (mpb.ErrDone): then
		// nothing is drawn any more and stderr is ours again.
		if n, err := p.Write(b); err == nil {
			return n, nil
		}
	}
	return s.w.Write(b)
}

func (s *logSink) attach(p *mpb.Progress) {
	s.mu.Lock()
	s.p = p
	s.mu.Unlock()
}

func (s *logSink) detach(p *mpb.Progress) {
	s.mu.Lock()
	if s.p == p {
		s.p = nil
	}
	s.mu.Unlock()
}

// progress renders the progress events of one mirror's sync (or of an
// export or import): a bar on a terminal, periodic log lines otherwise.
type progress struct {
	g     *globals
	name  string
	start time.Time

	p   *mpb.Progress // nil off a terminal
	bar *mpb.Bar

	mu     sync.Mutex
	latest mirror.Event
	last   time.Time // when the last log line was written (off a terminal)
}

// progressRefresh is how often the bar is redrawn (and how long a log line
// written during a sync may wait to appear).
const progressRefresh = 100 * time.Millisecond

func newProgress(g *globals, name string) *progress {
	pr := &progress{g: g, name: name, start: time.Now()}
	if g.sink == nil || g.json {
		return pr
	}
	pr.p = mpb.New(mpb.WithOutput(g.sink.w), mpb.WithWidth(24), mpb.WithRefreshRate(progressRefresh))
	// Total 0: set as the phases learn theirs (files, then bytes), and the
	// bar never completes by itself; done removes it.
	pr.bar = pr.p.New(0, mpb.BarStyle(),
		mpb.PrependDecorators(decor.Any(func(decor.Statistics) string { return pr.label() })),
		mpb.AppendDecorators(decor.Any(func(decor.Statistics) string { return pr.counts() })))
	g.sink.attach(pr.p)
	return pr
}

// label is the bar's left side: what runs now.
func (pr *progress) label() string {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	if pr.latest.Phase == "" {
		return pr.name + " starting"
	}
	return pr.name + " " + pr.latest.Phase
}

// counts is the bar's right side: files, bytes, rate and ETA.
func (pr *progress) counts() string {
	pr.mu.Lock()
	e := pr.latest
	pr.mu.Unlock()
	if e.FilesTotal == 0 && e.BytesTotal == 0 {
		return "" // release, publish, gc: nothing to count
	}
	rate, eta := pr.rate(e, time.Now())
	s := fmt.Sprintf(" %d/%d files", e.Files, e.FilesTotal)
	if e.BytesTotal > 0 {
		s += fmt.Sprintf(", %s/%s, %s/s", humanBytes(e.Bytes), humanBytes(e.BytesTotal), humanBytes(int64(rate)))
		if eta != "" {
			s += ", ETA " + eta
		}
	}
	return s
}

// rate returns the transfer rate since the start and the time left at it.
func (pr *progress) rate(e mirror.Event, now time.Time) (float64, string) {
	el := now.Sub(pr.start).Seconds()
	rate := float64(e.Bytes) / max(el, 0.001)
	eta := ""
	if e.BytesTotal > 0 && rate > 0 && e.Bytes < e.BytesTotal {
		eta = (time.Duration(float64(e.BytesTotal-e.Bytes)/rate) * time.Second).Round(time.Second).String()
	}
	return rate, eta
}

// event receives one progress event (mirror.Options.Progress).
func (pr *progress) event(e mirror.Event) {
	pr.mu.Lock()
	pr.latest = e
	if pr.bar != nil {
		pr.mu.Unlock()
		switch {
		case e.BytesTotal > 0:
			pr.bar.SetTotal(e.BytesTotal, false)
			pr.bar.SetCurrent(e.Bytes)
		case e.FilesTotal > 0:
			pr.bar.SetTotal(int64(e.FilesTotal), false)
			pr.bar.SetCurrent(int64(e.Files))
		}
		return
	}
	defer pr.mu.Unlock()
	now := time.Now()
	if now.Sub(pr.last) < 10*time.Second {
		return
	}
	pr.last = now
	rate, eta := pr.rate(e, now)
	pr.g.log.Info("sync progress", "mirror", pr.name, "suite", e.Suite, "phase", e.Phase, "files", e.Files, "files_total", e.FilesTotal,
		"bytes", e.Bytes, "bytes_total", e.BytesTotal, "bytes_per_s", int64(rate), "eta", eta)
}

// done removes the bar (the report printed next says how it ended) and
// gives stderr back to the log handler.
func (pr *progress) done() {
	if pr.p == nil {
		return
	}
	pr.bar.Abort(true)
	pr.p.Wait()
	pr.g.sink.detach(pr.p)
}
