package bastion

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"maps"
	"net"
	"strings"

	gl "github.com/gliderlabs/ssh"
	gossh "golang.org/x/crypto/ssh"

	"gatehouse/bastion/record"
)

// permToken is the Permissions extension that ties an authenticated
// connection to the identity its final, verified auth attempt proved.
const permToken = "gatehouse-auth-token@gatehouse"

// gliderServer is the gliderlabs/ssh server of this one connection:
// every callback is a method of sess, the connection's owner (as
// tailscale's tailssh does with newConn), so no handler looks its
// connection up in a context or a table. It is configured so that:
//   - PublicKeyHandler is set (and password and keyboard-interactive
//     handlers are not): gliderlabs then leaves NoClientAuth false, and
//     publickey is the only method offered;
//   - that handler only pre-filters (plain keys are refused at the query
//     stage). It never decides who the user is: gliderlabs hands it a
//     context whose User() is frozen at the first attempt, and returns one
//     shared Permissions for all attempts;
//   - the real decision is x/crypto's VerifiedPublicKeyCallback, called only
//     for a key whose signature verified, with that attempt's conn.User(). It
//     returns a fresh Permissions carrying the certificate's critical options
//     (x/crypto enforces source-address on it as well) and a token for the
//     identity; channel handlers read identity only via the final
//     ServerConn.Permissions.
func (sess *session) gliderServer() *gl.Server {
	return &gl.Server{
		HostSigners:              sess.s.glKeys,
		Version:                  "gatehouse",
		PublicKeyHandler:         sess.prefilter,
		ServerConfigCallback:     sess.serverConfig,
		ConnectionFailedCallback: sess.handshakeFailed,
		ChannelHandlers: map[string]gl.ChannelHandler{
			"direct-tcpip": sess.directTCPIP,
			"session":      sess.loginSession,
			"default":      sess.rejectChannel,
		},
		RequestHandlers: map[string]gl.RequestHandler{
			"default": sess.globalRequest,
		},
	}
}

// handshakeFailed is gliderlabs' ConnectionFailedCallback: the SSH
// handshake (version, key exchange or authentication) failed.
func (sess *session) handshakeFailed(_ net.Conn, err error) {
	sess.mu.Lock()
	sess.hsErr = record.Sanitize(err.Error(), 200)
	sess.mu.Unlock()
}

// serverConfig builds the x/crypto configuration for this connection.
func (sess *session) serverConfig(gl.Context) *gossh.ServerConfig {
	algos := sess.s.cfg.algorithms()
	return &gossh.ServerConfig{
		Config: gossh.Config{
			KeyExchanges: algos.kex,
			Ciphers:      algos.ciphers,
			MACs:         algos.macs,
		},
		MaxAuthTries:            6,
		PublicKeyAuthAlgorithms: pubKeyAuthAlgos,
		VerifiedPublicKeyCallback: func(conn gossh.ConnMetadata, key gossh.PublicKey, _ *gossh.Permissions, _ string) (*gossh.Permissions, error) {
			return sess.verified(conn, key)
		},
		AuthLogCallback: sess.authLog,
	}
}

// prefilter is gliderlabs' PublicKeyHandler. It runs for key queries and
// signed attempts alike, before any signature is checked, so it only refuses
// what can never pass (plain keys and host certificates) and has no side
// effects besides noting the refusal for authLog.
func (sess *session) prefilter(_ gl.Context, key gl.PublicKey) bool {
	cert, ok := key.(*gossh.Certificate)
	if ok && cert.CertType == gossh.UserCert {
		return true
	}
	n := &note{reason: "not-a-certificate", detail: "plain public keys are never accepted: log in with an OpenSSH user certificate", key: offeredKey(key)}
	if ok {
		n.reason, n.detail = "host-certificate", "host certificates cannot log in"
	}
	sess.mu.Lock()
	sess.plain = n
	sess.mu.Unlock()
	return false
}

// authRefused is the error VerifiedPublicKeyCallback returns; authLog
// writes it to the audit log.
type authRefused struct {
	reason, detail string
	key            *record.OfferedKey
}

func (e *authRefused) Error() string { return "certificate refused: " + e.reason }

// verified decides a signed, verified attempt with the login of this very
// attempt. Only here do side effects happen, and only after the
// certificate passed every check: before that, nothing is resolved,
// dialled, evaluated against policy or written (an attacker without a
// certificate must not make the bastion send DNS queries or fill a disk).
func (sess *session) verified(conn gossh.ConnMetadata, key gossh.PublicKey) (*gossh.Permissions, error) {
	s := sess.s
	login := conn.User()
	proxyReq := strings.Contains(login, "@")
	if proxyReq {
		// user@host[:port]@bastion: a recorded proxy login. The login
		// checked below is a principal a proxy rule allows for the target,
		// which takes a DNS lookup and the policy to find: so first every
		// check that does not depend on the login, with a principal the
		// certificate carries standing in for it.
		login = ""
		if cert, ok := key.(*gossh.Certificate); ok && len(cert.ValidPrincipals) > 0 {
			login = cert.ValidPrincipals[0]
		}
	}
	_, id, reason, detail := s.acceptIdentity(login, conn.RemoteAddr(), key, false)
	if id == nil {
		return nil, &authRefused{reason: reason, detail: detail, key: offeredKey(key)}
	}
	var target *proxyTarget
	if proxyReq {
		// The certificate is good: now find the principal that a proxy
		// rule allows for that target and target login, and run every
		// check again with it as the login.
		var ar *authRefused
		target, login, ar = s.proxyLogin(conn.User(), key)
		if ar != nil {
			return nil, ar
		}
		if _, id, reason, detail = s.acceptIdentity(login, conn.RemoteAddr(), key, false); id == nil {
			return nil, &authRefused{reason: reason, detail: detail, key: offeredKey(key)}
		}
	}
	cert := id.Cert
	if cert == nil {
		cert, _ = key.(*gossh.Certificate)
	}
	var tb [16]byte
	_, _ = rand.Read(tb[:])
	token := hex.EncodeToString(tb[:])
	ev := record.AuthAccepted{
		ConnRef:     sess.ref(),
		Identity:    auditIdentity(id),
		Result:      "accepted",
		Method:      "publickey",
		KeyType:     key.Type(),
		ValidBefore: id.ValidBefore.UTC(),
	}
	if target != nil {
		ev.ProxyTarget = target.String()
		ev.TargetLogin = target.login
	}
	// The connection's own lines start here: conn.start, the attempts
	// this connection had refused before (the client trying other keys
	// or logins), then the accepted attempt. Fail closed: no login that
	// the audit log cannot show.
	if err := sess.logStart(); err != nil {
		return nil, &authRefused{reason: "audit-unavailable", detail: "the audit log cannot be written", key: offeredKey(key)}
	}
	if err := s.auditLog(ev); err != nil {
		return nil, &authRefused{reason: "audit-unavailable", detail: "the audit log cannot be written", key: offeredKey(key)}
	}
	sess.authenticated(token, &authEntry{id: id, user: conn.User(), target: target})
	return &gossh.Permissions{
		CriticalOptions: maps.Clone(cert.CriticalOptions),
		Extensions:      map[string]string{permToken: token},
	}, nil
}

// authLog notes each refused attempt, with the login name of that attempt.
// Accepted attempts were logged by verified. The customary first "none"
// probe of every client is not an event. A refused attempt is not written
// by itself: if the connection later authenticates it is written before
// the accepted attempt, otherwise it is counted in the source's "preauth"
// line (see preauthLog). The observer (metrics) sees every attempt.
func (sess *session) authLog(conn gossh.ConnMetadata, method string, err error) {
	s := sess.s
	if err == nil {
		return
	}
	sess.mu.Lock()
	if method == "none" && !sess.noneSeen {
		sess.noneSeen = true
		sess.mu.Unlock()
		return
	}
	sess.failures++
	plain := sess.plain
	sess.mu.Unlock()

	ev := record.AuthRefused{
		ConnRef: sess.ref(),
		Result:  "refused",
		Method:  record.Sanitize(method, 40),
		Login:   sanitize(conn.User()),
	}
	var ar *authRefused
	switch {
	case errors.As(err, &ar):
		ev.OfferedKey, ev.Reason, ev.Detail = ar.key, ar.reason, ar.detail
	case method == "publickey" && plain != nil && err.Error() == "permission denied":
		// gliderlabs' wording for a false PublicKeyHandler.
		ev.OfferedKey, ev.Reason, ev.Detail = plain.key, plain.reason, plain.detail
	case method == "publickey":
		ev.Reason, ev.Detail = "protocol", record.Sanitize(err.Error(), 200)
	default:
		ev.Reason, ev.Detail = "method-not-offered", "only publickey with an OpenSSH user certificate is accepted"
	}
	sess.mu.Lock()
	if len(sess.refusals) < maxConnRefusals {
		sess.refusals = append(sess.refusals, ev)
	}
	sess.mu.Unlock()
	s.observeOnly(ev)
}

// offeredKey describes an offered key for the audit log, from the key
// itself only (it may be unverified, so nothing here is trusted).
func offeredKey(key gossh.PublicKey) *record.OfferedKey {
	k := &record.OfferedKey{KeyType: key.Type()}
	if cert, ok := key.(*gossh.Certificate); ok {
		k.KeyFP = gossh.FingerprintSHA256(cert.Key)
		k.OfferedCert = &record.OfferedCert{
			KeyID:      sanitize(cert.KeyId),
			Serial:     cert.Serial,
			Principals: sanitizeList(cert.ValidPrincipals),
		}
		if cert.SignatureKey != nil {
			k.CAFP = gossh.FingerprintSHA256(cert.SignatureKey)
		}
	} else {
		k.KeyFP = gossh.FingerprintSHA256(key)
	}
	return k
}

// sanitize makes certificate strings safe for logs and terminals.
func sanitize(v string) string { return record.Sanitize(v, 200) }

func sanitizeList(v []string) []string {
	const maxItems = 32
	out := make([]string, 0, min(len(v), maxItems))
	for i, p := range v {
		if i == maxItems {
			out = append(out, "…")
			break
		}
		out = append(out, record.Sanitize(p, 100))
	}
	return out
}
