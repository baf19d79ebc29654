package main

import (
	"fmt"
	"os"
	"sync"
	"time"

	"gatehouse/mirror"
)

// progress renders sync progress: a rewritten status line on a terminal,
// and a structured log line every 10 seconds otherwise (cron, journal).
type progress struct {
	g      *globals
	name   string
	tty    bool
	mu     sync.Mutex
	start  time.Time
	last   time.Time
	drawn  bool
	latest mirror.Event
}

func newProgress(g *globals, name string) *progress {
	p := &progress{g: g, name: name, start: time.Now()}
	if f, ok := g.stderr.(*os.File); ok && !g.json {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			p.tty = true
		}
	}
	return p
}

func (p *progress) event(e mirror.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.latest = e
	now := time.Now()
	interval := 10 * time.Second
	if p.tty {
		interval = 200 * time.Millisecond
	}
	if now.Sub(p.last) < interval {
		return
	}
	p.last = now
	el := now.Sub(p.start).Seconds()
	rate := float64(e.Bytes) / max(el, 0.001)
	eta := ""
	if e.BytesTotal > 0 && rate > 0 && e.Bytes < e.BytesTotal {
		eta = (time.Duration(float64(e.BytesTotal-e.Bytes)/rate) * time.Second).Round(time.Second).String()
	}
	if p.tty {
		fmt.Fprintf(p.g.stderr, "\r\033[K%s %s: %d/%d files, %s/%s, %s/s, ETA %s", p.name, e.Phase, e.Files, e.FilesTotal,
			humanBytes(e.Bytes), humanBytes(e.BytesTotal), humanBytes(int64(rate)), eta)
		p.drawn = true
		return
	}
	p.g.log.Info("sync progress", "mirror", p.name, "suite", e.Suite, "phase", e.Phase, "files", e.Files, "files_total", e.FilesTotal,
		"bytes", e.Bytes, "bytes_total", e.BytesTotal, "bytes_per_s", int64(rate), "eta", eta)
}

func (p *progress) done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.drawn {
		fmt.Fprint(p.g.stderr, "\r\033[K")
	}
}
