package main

import (
	"os"
	"time"

	"golang.org/x/crypto/ssh"

	"gatehouse/cmd/gatehouse/internal/sshkeys"
)

// The key helpers live in cmd/gatehouse/internal/sshkeys, shared with the
// demo package; these names keep package main's spelling.

// writeNewFile is sshkeys.WriteNewFile: create path exclusively with mode.
func writeNewFile(path string, data []byte, mode os.FileMode) error {
	return sshkeys.WriteNewFile(path, data, mode)
}

// ensureSSHKey is sshkeys.Ensure: create (0600) or load an ed25519 key.
func ensureSSHKey(path, comment string) (ssh.Signer, bool, error) {
	return sshkeys.Ensure(path, comment)
}

// signUserCert is sshkeys.SignUserCert: an OpenSSH user certificate for pub.
func signUserCert(ca ssh.Signer, pub ssh.PublicKey, keyID string, principals []string, from, to time.Time, exts map[string]string) (*ssh.Certificate, error) {
	return sshkeys.SignUserCert(ca, pub, keyID, principals, from, to, exts)
}
