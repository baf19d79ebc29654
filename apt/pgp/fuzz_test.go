package pgp

import (
	"bytes"
	"testing"
	"time"
)

// FuzzVerifyClearsigned feeds mutations of a valid clearsigned document (and
// random bytes): never a panic, and never success with a body other than
// the one that was signed.
func FuzzVerifyClearsigned(f *testing.F) {
	k := testKey(f, 20, nil) // deterministic: saved corpus entries stay valid
	kr := keyringOf(f, "fuzz", k)
	body := trickyBody
	doc := mustClearSign(f, k, body, t0.Add(time.Minute))
	d2 := mustClearSign(f, testKey(f, 21, nil), body, t0.Add(time.Minute))
	f.Add(doc)
	f.Add(append(bytes.Clone(doc), doc...))
	f.Add(withSignatures(f, doc, append(sigPackets(f, doc), sigPackets(f, d2)...)))
	f.Add(doc[:len(doc)/2])
	f.Add([]byte("-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\nx\n-----BEGIN PGP SIGNATURE-----\n\n=AAAA\n-----END PGP SIGNATURE-----\n"))
	now := t0.Add(time.Hour)
	f.Fuzz(func(t *testing.T, data []byte) {
		got, res, err := VerifyClearsigned(data, kr, now)
		if err != nil {
			if got != nil {
				t.Fatal("body returned with an error")
			}
			return
		}
		if !bytes.Equal(got, trickySigned) {
			t.Fatalf("accepted a different body:\n%q", got)
		}
		if len(res.Good) == 0 || len(res.Bad) != 0 {
			t.Fatalf("success without a good signature: %+v", res)
		}
	})
}

// FuzzVerifyDetached mutates a binary detached signature (the signed data
// stays fixed): never a panic, success only with a good signature.
func FuzzVerifyDetached(f *testing.F) {
	k := testKey(f, 22, nil)
	kr := keyringOf(f, "fuzz", k)
	for _, armored := range []bool{false, true} {
		sig, err := k.DetachSign(release, armored, t0.Add(time.Minute))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(sig, false)
		f.Add(sig, true)
	}
	now := t0.Add(time.Hour)
	f.Fuzz(func(t *testing.T, sig []byte, changeData bool) {
		data := release
		if changeData {
			data = append(bytes.Clone(release), 'x')
		}
		res, err := VerifyDetached(data, sig, kr, now)
		if err != nil {
			return
		}
		if changeData {
			t.Fatal("signature accepted for changed data")
		}
		if len(res.Good) == 0 || len(res.Bad) != 0 {
			t.Fatalf("success without a good signature: %+v", res)
		}
	})
}

// FuzzReadKeyring parses arbitrary keyrings: never a panic; a keyring that
// loads has at least one key and can be used for verification.
func FuzzReadKeyring(f *testing.F) {
	k := testKey(f, 23, nil)
	bin, _ := k.PublicKey(false)
	asc, _ := k.PublicKey(true)
	f.Add(bin)
	f.Add(asc)
	f.Add(append(bytes.Clone(bin), mustPubF(f, 24)...))
	sig, _ := k.DetachSign(release, false, t0.Add(time.Minute))
	f.Fuzz(func(t *testing.T, data []byte) {
		kr, err := ReadKeyring(bytes.NewReader(data), "fuzz.gpg")
		if err != nil {
			return
		}
		if len(kr.Fingerprints()) == 0 {
			t.Fatal("keyring without keys accepted")
		}
		VerifyDetached(release, sig, kr, t0.Add(time.Hour))
	})
}

func mustPubF(f *testing.F, seed uint64) []byte {
	pub, err := testKey(f, seed, nil).PublicKey(false)
	if err != nil {
		f.Fatal(err)
	}
	return pub
}
