package upstream

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"gatehouse/bastion/internal/sanitize"
)

// knownHosts is one reading of the known_hosts file.
type knownHosts struct {
	file string
	cb   ssh.HostKeyCallback
	// caLines are the @cert-authority line numbers: x/crypto reports
	// their keys among the "wanted" plain host keys, which they are not.
	caLines map[int]bool
}

// loadKnownHosts parses the known_hosts file; a missing, unreadable,
// oversized or malformed file is an error naming it.
func loadKnownHosts(path string) (*knownHosts, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("upstream_known_hosts: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("upstream_known_hosts: %s is not a regular file", path)
	}
	if st.Size() > maxKnownHosts {
		return nil, fmt.Errorf("upstream_known_hosts: %s is larger than %d bytes", path, maxKnownHosts)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("upstream_known_hosts: %w", err)
	}
	cb, err := knownhosts.New(path)
	if err != nil {
		return nil, fmt.Errorf("upstream_known_hosts: %w", err)
	}
	kh := &knownHosts{file: path, cb: cb, caLines: map[int]bool{}}
	// Number lines as knownhosts.Read does (one per newline).
	for i, line := range bytes.Split(data, []byte("\n")) {
		if bytes.HasPrefix(bytes.TrimSpace(line), []byte("@cert-authority")) {
			kh.caLines[i+1] = true
		}
	}
	return kh, nil
}

// plainWanted returns the plain (non-CA) host keys known_hosts lists in
// a mismatch error.
func (kh *knownHosts) plainWanted(ke *knownhosts.KeyError) []knownhosts.KnownKey {
	var out []knownhosts.KnownKey
	for _, w := range ke.Want {
		if !(w.Filename == kh.file && kh.caLines[w.Line]) {
			out = append(out, w)
		}
	}
	return out
}

// callback checks the presented host key and notes in m what it
// accepted. A host certificate that no @cert-authority line vouches for
// falls back to its plain key, as OpenSSH does.
func (kh *knownHosts) callback(m *MintedCert) ssh.HostKeyCallback {
	return func(hostname string, remote net.Addr, key ssh.PublicKey) error {
		m.HostKeyType = key.Type()
		m.HostKey = ssh.FingerprintSHA256(key)
		cert, isCert := key.(*ssh.Certificate)
		if isCert {
			m.HostKey = ssh.FingerprintSHA256(cert.Key)
			m.HostCertID = sanitize.String(cert.KeyId, 200)
		}
		err := kh.cb(hostname, remote, key)
		if err == nil {
			m.AuthorizedBy = "known_hosts"
			if isCert {
				m.AuthorizedBy = "host-ca"
			}
			return nil
		}
		if !isCert {
			return kh.explain(err, hostname, key)
		}
		perr := kh.cb(hostname, remote, cert.Key)
		if perr == nil {
			m.AuthorizedBy = "known_hosts"
			return nil
		}
		// Explain with the plain key's verdict, which says whether the
		// host is known at all, and add why the certificate failed.
		return fmt.Errorf("%w (its host certificate was not accepted either: %v; note that an "+
			"@cert-authority pattern for a port other than 22 must read [pattern]:port)", kh.explain(perr, hostname, key), err)
	}
}

// order puts first the host key algorithms whose key types known_hosts
// lists for the target, as OpenSSH does: otherwise a target offering,
// say, an ECDSA host certificate from a CA we do not trust would be
// refused although its Ed25519 key is known. It asks the callback about
// a throwaway key, whose mismatch error lists the known keys; with none
// (only @cert-authority lines, or an unknown host) the default order,
// certificates first, stays.
func (kh *knownHosts) order(hostPort string, t Target, algs []string) []string {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return algs
	}
	probe, err := ssh.NewPublicKey(pub)
	if err != nil {
		return algs
	}
	var ke *knownhosts.KeyError
	if err := kh.cb(hostPort, &net.TCPAddr{IP: t.IP.AsSlice(), Port: int(t.Port)}, probe); !errors.As(err, &ke) {
		return algs
	}
	known := map[string]bool{}
	for _, w := range kh.plainWanted(ke) {
		known[w.Key.Type()] = true
	}
	if len(known) == 0 {
		return algs
	}
	var first, rest []string
	for _, a := range algs {
		if known[keyTypeOf(a)] {
			first = append(first, a)
		} else {
			rest = append(rest, a)
		}
	}
	return append(first, rest...)
}

// keyTypeOf maps a host key algorithm to the key type known_hosts stores.
func keyTypeOf(alg string) string {
	alg = strings.TrimSuffix(alg, "-cert-v01@openssh.com")
	switch alg {
	case ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSASHA512:
		return ssh.KeyAlgoRSA
	}
	return alg
}

// explain turns a knownhosts error into one the operator can act on.
func (kh *knownHosts) explain(err error, hostname string, key ssh.PublicKey) error {
	host := knownhosts.Normalize(hostname)
	fp := key.Type() + " " + ssh.FingerprintSHA256(key)
	if c, ok := key.(*ssh.Certificate); ok {
		fp = key.Type() + " " + ssh.FingerprintSHA256(c.Key) + " signed by " + ssh.FingerprintSHA256(c.SignatureKey)
	}
	var ke *knownhosts.KeyError
	var re *knownhosts.RevokedError
	switch {
	case errors.As(err, &re):
		return fmt.Errorf("host key check failed: the key presented for %s (%s) is marked @revoked in %s:%d", host, fp, re.Revoked.Filename, re.Revoked.Line)
	case errors.As(err, &ke) && len(kh.plainWanted(ke)) > 0:
		var lines []string
		for _, w := range kh.plainWanted(ke) {
			lines = append(lines, w.Filename+":"+strconv.Itoa(w.Line))
		}
		return fmt.Errorf("host key check failed: HOST KEY MISMATCH for %s: presented %s does not match %s "+
			"(possible man-in-the-middle; if the target was reinstalled, update known_hosts)", host, fp, strings.Join(lines, ", "))
	case errors.As(err, &ke):
		return fmt.Errorf("host key check failed: %s is not in %s (presented %s); add its host key "+
			"(ssh-keyscan) or an @cert-authority line for its host CA", host, kh.file, fp)
	}
	return fmt.Errorf("host key check failed for %s (presented %s): %w", host, fp, err)
}
