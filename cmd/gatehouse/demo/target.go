// Package demo holds the parts of `gatehouse demo`, which joins both
// halves on a built-in sample: the signed sample upstream archive
// (BuildUpstream, with apt/repobuild so the binary links no test code),
// the sample SSH target that stands in for an isolated host (Target), the
// ssh_config with which stock OpenSSH reaches it through the bastion
// (SSHConfig), a loopback HTTP server, and the checks that run the real
// apt-get and ssh and show refusals (Check, Refusals, CheckStatusPage).
// Run sequences them (with the recording proxy of recording.go and the
// status site); package main keeps only the flags, as a thin cobra
// wrapper. The tests of cmd/gatehouse reuse Target and SSHConfig to give
// their bastions something real to reach.
//
// Everything here binds to 127.0.0.1 and trusts only the keys it is given.
package demo

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
)

// Target is the sample "isolated host" of `gatehouse demo`: a tiny SSH
// server on loopback that trusts exactly one user CA. The demo runs two: one
// trusting the demo user CA (reached with a plain ssh -J jump), and one
// trusting only the bastion's upstream CA (reached through the recording
// proxy, as a real target configured with TrustedUserCAKeys would be). It
// answers a few fixed exec commands (echo, hostname, sleep) and otherwise a
// line naming the authenticated login, and runs a minimal echo shell: enough
// to show a session passing through the bastion, never a real shell.
type Target struct {
	ln  net.Listener
	cfg *ssh.ServerConfig
	log *slog.Logger
	wg  sync.WaitGroup
}

// maxSleep bounds the demo target's sleep command, so a client cannot
// hold a goroutine for longer than a demo lasts.
const maxSleep = 2 * time.Minute

// NewTarget listens on a fresh loopback port with hostKey. It accepts
// only user certificates signed by userCA whose principals name the login
// and which are inside their validity window (ssh.CertChecker); plain keys,
// host certificates and other CAs are refused.
func NewTarget(hostKey ssh.Signer, userCA ssh.PublicKey, log *slog.Logger) (*Target, error) {
	checker := &ssh.CertChecker{
		IsUserAuthority: func(auth ssh.PublicKey) bool {
			return bytes.Equal(auth.Marshal(), userCA.Marshal())
		},
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg := &ssh.ServerConfig{PublicKeyCallback: checker.Authenticate}
	cfg.AddHostKey(hostKey)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("demo target: listen on 127.0.0.1: %w", err)
	}
	return &Target{ln: ln, cfg: cfg, log: log}, nil
}

// Addr is the host:port the target listens on (127.0.0.1).
func (d *Target) Addr() string { return d.ln.Addr().String() }

// Close stops listening; for a target whose Serve never ran (Serve closes
// the listener itself when its context is done).
func (d *Target) Close() error { return d.ln.Close() }

// Serve accepts connections until ctx is done, then waits for them to end.
func (d *Target) Serve(ctx context.Context) {
	go func() { <-ctx.Done(); d.ln.Close() }()
	for {
		c, err := d.ln.Accept()
		if err != nil {
			break
		}
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			d.handle(ctx, c)
		}()
	}
	d.wg.Wait()
}

func (d *Target) handle(ctx context.Context, c net.Conn) {
	defer c.Close()
	sc, chans, reqs, err := ssh.NewServerConn(c, d.cfg)
	if err != nil {
		d.log.Debug("demo target: handshake failed", "err", err)
		return
	}
	stop := context.AfterFunc(ctx, func() { sc.Close() })
	defer stop()
	go ssh.DiscardRequests(reqs)
	// The certificate's extensions decide what the session may do, as in
	// sshd: the bastion's per-session certificates permit a pty only.
	_, permitPTY := sc.Permissions.Extensions["permit-pty"]
	for nc := range chans {
		if nc.ChannelType() != "session" {
			nc.Reject(ssh.UnknownChannelType, "the demo target only offers sessions")
			continue
		}
		ch, creqs, err := nc.Accept()
		if err != nil {
			continue
		}
		go d.session(sc.User(), permitPTY, ch, creqs)
	}
}

func (d *Target) session(user string, permitPTY bool, ch ssh.Channel, reqs <-chan *ssh.Request) {
	defer ch.Close()
	exit := func(code uint32) {
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], code)
		ch.SendRequest("exit-status", false, b[:])
	}
	// Once the command runs, later requests (window-change, signal) are
	// refused; gone is closed when the channel is, so a sleep ends with it.
	gone := make(chan struct{})
	drain := func() {
		go func() {
			for r := range reqs {
				r.Reply(false, nil)
			}
			close(gone)
		}()
	}
	for req := range reqs {
		switch req.Type {
		case "pty-req":
			req.Reply(permitPTY, nil)
		case "window-change":
			req.Reply(true, nil)
		case "exec":
			var cmd struct{ Command string }
			if err := ssh.Unmarshal(req.Payload, &cmd); err != nil {
				req.Reply(false, nil)
				continue
			}
			req.Reply(true, nil)
			drain()
			exit(demoExec(ch, user, cmd.Command, gone))
			return
		case "shell":
			req.Reply(true, nil)
			drain()
			fmt.Fprintf(ch, "gatehouse demo target: logged in as %s. Type a line and it echoes; 'exit' leaves.\r\n$ ", user)
			d.echo(ch)
			exit(0)
			return
		default:
			req.Reply(false, nil)
		}
	}
}

// demoExec answers the demo target's fixed commands: "echo ARGS" writes
// ARGS verbatim (no shell quoting is interpreted), "hostname" a fixed name,
// "sleep N" waits N seconds (at most maxSleep, ended early when the
// channel closes); anything else gets a line naming the login and the
// command. It returns the exit status.
func demoExec(w io.Writer, user, command string, gone <-chan struct{}) uint32 {
	name, rest, _ := strings.Cut(strings.TrimSpace(command), " ")
	switch name {
	case "echo":
		fmt.Fprintf(w, "%s\n", rest)
	case "hostname":
		fmt.Fprintln(w, "gatehouse-demo-target")
	case "sleep":
		n, err := strconv.Atoi(strings.TrimSpace(rest))
		if err != nil || n < 0 || time.Duration(n)*time.Second > maxSleep {
			fmt.Fprintf(w, "sleep: want whole seconds from 0 to %d\n", int(maxSleep.Seconds()))
			return 1
		}
		t := time.NewTimer(time.Duration(n) * time.Second)
		defer t.Stop()
		select {
		case <-t.C:
		case <-gone:
			return 1
		}
	default:
		fmt.Fprintf(w, "hello %s, this is the gatehouse demo target; you ran: %s\n", user, command)
	}
	return 0
}

// echo is a line-at-a-time echo "shell" that works with and without a pty.
func (d *Target) echo(ch ssh.Channel) {
	var line []byte
	buf := make([]byte, 1024)
	for {
		n, err := ch.Read(buf)
		for _, b := range buf[:n] {
			switch b {
			case '\r', '\n':
				ch.Write([]byte("\r\n"))
				if string(line) == "exit" {
					return
				}
				if len(line) > 0 {
					fmt.Fprintf(ch, "echo: %s\r\n", line)
				}
				ch.Write([]byte("$ "))
				line = line[:0]
			case 4: // Ctrl-D
				return
			case 127, 8:
				if len(line) > 0 {
					line = line[:len(line)-1]
					ch.Write([]byte("\b \b"))
				}
			default:
				line = append(line, b)
				ch.Write([]byte{b})
			}
		}
		if err == io.EOF || err != nil {
			return
		}
	}
}
