// Package pgp verifies and makes the OpenPGP signatures of APT repositories:
// it loads keyrings as apt's Signed-By takes them, verifies InRelease and
// Release.gpg with APT's acceptance rule, and signs with the appliance's own
// key so that gpgv and sqv on the clients accept the result.
//
// APT's rule, which every verification here applies: at least one good
// signature by a key in the given keyring; any bad signature (by a keyring key
// that does not verify, is expired, revoked, not signing-capable, uses a weak
// hash, or a malformed signature packet) fails the whole file; signatures by
// keys outside the keyring are ignored and reported.
package pgp

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	pgperrors "github.com/ProtonMail/go-crypto/openpgp/errors"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

// MaxKeyringSize bounds the bytes read from one keyring file. Debian's whole
// archive keyring is under 100 KiB; anything near this limit is not a keyring.
const MaxKeyringSize = 16 << 20

// Keyring is a set of public keys trusted to sign one repository. It never
// holds secret key material. A Keyring is immutable and safe for concurrent use.
type Keyring struct {
	name     string
	entities openpgp.EntityList
	skipped  []string
}

// LoadKeyring reads a keyring file in either form apt's Signed-By accepts: a
// binary OpenPGP keyring (.gpg, keys concatenated, as shipped by
// debian-archive-keyring) or an ASCII-armored one (.asc). The form is detected
// from the content, not the name. Errors name the file.
func LoadKeyring(path string) (*Keyring, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("load keyring: %w", err)
	}
	defer f.Close()
	return ReadKeyring(f, path)
}

// ReadKeyring is LoadKeyring for data from r; name identifies the source in
// errors and messages. At most MaxKeyringSize bytes are accepted. Keys that
// use unsupported algorithms or versions are skipped (see Skipped) as gpgv
// does; a keyring without any usable key is an error, and so is one that
// contains secret keys (export only the public part: gpg --export).
func ReadKeyring(r io.Reader, name string) (*Keyring, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxKeyringSize+1))
	if err != nil {
		return nil, fmt.Errorf("read keyring %s: %w", name, err)
	}
	if len(data) > MaxKeyringSize {
		return nil, fmt.Errorf("keyring %s: larger than %d bytes: not a keyring", name, MaxKeyringSize)
	}
	kr := &Keyring{name: name}
	trimmed := bytes.TrimLeft(data, " \t\r\n")
	if bytes.HasPrefix(trimmed, []byte("-----BEGIN PGP")) {
		// An .asc file may hold several armored blocks one after another.
		// armor.Decode reuses a *bufio.Reader it is given instead of
		// wrapping (and reading ahead past) the end of each block.
		rest := bufio.NewReaderSize(bytes.NewReader(trimmed), 4096)
		for n := 0; ; n++ {
			block, err := armor.Decode(rest)
			if err == io.EOF && n > 0 {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("keyring %s: armored block %d: %v", name, n+1, err)
			}
			if block.Type != openpgp.PublicKeyType {
				return nil, fmt.Errorf("keyring %s: armored block %d is %q, want %q: a trust keyring holds public keys only, never secret keys (export the public key: gpg --armor --export)",
					name, n+1, block.Type, openpgp.PublicKeyType)
			}
			if err := kr.read(block.Body); err != nil {
				return nil, err
			}
		}
	} else if err := kr.read(bytes.NewReader(data)); err != nil {
		return nil, err
	}
	if len(kr.entities) == 0 {
		msg := "no usable public key"
		if len(kr.skipped) > 0 {
			msg += " (skipped: " + strings.Join(kr.skipped, "; ") + ")"
		}
		return nil, fmt.Errorf("keyring %s: %s: use a binary .gpg or armored .asc OpenPGP public keyring", name, msg)
	}
	return kr, nil
}

// read adds the entities of one binary packet stream, skipping (and noting)
// entities go-crypto cannot use, as openpgp.ReadKeyRing does.
func (kr *Keyring) read(r io.Reader) error {
	packets := packet.NewReader(r)
	for {
		e, err := openpgp.ReadEntity(packets)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			var ue pgperrors.UnsupportedError
			var se pgperrors.StructuralError
			if !errors.As(err, &ue) && !errors.As(err, &se) {
				return fmt.Errorf("keyring %s: %v", kr.name, err)
			}
			kr.skipped = append(kr.skipped, err.Error())
			if err := skipToNextKey(packets); err == io.EOF {
				return nil
			} else if err != nil {
				return fmt.Errorf("keyring %s: %v", kr.name, err)
			}
			continue
		}
		if e.PrivateKey != nil {
			return fmt.Errorf("keyring %s: contains the secret key %X: a trust keyring must hold public keys only (gpg --export, not --export-secret-keys)",
				kr.name, e.PrimaryKey.Fingerprint)
		}
		kr.entities = append(kr.entities, e)
	}
}

// skipToNextKey consumes packets up to the next primary key, which it leaves
// in the reader.
func skipToNextKey(packets *packet.Reader) error {
	for {
		p, err := packets.Next()
		if err != nil {
			var ue pgperrors.UnsupportedError
			if errors.As(err, &ue) {
				continue
			}
			return err
		}
		switch k := p.(type) {
		case *packet.PublicKey:
			if !k.IsSubkey {
				packets.Unread(p)
				return nil
			}
		case *packet.PrivateKey:
			if !k.IsSubkey {
				packets.Unread(p)
				return nil
			}
		}
	}
}

// Name returns the file name or label the keyring was read from.
func (k *Keyring) Name() string { return k.name }

// Fingerprints returns the primary key fingerprints in the keyring, as
// uppercase hex without spaces, in file order.
func (k *Keyring) Fingerprints() []string {
	out := make([]string, 0, len(k.entities))
	for _, e := range k.entities {
		out = append(out, fpr(e.PrimaryKey.Fingerprint))
	}
	return out
}

// Skipped describes the keys that were present but could not be used
// (unsupported algorithm or version, broken self-signatures). Callers may log
// them; a signature by such a key counts as one by an unknown key.
func (k *Keyring) Skipped() []string { return append([]string(nil), k.skipped...) }

// Filter returns a keyring holding only the keys whose primary fingerprint
// is listed (uppercase or lowercase hex, spaces ignored), as apt does for a
// Signed-By field naming fingerprints. Unknown fingerprints are an error.
func (k *Keyring) Filter(fingerprints ...string) (*Keyring, error) {
	out := &Keyring{name: k.name}
	for _, want := range fingerprints {
		w := strings.ToUpper(strings.ReplaceAll(want, " ", ""))
		found := false
		for _, e := range k.entities {
			if fpr(e.PrimaryKey.Fingerprint) == w {
				out.entities = append(out.entities, e)
				found = true
			}
		}
		if !found {
			return nil, fmt.Errorf("keyring %s: no key with fingerprint %s", k.name, w)
		}
	}
	return out, nil
}

// candidate is a key of the keyring that a signature names as its issuer.
type candidate struct {
	entity *openpgp.Entity
	key    *packet.PublicKey
}

// lookup finds the keys (primary or subkey) a signature's issuer subpackets
// name. The fingerprint is authoritative when present.
func (k *Keyring) lookup(sig *packet.Signature) []candidate {
	var out []candidate
	match := func(pk *packet.PublicKey) bool {
		if len(sig.IssuerFingerprint) > 0 {
			return bytes.Equal(pk.Fingerprint, sig.IssuerFingerprint)
		}
		return sig.IssuerKeyId != nil && pk.KeyId == *sig.IssuerKeyId
	}
	for _, e := range k.entities {
		if match(e.PrimaryKey) {
			out = append(out, candidate{e, e.PrimaryKey})
		}
		for _, sk := range e.Subkeys {
			if match(sk.PublicKey) {
				out = append(out, candidate{e, sk.PublicKey})
			}
		}
	}
	return out
}

func fpr(b []byte) string { return strings.ToUpper(hex.EncodeToString(b)) }

// LoadKeyrings loads several keyring files (such as [import] trusted_keys)
// into one keyring whose name lists them all. It fails on the first file
// that does not load, naming it.
func LoadKeyrings(paths ...string) (*Keyring, error) {
	if len(paths) == 0 {
		return nil, errors.New("no keyring files given")
	}
	all := &Keyring{}
	var names []string
	for _, p := range paths {
		kr, err := LoadKeyring(p)
		if err != nil {
			return nil, err
		}
		all.entities = append(all.entities, kr.entities...)
		all.skipped = append(all.skipped, kr.skipped...)
		names = append(names, kr.name)
	}
	all.name = strings.Join(names, ", ")
	return all, nil
}
