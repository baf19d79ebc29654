package record

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
)

// File names inside a recording directory.
const (
	MetaFile      = "meta.json"
	EventsFile    = "events.jsonl"
	ManifestName  = "manifest.json"
	SignatureName = "manifest.json.sig"
	// reserveFile holds space so that the manifest can still be written
	// when the disk fills mid-session; it is removed just before.
	reserveFile = ".reserve"
	reserveSize = 64 << 10
)

// flushThreshold is the buffered size at which a file is flushed before
// the interval tick, bounding memory per channel.
const flushThreshold = 64 << 10

// RecorderConfig configures NewRecording.
type RecorderConfig struct {
	// Dir is the recordings root; each connection gets Dir/<id>.
	Dir string
	// RecordInput records keystrokes as asciicast "i" events.
	RecordInput bool
	// SigningKey signs the manifest at Close (see LoadSigningKey). Nil
	// leaves the manifest unsigned, which Verify reports.
	SigningKey ssh.Signer
	// MinFreeSpace: NewRecording fails when Dir's filesystem has fewer
	// bytes available (statfs f_bavail) than this; zero disables the check.
	MinFreeSpace int64
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// FlushInterval is the longest time output stays in memory before it
	// is written and chained; zero means one second.
	FlushInterval time.Duration
	// Index, when set, is the hash-chained log of recordings
	// (OpenAudit(Dir/index.jsonl)): NewRecording logs recording.start and
	// Close logs recording.close with the manifest's final hash, so that
	// VerifyAll notices a recording deleted as a whole. A failed index
	// write refuses the recording (fail closed).
	Index *Audit
}

// Meta describes the connection a recording belongs to; it is written to
// meta.json when the recording starts and covered by the manifest.
type Meta struct {
	ID             string `json:"id"`
	User           string `json:"user"`      // login name sent to the bastion
	Principal      string `json:"principal"` // the cert principal that authorised it
	KeyID          string `json:"key_id"`
	Serial         uint64 `json:"serial"`
	CAFingerprint  string `json:"ca_fingerprint"`
	KeyFingerprint string `json:"key_fingerprint,omitempty"`
	Source         string `json:"source"` // client address after PROXY resolution
	RawPeer        string `json:"raw_peer,omitempty"`
	ClientVersion  string `json:"client_version,omitempty"`
	Target         string `json:"target"` // host:port
	TargetIP       string `json:"target_ip,omitempty"`
	TargetLogin    string `json:"target_login"`
	TargetHostKey  string `json:"target_host_key,omitempty"`
	// UpstreamKeyID and UpstreamSerial identify the certificate minted for
	// the target login.
	UpstreamKeyID  string            `json:"upstream_key_id,omitempty"`
	UpstreamSerial uint64            `json:"upstream_serial,omitempty"`
	Algorithms     map[string]string `json:"algorithms,omitempty"` // negotiated kex, cipher, mac, hostkey
	Rule           string            `json:"rule,omitempty"`
	Start          time.Time         `json:"start"`
	Extra          map[string]string `json:"extra,omitempty"`
}

// Recording is the recording of one connection. Its methods are safe for
// concurrent use. The first write error makes it failed: every later call
// returns that error so the caller closes the session (fail closed), and
// the manifest written at Close claims only the chunks written before it.
// Close must be called: it stops the recording's flush and writer
// goroutines and seals the evidence.
type Recording struct {
	cfg  RecorderConfig
	id   string
	dir  string
	now  func() time.Time
	meta Meta

	mu       sync.Mutex
	files    map[string]*trackedFile
	order    []string
	channels map[int]*Channel
	closed   bool
	stop     chan struct{} // stops the flush ticker
	done     chan struct{} // flush ticker stopped

	jobs       chan writeJob
	writerDone chan struct{}

	errMu sync.Mutex
	err   error // sticky failure; see failure and fail
}

// NewRecording creates cfg.Dir/id and its meta.json. It fails when the id
// is not a plain name, the directory exists or is not writable, or the
// filesystem has less than cfg.MinFreeSpace available; the caller then
// refuses the session.
func NewRecording(cfg RecorderConfig, id string, meta Meta) (*Recording, error) {
	if !validID(id) {
		return nil, fmt.Errorf("recording: id %q must be 1-128 characters of A-Z a-z 0-9 . _ - not starting with '.'", Sanitize(id, 140))
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.FlushInterval <= 0 {
		cfg.FlushInterval = time.Second
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("recording %s: create recordings dir: %w", id, err)
	}
	if cfg.MinFreeSpace > 0 {
		free, err := freeSpace(cfg.Dir)
		if err != nil {
			return nil, fmt.Errorf("recording %s: check free space in %s: %w", id, cfg.Dir, err)
		}
		if free < cfg.MinFreeSpace {
			return nil, fmt.Errorf("recording %s: only %d bytes free in %s, below min_free_space %d; "+
				"free space or move recordings_dir", id, free, cfg.Dir, cfg.MinFreeSpace)
		}
	}
	dir := filepath.Join(cfg.Dir, id)
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, fmt.Errorf("recording %s: %w", id, err)
	}
	r := &Recording{
		cfg: cfg, id: id, dir: dir, now: cfg.Now,
		files: map[string]*trackedFile{}, channels: map[int]*Channel{},
		stop: make(chan struct{}), done: make(chan struct{}),
		jobs: make(chan writeJob, writeQueue), writerDone: make(chan struct{}),
	}
	meta.ID = id
	if meta.Start.IsZero() {
		meta.Start = cfg.Now()
	}
	r.meta = meta
	if err := r.start(); err != nil {
		for _, tf := range r.files {
			r.closeFile(tf)
		}
		os.RemoveAll(dir)
		return nil, err
	}
	if cfg.Index != nil {
		err := cfg.Index.Log(RecordingStart{
			ID: id, User: meta.User, Principal: meta.Principal, KeyID: meta.KeyID,
			Source: meta.Source, Target: meta.Target, TargetLogin: meta.TargetLogin,
		})
		if err != nil {
			for _, tf := range r.files {
				r.closeFile(tf)
			}
			os.RemoveAll(dir)
			return nil, fmt.Errorf("recording %s: index: %w", id, err)
		}
	}
	go r.writer()
	go r.flusher()
	return r, nil
}

func (r *Recording) start() error {
	if err := writeExclusiveData(filepath.Join(r.dir, reserveFile), make([]byte, reserveSize)); err != nil {
		return fmt.Errorf("recording %s: reserve space: %w", r.id, err)
	}
	mb, err := json.MarshalIndent(r.meta, "", "  ")
	if err != nil {
		return fmt.Errorf("recording %s: encode meta: %w", r.id, err)
	}
	for _, name := range []string{MetaFile, EventsFile} {
		if _, err := r.openFile(name); err != nil {
			return err
		}
	}
	// Written synchronously, before the writer starts, so that a full or
	// read-only disk refuses the session up front.
	r.writeChunk(r.files[MetaFile], append(mb, '\n'))
	return r.failure()
}

func writeExclusiveData(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, werr := f.Write(b)
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	return werr
}

func validID(id string) bool {
	if id == "" || len(id) > 128 || id[0] == '.' {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// Dir returns the recording's directory.
func (r *Recording) Dir() string { return r.dir }

// Err returns the failure that stopped the recording, or nil.
func (r *Recording) Err() error { return r.failure() }

// openFile creates name in the recording dir; r.mu must be held or the
// recording not yet shared.
func (r *Recording) openFile(name string) (*trackedFile, error) {
	if _, ok := r.files[name]; ok {
		return nil, fmt.Errorf("recording %s: file %s already exists", r.id, name)
	}
	f, err := os.OpenFile(filepath.Join(r.dir, name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		r.fail(fmt.Errorf("create %s: %w", name, err))
		return nil, r.failure()
	}
	tf := &trackedFile{name: name, f: f, open: true}
	r.files[name] = tf
	r.order = append(r.order, name)
	return tf, nil
}

// flushAllLocked flushes every file; r.mu must be held.
func (r *Recording) flushAllLocked() {
	for _, name := range r.order {
		r.enqueue(r.files[name])
	}
}

func (r *Recording) flusher() {
	defer close(r.done)
	t := time.NewTicker(r.cfg.FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
			r.mu.Lock()
			if !r.closed {
				r.flushAllLocked()
			}
			r.mu.Unlock()
		}
	}
}

// Event appends one line to events.jsonl:
// {"time":…,"event":kind,<fields sorted by key>}. Use it for exec
// commands, subsystem starts, sftp file operations and close reasons.
func (r *Recording) Event(kind string, fields map[string]any) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	line, err := encodeEvent(r.now(), kind, fields)
	if err != nil {
		return fmt.Errorf("recording %s: event: %w", r.id, err)
	}
	return r.appendLocked(EventsFile, line)
}

// appendLocked buffers b for file name; r.mu must be held.
func (r *Recording) appendLocked(name string, b []byte) error {
	if err := r.failure(); err != nil {
		return err
	}
	if r.closed {
		return fmt.Errorf("recording %s: closed", r.id)
	}
	tf := r.files[name]
	if tf == nil || !tf.open {
		return fmt.Errorf("recording %s: file %s is closed", r.id, name)
	}
	if tf.buf == nil {
		tf.buf = getBuf()
	}
	tf.buf = append(tf.buf, b...)
	if len(tf.buf) >= flushThreshold {
		r.enqueue(tf)
	}
	return nil
}

func encodeEvent(t time.Time, kind string, fields map[string]any) ([]byte, error) {
	var b bytes.Buffer
	b.WriteString(`{"time":`)
	b.WriteString(strconv.Quote(t.UTC().Format(time.RFC3339Nano)))
	b.WriteString(`,"event":`)
	if err := writeJSON(&b, kind); err != nil {
		return nil, err
	}
	keys := make([]string, 0, len(fields))
	for k := range fields {
		if k == "time" || k == "event" {
			return nil, fmt.Errorf("field name %q is reserved", k)
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		b.WriteByte(',')
		if err := writeJSON(&b, k); err != nil {
			return nil, err
		}
		b.WriteByte(':')
		if err := writeJSON(&b, fields[k]); err != nil {
			return nil, fmt.Errorf("field %q: %w", Sanitize(k, 60), err)
		}
	}
	b.WriteString("}\n")
	return b.Bytes(), nil
}

// Manifest is the integrity record of a recording (manifest.json).
type Manifest struct {
	Version int            `json:"version"`
	ID      string         `json:"id"`
	Start   time.Time      `json:"start"`
	End     time.Time      `json:"end"`
	Closed  string         `json:"closed"` // close reason given by the caller
	Failed  bool           `json:"failed"`
	Failure string         `json:"failure,omitempty"`
	Signer  string         `json:"signer,omitempty"` // SHA256 fingerprint of the signing key
	Files   []ManifestFile `json:"files"`
	Final   string         `json:"final"` // hex SHA-256 over every file's name, size and chain
}

// ManifestFile lists one file's flushed chunks.
type ManifestFile struct {
	Name   string  `json:"name"`
	Size   int64   `json:"size"`
	Chunks []Chunk `json:"chunks"`
}

// Chunk is one flush: Len bytes at Offset with SHA-256 SHA256, and
// Chain = SHA-256(previous Chain || SHA-256 of this chunk), starting from 32
// zero bytes, so no chunk can be dropped or reordered unnoticed.
type Chunk struct {
	Offset int64  `json:"offset"`
	Len    int64  `json:"len"`
	SHA256 string `json:"sha256"`
	Chain  string `json:"chain"`
}

// finalHash binds the file list: SHA-256 over "name\nsize\nchain\n" per
// file in name order.
func finalHash(files []ManifestFile) string {
	h := sha256.New()
	for _, f := range files {
		chain := hex.EncodeToString(make([]byte, 32))
		if len(f.Chunks) > 0 {
			chain = f.Chunks[len(f.Chunks)-1].Chain
		}
		fmt.Fprintf(h, "%s\n%d\n%s\n", f.Name, f.Size, chain)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Close ends the recording: it closes open channels, flushes and fsyncs
// every file, writes manifest.json with reason and, with a signing key,
// manifest.json.sig. A failed recording still gets a manifest (failed:
// true, claiming only the chunks written before the failure), and Close
// returns the failure. Closing twice returns an error.
func (r *Recording) Close(reason string) error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return fmt.Errorf("recording %s: already closed", r.id)
	}
	for _, c := range r.channels {
		c.closeLocked()
	}
	for _, name := range r.order {
		r.enqueueClose(r.files[name])
	}
	r.closed = true
	r.mu.Unlock()
	close(r.stop)
	<-r.done
	close(r.jobs)
	<-r.writerDone

	// Only this goroutine touches the files now.
	// Free the reserve only now, so the manifest fits even on a full disk.
	os.Remove(filepath.Join(r.dir, reserveFile))
	failure := r.failure()
	m := Manifest{Version: 1, ID: r.id, Start: r.meta.Start, End: r.now(), Closed: reason}
	if failure != nil {
		m.Failed, m.Failure = true, failure.Error()
	}
	names := append([]string(nil), r.order...)
	sort.Strings(names)
	for _, name := range names {
		tf := r.files[name]
		m.Files = append(m.Files, ManifestFile{Name: name, Size: tf.off, Chunks: append([]Chunk{}, tf.chunks...)})
	}
	merr := writeManifest(r.dir, &m, r.cfg.SigningKey)
	if merr != nil {
		merr = fmt.Errorf("recording %s: %w", r.id, merr)
	}
	if r.cfg.Index != nil {
		ev := RecordingClose{ID: r.id, Final: m.Final, Failed: m.Failed, Reason: Sanitize(reason, 200)}
		if merr != nil {
			ev.ManifestError = Sanitize(merr.Error(), 300)
		}
		if err := r.cfg.Index.Log(ev); err != nil {
			merr = errors.Join(merr, fmt.Errorf("recording %s: index: %w", r.id, err))
		}
	}
	return errors.Join(failure, merr)
}

// writeManifest fills m's Final and Signer, writes manifest.json and, with
// a signer, manifest.json.sig, and fsyncs the directory.
func writeManifest(dir string, m *Manifest, signer ssh.Signer) error {
	m.Final = finalHash(m.Files)
	if signer != nil {
		m.Signer = ssh.FingerprintSHA256(signer.PublicKey())
	}
	mb, err := json.MarshalIndent(m, "", " ")
	if err != nil {
		return fmt.Errorf("encode manifest: %w", err)
	}
	mb = append(mb, '\n')
	if err := writeSynced(filepath.Join(dir, ManifestName), mb); err != nil {
		return fmt.Errorf("write manifest: %w", err)
	}
	if signer != nil {
		sig, err := SignSSHSIG(signer, RecordingNamespace, mb)
		if err != nil {
			return fmt.Errorf("sign manifest: %w", err)
		}
		if err := writeSynced(filepath.Join(dir, SignatureName), sig); err != nil {
			return fmt.Errorf("write manifest signature: %w", err)
		}
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

func writeSynced(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, werr := f.Write(b)
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		os.Remove(path)
	}
	return werr
}
