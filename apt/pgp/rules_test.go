package pgp

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

var release = []byte("Origin: Example\nSuite: stable\nCodename: example\nSHA256:\n 0123 12 main/binary-amd64/Packages\n")

func wantErr(t *testing.T, err error, kind error, substr string) {
	t.Helper()
	if !errors.Is(err, kind) {
		t.Fatalf("err = %v, want %v", err, kind)
	}
	if !strings.Contains(err.Error(), substr) {
		t.Fatalf("err = %q, want it to mention %q", err, substr)
	}
}

// Only one signed message, with nothing but whitespace around it.
func TestClearsignedStructure(t *testing.T) {
	k := testKey(t, 1, nil)
	kr := keyringOf(t, "test", k)
	now := t0.Add(time.Hour)
	doc := mustClearSign(t, k, release, t0.Add(time.Minute))
	if body, _, err := VerifyClearsigned(doc, kr, now); err != nil || !bytes.Equal(body, release) {
		t.Fatalf("plain doc: %v %q", err, body)
	}
	ok := map[string][]byte{
		"leading blank lines":  append([]byte("\n \n\t\n"), doc...),
		"trailing blank lines": append(bytes.Clone(doc), "\n\n  \n"...),
		"CRLF line ends":       bytes.ReplaceAll(doc, []byte("\n"), []byte("\r\n")),
		// "- " before a line not starting with "-" is a legal escape that
		// does not change the signed text.
		"extra dash escape": bytes.Replace(doc, []byte("\nSuite:"), []byte("\n- Suite:"), 1),
	}
	for name, d := range ok {
		if body, _, err := VerifyClearsigned(d, kr, now); err != nil || !bytes.Equal(body, release) {
			t.Errorf("%s: %v %q", name, err, body)
		}
	}
	bad := map[string]struct {
		doc  []byte
		kind error
		msg  string
	}{
		"text before":         {append([]byte("Origin: Evil\n"), doc...), ErrMalformed, "before the signed block"},
		"text before, no nl":  {append([]byte("x"), doc...), ErrMalformed, "does not start"},
		"text after":          {append(bytes.Clone(doc), "Origin: Evil\n"...), ErrMalformed, "after the signature"},
		"two messages":        {append(bytes.Clone(doc), mustClearSign(t, k, []byte("Origin: Evil\n"), t0.Add(time.Minute))...), ErrMalformed, "more than one"},
		"unsigned":            {release, ErrMalformed, "does not start"},
		"empty":               {nil, ErrMalformed, "does not start"},
		"no signature":        {doc[:sigStart(t, doc)], ErrMalformed, "incomplete"},
		"changed body":        {bytes.Replace(doc, []byte("stable"), []byte("stablE"), 1), ErrBadSignature, "does not verify"},
		"added body line":     {bytes.Replace(doc, []byte("Suite: stable\n"), []byte("Suite: stable\nX: y\n"), 1), ErrBadSignature, "does not verify"},
		"hash header differs": {bytes.Replace(doc, []byte("Hash: SHA512"), []byte("Hash: SHA256"), 1), ErrBadSignature, "Hash: header"},
		"bad hash header":     {bytes.Replace(doc, []byte("Hash: SHA512"), []byte("Hash: SHA999"), 1), ErrMalformed, "incomplete or has invalid headers"},
		"CR inside a line":    {bytes.Replace(doc, []byte("Suite: stable"), []byte("Suite:\rstable"), 1), ErrMalformed, "carriage return"},
		"truncated armor":     {doc[:len(doc)-60], ErrMalformed, "incomplete"},
	}
	for name, c := range bad {
		body, _, err := VerifyClearsigned(c.doc, kr, now)
		if body != nil {
			t.Errorf("%s: body returned with error", name)
		}
		if !errors.Is(err, c.kind) || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: err = %v, want %v mentioning %q", name, err, c.kind, c.msg)
		}
		// Errors reach logs and the status page: they name sizes and
		// hashes, never what the sender wrote.
		if strings.Contains(err.Error(), "Evil") {
			t.Errorf("%s: error quotes the document: %v", name, err)
		}
	}
	page := []byte("<html>Evil internal page</html>\n")
	if _, _, err := VerifyClearsigned(page, kr, now); err == nil || strings.Contains(err.Error(), "Evil") ||
		!strings.Contains(err.Error(), fmt.Sprintf("%d bytes, SHA-256 %x", len(page), sha256.Sum256(page))) {
		t.Errorf("not a signed message: %v", err)
	}
	evilHash := bytes.Replace(doc, []byte("Hash: SHA512"), []byte("Hash: SHA256, Evil"), 1)
	if _, _, err := VerifyClearsigned(evilHash, kr, now); err == nil || strings.Contains(err.Error(), "Evil") {
		t.Errorf("Hash header: %v", err)
	}
}

// Signatures with weak digests are refused even though gpgv 2.2 accepts
// them; the same gpg key with SHA-256 passes, so the digest is the reason.
// This also checks gpg's own clearsign output against our parser.
func TestWeakDigestFromGPG(t *testing.T) {
	needTool(t, "gpgv")
	home := gpgHome(t)
	gpg(t, home, nil, "--quick-gen-key", "Weak <weak@example.org>", "rsa3072", "sign", "never")
	pub := writeFile(t, t.TempDir(), "pub.gpg", gpg(t, home, nil, "--export"))
	kr, err := LoadKeyring(pub)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().Add(time.Minute)
	for _, digest := range []string{"SHA256", "SHA512", "SHA1"} {
		doc := gpg(t, home, trickyBody, "--digest-algo", digest, "--clearsign")
		sig := gpg(t, home, trickyBody, "--digest-algo", digest, "--armor", "--detach-sign")
		g := runGPGV(t, pub, writeFile(t, t.TempDir(), "InRelease", doc))
		if !g.ok {
			t.Fatalf("gpgv refuses gpg's %s output: %s", digest, g.status)
		}
		body, _, errC := VerifyClearsigned(doc, kr, now)
		_, errD := VerifyDetached(trickyBody, sig, kr, now)
		if digest == "SHA1" {
			wantErr(t, errC, ErrBadSignature, "weak digest SHA1")
			wantErr(t, errD, ErrBadSignature, "weak digest SHA1")
			continue
		}
		if errC != nil || errD != nil {
			t.Fatalf("%s: clearsigned: %v; detached: %v", digest, errC, errD)
		}
		if !bytes.Equal(body, trickySigned) {
			t.Errorf("%s: body of gpg's clearsigned text:\n%q\nwant\n%q", digest, body, trickySigned)
		}
	}
}

func TestExpiredKey(t *testing.T) {
	k := testKey(t, 2, func(c *packet.Config) { c.KeyLifetimeSecs = 3600 })
	kr := keyringOf(t, "expiring", k)
	doc := mustClearSign(t, k, release, t0.Add(10*time.Minute))
	if _, _, err := VerifyClearsigned(doc, kr, t0.Add(30*time.Minute)); err != nil {
		t.Fatalf("before expiry: %v", err)
	}
	_, res, err := VerifyClearsigned(doc, kr, t0.Add(2*time.Hour))
	wantErr(t, err, ErrBadSignature, "expired")
	if len(res.Bad) != 1 || res.Bad[0].Fingerprint != k.Fingerprint() {
		t.Errorf("bad = %+v", res.Bad)
	}
	// Signing with an expired key is refused too.
	if _, err := k.ClearSign(release, t0.Add(2*time.Hour)); err == nil {
		t.Error("signed with an expired key")
	}
}

func TestRevokedKey(t *testing.T) {
	k := testKey(t, 3, nil)
	doc := mustClearSign(t, k, release, t0.Add(time.Minute))
	if err := k.entity.RevokeKey(packet.KeyRetired, "retired", &packet.Config{Time: func() time.Time { return t0.Add(time.Hour) }}); err != nil {
		t.Fatal(err)
	}
	kr := keyringOf(t, "revoked", k)
	_, _, err := VerifyClearsigned(doc, kr, t0.Add(2*time.Hour))
	wantErr(t, err, ErrBadSignature, "revoked")
}

// A signing subkey is accepted and reported; revoked it fails; a subkey
// without the signing flag fails even though its signature is valid.
func TestSubkeys(t *testing.T) {
	k := testKey(t, 4, nil)
	cfg := &packet.Config{Time: func() time.Time { return t0 }, DefaultHash: crypto.SHA512,
		Algorithm: packet.PubKeyAlgoEdDSA, Curve: packet.Curve25519}
	if err := k.entity.AddSigningSubkey(cfg); err != nil {
		t.Fatal(err)
	}
	sub := k.entity.Subkeys[0]
	doc := mustClearSign(t, k, release, t0.Add(time.Minute))
	_, res, err := VerifyClearsigned(doc, keyringOf(t, "sub", k), t0.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	g := res.Good[0]
	if g.Fingerprint != k.Fingerprint() || g.SubkeyFingerprint != fpr(sub.PublicKey.Fingerprint) || g.KeyID != sub.PublicKey.KeyIdString() {
		t.Errorf("good = %+v", g)
	}
	if err := k.entity.RevokeSubkey(&k.entity.Subkeys[0], packet.KeyRetired, "", &packet.Config{Time: func() time.Time { return t0.Add(30 * time.Minute) }}); err != nil {
		t.Fatal(err)
	}
	_, _, err = VerifyClearsigned(doc, keyringOf(t, "sub", k), t0.Add(time.Hour))
	wantErr(t, err, ErrBadSignature, "subkey "+fpr(sub.PublicKey.Fingerprint)+" is revoked")

	// An RSA key's encryption subkey can compute a signature, but it is not
	// flagged for signing: refused.
	rsaCfg := &packet.Config{Time: func() time.Time { return t0 }, Algorithm: packet.PubKeyAlgoRSA, RSABits: 2048,
		Rand: rand.NewChaCha8([32]byte{9})}
	e, err := openpgp.NewEntity("Enc", "", "enc@example.org", rsaCfg)
	if err != nil {
		t.Fatal(err)
	}
	enc := e.Subkeys[0]
	s := &packet.Signature{SigType: packet.SigTypeBinary, PubKeyAlgo: packet.PubKeyAlgoRSA, Hash: crypto.SHA256,
		CreationTime: t0.Add(time.Minute), IssuerKeyId: &enc.PublicKey.KeyId}
	h, _ := s.PrepareSign(nil)
	h.Write(release)
	if err := s.Sign(h, enc.PrivateKey, &packet.Config{Time: func() time.Time { return t0.Add(time.Minute) }}); err != nil {
		t.Fatal(err)
	}
	var sig bytes.Buffer
	if err := s.Serialize(&sig); err != nil {
		t.Fatal(err)
	}
	var pub bytes.Buffer
	e.Serialize(&pub)
	kr, err := ReadKeyring(&pub, "rsa-enc")
	if err != nil {
		t.Fatal(err)
	}
	_, err = VerifyDetached(release, sig.Bytes(), kr, t0.Add(time.Hour))
	wantErr(t, err, ErrBadSignature, "not a signing subkey")
}

func TestFutureSignature(t *testing.T) {
	k := testKey(t, 5, nil)
	kr := keyringOf(t, "k", k)
	sig, err := k.DetachSign(release, false, t0.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := VerifyDetached(release, sig, kr, t0.Add(time.Hour-MaxClockSkew+time.Second)); err != nil {
		t.Errorf("within skew: %v", err)
	}
	_, err = VerifyDetached(release, sig, kr, t0)
	wantErr(t, err, ErrBadSignature, "in the future")
}

// APT's rule with two signers: both known and good passes; one known and
// corrupted fails even beside a good one; a corrupted one by an unknown key
// is ignored. gpgv confirms the two-signature document is well formed.
func TestTwoSigners(t *testing.T) {
	k1, k2 := testKey(t, 6, nil), testKey(t, 7, nil)
	now := t0.Add(time.Hour)
	d1 := mustClearSign(t, k1, release, t0.Add(time.Minute))
	d2 := mustClearSign(t, k2, release, t0.Add(time.Minute))
	p1, p2 := sigPackets(t, d1), sigPackets(t, d2)
	both := withSignatures(t, d1, append(bytes.Clone(p1), p2...))
	kr12 := keyringOf(t, "k1+k2", k1, k2)

	_, res, err := VerifyClearsigned(both, kr12, now)
	if err != nil {
		t.Fatal(err)
	}
	if got := res.SignedBy(); !slices.Equal(got, []string{k1.Fingerprint(), k2.Fingerprint()}) {
		t.Errorf("signers %v", got)
	}
	// gpgv (real clock; t0 lies in the past) agrees on both documents below.
	_, errGPGV := exec.LookPath("gpgv")
	dir := t.TempDir()
	keys := publicFile(t, dir, "k.gpg", k1, k2)
	if errGPGV == nil {
		g := runGPGV(t, keys, writeFile(t, dir, "both", both))
		if !g.ok || !slices.Equal(g.primary, []string{k1.Fingerprint(), k2.Fingerprint()}) {
			t.Errorf("gpgv on two signatures:\n%s", g.status)
		}
	}

	corrupt := bytes.Clone(p2)
	corrupt[len(corrupt)-3] ^= 0x01 // inside the signature value
	tampered := withSignatures(t, d1, append(bytes.Clone(p1), corrupt...))
	_, res, err = VerifyClearsigned(tampered, kr12, now)
	wantErr(t, err, ErrBadSignature, k2.Fingerprint()[24:])
	if len(res.Good) != 1 || len(res.Bad) != 1 {
		t.Errorf("good=%d bad=%d", len(res.Good), len(res.Bad))
	}
	if errGPGV == nil {
		if g := runGPGV(t, keys, writeFile(t, dir, "tampered", tampered)); len(g.primary) != 1 || g.bad != 1 {
			t.Errorf("gpgv on one good, one corrupted signature:\n%s", g.status)
		}
	}
	// The same corrupted signature by a key outside the keyring is ignored.
	_, res, err = VerifyClearsigned(tampered, keyringOf(t, "k1", k1), now)
	if err != nil || len(res.Unknown) != 1 {
		t.Errorf("unknown corrupted signer: err=%v unknown=%d", err, len(res.Unknown))
	}
	// Truncated second packet: malformed, counts as bad.
	_, _, err = VerifyClearsigned(withSignatures(t, d1, append(bytes.Clone(p1), p2[:len(p2)-10]...)), kr12, now)
	wantErr(t, err, ErrBadSignature, "signature packet 2")
}

func TestDetachedStructure(t *testing.T) {
	k := testKey(t, 8, nil)
	kr := keyringOf(t, "k", k)
	now := t0.Add(time.Hour)
	asc, err := k.DetachSign(release, true, t0.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	bin, err := k.DetachSign(release, false, t0.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		sig  []byte
		kind error
	}{
		"text after armor": {append(bytes.Clone(asc), "junk\n"...), ErrMalformed},
		"two armor blocks": {append(bytes.Clone(asc), asc...), ErrMalformed},
		"wrong block type": {bytes.ReplaceAll(asc, []byte("PGP SIGNATURE"), []byte("PGP MESSAGE")), ErrMalformed},
		"no signature":     {nil, ErrNoGoodSignature},
		"truncated binary": {bin[:len(bin)-5], ErrBadSignature},
		"garbage":          {[]byte("not a signature"), ErrBadSignature},
	} {
		if _, err := VerifyDetached(release, c.sig, kr, now); !errors.Is(err, c.kind) {
			t.Errorf("%s: err = %v, want %v", name, err, c.kind)
		}
	}
	// A text-mode detached signature hashes canonical (CRLF) text.
	var txt bytes.Buffer
	if err := openpgp.DetachSignText(&txt, k.entity, bytes.NewReader(release), &packet.Config{Time: func() time.Time { return t0.Add(time.Minute) }}); err != nil {
		t.Fatal(err)
	}
	if _, err := VerifyDetached(release, txt.Bytes(), kr, now); err != nil {
		t.Errorf("text-mode signature: %v", err)
	}
	if _, err := VerifyDetached(bytes.ReplaceAll(release, []byte("\n"), []byte("\r\n")), txt.Bytes(), kr, now); err != nil {
		t.Errorf("text-mode signature over CRLF text: %v", err)
	}
}

func TestKeyringErrors(t *testing.T) {
	for name, data := range map[string]string{
		"empty":       "",
		"garbage":     "this is not a keyring",
		"armor junk":  "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n!!!!\n-----END PGP PUBLIC KEY BLOCK-----\n",
		"wrong armor": "-----BEGIN PGP MESSAGE-----\n\nwcBMA\n-----END PGP MESSAGE-----\n",
		"only a sig":  string(mustDetach(t)),
		"truncated":   string(mustPub(t)[:40]),
	} {
		_, err := ReadKeyring(strings.NewReader(data), "/etc/example/"+name+".gpg")
		if err == nil {
			t.Errorf("%s: accepted", name)
		} else if !strings.Contains(err.Error(), "/etc/example/"+name+".gpg") {
			t.Errorf("%s: error does not name the file: %v", name, err)
		}
	}
	if _, err := LoadKeyring("/nonexistent/keyring.gpg"); err == nil || !strings.Contains(err.Error(), "/nonexistent/keyring.gpg") {
		t.Errorf("missing file: %v", err)
	}
	// Several armored blocks in one .asc, and concatenated binary keys.
	k1, k2, k3 := testKey(t, 10, nil), testKey(t, 11, nil), testKey(t, 15, nil)
	a1, _ := k1.PublicKey(true)
	a2, _ := k2.PublicKey(true)
	a3, _ := k3.PublicKey(true)
	kr, err := ReadKeyring(bytes.NewReader(slices.Concat(a1, a2, []byte("\n"), a3)), "three.asc")
	if err != nil || !slices.Equal(kr.Fingerprints(), []string{k1.Fingerprint(), k2.Fingerprint(), k3.Fingerprint()}) {
		t.Fatalf("three armored blocks: %v %v", err, kr.Fingerprints())
	}
	if _, err := kr.Filter("0000"); err == nil {
		t.Error("Filter with unknown fingerprint succeeded")
	}
}

func mustPub(t *testing.T) []byte {
	pub, err := testKey(t, 12, nil).PublicKey(false)
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

func mustDetach(t *testing.T) []byte {
	sig, err := testKey(t, 13, nil).DetachSign(release, false, t0.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

// Signatures over MD5 and RIPEMD160 cannot even be parsed (go-crypto drops
// those algorithms); such a packet counts as bad, never as absent. SHA-1 is
// refused by name.
func TestWeakDigestIDs(t *testing.T) {
	k := testKey(t, 14, nil)
	kr := keyringOf(t, "k", k)
	sig, err := k.DetachSign(release, false, t0.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	// New-format packet header (tag byte, one length byte), then version,
	// type, public-key algorithm, hash algorithm.
	if sig[0] != 0xc2 || sig[2] != 4 || sig[5] != 10 {
		t.Fatalf("unexpected packet layout % x", sig[:6])
	}
	for id, want := range map[byte]string{1: "hash function 1", 3: "hash function 3", 2: "weak digest SHA1"} {
		bad := bytes.Clone(sig)
		bad[5] = id
		_, err := VerifyDetached(release, bad, kr, t0.Add(time.Hour))
		wantErr(t, err, ErrBadSignature, want)
	}
}
