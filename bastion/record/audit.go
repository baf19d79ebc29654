package record

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"time"

	"gatehouse/bastion/internal/sanitize"

	"golang.org/x/crypto/ssh"
)

// MaxAuditLine is the largest audit line, in bytes without the newline, that
// Log writes and VerifyAudit accepts. It bounds memory when verifying
// untrusted files; callers keep cert-derived strings short with Sanitize.
const MaxAuditLine = 256 << 10

// auditSyncInterval bounds how long an event may sit in the page cache
// before it is fsynced. Each line is written with its own write(2), so a
// crash of the process loses nothing; only a power loss can lose up to this
// much. fsync per event would cost a disk flush per auth attempt, which a
// login storm cannot afford.
const auditSyncInterval = time.Second

// zeroHash is the "prev" of the first line of a chain.
var zeroHash = hex.EncodeToString(make([]byte, sha256.Size))

// reserved are the keys Log sets itself; callers may not pass them.
var reserved = map[string]bool{"time": true, "event": true, "prev": true, "seq": true}

// Audit is an append-only, hash-chained JSON-lines audit log. Every line is
// {"time":…,"event":…,<caller fields sorted by key>…,"prev":…,"seq":N}
// where prev is the hex SHA-256 of the previous line's bytes (without its
// newline) and seq counts lines from 1. It is safe for concurrent use.
//
// The bastion fails closed: while a write fails (a full disk, say), Log
// returns an error wrapping ErrUnwritable, so the caller refuses or ends
// the connection. That state is not sticky: every later Log tries again,
// and the first that succeeds first writes an "audit.gap" line saying
// since when writing failed, why, and how many events were lost, so the
// chain records the gap. Only Close (or a partial line that cannot be
// cut) fails it for good.
type Audit struct {
	mu        sync.Mutex
	f         *os.File
	path      string
	now       func() time.Time
	prev      string // hex sha256 of the last line
	seq       int64  // seq of the last line
	size      int64  // bytes in the file after the last complete line
	err       error  // sticky failure: closed, or a tail that could not be repaired
	down      *auditDown
	syncTimer *time.Timer
	dirty     bool

	// Checkpoints (EnableCheckpoints, checkpoint.go).
	name       string        // "audit" or "index": what checkpoints say they seal
	signer     ssh.Signer    // nil: no checkpoints
	peer       *Audit        // the other log, whose head each checkpoint also signs
	interval   time.Duration // between periodic checkpoints
	cpTimer    *time.Timer
	openSeq    int64 // seq of the last line when the file was opened
	lastCPSeq  int64 // seq of the last checkpoint line (0: none)
	hadCP      bool  // the file held a checkpoint when opened
	slog       *slog.Logger
	slogFields []any
}

// ErrUnwritable is wrapped by Log's error while the audit log cannot be
// written (write or fsync failed); it clears by itself once a write works.
var ErrUnwritable = errors.New("audit log cannot be written")

// auditDown is an ongoing write failure.
type auditDown struct {
	since time.Time
	cause error
	lost  int64 // events not written since
}

// OpenAudit opens (or creates, 0600, with a 0700 parent directory) the audit
// log at path for appending and continues the hash chain from its last line.
// It refuses a file whose last line is partial or does not parse: appending
// after it would silently fork the chain. now supplies event timestamps; nil
// means time.Now.
func OpenAudit(path string, now func() time.Time) (*Audit, error) {
	if now == nil {
		now = time.Now
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("audit log %s: create directory: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("audit log %s: open: %w", path, err)
	}
	if err := lockFile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("audit log %s: %w", path, err)
	}
	a := &Audit{f: f, path: path, now: now, prev: zeroHash}
	if err := a.loadTail(); err != nil {
		f.Close()
		return nil, err
	}
	return a, nil
}

// loadTail reads the last line of the file to learn prev and seq.
func (a *Audit) loadTail() error {
	st, err := a.f.Stat()
	if err != nil {
		return fmt.Errorf("audit log %s: stat: %w", a.path, err)
	}
	size := st.Size()
	a.size = size
	if size == 0 {
		return nil
	}
	n := min(size, int64(MaxAuditLine)+2)
	buf := make([]byte, n)
	if _, err := a.f.ReadAt(buf, size-n); err != nil {
		return fmt.Errorf("audit log %s: read tail: %w", a.path, err)
	}
	if buf[len(buf)-1] != '\n' {
		return fmt.Errorf("audit log %s: last line is incomplete (no trailing newline, file size %d); "+
			"the previous run was interrupted mid-write or the file was truncated. Inspect it with "+
			"`gatehouse recordings verify --audit %s`, then move it aside to start a new chain",
			a.path, size, a.path)
	}
	body := buf[:len(buf)-1]
	i := bytes.LastIndexByte(body, '\n')
	if i < 0 && int64(len(buf)) < size {
		return fmt.Errorf("audit log %s: last line is longer than %d bytes", a.path, MaxAuditLine)
	}
	line := body[i+1:]
	h, err := parseAuditHeader(line)
	if err != nil {
		return fmt.Errorf("audit log %s: last line does not parse (%v); refusing to continue a chain "+
			"from it. Move the file aside to start a new chain", a.path, err)
	}
	sum := sha256.Sum256(line)
	a.prev = hex.EncodeToString(sum[:])
	a.seq = h.Seq
	a.openSeq = h.Seq
	cp, err := findLastCheckpoint(a.f, size)
	if err != nil {
		return fmt.Errorf("audit log %s: looking for the last checkpoint: %w", a.path, err)
	}
	a.lastCPSeq, a.hadCP = cp, cp > 0
	return nil
}

// auditHeader is the chain-relevant part of an audit line.
type auditHeader struct {
	Time  string `json:"time"`
	Event string `json:"event"`
	Prev  string `json:"prev"`
	Seq   int64  `json:"seq"`
}

func parseAuditHeader(line []byte) (auditHeader, error) {
	var h auditHeader
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(line, &raw); err != nil {
		return h, fmt.Errorf("not a JSON object: %v", err)
	}
	for _, k := range []string{"time", "event", "prev", "seq"} {
		if _, ok := raw[k]; !ok {
			return h, fmt.Errorf("field %q missing", k)
		}
	}
	if err := json.Unmarshal(line, &h); err != nil {
		return h, fmt.Errorf("bad field types: %v", err)
	}
	if h.Seq < 1 {
		return h, fmt.Errorf("seq %d is not positive", h.Seq)
	}
	if len(h.Prev) != 2*sha256.Size {
		return h, fmt.Errorf("prev %q is not a hex SHA-256", Sanitize(h.Prev, 80))
	}
	if _, err := hex.DecodeString(h.Prev); err != nil {
		return h, fmt.Errorf("prev %q is not a hex SHA-256", Sanitize(h.Prev, 80))
	}
	if _, err := time.Parse(time.RFC3339Nano, h.Time); err != nil {
		return h, fmt.Errorf("time %q is not RFC 3339", Sanitize(h.Time, 80))
	}
	return h, nil
}

// Log appends one event. Its JSON fields must not use the keys time,
// event, prev or seq. The line is written with a single write(2) before Log
// returns; it is fsynced within a second and at Close. While writing fails,
// Log returns an error wrapping ErrUnwritable; it recovers by itself (see
// Audit). With SetLogger, the event is also emitted on the service log once
// written.
func (a *Audit) Log(ev Event) error {
	if a == nil {
		return errors.New("audit log: not open")
	}
	if ev == nil {
		return errors.New("audit log: no event")
	}
	event := ev.EventName()
	fields, err := eventFields(ev)
	if err != nil {
		return err
	}
	line, err := encodeFields(event, fields)
	if err != nil {
		return err
	}
	a.mu.Lock()
	if a.err != nil {
		err := a.err
		a.mu.Unlock()
		return err
	}
	var gapFields *sortedFields
	var gapSeq int64
	if d := a.down; d != nil {
		// Every Log while down probes: first the gap line, then the event.
		gf, err := eventFields(AuditGap{
			Since: d.since.UTC().Format(time.RFC3339Nano), LostEvents: d.lost,
			Error: Sanitize(d.cause.Error(), 300),
		})
		var gap []byte
		if err == nil {
			gap, err = encodeFields("audit.gap", gf)
		}
		if err == nil {
			gapSeq, err = a.writeLocked("audit.gap", a.now().UTC(), gap)
		}
		if err != nil {
			d.lost++
			a.mu.Unlock()
			return err
		}
		gapFields = gf
		a.down = nil
	}
	seq, err := a.writeLocked(event, a.now().UTC(), line)
	if err != nil && a.down != nil {
		a.down.lost++
	}
	log, attrs := a.slog, a.slogFields
	a.mu.Unlock()
	if log != nil {
		if gapFields != nil {
			emitEvent(log, attrs, gapSeq, "audit.gap", gapFields)
		}
		if err == nil {
			emitEvent(log, attrs, seq, event, fields)
		}
	}
	return err
}

// writeLocked appends the line {"time":t,<body>,"prev":…,"seq":…} with one
// write(2); body starts with `,"event":`. It returns the new line's seq.
// Callers hold a.mu and have checked a.err; time and the chain fields are
// filled in under the lock so that lines are in time and seq order. A
// failed write is cut back (so the file stays a whole chain) and puts the
// log in the down state.
func (a *Audit) writeLocked(event string, t time.Time, body []byte) (int64, error) {
	seq := a.seq + 1
	full := make([]byte, 0, len(body)+160)
	full = append(full, `{"time":`...)
	full = strconv.AppendQuote(full, t.Format(time.RFC3339Nano))
	full = append(full, body...)
	full = append(full, `,"prev":"`...)
	full = append(full, a.prev...)
	full = append(full, `","seq":`...)
	full = strconv.AppendInt(full, seq, 10)
	full = append(full, '}')
	if len(full) > MaxAuditLine {
		return 0, fmt.Errorf("audit log %s: event %q is %d bytes, over the %d-byte line limit; shorten fields with Sanitize",
			a.path, Sanitize(event, 60), len(full), MaxAuditLine)
	}
	sum := sha256.Sum256(full)
	full = append(full, '\n')
	if n, err := a.f.Write(full); err != nil {
		if n > 0 {
			// Cut the partial line so that the chain continues from the
			// last whole line once the disk has room again.
			if terr := a.f.Truncate(a.size); terr != nil {
				a.err = fmt.Errorf("audit log %s: write failed (%v) and the partial line could not be cut (%v); "+
					"the audit log is closed until a restart (fail closed)", a.path, err, terr)
				return 0, a.err
			}
		}
		a.markDownLocked(err)
		return 0, fmt.Errorf("audit log %s: write failed, events are refused until it can be written again: %w: %w", a.path, ErrUnwritable, err)
	}
	a.size += int64(len(full))
	a.prev = hex.EncodeToString(sum[:])
	a.seq = seq
	a.dirty = true
	if a.syncTimer == nil {
		a.syncTimer = time.AfterFunc(auditSyncInterval, a.syncLater)
	}
	return seq, nil
}

// markDownLocked enters (or stays in) the down state.
func (a *Audit) markDownLocked(cause error) {
	if a.down == nil {
		a.down = &auditDown{since: a.now(), cause: cause}
	}
}

// SetLogger makes every line written from now on also a structured entry
// on log (message "audit event", attributes log, seq, event and the
// event's fields): the service log (journald) can be shipped off the box,
// which is the copy that catches a root who cuts or re-signs this file.
// name is the log attribute ("audit" or "index").
func (a *Audit) SetLogger(log *slog.Logger, name string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.slog, a.slogFields = log, []any{"log", name}
}

// emitEvent writes one audit event as a structured service-log entry,
// one attribute per field (numbers as json.Number, objects and lists as
// decoded JSON).
func emitEvent(log *slog.Logger, attrs []any, seq int64, event string, fields *sortedFields) {
	args := make([]any, 0, len(attrs)+4+2*len(fields.keys))
	args = append(args, attrs...)
	args = append(args, "seq", seq, "event", event)
	for i, k := range fields.keys {
		dec := json.NewDecoder(bytes.NewReader(fields.vals[i]))
		dec.UseNumber()
		var v any
		if err := dec.Decode(&v); err != nil {
			v = string(fields.vals[i])
		}
		args = append(args, k, v)
	}
	log.Info("audit event", args...)
}

// sortedFields are an event's top-level fields in key order, each value
// already canonical JSON (see canonical).
type sortedFields struct {
	keys []string
	vals [][]byte
}

// eventFields encodes ev and puts its fields in sorted key order,
// refusing the keys Log sets itself.
func eventFields(ev Event) (*sortedFields, error) {
	name := Sanitize(ev.EventName(), 60)
	raw, err := marshalNoEscape(ev)
	if err != nil {
		return nil, fmt.Errorf("audit log: event %q: %w", name, err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("audit log: event %q: not a JSON object: %w", name, err)
	}
	f := &sortedFields{keys: make([]string, 0, len(m))}
	for k := range m {
		if reserved[k] {
			return nil, fmt.Errorf("audit log: event %q: field name %q is reserved", name, k)
		}
		f.keys = append(f.keys, k)
	}
	sort.Strings(f.keys)
	f.vals = make([][]byte, len(f.keys))
	for i, k := range f.keys {
		if f.vals[i], err = canonical(m[k]); err != nil {
			return nil, fmt.Errorf("audit log: event %q: field %q: %w", name, Sanitize(k, 60), err)
		}
	}
	return f, nil
}

// canonical rewrites a compact JSON value with every object's keys in
// sorted order, as encoding/json writes a map: a struct nested in an event
// then gives the bytes a map with the same fields gave. Strings and
// numbers keep their exact bytes.
func canonical(v json.RawMessage) ([]byte, error) {
	if len(v) == 0 {
		return v, nil
	}
	switch v[0] {
	case '{':
		var m map[string]json.RawMessage
		if err := json.Unmarshal(v, &m); err != nil {
			return nil, err
		}
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var b bytes.Buffer
		b.WriteByte('{')
		for i, k := range keys {
			if i > 0 {
				b.WriteByte(',')
			}
			if err := writeJSON(&b, k); err != nil {
				return nil, err
			}
			b.WriteByte(':')
			c, err := canonical(m[k])
			if err != nil {
				return nil, err
			}
			b.Write(c)
		}
		b.WriteByte('}')
		return b.Bytes(), nil
	case '[':
		var l []json.RawMessage
		if err := json.Unmarshal(v, &l); err != nil {
			return nil, err
		}
		var b bytes.Buffer
		b.WriteByte('[')
		for i, e := range l {
			if i > 0 {
				b.WriteByte(',')
			}
			c, err := canonical(e)
			if err != nil {
				return nil, err
			}
			b.Write(c)
		}
		b.WriteByte(']')
		return b.Bytes(), nil
	}
	return v, nil
}

// encodeFields renders `,"event":…` and the fields, so the same event
// always produces the same bytes.
func encodeFields(event string, f *sortedFields) ([]byte, error) {
	var b bytes.Buffer
	b.WriteString(`,"event":`)
	if err := writeJSON(&b, event); err != nil {
		return nil, fmt.Errorf("audit log: event name: %w", err)
	}
	for i, k := range f.keys {
		b.WriteByte(',')
		if err := writeJSON(&b, k); err != nil {
			return nil, fmt.Errorf("audit log: event %q: field name: %w", Sanitize(event, 60), err)
		}
		b.WriteByte(':')
		b.Write(f.vals[i])
	}
	return b.Bytes(), nil
}

// writeJSON appends the compact JSON encoding of v without a newline.
func writeJSON(b *bytes.Buffer, v any) error {
	enc := json.NewEncoder(b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return err
	}
	b.Truncate(b.Len() - 1) // Encode's newline
	return nil
}

func (a *Audit) syncLater() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.syncTimer = nil
	a.syncLocked()
}

func (a *Audit) syncLocked() {
	if !a.dirty || a.err != nil || a.f == nil {
		return
	}
	if err := a.f.Sync(); err != nil {
		// Lines written since the last fsync may not be on disk: refuse
		// events until a write works again, and record the gap then.
		a.markDownLocked(fmt.Errorf("fsync: %w", err))
		return
	}
	a.dirty = false
}

// Close writes a final checkpoint (when checkpoints are enabled and lines
// were added since the last), fsyncs and closes the log. Later Log calls
// return an error.
func (a *Audit) Close() error {
	if a == nil {
		return nil
	}
	cpErr := a.closeCheckpoints()
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.f == nil {
		return nil
	}
	if a.syncTimer != nil {
		a.syncTimer.Stop()
		a.syncTimer = nil
	}
	a.syncLocked()
	syncErr := a.err
	if d := a.down; syncErr == nil && d != nil {
		syncErr = fmt.Errorf("audit log %s: closed while unwritable since %s (%d events lost): %w",
			a.path, d.since.UTC().Format(time.RFC3339), d.lost, d.cause)
	}
	cerr := a.f.Close()
	a.f = nil
	if a.err == nil {
		a.err = fmt.Errorf("audit log %s: closed", a.path)
	}
	if syncErr != nil {
		return syncErr
	}
	if cpErr != nil {
		return cpErr
	}
	if cerr != nil {
		return fmt.Errorf("audit log %s: close: %w", a.path, cerr)
	}
	return nil
}

// AuditError is the error VerifyAudit returns; Line is 1-based.
type AuditError struct {
	Line   int
	Reason string
}

func (e *AuditError) Error() string {
	return fmt.Sprintf("audit log line %d: %s", e.Line, e.Reason)
}

// VerifyAudit checks a complete audit log from its first line: every line
// parses, seq counts 1, 2, 3…, and each prev is the SHA-256 of the line
// before it. It detects an edited, deleted, inserted or reordered line and a
// partial last line, and names the first bad line in an *AuditError. A chain
// cut off after a complete line, or an edit of the very last line's non-chain
// fields, cannot be seen from the file alone; compare the returned line count
// (and the last line) with a copy shipped elsewhere.
func VerifyAudit(r io.Reader) (lines int, err error) {
	br := newLineReader(r, MaxAuditLine)
	prev := zeroHash
	for {
		line, complete, err := br.next()
		if err == io.EOF {
			return lines, nil
		}
		n := lines + 1
		if err != nil {
			return lines, &AuditError{Line: n, Reason: err.Error()}
		}
		if !complete {
			return lines, &AuditError{Line: n, Reason: "incomplete last line (no newline): file truncated or write interrupted"}
		}
		h, err := parseAuditHeader(line)
		if err != nil {
			return lines, &AuditError{Line: n, Reason: err.Error()}
		}
		if h.Seq != int64(n) {
			return lines, &AuditError{Line: n, Reason: fmt.Sprintf(
				"seq is %d, want %d: a line before it was deleted or inserted, or lines were reordered", h.Seq, n)}
		}
		if h.Prev != prev {
			if n == 1 {
				return lines, &AuditError{Line: 1, Reason: "first line's prev is not the chain start (all zeros): the log does not start at its first event"}
			}
			return lines, &AuditError{Line: n - 1, Reason: fmt.Sprintf(
				"its SHA-256 does not match the prev recorded on line %d: line %d was edited", n, n-1)}
		}
		sum := sha256.Sum256(line)
		prev = hex.EncodeToString(sum[:])
		lines = n
	}
}

// lineReader reads newline-terminated lines of bounded length.
type lineReader struct {
	r     io.Reader
	buf   []byte
	chunk []byte
	max   int
	eof   bool
}

func newLineReader(r io.Reader, max int) *lineReader {
	return &lineReader{r: r, max: max, chunk: make([]byte, 32<<10)}
}

// next returns the next line without its newline; complete is false for a
// final line that had no newline. The returned slice is valid until the next
// call.
func (l *lineReader) next() (line []byte, complete bool, err error) {
	for {
		if i := bytes.IndexByte(l.buf, '\n'); i >= 0 {
			// Copy out so the caller's slice survives compaction below.
			out := append([]byte(nil), l.buf[:i]...)
			l.buf = append(l.buf[:0], l.buf[i+1:]...)
			return out, true, nil
		}
		if len(l.buf) > l.max {
			return nil, false, fmt.Errorf("line longer than %d bytes", l.max)
		}
		if l.eof {
			if len(l.buf) == 0 {
				return nil, false, io.EOF
			}
			out := l.buf
			l.buf = nil
			return out, false, nil
		}
		n, err := l.r.Read(l.chunk)
		l.buf = append(l.buf, l.chunk[:n]...)
		if err == io.EOF {
			l.eof = true
		} else if err != nil {
			return nil, false, fmt.Errorf("read: %w", err)
		}
	}
}

// Sanitize makes an untrusted string (certificate key id, principal, path)
// safe to log or echo to a terminal; see sanitize.String, which it is.
func Sanitize(s string, max int) string { return sanitize.String(s, max) }
