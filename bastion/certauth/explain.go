package certauth

import (
	"net"
	"net/netip"
	"slices"
	"time"

	"golang.org/x/crypto/ssh"
)

// Step is one line of Explain's report.
type Step struct {
	// Check names the check, e.g. "trusted CA"; stable, for display.
	Check string
	// OK is true when the check passed.
	OK bool
	// Skipped is true when the check was not evaluated because a check it
	// depends on failed (the signature is never verified with an untrusted
	// or refused CA key).
	Skipped bool
	// Reason is the Refusal reason when the check failed.
	Reason string
	// Detail says what was found; attacker-chosen text in it is quoted.
	Detail string
}

// Explain runs every check Check runs, in the same order, but continues after
// a failure where that is meaningful, so `gatehouse bastion check-cert` can
// show an operator everything wrong with a certificate at once. The Identity
// is non-nil only when every check passed (then Check accepts it too).
func (c *Checker) Explain(login string, remote net.Addr, key ssh.PublicKey) ([]Step, *Identity) {
	steps, id, _ := c.evaluate(login, remote, key, true)
	return steps, id
}

// evaluation records the outcome of each check. When all is false it stops
// at the first failure, which is what Check needs.
type evaluation struct {
	all   bool
	steps []Step
	first *Refusal
}

// run evaluates one check unless evaluation already stopped; it reports
// whether the check passed.
func (e *evaluation) run(name string, f func() *Refusal) bool {
	if e.stopped() {
		return false
	}
	r := f()
	if r == nil {
		e.steps = append(e.steps, Step{Check: name, OK: true})
		return true
	}
	e.steps = append(e.steps, Step{Check: name, Reason: r.Reason, Detail: r.Detail})
	if e.first == nil {
		e.first = r
	}
	return false
}

func (e *evaluation) skip(name, why string) {
	if !e.stopped() {
		e.steps = append(e.steps, Step{Check: name, Skipped: true, Detail: why})
	}
}

func (e *evaluation) stopped() bool { return e.first != nil && !e.all }

func (c *Checker) evaluate(login string, remote net.Addr, key ssh.PublicKey, all bool) ([]Step, *Identity, *Refusal) {
	st := c.cur.Load()
	now := c.now()
	e := &evaluation{all: all}
	cert, _ := key.(*ssh.Certificate)
	if !e.run("certificate", func() *Refusal {
		switch {
		case key == nil:
			return refuse("not-a-certificate", "no key was offered")
		case cert == nil:
			return refuse("not-a-certificate", "a plain %s key was offered; only user certificates are accepted", quote(key.Type()))
		case cert.Key == nil || cert.SignatureKey == nil:
			return refuse("not-a-certificate", "malformed certificate without key or CA key")
		}
		return nil
	}) {
		// Nothing else can be evaluated without a certificate.
		return e.steps, nil, e.first
	}
	e.run("user certificate", func() *Refusal {
		if cert.CertType != ssh.UserCert {
			return refuse("host-certificate", "certificate type %d is not a user certificate", cert.CertType)
		}
		return nil
	})
	caOK := e.run("trusted CA", func() *Refusal { return trustedCA(st, cert) })
	caOK = e.run("CA key strength", func() *Refusal {
		if err := keyStrength(cert.SignatureKey); err != nil {
			return refuse("weak-key", "CA key: %v", err)
		}
		return nil
	}) && caOK
	caOK = e.run("CA signature algorithm", func() *Refusal { return signatureAlgorithm(cert) }) && caOK
	if caOK {
		e.run("signature", func() *Refusal { return verifySignature(cert) })
	} else {
		e.skip("signature", "not verified: the CA or its signature algorithm was refused")
	}
	e.run("user key strength", func() *Refusal {
		if err := keyStrength(cert.Key); err != nil {
			return refuse("weak-key", "user key: %v", err)
		}
		return nil
	})
	e.run("not revoked", func() *Refusal {
		if st.rev != nil {
			if r, why := st.rev.Revoked(cert); r {
				return refuse("revoked", "revoked by %s in %s", why, c.cfg.RevokedKeys)
			}
		}
		return nil
	})
	var src []netip.Prefix
	if e.run("critical options", func() (r *Refusal) { src, r = criticalOptions(cert); return r }) {
		e.run("source address", func() *Refusal { return sourceAddress(src, remote, cert.CriticalOptions["source-address"]) })
	} else {
		e.skip("source address", "not evaluated: the critical options were refused")
	}
	if e.run("principals", func() *Refusal { return principalList(cert) }) {
		e.run("login in principals", func() *Refusal { return loginInPrincipals(cert, login) })
	} else {
		e.skip("login in principals", "not evaluated: the principal list was refused")
	}
	e.run("lifetime", func() *Refusal { return c.lifetime(cert) })
	e.run("validity window", func() *Refusal { return c.window(cert, now) })
	if e.first != nil {
		return e.steps, nil, e.first
	}
	id := &Identity{
		Login:          login,
		Principals:     slices.Clone(cert.ValidPrincipals),
		KeyID:          cert.KeyId,
		Serial:         cert.Serial,
		CAFingerprint:  ssh.FingerprintSHA256(cert.SignatureKey),
		KeyFingerprint: ssh.FingerprintSHA256(cert.Key),
		ValidAfter:     time.Unix(int64(cert.ValidAfter), 0),
		ValidBefore:    time.Unix(int64(cert.ValidBefore), 0),
		SourceAddress:  src,
		Cert:           cert,
	}
	_, id.PermitPTY = cert.Extensions["permit-pty"]
	_, id.PermitPortForwarding = cert.Extensions["permit-port-forwarding"]
	_, id.PermitAgentForwarding = cert.Extensions["permit-agent-forwarding"]
	_, id.PermitX11Forwarding = cert.Extensions["permit-X11-forwarding"]
	_, id.PermitUserRC = cert.Extensions["permit-user-rc"]
	return e.steps, id, nil
}
