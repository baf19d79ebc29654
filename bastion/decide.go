package bastion

import (
	"context"
	"fmt"
	"net"
	"net/netip"

	gossh "golang.org/x/crypto/ssh"

	"gatehouse/bastion/certauth"
	"gatehouse/bastion/policy"
	"gatehouse/bastion/record"
)

// The decisions below are shared by the live bastion and `gatehouse
// bastion check-cert`, so that check-cert's verdict is the bastion's:
// acceptIdentity for the login (auth.go's verified), decideJump for a
// direct-tcpip channel (forward.go's directTCPIP), proxyLogin for a
// login@host proxy target (proxy.go), and ptyRefusal for a pty request on
// a recorded session (upstream.RelayOptions.DenyPTY).

// acceptIdentity runs every certificate check for login and the bastion's
// own rule on top of certauth: the login must be printable as is, since it
// is written to the audit log and to terminals. steps is certauth's
// explanation of every check (for check-cert); id is nil when refused, and
// reason and detail then say why.
func (s *Server) acceptIdentity(login string, remote net.Addr, key gossh.PublicKey, explain bool) (steps []certauth.Step, id *certauth.Identity, reason, detail string) {
	if explain {
		steps, id = s.checker.Explain(login, remote, key)
		if id == nil {
			for _, st := range steps {
				if !st.OK && !st.Skipped {
					reason, detail = st.Reason, record.Sanitize(st.Detail, 300)
					break
				}
			}
			if reason == "" {
				reason, detail = "refused", "a certificate check failed"
			}
			return steps, nil, reason, detail
		}
	} else {
		var err error
		if id, err = s.checker.Check(login, remote, key); err != nil {
			reason, detail = refusalOf(err)
			return nil, nil, reason, detail
		}
	}
	if id.Cert == nil {
		if _, ok := key.(*gossh.Certificate); !ok {
			return steps, nil, "internal", "identity without certificate"
		}
	}
	if sanitize(id.Login) != id.Login {
		return steps, nil, "unprintable-login", fmt.Sprintf("login %q has characters that cannot be logged or shown as they are", sanitize(id.Login))
	}
	return steps, id, "", ""
}

// jumpVerdict is the outcome of decideJump.
type jumpVerdict struct {
	ips    []netip.Addr
	chosen netip.Addr      // valid when a jump is allowed
	dec    policy.Decision // the allowing decision, or the best refusal
	// proxyIP is valid when no rule allows a jump but the destination is
	// a recorded-proxy destination: the bastion then terminates SSH on the
	// channel (proxyJump) and the inner login decides.
	proxyIP netip.Addr
	// refusal is "" when allowed; kind is the channel rejection then.
	refusal string
	kind    gossh.RejectionReason
}

// decideJump decides a direct-tcpip channel to host:port for id: it
// resolves host once, asks the policy about each address, and requires
// permit-port-forwarding for a plain jump (not for a proxy destination,
// where nothing is forwarded). dest is how the refusal names the
// destination.
func (s *Server) decideJump(ctx context.Context, id *certauth.Identity, host string, port uint16, dest string) jumpVerdict {
	var v jumpVerdict
	ips, err := s.resolve(ctx, host)
	if err != nil {
		v.refusal, v.kind = err.Error(), gossh.ConnectionFailed
		return v
	}
	v.ips = ips
	pol := s.policy.Load()
	for _, ip := range ips {
		d := pol.Decide(policy.Request{Principals: id.Principals, Host: host, IP: ip, Port: port, Login: id.Login, Mode: policy.ModeJump}, s.protected)
		if d.Allow {
			v.chosen, v.dec = ip, d
			break
		}
		if v.dec.Reason == "" {
			v.dec = d
		}
	}
	if !v.chosen.IsValid() {
		reason := "no rule allows a jump to " + dest
		if v.dec.Reason != "" {
			reason += ": " + record.Sanitize(v.dec.Reason, 200)
		}
		for _, ip := range ips {
			// The target login is not known yet (the inner SSH login
			// says it): ask only whether the destination is listed for
			// proxy mode; an empty login is in no rule's logins.
			pd := pol.Decide(policy.Request{Principals: id.Principals, Host: host, IP: ip, Port: port, Mode: policy.ModeProxy}, s.protected)
			if pd.Allow || pd.Reason == policy.ReasonLoginNotAllowed {
				if s.proxy == nil {
					reason = dest + " is allowed only through the recording proxy, which is not configured"
					break
				}
				// No permit-port-forwarding needed: nothing is
				// forwarded, the bastion terminates SSH itself (as for
				// login@host@bastion, which opens no forward at all).
				v.proxyIP = ip
				return v
			}
		}
		v.refusal, v.kind = reason, gossh.Prohibited
		return v
	}
	if !id.PermitPortForwarding {
		v.refusal, v.kind = "certificate does not permit port forwarding (sign it with -O permit-port-forwarding)", gossh.Prohibited
	}
	return v
}

// ptyRefusal is why a recorded session refuses a pty for id ("" allowed).
func ptyRefusal(id *certauth.Identity) string {
	if id.PermitPTY {
		return ""
	}
	return "certificate does not permit a pty (sign it with -O permit-pty)"
}
