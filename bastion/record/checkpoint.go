package record

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/crypto/ssh"
)

// Checkpoints make the hash chains tamper-evident against deletion, the
// idea of journald's Forward Secure Sealing in SSHSIG form. A chain
// without a key shows an edited or removed line in the middle, but not
// lines cut from its end, nor a file deleted and re-hashed from scratch.
// So every checkpoint interval (and at shutdown) the bastion appends a
// checkpoint line, itself a normal chain line with event "checkpoint",
// whose "sig" is an SSHSIG (namespace AuditNamespace, the recording key)
// over its "signed" field:
//
//	gatehouse-audit checkpoint v1 log=audit lines=41 head=<hex> time=<RFC 3339> interval=10s peer=index peer_lines=7 peer_head=<hex>\n
//
// lines and head are the line count and the hex SHA-256 of the last line
// before the checkpoint (its seq-1 and its prev); time is the checkpoint
// line's own time; peer, peer_lines and peer_head name the other log (the
// audit log's checkpoints sign the recordings index's head and the other
// way round), so cutting the tail of one log is caught by the other's
// checkpoints. interval is the checkpoint interval (left out when
// checkpoints are written at Close only): lines after the last checkpoint
// spanning much longer than it mean later checkpoints were removed. A new
// log starts with a checkpoint of lines=0. Without a peer the text ends
// after time=… (or interval=…). A verifier
// rebuilds the text from the line's fields, compares it with "signed" and
// checks "sig" over it, so stock `ssh-keygen -Y verify` can check any
// checkpoint (README: "Checkpoints").
//
// What checkpoints cannot do: the key is on the box, so root can cut both
// logs back to matching checkpoints, or re-sign. A copy kept elsewhere (the
// service log shipped off the box, SetLogger) catches that.

// AuditNamespace is the SSHSIG namespace of audit-log and index checkpoints.
const AuditNamespace = "gatehouse-audit"

// CheckpointEvent is the event name of checkpoint lines.
const CheckpointEvent = "checkpoint"

// checkpointPrefix starts every signed checkpoint text.
const checkpointPrefix = "gatehouse-audit checkpoint v1"

// Checkpoint is one parsed checkpoint line.
type Checkpoint struct {
	Seq   int64  // the checkpoint line's own seq
	Log   string // which log it seals: "audit" or "index"
	Lines int64  // lines before the checkpoint
	Head  string // hex SHA-256 of line Lines
	Time  string // the checkpoint line's time
	// Interval is the checkpoint interval the bastion ran with ("" when
	// checkpoints are written at Close only): no line may stay unsealed
	// much longer, so a long unsealed tail means checkpoints were removed.
	Interval  string
	Peer      string // the other log ("" none)
	PeerLines int64
	PeerHead  string
	// Unsealed > 0 marks a checkpoint written at start-up that seals lines
	// an unclean stop (or a version without checkpoints) left after the
	// last checkpoint; Reason says which.
	Unsealed int64
	Reason   string
}

// Message is the exact text the checkpoint's signature covers.
func (c *Checkpoint) Message() string {
	s := fmt.Sprintf("%s log=%s lines=%d head=%s time=%s", checkpointPrefix, c.Log, c.Lines, c.Head, c.Time)
	if c.Interval != "" {
		s += " interval=" + c.Interval
	}
	if c.Peer != "" {
		s += fmt.Sprintf(" peer=%s peer_lines=%d peer_head=%s", c.Peer, c.PeerLines, c.PeerHead)
	}
	return s + "\n"
}

// EnableCheckpoints makes a sign checkpoints as name ("audit" or
// "index") with signer, each also signing peer's line count and head (peer
// may be nil): one every interval when lines were added (interval <= 0:
// only at Close), and one at Close. If the file held lines after its last
// checkpoint when it was opened, a checkpoint marked unclean seals them
// now. Call it once, right after OpenAudit (and SetLogger).
func (a *Audit) EnableCheckpoints(signer ssh.Signer, name string, peer *Audit, interval time.Duration) error {
	if signer == nil || name == "" {
		return errors.New("audit log: checkpoints need a signing key and a log name")
	}
	a.mu.Lock()
	a.signer, a.name, a.peer, a.interval = signer, name, peer, interval
	unsealed := a.openSeq - a.lastCPSeq
	hadCP := a.hadCP
	a.mu.Unlock()
	if unsealed > 0 {
		reason := fmt.Sprintf("unclean stop: the run that wrote the last %d line(s) ended without its final checkpoint (crash, kill or power loss)", unsealed)
		if !hadCP {
			reason = fmt.Sprintf("first checkpoint: %d line(s) were written without checkpoints (no recording key, or an older gatehouse)", unsealed)
		}
		if err := a.checkpoint(true, &Checkpoint{Unsealed: unsealed, Reason: reason}); err != nil {
			return err
		}
	} else if !hadCP {
		// A new log starts with a checkpoint of nothing (lines=0), so that
		// a log with lines and no checkpoint at all is always a rewrite
		// (or unsigned), even in its first checkpoint_interval.
		if err := a.checkpoint(true, nil); err != nil {
			return err
		}
	}
	if interval > 0 {
		a.mu.Lock()
		if a.cpTimer == nil && a.f != nil {
			a.cpTimer = time.AfterFunc(interval, a.tick)
		}
		a.mu.Unlock()
	}
	return nil
}

// Checkpoint appends a signed checkpoint now if lines were added since the
// last one. It is a no-op without EnableCheckpoints.
func (a *Audit) Checkpoint() error { return a.checkpoint(false, nil) }

// tick is the periodic checkpoint; it re-arms itself until Close.
func (a *Audit) tick() {
	err := a.checkpoint(false, nil)
	a.mu.Lock()
	log := a.slog
	if a.cpTimer != nil && a.f != nil {
		a.cpTimer = time.AfterFunc(a.interval, a.tick)
	}
	a.mu.Unlock()
	if err != nil && log != nil {
		log.Error("audit log: periodic checkpoint failed", "err", err)
	}
}

// closeCheckpoints stops the timer and writes the final checkpoint.
func (a *Audit) closeCheckpoints() error {
	a.mu.Lock()
	if a.cpTimer != nil {
		a.cpTimer.Stop()
		a.cpTimer = nil
	}
	a.mu.Unlock()
	return a.checkpoint(false, nil)
}

// state returns the log's name, line count and head.
func (a *Audit) state() (string, int64, string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.name, a.seq, a.prev
}

// checkpoint writes one checkpoint line: always when force is set,
// otherwise only if lines were added since the last checkpoint. unclean,
// when set, carries the start-up seal's Unsealed and Reason.
func (a *Audit) checkpoint(force bool, unclean *Checkpoint) error {
	if a == nil {
		return nil
	}
	a.mu.Lock()
	peer := a.peer
	a.mu.Unlock()
	var cp Checkpoint
	if peer != nil {
		// Read before taking our own lock: the two logs' locks are never
		// held together, so two logs checkpointing at once cannot deadlock.
		cp.Peer, cp.PeerLines, cp.PeerHead = peer.state()
	}
	a.mu.Lock()
	if a.signer == nil || a.f == nil {
		a.mu.Unlock()
		return nil
	}
	if a.err != nil {
		err := a.err
		a.mu.Unlock()
		return err
	}
	if !force && a.seq == a.lastCPSeq {
		a.mu.Unlock()
		return nil
	}
	t := a.now().UTC()
	cp.Log, cp.Lines, cp.Head, cp.Time = a.name, a.seq, a.prev, t.Format(time.RFC3339Nano)
	if a.interval > 0 {
		cp.Interval = a.interval.String()
	}
	msg := cp.Message()
	sig, err := SignSSHSIG(a.signer, AuditNamespace, []byte(msg))
	if err != nil {
		a.mu.Unlock()
		return fmt.Errorf("audit log %s: checkpoint: %w", a.path, err)
	}
	fields := CheckpointLine{Log: cp.Log, Lines: cp.Lines, Head: cp.Head, Signed: msg, Sig: string(sig), Interval: cp.Interval}
	if cp.Peer != "" {
		fields.CheckpointPeer = &CheckpointPeer{Peer: cp.Peer, PeerLines: cp.PeerLines, PeerHead: cp.PeerHead}
	}
	if unclean != nil {
		fields.CheckpointUnsealed = &CheckpointUnsealed{Unsealed: unclean.Unsealed, Reason: unclean.Reason}
	}
	sf, err := eventFields(fields)
	var body []byte
	if err == nil {
		body, err = encodeFields(CheckpointEvent, sf)
	}
	if err != nil {
		a.mu.Unlock()
		return err
	}
	seq, err := a.writeLocked(CheckpointEvent, t, body)
	if err == nil {
		a.lastCPSeq = seq
		// A checkpoint is the point a verifier trusts: put it on disk now.
		a.syncLocked()
		err = a.err
	}
	log, attrs := a.slog, a.slogFields
	a.mu.Unlock()
	if err == nil && log != nil {
		emitEvent(log, attrs, seq, CheckpointEvent, sf)
	}
	return err
}

// findLastCheckpoint returns the seq of the last checkpoint line in f (of
// size bytes, ending in a newline), or 0, reading backwards from the end.
func findLastCheckpoint(f *os.File, size int64) (int64, error) {
	const block = 1 << 20
	marker := []byte(`,"event":"checkpoint",`)
	var carry []byte
	for end := size; end > 0; {
		start := max(0, end-block)
		data := make([]byte, end-start, end-start+int64(len(carry)))
		if _, err := f.ReadAt(data, start); err != nil {
			return 0, err
		}
		data = append(data, carry...)
		segs := bytes.Split(data, []byte("\n"))
		first := 1
		if start == 0 {
			first = 0
		}
		for i := len(segs) - 1; i >= first; i-- {
			line := segs[i]
			if len(line) == 0 || !bytes.Contains(line, marker) {
				continue
			}
			if h, err := parseAuditHeader(line); err == nil && h.Event == CheckpointEvent {
				return h.Seq, nil
			}
		}
		carry = segs[0]
		if len(carry) > 2*MaxAuditLine {
			return 0, fmt.Errorf("a line is longer than %d bytes", MaxAuditLine)
		}
		end = start
	}
	return 0, nil
}

// LogReport is what VerifyLog found in one audit log or index.
type LogReport struct {
	Name        string
	Lines       int64
	Checkpoints []Checkpoint
	// Unsealed counts the lines after the last checkpoint (all lines when
	// there is none): a crash leaves them, or the bastion is running.
	Unsealed int64
	// Problems are verification failures (exit 3); the first chain error
	// ends the scan.
	Problems []string
	// FirstTime is the time of line 1 ("" for an empty log).
	FirstTime string
	// ProxyStarts maps recording ids to the audit line of their
	// proxy.start; RecordingStarts those of the index's recording.start
	// lines and their times.
	ProxyStarts     map[string]int64
	RecordingStarts map[string]indexStart
	// heads holds the SHA-256 of the lines VerifyLog was asked about.
	heads map[int64]string
}

type indexStart struct {
	line int64
	time string
}

// VerifyLog checks one hash-chained log (the audit log or the recordings
// index, name "audit" or "index") from its first line: the chain as
// VerifyAudit does, and every checkpoint line: its text matches its fields,
// its lines and head are those of the line before it, it names this log,
// and its signature is by pub (when pub is nil, signatures are reported as
// not checked). want lists line numbers whose hash the caller needs
// (another log's checkpoints name them).
func VerifyLog(r io.Reader, name string, pub ssh.PublicKey, want map[int64]bool) *LogReport {
	rep := &LogReport{Name: name, ProxyStarts: map[string]int64{}, RecordingStarts: map[string]indexStart{}, heads: map[int64]string{}}
	br := newLineReader(r, MaxAuditLine)
	prev := zeroHash
	unchecked := 0
	var firstUnsealed, lastLine string // times of the run after the last checkpoint
	for {
		line, complete, err := br.next()
		if err == io.EOF {
			break
		}
		n := rep.Lines + 1
		bad := func(at int64, format string, args ...any) {
			rep.Problems = append(rep.Problems, fmt.Sprintf("%s line %d: %s", name, at, fmt.Sprintf(format, args...)))
		}
		if err != nil {
			bad(n, "%v", err)
			break
		}
		if !complete {
			bad(n, "incomplete last line (no newline): file truncated or write interrupted")
			break
		}
		h, err := parseAuditHeader(line)
		if err != nil {
			bad(n, "%v", err)
			break
		}
		if h.Seq != n {
			bad(n, "seq is %d, want %d: a line before it was deleted or inserted, or lines were reordered", h.Seq, n)
			break
		}
		if h.Prev != prev {
			if n == 1 {
				bad(1, "prev is not the chain start (all zeros): the log does not start at its first event")
			} else {
				bad(n-1, "its SHA-256 does not match the prev recorded on line %d: line %d was edited", n, n-1)
			}
			break
		}
		if n == 1 {
			rep.FirstTime = h.Time
		}
		if h.Event == CheckpointEvent {
			firstUnsealed = ""
		} else {
			if firstUnsealed == "" {
				firstUnsealed = h.Time
			}
			lastLine = h.Time
		}
		switch h.Event {
		case CheckpointEvent:
			cp, err := checkCheckpoint(line, h, name, pub)
			if err != nil {
				bad(n, "checkpoint: %v", err)
			} else {
				if pub == nil {
					unchecked++
				}
				rep.Checkpoints = append(rep.Checkpoints, *cp)
			}
		case "proxy.start":
			var f struct {
				Recording string `json:"recording"`
			}
			if json.Unmarshal(line, &f) == nil && f.Recording != "" {
				rep.ProxyStarts[f.Recording] = n
			}
		case "recording.start":
			var f struct {
				ID string `json:"id"`
			}
			if json.Unmarshal(line, &f) == nil && f.ID != "" {
				rep.RecordingStarts[f.ID] = indexStart{n, h.Time}
			}
		}
		sum := sha256.Sum256(line)
		prev = hex.EncodeToString(sum[:])
		if want[n] {
			rep.heads[n] = prev
		}
		rep.Lines = n
	}
	rep.Unsealed = rep.Lines
	if k := len(rep.Checkpoints); k > 0 {
		last := rep.Checkpoints[k-1]
		rep.Unsealed = rep.Lines - last.Seq
		if p := unsealedTooLong(last, firstUnsealed, lastLine, rep.Unsealed); p != "" && rep.Unsealed > 0 {
			rep.Problems = append(rep.Problems, fmt.Sprintf("%s: %s", name, p))
		}
	}
	if unchecked > 0 {
		rep.Problems = append(rep.Problems, fmt.Sprintf("%s: %d checkpoint signature(s) not checked: no recording public key (pass --key)", name, unchecked))
	}
	return rep
}

// unsealedTooLong reports lines after the last checkpoint that span much
// longer than the checkpoint interval: a running bastion seals lines within
// an interval, and a crash stops it writing, so such a tail was written
// (or kept) after the checkpoints that sealed it were removed.
func unsealedTooLong(last Checkpoint, first, lastLine string, n int64) string {
	iv, err := time.ParseDuration(last.Interval)
	if err != nil || first == "" {
		return ""
	}
	t0, err0 := time.Parse(time.RFC3339Nano, first)
	t1, err1 := time.Parse(time.RFC3339Nano, lastLine)
	if err0 != nil || err1 != nil {
		return ""
	}
	if span := t1.Sub(t0); span > 2*iv+unsealedSlack {
		return fmt.Sprintf("the %d line(s) after the last checkpoint (line %d) span %v, but checkpoints are written every %v: the checkpoints after line %d were removed",
			n, last.Seq, span.Round(time.Second), iv, last.Seq)
	}
	return ""
}

// unsealedSlack tolerates a delayed checkpoint timer on a loaded machine.
const unsealedSlack = 5 * time.Second

// checkCheckpoint parses and checks one checkpoint line against the chain
// state before it (h.Prev, h.Seq-1).
func checkCheckpoint(line []byte, h auditHeader, name string, pub ssh.PublicKey) (*Checkpoint, error) {
	var f struct {
		Log       string `json:"log"`
		Lines     *int64 `json:"lines"`
		Head      string `json:"head"`
		Interval  string `json:"interval"`
		Peer      string `json:"peer"`
		PeerLines int64  `json:"peer_lines"`
		PeerHead  string `json:"peer_head"`
		Signed    string `json:"signed"`
		Sig       string `json:"sig"`
		Unsealed  int64  `json:"unsealed"`
		Reason    string `json:"reason"`
	}
	if err := json.Unmarshal(line, &f); err != nil {
		return nil, fmt.Errorf("fields do not parse: %v", err)
	}
	if f.Lines == nil {
		return nil, errors.New(`field "lines" missing`)
	}
	cp := &Checkpoint{Seq: h.Seq, Log: f.Log, Lines: *f.Lines, Head: f.Head, Time: h.Time, Interval: f.Interval,
		Peer: f.Peer, PeerLines: f.PeerLines, PeerHead: f.PeerHead, Unsealed: f.Unsealed, Reason: f.Reason}
	if cp.Log != name {
		return nil, fmt.Errorf("seals log %q, but this is the %s log (copied from another log?)", Sanitize(cp.Log, 40), name)
	}
	if cp.Lines != h.Seq-1 || cp.Head != h.Prev {
		return nil, fmt.Errorf("signs %d lines ending in %.16s…, but the chain before it has %d lines ending in %.16s…",
			cp.Lines, Sanitize(cp.Head, 64), h.Seq-1, h.Prev)
	}
	if cp.Interval != "" {
		if d, err := time.ParseDuration(cp.Interval); err != nil || d <= 0 {
			return nil, fmt.Errorf("bad interval %q", Sanitize(cp.Interval, 40))
		}
	}
	if cp.Peer != "" && (cp.Peer == name || !validHexHash(cp.PeerHead) || cp.PeerLines < 0) {
		return nil, errors.New("bad peer fields")
	}
	if f.Signed != cp.Message() {
		return nil, errors.New(`"signed" is not the text its fields give (edited)`)
	}
	if pub == nil {
		return cp, nil
	}
	if err := VerifySSHSIG(pub, AuditNamespace, []byte(f.Signed), []byte(f.Sig)); err != nil {
		return nil, err
	}
	return cp, nil
}

func validHexHash(s string) bool {
	if len(s) != 2*sha256.Size {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// EvidenceReport is the outcome of VerifyEvidence.
type EvidenceReport struct {
	Recordings []VerifyResult // per recording (with --all)
	Audit      *LogReport     // nil when no audit log was given
	Index      *LogReport     // nil without a recordings root
	Problems   []string       // log-level failures: exit 3
	Notes      []string       // worth saying, not failures
}

// VerifyEvidence checks what the bastion leaves behind as one body of
// evidence: the recordings under root (every one, and the index; "" to
// skip) and the audit log at auditPath ("" to skip), each log's chain and
// checkpoints, each log's checkpoints against the other log (a tail cut
// from one shows as the other's checkpoint naming lines it no longer has),
// and every audit proxy.start against its recording and index entry, and
// back. A missing index, or a log without any checkpoint while a key is
// given, is a problem. The error is for a root that cannot be read at all.
func VerifyEvidence(root, auditPath string, pub ssh.PublicKey) (*EvidenceReport, error) {
	rep := &EvidenceReport{}
	var byID map[string]bool
	if root != "" {
		if _, err := os.ReadDir(root); err != nil {
			return nil, fmt.Errorf("recordings %s: %w", root, err)
		}
		// VerifyAll's own index error is left out: VerifyLog below
		// reports the same missing index or broken chain.
		res, _ := VerifyAll(root, pub)
		rep.Recordings = res
		byID = map[string]bool{}
		for _, r := range res {
			byID[r.ID] = true
		}
	}
	verify := func(path, name string, want map[int64]bool) *LogReport {
		f, err := os.Open(path)
		if err != nil {
			rep.Problems = append(rep.Problems, fmt.Sprintf("%s log %s: %v", name, path, err))
			return nil
		}
		defer f.Close()
		return VerifyLog(f, name, pub, want)
	}
	indexPath := ""
	if root != "" {
		indexPath = filepath.Join(root, IndexName)
	}
	if auditPath != "" {
		rep.Audit = verify(auditPath, "audit", nil)
	}
	if indexPath != "" {
		if _, err := os.Stat(indexPath); err != nil {
			rep.Problems = append(rep.Problems, fmt.Sprintf("recordings index %s is missing (%v): deleted recordings cannot be detected", indexPath, err))
		} else {
			rep.Index = verify(indexPath, "index", peerWants(rep.Audit, "index"))
		}
	}
	if rep.Audit != nil && rep.Index != nil {
		if w := peerWants(rep.Index, "audit"); len(w) > 0 {
			if again := verify(auditPath, "audit", w); again != nil {
				rep.Audit.heads = again.heads
			}
		}
		crossCheck(rep, rep.Audit, rep.Index)
		crossCheck(rep, rep.Index, rep.Audit)
	}
	for _, l := range []*LogReport{rep.Audit, rep.Index} {
		if l == nil {
			continue
		}
		rep.Problems = append(rep.Problems, l.Problems...)
		switch {
		case len(l.Checkpoints) == 0 && l.Lines > 0 && pub != nil:
			rep.Problems = append(rep.Problems, fmt.Sprintf("%s log: %d lines and no checkpoint: written without the recording key, or rewritten by someone without it", l.Name, l.Lines))
		case len(l.Checkpoints) == 0 && l.Lines > 0:
			rep.Notes = append(rep.Notes, fmt.Sprintf("%s log: no checkpoint: lines cut from its end cannot be detected", l.Name))
		case l.Unsealed > 0:
			rep.Notes = append(rep.Notes, fmt.Sprintf("%s log: the last %d line(s) come after the last checkpoint (line %d): a crash left them, or the bastion is running",
				l.Name, l.Unsealed, l.Lines-l.Unsealed))
		}
		for _, c := range l.Checkpoints {
			if c.Unsealed > 0 {
				rep.Notes = append(rep.Notes, fmt.Sprintf("%s log line %d: sealed %d line(s) at start-up: %s", l.Name, c.Seq, c.Unsealed, Sanitize(c.Reason, 200)))
			}
		}
	}
	if rep.Audit != nil && root != "" {
		for id, line := range rep.Audit.ProxyStarts {
			if rep.Index != nil {
				if _, ok := rep.Index.RecordingStarts[id]; !ok {
					rep.Problems = append(rep.Problems, fmt.Sprintf("audit log line %d: proxy session with recording %s, which the recordings index does not list (deleted with its index lines)", line, Sanitize(id, 100)))
					continue
				}
			}
			if !byID[id] {
				rep.Problems = append(rep.Problems, fmt.Sprintf("audit log line %d: proxy session with recording %s, which is missing", line, Sanitize(id, 100)))
			}
		}
		first, ferr := time.Parse(time.RFC3339Nano, rep.Audit.FirstTime)
		if rep.Index != nil && ferr == nil {
			for id, st := range rep.Index.RecordingStarts {
				t, err := time.Parse(time.RFC3339Nano, st.time)
				if _, ok := rep.Audit.ProxyStarts[id]; ok || err == nil && t.Before(first) {
					continue // older than this audit log (rotated)
				}
				rep.Problems = append(rep.Problems, fmt.Sprintf("index line %d: recording %s has no proxy.start in the audit log (audit lines deleted)", st.line, Sanitize(id, 100)))
			}
		}
	}
	return rep, nil
}

// peerWants lists the lines of log peer that l's checkpoints name.
func peerWants(l *LogReport, peer string) map[int64]bool {
	if l == nil {
		return nil
	}
	w := map[int64]bool{}
	for _, c := range l.Checkpoints {
		if c.Peer == peer && c.PeerLines > 0 {
			w[c.PeerLines] = true
		}
	}
	return w
}

// crossCheck checks l's checkpoints against peer's chain. Checkpoints
// older than peer's first line sealed an earlier file (the audit log was
// rotated) and are skipped; a log replaced to hide its tail has no
// checkpoint of its own, which is reported anyway.
func crossCheck(rep *EvidenceReport, l, peer *LogReport) {
	first, err := time.Parse(time.RFC3339Nano, peer.FirstTime)
	for _, c := range l.Checkpoints {
		if c.Peer != peer.Name || c.PeerLines == 0 {
			continue
		}
		if t, terr := time.Parse(time.RFC3339Nano, c.Time); err == nil && terr == nil && t.Before(first) {
			continue
		}
		if c.PeerLines > peer.Lines {
			rep.Problems = append(rep.Problems, fmt.Sprintf("%s log line %d: its checkpoint says the %s log had %d lines, it has %d: its tail was cut",
				l.Name, c.Seq, peer.Name, c.PeerLines, peer.Lines))
			continue
		}
		if h, ok := peer.heads[c.PeerLines]; ok && h != c.PeerHead {
			rep.Problems = append(rep.Problems, fmt.Sprintf("%s log line %d: its checkpoint's hash of %s line %d does not match that line (rewritten)",
				l.Name, c.Seq, peer.Name, c.PeerLines))
		}
	}
}
