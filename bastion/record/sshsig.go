package record

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/crypto/ssh"
)

// SSHSIG (OpenSSH PROTOCOL.sshsig) lets anyone verify a recording manifest
// with stock `ssh-keygen -Y verify`, no gatehouse binary needed.
const (
	sshsigMagic   = "SSHSIG"
	sshsigVersion = 1
	sshsigBegin   = "-----BEGIN SSH SIGNATURE-----"
	sshsigEnd     = "-----END SSH SIGNATURE-----"
	// maxSSHSIGArmored bounds what VerifySSHSIG reads: an RSA-16384
	// signature plus key is under 6 KiB armored.
	maxSSHSIGArmored = 64 << 10
)

// RecordingNamespace is the SSHSIG namespace of recording manifests.
const RecordingNamespace = "gatehouse-recording"

// SignSSHSIG signs data in the armored SSHSIG format with hash sha512, as
// `ssh-keygen -Y sign -n namespace` would. RSA keys sign with rsa-sha2-512.
func SignSSHSIG(signer ssh.Signer, namespace string, data []byte) ([]byte, error) {
	if namespace == "" {
		return nil, errors.New("sshsig: empty namespace")
	}
	h := sha512.Sum512(data)
	toSign := sshsigSignedData(namespace, "sha512", h[:])
	var sig *ssh.Signature
	var err error
	if signer.PublicKey().Type() == ssh.KeyAlgoRSA {
		as, ok := signer.(ssh.AlgorithmSigner)
		if !ok {
			return nil, errors.New("sshsig: RSA signer cannot sign with rsa-sha2-512")
		}
		sig, err = as.SignWithAlgorithm(rand.Reader, toSign, ssh.KeyAlgoRSASHA512)
	} else {
		sig, err = signer.Sign(rand.Reader, toSign)
	}
	if err != nil {
		return nil, fmt.Errorf("sshsig: sign: %w", err)
	}
	var blob []byte
	blob = append(blob, sshsigMagic...)
	blob = binary.BigEndian.AppendUint32(blob, sshsigVersion)
	blob = appendString(blob, signer.PublicKey().Marshal())
	blob = appendString(blob, []byte(namespace))
	blob = appendString(blob, nil)
	blob = appendString(blob, []byte("sha512"))
	blob = appendString(blob, ssh.Marshal(sig))
	return armorSSHSIG(blob), nil
}

// sshsigSignedData builds the blob the key actually signs.
func sshsigSignedData(namespace, hashAlg string, digest []byte) []byte {
	var b []byte
	b = append(b, sshsigMagic...)
	b = appendString(b, []byte(namespace))
	b = appendString(b, nil)
	b = appendString(b, []byte(hashAlg))
	b = appendString(b, digest)
	return b
}

func appendString(b, s []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

func armorSSHSIG(blob []byte) []byte {
	enc := base64.StdEncoding.EncodeToString(blob)
	var out bytes.Buffer
	out.WriteString(sshsigBegin + "\n")
	for len(enc) > 70 {
		out.WriteString(enc[:70] + "\n")
		enc = enc[70:]
	}
	out.WriteString(enc + "\n" + sshsigEnd + "\n")
	return out.Bytes()
}

// sshsig is a parsed SSHSIG blob.
type sshsig struct {
	PublicKey ssh.PublicKey
	Namespace string
	HashAlg   string
	Signature *ssh.Signature
}

// parseSSHSIG decodes an armored SSHSIG signature. It checks structure
// only, not the signature.
func parseSSHSIG(armored []byte) (*sshsig, error) {
	if len(armored) > maxSSHSIGArmored {
		return nil, fmt.Errorf("sshsig: signature file is %d bytes, over the %d-byte limit", len(armored), maxSSHSIGArmored)
	}
	s := bytes.TrimSpace(armored)
	if !bytes.HasPrefix(s, []byte(sshsigBegin)) {
		return nil, fmt.Errorf("sshsig: missing %q line", sshsigBegin)
	}
	if !bytes.HasSuffix(s, []byte(sshsigEnd)) {
		return nil, fmt.Errorf("sshsig: missing %q line (truncated?)", sshsigEnd)
	}
	if len(s) < len(sshsigBegin)+len(sshsigEnd) {
		return nil, errors.New("sshsig: truncated armor")
	}
	body := s[len(sshsigBegin) : len(s)-len(sshsigEnd)]
	b64 := make([]byte, 0, len(body))
	for _, c := range body {
		switch c {
		case '\n', '\r', ' ', '\t':
		default:
			b64 = append(b64, c)
		}
	}
	blob, err := base64.StdEncoding.DecodeString(string(b64))
	if err != nil {
		return nil, fmt.Errorf("sshsig: bad base64: %w", err)
	}
	r := wireReader{b: blob}
	magic := r.bytes(len(sshsigMagic))
	if r.err != nil || string(magic) != sshsigMagic {
		return nil, errors.New("sshsig: missing SSHSIG magic")
	}
	if v := r.uint32(); r.err == nil && v != sshsigVersion {
		return nil, fmt.Errorf("sshsig: unsupported version %d", v)
	}
	pkBlob := r.string()
	ns := r.string()
	_ = r.string() // reserved: ignored, as ssh-keygen does
	hashAlg := r.string()
	sigBlob := r.string()
	if r.err != nil {
		return nil, fmt.Errorf("sshsig: %w", r.err)
	}
	if len(r.b) != 0 {
		return nil, fmt.Errorf("sshsig: %d trailing bytes after signature", len(r.b))
	}
	pk, err := ssh.ParsePublicKey(pkBlob)
	if err != nil {
		return nil, fmt.Errorf("sshsig: public key: %w", err)
	}
	sig := new(ssh.Signature)
	if err := ssh.Unmarshal(sigBlob, sig); err != nil {
		return nil, fmt.Errorf("sshsig: signature blob: %w", err)
	}
	return &sshsig{PublicKey: pk, Namespace: string(ns), HashAlg: string(hashAlg), Signature: sig}, nil
}

// VerifySSHSIG checks an armored SSHSIG signature over data: made by pub,
// for namespace, with hash sha256 or sha512 (and rsa-sha2-* for RSA keys),
// as `ssh-keygen -Y verify` does with an allowed-signers file naming pub.
func VerifySSHSIG(pub ssh.PublicKey, namespace string, data, armored []byte) error {
	sig, err := parseSSHSIG(armored)
	if err != nil {
		return err
	}
	if !bytes.Equal(sig.PublicKey.Marshal(), pub.Marshal()) {
		return fmt.Errorf("sshsig: signed by %s %s, not by the expected key %s",
			sig.PublicKey.Type(), ssh.FingerprintSHA256(sig.PublicKey), ssh.FingerprintSHA256(pub))
	}
	if sig.Namespace != namespace {
		return fmt.Errorf("sshsig: namespace is %q, want %q", Sanitize(sig.Namespace, 80), namespace)
	}
	var digest []byte
	switch sig.HashAlg {
	case "sha512":
		h := sha512.Sum512(data)
		digest = h[:]
	case "sha256":
		h := sha256.Sum256(data)
		digest = h[:]
	default:
		return fmt.Errorf("sshsig: unsupported hash algorithm %q", Sanitize(sig.HashAlg, 40))
	}
	if pub.Type() == ssh.KeyAlgoRSA && sig.Signature.Format == ssh.KeyAlgoRSA {
		return errors.New("sshsig: RSA signature uses SHA-1 (ssh-rsa); refused")
	}
	if err := pub.Verify(sshsigSignedData(namespace, sig.HashAlg, digest), sig.Signature); err != nil {
		return fmt.Errorf("sshsig: signature does not verify over the data: %w", err)
	}
	return nil
}

// wireReader reads SSH wire-format fields with bounds checks.
type wireReader struct {
	b   []byte
	err error
}

func (r *wireReader) bytes(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || n > len(r.b) {
		r.err = errors.New("truncated blob")
		return nil
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}

func (r *wireReader) uint32() uint32 {
	b := r.bytes(4)
	if b == nil {
		return 0
	}
	return binary.BigEndian.Uint32(b)
}

func (r *wireReader) string() []byte {
	n := r.uint32()
	if r.err != nil {
		return nil
	}
	if uint64(n) > uint64(len(r.b)) {
		r.err = fmt.Errorf("string length %d exceeds the %d bytes left", n, len(r.b))
		return nil
	}
	return r.bytes(int(n))
}
