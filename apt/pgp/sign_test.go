package pgp

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// A body with every line shape clearsigning must handle.
var trickyBody = []byte("Origin: Example\n" +
	"-starts with a dash\n" +
	"- starts with dash space\n" +
	"-----BEGIN PGP SIGNATURE-----\n" +
	"From the start\n" +
	"trailing spaces   \n" +
	"trailing tab\t\n" +
	"\n" +
	" continuation line\n" +
	"Last: line\n")

// trickyBody as signed: trailing whitespace is not part of clearsigned text.
var trickySigned = []byte(strings.NewReplacer("   \n", "\n", "\t\n", "\n").Replace(string(trickyBody)))

// Our clearsigned and detached output verifies with the real gpgv (apt up
// to Debian 12) and sqv (apt 3), for Ed25519 and RSA-3072 keys, and with our
// own verifier.
func TestSignatureInterop(t *testing.T) {
	needTool(t, "gpgv")
	needTool(t, "sqv")
	for _, algo := range []string{AlgoEd25519, AlgoRSA3072} {
		t.Run(algo, func(t *testing.T) {
			// gpgv and sqv check against the real clock.
			now := time.Now().Add(-time.Minute).Truncate(time.Second)
			k, err := GenerateSigningKey("Gatehouse Test", "archive@example.org", algo, now)
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			pubBin, err := k.PublicKey(false)
			if err != nil {
				t.Fatal(err)
			}
			pubAsc, err := k.PublicKey(true)
			if err != nil {
				t.Fatal(err)
			}
			binPath := writeFile(t, dir, "key.gpg", pubBin)
			ascPath := writeFile(t, dir, "key.asc", pubAsc)
			kr, err := LoadKeyring(ascPath)
			if err != nil {
				t.Fatal(err)
			}
			fp := k.Fingerprint()

			// Clearsigned (InRelease).
			doc, err := k.ClearSign(trickyBody, now)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(doc, []byte("-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\n")) {
				t.Errorf("clearsign header: %q", doc[:60])
			}
			if !bytes.Contains(doc, []byte("\n- -----BEGIN PGP SIGNATURE-----\n")) || !bytes.Contains(doc, []byte("\n- -starts with a dash\n")) {
				t.Errorf("dash-escaping missing:\n%s", doc)
			}
			inrel := writeFile(t, dir, "InRelease", doc)
			out := filepath.Join(dir, "gpgv-body")
			g := runGPGV(t, binPath, "--output", out, inrel)
			if !g.ok || !slices.Equal(g.primary, []string{fp}) {
				t.Fatalf("gpgv refuses our InRelease:\n%s\n%s", g.status, doc)
			}
			gbody, _ := os.ReadFile(out)
			if !bytes.Equal(gbody, trickySigned) {
				t.Errorf("gpgv body:\n%q\nwant\n%q", gbody, trickySigned)
			}
			body, res, err := VerifyClearsigned(doc, kr, now.Add(time.Minute))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(body, gbody) || !slices.Equal(res.SignedBy(), []string{fp}) || res.Good[0].Hash != "SHA512" {
				t.Errorf("ours: body %q signers %v hash %s", body, res.SignedBy(), res.Good[0].Hash)
			}
			// apt 3 splits InRelease into text and detached signature and
			// runs sqv on them; the text excludes the final line break.
			i := sigStart(t, doc)
			sigPath := writeFile(t, dir, "InRelease.sig", doc[i:])
			textPath := writeFile(t, dir, "InRelease.text", bytes.TrimSuffix(gbody, []byte("\n")))
			for _, keyring := range []string{binPath, ascPath} {
				if fps, ok, msg := runSQV(t, keyring, sigPath, textPath); !ok || !slices.Equal(fps, []string{fp}) {
					t.Errorf("sqv --keyring %s on split InRelease: %s", filepath.Base(keyring), msg)
				}
			}

			// Detached (Release.gpg), armored and binary.
			release := writeFile(t, dir, "Release", trickyBody)
			for _, armored := range []bool{true, false} {
				sig, err := k.DetachSign(trickyBody, armored, now)
				if err != nil {
					t.Fatal(err)
				}
				if got := bytes.HasPrefix(sig, []byte("-----BEGIN PGP SIGNATURE-----")); got != armored {
					t.Errorf("armored=%v but output starts %q", armored, sig[:10])
				}
				sigPath := writeFile(t, dir, "Release.gpg", sig)
				if g := runGPGV(t, binPath, sigPath, release); !g.ok || !slices.Equal(g.primary, []string{fp}) {
					t.Errorf("gpgv refuses detached (armored=%v):\n%s", armored, g.status)
				}
				for _, keyring := range []string{binPath, ascPath} {
					if fps, ok, msg := runSQV(t, keyring, sigPath, release); !ok || !slices.Equal(fps, []string{fp}) {
						t.Errorf("sqv --keyring %s (armored=%v): %s", filepath.Base(keyring), armored, msg)
					}
				}
				res, err := VerifyDetached(trickyBody, sig, kr, now.Add(time.Minute))
				if err != nil || !slices.Equal(res.SignedBy(), []string{fp}) {
					t.Errorf("ours (armored=%v): %v %v", armored, err, res.SignedBy())
				}
				// And the oracle for the negative: one changed byte fails everywhere.
				changed := bytes.Replace(trickyBody, []byte("Example"), []byte("Exbmple"), 1)
				bad := writeFile(t, dir, "Release.changed", changed)
				if g := runGPGV(t, binPath, sigPath, bad); g.ok {
					t.Error("gpgv accepts a changed Release")
				}
				if _, ok, _ := runSQV(t, binPath, sigPath, bad); ok {
					t.Error("sqv accepts a changed Release")
				}
				if _, err := VerifyDetached(changed, sig, kr, now.Add(time.Minute)); !errors.Is(err, ErrBadSignature) {
					t.Errorf("ours on changed Release: %v", err)
				}
			}
		})
	}
}

func TestSigningKeyFile(t *testing.T) {
	dir := t.TempDir()
	k := testKey(t, 1, nil)
	path := filepath.Join(dir, "archive.key")
	if err := WriteSigningKey(path, k); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	if err := WriteSigningKey(path, k); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Errorf("overwrite: %v", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("temp files left behind: %v", entries)
	}
	if err := WriteSigningKey(filepath.Join(dir, "missing", "k"), k); err == nil {
		t.Error("write into a missing directory succeeded")
	}
	loaded, err := LoadSigningKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if loaded.Fingerprint() != k.Fingerprint() {
		t.Errorf("fingerprint %s != %s", loaded.Fingerprint(), k.Fingerprint())
	}
	doc, err := loaded.ClearSign([]byte("a: b\n"), t0.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := VerifyClearsigned(doc, keyringOf(t, "k", k), t0.Add(time.Hour)); err != nil {
		t.Errorf("signature of the reloaded key: %v", err)
	}
	if data, _ := os.ReadFile(path); !bytes.HasPrefix(data, []byte("-----BEGIN PGP PRIVATE KEY BLOCK-----")) {
		t.Errorf("key file is not an armored secret key: %q", data[:40])
	}
	for _, mode := range []os.FileMode{0o640, 0o604, 0o644} {
		os.Chmod(path, mode)
		_, err := LoadSigningKey(path)
		if err == nil || !strings.Contains(err.Error(), "chmod 600 "+path) || !strings.Contains(err.Error(), fmt.Sprintf("mode %04o", mode)) {
			t.Errorf("mode %o: %v", mode, err)
		}
	}
	// A public key is not a signing key.
	pub, _ := k.PublicKey(true)
	pubPath := filepath.Join(dir, "pub.asc")
	os.WriteFile(pubPath, pub, 0o600)
	if _, err := LoadSigningKey(pubPath); err == nil {
		t.Error("loaded a public key as signing key")
	}
	// A keyring must not hold secret keys.
	if _, err := LoadKeyring(filepath.Join(dir, "archive.key")); err == nil || !strings.Contains(err.Error(), "secret") {
		t.Errorf("secret key accepted as keyring: %v", err)
	}
	// A passphrase-protected key cannot be used unattended: refused.
	enc := testKey(t, 16, nil)
	if err := enc.entity.EncryptPrivateKeys([]byte("pw"), nil); err != nil {
		t.Fatal(err)
	}
	encPath := filepath.Join(dir, "enc.key")
	if err := WriteSigningKey(encPath, enc); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadSigningKey(encPath); err == nil || !strings.Contains(err.Error(), "passphrase") {
		t.Errorf("encrypted key: %v", err)
	}
	if _, err := GenerateSigningKey("x", "y@example.org", "dsa1024", t0); err == nil {
		t.Error("unknown algorithm accepted")
	}
}

// A secret key exported by real gpg loads and signs verifiably.
func TestLoadGPGSecretKey(t *testing.T) {
	home := gpgHome(t)
	gpg(t, home, nil, "--quick-gen-key", "GPG Made <gpg@example.org>", "ed25519", "sign", "never")
	sec := gpg(t, home, nil, "--armor", "--export-secret-keys")
	path := filepath.Join(t.TempDir(), "gpg.key")
	if err := os.WriteFile(path, sec, 0o600); err != nil {
		t.Fatal(err)
	}
	k, err := LoadSigningKey(path)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := k.ClearSign([]byte("a: b\n"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	pub := writeFile(t, t.TempDir(), "pub.gpg", gpg(t, home, nil, "--export"))
	if g := runGPGV(t, pub, writeFile(t, t.TempDir(), "InRelease", doc)); !g.ok {
		t.Errorf("gpgv: %s", g.status)
	}
}

func TestLoadKeyrings(t *testing.T) {
	dir := t.TempDir()
	var paths []string
	var fprs []string
	for i, armor := range []bool{true, false} {
		k, err := GenerateSigningKey("k", "k@example.org", AlgoEd25519, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		pub, _ := k.PublicKey(armor)
		p := filepath.Join(dir, fmt.Sprintf("k%d", i))
		os.WriteFile(p, pub, 0o644)
		paths = append(paths, p)
		fprs = append(fprs, k.Fingerprint())
	}
	kr, err := LoadKeyrings(paths...)
	if err != nil {
		t.Fatal(err)
	}
	got := kr.Fingerprints()
	if len(got) != 2 || !slices.Contains(got, fprs[0]) || !slices.Contains(got, fprs[1]) {
		t.Fatalf("merged keyring has %v, want %v", got, fprs)
	}
	if _, err := LoadKeyrings(paths[0], filepath.Join(dir, "missing")); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("missing file: %v", err)
	}
}
