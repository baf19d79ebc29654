package record

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/ssh"
)

// maxKeyFile bounds how much of a key file is read.
const maxKeyFile = 64 << 10

// LoadSigningKey loads the recording signing key: an unencrypted private
// key in OpenSSH format. It refuses a file readable or writable by group or
// others, because whoever reads it can forge recordings.
func LoadSigningKey(path string) (ssh.Signer, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("recording key: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("recording key %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("recording key %s: not a regular file", path)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("recording key %s has mode %04o: group/other may access it; run `chmod 600 %s`",
			path, perm, path)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, fmt.Errorf("recording key %s: read: %w", path, err)
	}
	if len(b) > maxKeyFile {
		return nil, fmt.Errorf("recording key %s: larger than %d bytes, not a private key", path, maxKeyFile)
	}
	signer, err := ssh.ParsePrivateKey(b)
	if err != nil {
		var pp *ssh.PassphraseMissingError
		if errors.As(err, &pp) {
			return nil, fmt.Errorf("recording key %s is passphrase-protected; the bastion signs unattended, "+
				"so store it without a passphrase (`ssh-keygen -p -N '' -f %s`) and protect it with file permissions", path, path)
		}
		return nil, fmt.Errorf("recording key %s: %w", path, err)
	}
	return signer, nil
}

// GenerateSigningKey creates a new ed25519 recording key at path (0600,
// OpenSSH format) and its public half at path+".pub". It never overwrites:
// if either file exists it returns an error wrapping fs.ErrExist.
func GenerateSigningKey(path string) error {
	pubPath := path + ".pub"
	for _, p := range []string{path, pubPath} {
		if _, err := os.Lstat(p); err == nil {
			return fmt.Errorf("recording key: %s already exists; not overwriting: %w", p, fs.ErrExist)
		}
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return fmt.Errorf("recording key: generate: %w", err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "gatehouse-recording")
	if err != nil {
		return fmt.Errorf("recording key: encode: %w", err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		return fmt.Errorf("recording key: encode public key: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("recording key: %w", err)
	}
	if err := writeExclusive(path, pem.EncodeToMemory(block), 0o600); err != nil {
		return err
	}
	line := append(ssh.MarshalAuthorizedKey(sshPub)[:len(ssh.MarshalAuthorizedKey(sshPub))-1], " gatehouse-recording\n"...)
	if err := writeExclusive(pubPath, line, 0o644); err != nil {
		os.Remove(path)
		return err
	}
	return nil
}

// writeExclusive creates path (failing if it exists), writes b and fsyncs.
func writeExclusive(path string, b []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("recording key: %w", err)
	}
	_, werr := f.Write(b)
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		os.Remove(path)
		return fmt.Errorf("recording key: write %s: %w", path, werr)
	}
	return nil
}

// AllowedSigners returns the allowed_signers line (ssh-keygen(1) ALLOWED
// SIGNERS) with which stock OpenSSH verifies recording manifests and
// audit checkpoints (README: "Checkpoints"):
//
//	ssh-keygen -Y verify -f allowed_signers -I gatehouse -n gatehouse-recording \
//	    -s manifest.json.sig < manifest.json
func AllowedSigners(pub ssh.PublicKey) string {
	return "gatehouse namespaces=\"" + RecordingNamespace + "," + AuditNamespace + "\" " + strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub))) + "\n"
}
