package bastion

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"

	gl "github.com/gliderlabs/ssh"
	gossh "golang.org/x/crypto/ssh"

	"gatehouse/bastion/certauth"
	"gatehouse/bastion/policy"
	"gatehouse/bastion/record"
	"gatehouse/bastion/upstream"
)

// innerCipherAlgos are the ciphers of the SSH connection the bastion
// terminates inside a direct-tcpip channel. That connection already runs
// inside the encrypted outer one, so it leaves out chacha20-poly1305,
// which x/crypto computes without assembly on amd64 and which OpenSSH
// clients would otherwise pick first: the bastion spends its CPU on the
// recording instead.
var innerCipherAlgos = []string{
	gossh.CipherAES128GCM,
	gossh.CipherAES256GCM,
	gossh.CipherAES128CTR,
	gossh.CipherAES192CTR,
	gossh.CipherAES256CTR,
}

// proxyJump answers a direct-tcpip channel to a proxy destination (way A,
// ssh -J bastion login@host): instead of dialling, the bastion runs an SSH
// server on the channel, presents a host certificate for the requested
// name from host_ca_key, and authenticates the admin again. Only the key
// of the certificate that authenticated the outer connection is accepted,
// so the inner login is the same person; the inner login name is the
// target login, which must be in the allowing rule's logins.
func (s *Server) proxyJump(ctx gl.Context, sess *session, id *certauth.Identity, nc gossh.NewChannel, host string, ip netip.Addr, port uint16, fw record.Forward) {
	hostSigner, err := upstream.HostCertSigner(s.proxy.hostCA, s.signers[0], []string{host}, s.now(), proxyHostCertValidity)
	if err != nil {
		reason := "cannot certify the bastion as " + sanitize(host) + ": " + record.Sanitize(err.Error(), 200)
		s.auditLog(record.ForwardDenied{Forward: fw, Reason: reason})
		nc.Reject(gossh.ConnectionFailed, "gatehouse: "+reason)
		return
	}
	ch, reqs, err := nc.Accept()
	if err != nil {
		return
	}
	go gossh.DiscardRequests(reqs)

	pol := s.policy.Load()
	want := id.Cert.Key.Marshal()
	var refusal string
	cfg := &gossh.ServerConfig{
		Config: gossh.Config{
			KeyExchanges: kexAlgos,
			Ciphers:      innerCipherAlgos,
			MACs:         macAlgos,
		},
		MaxAuthTries:            6,
		PublicKeyAuthAlgorithms: pubKeyAuthAlgos,
		ServerVersion:           "SSH-2.0-gatehouse",
		// No side effects here: x/crypto may call it for keys the client
		// never proves it holds. Every key it accepts is the outer
		// certificate's own key, so whichever one the client signs with
		// proves the same person.
		PublicKeyCallback: func(conn gossh.ConnMetadata, key gossh.PublicKey) (*gossh.Permissions, error) {
			k := key
			if c, ok := key.(*gossh.Certificate); ok {
				k = c.Key
			}
			if !bytes.Equal(k.Marshal(), want) {
				refusal = "the inner login must use the key of the certificate that logged in to the bastion"
				return nil, errors.New(refusal)
			}
			if err := checkLoginName(conn.User()); err != nil {
				refusal = err.Error()
				return nil, err
			}
			d := pol.Decide(policy.Request{Principals: id.Principals, Host: host, IP: ip, Port: port, Login: conn.User(), Mode: policy.ModeProxy}, s.protected)
			if !d.Allow {
				refusal = "target login " + sanitize(conn.User()) + " refused: " + record.Sanitize(d.Detail, 200)
				return nil, errors.New(refusal)
			}
			return &gossh.Permissions{}, nil
		},
	}
	cfg.AddHostKey(hostSigner)
	cc := &chanConn{Channel: ch, local: sess.nc.LocalAddr(), remote: sess.nc.RemoteAddr()}
	grace := time.AfterFunc(s.conf().HandshakeTimeout.Duration, func() { ch.Close() })
	conn, chans, greqs, err := gossh.NewServerConn(cc, cfg)
	grace.Stop()
	if err != nil {
		if refusal == "" {
			refusal = "inner SSH handshake failed: " + record.Sanitize(err.Error(), 200)
		}
		s.auditLog(record.ForwardDenied{Forward: fw, Reason: refusal, Mode: string(policy.ModeProxy)})
		ch.Close()
		return
	}
	go func() {
		// Refuse every global request; remote forwarding (-R) attempts
		// are audited, keepalives are not.
		for req := range greqs {
			switch req.Type {
			case "tcpip-forward", "streamlocal-forward@openssh.com":
				ai := auditIdentity(id)
				s.auditLog(record.RequestDenied{
					ConnRef: sess.ref(), Identity: &ai, Target: fw.Destination, Request: req.Type,
					Reason: "remote port forwarding is not offered through the recording proxy",
				})
			}
			if req.WantReply {
				req.Reply(false, nil)
			}
		}
	}()
	// Decide again from the final connection state, not from what the
	// callback saw during some attempt.
	login := conn.User()
	d := pol.Decide(policy.Request{Principals: id.Principals, Host: host, IP: ip, Port: port, Login: login, Mode: policy.ModeProxy}, s.protected)
	if checkLoginName(login) != nil || !d.Allow {
		s.auditLog(record.ForwardDenied{Forward: fw, Reason: "target login refused after authentication"})
		conn.Close()
		return
	}
	pc := s.newProxyConn(ctx, sess, id, proxyTarget{host: host, ip: ip, port: port, login: login, dec: d}, conn, "jump", func() { conn.Close() })
	if pc == nil {
		conn.Close()
		return
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	var wg sync.WaitGroup
	for nch := range chans {
		wg.Go(func() { pc.handle(nch) })
	}
	wg.Wait()
	pc.end("closed by client")
}

// chanConn is an SSH channel as a net.Conn, so an SSH server can run on
// a direct-tcpip channel. Deadlines are not supported (the handshake is
// bounded by a timer that closes the channel instead).
type chanConn struct {
	gossh.Channel
	local, remote net.Addr
}

func (c *chanConn) LocalAddr() net.Addr                { return c.local }
func (c *chanConn) RemoteAddr() net.Addr               { return c.remote }
func (c *chanConn) SetDeadline(t time.Time) error      { return nil }
func (c *chanConn) SetReadDeadline(t time.Time) error  { return nil }
func (c *chanConn) SetWriteDeadline(t time.Time) error { return nil }
