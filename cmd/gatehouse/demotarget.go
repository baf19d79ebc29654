package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"

	"golang.org/x/crypto/ssh"
)

// demoTarget is the sample "isolated host" of `gatehouse demo`: a tiny SSH
// server on loopback that trusts the demo user CA. It answers exec requests
// with a line naming the authenticated principal and runs a minimal echo
// shell, enough to show a session passing through the bastion.
type demoTarget struct {
	ln  net.Listener
	cfg *ssh.ServerConfig
	log *slog.Logger
	wg  sync.WaitGroup
}

func newDemoTarget(hostKey ssh.Signer, userCA ssh.PublicKey, log *slog.Logger) (*demoTarget, error) {
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
		return nil, err
	}
	return &demoTarget{ln: ln, cfg: cfg, log: log}, nil
}

func (d *demoTarget) addr() string { return d.ln.Addr().String() }

// serve accepts connections until ctx is done, then waits for them to end.
func (d *demoTarget) serve(ctx context.Context) {
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

func (d *demoTarget) handle(ctx context.Context, c net.Conn) {
	defer c.Close()
	sc, chans, reqs, err := ssh.NewServerConn(c, d.cfg)
	if err != nil {
		d.log.Debug("demo target: handshake failed", "err", err)
		return
	}
	go func() { <-ctx.Done(); sc.Close() }()
	go ssh.DiscardRequests(reqs)
	for nc := range chans {
		if nc.ChannelType() != "session" {
			nc.Reject(ssh.UnknownChannelType, "the demo target only offers sessions")
			continue
		}
		ch, creqs, err := nc.Accept()
		if err != nil {
			continue
		}
		go d.session(sc.User(), ch, creqs)
	}
}

func (d *demoTarget) session(user string, ch ssh.Channel, reqs <-chan *ssh.Request) {
	defer ch.Close()
	exit := func(code uint32) {
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], code)
		ch.SendRequest("exit-status", false, b[:])
	}
	for req := range reqs {
		switch req.Type {
		case "pty-req", "env", "window-change":
			req.Reply(req.Type != "env", nil)
		case "exec":
			req.Reply(true, nil)
			var cmd struct{ Command string }
			ssh.Unmarshal(req.Payload, &cmd)
			fmt.Fprintf(ch, "hello %s, this is the gatehouse demo target; you ran: %s\n", user, cmd.Command)
			exit(0)
			return
		case "shell":
			req.Reply(true, nil)
			fmt.Fprintf(ch, "gatehouse demo target: logged in as %s. Type a line and it echoes; 'exit' leaves.\r\n$ ", user)
			d.echo(ch)
			exit(0)
			return
		default:
			req.Reply(false, nil)
		}
	}
}

// echo is a line-at-a-time echo "shell" that works with and without a pty.
func (d *demoTarget) echo(ch ssh.Channel) {
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
