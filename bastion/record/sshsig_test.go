package record

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

func needTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s not installed", name)
	}
	return p
}

// genKey creates a recording key with GenerateSigningKey and loads it.
func genKey(t testing.TB, dir string) (ssh.Signer, string) {
	t.Helper()
	path := filepath.Join(dir, "recording_key")
	if err := GenerateSigningKey(path); err != nil {
		t.Fatal(err)
	}
	s, err := LoadSigningKey(path)
	if err != nil {
		t.Fatal(err)
	}
	return s, path
}

func writeAllowedSigners(t *testing.T, dir string, pub ssh.PublicKey) string {
	t.Helper()
	p := filepath.Join(dir, "allowed_signers")
	if err := os.WriteFile(p, []byte(AllowedSigners(pub)), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// sshKeygenVerify runs the real `ssh-keygen -Y verify` and returns its
// combined output and whether it accepted.
func sshKeygenVerify(t *testing.T, allowed, namespace, sigPath string, data []byte) (string, bool) {
	t.Helper()
	cmd := exec.Command(needTool(t, "ssh-keygen"), "-Y", "verify", "-f", allowed, "-I", "gatehouse", "-n", namespace, "-s", sigPath)
	cmd.Stdin = bytes.NewReader(data)
	out, err := cmd.CombinedOutput()
	return string(out), err == nil
}

func TestSSHSIGAcceptedBySSHKeygen(t *testing.T) {
	needTool(t, "ssh-keygen")
	dir := t.TempDir()
	signer, _ := genKey(t, dir)
	allowed := writeAllowedSigners(t, dir, signer.PublicKey())
	data := []byte("{\"id\":\"x\"}\n")
	sig, err := SignSSHSIG(signer, RecordingNamespace, data)
	if err != nil {
		t.Fatal(err)
	}
	sigPath := filepath.Join(dir, "data.sig")
	os.WriteFile(sigPath, sig, 0o644)
	if out, ok := sshKeygenVerify(t, allowed, RecordingNamespace, sigPath, data); !ok {
		t.Fatalf("ssh-keygen -Y verify rejected our signature: %s\n%s", out, sig)
	}
	// The same check must fail for other data and another namespace, or the
	// test above proves nothing.
	if out, ok := sshKeygenVerify(t, allowed, RecordingNamespace, sigPath, append(data, 'x')); ok {
		t.Fatalf("ssh-keygen accepted tampered data: %s", out)
	}
	if out, ok := sshKeygenVerify(t, allowed, "file", sigPath, data); ok {
		t.Fatalf("ssh-keygen accepted the wrong namespace: %s", out)
	}
	if err := VerifySSHSIG(signer.PublicKey(), RecordingNamespace, data, sig); err != nil {
		t.Fatalf("own signature: %v", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(sig)), "\n") {
		if len(line) > 70 {
			t.Errorf("armor line longer than 70: %q", line)
		}
	}
}

func TestSSHSIGVerifiesSSHKeygenSignatures(t *testing.T) {
	keygen := needTool(t, "ssh-keygen")
	dir := t.TempDir()
	data := []byte("manifest bytes \x00\xff\n")
	dataPath := filepath.Join(dir, "data")
	os.WriteFile(dataPath, data, 0o600)
	for _, kt := range [][]string{{"-t", "ed25519"}, {"-t", "rsa", "-b", "3072"}, {"-t", "ecdsa", "-b", "256"}} {
		t.Run(kt[1], func(t *testing.T) {
			key := filepath.Join(dir, "k_"+kt[1])
			if out, err := exec.Command(keygen, append(append([]string{"-q", "-N", "", "-f", key}, kt...), "-C", "t")...).CombinedOutput(); err != nil {
				t.Fatalf("ssh-keygen: %v %s", err, out)
			}
			os.Remove(dataPath + ".sig")
			if out, err := exec.Command(keygen, "-Y", "sign", "-f", key, "-n", RecordingNamespace, dataPath).CombinedOutput(); err != nil {
				t.Fatalf("ssh-keygen -Y sign: %v %s", err, out)
			}
			sig, err := os.ReadFile(dataPath + ".sig")
			if err != nil {
				t.Fatal(err)
			}
			pubBytes, _ := os.ReadFile(key + ".pub")
			pub, _, _, _, err := ssh.ParseAuthorizedKey(pubBytes)
			if err != nil {
				t.Fatal(err)
			}
			if err := VerifySSHSIG(pub, RecordingNamespace, data, sig); err != nil {
				t.Fatalf("VerifySSHSIG of ssh-keygen signature: %v", err)
			}
			if err := VerifySSHSIG(pub, RecordingNamespace, append(data, 1), sig); err == nil {
				t.Error("tampered data verified")
			}
			if err := VerifySSHSIG(pub, "other", data, sig); err == nil || !strings.Contains(err.Error(), "namespace") {
				t.Errorf("wrong namespace: %v", err)
			}
			other, _ := genKey(t, t.TempDir())
			if err := VerifySSHSIG(other.PublicKey(), RecordingNamespace, data, sig); err == nil {
				t.Error("signature verified against another key")
			}
			// Our key loader reads ssh-keygen's key files, and RSA signs with
			// rsa-sha2-512 so ssh-keygen accepts it.
			os.Chmod(key, 0o600)
			s, err := LoadSigningKey(key)
			if err != nil {
				t.Fatal(err)
			}
			ours, err := SignSSHSIG(s, RecordingNamespace, data)
			if err != nil {
				t.Fatal(err)
			}
			sp := filepath.Join(dir, "ours.sig")
			os.WriteFile(sp, ours, 0o600)
			if out, ok := sshKeygenVerify(t, writeAllowedSigners(t, dir, pub), RecordingNamespace, sp, data); !ok {
				t.Fatalf("ssh-keygen rejected our %s signature: %s", kt[1], out)
			}
		})
	}
}

func TestSigningKeyFiles(t *testing.T) {
	dir := t.TempDir()
	_, path := genKey(t, dir)
	st, _ := os.Stat(path)
	if st.Mode().Perm() != 0o600 {
		t.Errorf("key mode %v", st.Mode().Perm())
	}
	if err := GenerateSigningKey(path); !errors.Is(err, fs.ErrExist) {
		t.Errorf("overwrite: %v", err)
	}
	os.Chmod(path, 0o640)
	_, err := LoadSigningKey(path)
	if err == nil || !strings.Contains(err.Error(), "chmod 600 "+path) {
		t.Errorf("group-readable key: %v", err)
	}
	// ssh-keygen reads our key file and derives the same public key.
	if kg, err := exec.LookPath("ssh-keygen"); err == nil {
		os.Chmod(path, 0o600)
		out, err := exec.Command(kg, "-y", "-f", path).Output()
		if err != nil {
			t.Fatalf("ssh-keygen -y: %v", err)
		}
		pubFile, _ := os.ReadFile(path + ".pub")
		if f := strings.Fields(string(out)); len(f) < 2 || !strings.Contains(string(pubFile), f[1]) {
			t.Errorf("ssh-keygen -y = %q, .pub = %q", out, pubFile)
		}
	}
}

func TestParseSSHSIGRejects(t *testing.T) {
	signer, _ := genKey(t, t.TempDir())
	good, _ := SignSSHSIG(signer, RecordingNamespace, []byte("x"))
	cases := map[string][]byte{
		"empty":       nil,
		"truncated":   good[:len(good)/2],
		"overlap":     []byte(sshsigBegin + "END SSH SIGNATURE-----"),
		"bad base64":  []byte(sshsigBegin + "\n!!!!\n" + sshsigEnd),
		"no magic":    armorSSHSIG([]byte("XXXXXX")),
		"bad version": armorSSHSIG([]byte("SSHSIG\x00\x00\x00\x02")),
		"huge len":    armorSSHSIG([]byte("SSHSIG\x00\x00\x00\x01\xff\xff\xff\xff")),
		"oversized":   bytes.Repeat([]byte("A"), maxSSHSIGArmored+1),
	}
	for name, in := range cases {
		if err := VerifySSHSIG(signer.PublicKey(), RecordingNamespace, []byte("x"), in); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func FuzzSSHSIG(f *testing.F) {
	signer, _ := genKey(f, f.TempDir())
	good, _ := SignSSHSIG(signer, RecordingNamespace, []byte("data"))
	f.Add(good)
	f.Add(good[:100])
	f.Add([]byte(sshsigBegin + "\nU1NIU0lH\n" + sshsigEnd))
	f.Add(armorSSHSIG([]byte("SSHSIG\x00\x00\x00\x01\x00\x00\x00\x00")))
	pub := signer.PublicKey()
	f.Fuzz(func(t *testing.T, armored []byte) {
		sig, err := parseSSHSIG(armored)
		if err == nil && sig.PublicKey == nil {
			t.Fatal("parsed without a key")
		}
		err = VerifySSHSIG(pub, RecordingNamespace, []byte("data"), armored)
		if err == nil && !bytes.Contains(armored, []byte(sshsigBegin)) {
			t.Fatal("verified without armor")
		}
	})
}
