package certauth

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

// krlCorpus is a set of keys and certificates made by ssh-keygen, to be
// checked against KRLs by both ssh-keygen -Q and this package.
type krlCorpus struct {
	*fixture
	caA, caB string
	users    []string // u0..u5
	queries  []string // certificate and public key files
}

var corpusSerials = []uint64{0, 1, 4, 5, 6, 9, 10, 15, 20, 21, 99, 100, 101, 102, 103, 104, 105, 106, 107, 108, 109, 110, 111,
	999, 1000, 1500, 2000, 2001, 1 << 40, 1<<64 - 2, 1<<64 - 1}

func newKRLCorpus(t *testing.T) *krlCorpus {
	f := newFixture(t)
	c := &krlCorpus{fixture: f}
	c.caA = f.key("caA", "ed25519", 0)
	c.caB = f.key("caB", "ecdsa", 256)
	for i := range 6 {
		c.users = append(c.users, f.key("u"+strconv.Itoa(i), "ed25519", 0))
	}
	for _, ca := range []string{c.caA, c.caB} {
		for _, s := range corpusSerials {
			id := "kid-" + strconv.FormatUint(s, 10)
			c.queries = append(c.queries, f.cert(ca, c.users[0], "-I", id, "-n", "alice", "-V", "-1m:+1h", "-z", strconv.FormatUint(s, 10)))
		}
		for _, id := range []string{"revoked-id", "Revoked-ID", "revoked-id "} {
			c.queries = append(c.queries, f.cert(ca, c.users[1], "-I", id, "-n", "alice", "-V", "-1m:+1h", "-z", "7"))
		}
		for _, u := range c.users[1:] {
			c.queries = append(c.queries, f.cert(ca, u, "-I", "plain-"+filepath.Base(u), "-n", "alice", "-V", "-1m:+1h", "-z", "3"))
		}
	}
	for _, u := range append(append([]string{}, c.users...), c.caA, c.caB) {
		c.queries = append(c.queries, u+".pub")
	}
	return c
}

// oracle reports whether ssh-keygen -Q considers the key in path revoked.
func (c *krlCorpus) oracle(krl, path string) bool {
	c.t.Helper()
	out, err := c.keygenErr("-Q", "-f", krl, path)
	revoked := strings.Contains(out, "REVOKED")
	if err != nil && !revoked {
		c.t.Fatalf("ssh-keygen -Q -f %s %s: %v\n%s", krl, path, err, out)
	}
	if (err != nil) != revoked {
		c.t.Fatalf("ssh-keygen -Q exit status (%v) disagrees with its output %q", err, out)
	}
	return revoked
}

// compare checks rev against ssh-keygen -Q on krlPath for every query and
// returns how many were revoked.
func (c *krlCorpus) compare(t *testing.T, krlPath string, rev *Revocations) int {
	t.Helper()
	n := 0
	for _, q := range c.queries {
		key := loadKey(t, q)
		ours, why := rev.Revoked(key)
		theirs := c.oracle(krlPath, q)
		if ours != theirs {
			desc := filepath.Base(q)
			if cert, ok := key.(*ssh.Certificate); ok {
				desc += fmt.Sprintf(" (serial %d, id %q, CA %s)", cert.Serial, cert.KeyId, ssh.FingerprintSHA256(cert.SignatureKey))
			}
			t.Errorf("%s: we say revoked=%v (%s), ssh-keygen -Q says %v", desc, ours, why, theirs)
		}
		if ours {
			n++
		}
	}
	return n
}

func (c *krlCorpus) fingerprint(pub string) string {
	return strings.Fields(c.keygen("-l", "-E", "sha256", "-f", pub))[1]
}

// spec is a KRL specification using every directive ssh-keygen knows, with
// serials dense enough that ssh-keygen emits list, range and bitmap
// subsections.
func (c *krlCorpus) spec() string {
	var b strings.Builder
	b.WriteString("# revocations\n\n  serial: 5   # trailing comment\n")
	b.WriteString("SERIAL: 10-20\n")
	b.WriteString("serial: 0x64\n") // 100
	for s := 102; s <= 110; s += 2 {
		fmt.Fprintf(&b, "serial: %d\n", s)
	}
	b.WriteString("serial: 01750-2000\n") // octal 1000
	b.WriteString("serial: 1099511627776\n")
	b.WriteString("serial: 18446744073709551615\n")
	b.WriteString("id: revoked-id\n")
	b.WriteString("id:Revoked-ID\t\n")
	fmt.Fprintf(&b, "key: %s", c.read(c.users[2]+".pub"))
	fmt.Fprintf(&b, "sha1: %s", c.read(c.users[3]+".pub"))
	fmt.Fprintf(&b, "sha256: %s", c.read(c.users[4]+".pub"))
	fmt.Fprintf(&b, "hash: %s\n", c.fingerprint(c.users[5]+".pub"))
	return b.String()
}

func TestKRLMatchesSSHKeygen(t *testing.T) {
	c := newKRLCorpus(t)
	spec := c.write("spec.txt", c.spec())

	t.Run("under one CA", func(t *testing.T) {
		krl := filepath.Join(c.dir, "a.krl")
		c.keygen("-k", "-f", krl, "-s", c.caA+".pub", spec)
		data := c.readBytes(krl)
		types := krlSubsectionTypes(t, data)
		for _, want := range []byte{krlCertSerialList, krlCertSerialRange, krlCertSerialBitmap, krlCertKeyID} {
			if types[want] == 0 {
				t.Errorf("ssh-keygen emitted no subsection 0x%02x (got %v); the corpus no longer exercises it", want, types)
			}
		}
		rev, err := ParseKRL(data)
		if err != nil {
			t.Fatal(err)
		}
		if n := c.compare(t, krl, rev); n < 20 {
			t.Errorf("only %d keys revoked; corpus too weak", n)
		}
	})

	t.Run("any CA, binary and text", func(t *testing.T) {
		krl := filepath.Join(c.dir, "any.krl")
		c.keygen("-k", "-f", krl, "-s", "none", spec)
		rev, err := ParseKRL(c.readBytes(krl))
		if err != nil {
			t.Fatal(err)
		}
		nBin := c.compare(t, krl, rev)
		// The same specification as a text revocation list means the same.
		text, err := ParseRevocations(c.readBytes(spec), spec)
		if err != nil {
			t.Fatal(err)
		}
		if nText := c.compare(t, krl, text); nText != nBin || nBin < 40 {
			t.Errorf("text revoked %d, binary %d", nText, nBin)
		}
	})

	t.Run("certificates and keys listed bare", func(t *testing.T) {
		var b strings.Builder
		// serial 5 under caA, serial 0 (revoked by key ID) under caB, and a
		// plain key: ssh_krl_revoke_key semantics.
		b.WriteString(c.read(c.queries[3]))
		b.WriteString(c.read(c.queries[len(corpusSerials)+3+5])) // first caB certificate
		b.WriteString(c.read(c.users[2] + ".pub"))
		bare := c.write("bare.txt", b.String())
		krl := filepath.Join(c.dir, "bare.krl")
		c.keygen("-k", "-f", krl, bare)
		rev, err := ParseKRL(c.readBytes(krl))
		if err != nil {
			t.Fatal(err)
		}
		nBin := c.compare(t, krl, rev)
		text, err := ParseRevocations(c.readBytes(bare), bare)
		if err != nil {
			t.Fatal(err)
		}
		if nText := c.compare(t, krl, text); nText != nBin || nBin < 4 {
			t.Errorf("text revoked %d, binary %d", nText, nBin)
		}
	})

	t.Run("revoked CA key", func(t *testing.T) {
		ca := c.write("ca.txt", "key: "+c.read(c.caB+".pub")+"sha256: "+c.read(c.users[0]+".pub"))
		krl := filepath.Join(c.dir, "ca.krl")
		c.keygen("-k", "-f", krl, ca)
		rev, err := ParseKRL(c.readBytes(krl))
		if err != nil {
			t.Fatal(err)
		}
		if n := c.compare(t, krl, rev); n < len(c.queries)/2 {
			t.Errorf("only %d revoked", n)
		}
	})
}

func (f *fixture) readBytes(path string) []byte {
	f.t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		f.t.Fatal(err)
	}
	return data
}

// krlSubsectionTypes counts the certificate subsection types in a KRL, to
// prove which encodings a test exercised.
func krlSubsectionTypes(t *testing.T, data []byte) map[byte]int {
	t.Helper()
	r := &krlReader{b: data[len(krlMagic):]}
	r.u32()
	r.u64()
	r.u64()
	r.u64()
	r.str()
	r.str()
	types := map[byte]int{}
	for len(r.b) > 0 {
		typ, _ := r.u8()
		s, err := r.str()
		if err != nil {
			t.Fatal(err)
		}
		if typ != krlSectionCertificates {
			continue
		}
		s.str()
		s.str()
		for len(s.b) > 0 {
			st, _ := s.u8()
			if _, err := s.str(); err != nil {
				t.Fatal(err)
			}
			types[st]++
		}
	}
	return types
}

// krlBuilder writes KRLs by hand for malformed-input tests.
type krlBuilder struct{ bytes.Buffer }

func (b *krlBuilder) u8(v byte)    { b.WriteByte(v) }
func (b *krlBuilder) u32(v uint32) { b.Write(binary.BigEndian.AppendUint32(nil, v)) }
func (b *krlBuilder) u64(v uint64) { b.Write(binary.BigEndian.AppendUint64(nil, v)) }
func (b *krlBuilder) str(s []byte) { b.u32(uint32(len(s))); b.Write(s) }

func krlHeader(version uint32) *krlBuilder {
	b := &krlBuilder{}
	b.WriteString(krlMagic)
	b.u32(version)
	b.u64(3) // krl_version
	b.u64(0) // date
	b.u64(0) // flags
	b.str(nil)
	b.str([]byte("comment"))
	return b
}

func section(typ byte, body []byte) []byte {
	b := &krlBuilder{}
	b.u8(typ)
	b.str(body)
	return b.Bytes()
}

func certSection(ca []byte, subs ...[]byte) []byte {
	b := &krlBuilder{}
	b.str(ca)
	b.str(nil)
	for _, s := range subs {
		b.Write(s)
	}
	return section(krlSectionCertificates, b.Bytes())
}

func u64s(vs ...uint64) []byte {
	b := &krlBuilder{}
	for _, v := range vs {
		b.u64(v)
	}
	return b.Bytes()
}

func bitmapSub(offset uint64, mpint []byte) []byte {
	b := &krlBuilder{}
	b.u64(offset)
	b.str(mpint)
	return section(krlCertSerialBitmap, b.Bytes())
}

func TestParseKRLHandmade(t *testing.T) {
	ok := func(parts ...[]byte) []byte {
		b := krlHeader(1)
		for _, p := range parts {
			b.Write(p)
		}
		return b.Bytes()
	}
	ext := func(typ byte, critical byte) []byte {
		b := &krlBuilder{}
		b.str([]byte("x@example.org"))
		b.u8(critical)
		b.str([]byte("data"))
		return section(typ, b.Bytes())
	}
	sig := func() []byte {
		b := &krlBuilder{}
		b.u8(krlSectionSignature)
		b.str([]byte("signature key"))
		b.str([]byte("signature"))
		return b.Bytes()
	}()
	good := [][]byte{
		ok(),
		ok(ext(krlSectionExtension, 0)),
		ok(certSection(nil, ext(krlCertExtension, 0))),
		ok(certSection(nil, section(krlCertSerialList, u64s(1, 2, 3)), bitmapSub(10, []byte{0x00, 0x81}))),
		ok(section(krlSectionFingerprintSHA256, (&krlBuilder{}).Bytes())),
		ok(certSection(nil, section(krlCertSerialList, u64s(9))), sig),
	}
	for i, data := range good {
		if _, err := ParseKRL(data); err != nil {
			t.Errorf("good KRL %d: %v", i, err)
		}
	}
	bad := map[string][]byte{
		"no magic":            []byte("SSHKRL\n"),
		"format version 2":    krlHeader(2).Bytes(),
		"truncated header":    krlHeader(1).Bytes()[:20],
		"truncated section":   ok(certSection(nil, section(krlCertSerialList, u64s(1))))[:60],
		"unknown section":     ok(section(6, nil)),
		"critical extension":  ok(ext(krlSectionExtension, 1)),
		"critical cert ext":   ok(certSection(nil, ext(krlCertExtension, 1))),
		"unknown cert sub":    ok(certSection(nil, section(0x24, nil))),
		"serial 0":            ok(certSection(nil, section(krlCertSerialList, u64s(0)))),
		"range from 0":        ok(certSection(nil, section(krlCertSerialRange, u64s(0, 5)))),
		"inverted range":      ok(certSection(nil, section(krlCertSerialRange, u64s(9, 5)))),
		"range trailing data": ok(certSection(nil, section(krlCertSerialRange, u64s(1, 5, 6)))),
		"partial serial":      ok(certSection(nil, section(krlCertSerialList, []byte{0, 0, 0, 1}))),
		"bitmap serial 0":     ok(certSection(nil, bitmapSub(0, []byte{0x01}))),
		"bitmap negative":     ok(certSection(nil, bitmapSub(5, []byte{0x81}))),
		"bitmap wraps":        ok(certSection(nil, bitmapSub(1<<64-4, []byte{0x10}))),
		"sha1 wrong length":   ok(section(krlSectionFingerprintSHA1, (&krlBuilder{}).strs([]byte("short")))),
		"sha256 wrong length": ok(section(krlSectionFingerprintSHA256, (&krlBuilder{}).strs(make([]byte, 20)))),
		"bad CA key":          ok(certSection([]byte("not a key"))),
		"key id with NUL":     ok(certSection(nil, section(krlCertKeyID, (&krlBuilder{}).strs([]byte("a\x00b"))))),
		"huge string length":  append(krlHeader(1).Bytes(), 1, 0xff, 0xff, 0xff, 0xff),
		"signature truncated": ok(section(krlSectionSignature, []byte("k"))),
		"oversized":           append([]byte(krlMagic), make([]byte, MaxRevocationFileSize)...),
	}
	for name, data := range bad {
		if _, err := ParseKRL(data); err == nil {
			t.Errorf("%s: accepted", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
	// The bitmap "0x00 0x81" at offset 10 revokes serials 10 and 17 only;
	// and a bitmap ending exactly at the largest serial is fine.
	rev, err := ParseKRL(ok(certSection(nil, bitmapSub(10, []byte{0x00, 0x81}), bitmapSub(1<<64-8, []byte{0x7f}))))
	if err != nil {
		t.Fatal(err)
	}
	for s, want := range map[uint64]bool{9: false, 10: true, 11: false, 16: false, 17: true, 18: false, 1<<64 - 9: false, 1<<64 - 8: true, 1<<64 - 2: true, 1<<64 - 1: false} {
		if got, _ := rev.anyCA.revoked(&ssh.Certificate{Serial: s}); got != want {
			t.Errorf("serial %d revoked=%v, want %v", s, got, want)
		}
	}
}

func (b *krlBuilder) strs(ss ...[]byte) []byte {
	for _, s := range ss {
		b.str(s)
	}
	return b.Bytes()
}

func TestParseRevocationsTextErrors(t *testing.T) {
	for _, text := range []string{
		"serial: 5", // no final newline: maybe truncated
		"serial: 0\n",
		"serial: 5-5\n",
		"serial: 9-5\n",
		"serial: -1\n",
		"serial: +5\n",
		"serial: 1_000\n",
		"serial: 18446744073709551616\n",
		"serial: abc\n",
		"serial:\n",
		"hash: MD5:00:11\n",
		"hash: SHA256:AAAA\n",
		"hash: SHA256:!!!\n",
		"key: ssh-ed25519 AAAA\n",
		"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIL1\n",
		"ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n",
		"just garbage\n",
		"\xff\xfe\n",
	} {
		if _, err := ParseRevocations([]byte(text), "rev.txt"); err == nil {
			t.Errorf("%q accepted", text)
		} else if !strings.Contains(err.Error(), "rev.txt") {
			t.Errorf("%q: error %v does not name the file", text, err)
		}
	}
	rev, err := ParseRevocations([]byte("\n# nothing\n   \nserial: 0x10\r\nid: a b c # comment\n"), "rev.txt")
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := rev.Revoked(&ssh.Certificate{Serial: 16, SignatureKey: nil}); !got {
		t.Error("serial 0x10 not revoked")
	}
	if got, _ := rev.Revoked(&ssh.Certificate{KeyId: "a b c"}); !got {
		t.Error(`id "a b c" not revoked`)
	}
}

func FuzzParseKRL(f *testing.F) {
	f.Add([]byte(krlMagic))
	f.Add(krlHeader(1).Bytes())
	f.Add(append(krlHeader(1).Bytes(), certSection(nil, section(krlCertSerialList, u64s(1, 2)), bitmapSub(5, []byte{0x7f, 0xff}))...))
	f.Add([]byte("serial: 5\nid: x\nhash: SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU\n"))
	if _, err := exec.LookPath("ssh-keygen"); err == nil {
		fx := &fixture{t: f, dir: f.TempDir()}
		ca := fx.key("ca", "ed25519", 0)
		u := fx.key("u", "ed25519", 0)
		var spec strings.Builder
		for s := 1; s < 300; s += 3 {
			fmt.Fprintf(&spec, "serial: %d\n", s)
		}
		spec.WriteString("serial: 1000-2000\nid: someone\nkey: " + fx.read(u+".pub") + "sha1: " + fx.read(u+".pub") + "sha256: " + fx.read(u+".pub"))
		specPath := fx.write("spec", spec.String())
		fx.keygen("-k", "-f", filepath.Join(fx.dir, "krl"), "-s", ca+".pub", specPath)
		f.Add(fx.readBytes(filepath.Join(fx.dir, "krl")))
		f.Add([]byte(spec.String()))
	}
	probe := &ssh.Certificate{Serial: 5, KeyId: "someone", Key: edKeyForFuzz, SignatureKey: edKeyForFuzz}
	f.Fuzz(func(t *testing.T, data []byte) {
		rev, err := ParseRevocations(data, "fuzz")
		if err != nil {
			return
		}
		rev.Revoked(probe)
		rev.Revoked(edKeyForFuzz)
	})
}

var edKeyForFuzz = func() ssh.PublicKey {
	k, err := ssh.ParsePublicKey(append([]byte("\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20"), make([]byte, 32)...))
	if err != nil {
		panic(err)
	}
	return k
}()

// TestBitmapDecoding compares the run-based bitmap decoder with a bit-by-bit
// reading of PROTOCOL.krl 2.3 on random bitmaps rich in 0x00 and 0xff bytes.
func TestBitmapDecoding(t *testing.T) {
	r := newRand()
	pick := []byte{0x00, 0xff, 0x01, 0x80, 0x7f, 0xfe, 0x55}
	for iter := range 2000 {
		n := 1 + r.IntN(40)
		bm := make([]byte, n)
		for i := range bm {
			if r.IntN(3) == 0 {
				bm[i] = byte(r.IntN(256))
			} else {
				bm[i] = pick[r.IntN(len(pick))]
			}
		}
		if bm[0]&0x80 != 0 {
			bm = append([]byte{0}, bm...)
		}
		offset := uint64(1 + r.IntN(1000))
		rev := newRevocations()
		b := &krlBuilder{}
		b.u64(offset)
		b.str(bm)
		data := b.Bytes()
		if err := parseKRLBitmap(&krlReader{b: data}, rev, rev.certsFor(nil)); err != nil {
			t.Fatalf("bitmap %x: %v", bm, err)
		}
		rev.finish()
		for s := offset - 1; s < offset+uint64(len(bm))*8+2; s++ {
			n := s - offset
			want := s >= offset && n < uint64(len(bm))*8 && bm[uint64(len(bm))-1-n/8]&(1<<(n%8)) != 0
			got := false
			if rev.anyCA != nil {
				got, _ = rev.anyCA.revoked(&ssh.Certificate{Serial: s})
			}
			if got != want {
				t.Fatalf("iteration %d: bitmap %x offset %d: serial %d revoked=%v, want %v", iter, bm, offset, s, got, want)
			}
		}
	}
}

// TestKRLLargeBitmap: for a dense serial list ssh-keygen -k writes a bitmap
// wider than OpenSSH's own 16384-bit read limit. We read it, and it means
// exactly what the text specification says.
func TestKRLLargeBitmap(t *testing.T) {
	f := newFixture(t)
	r := newRand()
	var spec strings.Builder
	for range 30000 {
		fmt.Fprintf(&spec, "serial: %d\n", 1000+r.IntN(120000))
	}
	specPath := f.write("dense.spec", spec.String())
	krl := filepath.Join(f.dir, "dense.krl")
	f.keygen("-k", "-f", krl, "-s", "none", specPath)
	data := f.readBytes(krl)
	if types := krlSubsectionTypes(t, data); types[krlCertSerialBitmap] == 0 {
		t.Fatalf("no bitmap subsection: %v", types)
	}
	if out, err := f.keygenErr("-Q", "-f", krl, "/dev/null"); err != nil {
		t.Logf("ssh-keygen -Q on its own dense KRL: %v: %s", err, strings.TrimSpace(out))
	}
	bin, err := ParseKRL(data)
	if err != nil {
		t.Fatal(err)
	}
	text, err := ParseRevocations([]byte(spec.String()), specPath)
	if err != nil {
		t.Fatal(err)
	}
	revoked := 0
	for s := uint64(900); s < 121100; s++ {
		c := &ssh.Certificate{Serial: s}
		b, _ := bin.Revoked(c)
		x, _ := text.Revoked(c)
		if b != x {
			t.Fatalf("serial %d: binary says %v, text says %v", s, b, x)
		}
		if b {
			revoked++
		}
	}
	if revoked < 20000 {
		t.Fatalf("only %d serials revoked", revoked)
	}
}

func newRand() *rand.Rand { return rand.New(rand.NewPCG(7, 11)) }
