package demo

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/ssh"
)

// RecordedLogin is the account on the recorded sample target: the only
// principal of the certificates the bastion mints for it.
const RecordedLogin = "demo"

// WriteSSHConfig writes an ssh_config with which stock OpenSSH reaches
// the target at targetAddr through the bastion at bastionAddr as "ssh -F
// CONFIG demo-target", and known_hosts pinning both host keys, into dir
// (which holds the client key "admin" and its "admin-cert.pub"). It returns
// the config's path.
func WriteSSHConfig(dir, bastionAddr, targetAddr string, bastionKey, targetKey ssh.PublicKey) (string, error) {
	return SSHConfig{Dir: dir, BastionAddr: bastionAddr, TargetAddr: targetAddr, BastionKey: bastionKey, TargetKey: targetKey}.Write()
}

// SSHConfig describes the demo's ssh_config: the bastion, the jump
// target, and (when RecordedAddr is set) the recording proxy's target.
type SSHConfig struct {
	// Dir receives ssh_config and known_hosts; it holds the client key
	// "admin" and its certificate "admin-cert.pub".
	Dir                     string
	BastionAddr, TargetAddr string
	BastionKey, TargetKey   ssh.PublicKey
	// RecordedAddr is reached through the recording proxy as login
	// RecordedLogin: the bastion presents a host certificate from HostCA
	// for it, so known_hosts trusts HostCA for that one name and port (an
	// @cert-authority line), not the target's own key, which the client
	// never sees.
	RecordedAddr string
	HostCA       ssh.PublicKey
}

// Write writes Dir/ssh_config and Dir/known_hosts and returns the config's
// path. Hosts: demo-bastion, demo-target (ProxyJump through the bastion)
// and, with RecordedAddr, demo-recorded.
func (c SSHConfig) Write() (string, error) {
	bh, bp, _ := net.SplitHostPort(c.BastionAddr)
	th, tp, _ := net.SplitHostPort(c.TargetAddr)
	line := func(k ssh.PublicKey) string { return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k))) }
	kh := filepath.Join(c.Dir, "known_hosts")
	known := fmt.Sprintf("[%s]:%s %s\n[%s]:%s %s\n", bh, bp, line(c.BastionKey), th, tp, line(c.TargetKey))
	var recorded string
	if c.RecordedAddr != "" {
		rh, rport, _ := net.SplitHostPort(c.RecordedAddr)
		known += fmt.Sprintf("@cert-authority [%s]:%s %s\n", rh, rport, line(c.HostCA))
		recorded = fmt.Sprintf(`Host demo-recorded
  HostName %s
  Port %s
  User %s
  ProxyJump demo-bastion
`, rh, rport, RecordedLogin)
	}
	if err := os.WriteFile(kh, []byte(known), 0o644); err != nil {
		return "", err
	}
	conf := fmt.Sprintf(`# ssh_config written by gatehouse demo
Host demo-bastion
  HostName %[1]s
  Port %[2]s
  User admin
Host demo-target
  HostName %[3]s
  Port %[4]s
  User admin
  ProxyJump demo-bastion
%[8]sHost *
  IdentityFile %[5]s
  CertificateFile %[6]s
  IdentitiesOnly yes
  UserKnownHostsFile %[7]s
  StrictHostKeyChecking yes
  BatchMode yes
  ConnectTimeout 10
`, bh, bp, th, tp, filepath.Join(c.Dir, "admin"), filepath.Join(c.Dir, "admin-cert.pub"), kh, recorded)
	p := filepath.Join(c.Dir, "ssh_config")
	return p, os.WriteFile(p, []byte(conf), 0o644)
}
