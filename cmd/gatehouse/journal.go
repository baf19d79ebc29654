package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"syscall"
)

// Under systemd the service log is the journal. A unit's stderr is then a
// stream to journald, and systemd says so in JOURNAL_STREAM ("DEV:INODE" of
// that stream). journald reads a "<N>" prefix on each line as the line's
// syslog priority (sd-daemon(3)), so `journalctl -p warning` and the
// colours of journalctl work without a journal client library.

// journalPriority maps a slog level to the sd-daemon priority prefix.
func journalPriority(l slog.Level) string {
	switch {
	case l >= slog.LevelError:
		return "<3>" // SD_ERR
	case l >= slog.LevelWarn:
		return "<4>" // SD_WARNING
	case l >= slog.LevelInfo:
		return "<6>" // SD_INFO
	default:
		return "<7>" // SD_DEBUG
	}
}

// isJournalStream reports whether w is the stream JOURNAL_STREAM (env)
// names: systemd sets it for the unit's stdout/stderr, and a child whose
// stderr was redirected elsewhere inherits the variable, so the device and
// inode must match, as sd_journal_stream_fd's users check.
func isJournalStream(w io.Writer, env string) bool {
	f, ok := w.(*os.File)
	if !ok || env == "" {
		return false
	}
	var dev, ino uint64
	if _, err := fmt.Sscanf(env, "%d:%d", &dev, &ino); err != nil {
		return false
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		return false
	}
	return uint64(st.Dev) == dev && st.Ino == ino
}

// journalWriter writes each record with its priority prefix in one Write,
// so concurrent records never interleave with another record's prefix.
type journalWriter struct {
	mu     sync.Mutex
	w      io.Writer
	prefix string
	buf    []byte
}

func (j *journalWriter) Write(p []byte) (int, error) {
	// Called by the inner handler with j.mu held by journalHandler.Handle.
	j.buf = append(append(j.buf[:0], j.prefix...), p...)
	if _, err := j.w.Write(j.buf); err != nil {
		return 0, err
	}
	return len(p), nil
}

// journalHandler prefixes each record an inner handler (text or JSON, one
// line per record) writes to a journalWriter with its priority.
type journalHandler struct {
	inner slog.Handler
	jw    *journalWriter
}

// newJournalHandler returns a handler writing to w, made by mk, whose lines
// carry journald priority prefixes.
func newJournalHandler(w io.Writer, mk func(io.Writer) slog.Handler) slog.Handler {
	jw := &journalWriter{w: w}
	return journalHandler{inner: mk(jw), jw: jw}
}

func (h journalHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.inner.Enabled(ctx, l)
}

func (h journalHandler) Handle(ctx context.Context, r slog.Record) error {
	h.jw.mu.Lock()
	defer h.jw.mu.Unlock()
	h.jw.prefix = journalPriority(r.Level)
	return h.inner.Handle(ctx, r)
}

func (h journalHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return journalHandler{inner: h.inner.WithAttrs(as), jw: h.jw}
}

func (h journalHandler) WithGroup(name string) slog.Handler {
	return journalHandler{inner: h.inner.WithGroup(name), jw: h.jw}
}

// newLogHandler is the process's log handler: text (or JSON with --json)
// on stderr, with journald priorities when stderr is the journal stream.
func newLogHandler(stderr io.Writer, opts *slog.HandlerOptions, json bool, journalStream string) slog.Handler {
	mk := func(w io.Writer) slog.Handler {
		if json {
			return slog.NewJSONHandler(w, opts)
		}
		return slog.NewTextHandler(w, opts)
	}
	if isJournalStream(stderr, journalStream) {
		return newJournalHandler(stderr, mk)
	}
	return mk(stderr)
}
