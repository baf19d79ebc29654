// Package sshkeys creates and loads the OpenSSH keys gatehouse makes for
// itself (init's host key and CAs, the demo's throwaway keys) and signs
// user certificates with them. Private keys are written 0600, exclusively,
// so an existing key is never overwritten and never briefly readable by
// others; an existing private key readable by others is refused.
package sshkeys

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

// WriteNewFile creates path exclusively with mode, so an existing key is
// never overwritten and a private key is never briefly world-readable.
func WriteNewFile(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
	}
	return err
}

// Ensure creates an ed25519 OpenSSH private key at path (0600) with its
// public half at path.pub, unless path exists already. It returns the signer
// and whether it created the key. An existing key that is group- or
// world-readable is refused.
func Ensure(path, comment string) (ssh.Signer, bool, error) {
	if st, err := os.Stat(path); err == nil {
		if st.Mode().Perm()&0o077 != 0 {
			return nil, false, fmt.Errorf("private key %s has mode %04o: other users may read it; run chmod 600 %s", path, st.Mode().Perm(), path)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, false, err
		}
		s, err := ssh.ParsePrivateKey(data)
		if err != nil {
			return nil, false, fmt.Errorf("private key %s: %w", path, err)
		}
		return s, false, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, false, err
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, false, err
	}
	block, err := ssh.MarshalPrivateKey(priv, comment)
	if err != nil {
		return nil, false, err
	}
	if err := WriteNewFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		return nil, false, fmt.Errorf("writing private key: %w", err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, false, err
	}
	pubLine := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(s.PublicKey()))) + " " + comment + "\n"
	if err := os.WriteFile(path+".pub", []byte(pubLine), 0o644); err != nil {
		return nil, false, fmt.Errorf("writing public key: %w", err)
	}
	return s, true, nil
}

// SignUserCert issues an OpenSSH user certificate for pub from ca.
func SignUserCert(ca ssh.Signer, pub ssh.PublicKey, keyID string, principals []string, from, to time.Time, exts map[string]string) (*ssh.Certificate, error) {
	var serial [8]byte
	if _, err := rand.Read(serial[:]); err != nil {
		return nil, err
	}
	c := &ssh.Certificate{
		Key:             pub,
		Serial:          binary.BigEndian.Uint64(serial[:]),
		CertType:        ssh.UserCert,
		KeyId:           keyID,
		ValidPrincipals: principals,
		ValidAfter:      uint64(from.Unix()),
		ValidBefore:     uint64(to.Unix()),
		Permissions:     ssh.Permissions{Extensions: exts},
	}
	if err := c.SignCert(rand.Reader, ca); err != nil {
		return nil, err
	}
	return c, nil
}
