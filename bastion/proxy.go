package bastion

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	gl "github.com/gliderlabs/ssh"
	gossh "golang.org/x/crypto/ssh"

	"gatehouse/bastion/certauth"
	"gatehouse/bastion/policy"
	"gatehouse/bastion/record"
	"gatehouse/bastion/recupload"
	"gatehouse/bastion/upstream"
)

// proxyTellTimeout bounds how long a closing proxied session may take to
// tell the admin why before the connection is cut.
const proxyTellTimeout = 3 * time.Second

// proxyHostCertValidity is the lifetime of the host certificates the
// bastion presents as a proxied destination; clients check it only at
// connection time.
const proxyHostCertValidity = time.Hour

// maxProxyChannels bounds the session channels one proxied connection
// may have open at once (OpenSSH's sshd allows 10 by default).
const maxProxyChannels = 32

// sealReason is the close reason of recordings sealed at start-up.
const sealReason = "bastion stopped before the recording was closed"

// proxySetup is the recording proxy's trust material and recorder; nil on
// a Server whose rules name no proxy destination.
type proxySetup struct {
	dialer *upstream.Dialer
	hostCA gossh.Signer
	recCfg record.RecorderConfig
	// upload copies sealed recordings to object storage; nil without
	// [bastion] recordings_upload.
	upload *recupload.Uploader
}

// newProxySetup loads the keys named by cfg (refusing group- or
// world-readable ones), seals recordings a crash left without a manifest
// and opens the recordings index.
func newProxySetup(cfg *Config, log *slog.Logger, now func() time.Time, audit func(record.Event) error) (*proxySetup, error) {
	upCA, err := loadSecretKey("[bastion] upstream_ca_key", cfg.UpstreamCAKey)
	if err != nil {
		return nil, err
	}
	hostCA, err := loadSecretKey("[bastion] host_ca_key", cfg.HostCAKey)
	if err != nil {
		return nil, err
	}
	recKey, err := record.LoadSigningKey(cfg.RecordingKey)
	if err != nil {
		return nil, fmt.Errorf("[bastion] recording_key: %w", err)
	}
	dialer, err := upstream.New(upstream.Config{
		CAKey:       upCA,
		KnownHosts:  cfg.UpstreamKnownHosts,
		DialTimeout: cfg.DialTimeout.Duration,
		Now:         now,
		Log:         log,
	})
	if err != nil {
		return nil, fmt.Errorf("[bastion] upstream_ca_key/upstream_known_hosts: %w", err)
	}
	if err := os.MkdirAll(cfg.RecordingsDir, 0o700); err != nil {
		return nil, fmt.Errorf("[bastion] recordings_dir: %w", err)
	}
	index, err := record.OpenAudit(filepath.Join(cfg.RecordingsDir, record.IndexName), now)
	if err != nil {
		return nil, fmt.Errorf("[bastion] recordings_dir: recordings index: %w", err)
	}
	if err := sealCrashed(cfg.RecordingsDir, recKey, now, log, audit, index); err != nil {
		index.Close()
		return nil, fmt.Errorf("[bastion] recordings_dir: %w", err)
	}
	var up *recupload.Uploader
	if cfg.RecordingsTarget != nil {
		if up, err = recupload.New(*cfg.RecordingsTarget, cfg.RecordingsDir, log); err != nil {
			index.Close()
			return nil, fmt.Errorf("[bastion] recordings_upload: %w", err)
		}
	}
	return &proxySetup{
		upload: up,
		dialer: dialer,
		hostCA: hostCA,
		recCfg: record.RecorderConfig{
			Dir:          cfg.RecordingsDir,
			RecordInput:  cfg.RecordInput,
			SigningKey:   recKey,
			MinFreeSpace: int64(cfg.MinFreeSpace),
			Now:          now,
			Index:        index,
		},
	}, nil
}

// sealCrashed signs, as found, every recording directory without a
// manifest: a bastion that died mid-session left it open. The manifest
// says failed, so it is never mistaken for a normally closed recording,
// and its final hash goes into the recordings index as a normal close's
// does, so a manifest replaced later is caught by `recordings verify`.
func sealCrashed(dir string, key gossh.Signer, now func() time.Time, log *slog.Logger, audit func(record.Event) error, index *record.Audit) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		rd := filepath.Join(dir, e.Name())
		if _, err := os.Lstat(filepath.Join(rd, record.ManifestName)); err == nil || !errors.Is(err, os.ErrNotExist) {
			continue
		}
		if _, err := os.Lstat(filepath.Join(rd, record.MetaFile)); err != nil {
			// Not a recording (lost+found on a dedicated volume, say).
			continue
		}
		if err := record.Seal(rd, key, now, sealReason); err != nil {
			log.Error("bastion: sealing an unclosed recording failed", "dir", rd, "err", err)
			audit(record.SealFailed{Recording: record.Sanitize(e.Name(), 100), Reason: "sealing at start-up failed: " + record.Sanitize(err.Error(), 300)})
			continue
		}
		log.Warn("bastion: sealed a recording left open by a crash", "dir", rd)
		audit(record.RecordingSealed{Recording: record.Sanitize(e.Name(), 100), Reason: sealReason})
		m, _, err := record.ReadManifest(rd)
		if err == nil {
			err = index.Log(record.RecordingClose{ID: m.ID, Final: m.Final, Failed: true, Reason: sealReason})
		}
		if err != nil {
			log.Error("bastion: recording the sealed recording in the index failed", "dir", rd, "err", err)
			audit(record.SealFailed{Recording: record.Sanitize(e.Name(), 100), Reason: "indexing the sealed recording failed: " + record.Sanitize(err.Error(), 300)})
		}
	}
	return nil
}

// proxyTarget is where one recorded proxy session goes, as policy allowed
// it: the name as requested, the one resolved address dialled, the target
// login, and the allowing rule.
type proxyTarget struct {
	host  string
	ip    netip.Addr
	port  uint16
	login string
	dec   policy.Decision
}

func (t proxyTarget) String() string {
	return net.JoinHostPort(t.host, strconv.FormatUint(uint64(t.port), 10))
}

// proxyLogin decides a "login@host[:port]" login name (way B): it finds a
// principal of the certificate that a proxy rule allows for that target
// and login. The caller then runs every certificate check with that
// principal as the login. key's signature has been verified.
func (s *Server) proxyLogin(user string, key gossh.PublicKey) (*proxyTarget, string, *authRefused) {
	refuse := func(detail string) (*proxyTarget, string, *authRefused) {
		return nil, "", &authRefused{reason: "proxy-denied", detail: record.Sanitize(detail, 300), key: offeredKey(key)}
	}
	login, host, port, err := parseProxyLogin(user)
	if err != nil {
		return refuse(err.Error())
	}
	cert, ok := key.(*gossh.Certificate)
	if !ok {
		return nil, user, nil // certauth refuses it with the usual reason
	}
	if s.proxy == nil {
		return refuse("this bastion has no recording proxy configured")
	}
	ips, err := s.resolve(context.Background(), host)
	if err != nil {
		return refuse(err.Error())
	}
	pol := s.policy.Load()
	var best policy.Decision
	for _, ip := range ips {
		for _, p := range cert.ValidPrincipals {
			d := pol.Decide(policy.Request{Principals: []string{p}, Host: host, IP: ip, Port: port, Login: login, Mode: policy.ModeProxy}, s.protected)
			if d.Allow {
				return &proxyTarget{host: host, ip: ip, port: port, login: login, dec: d}, p, nil
			}
			if best.Reason == "" || best.Reason == policy.ReasonNoRule {
				best = d
			}
		}
	}
	why := "no proxy rule allows login " + login + " on " + net.JoinHostPort(host, strconv.Itoa(int(port)))
	if best.Detail != "" {
		why += ": " + best.Detail
	}
	return refuse(why)
}

// parseProxyLogin splits "login@host", "login@host:port" and
// "login@[v6addr]:port" (the port defaults to 22). The login is 1-32
// letters, digits, '.', '_' or '-', not starting with '-'; the host
// follows the rules of a direct-tcpip destination.
func parseProxyLogin(user string) (login, host string, port uint16, err error) {
	login, hp, ok := strings.Cut(user, "@")
	if !ok || strings.Contains(hp, "@") {
		return "", "", 0, fmt.Errorf("login %q: want login@host or login@host:port", sanitize(user))
	}
	if err := checkLoginName(login); err != nil {
		return "", "", 0, err
	}
	port = 22
	h := hp
	switch {
	case strings.HasPrefix(hp, "["):
		end := strings.Index(hp, "]")
		if end < 0 {
			return "", "", 0, fmt.Errorf("target %q: missing ']'", sanitize(hp))
		}
		h = hp[1:end]
		if rest := hp[end+1:]; rest != "" {
			p, ok := strings.CutPrefix(rest, ":")
			if !ok {
				return "", "", 0, fmt.Errorf("target %q: want [address]:port", sanitize(hp))
			}
			if port, err = parsePort(p); err != nil {
				return "", "", 0, err
			}
		}
		if _, err := netip.ParseAddr(h); err != nil {
			return "", "", 0, fmt.Errorf("target %q: not an IP address in brackets", sanitize(hp))
		}
	case strings.Count(hp, ":") == 1:
		var p string
		h, p, _ = strings.Cut(hp, ":")
		if port, err = parsePort(p); err != nil {
			return "", "", 0, err
		}
	}
	host, err = checkDestHost(h)
	if err != nil {
		return "", "", 0, err
	}
	return login, host, port, nil
}

func parsePort(p string) (uint16, error) {
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil || n == 0 || len(p) > 5 {
		return 0, fmt.Errorf("target port %q: want a number in 1-65535", sanitize(p))
	}
	return uint16(n), nil
}

// checkLoginName accepts the portable POSIX user name characters only, so
// a target login can be logged and put in a certificate verbatim.
func checkLoginName(login string) error {
	if login == "" || len(login) > 32 || login[0] == '-' {
		return fmt.Errorf("target login %q: want 1-32 characters, not starting with '-'", sanitize(login))
	}
	for i := 0; i < len(login); i++ {
		c := login[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("target login %q: only letters, digits, '.', '_' and '-' are allowed", sanitize(login))
		}
	}
	return nil
}

// loginSession serves "session" channels: on a login@host@bastion
// connection they are relayed to the target and recorded; otherwise the
// bastion offers no shell.
func (sess *session) loginSession(srv *gl.Server, conn *gossh.ServerConn, nc gossh.NewChannel, ctx gl.Context) {
	s := sess.s
	e := sess.authOf(conn)
	if e == nil || e.target == nil {
		sess.rejectSession(srv, conn, nc, ctx)
		return
	}
	if !sess.enter() {
		nc.Reject(gossh.ConnectionFailed, "connection closing")
		return
	}
	defer sess.exit()
	sess.mu.Lock()
	pc := sess.loginProxy
	sess.mu.Unlock()
	if pc == nil {
		fresh := s.newProxyConn(ctx, sess, e.id, *e.target, conn, "login", nil)
		if fresh == nil {
			nc.Reject(gossh.ConnectionFailed, "gatehouse: connection closing")
			return
		}
		sess.mu.Lock()
		if sess.loginProxy == nil {
			sess.loginProxy = fresh
		}
		pc = sess.loginProxy
		sess.mu.Unlock()
		if pc != fresh {
			sess.removeProxy(fresh)
		}
	}
	pc.handle(nc)
}

// proxyConn is one recorded proxy session: one upstream connection and
// one recording, shared by the session channels the admin opens.
type proxyConn struct {
	s       *Server
	sess    *session
	id      *certauth.Identity
	target  proxyTarget
	way     string // "jump" (ssh -J) or "login" (login@host@bastion)
	recID   string
	user    string // the outer login name
	client  string // the admin's SSH version string
	ctx     context.Context
	cancelF context.CancelCauseFunc
	act     *upstream.Activity
	start   time.Time
	onStop  func() // way jump: closes the inner SSH connection

	startMu  sync.Mutex
	started  bool
	startMsg string // why the session was refused, once start failed
	up       *gossh.Client
	minted   *upstream.MintedCert
	rec      *record.Recording

	mu        sync.Mutex
	stopping  bool
	chans     int // channels relayed so far; numbers the recording's files
	live      int // channels being relayed now
	wg        sync.WaitGroup
	doneOnce  sync.Once
	done      chan struct{}
	recFailed bool
	endOnce   sync.Once

	in, out atomic.Int64
}

// newProxyConn registers a proxy session on sess; nil when the connection
// is closing. onStop, if set, runs once the relays have told the admin
// why the session ends.
func (s *Server) newProxyConn(parent context.Context, sess *session, id *certauth.Identity, t proxyTarget, conn gossh.ConnMetadata, way string, onStop func()) *proxyConn {
	ctx, cancel := context.WithCancelCause(parent)
	sess.mu.Lock()
	sess.proxySeq++
	n := sess.proxySeq
	sess.mu.Unlock()
	pc := &proxyConn{
		s: s, sess: sess, id: id, target: t, way: way,
		recID:  fmt.Sprintf("%s-%d", sess.id, n),
		user:   conn.User(),
		client: string(conn.ClientVersion()),
		ctx:    ctx, cancelF: cancel,
		act:    upstream.NewActivity(s.now()),
		start:  s.now(),
		done:   make(chan struct{}),
		onStop: onStop,
	}
	if !sess.addProxy(pc) {
		cancel(errors.New("connection closing"))
		return nil
	}
	return pc
}

// stop ends every relay of the session with cause; the first cause wins.
// No channel starts after it.
func (pc *proxyConn) stop(cause error) {
	pc.mu.Lock()
	pc.stopping = true
	pc.mu.Unlock()
	pc.cancelF(cause)
	if pc.onStop != nil {
		go func() {
			select {
			case <-pc.relaysDone():
			case <-time.After(proxyTellTimeout):
			}
			pc.onStop()
		}()
	}
}

// kill ends the session for a reason of its own (idle timeout, recording
// failure): a login@host connection is closed as a whole, so conn.end
// says why too.
func (pc *proxyConn) kill(reason string) {
	if pc.way == "login" {
		pc.sess.closeWith(reason)
		return
	}
	pc.stop(errors.New(reason))
}

// relaysDone is closed once stop was called and every relay returned.
func (pc *proxyConn) relaysDone() <-chan struct{} {
	pc.doneOnce.Do(func() {
		go func() {
			<-pc.ctx.Done()
			pc.wg.Wait()
			close(pc.done)
		}()
	})
	return pc.done
}

// handle relays one channel the admin opened: session channels to the
// target, anything else refused.
func (pc *proxyConn) handle(nc gossh.NewChannel) {
	s := pc.s
	if nc.ChannelType() != "session" {
		msg := "gatehouse: only shell, exec and sftp sessions are relayed to " + pc.target.String()
		s.auditLog(record.ProxyRequestDenied{ProxySession: pc.ref(), Request: "channel:" + record.Sanitize(nc.ChannelType(), 60), Reason: msg})
		nc.Reject(gossh.Prohibited, msg)
		return
	}
	if msg := pc.begin(); msg != "" {
		nc.Reject(gossh.Prohibited, msg)
		return
	}
	pc.mu.Lock()
	if pc.stopping || pc.ctx.Err() != nil {
		pc.mu.Unlock()
		nc.Reject(gossh.ConnectionFailed, "gatehouse: session closing")
		return
	}
	if pc.live >= maxProxyChannels {
		pc.mu.Unlock()
		nc.Reject(gossh.ResourceShortage, fmt.Sprintf("gatehouse: more than %d sessions open on this connection", maxProxyChannels))
		return
	}
	n := pc.chans
	pc.chans++
	pc.live++
	pc.wg.Add(1)
	pc.mu.Unlock()
	defer func() {
		pc.mu.Lock()
		pc.live--
		pc.mu.Unlock()
		pc.wg.Done()
	}()
	ch, reqs, err := nc.Accept()
	if err != nil {
		return
	}
	// The settings a channel runs under are read once, when it opens,
	// from the live settings: a SIGHUP applies to the next channel.
	conf := s.conf()
	err = upstream.Relay(pc.ctx, countedChannel{Channel: ch, in: &pc.in, out: &pc.out}, reqs, pc.up, pc.rec, n, upstream.RelayOptions{
		Activity:        pc.act,
		DenyPTY:         ptyRefusal(pc.id) != "",
		Now:             s.now,
		Log:             s.log,
		AcceptEnv:       conf.AcceptEnv,
		MaxCommandBytes: int(conf.MaxCommandBytes),
		SFTPExtensions:  conf.SFTPExtensions,
	})
	switch {
	case errors.Is(err, upstream.ErrRecording):
		pc.recordingFailed(err)
	case errors.Is(err, upstream.ErrSFTPViolation):
		// The channel is closed; the connection goes on. The recording
		// has the details, the audit log that it happened.
		s.auditLog(record.SFTPRefused{ProxySession: pc.ref(), Channel: n, Reason: record.Sanitize(err.Error(), 300)})
	}
}

// begin connects to the target and starts the recording, once. It
// returns the message for the admin when the session must be refused.
func (pc *proxyConn) begin() string {
	pc.startMu.Lock()
	defer pc.startMu.Unlock()
	if pc.started {
		return pc.startMsg
	}
	pc.started = true
	s, t := pc.s, pc.target
	dctx, cancel := context.WithTimeout(pc.ctx, s.conf().DialTimeout.Duration)
	up, minted, err := s.proxy.dialer.Dial(dctx, upstream.Target{Host: t.host, IP: t.ip, Port: t.port, Login: t.login}, upstream.Who{
		Principal: pc.id.Login, KeyID: pc.id.KeyID, SessionID: pc.recID, Serial: pc.id.Serial, Source: pc.sess.src.String(),
	})
	cancel()
	if err != nil {
		detail := record.Sanitize(err.Error(), 300)
		s.auditLog(record.ProxyFailed{ProxySession: pc.ref(), Reason: detail})
		pc.startMsg = "gatehouse: cannot open a session on " + t.String() + ": " + hideAddrs(detail, t.host, t.ip, t.port)
		return pc.startMsg
	}
	meta := record.Meta{
		ID: pc.recID, User: sanitize(pc.user), Principal: pc.id.Login,
		KeyID: sanitize(pc.id.KeyID), Serial: pc.id.Serial,
		CAFingerprint: pc.id.CAFingerprint, KeyFingerprint: pc.id.KeyFingerprint,
		Source: pc.sess.src.String(), RawPeer: rawPeer(pc.sess.nc).String(),
		ClientVersion: sanitize(pc.client),
		Target:        t.String(), TargetIP: t.ip.String(), TargetLogin: t.login,
		TargetHostKey: minted.HostKey, UpstreamKeyID: minted.KeyID, UpstreamSerial: minted.Serial,
		Rule:  fmt.Sprintf("rule %d (%s)", t.dec.Rule, t.dec.Entry),
		Start: pc.start,
		Extra: map[string]string{"way": pc.way, "host_key_by": minted.AuthorizedBy, "conn": pc.sess.id},
	}
	rec, err := record.NewRecording(s.proxy.recCfg, pc.recID, meta)
	if err != nil {
		up.Close()
		detail := record.Sanitize(err.Error(), 300)
		s.auditLog(record.RecordingFailed{ProxySession: pc.ref(), Reason: detail, Phase: "start"})
		pc.startMsg = "gatehouse: session refused: the recording cannot be written (" + detail + ")"
		return pc.startMsg
	}
	ev := record.ProxyStart{
		ProxySession:   pc.ref(),
		UpstreamSerial: minted.Serial, UpstreamKeyID: minted.KeyID,
		TargetHostKey: minted.HostKey, HostKeyBy: minted.AuthorizedBy,
	}
	if err := s.auditLog(ev); err != nil {
		up.Close()
		rec.Close("audit log unavailable")
		pc.startMsg = "gatehouse: session refused: the audit log cannot be written"
		return pc.startMsg
	}
	pc.up, pc.minted, pc.rec = up, minted, rec
	if idle := s.conf().IdleTimeout.Duration; idle > 0 {
		go pc.watchIdle(idle)
	}
	return ""
}

// watchIdle ends the session when the admin sent no channel data for
// idle; keepalives are not channel data.
func (pc *proxyConn) watchIdle(idle time.Duration) {
	t := time.NewTicker(min(max(idle/4, 10*time.Millisecond), time.Second))
	defer t.Stop()
	for {
		select {
		case <-pc.ctx.Done():
			return
		case <-t.C:
		}
		if pc.s.now().Sub(pc.act.LastInput()) >= idle {
			pc.kill("idle timeout: no input for " + idle.String())
			return
		}
	}
}

// recordingFailed reports a recording that stopped mid-session and ends
// the whole proxy session: nothing may run unrecorded.
func (pc *proxyConn) recordingFailed(err error) {
	pc.mu.Lock()
	first := !pc.recFailed
	pc.recFailed = true
	pc.mu.Unlock()
	if !first {
		return
	}
	pc.s.auditLog(record.RecordingFailed{ProxySession: pc.ref(), Reason: record.Sanitize(err.Error(), 300), Phase: "session"})
	pc.kill("recording failed")
}

// end stops the session (reason, unless an earlier cause was given),
// waits for its relays, seals the recording and writes proxy.end.
func (pc *proxyConn) end(reason string) {
	pc.endOnce.Do(func() {
		pc.stop(errors.New(reason))
		<-pc.relaysDone()
		s := pc.s
		why := reason
		if c := context.Cause(pc.ctx); c != nil && !errors.Is(c, context.Canceled) {
			why = c.Error()
		}
		pc.startMu.Lock()
		rec, up := pc.rec, pc.up
		pc.startMu.Unlock()
		if rec != nil {
			if err := rec.Close(why); err != nil {
				s.log.Error("bastion: recording closed with an error", "recording", pc.recID, "err", err)
				pc.mu.Lock()
				first := !pc.recFailed
				pc.recFailed = true
				pc.mu.Unlock()
				if first {
					s.auditLog(record.RecordingFailed{ProxySession: pc.ref(), Reason: record.Sanitize(err.Error(), 300), Phase: "close"})
				}
			}
		}
		if rec != nil && s.proxy.upload != nil {
			s.proxy.upload.Notify()
		}
		if up != nil {
			up.Close()
			s.auditLog(record.ProxyEnd{
				ProxySession: pc.ref(),
				Reason:       record.Sanitize(why, 300),
				BytesIn:      pc.in.Load(),
				BytesOut:     pc.out.Load(),
				Channels:     pc.channelCount(),
				Duration:     seconds(s.now().Sub(pc.start)),
			})
		}
		pc.sess.removeProxy(pc)
	})
}

func (pc *proxyConn) channelCount() int {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	return pc.chans
}

// ref names this proxy session in its audit events.
func (pc *proxyConn) ref() record.ProxySession {
	return record.ProxySession{
		ConnRef:     pc.sess.ref(),
		Identity:    auditIdentity(pc.id),
		Way:         pc.way,
		Target:      pc.target.String(),
		ResolvedIP:  pc.target.ip.String(),
		TargetLogin: pc.target.login,
		Route:       record.Route{Rule: pc.target.dec.Rule, Entry: pc.target.dec.Entry},
		Recording:   pc.recID,
	}
}

// countedChannel counts the bytes the admin sent (in) and received (out)
// on a channel, for proxy.end.
type countedChannel struct {
	gossh.Channel
	in, out *atomic.Int64
}

func (c countedChannel) Read(p []byte) (int, error) {
	n, err := c.Channel.Read(p)
	c.in.Add(int64(n))
	return n, err
}

func (c countedChannel) Write(p []byte) (int, error) {
	n, err := c.Channel.Write(p)
	c.out.Add(int64(n))
	return n, err
}

func (c countedChannel) Stderr() io.ReadWriter {
	return countedRW{ReadWriter: c.Channel.Stderr(), out: c.out}
}

type countedRW struct {
	io.ReadWriter
	out *atomic.Int64
}

func (c countedRW) Write(p []byte) (int, error) {
	n, err := c.ReadWriter.Write(p)
	c.out.Add(int64(n))
	return n, err
}
