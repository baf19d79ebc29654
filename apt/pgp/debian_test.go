package pgp

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

const bookwormInRelease = "testdata/bookworm_InRelease"

// bookwormNow is a verification time just after the checked-in InRelease was
// signed, so the test does not depend on today's date.
func bookwormNow(t *testing.T, data []byte) time.Time {
	t.Helper()
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "Date: "); ok {
			d, err := time.Parse(time.RFC1123, strings.Replace(v, "UTC", "GMT", 1))
			if err != nil {
				t.Fatal(err)
			}
			return d.Add(time.Hour)
		}
	}
	t.Fatal("no Date in InRelease")
	return time.Time{}
}

func loadBookworm(t *testing.T) ([]byte, *Keyring, time.Time) {
	t.Helper()
	needFile(t, debianKeyring)
	data, err := os.ReadFile(bookwormInRelease)
	if err != nil {
		t.Fatal(err)
	}
	kr, err := LoadKeyring(debianKeyring)
	if err != nil {
		t.Fatal(err)
	}
	return data, kr, bookwormNow(t, data)
}

// The real bookworm InRelease verifies against the real Debian keyring, and
// the signers we report are exactly those real gpgv reports.
func TestBookwormInRelease(t *testing.T) {
	data, kr, now := loadBookworm(t)
	body, res, err := VerifyClearsigned(data, kr, now)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range res.Good {
		t.Logf("good: %s sub=%s key-id=%s %s %s (%s)", s.Fingerprint, s.SubkeyFingerprint, s.KeyID, s.Hash, s.Created.Format(time.RFC3339), s.UserID)
	}
	if len(res.Bad) != 0 || len(res.Unknown) != 0 {
		t.Errorf("bad=%v unknown=%v", res.Bad, res.Unknown)
	}

	dir := t.TempDir()
	out := filepath.Join(dir, "body")
	g := runGPGV(t, debianKeyring, "--output", out, bookwormInRelease)
	if !g.ok {
		t.Fatalf("gpgv refuses the fixture:\n%s", g.status)
	}
	want := slices.Clone(g.primary)
	got := res.SignedBy()
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("signers = %v, gpgv VALIDSIG primary fingerprints = %v", got, want)
	}
	var gotSigning []string
	for _, s := range res.Good {
		if s.SubkeyFingerprint != "" {
			gotSigning = append(gotSigning, s.SubkeyFingerprint)
		} else {
			gotSigning = append(gotSigning, s.Fingerprint)
		}
	}
	wantSigning := slices.Clone(g.signing)
	slices.Sort(gotSigning)
	slices.Sort(wantSigning)
	if !slices.Equal(gotSigning, wantSigning) {
		t.Errorf("signing keys = %v, gpgv = %v", gotSigning, wantSigning)
	}
	// Debian's stable release key is Ed25519 (algorithm 22) and must be
	// among the signers; x/crypto/openpgp-based tools failed exactly here.
	if !slices.Contains(g.pkAlgo, "22") {
		t.Errorf("gpgv saw no EdDSA signature: %v", g.pkAlgo)
	}
	// The body is exactly what gpgv outputs as the signed text.
	gbody, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(body, gbody) {
		t.Errorf("body differs from gpgv --output (%d vs %d bytes)", len(body), len(gbody))
	}
	if !bytes.HasPrefix(body, []byte("Origin: Debian\n")) {
		t.Errorf("body starts %q", body[:40])
	}
}

// One changed byte of the signed text fails every signature, as with gpgv.
func TestBookwormTampered(t *testing.T) {
	data, kr, now := loadBookworm(t)
	i := bytes.Index(data, []byte("Codename: bookworm"))
	bad := bytes.Clone(data)
	bad[i+len("Codename: bookwor")] = 'n'
	_, res, err := VerifyClearsigned(bad, kr, now)
	if !errors.Is(err, ErrBadSignature) {
		t.Fatalf("err = %v, want ErrBadSignature", err)
	}
	if len(res.Good) != 0 || len(res.Bad) == 0 {
		t.Errorf("good=%d bad=%d", len(res.Good), len(res.Bad))
	}
	t.Log(err)
	if g := runGPGV(t, debianKeyring, writeFile(t, t.TempDir(), "InRelease", bad)); g.ok {
		t.Error("gpgv accepted the tampered file: the oracle disagrees")
	}
}

// With only the Ed25519 release key, one good signature suffices and the
// RSA signatures are ignored as unknown.
func TestBookwormEd25519Only(t *testing.T) {
	data, full, now := loadBookworm(t)
	g := runGPGV(t, debianKeyring, bookwormInRelease)
	var ed string
	for i, algo := range g.pkAlgo {
		if algo == "22" {
			ed = g.primary[i]
		}
	}
	if ed == "" {
		t.Fatal("gpgv reports no Ed25519 signer")
	}
	// Extract the key with real gpg, as an admin would.
	home := gpgHome(t)
	exported := gpg(t, home, nil, "--no-default-keyring", "--keyring", debianKeyring, "--export", ed)
	path := writeFile(t, t.TempDir(), "ed25519.gpg", exported)
	kr, err := LoadKeyring(path)
	if err != nil {
		t.Fatal(err)
	}
	if fps := kr.Fingerprints(); !slices.Equal(fps, []string{ed}) {
		t.Fatalf("exported keyring holds %v", fps)
	}
	for name, kr := range map[string]*Keyring{"gpg-export": kr, "Filter": mustFilter(t, full, ed)} {
		_, res, err := VerifyClearsigned(data, kr, now)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got := res.SignedBy(); !slices.Equal(got, []string{ed}) {
			t.Errorf("%s: signed by %v, want %v", name, got, ed)
		}
		if len(res.Unknown) != len(g.primary)-1 {
			t.Errorf("%s: %d unknown signatures, want %d", name, len(res.Unknown), len(g.primary)-1)
		}
	}
	// gpgv exits non-zero because of the unknown RSA signers; APT reads its
	// status lines instead: one VALIDSIG and no BADSIG is a pass.
	if g := runGPGV(t, path, bookwormInRelease); !slices.Equal(g.primary, []string{ed}) || g.bad != 0 {
		t.Errorf("gpgv status with the Ed25519 key alone disagrees:\n%s", g.status)
	}
}

func mustFilter(t *testing.T, kr *Keyring, fps ...string) *Keyring {
	t.Helper()
	f, err := kr.Filter(fps...)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// A keyring with none of the signers fails and names the key ids seen.
func TestBookwormNoSignerKnown(t *testing.T) {
	data, _, now := loadBookworm(t)
	k, err := GenerateSigningKey("Other", "other@example.org", "", now)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := k.PublicKey(true)
	path := writeFile(t, t.TempDir(), "other.asc", pub)
	kr, err := LoadKeyring(path)
	if err != nil {
		t.Fatal(err)
	}
	_, res, err := VerifyClearsigned(data, kr, now)
	if !errors.Is(err, ErrNoGoodSignature) {
		t.Fatalf("err = %v, want ErrNoGoodSignature", err)
	}
	msg := err.Error()
	t.Log(msg)
	g := runGPGV(t, debianKeyring, bookwormInRelease)
	for _, id := range g.keyIDs {
		if !strings.Contains(msg, id) {
			t.Errorf("message does not name key id %s seen by gpgv", id)
		}
	}
	if !strings.Contains(msg, path) || !strings.Contains(msg, "Signed-By") {
		t.Errorf("message lacks keyring path or advice: %s", msg)
	}
	if len(res.Unknown) != len(g.keyIDs) {
		t.Errorf("unknown = %d, gpgv saw %d", len(res.Unknown), len(g.keyIDs))
	}
}

// The Debian keyring loads in binary and armored form with the primary
// fingerprints real gpg lists.
func TestDebianKeyring(t *testing.T) {
	needFile(t, debianKeyring)
	kr, err := LoadKeyring(debianKeyring)
	if err != nil {
		t.Fatal(err)
	}
	home := gpgHome(t)
	var want []string
	expectFpr := false
	for _, line := range strings.Split(string(gpg(t, home, nil, "--with-colons", "--show-keys", debianKeyring)), "\n") {
		f := strings.Split(line, ":")
		switch {
		case f[0] == "pub":
			expectFpr = true
		case f[0] == "sub":
			expectFpr = false
		case f[0] == "fpr" && expectFpr:
			want = append(want, f[9])
			expectFpr = false
		}
	}
	if got := kr.Fingerprints(); !slices.Equal(got, want) {
		t.Errorf("fingerprints\n got %v\nwant %v (gpg --show-keys)", got, want)
	}
	if s := kr.Skipped(); len(s) != 0 {
		t.Errorf("skipped keys: %v", s)
	}
	armored := gpg(t, home, nil, "--no-default-keyring", "--keyring", debianKeyring, "--armor", "--export")
	path := writeFile(t, t.TempDir(), "debian.asc", armored)
	akr, err := LoadKeyring(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := akr.Fingerprints(); !slices.Equal(got, want) {
		t.Errorf("armored fingerprints %v", got)
	}
}
