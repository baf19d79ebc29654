package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"

	"gatehouse/bastion/internal/sanitize"
	"gatehouse/bastion/record"
)

// relayBuf is the copy buffer per direction; x/crypto delivers at most
// one packet (≤32 KiB of payload) per read anyway.
const relayBuf = 32 << 10

// DefaultMaxCommandBytes is the longest exec command (and env value)
// relayed when RelayOptions.MaxCommandBytes is 0. Each is recorded in
// full, so the bound is what one event may carry.
const DefaultMaxCommandBytes = 64 << 10

// MaxCommandLimit is the highest MaxCommandBytes that makes sense:
// x/crypto drops a packet over 256 KiB (the connection with it) before
// any request handler runs, so a larger limit could never be reached and
// a longer command would end the connection without a word to the admin.
const MaxCommandLimit = 255 << 10

// DefaultAcceptEnv are the environment names relayed when
// RelayOptions.AcceptEnv is nil: locale and terminal type only, as
// OpenSSH's default sshd_config accepts.
var DefaultAcceptEnv = []string{"LANG", "LC_*", "TERM"}

// Activity tracks when a connection last carried channel data, for the
// idle timeout: keepalives and other protocol traffic do not count. One
// Activity may be shared by all channels of a connection. The zero value
// reports the zero time until touched.
type Activity struct {
	in, out atomic.Int64 // UnixNano
}

// NewActivity returns an Activity whose last input and output are now,
// so a fresh session is not idle.
func NewActivity(now time.Time) *Activity {
	a := &Activity{}
	a.in.Store(now.UnixNano())
	a.out.Store(now.UnixNano())
	return a
}

// LastInput is when the admin last sent channel data.
func (a *Activity) LastInput() time.Time { return time.Unix(0, a.in.Load()) }

// LastOutput is when the target last sent channel data.
func (a *Activity) LastOutput() time.Time { return time.Unix(0, a.out.Load()) }

// RelayOptions configures Relay.
type RelayOptions struct {
	// Activity, when set, is updated on every chunk of channel data.
	Activity *Activity
	// DenyPTY refuses pty-req, for admins whose certificate lacks
	// permit-pty.
	DenyPTY bool
	// Now is the clock for Activity; nil means time.Now.
	Now func() time.Time
	// Log receives refused requests and relay failures; nil discards.
	Log *slog.Logger
	// AcceptEnv lists the environment variables relayed, as names or
	// patterns with * and ? (OpenSSH's AcceptEnv syntax); nil means
	// DefaultAcceptEnv, empty relays none. Each relayed name and value is
	// recorded: a value can carry a command ("eval $LC_X").
	AcceptEnv []string
	// MaxCommandBytes bounds an exec command and an env value; longer
	// ones are refused, the admin told why on stderr. 0 means
	// DefaultMaxCommandBytes.
	MaxCommandBytes int
	// SFTPExtensions are SFTP extensions relayed besides
	// DefaultSFTPExtensions, recorded by name and size only; any other
	// extension is answered OP_UNSUPPORTED without reaching the target.
	SFTPExtensions []string
}

// MatchEnv reports whether an environment variable name matches an
// AcceptEnv pattern: '*' matches any run of characters, '?' any one
// character, everything else itself.
func MatchEnv(pattern, name string) bool {
	for len(pattern) > 0 {
		switch pattern[0] {
		case '*':
			for i := len(name); i >= 0; i-- {
				if MatchEnv(pattern[1:], name[i:]) {
					return true
				}
			}
			return false
		case '?':
			if name == "" {
				return false
			}
		default:
			if name == "" || name[0] != pattern[0] {
				return false
			}
		}
		pattern, name = pattern[1:], name[1:]
	}
	return name == ""
}

// ValidEnvPattern checks an AcceptEnv pattern: the characters of a
// portable environment name (letters, digits, '_') and the wildcards,
// so that a pattern can never match a name with '=' or a NUL in it.
func ValidEnvPattern(p string) error {
	if p == "" || len(p) > 256 {
		return errors.New("want 1-256 characters")
	}
	if strings.Count(p, "*") > 4 {
		return errors.New("at most 4 '*' per pattern")
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '*' || c == '?') {
			return fmt.Errorf("%q: only letters, digits, '_', '*' and '?' are allowed", sanitize.String(p, 100))
		}
	}
	return nil
}

// ErrRecording wraps a recording failure that ended a session.
var ErrRecording = errors.New("recording failed")

// Relay proxies the admin's session channel down (with its requests
// downReqs) to a new session channel on up, recording it in rec as
// channel chanN (rec nil: not recorded). It forwards pty-req, env (names
// in opts.AcceptEnv, each recorded with its value), window-change, one
// shell, exec (recorded in full, up to opts.MaxCommandBytes) or subsystem
// (sftp only),
// signal and break; it refuses agent and X11 forwarding and anything
// else. The target's exit-status or exit-signal is passed back after its
// output. Output and, when the recording asks for it, input go to the
// recording's chNN.cast and chNN.ttyrec; an sftp subsystem is not
// byte-recorded: every request is parsed before it is relayed and logged
// with its arguments and result as an "sftp" event (see sftpAudit).
//
// Relay returns when both sides are done, after closing down. It returns
// nil for a normal end, an error wrapping ErrRecording when the
// recording failed (the session is cut at once and the admin is told),
// an error wrapping ErrSFTPViolation when the sftp stream broke the
// protocol (this channel is closed, the connection may go on), or
// context.Cause(ctx) when ctx ended it (a cause other than plain
// cancellation is shown to the admin: "gatehouse: session closed:
// idle timeout"). After an error the target's
// channel may still be open (sshd holds a session channel until its
// command exits): the caller must then close up, which ends the goroutines
// Relay leaves reading from it. Relay always consumes downReqs until the
// channel closes.
func Relay(ctx context.Context, down ssh.Channel, downReqs <-chan *ssh.Request, up *ssh.Client,
	rec *record.Recording, chanN int, opts RelayOptions) error {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.AcceptEnv == nil {
		opts.AcceptEnv = DefaultAcceptEnv
	}
	if opts.MaxCommandBytes <= 0 {
		opts.MaxCommandBytes = DefaultMaxCommandBytes
	}
	upCh, upReqs, err := up.OpenChannel("session", nil)
	if err != nil {
		go ssh.DiscardRequests(downReqs)
		fmt.Fprintf(down.Stderr(), "gatehouse: target refused the session: %s\r\n", sanitize.String(err.Error(), 200))
		down.Close()
		return fmt.Errorf("upstream: open session channel: %w", err)
	}
	r := &relay{
		down: down, up: upCh, rec: rec, n: chanN, opts: opts,
		cols: 80, rows: 24, outDone: make(chan struct{}), told: make(chan struct{}), failed: make(chan struct{}),
	}
	return r.run(ctx, downReqs, upReqs)
}

// relay is the state of one Relay call.
type relay struct {
	down, up ssh.Channel
	rec      *record.Recording
	n        int
	opts     RelayOptions

	mu         sync.Mutex
	started    bool            // shell, exec or subsystem accepted
	refused    bool            // shell, exec or subsystem refused: the channel ends
	refusal    string          // why, until downRequests has told the admin
	finished   bool            // Relay is returning: no more recording
	term       string          // from pty-req
	cols, rows int             // from pty-req and window-change
	rc         *record.Channel // byte recording, once started (not for sftp)
	sftp       *sftpAudit      // sftp auditor, once started
	upGone     bool            // the target's channel is closed: start nothing more
	eofSent    bool            // down's CloseWrite was decided: fail cannot tell the admin any more
	failure    error           // first fatal error
	failed     chan struct{}   // closed with the first fatal error
	told       chan struct{}   // closed once fail has told the admin why
	outDone    chan struct{}   // closed when target output is drained
	copiers    sync.WaitGroup
}

func (r *relay) run(ctx context.Context, downReqs <-chan *ssh.Request, upReqs <-chan *ssh.Request) error {
	stopCtx := context.AfterFunc(ctx, func() { r.fail(context.Cause(ctx)) })
	defer stopCtx()
	go r.downRequests(downReqs)

	// Requests from the target: keep its exit status for after the output.
	var exit *ssh.Request
loop:
	for {
		var req *ssh.Request
		select {
		case req = <-upReqs:
		case <-r.failed:
			// Do not wait for the target: sshd keeps a session channel
			// open until its command exits. The caller closes up.
			go ssh.DiscardRequests(upReqs)
			break loop
		}
		if req == nil {
			break loop
		}
		switch req.Type {
		case "exit-status", "exit-signal":
			exit = req
		case "eow@openssh.com":
			r.down.SendRequest(req.Type, false, req.Payload)
		default:
			if req.WantReply {
				req.Reply(false, nil)
			}
		}
	}
	// The target closed its channel (or we closed it): its output is
	// fully buffered, so the copiers finish.
	r.mu.Lock()
	r.upGone = true
	started := r.started && r.failure == nil
	r.mu.Unlock()
	if started {
		select {
		case <-r.outDone:
		case <-r.failed:
		}
	}
	if exit != nil && r.err() == nil {
		if err := r.recordExit(exit); err != nil {
			r.fail(err)
		} else {
			r.down.SendRequest(exit.Type, false, exit.Payload)
		}
	}
	if r.err() != nil {
		select {
		case <-r.told:
		case <-time.After(2 * time.Second):
		}
	}
	r.down.Close()
	if r.err() == nil {
		r.copiers.Wait()
	}

	r.mu.Lock()
	r.finished = true
	rc, sa := r.rc, r.sftp
	r.mu.Unlock()
	var cerr error
	if sa != nil {
		cerr = sa.finish()
	}
	if rc != nil {
		cerr = errors.Join(cerr, rc.Close())
	}
	if err := r.err(); err != nil {
		return err
	}
	if cerr != nil {
		return fmt.Errorf("%w: channel %d: %w", ErrRecording, r.n, cerr)
	}
	return nil
}

// err returns the first fatal error.
func (r *relay) err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.failure
}

// fail ends the session with err (the first one wins): both channels are
// closed, so every goroutine of the relay unblocks.
func (r *relay) fail(err error) {
	r.mu.Lock()
	first := r.failure == nil
	if first {
		r.failure = err
		close(r.failed)
	}
	eofSent := r.eofSent
	r.mu.Unlock()
	if !first {
		return
	}
	r.up.Close()
	var why string
	switch {
	case errors.Is(err, ErrRecording):
		r.opts.Log.Error("session closed: recording failed", "channel", r.n, "err", err)
		why = "the recording cannot be written"
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		// A bare cancellation says nothing the admin can use.
	default:
		// A cause the caller gave, such as "idle timeout".
		why = sanitize.String(err.Error(), 200)
	}
	if why == "" || eofSent {
		// The target's output already ended with EOF: nothing more can
		// reach the admin's stderr.
		r.down.Close()
		close(r.told)
		return
	}
	// Tell the admin why, without letting a client that does not read
	// (a full window blocks Write) hold the session open.
	go func() {
		defer close(r.told)
		fmt.Fprintf(r.down.Stderr(), "\r\ngatehouse: session closed: %s\r\n", why)
	}()
	go func() {
		select {
		case <-r.told:
		case <-time.After(2 * time.Second):
		}
		r.down.Close()
	}()
}

// recErr wraps a recording error so that it ends the session.
func (r *relay) recErr(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%w: channel %d: %w", ErrRecording, r.n, err)
}

// event logs one structured event for this channel.
func (r *relay) event(kind string, fields map[string]any) {
	if r.rec == nil {
		return
	}
	fields["channel"] = r.n
	if err := r.rec.Event(kind, fields); err != nil {
		r.fail(r.recErr(err))
	}
}

// downRequests serves the admin's channel requests until the channel
// closes, then closes the target's side.
func (r *relay) downRequests(reqs <-chan *ssh.Request) {
	for req := range reqs {
		r.mu.Lock()
		finished := r.finished || r.failure != nil
		r.mu.Unlock()
		if finished {
			req.Reply(false, nil)
			continue
		}
		ok := r.request(req)
		if req.WantReply {
			req.Reply(ok, nil)
		}
		r.mu.Lock()
		why := r.refusal
		r.refusal = ""
		r.mu.Unlock()
		if why != "" {
			r.endRefused(why)
		}
	}
	r.up.Close()
}

// refuseSession ends the channel after its shell, exec or subsystem
// request was accepted without being relayed: the admin reads why on
// stderr and gets exit status 1. A failure reply would be shorter, but
// OpenSSH's client closes the channel on it and may drop the stderr
// message that came just before.
func (r *relay) refuseSession(req *ssh.Request, why string, extra map[string]any) bool {
	r.denyWith(req, why, extra)
	r.mu.Lock()
	r.refusal, r.refused = why, true
	r.mu.Unlock()
	return true
}

// endRefused tells the admin why and closes the channel (after the
// request's reply, so the client sees success, the message, the status).
func (r *relay) endRefused(why string) {
	r.tell(why)
	r.down.SendRequest("exit-status", false, ssh.Marshal(exitStat{1}))
	r.down.Close()
}

// Request payloads (RFC 4254 §6).
type (
	ptyReq struct {
		Term                      string
		Cols, Rows, Width, Height uint32
		Modes                     string
	}
	envReq    struct{ Name, Value string }
	winReq    struct{ Cols, Rows, Width, Height uint32 }
	stringReq struct{ S string }
	breakReq  struct{ Ms uint32 }
	exitStat  struct{ Status uint32 }
	exitSig   struct {
		Signal     string
		CoreDumped bool
		Error      string
		Lang       string
	}
)

// ptyNoticeDelay separates a refused pty's stderr notice from the
// failure reply (see request).
const ptyNoticeDelay = 100 * time.Millisecond

// request handles one admin request and says whether it succeeded.
func (r *relay) request(req *ssh.Request) bool {
	deny := func(why string) bool { return r.denyWith(req, why, nil) }
	forward := func() bool {
		ok, err := r.up.SendRequest(req.Type, req.WantReply, req.Payload)
		return err == nil && (ok || !req.WantReply)
	}
	switch req.Type {
	case "pty-req":
		var p ptyReq
		if err := ssh.Unmarshal(req.Payload, &p); err != nil {
			return deny("malformed pty-req")
		}
		if r.opts.DenyPTY {
			// The client would only print "PTY allocation request
			// failed": say why on its stderr.
			why := "certificate does not permit a pty (sign it with -O permit-pty)"
			fmt.Fprintf(r.down.Stderr(), "gatehouse: %s\r\n", why)
			// With -t, OpenSSH closes the channel on the failure reply
			// and may exit before it wrote stderr data that arrived in
			// the same read: let the message go first.
			time.Sleep(ptyNoticeDelay)
			return deny(why)
		}
		if !forward() {
			return false
		}
		r.mu.Lock()
		r.term, r.cols, r.rows = p.Term, int(p.Cols), int(p.Rows)
		r.mu.Unlock()
		return true
	case "env":
		var p envReq
		if err := ssh.Unmarshal(req.Payload, &p); err != nil {
			return deny("malformed env")
		}
		name, value := sanitize.String(p.Name, 200), sanitize.String(p.Value, 0)
		if !slices.ContainsFunc(r.opts.AcceptEnv, func(pat string) bool { return MatchEnv(pat, p.Name) }) {
			return r.denyWith(req, "env "+name+" not in [bastion] accept_env", map[string]any{"name": name, "value": value})
		}
		if len(p.Name)+len(p.Value) > r.opts.MaxCommandBytes {
			why := fmt.Sprintf("env %s: %d bytes, more than [bastion] max_command_bytes (%d)", name, len(p.Name)+len(p.Value), r.opts.MaxCommandBytes)
			return r.denyWith(req, why, map[string]any{"name": name, "bytes": len(p.Value)})
		}
		ok := forward()
		r.event("env", map[string]any{"name": name, "value": value, "accepted": ok})
		return ok
	case "window-change":
		var p winReq
		if err := ssh.Unmarshal(req.Payload, &p); err != nil {
			return deny("malformed window-change")
		}
		ok := forward()
		r.mu.Lock()
		r.cols, r.rows = int(p.Cols), int(p.Rows)
		rc := r.rc
		r.mu.Unlock()
		if rc != nil {
			if err := rc.Resize(int(p.Cols), int(p.Rows)); err != nil {
				r.fail(r.recErr(err))
				return false
			}
		}
		return ok
	case "shell", "exec", "subsystem":
		return r.start(req, forward, deny)
	case "signal":
		var p stringReq
		if err := ssh.Unmarshal(req.Payload, &p); err != nil {
			return deny("malformed signal")
		}
		if err := r.marker("signal " + sanitize.String(p.S, 30)); err != nil {
			return false
		}
		return forward()
	case "break":
		var p breakReq
		if err := ssh.Unmarshal(req.Payload, &p); err != nil {
			return deny("malformed break")
		}
		if err := r.marker("break " + strconv.FormatUint(uint64(p.Ms), 10) + "ms"); err != nil {
			return false
		}
		return forward()
	case "auth-agent-req@openssh.com":
		return deny("agent forwarding is never relayed")
	case "x11-req":
		return deny("X11 forwarding is never relayed")
	}
	return deny("request type not relayed")
}

// denyWith refuses req, logging and recording why with extra fields.
func (r *relay) denyWith(req *ssh.Request, why string, extra map[string]any) bool {
	r.opts.Log.Info("request refused", "channel", r.n, "request", sanitize.String(req.Type, 60), "why", why)
	f := map[string]any{"request": sanitize.String(req.Type, 60), "reason": why}
	for k, v := range extra {
		f[k] = v
	}
	r.event("request.denied", f)
	return false
}

// tell writes a line to the admin's stderr: why a request was refused.
// A client that does not read cannot hold the relay: the write gives up
// after two seconds.
func (r *relay) tell(msg string) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		fmt.Fprintf(r.down.Stderr(), "gatehouse: %s\r\n", msg)
	}()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
	}
}

// marker records an asciicast marker if the channel is byte-recorded.
func (r *relay) marker(label string) error {
	r.mu.Lock()
	rc := r.rc
	r.mu.Unlock()
	if rc == nil {
		return nil
	}
	if err := rc.Marker(label); err != nil {
		err = r.recErr(err)
		r.fail(err)
		return err
	}
	return nil
}

// start handles the one shell, exec or subsystem request of the channel:
// it sets up the recording first (no recording, no session), then asks
// the target and starts the copiers.
func (r *relay) start(req *ssh.Request, forward func() bool, deny func(string) bool) bool {
	r.mu.Lock()
	already := r.started || r.refused
	term, cols, rows := r.term, r.cols, r.rows
	r.mu.Unlock()
	if already {
		return deny("session already started")
	}
	kind, fields := req.Type, map[string]any{}
	isSFTP := false
	switch req.Type {
	case "exec":
		var p stringReq
		if err := ssh.Unmarshal(req.Payload, &p); err != nil {
			return deny("malformed exec")
		}
		if len(p.S) > r.opts.MaxCommandBytes {
			why := fmt.Sprintf("command of %d bytes refused: longer than [bastion] max_command_bytes (%d)", len(p.S), r.opts.MaxCommandBytes)
			return r.refuseSession(req, why, map[string]any{"command_start": sanitize.String(p.S, 1024), "command_bytes": len(p.S)})
		}
		// In full: the limit above bounds it, and escaping is reversible.
		fields["command"] = sanitize.String(p.S, 0)
		fields["command_bytes"] = len(p.S)
	case "subsystem":
		var p stringReq
		if err := ssh.Unmarshal(req.Payload, &p); err != nil {
			return deny("malformed subsystem")
		}
		if p.S != "sftp" {
			return r.refuseSession(req, "subsystem "+sanitize.String(p.S, 60)+" is not relayed (only sftp)", nil)
		}
		fields["subsystem"] = "sftp"
		isSFTP = true
	}
	var rc *record.Channel
	var sa *sftpAudit
	if isSFTP {
		// Audited even unrecorded: the auditor also refuses what it
		// cannot follow.
		sa = newSFTPAudit(r.sftpEvent, append(slices.Clone(DefaultSFTPExtensions), r.opts.SFTPExtensions...))
	}
	if r.rec != nil {
		if !isSFTP {
			var err error
			if rc, err = r.rec.Channel(r.n, kind, term, cols, rows); err != nil {
				r.fail(r.recErr(err))
				return false
			}
		}
		r.event(kind, fields)
		if r.err() != nil {
			return false
		}
	}
	r.mu.Lock()
	if r.upGone {
		r.mu.Unlock()
		if rc != nil {
			rc.Close()
		}
		return false
	}
	r.started, r.rc, r.sftp = true, rc, sa
	// Added under the lock, so run, which sets upGone under it, either
	// waits for these copiers or never sees them start.
	r.copiers.Add(2)
	r.mu.Unlock()
	outs := make(chan struct{}, 2)
	if sa != nil {
		go r.copySFTPOut(sa, outs)
	} else {
		go func() { r.copyOut(r.down, r.up, outs) }()
	}
	go func() { r.copyOut(r.down.Stderr(), r.up.Stderr(), outs) }()
	go func() {
		<-outs
		<-outs
		// Either EOF or fail's message, never both at once: x/crypto
		// refuses a write after CloseWrite (and the two race on its
		// unsynchronized sentEOF), so an EOF sent while fail is telling
		// the admin why would swallow the message.
		r.mu.Lock()
		send := r.failure == nil
		r.eofSent = send
		r.mu.Unlock()
		if send {
			r.down.CloseWrite()
		}
		close(r.outDone)
	}()
	ok := forward()
	if sa != nil {
		go r.copySFTPIn(sa)
	} else {
		go r.copyIn()
	}
	return ok
}

// copyOut relays target output (stdout or stderr) to the admin, recording
// each chunk before the admin sees it.
func (r *relay) copyOut(dst io.Writer, src io.Reader, done chan<- struct{}) {
	defer r.copiers.Done()
	defer func() { done <- struct{}{} }()
	buf := make([]byte, relayBuf)
	for {
		n, rerr := src.Read(buf)
		if n > 0 {
			if err := r.recordOut(buf[:n]); err != nil {
				r.fail(err)
				return
			}
			if _, err := dst.Write(buf[:n]); err != nil {
				r.up.Close()
				return
			}
		}
		if rerr != nil {
			return
		}
	}
}

func (r *relay) recordOut(p []byte) error {
	if a := r.opts.Activity; a != nil {
		a.out.Store(r.opts.Now().UnixNano())
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.finished {
		return nil
	}
	if r.rc != nil {
		return r.recErr(r.rc.Output(p))
	}
	return nil
}

// copyIn relays admin input to the target; the admin's EOF becomes the
// target's.
func (r *relay) copyIn() {
	buf := make([]byte, relayBuf)
	for {
		n, rerr := r.down.Read(buf)
		if n > 0 {
			if err := r.recordIn(buf[:n]); err != nil {
				r.fail(err)
				return
			}
			if _, err := r.up.Write(buf[:n]); err != nil {
				return
			}
		}
		if rerr != nil {
			if rerr == io.EOF {
				r.up.CloseWrite()
			}
			return
		}
	}
}

func (r *relay) recordIn(p []byte) error {
	if a := r.opts.Activity; a != nil {
		a.in.Store(r.opts.Now().UnixNano())
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.finished {
		return nil
	}
	if r.rc != nil {
		return r.recErr(r.rc.Input(p))
	}
	return nil
}

// recordExit records the target's exit status or signal as a marker and
// an event.
func (r *relay) recordExit(req *ssh.Request) error {
	var label string
	fields := map[string]any{}
	switch req.Type {
	case "exit-status":
		var p exitStat
		if err := ssh.Unmarshal(req.Payload, &p); err != nil {
			return nil // malformed: not forwarded as meaningful, nothing to record
		}
		label = "exit-status " + strconv.FormatUint(uint64(p.Status), 10)
		fields["status"] = p.Status
	default:
		var p exitSig
		if err := ssh.Unmarshal(req.Payload, &p); err != nil {
			return nil
		}
		label = "exit-signal " + sanitize.String(p.Signal, 30)
		fields["signal"] = sanitize.String(p.Signal, 30)
		fields["core_dumped"] = p.CoreDumped
	}
	if err := r.marker(label); err != nil {
		return err
	}
	r.event("exit", fields)
	return r.err()
}
