package pgp

import (
	"bytes"
	"crypto"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

const debianKeyring = "/usr/share/keyrings/debian-archive-keyring.gpg"

// t0 is a fixed time for keys and signatures made in tests.
var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func needTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s not installed (Debian packages gpgv, sqv, gnupg)", name)
	}
	return p
}

func needFile(t testing.TB, path string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		t.Skipf("%s absent (Debian package debian-archive-keyring): %v", path, err)
	}
}

func writeFile(t testing.TB, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// gpgvResult is what real gpgv reported.
type gpgvResult struct {
	ok      bool
	primary []string // VALIDSIG primary key fingerprints, in order
	signing []string // VALIDSIG signing (sub)key fingerprints
	keyIDs  []string // GOODSIG/BADSIG/ERRSIG/EXPKEYSIG key ids
	pkAlgo  []string // VALIDSIG public key algorithm per signature
	bad     int      // BADSIG, EXPKEYSIG, REVKEYSIG count: APT fails on these
	status  string
}

// runGPGV runs the real gpgv with a keyring on files, as apt does.
func runGPGV(t testing.TB, keyring string, files ...string) gpgvResult {
	t.Helper()
	needTool(t, "gpgv")
	home := t.TempDir()
	args := append([]string{"--homedir", home, "--status-fd", "1", "--keyring", keyring}, files...)
	cmd := exec.Command("gpgv", args...)
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("gpgv: %v", err)
	}
	r := gpgvResult{ok: err == nil, status: stdout.String()}
	for _, line := range strings.Split(stdout.String(), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 || f[0] != "[GNUPG:]" {
			continue
		}
		switch f[1] {
		case "VALIDSIG":
			r.signing = append(r.signing, f[2])
			r.primary = append(r.primary, f[len(f)-1])
			r.pkAlgo = append(r.pkAlgo, f[8])
		case "GOODSIG", "BADSIG", "ERRSIG", "EXPKEYSIG", "REVKEYSIG":
			r.keyIDs = append(r.keyIDs, f[2])
			if f[1] != "GOODSIG" && f[1] != "ERRSIG" {
				r.bad++
			}
		}
	}
	return r
}

// runSQV runs the real sqv (the verifier of apt 3) on a detached signature.
func runSQV(t testing.TB, keyring, sig, data string) (fingerprints []string, ok bool, out string) {
	t.Helper()
	needTool(t, "sqv")
	cmd := exec.Command("sqv", "--keyring", keyring, sig, data)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return strings.Fields(stdout.String()), err == nil, stdout.String() + stderr.String()
}

// gpg runs the real gpg in an isolated home directory.
func gpg(t testing.TB, home string, stdin []byte, args ...string) []byte {
	t.Helper()
	needTool(t, "gpg")
	cmd := exec.Command("gpg", append([]string{"--homedir", home, "--batch", "--no-tty", "--pinentry-mode", "loopback", "--passphrase", ""}, args...)...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("gpg %v: %v\n%s", args, err, stderr.String())
	}
	return out
}

// gpgHome makes a private GNUPGHOME (mode 0700, as gpg insists).
func gpgHome(t testing.TB) string {
	t.Helper()
	home := t.TempDir()
	if err := os.Chmod(home, 0o700); err != nil {
		t.Fatal(err)
	}
	return home
}

// testKey makes a deterministic Ed25519 key (seeded randomness), with
// options applied to the generation config, e.g. a key lifetime.
func testKey(t testing.TB, seed uint64, mod func(*packet.Config)) *SigningKey {
	t.Helper()
	cfg := &packet.Config{
		Rand:        rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), 1}),
		DefaultHash: crypto.SHA512,
		Time:        func() time.Time { return t0 },
		Algorithm:   packet.PubKeyAlgoEdDSA,
		Curve:       packet.Curve25519,
	}
	if mod != nil {
		mod(cfg)
	}
	e, err := openpgp.NewEntity("Test Key", "", "test@example.org", cfg)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Algorithm == packet.PubKeyAlgoEdDSA {
		e.Subkeys = nil
	}
	return &SigningKey{entity: e}
}

func keyringOf(t testing.TB, name string, keys ...*SigningKey) *Keyring {
	t.Helper()
	var all []byte
	for _, k := range keys {
		pub, err := k.PublicKey(false)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, pub...)
	}
	kr, err := ReadKeyring(bytes.NewReader(all), name)
	if err != nil {
		t.Fatal(err)
	}
	return kr
}

// publicFile writes the binary public keys of keys to dir/name for gpgv/sqv.
func publicFile(t testing.TB, dir, name string, keys ...*SigningKey) string {
	t.Helper()
	var all []byte
	for _, k := range keys {
		pub, err := k.PublicKey(false)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, pub...)
	}
	return writeFile(t, dir, name, all)
}

// sigPackets returns the raw signature packets of a clearsigned document's
// armored signature block.
func sigPackets(t testing.TB, doc []byte) []byte {
	t.Helper()
	i := sigStart(t, doc)
	block, err := armor.Decode(bytes.NewReader(doc[i:]))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(block.Body); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// withSignatures replaces the signature block of doc by the given packets.
func withSignatures(t testing.TB, doc, packets []byte) []byte {
	t.Helper()
	i := sigStart(t, doc)
	var out bytes.Buffer
	out.Write(doc[:i])
	w, err := armor.Encode(&out, "PGP SIGNATURE", nil)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(packets)
	w.Close()
	out.WriteByte('\n')
	return out.Bytes()
}

func mustClearSign(t testing.TB, k *SigningKey, body []byte, now time.Time) []byte {
	t.Helper()
	doc, err := k.ClearSign(body, now)
	if err != nil {
		t.Fatal(err)
	}
	return doc
}

// sigStart finds the signature armor of a clearsigned document (a body line
// may contain the marker dash-escaped, so search for a whole line).
func sigStart(t testing.TB, doc []byte) int {
	t.Helper()
	i := bytes.Index(doc, []byte("\n-----BEGIN PGP SIGNATURE-----\n"))
	if i < 0 {
		t.Fatalf("no signature block in %q", doc)
	}
	return i + 1
}
